"""The scheduler: input commits become jobs, jobs become tasks, results become output commits.

One thread owns every state change of a job (start, completion, failure,
timeout); the API and workers only report to it and wake it. Per pipeline,
jobs run one after another, in input-commit order, because a job's output
commit starts from the previous job's (1.x ``/pfs/out``, 2.x carry-forward).

Ordering rules for a job (so that a crash leaves nothing half-written):
  1. one transaction: job row, datum rows, input cursor; then the output
     commit is started (open: readers see a job in progress);
  2. each unit's outputs are pinned as they arrive (files stored, in no commit);
  3. all units succeeded: one write session applies every pinned output to
     the output commit, then the commit is finished with its provenance;
  4. one transaction: units/paths bookkeeping, pins dropped, job success.
A failure at any point deletes the open output commit and the job's pins.

The scheduler is one object made of parts, a module each (a few hundred
lines with one job): ``pipelines`` (create/update/delete/stop/start),
``triggers`` (which input commit is next, cron ticks), ``running`` (jobs,
tasks, results, failure, restart), ``merge`` (the output commit, egress,
stats), ``waiting`` (wait-job, downstream, flush) and ``workers`` (the worker
budget and what the runner reports). ``state`` holds what they share.
"""

from __future__ import annotations

import threading
import time

from pfsfuse.errors import PfsError
from pps import jobs as jp
from pps.logs import LogStore
from pps.queue import TaskQueue
from pps.runners.base import NullRunner, Runner
from pps.scheduler.merge import Merging
from pps.scheduler.pipelines import Pipelines, find_cycle
from pps.scheduler.results import ResultWriter
from pps.scheduler.running import Running
from pps.scheduler.state import RERUN_REASON, STOP_GRACE, TICK, ActiveJob, Trigger, log
from pps.scheduler.triggers import Triggers
from pps.scheduler.waiting import Waiting
from pps.scheduler.workers import Workers, default_max_workers, share_workers
from pps.spec import PipelineSpec
from pps.store import PipelineRow, PpsStore

__all__ = ["RERUN_REASON", "ActiveJob", "Scheduler", "Trigger", "default_max_workers", "find_cycle",
           "share_workers"]


class Scheduler(Pipelines, Triggers, Running, Merging, Waiting, Workers):
    """One per daemon: owns every job's state changes, in one thread (``tick``)."""

    def __init__(self, pfs, home: str, *, runner: Runner | None = None, max_workers: int | None = None):
        self.pfs = pfs
        self.store = PpsStore(pfs)
        self.queue = TaskQueue()
        self.logs = LogStore(home, getattr(pfs, "events", None))
        # Never None: a scheduler without workers has a NullRunner (jobs queue and wait).
        self.runner: Runner = runner if runner is not None else NullRunner()
        # One budget of worker processes for all pipelines: parallelism asks, the budget decides.
        self.max_workers = max_workers if max_workers is not None else default_max_workers()
        self._budget_given = max_workers is not None  # else a runner with a budget of its own sets it (start)
        self._wake = threading.Event()
        self._changed = threading.Condition()
        self._generation = 0  # changes so far (see state.Base.wait_changed)
        self._lock = threading.RLock()
        self.active: dict[str, ActiveJob] = {}
        self._runs: dict[str, list[list[jp.LeafCommit]]] = {}
        self._crashes: dict[str, list[float]] = {}
        self._services: dict[str, tuple[str, str]] = {}
        self._specs: dict[tuple[str, int, float], PipelineSpec] = {}
        self._starting: set[str] = set()  # pipelines whose long-running task is being started
        self._waiting_for_workers: set[str] = set()  # busy, but the worker budget is in use elsewhere
        self._trouble: dict[str, str] = {}  # pipeline -> why its runner cannot keep its workers up
        self._ensuring = threading.Lock()  # workers started for a pipeline vs. the pipeline deleted
        self._results = ResultWriter(self._record, self._results_woke)  # group commits of workers' results
        self._thread: threading.Thread | None = None
        self._stopping_workers: threading.Thread | None = None
        self._closed = False
        pfs.on_finish.append(lambda _info: self.notify())

    def start(self) -> None:
        self._use_runner()
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="pps-scheduler", daemon=True)
        self._thread.start()

    def begin_close(self) -> None:
        """The daemon is stopping: no new work, waiters and long polls woken, and every
        worker told to stop at once, in a thread of its own, while the API shuts down
        (workers, and the user code they kill, end in parallel with the rest)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self.queue.close()
        self._changed_now()
        self._stopping_workers = threading.Thread(target=self.runner.close, args=(STOP_GRACE,),
                                                  name="pps-stop-workers", daemon=True)
        self._stopping_workers.start()

    def close(self) -> None:
        self.begin_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._stopping_workers is not None:
            self._stopping_workers.join(timeout=15)
        self._results.close()  # results already accepted are written before the metadata closes

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(TICK)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.tick()
            except Exception:  # keep scheduling: one bad pipeline must not stop the rest
                log.exception("scheduler tick failed")

    def tick(self) -> None:
        now = time.monotonic()
        rows = self.store.list_pipelines()
        for row in rows:
            with self._lock:
                job = self.active.get(row.name)
            if job is not None:
                if job.deadline is not None and now > job.deadline and not job.failure:
                    job.failure = f"job timed out after {job.spec.job_timeout:g}s (job_timeout)"
                    self._kill_workers(row.name)
                self._maybe_complete(job)
            if row.stopped:
                with self._lock:
                    explicit = bool(self._runs.get(row.name)) and row.name not in self.active
                if explicit:
                    self._start_or_report(row)
                continue
            try:
                self._cron_ticks(row)
            except PfsError as exc:
                self.logs.note(row.name, None, f"cron tick failed: {exc.message}")
            with self._lock:
                busy = row.name in self.active
            if not busy:
                self._start_or_report(row)
        self._manage_workers(rows)

    def _start_or_report(self, row: PipelineRow) -> None:
        """Start the next job; a failure to plan it shows in the pipeline's state and
        logs (not only the daemon's), and the next tick tries again."""
        try:
            self._maybe_start(row)
        except Exception as exc:  # noqa: BLE001 - one pipeline's problem must not stop the others
            reason = exc.message if isinstance(exc, PfsError) else f"internal error: {exc!r}"
            if not isinstance(exc, PfsError):
                log.exception("planning a job of pipeline %s failed", row.name)
            if row.state != "failure" or row.reason != f"cannot start a job: {reason}":
                self.store.set_pipeline_state(row.name, "failure", f"cannot start a job: {reason}")
                self.logs.note(row.name, None, f"cannot start a job: {reason}")
