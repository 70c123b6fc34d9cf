"""Worker bookkeeping: one budget of workers for the whole machine shared
between pipelines (busy ones first), the runner asked to match it, workers that
die unasked (crash counting, the crashing state), and the pipelines' states.
"""

from __future__ import annotations

import os
import time

from pfsfuse.errors import PfsError
from pps.runners.base import WorkerSpec
from pps.scheduler.state import CRASH_LIMIT, CRASH_WINDOW, Base, log
from pps.store import PipelineRow

WORKER_MEMORY = 256 << 20  # a worker (~50 MB of Python) and room for its user code


class Workers(Base):
    """How many workers each pipeline has, and what the runner reports."""

    def _manage_workers(self, rows: list[PipelineRow]) -> None:
        """Share the worker budget between pipelines (``share_workers``) and have the
        runner start or stop workers to match; shrinking first, so that the total
        never exceeds the budget while workers move from one pipeline to another."""
        if self._closed:
            return
        now = time.monotonic()
        wants: dict[str, int] = {}
        worker_specs: dict[str, WorkerSpec] = {}
        held: set[str] = set()  # crashing: no restart for a while
        order: list[tuple[int, float, str]] = []  # services first, then jobs oldest first, then idle
        for row in rows:
            try:
                spec = self.spec_of(row)
            except PfsError:
                wants[row.name] = 0
                continue
            worker_specs[row.name] = WorkerSpec.from_spec(spec, row.version)
            with self._lock:
                job = self.active.get(row.name)
                service = row.name in self._services
            busy = job is not None or service
            want = max(1, spec.parallelism_spec.workers())
            if (spec.standby or spec.autoscaling or row.stopped) and not busy:
                want = 0
            wants[row.name] = want
            order.append((0, 0.0, row.name) if service else (1, job.row.created, row.name) if job is not None
                         else (2, row.created, row.name))
            crashes = [t for t in self._crashes.get(row.name, []) if now - t < CRASH_WINDOW]
            self._crashes[row.name] = crashes
            if len(crashes) >= CRASH_LIMIT and want:
                if row.state != "crashing":
                    self.store.set_pipeline_state(row.name, "crashing", f"{len(crashes)} worker(s) died in "
                                                  f"the last minute; see {self.logs.dir}/../workers/")
                if now - crashes[-1] < 5.0:
                    held.add(row.name)
        order.sort()
        shares = share_workers([(name, wants[name], rank < 2) for rank, _t, name in order], self.max_workers)
        starved = {name for rank, _t, name in order if rank < 2 and wants[name] and not shares[name]}
        for name in starved - self._waiting_for_workers:
            self.logs.note(name, None, f"waiting for a worker: all {self.max_workers} the machine runs at once "
                                       "are busy with other pipelines (PACHY_MAX_WORKERS)")
        self._waiting_for_workers = starved
        running = {name: self.runner.running(name) for name in shares}
        with self._ensuring:
            exist = {p.name for p in self.store.list_pipelines()}  # not deleted since the tick began
            for name in sorted(shares, key=lambda n: shares[n] >= running[n]):  # shrink first
                if name in exist and name not in held and name in worker_specs:
                    # A worker stopped here (its share went to another pipeline) does not report its
                    # exit: its task goes back to the queue now, not when a worker of that id asks again.
                    for worker in self.runner.ensure(name, worker_specs[name], shares[name]) or ():
                        self.queue.release_worker(worker)
        for row in rows:
            if row.name not in held and row.name in shares:
                self._show_worker_state(row, wants[row.name])

    def _show_worker_state(self, row: PipelineRow, want: int) -> None:
        trouble = self._trouble.get(row.name, "")
        if trouble and want and not row.stopped:
            if (row.state, row.reason) != ("crashing", trouble):
                self.store.set_pipeline_state(row.name, "crashing", trouble)
            return
        crashing = len(self._crashes.get(row.name, [])) >= CRASH_LIMIT
        state = "paused" if row.stopped else "standby" if want == 0 else "running"
        if row.stopped and row.state == "paused":
            return
        now_row = self.store.find_pipeline(row.name)
        if now_row is None or now_row.state == "failure":
            return  # stays until a job starts (or the pipeline is updated, stopped or started)
        if row.state != state and not (row.state == "crashing" and crashing):
            self.store.set_pipeline_state(row.name, state, "")

    def worker_exited(self, pipeline: str, worker: str, code: int) -> None:
        """The runner's on_exit: the worker's task goes to another worker."""
        self.queue.release_worker(worker)
        self._crashes.setdefault(pipeline, []).append(time.monotonic())
        self.logs.note(pipeline, None, f"worker {worker} exited with code {code}")
        self.notify()

    def trouble_of(self, pipeline: str) -> str:
        """Why ``pipeline``'s workers cannot start or keep running, as its runner last said ("": none)."""
        with self._lock:
            return self._trouble.get(pipeline, "")

    def worker_trouble(self, pipeline: str, message: str) -> None:
        """The runner's on_trouble: why ``pipeline``'s workers cannot start or keep running
        (an image that cannot be pulled, no node to schedule them on, RBAC forbids, ...), or
        "" once they can. The pipeline shows it as 'crashing' with that reason, and the log of
        its job (or of the pipeline) says it once."""
        message = message.strip()
        with self._lock:
            before = self._trouble.get(pipeline, "")
            if message:
                self._trouble[pipeline] = message
            else:
                self._trouble.pop(pipeline, None)
            job = self.active.get(pipeline)
        if message == before:
            return
        job_id = job.row.id if job is not None else None
        self.logs.note(pipeline, job_id, f"workers: {message}" if message else "workers: running again")
        if not message:
            row = self.store.find_pipeline(pipeline)
            if row is not None and row.state == "crashing" and row.reason == before:
                self.store.set_pipeline_state(pipeline, "running", "")
        self.notify()

    def _kill_workers(self, pipeline: str) -> None:
        self.runner.stop(pipeline)


def default_max_workers() -> int:
    """Worker processes this machine runs at once, all pipelines together:
    ``PACHY_MAX_WORKERS``, else 2 per core this process may use (one computing
    while the other reads or writes), and no more than ``WORKER_MEMORY`` each
    of the machine's memory allows."""
    given = os.environ.get("PACHY_MAX_WORKERS", "").strip()
    if given:
        try:
            if int(given) >= 1:
                return int(given)
        except ValueError:
            pass
        log.warning("PACHY_MAX_WORKERS=%r is not a positive integer; using 2 per core", given)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    budget = 2 * max(1, cores)
    try:
        with open("/proc/meminfo") as f:
            total = next(int(line.split()[1]) << 10 for line in f if line.startswith("MemTotal:"))
        budget = min(budget, max(1, total // WORKER_MEMORY))
    except (OSError, StopIteration, ValueError):
        pass
    return budget


def share_workers(wants: list[tuple[str, int, bool]], budget: int) -> dict[str, int]:
    """Workers per pipeline within ``budget``. ``wants`` is ``(pipeline, workers
    wanted, busy)`` in order of priority. Busy pipelines (a job or a service) come
    first: one worker each in order while the budget lasts (so the oldest job always
    runs), then one more each in turn up to what they want; idle pipelines share
    what is left the same way."""
    shares = {name: 0 for name, _w, _b in wants}
    left = budget
    for group in ([w for w in wants if w[2]], [w for w in wants if not w[2]]):
        while left > 0:
            gave = False
            for name, want, _busy in group:
                if left > 0 and shares[name] < want:
                    shares[name] += 1
                    left -= 1
                    gave = True
            if not gave:
                break
    return shares
