"""``:pipelines``: every pipeline with its state, input and last job, as
``list-pipeline`` shows them; enter opens its jobs. Actions: stop, start, run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.binding import Binding

from mountd.pps_models import Pipeline
from tui import actions
from tui.messages import LiveEvent
from tui.screens.ppsbase import PpsTable, state_text


class PipelinesScreen(PpsTable):
    crumb = "pipelines"
    COLUMNS = ("NAME", "STATE", "INPUT", "LAST JOB")
    BINDINGS = [
        Binding("s", "stop", "stop"),
        Binding("S", "start", "start"),
        Binding("r", "run", "run"),
        Binding("L", "logs", "logs", show=False),
    ]
    ACTIONS = frozenset({"stop", "start", "run"})

    def fetch(self) -> list[Pipeline]:
        return self.app.client.list_pipeline()

    def key(self, item: Pipeline) -> str:
        return item.name

    def row(self, p: Pipeline) -> Sequence[Any]:
        state = state_text(p.state)
        if p.stopped and p.state != "paused":
            state.append(" (stopped)")
        last = Text(self.app.show_id(p.last_job)[:12] + " ", style="dim") if p.last_job else Text("-")
        if p.last_job_state:
            last.append_text(state_text(p.last_job_state))
        return (p.name, state, p.input, last)

    def detail(self, p: Pipeline) -> str:
        lines = [f"output {p.output_repo}@{p.output_branch} · version {p.version} · workers {p.workers}"]
        if p.reason:
            lines.append(f"reason: {p.reason}")
        return "\n".join(lines)

    def on_live_event(self, message: LiveEvent) -> None:
        kind, data = message.kind, message.data
        name = data.get("pipeline")
        if kind == "reset":
            self.reload()
        elif kind == "pipeline.state" and name in self.items:
            p = self.items[name]
            self.update_item(p.model_copy(update={"state": data.get("state", p.state),
                                                  "reason": data.get("reason") or ""}))
        elif kind == "job.state" and name in self.items:
            p = self.items[name]
            self.update_item(p.model_copy(update={"last_job": data.get("job"),
                                                  "last_job_state": data.get("state")}))
        elif kind in ("pipeline.created", "pipeline.deleted", "repo.created", "repo.deleted") or (
                kind == "pipeline.state" and name not in self.items):
            self.reload()

    def open_row(self, p: Pipeline) -> None:
        self.app.open("jobs", pipeline=p.name)

    def action_logs(self) -> None:
        p = self.selected()
        if p is not None:
            self.app.open("logs", pipeline=p.name)

    def action_stop(self) -> None:
        if (p := self.selected()) is not None:
            self.act(self._then_reload(actions.stop_pipeline(self.app, p.name)))

    def action_start(self) -> None:
        if (p := self.selected()) is not None:
            self.act(self._then_reload(actions.start_pipeline(self.app, p.name)))

    def action_run(self) -> None:
        if (p := self.selected()) is not None:
            self.act(self._then_reload(actions.run_pipeline(self.app, p.name)))

    async def _then_reload(self, action) -> None:
        if await action:
            self.reload()
