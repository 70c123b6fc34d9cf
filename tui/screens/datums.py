"""``:datums``: a job's datums, filtered by state (``s`` cycles all, failed,
success, skipped, running), the selected one's inputs below (as
``inspect-datum`` lists them). Enter opens the datum's logs. Action: restart
a running datum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.binding import Binding

from mountd.pps_models import Datum
from pachctl.cli.output import human_size
from tui import actions
from tui.fmt import short_id
from tui.messages import LiveEvent
from tui.screens.ppsbase import PpsTable, duration, now, state_text

STATES = (None, "failed", "success", "skipped", "starting")
FILES_SHOWN = 6


class DatumsScreen(PpsTable):
    COLUMNS = ("ID", "STATE", "TIME", "INPUTS")
    BINDINGS = [
        Binding("l", "logs", "logs"),
        Binding("s", "cycle_state", "state filter"),
        Binding("r", "restart", "restart datum"),
    ]
    ACTIONS = frozenset({"restart"})

    def __init__(self, job: str, pipeline: str | None = None, state: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.job, self.pipeline, self.state = job, pipeline, state
        self.every: list[Datum] = []

    def title_text(self) -> str:
        job = self.app.show_id(self.job)
        who = f"{self.pipeline} › {job}" if self.pipeline else job
        return f"jobs › {who} › datums (state: {self.state or 'all'})"

    def fetch(self) -> list[Datum]:
        if self.pipeline is None:
            self.pipeline = self.app.client.inspect_job(self.job).pipeline
        self.every = self.app.client.list_datum(self.job)
        return self._filtered()

    def _filtered(self) -> list[Datum]:
        return [d for d in self.every if self.state is None or d.state == self.state]

    def row(self, d: Datum) -> Sequence[Any]:
        inputs = ", ".join(f"{f.input}:{f.path}" for f in d.files)
        return (short_id(self.app.show_id(d.id)), state_text(d.state), duration(d.started, d.finished, now(self.app)),
                inputs if len(inputs) <= 60 else inputs[:57] + "...")

    def detail(self, d: Datum) -> str:
        lines = [f"datum {self.app.show_id(d.id)}"]
        lines += [f"{f.input}  {f.repo}@{self.app.show_id(f.commit)}:{f.path}  {human_size(f.size)}" for f in d.files[:FILES_SHOWN]]
        if len(d.files) > FILES_SHOWN:
            lines.append(f"... and {len(d.files) - FILES_SHOWN} more")
        if d.reason:
            lines.append(f"reason: {d.reason}")
        if not d.files:
            lines.append("no input files")
        return "\n".join(lines)

    def action_cycle_state(self) -> None:
        self.state = STATES[(STATES.index(self.state) + 1) % len(STATES)] if self.state in STATES else None
        self.show(self._filtered())

    def on_live_event(self, message: LiveEvent) -> None:
        kind, data = message.kind, message.data
        mine = kind == "reset" or (kind in ("datum.state", "job.state") and data.get("job") == self.job)
        # A job of thousands of datums sends thousands of events: one refetch per burst.
        if mine and not getattr(self, "_soon", False):
            self._soon = True
            self.set_timer(0.25, self._refetch)

    def _refetch(self) -> None:
        self._soon = False
        self.reload()

    def open_row(self, d: Datum) -> None:
        self.app.open("logs", job=self.job, datum=d.id, pipeline=self.pipeline)

    def action_logs(self) -> None:
        if (d := self.selected()) is not None:
            self.open_row(d)

    def action_restart(self) -> None:
        if (d := self.selected()) is not None:
            self.act(self._restart(d))

    async def _restart(self, d: Datum) -> None:
        if await actions.restart_datum(self.app, self.pipeline or "", self.job, d.id):
            self.reload()
