"""What every part of the scheduler shares: its state (built once by
``Scheduler.__init__``), the records of a running job, and the constants.

The parts (pipelines, triggers, running, merge, waiting, workers) are mixins
of one ``Scheduler`` object: each module holds one job of the scheduler, and
they reach each other's methods through ``self`` as the one object they make.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pps import jobs as jp
from pps.logs import LogStore
from pps.queue import TaskQueue
from pps.runners.base import Runner
from pps.scheduler.results import ResultWriter
from pps.spec import PipelineSpec, parse_spec
from pps.store import JobRow, PipelineRow, PpsStore

if TYPE_CHECKING:
    from pfsfuse.pfs import PFS

log = logging.getLogger("pps.scheduler")

TICK = 1.0
CRASH_WINDOW = 60.0
CRASH_LIMIT = 3
RERUN_REASON = "the daemon stopped while the job ran; it runs again"
# A stopping daemon gives its workers this long before SIGKILL: above a service's own
# SIGTERM grace (shim.longrun, 3 s), and short enough that a stop ends within 5 s.
STOP_GRACE = 3.5
# A job this big (datums) leaves tens of MB freed but kept by the allocator once
# planned, and again once merged: pfsfuse.memory.give_back_memory then.
BIG_JOB = 10_000


@dataclass
class ActiveJob:
    row: JobRow
    spec: PipelineSpec
    plan: jp.JobPlan
    units: dict[str, jp.Unit]
    results: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # unit -> (state, pin owner)
    deadline: float | None = None
    failure: str = ""


@dataclass
class Trigger:
    inputs: list[jp.LeafCommit]
    trigger: str | None
    cursors: list[tuple[str, str, int]]  # (repo, branch, seq) to advance


class Base:
    """The scheduler's shared state, and the few helpers every part uses."""

    pfs: PFS
    store: PpsStore
    queue: TaskQueue
    logs: LogStore
    runner: Runner  # never None: a scheduler without workers has a NullRunner
    max_workers: int
    active: dict[str, ActiveJob]  # pipeline -> its running job
    _wake: threading.Event
    _changed: threading.Condition
    _generation: int
    _lock: threading.RLock
    _runs: dict[str, list[list[jp.LeafCommit]]]  # run-pipeline requests, per pipeline
    _crashes: dict[str, list[float]]
    _trouble: dict[str, str]
    _services: dict[str, tuple[str, str]]  # pipeline -> (generation, task id) of its long-running task
    _specs: dict[tuple[str, int, float], PipelineSpec]
    _starting: set[str]  # pipelines whose next job is being planned
    _waiting_for_workers: set[str]  # busy, but the worker budget is in use elsewhere
    _ensuring: threading.Lock  # workers started for a pipeline vs. the pipeline deleted
    _results: ResultWriter  # workers' results, written in batches (running.submit_result)
    _closed: bool

    def notify(self) -> None:
        self._wake.set()

    def _changed_now(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    @property
    def generation(self) -> int:
        """Take it before looking at the state you wait on, give it to ``wait_changed``:
        a change that lands in between ends the wait at once instead of being missed."""
        return self._generation

    def wait_changed(self, timeout: float, since: int | None = None) -> None:
        with self._changed:
            if since is None or self._generation == since:
                self._changed.wait(timeout)

    def _job_event(self, row: JobRow) -> None:
        """Tell live clients a job's state or counts changed (inside the transaction
        that wrote them: published when it commits). From the row in hand: no read."""
        self.pfs.emit("job.state", job=row.id, pipeline=row.pipeline, state=row.state, reason=row.reason,
                      data_processed=row.processed, data_skipped=row.skipped, data_failed=row.failed,
                      data_total=row.total)

    def _datum_events(self, job: JobRow, datums: list[str], state: str) -> None:
        for d in datums:
            self.pfs.emit("datum.state", job=job.id, pipeline=job.pipeline, datum=d, state=state)

    def spec_of(self, row: PipelineRow) -> PipelineSpec:
        """The parsed spec, parsed once per pipeline version (every tick asks for it)."""
        key = (row.name, row.version, row.updated)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) >= 256:  # old versions of updated or deleted pipelines
                self._specs.clear()
            spec = self._specs[key] = parse_spec(row.spec)
        return spec
