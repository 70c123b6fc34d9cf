"""``:logs``: a job's, a datum's or a pipeline's log in the virtualized log
view (tui/widgets/logview.py): ``w`` wrap, ``t`` timestamps, ``f`` follow.
``log`` events for what is shown bring new lines in while following."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult

from tui.messages import LiveEvent
from tui.screens.base import PachyScreen
from tui.widgets.logview import Line, LogView


class LogsScreen(PachyScreen):
    DEFAULT_CSS = """
    LogsScreen LogView { height: 1fr; }
    """

    def __init__(self, job: str | None = None, datum: str | None = None, pipeline: str | None = None,
                 follow: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.job, self.datum, self.pipeline = job, datum, pipeline
        self.start_following = follow

    def compose(self) -> ComposeResult:
        self.crumb = self.title_text()
        yield from super().compose()

    def compose_body(self) -> ComposeResult:
        yield LogView(self.fetch_page, follow=self.start_following, id="log")

    def title_text(self) -> str:
        show = self.app.show_id
        what = [self.pipeline or "", show(self.job) if self.job else "", show(self.datum) if self.datum else ""]
        return " › ".join(w for w in what if w) + " › logs"

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def on_mount(self) -> None:
        self.view.focus()

    def load(self) -> None:
        if self.view.is_mounted and self.view.total:
            self.view.reload()

    def fetch_page(self, offset: int, n: int) -> tuple[int, list[Line]]:
        """In the log view's thread: one page from the daemon."""
        pipeline = None if self.job else self.pipeline
        total, lines = self.app.client.log_page(pipeline=pipeline, job=self.job, datum=self.datum,
                                                offset=offset, n=n)
        return total, [(line.ts, line.message) for line in lines]

    def on_live_event(self, message: LiveEvent) -> None:
        kind, data = message.kind, message.data
        if kind == "reset":
            self.view.reload()
        elif (kind == "log" and self._mine(data)) or (kind == "job.state" and self.job
                                                       and data.get("job") == self.job):
            self.view.refresh_tail()

    def _mine(self, data: dict) -> bool:
        if self.job and data.get("job") != self.job:
            return False
        if self.pipeline and data.get("pipeline") != self.pipeline:
            return False
        return not self.datum or (data.get("datum") or "").startswith(self.datum)
