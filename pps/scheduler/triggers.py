"""Which input commit gives a pipeline its next job: cursors per input branch,
input.pfs.trigger conditions, input.pfs.commit pins, and cron ticks (a commit
in the cron input's repo at each tick). Commits are read through PFS's
history interface (pfsfuse.history), never its tables.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pps import jobs as jp
from pps.scheduler.state import Base, Trigger
from pps.spec import PipelineSpec
from pps.spec_inputs import CronInput, PfsInput, parse_cron, parse_quantity
from pps.store import PipelineRow


class Triggers(Base):
    """The next job's input commits, and cron ticks."""

    def _start_at_heads(self, spec: PipelineSpec) -> None:
        """2.x: a new pipeline processes its inputs' heads, not their history."""
        with self.pfs.tx() as db:
            for leaf in jp.leaves(spec):
                repo, branch = jp.leaf_repo(leaf), jp.leaf_branch(leaf)
                head = self.pfs.latest_finished(repo, branch, archived=True)
                if head is not None and head.seq > 0:
                    self.store.set_cursor(db, spec.name, repo, branch, head.seq - 1)

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
                pinned = self.pfs.inspect_commit(repo, leaf.commit)
                heads[leaf.name] = (repo, branch, pinned.id)
                continue
            head = self.pfs.latest_finished(repo, branch)
            if head is None:
                return None  # docs 15.1: no job until every input has data
            heads[leaf.name] = (repo, branch, head.id)
            cur = self.store.cursor(row.name, repo, branch)
            if isinstance(leaf, PfsInput) and leaf.trigger is not None and not self._trigger_fires(row, leaf, cur):
                continue
            nxt = self.pfs.next_finished(repo, branch, cur)
            if isinstance(leaf, PfsInput) and leaf.trigger is not None and nxt is not None:
                # a trigger moves the input to the newest commit (ordered by when the next one finished)
                nxt = head._replace(finished=nxt.finished)
            if nxt is not None and (best is None or nxt.finished < best[3].finished):
                best = (leaf.name, repo, branch, nxt)
        if best is None:
            return None
        name, repo, branch, nxt = best
        for leaf in jp.leaves(spec):
            if (isinstance(leaf, PfsInput) and leaf.trigger is not None and leaf.trigger.branch
                    and leaf.name == name and leaf.branch != branch):
                self.pfs.create_branch(repo, leaf.branch, head=nxt.id)  # as Pachyderm moves it
        inputs = []
        for leaf in jp.leaves(spec):
            r, b, head_id = heads[leaf.name]
            if (r, b) == (repo, branch) and not (isinstance(leaf, PfsInput) and leaf.commit):
                inputs.append(jp.LeafCommit(leaf.name, r, b, nxt.id))
            else:
                inputs.append(jp.LeafCommit(leaf.name, r, b, head_id))
        return Trigger(inputs, name, [(repo, branch, nxt.seq)])

    def _trigger_fires(self, row: PipelineRow, leaf: PfsInput, cur: int | None) -> bool:
        """input.pfs.trigger: since the commit the input last moved to, have enough
        commits (``commits``), bytes (``size``) or time (``cron_spec``) gone by?
        Any one condition suffices unless ``all``; a branch alone fires on every commit."""
        t = leaf.trigger
        repo, branch = leaf.repo, jp.leaf_branch(leaf)
        newest = self.pfs.latest_finished(repo, branch)
        if newest is None or (cur is not None and newest.seq <= cur):
            return False
        base = None if cur is None else self.pfs.finished_at(repo, branch, cur)
        conds = []
        if t.commits:
            conds.append(newest.seq - (-1 if cur is None else cur) >= t.commits)
        if t.size:
            conds.append(newest.size - (base.size if base else 0) >= parse_quantity(t.size))
        if t.cron_spec:
            since = datetime.fromtimestamp(base.finished if base else row.created, UTC)
            tick = parse_cron(t.cron_spec).next_after(since)
            conds.append(tick is not None and tick <= datetime.now(UTC))
        if not conds:
            return True
        return all(conds) if t.all else any(conds)

    def _cron_ticks(self, row: PipelineRow) -> None:
        """Cron inputs: a commit in the input's repo at each tick, holding a file named
        by the tick's time (only the latest with ``overwrite``); missed ticks collapse
        into one."""
        spec = self.spec_of(row)
        for leaf in jp.leaves(spec):
            if not isinstance(leaf, CronInput):
                continue
            last = self.pfs.last_description(leaf.repo, "master")
            if last is not None and last.startswith("cron tick "):
                base = datetime.fromisoformat(last.removeprefix("cron tick ").replace("Z", "+00:00"))
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
