"""Pipelines: create, update, delete, stop, start and run-pipeline; what a spec
may name (inputs that exist, secrets, no cycles) and the create-time notes,
which come from the capabilities of the runner that would run the pipeline.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from pfsfuse.errors import Conflict, InvalidArgument, NotFound, PfsError
from pps import jobs as jp
from pps.runners.base import WorkerSpec
from pps.scheduler.state import Base
from pps.spec import Capabilities, PipelineSpec, parse_specs
from pps.spec_inputs import CronInput, GitInput, PfsInput
from pps.store import PipelineRow


class Pipelines(Base):
    """create-/update-/delete-/stop-/start-/run-pipeline."""

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
        caps = self.capabilities_for(spec)
        notes = [{"path": p, "reason": r} for p, r in spec.inert_fields(caps)]
        for leaf, path in spec.leaves():
            if isinstance(leaf, GitInput):
                notes.append({"path": path, "reason": f"no webhook from {leaf.url} reaches this machine; commits "
                              f"to repo '{leaf.name}' (branch {leaf.branch}) trigger the pipeline instead"})
            if isinstance(leaf, PfsInput) and leaf.lazy and not caps.lazy_inputs:
                why = f"{caps.lazy_inputs_why}: " if caps.lazy_inputs_why else ""
                notes.append({"path": f"{path}.lazy", "reason": f"{why}inputs are copied into /pfs before the datum "
                              "runs; the datum sees the same bytes either way"})
        limits = spec.resource_limits
        if limits is not None and (limits.cpu or limits.memory) and not caps.cpu_memory_limits:
            reason = (f"the {caps.runner} runner cannot cap cpu or memory here: {caps.cpu_memory_why}"
                      if caps.cpu_memory_why else
                      f"the {caps.runner} runner does not cap a datum's cpu or memory (no cgroup per datum)")
            notes.append({"path": "resource_limits", "reason": reason})
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
                and not caps.port_mapping:
            where = "service" if spec.service else "spout.service"
            notes.append({"path": f"{where}.external_port", "reason": f"the {caps.runner} runner has no port "
                          f"mapping: the service answers on this machine's port {svc.internal_port} (internal_port)"})
        salt = spec.salt or (old.salt if old is not None and not reprocess else uuid.uuid4().hex)
        with self.pfs.tx() as db:
            row = self.store.put_pipeline(db, spec.name, spec.to_dict() | {"generation": spec.generation}, salt,
                                          notes, update=update)
            if stopped:
                self.store.pause_new(db, spec.name)
            self.pfs.emit("pipeline.state", pipeline=spec.name, state="paused" if stopped else row.state,
                          reason=row.reason)
            if reprocess and old is not None and spec.generation == 1:
                self.store.clear_cursors(db, spec.name)
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

    def capabilities_for(self, spec: PipelineSpec, version: int = 1) -> Capabilities:
        """What the runner that would run ``spec``'s workers can do (create-time warnings
        are true for that runner), with this machine's worker budget."""
        caps = self.runner.capabilities(WorkerSpec.from_spec(spec, version))
        return replace(caps, max_workers=self.max_workers)

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
        self.runner.stop(name)
        jobs = [j.id for j in self.store.list_jobs(name)]
        if job is not None:
            self._discard_output(job)
        with self.pfs.tx() as db:
            self.store.delete_pipeline(db, name)
            self.pfs.emit("pipeline.state", pipeline=name, state="deleted", reason="")
            for j in jobs:
                self.pfs.unpin(f"job/{j}/", db)
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
        self.runner.stop(name)
        self._changed_now()  # a flush waiting on it ends now (a stopped pipeline runs nothing)
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
            head = self.pfs.latest_finished(repo, branch)
            if head is None:
                raise Conflict(f"input repo '{repo}' has no finished commit on branch '{branch}' to run on")
            inputs.append(jp.LeafCommit(leaf.name, repo, branch, head.id))
        with self._lock:
            self._runs.setdefault(name, []).append(inputs)
        self.notify()


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
