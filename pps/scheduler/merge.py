"""A job's end: every unit's pinned outputs applied to the output commit in
one write session (1.x appends in unit order; 2.x replaces by datum, checking
that no two datums write one path), the commit finished, then egress and
enable_stats, then one transaction of bookkeeping.
"""

from __future__ import annotations

import json
import time

from pfsfuse.errors import PfsError
from pfsfuse.memory import give_back_memory
from pps.datums import OutputCollisionError, check_output_collisions
from pps.egress import egress
from pps.scheduler.state import BIG_JOB, ActiveJob, Base
from pps.store import JobRow


class Merging(Base):
    """The output commit of a job whose units all succeeded."""

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
            self._job_event(row)
        with self._lock:
            if self.active.get(row.pipeline) is job:
                del self.active[row.pipeline]
        self.logs.note(row.pipeline, row.id, f"job {row.id} succeeded: {row.processed} processed, "
                                             f"{row.skipped} skipped")
        self.notify()
        if len(order) >= BIG_JOB:
            del pinned, new_paths, ws  # what the merge held, freed before the heap is trimmed
            give_back_memory()

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
        kept = job.plan.kept  # only paths of kept (skipped) units can be owned by another unit
        for u, ps in new_paths.items() if kept else ():
            for p in ps:
                owner = self.store.owner_of(job.row.pipeline, p)
                if owner and owner not in dropped and owner not in new_paths:
                    raise OutputCollisionError(p, owner, first_datum[u])
        check_output_collisions(outputs, mode="2.x")
