"""The base of every pachy screen: a breadcrumb, the body, a filter bar
(``/``), the command-log pane and a footer of keys.

Subclasses write ``compose_body()`` and ``load()`` (fetch in a thread worker:
the client is synchronous) and may handle ``on_live_event``; a ``reset``
event calls ``load()`` again. ``filter_table()`` names the table ``/`` filters
(the first FilterTable by default). ``readonly`` screens hide their actions
through ``check_action`` (see ``ACTIONS``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from tui.messages import LiveEvent
from tui.widgets.command_log import CommandLog
from tui.widgets.table import FilterTable

if TYPE_CHECKING:
    from tui.app import PachyApp


class PachyScreen(Screen):
    DEFAULT_CSS = """
    PachyScreen #crumb { height: 1; background: $primary-background; color: $text; padding: 0 1; }
    PachyScreen #filter { dock: bottom; height: 3; display: none; }
    PachyScreen #filter.-shown { display: block; }
    """
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "back", "Back"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
    ]
    # Actions that change data: hidden and refused with --readonly.
    ACTIONS: frozenset[str] = frozenset()
    crumb: str = ""

    app: PachyApp  # type: ignore[assignment]

    def compose(self) -> ComposeResult:
        yield Static(self.crumb or self.__class__.__name__, id="crumb")
        yield from self.compose_body()
        yield Input(placeholder="filter (enter: keep, esc: clear)", id="filter")
        yield CommandLog(id="command-log")
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        """(Re)fetch what the screen shows; run the client in a thread worker."""

    def set_crumb(self, text: str) -> None:
        self.crumb = text
        if self.is_mounted:
            self.query_one("#crumb", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # An action that changes data is hidden from the footer and never run.
        return not (action in self.ACTIONS and self.app.readonly)

    # -- live events -------------------------------------------------------

    def on_live_event(self, message: LiveEvent) -> None:
        if message.kind == "reset":
            self.load()

    # -- filter (/) ---------------------------------------------------------

    def filter_table(self) -> FilterTable | None:
        found = self.query(FilterTable)
        return found.first() if found else None

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            table = self.filter_table()
            if table is not None:
                table.set_filter(event.value)
            event.stop()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self._leave_filter(clear=False)
            event.stop()

    def _leave_filter(self, clear: bool) -> None:
        box = self.query_one("#filter", Input)
        if clear:
            box.value = ""
            table = self.filter_table()
            if table is not None:
                table.set_filter("")
        if not box.value:
            box.remove_class("-shown")
        table = self.filter_table()
        if table is not None:
            table.focus()

    # -- navigation ---------------------------------------------------------

    def action_back(self) -> None:
        """esc: leave the filter box, then clear the filter, then go back."""
        box = self.query_one("#filter", Input)
        if box.has_focus or box.value:
            self._leave_filter(clear=True)
            return
        self.app.back()

    def action_refresh(self) -> None:
        self.load()

    def palette_commands(self) -> list[tuple[str, str, object]]:
        """Extra ``(name, help, callback)`` entries for the command palette."""
        return []
