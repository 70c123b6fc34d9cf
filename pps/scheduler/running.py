"""Running jobs: a job starts (rows, datums, cursors and an open output commit
in order), its units become tasks in the wire format (pps.wire), workers'
results are recorded, and the job completes (pps.scheduler.merge) or fails
(its open output commit and pins dropped). Spouts and services run as one
long-running task each. After a crash, running jobs are marked for a rerun.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

from pfsfuse.errors import Conflict, NotFound, PfsError
from pfsfuse.memory import give_back_memory
from pps import jobs as jp
from pps import wire
from pps.datums import OutputCollisionError
from pps.queue import Task
from pps.scheduler.results import Done, Pending
from pps.scheduler.state import BIG_JOB, RERUN_REASON, ActiveJob, Base, Trigger
from pps.spec import PipelineSpec
from pps.spec import Secret as SpecSecret
from pps.spec import Transform as SpecTransform
from pps.store import JobRow, PipelineRow


class Running(Base):
    """Jobs and their tasks, from start to success or failure."""

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
            # No name holds the plan here: _start_job drops its bulk once written (a big input's).
            self._start_job(row, spec, trig, self._plan(row, spec, trig))
        finally:
            with self._lock:
                self._starting.discard(row.name)

    def _plan(self, row: PipelineRow, spec: PipelineSpec, trig: Trigger) -> jp.JobPlan | None:
        if spec.generation == 1:
            return jp.plan_v1(self.pfs, spec, trig.inputs, trig.trigger)
        return jp.plan_v2(self.pfs, spec, row.salt, trig.inputs, self.store.iter_units(row.name),
                          reprocess=spec.reprocess_spec == "every_job")

    def _long_running(self, row: PipelineRow, spec: PipelineSpec) -> None:
        """A spout or service runs as one task a worker keeps; a service's task is
        replaced (its process restarted on the new data) when an input head moves."""
        inputs = []
        if spec.service is not None and spec.input is not None:
            for leaf in jp.leaves(spec):
                repo, branch = jp.leaf_repo(leaf), jp.leaf_branch(leaf)
                head = self.pfs.latest_finished(repo, branch)
                if head is None:
                    return
                inputs.append(jp.LeafCommit(leaf.name, repo, branch, head.id))
        # A new spec version (update-pipeline) restarts the task too, not only new input heads.
        generation = f"v{row.version}:" + (",".join(lc.commit for lc in inputs) or "spout")
        with self._lock:
            current = self._services.get(row.name)
            if current is not None and current[0] == generation and self.queue.get(current[1]) is not None:
                return
            if current is not None:
                self.queue.complete(current[1])
        tid = uuid.uuid4().hex
        unit = wire.Unit("service", ["service"])
        for lc in inputs:
            tree = jp.Tree(self.pfs, lc.repo, lc.commit)
            unit.dirs.append(wire.Dir(lc.name, "/"))
            unit.env[lc.name] = f"/pfs/{lc.name}"
            unit.env[f"{lc.name}_COMMIT"] = lc.commit
            for path, size in sorted(tree.sizes.items()):
                unit.files.append(wire.FileSpec(lc.name, path, lc.repo, lc.commit, path, size=size))
        t = spec.transform
        task = wire.Task(
            task_id=tid, job_id="", pipeline=row.name, generation=spec.generation,
            kind="spout" if spec.spout is not None else "service",
            transform=_transform(t, with_err=False),
            secrets=[self._secret(sec) for sec in t.secrets],
            datum_timeout=None, datum_tries=1, prev=None,
            env={"PACH_JOB_ID": "", "PACH_OUTPUT_COMMIT_ID": ""} | jp.input_env(inputs),
            units=[unit],
            output=wire.Output(row.name, spec.output_branch),
            spout_overwrite=spec.spout is not None and spec.spout.overwrite,
            internal_port=spec.service.internal_port if spec.service is not None else None,
            external_port=spec.service.external_port if spec.service is not None else None,
        )
        with self._lock:
            self._services[row.name] = (generation, tid)
        self.queue.put([Task(tid, "", row.name, ["service"], task.to_dict())])
        self.logs.note(row.name, None, f"{task.kind} task {tid} queued" + (f" on {generation}" if inputs else ""))

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
            plan = jp.JobPlan(trig.inputs, [], jp.SkippedRows(), 0, [], 0)
        job.total = plan.total
        job.skipped = len(plan.skipped)

        def datum_rows(plan: jp.JobPlan):  # to run, then skipped (list-datum's order), made as written
            order = 0
            for unit in plan.to_run:
                for d in unit.datums:
                    yield d, unit.unit_id, order, "starting", unit.datum_files.get(d, "[]")
                    order += 1
            for s in plan.skipped:
                yield s.datum, s.unit, order, "skipped", s.files
                order += 1

        try:
            with self.pfs.tx() as db:
                self.store.insert_job(db, job)
                self.store.insert_datums(db, job_id, datum_rows(plan))
                for repo, branch, seq in trig.cursors:
                    self.store.set_cursor(db, row.name, repo, branch, seq)
                self._job_event(job)
        finally:
            # The skipped datums (every datum of the input a past job did, with its files) are
            # in their rows now; nothing later reads them.
            plan.skipped.close()
        active = ActiveJob(job, spec, plan, {u.unit_id: u for u in plan.to_run})
        if spec.job_timeout:
            active.deadline = time.monotonic() + spec.job_timeout
        with self._lock:
            self.active[row.name] = active
        if row.state == "failure":
            self.store.set_pipeline_state(row.name, "running", "")
        self.logs.note(row.name, job_id, f"started job {job_id}: {len(plan.to_run)} unit(s) to run, "
                                         f"{job.skipped} datum(s) skipped")
        try:
            tasks = self._tasks(active)
        except NotFound as exc:  # a secret deleted since create-pipeline: fail, do not wait forever
            self._fail(active, f"cannot run the job: {exc.message}")
            return
        # The tasks carry the units' files and env now; the job keeps only which datums each unit has.
        slim = [jp.Unit(u.unit_id, u.datums) for u in plan.to_run]
        active.plan = dataclasses.replace(active.plan, to_run=slim)
        active.units = {u.unit_id: u for u in slim}
        del plan, slim
        if job.total >= BIG_JOB:
            give_back_memory()
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
        transform = _transform(t, with_err=True)
        secrets = [self._secret(s) for s in t.secrets]
        env = {"PACH_JOB_ID": job.row.id, "PACH_OUTPUT_COMMIT_ID": job.row.output_commit} | job.plan.env
        prev = self._prev(job) if spec.generation == 1 else None
        tasks = []
        for i in range(0, len(units), per_task):
            part = units[i : i + per_task]
            tid = uuid.uuid4().hex
            task = wire.Task(tid, job.row.id, spec.name, spec.generation, transform, secrets, spec.datum_timeout,
                             spec.datum_tries, env, prev, [u.to_wire() for u in part])
            tasks.append(Task(tid, job.row.id, spec.name, [u.unit_id for u in part], task.to_dict()))
        return tasks

    def _secret(self, s: SpecSecret) -> wire.Secret:
        return wire.Secret(s.name, s.mount_path, s.env_var, s.key, self.store.get_secret(s.name))

    def _prev(self, job: ActiveJob) -> tuple[str, str] | None:
        info = self.pfs.inspect_commit(job.row.output_repo, job.row.output_commit)
        return None if info.parent is None else (job.row.output_repo, info.parent)

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
        the task was already done elsewhere (its pins are then dropped). Written
        to the metadata when it returns."""
        written = threading.Event()
        failure: list[BaseException | None] = []

        def done(error: BaseException | None) -> None:
            failure.append(error)
            written.set()

        if not self.submit_result(task_id, results, done):
            return False
        written.wait()
        if failure[0] is not None:
            raise failure[0]
        return True

    def submit_result(self, task_id: str, results: list[dict], done: Done) -> bool:
        """``task_result`` without waiting (an event loop's): False at once if the task
        was done elsewhere (pins dropped here; ``done`` never runs), else True and
        ``done(error or None)`` runs in the writer's thread once the results are written,
        batched with those that arrived meanwhile (pps.scheduler.results)."""
        t = self.queue.complete(task_id)
        with self._lock:
            job = self.active.get(t.pipeline) if t is not None else None
        if t is None or job is None or job.row.id != t.job_id:
            for r in results:
                if r.get("owner"):
                    self.pfs.unpin(r["owner"])
            return False
        self._results.submit(Pending(job, results, done))
        return True

    def _record(self, batch: list[Pending]) -> bool:
        """Write the results of ``batch`` in one transaction; True if a job is now complete
        or failed (only then is the scheduler woken: not once per result)."""
        jobs: dict[str, ActiveJob] = {}
        with self.pfs.tx() as db:
            for p in batch:
                job = p.job
                jobs[job.row.id] = job
                counts = {"success": 0, "failed": 0, "recovered": 0}
                for r in p.results:
                    unit = job.units.get(r["unit_id"])
                    if unit is None or r["unit_id"] in job.results:
                        continue
                    state = r["state"] if r["state"] in counts else "failed"
                    n = self.store.finish_unit(db, job.row.id, unit.unit_id, state, r.get("reason", ""),
                                               int(r.get("tries", 1)), r.get("started"), r.get("finished"))
                    counts[state] += n
                    job.results[unit.unit_id] = (state, r.get("owner"))
                    self._datum_events(job.row, unit.datums, state)
                    if state == "failed" and not job.failure:
                        job.failure = f"datum {unit.datums[0]} failed: {r.get('reason') or 'user code failed'}"
                job.row.processed += counts["success"]
                job.row.failed += counts["failed"]
                job.row.recovered += counts["recovered"]
            for job in jobs.values():
                self.store.update_job(db, job.row)
                self._job_event(job.row)
        return any(job.failure or len(job.results) >= len(job.units) for job in jobs.values())

    def _results_woke(self) -> None:
        """A batch completed or failed a job: the scheduler merges or fails it now."""
        self._changed_now()
        self.notify()

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
            self.store.fail_unfinished(db, row.id)
            self._datum_events(row, [d for u, unit in job.units.items() if u not in job.results
                                     for d in unit.datums], "failed")
            self._job_event(row)
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

    def restart_datum(self, job_id: str, datum: str) -> dict:
        """Pachyderm's restart-datum: the datum of a running job that a worker is
        processing now is abandoned (its worker is replaced; the other datums of the
        same task go back with it) and tried again from the start. A datum still
        queued is left as it is (it will run anyway). Returns the datum's row and
        ``restarted``: whether a worker's run of it was cut short."""
        row = self.store.get_job(job_id)
        d = self.store.get_datum(row.id, datum)
        with self._lock:
            job = self.active.get(row.pipeline)
        if job is None or job.row.id != row.id:
            raise Conflict(f"job '{row.id}' is not running (state {row.state}); restart-datum restarts a datum "
                           f"of a running job: run the pipeline again with run-pipeline {row.pipeline}")
        if d["unit"] in job.results or d["state"] not in ("starting", "running"):
            raise Conflict(f"datum '{d['id']}' is not running (state {d['state']}); only a running datum "
                           "can be restarted")
        task = self.queue.holding(row.id, d["unit"])
        worker = task.worker if task is not None else None
        restarted = False
        if worker is not None:
            # The runner kills the worker (and with it the user code); its lease ends here so
            # the task goes back to the front of the queue, and the next tick starts a new worker.
            restarted = self.runner.cancel(row.pipeline, worker)
            self.queue.release_worker(worker)
        self.logs.note(row.pipeline, row.id, f"datum {d['id']} restarted by the user"
                       + ("" if restarted else " (it was waiting for a worker: nothing to cut short)"),
                       datum=d["id"])
        self.notify()
        return d | {"restarted": restarted}

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
                self.store.mark_killed(db, row.id, RERUN_REASON, time.time())
                row.state, row.reason = "killed", RERUN_REASON
                self._job_event(row)
                # Let the triggering commit be picked again.
                for lc in row.inputs:
                    if lc.get("name") == row.trigger:
                        seq = self.pfs.place_of(lc["commit"])
                        if seq is not None:
                            self.store.rewind_cursor(db, row.pipeline, lc["repo"], lc["branch"], seq - 1)


def _transform(t: SpecTransform, with_err: bool) -> wire.Transform:
    """The part of a task that says what to run (long-running tasks have no err_cmd)."""
    return wire.Transform(
        cmd=list(t.cmd), stdin=list(t.stdin),
        err_cmd=list(t.err_cmd) if with_err else [], err_stdin=list(t.err_stdin) if with_err else [],
        env=dict(t.env), accept_return_code=list(t.accept_return_code),
        user=t.user, working_dir=t.working_dir,
    )  # fmt: skip
