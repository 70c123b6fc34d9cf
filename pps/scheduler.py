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
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pfsfuse.errors import Conflict, InvalidArgument, NotFound, PfsError, TimedOut, Unreachable
from pfsfuse.mount import fuse_unavailable
from pps import jobs as jp
from pps.datums import OutputCollisionError, check_output_collisions
from pps.egress import egress
from pps.logs import LogStore
from pps.queue import Task, TaskQueue
from pps.runners.base import WorkerSpec
from pps.spec import Capabilities, PipelineSpec, parse_spec, parse_specs
from pps.spec_inputs import CronInput, GitInput, PfsInput, parse_cron, parse_quantity
from pps.store import JobRow, PipelineRow, PpsStore

log = logging.getLogger("pps.scheduler")

TICK = 1.0
CRASH_WINDOW = 60.0
CRASH_LIMIT = 3
RERUN_REASON = "the daemon stopped while the job ran; it runs again"
# A stopping daemon gives its workers this long before SIGKILL: above a service's own
# SIGTERM grace (shim.longrun, 3 s), and short enough that a stop ends within 5 s.
STOP_GRACE = 3.5


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


class Scheduler:
    def __init__(self, pfs, home: str, *, runner=None, capabilities: Capabilities | None = None,
                 max_workers: int | None = None):
        self.pfs = pfs
        self.store = PpsStore(pfs)
        self.queue = TaskQueue()
        self.logs = LogStore(home)
        self.runner = runner
        # One budget of worker processes for all pipelines: parallelism asks, the budget decides.
        self.max_workers = max_workers if max_workers is not None else default_max_workers()
        self.capabilities = replace(capabilities or Capabilities(), max_workers=self.max_workers)
        self._wake = threading.Event()
        self._changed = threading.Condition()
        self._lock = threading.RLock()
        self.active: dict[str, ActiveJob] = {}
        self._runs: dict[str, list[list[jp.LeafCommit]]] = {}
        self._crashes: dict[str, list[float]] = {}
        self._services: dict[str, tuple[str, str]] = {}
        self._specs: dict[tuple[str, int, float], PipelineSpec] = {}
        self._starting: set[str] = set()  # pipelines whose long-running task is being started
        self._waiting_for_workers: set[str] = set()  # busy, but the worker budget is in use elsewhere
        self._ensuring = threading.Lock()  # workers started for a pipeline vs. the pipeline deleted
        self._thread: threading.Thread | None = None
        self._stopping_workers: threading.Thread | None = None
        self._closed = False
        pfs.on_finish.append(lambda _info: self.notify())

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
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
        if self.runner is not None:
            self._stopping_workers = threading.Thread(target=self.runner.close, args=(STOP_GRACE,),
                                                      name="pps-stop-workers", daemon=True)
            self._stopping_workers.start()

    def close(self) -> None:
        self.begin_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._stopping_workers is not None:
            self._stopping_workers.join(timeout=15)

    def notify(self) -> None:
        self._wake.set()

    def _changed_now(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_changed(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

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

    # -- pipelines -------------------------------------------------------------

    def create_pipelines(self, text: str, *, update: bool = False, reprocess: bool = False,
                         one_off: bool = False) -> list[PipelineRow]:
        """create-/update-pipeline; ``one_off`` (create-job): the pipeline is created
        stopped and given one job on its inputs' heads."""
        specs = parse_specs(text)
        # Checked for the whole batch before anything is written: a refused spec changes nothing.
        for spec in specs:
            self._check_secrets(spec)
        self._check_cycles(specs)
        out = []
        for spec in specs:
            row = self._put_pipeline(spec, update=update, reprocess=reprocess, stopped=one_off)
            if one_off:
                self.request_run(row.name, [])
            out.append(row)
        self.notify()
        return out

    def _put_pipeline(self, spec: PipelineSpec, *, update: bool, reprocess: bool,
                      stopped: bool = False) -> PipelineRow:
        for leaf, path in spec.leaves():
            if isinstance(leaf, PfsInput):
                try:
                    self.pfs.inspect_repo(leaf.repo)
                except NotFound:
                    raise NotFound(f"{path}.repo: repo '{leaf.repo}' not found; create it first "
                                   f"(pachctl create-repo {leaf.repo})") from None
                if leaf.repo == spec.name:
                    raise InvalidArgument(f"{path}.repo: pipeline '{spec.name}' cannot read its own output repo")
            elif isinstance(leaf, CronInput):
                self._ensure_repo(leaf.repo, f"cron ticks of pipeline {spec.name}")
            elif isinstance(leaf, GitInput):
                self._ensure_repo(leaf.name, f"git input of pipeline {spec.name}")
        old = self.store.find_pipeline(spec.name)
        if old is None and not update:
            try:
                self.pfs.inspect_repo(spec.name)
                users = [p.name for p in self.store.list_pipelines()]
                if spec.name not in users:
                    raise Conflict(f"repo '{spec.name}' already exists and would be the output repo of "
                                   f"pipeline '{spec.name}'; delete it or name the pipeline differently")
            except NotFound:
                pass
        notes = [{"path": p, "reason": r} for p, r in spec.inert_fields(self.capabilities)]
        for leaf, path in spec.leaves():
            if isinstance(leaf, GitInput):
                notes.append({"path": path, "reason": f"no webhook from {leaf.url} reaches this machine; commits "
                              f"to repo '{leaf.name}' (branch {leaf.branch}) trigger the pipeline instead"})
            if isinstance(leaf, PfsInput) and leaf.lazy and (why := fuse_unavailable()):
                # Lazy inputs are served through the worker's FUSE view (shim/lazyfs.py) where it can mount.
                notes.append({"path": f"{path}.lazy", "reason": f"no FUSE on this machine ({why}): inputs are "
                              "copied into /pfs before the datum runs; the datum sees the same bytes either way"})
        limits = spec.resource_limits
        if limits is not None and (limits.cpu or limits.memory) and self.capabilities.runner == "local":
            notes.append({"path": "resource_limits", "reason": "the local runner does not cap a datum's cpu "
                          "or memory (no cgroup per datum)"})
        dss = spec.datum_set_spec
        if dss is not None and (dss.size_bytes or dss.per_worker):
            notes.append({"path": "datum_set_spec", "reason": "only 'number' sizes a worker's share here"})
        if spec.transform.debug:
            notes.append({"path": "transform.debug", "reason": "pachy's workers log the same either way"})
        if spec.max_queue_size > 1:
            notes.append({"path": "max_queue_size", "reason": "workers take datum_set_spec.number units (or "
                          "an even share) at a time; the queue size does not apply"})
        svc = spec.service or (spec.spout.service if spec.spout else None)
        if svc is not None and svc.external_port and svc.external_port != svc.internal_port \
                and self.capabilities.runner == "local":
            where = "service" if spec.service else "spout.service"
            notes.append({"path": f"{where}.external_port", "reason": "the local runner has no port mapping: "
                          f"the service answers on this machine's port {svc.internal_port} (internal_port)"})
        salt = spec.salt or (old.salt if old is not None and not reprocess else uuid.uuid4().hex)
        with self.pfs.tx() as db:
            row = self.store.put_pipeline(db, spec.name, spec.to_dict() | {"generation": spec.generation}, salt,
                                          notes, update=update)
            if stopped:
                db.execute("UPDATE pps_pipelines SET stopped=1, state='paused' WHERE name=?", (spec.name,))
            if reprocess and old is not None and spec.generation == 1:
                db.execute("DELETE FROM pps_cursors WHERE pipeline=?", (spec.name,))
        self._ensure_repo(spec.name, f"output of pipeline {spec.name}")
        if old is None and spec.generation != 1:
            self._start_at_heads(spec)
        if old is not None and reprocess:
            if spec.generation == 1:
                self._archive_outputs(spec)
            else:
                self.request_run(spec.name, [])
        elif old is not None and spec.generation != 1:
            self.request_run(spec.name, [])
        return row

    def _check_secrets(self, spec: PipelineSpec) -> None:
        """Every secret the transform names exists (with the key it reads): a missing
        one would otherwise only show when a job starts."""
        for i, sec in enumerate(spec.transform.secrets):
            try:
                data = self.store.get_secret(sec.name)
            except NotFound:
                raise NotFound(f"transform.secrets[{i}].name: secret '{sec.name}' not found; create it first "
                               "(pachctl create-secret -f SECRET.json)") from None
            if sec.key and sec.key not in data:
                raise InvalidArgument(f"transform.secrets[{i}].key: secret '{sec.name}' has no key '{sec.key}' "
                                      f"(it has: {', '.join(sorted(data)) or 'none'})")

    def _check_cycles(self, specs: list[PipelineSpec]) -> None:
        """Refuse a pipeline whose output would, through other pipelines, feed its own
        input: each output commit would trigger the next job forever."""
        reads = {row.name: self._input_repos(row) for row in self.store.list_pipelines()}
        for spec in specs:
            # reading its own output is refused on its own, with its own message
            reads[spec.name] = {jp.leaf_repo(leaf) for leaf in jp.leaves(spec)} - {spec.name}
        for spec in specs:
            cycle = find_cycle(reads, spec.name)
            if cycle is not None:
                raise InvalidArgument(f"pipeline '{spec.name}' would form a cycle: {' -> '.join(cycle)} "
                                      "(each name's output is read by the next)")

    def _ensure_repo(self, name: str, description: str) -> None:
        try:
            self.pfs.create_repo(name, description)
        except PfsError:
            pass

    def _start_at_heads(self, spec: PipelineSpec) -> None:
        """2.x: a new pipeline processes its inputs' heads, not their history."""
        with self.pfs.tx() as db:
            for leaf in jp.leaves(spec):
                repo, branch = jp.leaf_repo(leaf), jp.leaf_branch(leaf)
                r = db.execute("SELECT MAX(seq) FROM commits WHERE repo=? AND branch=? AND finished IS NOT NULL",
                               (repo, branch)).fetchone()
                if r[0] is not None and r[0] > 0:
                    self.store.set_cursor(db, spec.name, repo, branch, r[0] - 1)

    def _archive_outputs(self, spec: PipelineSpec) -> None:
        """1.x update without --no-archive (docs ch. 11): old results are archived, all input reprocessed."""
        for c in self.pfs.list_commits(spec.name):
            if c.finished is not None:
                self.pfs.archive_commit(spec.name, c.id)
        try:
            self.pfs.delete_branch(spec.name, spec.output_branch)
        except PfsError:
            pass
        with self.pfs.tx() as db:
            self.store.clear_units(db, spec.name)

    def spec_of(self, row: PipelineRow) -> PipelineSpec:
        """The parsed spec, parsed once per pipeline version (every tick asks for it)."""
        key = (row.name, row.version, row.updated)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) >= 256:  # old versions of updated or deleted pipelines
                self._specs.clear()
            spec = self._specs[key] = parse_spec(row.spec)
        return spec

    def delete_pipeline(self, name: str, *, force: bool = False, keep_repo: bool = False) -> None:
        row = self.store.get_pipeline(name)
        downstream = [p.name for p in self.store.list_pipelines()
                      if p.name != name and name in self._input_repos(p)]
        if downstream and not force and not keep_repo:
            raise Conflict(f"pipeline(s) {', '.join(downstream)} read the output of pipeline '{name}'; delete "
                           "them first, or pass --force")
        self._drop_service(name)
        with self._lock:
            job = self.active.pop(name, None)
            if job is not None:
                self.queue.drop_job(job.row.id)
        if self.runner is not None:
            self.runner.stop(name)
        jobs = [j.id for j in self.store.list_jobs(name)]
        if job is not None:
            self._discard_output(job)
        with self.pfs.tx() as db:
            self.store.delete_pipeline(db, name)
            for j in jobs:
                self.pfs.unpin(f"job/{j}/", db)
        if self.runner is not None:
            with self._ensuring:  # workers a tick started meanwhile (from rows read before the delete)
                self.runner.stop(name)
        self.logs.delete_jobs(jobs)
        if not keep_repo:
            try:
                self.pfs.delete_repo(row.name, force=True)
            except NotFound:
                pass
        self._changed_now()

    def _input_repos(self, row: PipelineRow) -> set[str]:
        return {repo for repo, _ in self._input_branches(row)}

    def readers_of(self, repo: str) -> list[str]:
        """Pipelines reading ``repo`` (delete-repo refuses while there are any)."""
        return [p.name for p in self.store.list_pipelines() if repo in self._input_repos(p)]

    def _drop_service(self, name: str) -> None:
        with self._lock:
            current = self._services.pop(name, None)
        if current is not None:
            self.queue.complete(current[1])

    def stop_pipeline(self, name: str) -> PipelineRow:
        self.store.get_pipeline(name)
        self._drop_service(name)
        self.store.set_pipeline_state(name, "paused", "", stopped=True)
        if self.runner is not None:
            self.runner.stop(name)
        self.notify()
        return self.store.get_pipeline(name)

    def start_pipeline(self, name: str) -> PipelineRow:
        self.store.get_pipeline(name)
        self.store.set_pipeline_state(name, "starting", "", stopped=False)
        self._crashes.pop(name, None)
        self.notify()
        return self.store.get_pipeline(name)

    def request_run(self, name: str, commits: list[dict]) -> None:
        """run-pipeline: a job on the heads, or on the given commits of some inputs."""
        row = self.store.get_pipeline(name)
        spec = self.spec_of(row)
        pinned = {}
        for c in commits:
            info = self.pfs.inspect_commit(c["repo"], c["commit"])
            pinned[c["repo"]] = info
        inputs = []
        for leaf in jp.leaves(spec):
            repo, branch = jp.leaf_repo(leaf), jp.leaf_branch(leaf)
            if repo in pinned:
                info = pinned[repo]
                inputs.append(jp.LeafCommit(leaf.name, repo, info.branch, info.id))
                continue
            if isinstance(leaf, PfsInput) and leaf.commit:
                info = self.pfs.inspect_commit(repo, leaf.commit)
                inputs.append(jp.LeafCommit(leaf.name, repo, info.branch, info.id))
                continue
            head = self._latest_finished(repo, branch)
            if head is None:
                raise Conflict(f"input repo '{repo}' has no finished commit on branch '{branch}' to run on")
            inputs.append(jp.LeafCommit(leaf.name, repo, branch, head[0]))
        with self._lock:
            self._runs.setdefault(name, []).append(inputs)
        self.notify()

    # -- the loop ----------------------------------------------------------------

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

    def _manage_workers(self, rows: list[PipelineRow]) -> None:
        """Share the worker budget between pipelines (``share_workers``) and have the
        runner start or stop workers to match; shrinking first, so that the total
        never exceeds the budget while workers move from one pipeline to another."""
        if self.runner is None or self._closed:
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
        crashing = len(self._crashes.get(row.name, [])) >= CRASH_LIMIT
        state = "paused" if row.stopped else "standby" if want == 0 else "running"
        if row.stopped and row.state == "paused":
            return
        now_row = self.store.find_pipeline(row.name)
        if now_row is None or now_row.state == "failure":
            return  # stays until a job starts (or the pipeline is updated, stopped or started)
        if row.state != state and not (row.state == "crashing" and crashing):
            self.store.set_pipeline_state(row.name, state, "")

    def _cron_ticks(self, row: PipelineRow) -> None:
        """Cron inputs: a commit in the input's repo at each tick, holding a file named
        by the tick's time (only the latest with ``overwrite``); missed ticks collapse
        into one."""
        spec = self.spec_of(row)
        for leaf in jp.leaves(spec):
            if not isinstance(leaf, CronInput):
                continue
            last = self.pfs.q1("SELECT description FROM commits WHERE repo=? AND branch='master' AND finished IS"
                               " NOT NULL ORDER BY seq DESC LIMIT 1", (leaf.repo,))
            if last is not None and last[0].startswith("cron tick "):
                base = datetime.fromisoformat(last[0].removeprefix("cron tick ").replace("Z", "+00:00"))
            else:
                base = leaf.start or datetime.fromtimestamp(row.created, UTC)
            now = datetime.now(UTC)
            tick = leaf.schedule.next_after(base)
            if tick is None or tick > now:
                continue
            while (after := leaf.schedule.next_after(tick)) is not None and after <= now:
                tick = after
            stamp = tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            info = self.pfs.start_commit(leaf.repo, "master", description=f"cron tick {stamp}")
            with self.pfs.write_session(leaf.repo, info.id) as ws:
                if leaf.overwrite:
                    for f in self.pfs.list_files(leaf.repo, info.id, ""):
                        ws.delete_if_present(f.path)
                ws.put_bytes(stamp, stamp.encode() + b"\n", overwrite=True)
                ws.commit()
            self.pfs.finish_commit(leaf.repo, info.id)

    def worker_exited(self, pipeline: str, worker: str, code: int) -> None:
        """The runner's on_exit: the worker's task goes to another worker."""
        self.queue.release_worker(worker)
        self._crashes.setdefault(pipeline, []).append(time.monotonic())
        self.logs.note(pipeline, None, f"worker {worker} exited with code {code}")
        self.notify()

    def _kill_workers(self, pipeline: str) -> None:
        if self.runner is not None:
            self.runner.stop(pipeline)

    def _latest_finished(self, repo: str, branch: str) -> tuple | None:
        return self.pfs.q1("SELECT id, seq FROM commits WHERE repo=? AND branch=? AND finished IS NOT NULL"
                           " AND archived=0 ORDER BY seq DESC LIMIT 1", (repo, branch))

    def _next_trigger(self, row: PipelineRow, spec: PipelineSpec) -> Trigger | None:
        with self._lock:
            runs = self._runs.get(row.name)
            if runs:
                return Trigger(runs.pop(0), None, [])
        best = None
        heads = {}
        for leaf in jp.leaves(spec):
            repo, branch = jp.leaf_repo(leaf), jp.leaf_branch(leaf)
            if isinstance(leaf, PfsInput) and leaf.commit:
                # input.pfs.commit: always this commit; it never triggers a job itself
                pinned = self.pfs.resolve(repo, leaf.commit)
                heads[leaf.name] = (repo, branch, (pinned[0], pinned[3]))
                continue
            head = self._latest_finished(repo, branch)
            if head is None:
                return None  # docs 15.1: no job until every input has data
            heads[leaf.name] = (repo, branch, head)
            cur = self.store.cursor(row.name, repo, branch)
            if isinstance(leaf, PfsInput) and leaf.trigger is not None and not self._trigger_fires(row, leaf, cur):
                continue
            nxt = self.pfs.q1("SELECT id, seq, finished FROM commits WHERE repo=? AND branch=? AND seq>?"
                              " AND finished IS NOT NULL AND archived=0 ORDER BY seq LIMIT 1",
                              (repo, branch, -1 if cur is None else cur))
            if isinstance(leaf, PfsInput) and leaf.trigger is not None and nxt is not None:
                nxt = (head[0], head[1], nxt[2])  # a trigger moves the input to the newest commit
            if nxt is not None and (best is None or nxt[2] < best[3][2]):
                best = (leaf.name, repo, branch, nxt)
        if best is None:
            return None
        name, repo, branch, nxt = best
        for leaf in jp.leaves(spec):
            if (isinstance(leaf, PfsInput) and leaf.trigger is not None and leaf.trigger.branch
                    and leaf.name == name and leaf.branch != branch):
                self.pfs.create_branch(repo, leaf.branch, head=nxt[0])  # as Pachyderm moves it
        inputs = []
        for leaf in jp.leaves(spec):
            r, b, head = heads[leaf.name]
            if (r, b) == (repo, branch) and not (isinstance(leaf, PfsInput) and leaf.commit):
                inputs.append(jp.LeafCommit(leaf.name, r, b, nxt[0]))
            else:
                inputs.append(jp.LeafCommit(leaf.name, r, b, head[0]))
        return Trigger(inputs, name, [(repo, branch, nxt[1])])

    def _trigger_fires(self, row: PipelineRow, leaf: PfsInput, cur: int | None) -> bool:
        """input.pfs.trigger: since the commit the input last moved to, have enough
        commits (``commits``), bytes (``size``) or time (``cron_spec``) gone by?
        Any one condition suffices unless ``all``; a branch alone fires on every commit."""
        t = leaf.trigger
        repo, branch = leaf.repo, jp.leaf_branch(leaf)
        newest = self.pfs.q1("SELECT id, seq, size FROM commits WHERE repo=? AND branch=? AND finished IS NOT"
                             " NULL AND archived=0 ORDER BY seq DESC LIMIT 1", (repo, branch))
        if newest is None or (cur is not None and newest[1] <= cur):
            return False
        base = None if cur is None else self.pfs.q1(
            "SELECT size, finished FROM commits WHERE repo=? AND branch=? AND seq=?", (repo, branch, cur))
        conds = []
        if t.commits:
            conds.append(newest[1] - (-1 if cur is None else cur) >= t.commits)
        if t.size:
            conds.append(newest[2] - (base[0] if base else 0) >= parse_quantity(t.size))
        if t.cron_spec:
            since = datetime.fromtimestamp(base[1] if base else row.created, UTC)
            tick = parse_cron(t.cron_spec).next_after(since)
            conds.append(tick is not None and tick <= datetime.now(UTC))
        if not conds:
            return True
        return all(conds) if t.all else any(conds)

    def _maybe_start(self, row: PipelineRow) -> None:
        spec = self.spec_of(row)
        if spec.spout is not None or spec.service is not None:
            self._long_running(row, spec)
            return
        if spec.input is None:
            return
        with self._lock:
            self._starting.add(row.name)  # flush must not take it for idle meanwhile
        try:
            trig = self._next_trigger(row, spec)
            if trig is None:
                return
            if spec.generation == 1:
                plan = jp.plan_v1(self.pfs, spec, trig.inputs, trig.trigger)
            else:
                previous = self.store.units(row.name)
                plan = jp.plan_v2(self.pfs, spec, row.salt, trig.inputs, previous,
                                  reprocess=spec.reprocess_spec == "every_job")
            self._start_job(row, spec, trig, plan)
        finally:
            with self._lock:
                self._starting.discard(row.name)

    # -- spouts and services: one long-running task per pipeline --------------------

    def _long_running(self, row: PipelineRow, spec: PipelineSpec) -> None:
        """A spout or service runs as one task a worker keeps; a service's task is
        replaced (its process restarted on the new data) when an input head moves."""
        inputs = []
        if spec.service is not None and spec.input is not None:
            for leaf in jp.leaves(spec):
                repo, branch = jp.leaf_repo(leaf), jp.leaf_branch(leaf)
                head = self._latest_finished(repo, branch)
                if head is None:
                    return
                inputs.append(jp.LeafCommit(leaf.name, repo, branch, head[0]))
        # A new spec version (update-pipeline) restarts the task too, not only new input heads.
        generation = f"v{row.version}:" + (",".join(lc.commit for lc in inputs) or "spout")
        with self._lock:
            current = self._services.get(row.name)
            if current is not None and current[0] == generation and self.queue.get(current[1]) is not None:
                return
            if current is not None:
                self.queue.complete(current[1])
        tid = uuid.uuid4().hex
        unit = jp.Unit("service", ["service"])
        for lc in inputs:
            tree = jp.Tree(self.pfs, lc.repo, lc.commit)
            unit.dirs.append({"input": lc.name, "path": "/"})
            unit.env[lc.name] = f"/pfs/{lc.name}"
            unit.env[f"{lc.name}_COMMIT"] = lc.commit
            for path, size in sorted(tree.sizes.items()):
                unit.files.append({"input": lc.name, "path": path, "repo": lc.repo, "commit": lc.commit,
                                   "src": path, "offset": 0, "length": -1, "size": size, "empty": False})
        t = spec.transform
        payload = {
            "task_id": tid, "job_id": None, "pipeline": row.name, "generation": spec.generation,
            "kind": "spout" if spec.spout is not None else "service",
            "transform": _transform_payload(t, with_err=False),
            "secrets": [self._secret(sec) for sec in t.secrets],
            "datum_timeout": None, "datum_tries": 1, "prev": None,
            "env": {"PACH_JOB_ID": "", "PACH_OUTPUT_COMMIT_ID": ""} | jp.JobPlan(inputs, [], [], {}, [], 0).env,
            "units": [unit.task_part()],
            "output": {"repo": row.name, "branch": spec.output_branch},
            "spout": {"overwrite": spec.spout.overwrite} if spec.spout is not None else None,
            "service": ({"internal_port": spec.service.internal_port, "external_port": spec.service.external_port}
                        if spec.service is not None else None),
        }
        with self._lock:
            self._services[row.name] = (generation, tid)
        self.queue.put([Task(tid, "", row.name, ["service"], payload)])
        self.logs.note(row.name, None, f"{payload['kind']} task {tid} queued"
                                       + (f" on {generation}" if inputs else ""))

    def still_current(self, pipeline: str, task_id: str) -> bool:
        """Asked by a worker running a spout or service task: keep running it?"""
        with self._lock:
            current = self._services.get(pipeline)
        row = self.store.find_pipeline(pipeline)
        return current is not None and current[1] == task_id and row is not None and not row.stopped

    def _provenance(self, inputs: list[jp.LeafCommit]) -> list[dict]:
        seen: dict[str, dict] = {}
        for lc in inputs:
            seen.setdefault(lc.commit, {"repo": lc.repo, "branch": lc.branch, "commit": lc.commit})
            for p in self.pfs.inspect_commit(lc.repo, lc.commit).provenance:
                seen.setdefault(p["commit"], p)
        return list(seen.values())

    def _start_job(self, row: PipelineRow, spec: PipelineSpec, trig: Trigger, plan: jp.JobPlan | None) -> None:
        now = time.time()
        prov = self._provenance(trig.inputs)
        job_id = uuid.uuid4().hex
        out = self.pfs.start_commit(spec.name, spec.output_branch, provenance=prov,
                                    description=f"output of job {job_id}")
        job = JobRow(job_id, row.name, row.version, "running", "", now, now, None,
                     [lc.to_dict() for lc in trig.inputs], trig.trigger, spec.name, spec.output_branch, out.id,
                     provenance=prov)
        if plan is None:  # 1.x: nothing new and not run_empty: an empty output commit, no datums
            plan = jp.JobPlan(trig.inputs, [], [], {}, [], 0)
        job.total = plan.total
        job.skipped = len(plan.skipped)
        datum_rows = []
        order = 0
        for unit in plan.to_run:
            for d in unit.datums:
                datum_rows.append((d, unit.unit_id, order, "starting", unit.datum_files.get(d, [])))
                order += 1
        for d, unit_id, files in plan.skipped:
            datum_rows.append((d, unit_id, order, "skipped", files))
            order += 1
        with self.pfs.tx() as db:
            self.store.insert_job(db, job)
            self.store.insert_datums(db, job_id, datum_rows)
            for repo, branch, seq in trig.cursors:
                self.store.set_cursor(db, row.name, repo, branch, seq)
        active = ActiveJob(job, spec, plan, {u.unit_id: u for u in plan.to_run})
        if spec.job_timeout:
            active.deadline = time.monotonic() + spec.job_timeout
        with self._lock:
            self.active[row.name] = active
        if row.state == "failure":
            self.store.set_pipeline_state(row.name, "running", "")
        self.logs.note(row.name, job_id, f"started job {job_id}: {len(plan.to_run)} unit(s) to run, "
                                         f"{len(plan.skipped)} datum(s) skipped")
        try:
            tasks = self._tasks(active)
        except NotFound as exc:  # a secret deleted since create-pipeline: fail, do not wait forever
            self._fail(active, f"cannot run the job: {exc.message}")
            return
        self.queue.put(tasks)
        self._changed_now()
        self._maybe_complete(active)

    def _tasks(self, job: ActiveJob) -> list[Task]:
        spec = job.spec
        units = [u for u in job.plan.to_run if u.unit_id not in job.results]
        if not units:
            return []
        workers = min(max(1, spec.parallelism_spec.workers()), self.max_workers)
        per_task = max(1, min(64, len(units) // (workers * 4) or 1))
        if spec.datum_set_spec is not None and spec.datum_set_spec.number:
            per_task = spec.datum_set_spec.number  # units per task: what a worker takes at a time
        t = spec.transform
        base = {
            "job_id": job.row.id, "pipeline": spec.name, "generation": spec.generation,
            "transform": _transform_payload(t, with_err=True),
            "secrets": [self._secret(s) for s in t.secrets],
            "datum_timeout": spec.datum_timeout, "datum_tries": spec.datum_tries,
            "env": {"PACH_JOB_ID": job.row.id, "PACH_OUTPUT_COMMIT_ID": job.row.output_commit} | job.plan.env,
            "prev": self._prev(job) if spec.generation == 1 else None,
        }
        tasks = []
        for i in range(0, len(units), per_task):
            part = units[i : i + per_task]
            tid = uuid.uuid4().hex
            payload = base | {"task_id": tid, "units": [u.task_part() for u in part]}
            tasks.append(Task(tid, job.row.id, spec.name, [u.unit_id for u in part], payload))
        return tasks

    def _secret(self, s) -> dict[str, Any]:
        return {"name": s.name, "mount_path": s.mount_path, "env_var": s.env_var, "key": s.key,
                "data": self.store.get_secret(s.name)}

    def _prev(self, job: ActiveJob) -> dict | None:
        info = self.pfs.inspect_commit(job.row.output_repo, job.row.output_commit)
        if info.parent is None:
            return None
        return {"repo": job.row.output_repo, "commit": info.parent}

    # -- results -------------------------------------------------------------

    def job_for_task(self, task_id: str) -> tuple[Task, ActiveJob] | None:
        t = self.queue.get(task_id)
        if t is None:
            return None
        with self._lock:
            job = self.active.get(t.pipeline)
        if job is None or job.row.id != t.job_id:
            return None
        return t, job

    def task_result(self, task_id: str, results: list[dict]) -> bool:
        """A worker's results for a task: ``[{unit_id, state, reason, tries, started,
        finished, owner}]`` with outputs already pinned under ``owner``. False if
        the task was already done elsewhere (its pins are then dropped)."""
        t = self.queue.complete(task_id)
        with self._lock:
            job = self.active.get(t.pipeline) if t is not None else None
        if t is None or job is None or job.row.id != t.job_id:
            for r in results:
                if r.get("owner"):
                    self.pfs.unpin(r["owner"])
            return False
        counts = {"success": 0, "failed": 0, "recovered": 0}
        with self.pfs.tx() as db:
            for r in results:
                unit = job.units.get(r["unit_id"])
                if unit is None or r["unit_id"] in job.results:
                    continue
                state = r["state"] if r["state"] in counts else "failed"
                n = self.store.finish_unit(db, job.row.id, unit.unit_id, state, r.get("reason", ""),
                                           int(r.get("tries", 1)), r.get("started"), r.get("finished"))
                counts[state] += n
                job.results[unit.unit_id] = (state, r.get("owner"))
                if state == "failed" and not job.failure:
                    job.failure = f"datum {unit.datums[0]} failed: {r.get('reason') or 'user code failed'}"
            job.row.processed += counts["success"]
            job.row.failed += counts["failed"]
            job.row.recovered += counts["recovered"]
            self.store.update_job(db, job.row)
        self._changed_now()
        self.notify()
        return True

    def task_failed(self, task_id: str, reason: str) -> None:
        """A task's result could not be stored (the store is full, ...): its units
        fail with the reason, which fails the job, rather than the task going round."""
        t = self.queue.get(task_id)
        if t is not None:
            self.task_result(task_id, [{"unit_id": u, "state": "failed", "reason": reason, "tries": 1}
                                       for u in t.units])

    def _maybe_complete(self, job: ActiveJob) -> None:
        if job.failure:
            self._fail(job, job.failure)
            return
        if len(job.results) < len(job.units):
            return
        try:
            self._merge(job)
        except (OutputCollisionError, PfsError) as exc:
            self._fail(job, str(exc) if isinstance(exc, OutputCollisionError) else exc.message)
            return
        self._changed_now()

    def _merge(self, job: ActiveJob) -> None:
        row, spec = job.row, job.spec
        pinned = {u: self.pfs.pinned(owner) if owner else [] for u, (_state, owner) in job.results.items()}
        order = [u.unit_id for u in job.plan.to_run]
        new_paths = {u: [p for op, p, _e in pinned[u] if op in ("put", "append")] for u in order}
        if spec.generation != 1:
            self._check_collisions(job, new_paths)
        ws = self.pfs.write_session(row.output_repo, row.output_commit)
        try:
            if spec.generation != 1:
                for unit in job.plan.dropped_units:
                    for path in self.store.paths_of(row.pipeline, unit):
                        ws.delete_if_present(path)
                for u in order:
                    for op, path, e in pinned[u]:
                        if op == "mkdir":
                            ws.mkdir(path)
                        elif e is not None:
                            ws.add(path, self.pfs.load_refs(e), e.size, overwrite=True)
            else:
                written: set[str] = set()
                for u in order:
                    for op, path, e in pinned[u]:
                        if op == "delete":
                            ws.delete_if_present(path)
                        elif op == "mkdir":
                            ws.mkdir(path)
                        elif e is not None:
                            overwrite = op == "put" and path not in written
                            ws.add(path, self.pfs.load_refs(e), e.size, overwrite=overwrite)
                            written.add(path)
            ws.commit()
        finally:
            ws.close()
        self.pfs.finish_commit(row.output_repo, row.output_commit)
        state = "success"
        if spec.egress is not None:
            try:
                n = egress(self.pfs, row.output_repo, row.output_commit, spec.egress.url)
                self.logs.note(row.pipeline, row.id, f"egress: {n} file(s) to {spec.egress.url}")
            except PfsError as exc:
                row.reason = f"egress to {spec.egress.url} failed: {exc.message}"
                self.logs.note(row.pipeline, row.id, row.reason)
                state = "failure"  # the output commit stands; only the copy out failed
        if spec.enable_stats:
            row.stats_commit = self._write_stats(row)
        row.state, row.finished = state, time.time()
        with self.pfs.tx() as db:
            if spec.generation != 1:
                added = {u: job.units[u].datums for u in order}
                self.store.replace_units(db, row.pipeline, job.plan.dropped_units, added, new_paths)
            self.pfs.unpin(f"job/{row.id}/", db)
            self.store.update_job(db, row)
        with self._lock:
            if self.active.get(row.pipeline) is job:
                del self.active[row.pipeline]
        self.logs.note(row.pipeline, row.id, f"job {row.id} succeeded: {row.processed} processed, "
                                             f"{row.skipped} skipped")
        self.notify()

    def _write_stats(self, row: JobRow) -> str | None:
        """enable_stats: a commit on the output repo's ``stats`` branch with, per datum
        this job ran, ``/<datum>/stats.json`` and ``/<datum>/logs`` (its log lines)."""
        datums = [d for d in self.store.list_datums(row.id) if d["state"] != "skipped"]
        lines: dict[str, list[str]] = {}
        for line in self.logs.read(lambda: [row.id]):
            if line.get("datum"):
                lines.setdefault(line["datum"], []).append(line.get("message", ""))
        try:
            info = self.pfs.start_commit(row.output_repo, "stats", provenance=row.provenance,
                                         description=f"stats of job {row.id}")
            with self.pfs.write_session(row.output_repo, info.id) as ws:
                ws.put_bytes("job.json", json.dumps({"job": row.id, "pipeline": row.pipeline,
                                                     "output_commit": row.output_commit}).encode(), overwrite=True)
                for d in datums:
                    ws.put_bytes(f"{d['id']}/stats.json", json.dumps(d, indent=1).encode(), overwrite=True)
                    text = "".join(m + "\n" for m in lines.get(d["id"], []))
                    ws.put_bytes(f"{d['id']}/logs", text.encode(), overwrite=True)
                ws.commit()
            self.pfs.finish_commit(row.output_repo, info.id)
            return info.id
        except PfsError as exc:
            self.logs.note(row.pipeline, row.id, f"stats commit failed: {exc.message}")
            return None

    def _check_collisions(self, job: ActiveJob, new_paths: dict[str, list[str]]) -> None:
        """2.x: two datums writing one path fail the job, naming both (seed 2.x)."""
        first_datum = {u: job.units[u].datums[0] for u in new_paths}
        outputs = {first_datum[u]: ps for u, ps in new_paths.items()}
        dropped = set(job.plan.dropped_units)
        kept = job.plan.kept_units  # only paths of kept (skipped) units can be owned by another unit
        for u, ps in new_paths.items() if kept else ():
            for p in ps:
                owner = self.store.owner_of(job.row.pipeline, p)
                if owner and owner not in dropped and owner not in new_paths:
                    raise OutputCollisionError(p, owner, first_datum[u])
        check_output_collisions(outputs, mode="2.x")

    def _discard_output(self, job: ActiveJob) -> None:
        try:
            self.pfs.delete_commit(job.row.output_repo, job.row.output_commit)
        except PfsError:
            pass

    def _fail(self, job: ActiveJob, reason: str, state: str = "failure") -> None:
        row = job.row
        self.queue.drop_job(row.id)
        with self._lock:
            if self.active.get(row.pipeline) is job:
                del self.active[row.pipeline]
        self._discard_output(job)
        row.state, row.reason, row.finished = state, reason, time.time()
        with self.pfs.tx() as db:
            self.pfs.unpin(f"job/{row.id}/", db)
            self.store.update_job(db, row)
            db.execute("UPDATE pps_datums SET state='failed', reason='job ended' WHERE job=? AND state IN"
                       " ('starting', 'running')", (row.id,))
        self.logs.note(row.pipeline, row.id, f"job {row.id} {state}: {reason}")
        self._changed_now()
        self.notify()

    def stop_job(self, job_id: str) -> JobRow:
        row = self.store.get_job(job_id)
        with self._lock:
            job = self.active.get(row.pipeline)
        if job is None or job.row.id != row.id:
            raise Conflict(f"job '{row.id}' is not running (state {row.state})")
        self._kill_workers(row.pipeline)
        self._fail(job, "stopped by the user", state="killed")
        return self.store.get_job(row.id)

    # -- restart -----------------------------------------------------------------

    def _recover(self) -> None:
        """After a crash or kill -9: running jobs are marked failed and their open
        output commits deleted; the next tick starts the job again from its input."""
        for row in self.store.list_jobs(states=("created", "running")):
            if row.output_commit:
                try:
                    info = self.pfs.inspect_commit(row.output_repo, row.output_commit)
                    if info.finished is None:
                        self.pfs.delete_commit(row.output_repo, row.output_commit)
                except PfsError:
                    pass
            with self.pfs.tx() as db:
                self.pfs.unpin(f"job/{row.id}/", db)
                db.execute("UPDATE pps_jobs SET state='killed', reason=?, finished=? WHERE id=?",
                           (RERUN_REASON, time.time(), row.id))
                # Let the triggering commit be picked again.
                for lc in row.inputs:
                    if lc.get("name") == row.trigger:
                        seq = db.execute("SELECT seq FROM commits WHERE id=?", (lc["commit"],)).fetchone()
                        if seq is not None and seq[0] is not None:
                            db.execute("UPDATE pps_cursors SET seq=? WHERE pipeline=? AND repo=? AND branch=?"
                                       " AND seq>=?", (seq[0] - 1, row.pipeline, lc["repo"], lc["branch"],
                                                      seq[0]))

    # -- waiting -------------------------------------------------------------------

    def wait_job(self, job_id: str, timeout: float | None = None) -> JobRow:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = self.store.get_job(job_id)
            if row.done or (deadline is not None and time.monotonic() > deadline) or self._closed:
                return row
            self.wait_changed(0.5)

    def _input_branches(self, row: PipelineRow) -> set[tuple[str, str]]:
        try:
            return {(jp.leaf_repo(leaf), jp.leaf_branch(leaf)) for leaf in jp.leaves(self.spec_of(row))}
        except PfsError:
            return set()

    def downstream(self, repo: str, branch: str | None = None) -> list[str]:
        """Pipelines fed, directly or not, by ``repo`` (its ``branch`` only, if given)."""
        out: list[str] = []
        pipes = self.store.list_pipelines()
        frontier: list[tuple[str, str | None]] = [(repo, branch)]
        while frontier:
            r, b = frontier.pop()
            for p in pipes:
                if p.name in out:
                    continue
                if any(ir == r and (b is None or ib == b) for ir, ib in self._input_branches(p)):
                    out.append(p.name)
                    frontier.append((p.name, p.spec.get("output_branch", "master")))
        return out

    def _held_by_trigger(self, pipeline: str, repo: str, cid: str) -> bool:
        """A commit a trigger has not moved the input to (yet) has no output to wait for
        (as in Pachyderm: it is not in the input branch's provenance)."""
        row = self.store.find_pipeline(pipeline)
        if row is None:
            return False
        for leaf in jp.leaves(self.spec_of(row)):
            if isinstance(leaf, PfsInput) and leaf.repo == repo and leaf.trigger is not None:
                # The cursor before the jobs: a job and the cursor it moves are written in
                # one transaction, so a cursor that moved to this commit implies its job is seen.
                cur = self.store.cursor(pipeline, repo, jp.leaf_branch(leaf))
                if self.pfs.q1("SELECT 1 FROM pps_jobs WHERE pipeline=? AND provenance LIKE ?",
                               (pipeline, f'%"{cid}"%')) is not None:
                    return False
                seq = self.pfs.q1("SELECT seq FROM commits WHERE id=?", (cid,))
                if cur is not None and seq is not None and seq[0] is not None and seq[0] <= cur:
                    return True  # passed over: the input moved beyond it
                return not self._trigger_fires(row, leaf, cur)
        return False

    def flush(self, commits: list[tuple[str, str]], repos: list[str] | None = None,
              timeout: float | None = None) -> tuple[list[str], list[JobRow]]:
        """Block until every pipeline downstream of the commits has finished an
        output commit from them (or failed a job on them). Returns (commit ids, failed jobs)."""
        targets = []
        for repo, ref in commits:
            info = self.pfs.inspect_commit(repo, ref)
            for p in self.downstream(repo, info.branch):
                if (not repos or p in repos) and not self._held_by_trigger(p, repo, info.id):
                    targets.append((info.id, p))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found, failed, missing = [], [], False
            with self._lock:
                idle = {p.name for p in self.store.list_pipelines()
                        if p.stopped and p.name not in self.active and p.name not in self._starting
                        and not self._runs.get(p.name)}
            for cid, pipeline in targets:
                if pipeline in idle:
                    continue  # stopped with nothing to run: waiting would never end
                # Through the pipeline's jobs (indexed by pipeline), not a scan of every commit;
                # "success" also means the job's bookkeeping is done, not only its commit.
                hit = self.pfs.q1("SELECT j.output_commit FROM pps_jobs j JOIN commits c ON c.id=j.output_commit"
                                  " WHERE j.pipeline=? AND j.state='success' AND c.archived=0 AND j.provenance"
                                  " LIKE ? ORDER BY j.created LIMIT 1", (pipeline, f'%"{cid}"%'))
                if hit is not None:
                    found.append(hit[0])
                    continue
                bad = self.pfs.q1("SELECT id FROM pps_jobs WHERE pipeline=? AND state IN ('failure', 'killed')"
                                  " AND reason<>? AND provenance LIKE ? ORDER BY created DESC LIMIT 1",
                                  (pipeline, RERUN_REASON, f'%"{cid}"%'))
                if bad is not None:
                    failed.append(self.store.get_job(bad[0]))
                    continue
                missing = True
            if not missing:
                return list(dict.fromkeys(found)), failed
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut(f"timed out waiting for {len(targets)} downstream commit(s)")
            if self._closed:
                raise Unreachable("the daemon is stopping; run the command again once it is back")
            self.wait_changed(0.5)


WORKER_MEMORY = 256 << 20  # a worker (~50 MB of Python) and room for its user code


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


def find_cycle(reads: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest path of data from pipeline ``start``'s output back to ``start``
    (``[start, ..., start]``), or None. ``reads`` maps each pipeline to the repos it
    reads; a pipeline's output repo bears its name."""
    readers: dict[str, list[str]] = {}
    for pipeline, repos in sorted(reads.items()):
        for repo in repos:
            readers.setdefault(repo, []).append(pipeline)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for repo in frontier:
            for pipeline in readers.get(repo, ()):
                if pipeline == start:
                    path = [start]
                    while repo != start:
                        path.append(repo)
                        repo = parent[repo]
                    return [start, *reversed(path[1:]), start]
                if pipeline not in parent:
                    parent[pipeline] = repo
                    nxt.append(pipeline)
        frontier = nxt
    return None


def _transform_payload(t, with_err: bool) -> dict:
    """The part of a task that says what to run (long-running tasks have no err_cmd)."""
    return {
        "cmd": list(t.cmd), "stdin": list(t.stdin),
        "err_cmd": list(t.err_cmd) if with_err else [], "err_stdin": list(t.err_stdin) if with_err else [],
        "env": dict(t.env), "accept_return_code": list(t.accept_return_code),
        "user": t.user, "working_dir": t.working_dir,
    }  # fmt: skip
