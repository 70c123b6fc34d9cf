"""Waiting on jobs and provenance: wait-job, the pipelines downstream of a repo,
and flush-commit / wait commit (every pipeline downstream of some commits has
an output commit from them, or a failed job on them).
"""

from __future__ import annotations

import time

from pfsfuse.errors import PfsError, TimedOut, Unreachable
from pps import jobs as jp
from pps.scheduler.state import RERUN_REASON, Base
from pps.spec_inputs import PfsInput
from pps.store import JobRow, PipelineRow


class Waiting(Base):
    """wait-job, downstream and flush."""

    def wait_job(self, job_id: str, timeout: float | None = None) -> JobRow:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = self.generation
            row = self.store.get_job(job_id)
            if row.done or (deadline is not None and time.monotonic() > deadline) or self._closed:
                return row
            self.wait_changed(0.5, seen)

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
                if self.store.has_job_on(pipeline, cid):
                    return False
                seq = self.pfs.place_of(cid)
                if cur is not None and seq is not None and seq <= cur:
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
            seen = self.generation
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
                hit = next((out for out in self.store.outputs_on(pipeline, cid) if self.pfs.is_current(out)), None)
                if hit is not None:
                    found.append(hit)
                    continue
                bad = self.store.failed_on(pipeline, cid, but_not=RERUN_REASON)
                if bad is not None:
                    failed.append(self.store.get_job(bad))
                    continue
                missing = True
            if not missing:
                return list(dict.fromkeys(found)), failed
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut(f"timed out waiting for {len(targets)} downstream commit(s)")
            if self._closed:
                raise Unreachable("the daemon is stopping; run the command again once it is back")
            self.wait_changed(0.5, seen)
