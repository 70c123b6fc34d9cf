"""The PFS engine: repos, branches and commits over the metadata database.

Synchronous and thread-safe (one lock around the SQLite connection); mountd
calls it from worker threads. File reads and writes live in files.py,
checking and collecting in maintenance.py; this module owns the commit graph.
See STORAGE.md for the ordering rules that keep every step crash-safe.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from pfsfuse import entries, names, refs
from pfsfuse.btree import BTree
from pfsfuse.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from pfsfuse.events import EventHub
from pfsfuse.files import FileOps
from pfsfuse.history import History
from pfsfuse.maintenance import Maintenance
from pfsfuse.meta import SqliteNodeStore, connect, written_backfill_pending
from pfsfuse.objstore import LocalStore, ObjectStore
from pfsfuse.refs import parse_ref
from pfsfuse.written import WrittenTally, backfill


@dataclass
class RepoInfo:
    name: str
    created: float
    description: str
    size: int
    branches: list[str] = field(default_factory=list)


@dataclass
class BranchInfo:
    repo: str
    name: str
    head: str | None
    head_ref: str | None


@dataclass
class CommitInfo:
    id: str
    repo: str
    branch: str | None
    seq: int | None
    parent: str | None
    parent_ref: str | None
    started: float
    finished: float | None
    size: int
    archived: bool
    description: str
    provenance: list[dict]
    children: list[str] = field(default_factory=list)
    # Bytes of file content this commit wrote (see written.py; 0 while open),
    # what list-commit's SIZE shows; ``size`` stays the whole tree's.
    written: int = 0

    @property
    def ref(self) -> str:
        """The 1.x-style name users type: branch/N, or the id for detached commits."""
        return f"{self.branch}/{self.seq}" if self.branch is not None else self.id

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ref"] = self.ref
        return d


_COMMIT_COLS = "id, repo, branch, seq, parent, started, finished, root, size, archived, description, provenance, written"


class PFS(FileOps, Maintenance, History):
    """One store: a metadata database plus an object store."""

    def __init__(self, home: str, store: ObjectStore | None = None, *, zstd_level: int = 1):
        os.makedirs(home, exist_ok=True)
        self.home = home
        self.store = store if store is not None else LocalStore(os.path.join(home, "objects"))
        if isinstance(self.store, LocalStore):
            self.store.cleanup_temporaries()
        self.zstd_level = zstd_level
        self._lock = threading.RLock()
        self._tx_depth = 0  # > 0 inside tx(), which nests (see tx)
        self.db = connect(os.path.join(home, "meta.sqlite"))
        self.nodes = SqliteNodeStore(self.db, self._lock)
        self.tree = BTree(self.nodes, cache_nodes=1024)
        # Packs written by sessions whose index rows are not committed yet;
        # gc must not mistake them for garbage.
        self.inflight_packs: collections.Counter[str] = collections.Counter()
        self.held_chunks: dict[int, frozenset[bytes]] = {}  # chunks mounts' open files are built on (gc keeps them)
        self._parent_roots: dict[str, bytes | None] = {}
        # Called with the CommitInfo after every finish, outside any lock (the
        # pipeline scheduler listens here; pfsfuse knows nothing of it).
        self.on_finish: list[Callable[[CommitInfo], None]] = []
        # What changed, for clients following live (mountd's /v1/events). Events
        # emitted inside a transaction are published when it commits (see emit).
        self.events = EventHub()
        self._tx_events: list[tuple[str, dict]] = []
        self._init_maintenance()
        if written_backfill_pending(self.db):
            backfill(self)  # a store from before commits.written (meta.py: schema 2)

    def close(self) -> None:
        with self._lock:
            self.db.close()
        self.store.close()

    # -- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it lands, or none of it. Nested in
        another (same thread: the lock is reentrant) it joins the outer one,
        so steps that each open a transaction compose into one atomic step
        (``commit_new``: start, stage and finish a commit at once)."""
        with self._lock:
            if self._tx_depth:
                self._tx_depth += 1
                try:
                    yield self.db
                finally:
                    self._tx_depth -= 1
                return
            self.db.execute("BEGIN IMMEDIATE")
            self._tx_depth = 1
            try:
                yield self.db
            except BaseException:
                self._tx_depth = 0
                self._tx_events = []
                self.db.execute("ROLLBACK")
                raise
            else:
                self._tx_depth = 0
                self.db.execute("COMMIT")
                if self._tx_events:
                    # Still under the lock: events come out in the order their changes committed.
                    events, self._tx_events = self._tx_events, []
                    self.events.publish_many(events)

    def emit(self, kind: str, **fields: object) -> None:
        """An event about a change: inside a transaction it is published when the
        transaction commits (and dropped if it rolls back), so a client that hears
        of a change and asks for it finds it; outside one, at once."""
        with self._lock:
            if self._tx_depth:
                self._tx_events.append((kind, fields))
                return
        self.events.publish(kind, **fields)

    def q(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    def q1(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._lock:
            return self.db.execute(sql, args).fetchone()

    # -- repos --------------------------------------------------------------

    def create_repo(self, name: str, description: str = "") -> RepoInfo:
        names.check_name("repo", name)
        with self.tx() as db:
            if db.execute("SELECT 1 FROM repos WHERE name=?", (name,)).fetchone():
                raise AlreadyExists(f"repo '{name}' already exists")
            db.execute(
                "INSERT INTO repos(name, created, description) VALUES(?,?,?)",
                (name, time.time(), description),
            )
            self.emit("repo.created", repo=name)
        return self.inspect_repo(name)

    def _require_repo(self, name: str) -> tuple:
        row = self.q1("SELECT name, created, description FROM repos WHERE name=?", (name,))
        if row is None:
            raise NotFound(f"repo '{name}' not found")
        return row

    def _repo_size(self, name: str) -> int:
        # As 2.x does: the size of the master head, else of the newest head.
        rows = self.q(
            "SELECT b.name, c.size FROM branches b JOIN commits c ON c.id=b.head "
            "WHERE b.repo=? ORDER BY b.name='master' DESC, c.started DESC LIMIT 1",
            (name,),
        )
        return rows[0][1] if rows else 0

    def inspect_repo(self, name: str) -> RepoInfo:
        row = self._require_repo(name)
        branches = [r[0] for r in self.q("SELECT name FROM branches WHERE repo=? ORDER BY name", (name,))]
        return RepoInfo(row[0], row[1], row[2], self._repo_size(name), branches)

    def list_repos(self) -> list[RepoInfo]:
        rows = self.q("SELECT name FROM repos ORDER BY created DESC, name")
        return [self.inspect_repo(r[0]) for r in rows]

    def delete_repo(self, name: str, force: bool = False) -> None:
        self._require_repo(name)
        if not force:
            users = self.repos_depending_on(name)
            if users:
                raise Conflict(
                    f"repo '{name}' is an input of {', '.join(sorted(users))}; "
                    "delete those first or pass --force"
                )
        with self.tx() as db:
            db.execute("DELETE FROM staging WHERE commit_id IN (SELECT id FROM commits WHERE repo=?)", (name,))
            db.execute("DELETE FROM commits WHERE repo=?", (name,))
            db.execute("DELETE FROM branches WHERE repo=?", (name,))
            db.execute("DELETE FROM repos WHERE name=?", (name,))
            self.emit("repo.deleted", repo=name)

    def repos_depending_on(self, name: str) -> set[str]:
        """Repos whose commits name a commit of ``name`` in their provenance."""
        needle = f'%"repo": "{name}"%'
        rows = self.q("SELECT DISTINCT repo FROM commits WHERE provenance LIKE ? AND repo<>?", (needle, name))
        return {r[0] for r in rows}

    def delete_all(self) -> None:
        with self.tx() as db:
            for (repo,) in db.execute("SELECT name FROM repos").fetchall():
                self.emit("repo.deleted", repo=repo)
            for table in ("staging", "commits", "branches", "repos"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names

    # -- commits: reading ---------------------------------------------------

    def _info(self, row: tuple, with_children: bool = False) -> CommitInfo:
        cid, repo, branch, seq, parent, started, finished, _root, size, archived, desc, prov, written = row
        parent_ref = None
        if parent is not None:
            prow = self.q1("SELECT branch, seq FROM commits WHERE id=?", (parent,))
            parent_ref = f"{prow[0]}/{prow[1]}" if prow and prow[0] is not None else parent
        children = []
        if with_children:
            children = [r[0] for r in self.q("SELECT id FROM commits WHERE parent=? ORDER BY started", (cid,))]
        return CommitInfo(
            cid, repo, branch, seq, parent, parent_ref, started, finished, size, bool(archived),
            desc, json.loads(prov), children, written,
        )

    def _row(self, cid: str) -> tuple:
        row = self.q1(f"SELECT {_COMMIT_COLS} FROM commits WHERE id=?", (cid,))
        if row is None:
            raise NotFound(f"commit '{cid}' not found")
        return row

    def resolve(self, repo: str, ref: str) -> tuple:
        """The commits row a reference names (see refs.py for the forms)."""
        self._require_repo(repo)
        r = parse_ref(ref)
        if r.seq is not None:
            row = self.q1(
                f"SELECT {_COMMIT_COLS} FROM commits WHERE repo=? AND branch=? AND seq=?",
                (repo, r.base, r.seq),
            )
            if row is None:
                raise NotFound(f"commit '{ref}' not found in repo '{repo}'")
        else:
            row = None
            b = self.q1("SELECT head FROM branches WHERE repo=? AND name=?", (repo, r.base))
            if b is not None:
                if b[0] is None:
                    raise NotFound(f"branch '{r.base}' of repo '{repo}' has no commits yet")
                row = self._row(b[0])
            elif r.maybe_id:
                rows = self.q(
                    f"SELECT {_COMMIT_COLS} FROM commits WHERE repo=? AND id>=? AND id<? LIMIT 2",
                    (repo, r.base, r.base + "g"),
                )
                if len(rows) > 1:
                    raise InvalidArgument(f"commit id prefix '{r.base}' is ambiguous in repo '{repo}'")
                row = rows[0] if rows else None
            if row is None:
                raise NotFound(f"commit or branch '{ref}' not found in repo '{repo}'")
        for _ in range(r.back):
            if row[4] is None:
                raise NotFound(f"commit '{ref}' not found in repo '{repo}': history is not that long")
            row = self._row(row[4])
        return row

    def inspect_commit(self, repo: str, ref: str) -> CommitInfo:
        return self._info(self.resolve(repo, ref), with_children=True)

    def list_commits(
        self,
        repo: str,
        branch: str | None = None,
        n: int | None = None,
        include_archived: bool = False,
        before: str | None = None,
    ) -> list[CommitInfo]:
        """Newest first. With a branch, its first-parent history from the head.
        ``before`` (a commit id or ref) pages: only commits strictly older than
        it in that order (with a branch: its first-parent ancestors)."""
        self._require_repo(repo)
        if n is not None and n < 0:
            raise InvalidArgument(f"invalid number of commits {n}: it cannot be negative")
        if n is not None:
            n = min(n, refs.MAX_NUMBER)  # SQLite's integers stop there
        after = self.resolve(repo, before) if before is not None else None
        out: list[CommitInfo] = []
        if branch is not None:
            head = self.q1("SELECT head FROM branches WHERE repo=? AND name=?", (repo, branch))
            if head is None:
                raise NotFound(f"branch '{branch}' not found in repo '{repo}'")
            cid = head[0] if after is None else after[4]
            while cid is not None and (n is None or len(out) < n):
                row = self._row(cid)
                if include_archived or not row[9]:
                    out.append(self._info(row))
                cid = row[4]
            return out
        sql = f"SELECT {_COMMIT_COLS} FROM commits WHERE repo=?"
        args: tuple = (repo,)
        if not include_archived:
            sql += " AND archived=0"
        if after is not None:
            # Keyset paging on the order below: a page costs the same at 10,000 deep.
            sql += " AND (started, COALESCE(seq, -1), id) < (?, ?, ?)"
            args += (after[5], -1 if after[3] is None else after[3], after[0])
        sql += " ORDER BY started DESC, COALESCE(seq, -1) DESC, id DESC"
        if n is not None:
            sql += f" LIMIT {int(n)}"
        return [self._info(row) for row in self.q(sql, args)]

    def root_of(self, row: tuple) -> bytes | None:
        """The tree a commit reads from: its own if finished, else its parent's."""
        if row[6] is not None:
            return row[7]
        if row[4] is None:
            return None
        root = self._parent_roots.get(row[4])
        if root is None:
            parent = self._row(row[4])
            root = parent[7]
            if parent[6] is not None and len(self._parent_roots) < 4096:
                self._parent_roots[row[4]] = root  # a finished commit's root never changes
        return root

    # -- commits: writing ---------------------------------------------------

    def _next_seq(self, db: sqlite3.Connection, repo: str, branch: str) -> int:
        r = db.execute("SELECT MAX(seq) FROM commits WHERE repo=? AND branch=?", (repo, branch)).fetchone()
        return 0 if r[0] is None else r[0] + 1

    def start_commit(
        self,
        repo: str,
        branch: str | None = "master",
        parent: str | None = None,
        description: str = "",
        provenance: list[dict] | None = None,
        new_branch: bool = False,
    ) -> CommitInfo:
        self._require_repo(repo)
        if branch is not None:
            names.check_name("branch", branch)
        parent_row = self.resolve(repo, parent) if parent is not None else None
        cid = uuid.uuid4().hex
        with self.tx() as db:
            head = None
            if branch is not None:
                b = db.execute("SELECT head FROM branches WHERE repo=? AND name=?", (repo, branch)).fetchone()
                if b is not None and new_branch:
                    raise AlreadyExists(f"branch '{branch}' already exists in repo '{repo}'")
                if b is None:
                    self._check_new_branch(db, repo, branch)
                head = b[0] if b is not None else None
            if parent_row is None and head is not None:
                parent_row = self._row(head)
            if parent_row is not None and parent_row[6] is None:
                raise _still_open(repo, parent_row)
            seq = self._next_seq(db, repo, branch) if branch is not None else None
            size = parent_row[8] if parent_row is not None else 0
            db.execute(
                "INSERT INTO commits(id, repo, branch, seq, parent, started, size, description, provenance)"
                " VALUES(?,?,?,?,?,?,?,?,?)",
                (
                    cid, repo, branch, seq, parent_row[0] if parent_row else None, time.time(), size,
                    description, json.dumps(provenance or []),
                ),
            )
            if branch is not None:
                db.execute(
                    "INSERT INTO branches(repo, name, head) VALUES(?,?,?) "
                    "ON CONFLICT(repo, name) DO UPDATE SET head=excluded.head",
                    (repo, branch, cid),
                )
            self.emit("commit.started", repo=repo, commit=cid, branch=branch)
            if branch is not None:
                self.emit("branch.moved", repo=repo, branch=branch, head=cid,
                          change="moved" if b is not None else "created")
        return self._info(self._row(cid))

    def check_can_start(self, repo: str, branch: str) -> None:
        """Raise what start_commit(repo, branch) would for the repo, the name or
        an open head, without starting anything."""
        self._require_repo(repo)
        names.check_name("branch", branch)
        b = self.q1("SELECT head FROM branches WHERE repo=? AND name=?", (repo, branch))
        if b is None:
            with self._lock:
                self._check_new_branch(self.db, repo, branch)
        elif b[0] is not None:
            head = self._row(b[0])
            if head[6] is None:
                raise _still_open(repo, head)

    def fork_commit(self, repo: str, parent: str, branch: str) -> CommitInfo:
        return self.start_commit(repo, branch, parent=parent, new_branch=True)

    def require_open(self, repo: str, ref: str) -> tuple:
        row = self.resolve(repo, ref)
        if row[6] is not None:
            name = f"{row[2]}/{row[3]}" if row[2] is not None else row[0]
            raise Conflict(
                f"commit '{name}' in repo '{repo}' is finished and cannot change; "
                f"start a new one (pachctl start-commit {repo} {row[2] or 'BRANCH'}) or use put-file -c"
            )
        return row

    def finish_commit(self, repo: str, ref: str, description: str | None = None) -> CommitInfo:
        info = self._finish(repo, ref, description)
        for listener in list(self.on_finish):
            listener(info)
        return info

    def commit_new(
        self, repo: str, branch: str, fill: Callable[[str], None], description: str = ""
    ) -> CommitInfo:
        """Start a commit on ``branch``, ``fill(commit_id)`` it, finish it: one
        transaction, so the branch gains the whole commit or nothing (no open
        commit is ever left behind, even by a crash). ``fill`` must not block
        on I/O: the database is locked while it runs."""
        with self.tx():
            started = self.start_commit(repo, branch, description=description)
            fill(started.id)
            info = self._finish(repo, started.id, None)
        for listener in list(self.on_finish):
            listener(info)
        return info

    def _finish(self, repo: str, ref: str, description: str | None) -> CommitInfo:
        row = self.require_open(repo, ref)
        cid = row[0]
        with self.tx() as db:
            # Re-check inside the transaction: another finish may have won.
            again = db.execute("SELECT finished FROM commits WHERE id=?", (cid,)).fetchone()
            if again is None or again[0] is not None:
                raise Conflict(f"commit '{ref}' in repo '{repo}' was finished or deleted meanwhile")
            base = self.root_of(row)
            staged = db.execute(
                "SELECT key, value FROM staging WHERE commit_id=? ORDER BY key", (cid,)
            ).fetchall()
            written = WrittenTally(self.load_refs)
            changes, delta = self._apply_sizes(base, staged, written)
            root = self.tree.update(base, changes) if changes else base
            size = (self._row(row[4])[8] if row[4] is not None else 0) + delta
            db.execute(
                "UPDATE commits SET finished=?, root=?, size=?, written=?, description=COALESCE(?, description)"
                " WHERE id=?",
                (time.time(), root, size, written.total(), description, cid),
            )
            db.execute("DELETE FROM staging WHERE commit_id=?", (cid,))
            self.emit("commit.finished", repo=repo, commit=cid, branch=row[2])
        return self._info(self._row(cid))

    def _apply_sizes(
        self, base: bytes | None, staged: list[tuple[bytes, bytes | None]], written: WrittenTally | None = None
    ) -> tuple[list[tuple[bytes, bytes | None]], int]:
        """Turn staged rows into tree changes, carrying file size deltas up to
        every ancestor directory (so directory sizes stay exact without ever
        summing a whole subtree); ``written`` tallies what the commit wrote."""
        now = time.time_ns()
        dir_delta: dict[str, int] = {}
        staged_dirs: dict[str, bytes | None] = {}
        staged_files: set[str] = set()
        changes: list[tuple[bytes, bytes | None]] = []
        root_delta = 0

        def old_dir_size(path: str) -> int:
            # A path this commit turned from a file into a directory starts at 0.
            old_raw = self.tree.get(base, names.tree_key(path))
            old = entries.decode(old_raw) if old_raw is not None else None
            return old.size if old is not None and old.is_dir else 0

        for key, value in staged:
            path = names.key_path(key)
            old_raw = self.tree.get(base, key)
            old = entries.decode(old_raw) if old_raw is not None else None
            new = entries.decode(value) if value is not None else None
            if written is not None:
                written.add(old, new)
            old_file_size = old.size if old is not None and not old.is_dir else 0
            if (new is not None and new.is_dir) or (new is None and old is not None and old.is_dir):
                staged_dirs[path] = value
                delta = -old_file_size  # a file replaced by a directory is gone
            else:
                if new is not None:
                    staged_files.add(path)
                delta = (new.size if new else 0) - old_file_size
                changes.append((key, value))
            if delta:
                root_delta += delta
                for d in names.ancestors(path):
                    dir_delta[d] = dir_delta.get(d, 0) + delta
        for path, value in staged_dirs.items():
            if value is None:
                changes.append((names.tree_key(path), None))
            elif path not in dir_delta:
                changes.append(
                    (names.tree_key(path), entries.encode(entries.Entry(entries.DIR, old_dir_size(path), now)))
                )
        for path, delta in dir_delta.items():
            if path in staged_dirs and staged_dirs[path] is None:
                continue
            if path in staged_files:
                continue  # a directory replaced by a file: its deleted files count only above it
            entry = entries.Entry(entries.DIR, old_dir_size(path) + delta, now)
            changes.append((names.tree_key(path), entries.encode(entry)))
        return changes, root_delta

    def delete_commit(self, repo: str, ref: str) -> None:
        row = self.resolve(repo, ref)
        cid, parent = row[0], row[4]
        children = self.q("SELECT id FROM commits WHERE parent=?", (cid,))
        if children:
            raise Conflict(
                f"commit '{ref}' in repo '{repo}' has {len(children)} child commit(s); "
                "delete those first (or squash it into them)"
            )
        users = self.q("SELECT id, repo FROM commits WHERE provenance LIKE ?", (f'%"{cid}"%',))
        if users:
            raise Conflict(
                f"commit '{ref}' is in the provenance of {len(users)} commit(s) in "
                f"{', '.join(sorted({u[1] for u in users}))}; delete those first"
            )
        with self.tx() as db:
            moved = db.execute("SELECT name FROM branches WHERE repo=? AND head=?", (repo, cid)).fetchall()
            db.execute("DELETE FROM staging WHERE commit_id=?", (cid,))
            db.execute("DELETE FROM commits WHERE id=?", (cid,))
            db.execute("UPDATE branches SET head=? WHERE repo=? AND head=?", (parent, repo, cid))
            self.emit("commit.deleted", repo=repo, commit=cid, branch=row[2])
            for (branch,) in moved:
                self.emit("branch.moved", repo=repo, branch=branch, head=parent, change="moved")

    def archive_commit(self, repo: str, ref: str) -> None:
        row = self.resolve(repo, ref)
        with self.tx() as db:
            db.execute("UPDATE commits SET archived=1 WHERE id=?", (row[0],))

    def archive_all(self) -> int:
        with self.tx() as db:
            return db.execute("UPDATE commits SET archived=1 WHERE archived=0").rowcount

    # -- branches -----------------------------------------------------------

    def list_branches(self, repo: str) -> list[BranchInfo]:
        self._require_repo(repo)
        out = []
        for name, head in self.q("SELECT name, head FROM branches WHERE repo=? ORDER BY name", (repo,)):
            head_ref = None
            if head is not None:
                r = self._row(head)
                head_ref = f"{r[2]}/{r[3]}" if r[2] is not None else r[0]
            out.append(BranchInfo(repo, name, head, head_ref))
        return out

    def create_branch(self, repo: str, name: str, head: str | None = None) -> BranchInfo:
        names.check_name("branch", name)
        self._require_repo(repo)
        head_id = self.resolve(repo, head)[0] if head is not None else None
        with self.tx() as db:
            known = db.execute("SELECT 1 FROM branches WHERE repo=? AND name=?", (repo, name)).fetchone()
            if not known:
                self._check_new_branch(db, repo, name)
            db.execute(
                "INSERT INTO branches(repo, name, head) VALUES(?,?,?) "
                "ON CONFLICT(repo, name) DO UPDATE SET head=excluded.head",
                (repo, name, head_id),
            )
            self.emit("branch.moved", repo=repo, branch=name, head=head_id, change="moved" if known else "created")
        return next(b for b in self.list_branches(repo) if b.name == name)

    @staticmethod
    def _check_new_branch(db: sqlite3.Connection, repo: str, name: str) -> None:
        """A new branch must not shadow a commit: refs resolve a branch before
        a commit id, so a branch named like a commit id (or like the prefix of
        one in this repo) would make that commit unreachable by its id."""
        names.check_branch_name(name)
        if refs.HEX_PREFIX.fullmatch(name) and db.execute(
            "SELECT 1 FROM commits WHERE repo=? AND id>=? AND id<? LIMIT 1", (repo, name, name + "g")
        ).fetchone():
            raise InvalidArgument(
                f"invalid branch name '{name}': it reads as the id of a commit in repo '{repo}' "
                "and would hide it; choose another name"
            )

    def delete_branch(self, repo: str, name: str) -> None:
        self._require_repo(repo)
        with self.tx() as db:
            if db.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, name)).rowcount == 0:
                raise NotFound(f"branch '{name}' not found in repo '{repo}'")
            self.emit("branch.moved", repo=repo, branch=name, head=None, change="deleted")

    def info_of(self, row: tuple) -> CommitInfo:
        return self._info(row)


def _still_open(repo: str, row: tuple) -> Conflict:
    ref = f"{row[2]}/{row[3]}" if row[2] is not None else row[0]
    return Conflict(
        f"commit '{ref}' in repo '{repo}' is still open; finish it before starting "
        f"another on top of it (pachctl finish-commit {repo} {ref})"
    )
