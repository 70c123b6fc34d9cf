"""``?``: every key that works here (the screen's, the app's), and the
aliases of command mode."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from tui.routes import ROUTES


def _key(b: Binding, app) -> str:
    return b.key_display or app.get_key_display(b)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 80; height: 80%; border: thick $accent; background: $surface; padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        keys = Table(title="Keys", expand=True, show_edge=False)
        keys.add_column("KEY", style="bold cyan", no_wrap=True)
        keys.add_column("ACTION")
        seen: set[str] = set()
        self.entries: list[tuple[str, str]] = []  # (key, what), as shown
        for active in self.under.active_bindings.values():
            b = active.binding
            if not b.description or b.action in seen:
                continue
            seen.add(b.action)
            keys.add_row(_key(b, self.app), b.description)
            self.entries.append((_key(b, self.app), b.description))
        keys.add_row("ctrl+p", "command palette")
        keys.add_row("mouse", "click a row to select it, double-click to open it")
        aliases = Table(title="Command mode (:)", expand=True, show_edge=False)
        aliases.add_column("COMMAND", style="bold cyan", no_wrap=True)
        aliases.add_column("SHOWS")
        for alias in sorted(ROUTES):
            doc = (ROUTES[alias].__doc__ or "").strip().splitlines()
            aliases.add_row(f":{alias}", doc[0] if doc else "")
            self.entries.append((f":{alias}", doc[0] if doc else ""))
        aliases.add_row(":quit", "leave")
        with VerticalScroll():
            yield Static(keys)
            yield Static(aliases)

    def action_close(self) -> None:
        self.dismiss(None)
