"""``:jobs``: jobs newest first (one pipeline's, or all), a page at a time as
the cursor nears the end (``list_job(n=, before=)``), each with a progress bar
of (processed + skipped) / total that moves with ``job.state`` events. Enter
opens the job's datums; ``i``/``o`` its input/output commit's files; ``l``
its logs. Action: stop the job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.binding import Binding
from textual.widgets import DataTable

from mountd.pps_models import Job
from tui import actions
from tui.fmt import short_id
from tui.messages import LiveEvent
from tui.screens.ppsbase import PpsTable, ago, duration, now, progress_bar, state_text

PAGE = 200  # jobs per request
NEAR_END = 20  # rows before the last loaded one at which the next page is asked for


class JobsScreen(PpsTable):
    COLUMNS = ("ID", "PIPELINE", "STARTED", "DURATION", "PROGRESS", "STATE")
    BINDINGS = [
        Binding("l", "logs", "logs"),
        Binding("i", "input", "input files"),
        Binding("o", "output", "output files"),
        Binding("x", "stop", "stop job"),
    ]
    ACTIONS = frozenset({"stop"})

    def __init__(self, pipeline: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.pipeline = pipeline
        self.more = True  # older jobs may exist past the last loaded one
        self._paging = False

    def title_text(self) -> str:
        return f"pipelines › {self.pipeline} › jobs" if self.pipeline else "jobs"

    def fetch(self) -> list[Job]:
        jobs = self.app.client.list_job(self.pipeline, n=PAGE)
        self.more = len(jobs) == PAGE
        return jobs

    def row(self, j: Job) -> Sequence[Any]:
        at = now(self.app)
        # 12 characters as in the commits screen (the detail pane below has the whole id).
        return (short_id(self.app.show_id(j.id)), j.pipeline, ago(j.started or j.created, at), duration(j.started, j.finished, at),
                progress_bar(j.data_processed, j.data_skipped, j.data_total, j.data_failed), state_text(j.state))

    def detail(self, j: Job) -> str:
        show = self.app.show_id
        inputs = ", ".join(f"{c.repo}@{show(c.commit)}" for c in j.input_commits) or "none"
        out = f"{j.output_commit.repo}@{show(j.output_commit.commit)}" if j.output_commit else "none"
        text = f"job {show(j.id)}\ninput {inputs}\noutput {out}"
        return text + (f"\nreason: {j.reason}" if j.reason else "")

    # -- paging --------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        super().on_data_table_row_highlighted(event)
        if (self.more and not self._paging and not self.table.filter_text
                and event.cursor_row >= len(self.order) - NEAR_END):
            self._paging = True
            before = self.order[-1]
            self.run_worker(lambda: self._next_page(before), thread=True, group="page")

    def _next_page(self, before: str) -> None:
        try:
            jobs = self.app.client.list_job(self.pipeline, n=PAGE, before=before)
        finally:
            self._paging = False
        self.more = len(jobs) == PAGE
        self.app.call_from_thread(self.append, jobs)

    # -- live ----------------------------------------------------------------------

    def on_live_event(self, message: LiveEvent) -> None:
        kind, data = message.kind, message.data
        if kind == "reset":
            self.reload()
            return
        if kind != "job.state" or (self.pipeline and data.get("pipeline") != self.pipeline):
            return
        job = self.items.get(data.get("job"))
        if job is None:
            self.reload()  # a new job: it goes on top
            return
        update = {k: data[k] for k in ("state", "reason", "data_processed", "data_skipped", "data_failed",
                                       "data_total") if data.get(k) is not None}
        if data.get("state") in ("success", "failure", "killed") and job.finished is None:
            update["finished"] = data.get("ts")
        self.update_item(job.model_copy(update=update))

    # -- links and actions -----------------------------------------------------------

    def open_row(self, j: Job) -> None:
        self.app.open("datums", job=j.id, pipeline=j.pipeline)

    def action_logs(self) -> None:
        if (j := self.selected()) is not None:
            self.app.open("logs", job=j.id, pipeline=j.pipeline)

    def action_input(self) -> None:
        j = self.selected()
        if j is not None and j.input_commits:
            c = j.input_commits[0]
            self.app.open("files", repo=c.repo, commit=c.commit)

    def action_output(self) -> None:
        j = self.selected()
        if j is not None and j.output_commit is not None:
            self.app.open("files", repo=j.output_commit.repo, commit=j.output_commit.commit)

    def action_stop(self) -> None:
        if (j := self.selected()) is not None:
            self.act(self._stop(j))

    async def _stop(self, j: Job) -> None:
        if await actions.stop_job(self.app, j.pipeline, j.id):
            self.reload()
