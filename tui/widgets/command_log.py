"""The command-log pane: the ``pachctl`` command equivalent to every action
taken in the TUI, newest last (lazygit's command log; k9s users asked for it).

The log itself lives on the app (``app.command_history``) so it survives
screen changes; each screen's pane shows it and follows new entries."""

from __future__ import annotations

from textual.widgets import RichLog


class CommandLog(RichLog):
    DEFAULT_CSS = """
    CommandLog {
        height: 6;
        border-top: solid $accent;
        background: $surface;
    }
    CommandLog.-hidden { display: none; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(max_lines=500, wrap=False, markup=False, highlight=False, **kw)
        self.border_title = "command log"

    def on_mount(self) -> None:
        for cmd in getattr(self.app, "command_history", []):
            self.write(f"$ {cmd}")
        self.set_class(not getattr(self.app, "show_log", True), "-hidden")

    def add(self, cmd: str) -> None:
        self.write(f"$ {cmd}")
