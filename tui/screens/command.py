"""Command mode (``:``), as k9s has it: ``:repos``, ``:jobs pipeline=edges``,
``:commits images``, ``:q``. Tab completes an alias."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input

from tui.routes import ROUTES


class CommandScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    CommandScreen { align: center bottom; background: $background 30%; }
    CommandScreen Input { dock: bottom; width: 100%; border: tall $accent; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def compose(self) -> ComposeResult:
        names = sorted(ROUTES) + ["quit", "help"]
        yield Input(placeholder=":" + " ".join(f":{n}" for n in sorted(ROUTES)),
                    suggester=SuggestFromList(names, case_sensitive=False), id="command")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip().lstrip(":") or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def parse(line: str) -> tuple[str, list[str], dict[str, str]]:
    """``jobs pipeline=edges x`` -> (``jobs``, [``x``], {pipeline: edges})."""
    words = line.split()
    if not words:
        return "", [], {}
    args = [w for w in words[1:] if "=" not in w]
    params = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return words[0].lower(), args, params
