"""The pyfuse3 ``Operations`` that show PFS as directories.

One class (its write side mixed in from writes.py, and what a local disk
keeps that PFS does not from posix.py); every handler goes
through ``errno_boundary``, so only ``FUSEError`` ever reaches pyfuse3 (an
escaping exception would take the mount down), and each failure becomes the
errno a local disk would give. Engine calls run in worker threads unless
the engine's lock is free: a long commit finishing elsewhere must not stall
the loop.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pyfuse3
import trio

from pfsfuse import names
from pfsfuse.chunks import ZERO_HASH
from pfsfuse.entries import decode_stat
from pfsfuse.errors import (
    InvalidArgument,
    NotFound,
)
from pfsfuse.mount.common import (
    BLOCK,
    IMMUTABLE_TIMEOUT,
    LISTING_CACHE,
    MUTABLE_TIMEOUT,
    OPEN_ROW_TTL,
    Stat,
    check_name,
    errno_boundary,
    fuse_error,
)
from pfsfuse.mount.inodes import (
    BENTRY,
    BRANCH,
    COMMIT,
    ENTRY,
    ORPHAN,
    REPO,
    ROOT,
    InodeTable,
    Node,
    inodes_in,
)
from pfsfuse.mount.overlay import DirtyFile, Overlay
from pfsfuse.mount.posix import PosixOps
from pfsfuse.mount.reader import ChunkCache, FileReader
from pfsfuse.mount.writes import WriteOps

Listed = tuple[bytes, Node, int, pyfuse3.EntryAttributes]  # name, node, inode, attributes
LISTING_SLICE = 256  # entries built between chances for readdir to answer
SUBDIR_COUNTS = 100_000  # finished directories whose subdirectory count is kept
DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444


class _Finished(NamedTuple):
    """A finished commit's directory, to be listed."""

    node: Node
    row: tuple
    path: str
    under_branch: bool

    @property
    def key(self) -> tuple[str, str, bool]:
        return self.row[0], self.path, self.under_branch


class Listing:
    """A directory's entries, complete or still being appended to by a builder."""

    def __init__(self, entries: list[Listed] | None = None):
        self.entries: list[Listed] = entries if entries is not None else []
        self.done = entries is not None
        self.error: BaseException | None = None
        self._grown = trio.Event()

    def grew(self) -> None:
        self._grown.set()
        self._grown = trio.Event()

    def finish(self) -> None:
        self.done = True
        self.grew()

    async def wait_beyond(self, n: int) -> None:
        """Until there is an entry past the first ``n``, or there will be none."""
        while len(self.entries) <= n and not self.done:
            await self._grown.wait()
        if self.error is not None and len(self.entries) <= n:
            raise self.error


def entry_attributes(
    ino: int, is_dir: bool, size: int, mtime_ns: int, write_bits: int,
    uid: int, gid: int, attr_timeout: float, entry_timeout: float, subdirs: int = 0,
) -> pyfuse3.EntryAttributes:  # fmt: skip
    a = pyfuse3.EntryAttributes()
    a.st_ino = ino
    if is_dir:  # its name, its own "." and each subdirectory's ".."
        a.st_mode, a.st_nlink = DIR_MODE | write_bits, 2 + subdirs
    else:
        a.st_mode, a.st_nlink = FILE_MODE | write_bits, 1
    a.st_size = size
    a.st_blksize = BLOCK
    a.st_blocks = (size + 511) // 512
    a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = mtime_ns
    a.st_uid, a.st_gid = uid, gid
    a.attr_timeout, a.entry_timeout = attr_timeout, entry_timeout
    return a


def _take(items: Iterator, n: int) -> list:
    return list(itertools.islice(items, n))


class ReadHandle:
    def __init__(self, reader: FileReader):
        self.reader = reader


class DirtyHandle:
    """An open file whose content lives in the overlay (written, or being written)."""

    def __init__(self, dirty: DirtyFile, writing: bool, append: bool):
        self.dirty, self.writing, self.append = dirty, writing, append


class PfsOperations(PosixOps, WriteOps, pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(
        self,
        pfs,
        *,
        writable: bool = False,
        repos: set[str] | None = None,
        spawn: Callable,
        commit_idle: float | None = None,
        allow_other: bool = False,
    ):
        super().__init__()
        self.pfs = pfs
        self.writable = writable
        # Shared with other users (allow_other + default_permissions, so the
        # kernel checks modes): a writable mount shows the owner's write bit on
        # finished commits too, so that the owner's writes reach the handlers
        # and get EROFS, as on a read-only disk, rather than the kernel's EACCES.
        self.owner_writes_everywhere = writable and allow_other
        self.commit_idle = commit_idle
        self.overlay = Overlay(os.path.join(pfs.home, "mount-tmp"), pfs.held_chunks)
        self.opened: dict[str, str] = {}  # commits this mount opened (id -> repo): finished at unmount
        self.repo_of: dict[str, str] = {}  # every open commit written through the mount
        self.last_write: dict[str, float] = {}
        self._flush_due: dict[str, bool] = {}
        self._open_lock = trio.Lock()
        self._open_heads: dict[tuple[str, str], str] = {}  # (repo, branch) -> its open head
        self._listings: OrderedDict[tuple[str, str, bool], Listing] = OrderedDict()  # finished dirs
        self._listed = 0
        self._flush_locks: dict[str, trio.Lock] = {}
        self.repos = repos
        self.inodes = InodeTable()
        self.cache = ChunkCache(pfs.store)
        self._spawn = spawn
        self._fh = itertools.count(1)
        self._handles: dict[int, object] = {}
        self._dirs: dict[int, Listing] = {}
        self._finished: dict[str, tuple] = {}  # commit rows that can no longer change
        self._open_rows: dict[str, tuple[tuple, float]] = {}  # open commits' rows, and when read
        # Times set through the mount that PFS does not keep, by inode number
        # (so they follow renames), for the life of the mount: atime (PFS
        # versions mtime only), a directory's mtime (its entry keeps the time
        # it was made), and ctime. [atime_ns, mtime_ns, ctime_ns], None: not set.
        self.times: dict[int, list[int | None]] = {}
        self._open_subdirs: dict[tuple[str, str], tuple[str, int, float]] = {}  # (repo, dir) -> commit, count, when
        self._subdir_counts: OrderedDict[tuple[bytes | None, str], int] = OrderedDict()  # finished dirs
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started = time.time_ns()

    # -- engine access (worker threads) -------------------------------------------

    async def _run(self, fn: Callable, *args):
        return await trio.to_thread.run_sync(fn, *args)

    async def _quick(self, fn: Callable, *args):
        """A short engine call: inline when the engine's lock is free (a thread
        hop costs more than the query), in a thread when a long write holds it."""
        lock = self.pfs._lock
        if lock.acquire(blocking=False):
            try:
                return fn(*args)
            finally:
                lock.release()
        return await self._run(fn, *args)

    def _commit_row(self, cid: str) -> tuple:
        row = self._finished.get(cid)
        if row is not None:
            return row
        # The row of an open commit this mount writes to is kept briefly (as
        # the kernel keeps attributes) and dropped by the mount's own writes
        # and by finish-commit (mountd tells the mount first), so a file landed
        # from the overlay is seen at once. Other open commits change under
        # other writers: read each time.
        now = time.monotonic()
        kept = self._open_rows.get(cid)
        if kept is not None and now - kept[1] < OPEN_ROW_TTL:
            return kept[0]
        row = self.pfs._row(cid)
        if row[6] is not None:
            self._finished[cid] = row
            self._open_rows.pop(cid, None)
        elif cid in self.repo_of:
            self._open_rows[cid] = (row, now)
        return row

    def _changed(self, cid: str) -> None:
        """This mount changed commit ``cid``: read its row afresh."""
        self._open_rows.pop(cid, None)

    def _head(self, repo: str, branch: str) -> str | None:
        r = self.pfs.q1("SELECT head FROM branches WHERE repo=? AND name=?", (repo, branch))
        if r is None:
            raise NotFound(f"branch '{branch}' not found")
        return r[0]

    def _repo_ok(self, repo: str) -> bool:
        if self.repos is not None and repo not in self.repos:
            return False
        return self.pfs.q1("SELECT 1 FROM repos WHERE name=?", (repo,)) is not None

    def _resolve(self, node: Node) -> tuple[tuple | None, str]:
        """The commits row a node reads from (None: a branch with no commits), and its path."""
        if node.kind in (BRANCH, BENTRY):
            head = self._open_heads.get((node.repo, node.ref)) or self._head(node.repo, node.ref)
            return (self._commit_row(head) if head is not None else None), node.path
        return self._commit_row(node.ref), node.path

    def _lookup_entry(self, row: tuple, path: str) -> Stat | None:
        if row[6] is None:
            dirty = self.overlay.get(row[0], path)
            if dirty is not None:
                return Stat(False, dirty.size, dirty.mtime_ns, True)
        e = self.pfs.lookup_row(row, path)
        if e is None:
            return None
        return Stat(e.is_dir, e.size, e.mtime_ns, row[6] is None)

    def _subdirs(self, row: tuple, path: str) -> int:
        """How many subdirectories a directory of a commit holds (for its link
        count): counted, as an entry does not store it; kept for finished
        commits, which never change."""
        if row[6] is None:
            # Open: counted again after OPEN_ROW_TTL (other writers), or after
            # this mount's own mkdir, rmdir or rename; not on every lookup of
            # a directory many files are being created in.
            now = time.monotonic()
            kept = self._open_subdirs.get((row[1], path))
            if kept is not None and kept[0] == row[0] and now - kept[2] < OPEN_ROW_TTL:
                return kept[1]
            children = self.pfs._children(self.pfs.root_of(row), path, self.pfs._staging_of(row))
            n = sum(1 for _p, e in children if e.is_dir)
            if len(self._open_subdirs) > SUBDIR_COUNTS:
                self._open_subdirs.clear()
            self._open_subdirs[(row[1], path)] = (row[0], n, now)
            return n
        key = (row[7], path)
        n = self._subdir_counts.get(key)
        if n is None:
            n = sum(1 for _k, raw in self.pfs.tree.iter_prefix(row[7], names.dir_prefix(path)) if decode_stat(raw)[0])
            self._subdir_counts[key] = n
            if len(self._subdir_counts) > SUBDIR_COUNTS:
                self._subdir_counts.popitem(last=False)
        return n

    def _stat_sync(self, node: Node) -> Stat:
        if node.kind == ORPHAN:  # no path leads to it: its open handles say what it is
            raise NotFound(node.path)
        if node.kind == ROOT:
            repos = [r for (r,) in self.pfs.q("SELECT name FROM repos") if self.repos is None or r in self.repos]
            return Stat(True, 0, self.started, True, len(repos))
        if node.kind == REPO:
            row = self.pfs.q1("SELECT created FROM repos WHERE name=?", (node.repo,))
            if row is None or not self._repo_ok(node.repo):
                raise NotFound(node.repo)
            # Its subdirectories: the branches and the open commits (as listed).
            (n,) = self.pfs.q1(
                "SELECT (SELECT count(*) FROM branches WHERE repo=?)"
                " + (SELECT count(*) FROM commits WHERE repo=? AND finished IS NULL)",
                (node.repo, node.repo),
            )
            return Stat(True, 0, int(row[0] * 1e9), True, n)
        row, path = self._resolve(node)
        if row is None:
            if node.kind == BRANCH:
                return Stat(True, 0, self.started, True)
            raise NotFound(path)
        if node.kind in (BRANCH, COMMIT):
            mutable = node.kind == BRANCH or row[6] is None
            return Stat(True, row[8], int((row[6] or row[5]) * 1e9), mutable, self._subdirs(row, ""))
        st = self._lookup_entry(row, path)
        if st is None:
            raise NotFound(path)
        if st.is_dir:
            st.subdirs = self._subdirs(row, path)
        if node.kind == BENTRY:
            st.mutable = True  # follows the branch head
        return st

    def _child_sync(self, parent: Node, name: str) -> tuple[Node, Stat]:
        if parent.kind == ORPHAN:  # a removed directory (someone's cwd) holds nothing
            raise NotFound(name)
        if parent.kind == ROOT:
            if not names.is_valid_name(name) or not self._repo_ok(name):
                raise NotFound(name)
            node = Node(REPO, name)
        elif parent.kind == REPO:
            if self.pfs.q1("SELECT 1 FROM branches WHERE repo=? AND name=?", (parent.repo, name)):
                node = Node(BRANCH, parent.repo, name)
            else:
                row = self.pfs.resolve(parent.repo, name)
                node = Node(COMMIT, parent.repo, row[0])
        elif parent.kind == BRANCH and not self.writable:
            head = self._head(parent.repo, parent.ref)
            if head is not None:
                path = names.clean_path(name)
                row = self._commit_row(head)
                st = self._lookup_entry(row, path)
                if st is not None:  # the common case: looked up once, not again by _stat_sync
                    if st.is_dir:
                        st.subdirs = self._subdirs(row, path)
                    return Node(ENTRY, parent.repo, head, path), st
            node = self._numbered(parent, name)
        else:
            node = parent.child(names.clean_path(name))
            if parent.kind == BRANCH:
                try:
                    return node, self._stat_sync(node)
                except NotFound:
                    return self._numbered(parent, name), self._stat_sync(self._numbered(parent, name))
        return node, self._stat_sync(node)

    def _numbered(self, branch: Node, name: str) -> Node:
        """The 1.x docs' layout: /<repo>/<branch>/<N> is commit branch/N."""
        if not name.isdigit():
            raise NotFound(name)
        row = self.pfs.resolve(branch.repo, f"{branch.ref}/{name}")
        return Node(COMMIT, branch.repo, row[0])

    def _list_sync(self, node: Node) -> list[Listed] | _Finished:
        """A directory's entries, each with its inode and attributes, ready for
        readdirplus; for a finished commit's directory, what to build them from."""
        parent = node
        out: list[tuple[bytes, Node, Stat]] = []
        if node.kind == ROOT:
            for (repo,) in self.pfs.q("SELECT name FROM repos ORDER BY name"):
                if self.repos is None or repo in self.repos:
                    child = Node(REPO, repo)
                    out.append((repo.encode(), child, self._stat_sync(child)))
            return self._listed_from(parent, out)
        if node.kind == REPO:
            for (branch,) in self.pfs.q("SELECT name FROM branches WHERE repo=? ORDER BY name", (node.repo,)):
                child = Node(BRANCH, node.repo, branch)
                out.append((branch.encode(), child, self._stat_sync(child)))
            for (cid,) in self.pfs.q(
                "SELECT id FROM commits WHERE repo=? AND finished IS NULL ORDER BY started", (node.repo,)
            ):
                child = Node(COMMIT, node.repo, cid)
                out.append((cid.encode(), child, self._stat_sync(child)))
            return self._listed_from(parent, out)
        row, path = self._resolve(node)
        if row is None:
            return []
        if node.kind == BRANCH and not self.writable:
            node = Node(COMMIT, node.repo, row[0])
        mutable = row[6] is None or node.kind in (BRANCH, BENTRY)
        if not mutable:
            return _Finished(node, row, path, under_branch=parent.kind == BRANCH)
        seen = set()
        for child_path, e in self.pfs._children(self.pfs.root_of(row), path, self.pfs._staging_of(row)):
            name = child_path.rpartition("/")[2]
            seen.add(name)
            child = node.child(name) if node.kind != COMMIT else Node(ENTRY, node.repo, node.ref, child_path)
            dirty = self.overlay.get(row[0], child_path) if mutable else None
            if dirty:
                st = Stat(False, dirty.size, dirty.mtime_ns, True)
            else:
                st = Stat(e.is_dir, e.size, e.mtime_ns, mutable, self._subdirs(row, child_path) if e.is_dir else 0)
            out.append((name.encode(), child, st))
        if row[6] is None:
            for name in sorted(self.overlay.names_in(row[0], path) - seen):
                dirty = self.overlay.get(row[0], f"{path}/{name}" if path else name)
                if dirty is not None:
                    child = node.child(name) if node.kind != COMMIT else Node(ENTRY, node.repo, node.ref, dirty.path)
                    out.append((name.encode(), child, Stat(False, dirty.size, dirty.mtime_ns, True)))
        return self._listed_from(parent, out)

    def _listed_from(self, parent: Node, entries: list[tuple[bytes, Node, Stat]]) -> list[Listed]:
        out = []
        for name, child, st in entries:
            ino = self.inodes.number(child)
            out.append((name, child, ino, self._attr(child, st, self._entry_timeout(parent, child, st), ino)))
        return out

    def _listing_of(self, fin: _Finished) -> Listing:
        """A finished commit's directory: immutable, so listed once and kept,
        attributes and all (a second ``ls`` only replays it). Built by a task
        in batches, so that readdir answers with the first entries while the
        kernel's work on them overlaps with building the rest."""
        key = fin.key
        listing = self._listings.get(key)
        if listing is not None and listing.error is None:
            self._listings.move_to_end(key)
            return listing
        listing = self._listings[key] = Listing()
        self._spawn(self._build_finished, listing, fin)
        return listing

    async def _build_finished(self, listing: Listing, fin: _Finished) -> None:
        row, path, node = fin.row, fin.path, fin.node
        prefix = names.dir_prefix(path)
        cut = len(prefix)
        base = f"{path}/" if path else ""
        repo, ref = node.repo, row[0]
        # Names right under a branch follow its head, which may move.
        entry_timeout = MUTABLE_TIMEOUT if fin.under_branch else IMMUTABLE_TIMEOUT
        uid, gid = self.uid, self.gid
        write_bits = 0o200 if self.owner_writes_everywhere else 0
        ino_of = inodes_in(ENTRY, repo, ref, base)
        renumbered = self.inodes.renumbered(repo, ref)  # files renamed while the commit was open
        items = self.pfs.tree.iter_prefix(row[7], prefix)
        batch, out = LISTING_SLICE, listing.entries

        def take(n: int) -> list[tuple[bytes, tuple[bool, int, int], int]]:
            """The next ``n`` entries, decoded, with their subdirectory counts (in a thread)."""
            got = []
            for k, raw in _take(items, n):
                st = decode_stat(raw)
                got.append((k, st, self._subdirs(row, base + k[cut:].decode()) if st[0] else 0))
            return got

        try:
            while raw_items := await self._run(take, batch):
                for n, (k, (is_dir, size, mtime), subdirs) in enumerate(raw_items, 1):
                    name = k[cut:]
                    ino = ino_of(name)
                    if renumbered is not None:
                        ino = renumbered.get(Node(ENTRY, repo, ref, base + name.decode()), ino)
                    a = entry_attributes(
                        ino, is_dir, size, mtime, write_bits, uid, gid, IMMUTABLE_TIMEOUT, entry_timeout, subdirs
                    )
                    if self.times:
                        self._apply_times(a)
                    out.append((name, Node(ENTRY, repo, ref, base + name.decode()), ino, a))
                    if n % LISTING_SLICE == 0:
                        # Let a waiting readdir answer with what is there: the
                        # kernel's work on it overlaps with building the rest.
                        listing.grew()
                        await trio.lowlevel.checkpoint()
                listing.grew()
                batch = 4096
        except Exception as exc:  # readdir reports it; the next opendir tries again
            listing.error = exc
        finally:
            listing.finish()
        if self._listings.get(fin.key) is not listing:
            return  # evicted, or failed and replaced, while being built
        self._listed += len(out)
        while self._listed > LISTING_CACHE and len(self._listings) > 1:
            old = self._listings.popitem(last=False)[1]
            if old.done:
                self._listed -= len(old.entries)

    # -- attributes ---------------------------------------------------------------

    def _attr(
        self, node: Node, st: Stat, entry_timeout: float | None = None, ino: int | None = None
    ) -> pyfuse3.EntryAttributes:
        changeable = st.mutable or self.owner_writes_everywhere
        write_bits = 0o200 if (self.writable and changeable and node.kind in (COMMIT, ENTRY, BRANCH, BENTRY)) else 0
        timeout = MUTABLE_TIMEOUT if st.mutable else IMMUTABLE_TIMEOUT
        a = entry_attributes(
            self.inodes.number(node) if ino is None else ino, st.is_dir, st.size, st.mtime_ns, write_bits,
            self.uid, self.gid, timeout, timeout if entry_timeout is None else entry_timeout, st.subdirs,
        )  # fmt: skip
        if self.writable and st.mutable and node.kind in (ENTRY, BENTRY):
            # Names are looked up again each time: another writer (the API, a
            # pipeline) may change the open commit under the same path.
            a.entry_timeout = 0.0
        if self.times:
            self._apply_times(a)
        return a

    def _entry_timeout(self, parent: Node, child: Node, st: Stat) -> float:
        # Names directly under a branch follow its head, which may move.
        if parent.kind in (ROOT, REPO, BRANCH, BENTRY) or st.mutable:
            return MUTABLE_TIMEOUT
        return IMMUTABLE_TIMEOUT

    def _node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise fuse_error(errno.ESTALE)
        return node

    # -- pyfuse3 handlers: namespace ---------------------------------------------

    @errno_boundary
    async def lookup(self, parent_inode, name, ctx=None):
        parent = self._node(parent_inode)
        # The kernel looks every name up before create, mkdir, unlink, rmdir
        # and rename: this one check gives them all ENAMETOOLONG.
        check_name(name)
        text = os.fsdecode(name)
        if text in (".", ".."):
            raise fuse_error(errno.ENOENT)
        try:
            node, st = await self._quick(self._child_sync, parent, text)
        except (NotFound, InvalidArgument):
            raise fuse_error(errno.ENOENT) from None
        self.inodes.remember(node)
        return self._attr(node, st, self._entry_timeout(parent, node, st))

    @errno_boundary
    async def forget(self, inode_list):
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

    @errno_boundary
    async def getattr(self, inode, ctx=None):
        node = self._node(inode)
        if node.kind == BENTRY and (cid := self._open_heads.get((node.repo, node.ref))):
            dirty = self.overlay.get(cid, node.path)
            if dirty is not None:  # being written: no need to ask the engine
                return self._attr(node, Stat(False, dirty.size, dirty.mtime_ns, True), ino=inode)
        try:
            st = await self._quick(self._stat_sync, node)
        except NotFound:
            st = self._orphan_stat(inode)
            if st is None:
                raise fuse_error(errno.ENOENT) from None
            a = self._attr(node, st, ino=inode)
            a.st_nlink = 0  # unlinked while open: usable through its handles until closed
            return a
        return self._attr(node, st, ino=inode)

    @errno_boundary
    async def opendir(self, inode, ctx):
        node = self._node(inode)
        st = await self._quick(self._stat_sync, node)
        if not st.is_dir:
            raise fuse_error(errno.ENOTDIR)
        fh = next(self._fh)
        self._handles[fh] = node
        return fh

    @errno_boundary
    async def readdir(self, fh, start_id, token):
        node = self._handles.get(fh)
        if node is None:
            raise fuse_error(errno.EBADF)
        if start_id == 0 or fh not in self._dirs:
            listed = await self._run(self._list_sync, node)
            self._dirs[fh] = self._listing_of(listed) if isinstance(listed, _Finished) else Listing(listed)
        listing = self._dirs[fh]
        await listing.wait_beyond(start_id)
        entries = listing.entries
        reply = pyfuse3.readdir_reply
        # Only what is built so far: a short answer is fine (the kernel asks
        # for the rest), an empty one would mean the end of the directory.
        end = len(entries)
        for i in range(start_id, end):
            entry = entries[i]
            if not reply(token, entry[0], entry[3], i + 1):
                end = i
                break
        self.inodes.remember_listed(entries[start_id:end])

    @errno_boundary
    async def releasedir(self, fh):
        self._handles.pop(fh, None)
        self._dirs.pop(fh, None)

    @errno_boundary
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLOCK
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s

    # -- pyfuse3 handlers: reading ---------------------------------------------------

    def _open_sync(self, node: Node) -> tuple[list, bool]:
        row, path = self._resolve(node)
        if row is None:
            raise NotFound(path)
        e = self.pfs.lookup_row(row, path)
        if e is None:
            raise NotFound(path)
        if e.is_dir:
            raise IsADirectoryError(errno.EISDIR, path)
        return self.pfs.locate(self.pfs.load_refs(e)), row[6] is not None and node.kind == ENTRY

    @errno_boundary
    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if node.kind == ORPHAN:  # /proc/<pid>/fd/<n> of an unlinked file
            return self._reopen_orphan(inode, flags)
        if node.kind not in (ENTRY, BENTRY):
            raise fuse_error(errno.EISDIR)
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        if writing:
            if not self.writable:
                raise fuse_error(errno.EROFS)
            cid, path = await self._target(node)
            dirty = await self._dirty_for_write(node.repo, cid, path, truncate=bool(flags & os.O_TRUNC))
            info = self._dirty_handle(dirty, True, bool(flags & os.O_APPEND))
            self._track(info.fh, inode)
            return info
        if self.writable:
            row, path = await self._quick(self._resolve, node)
            dirty = self.overlay.get(row[0], path) if row is not None else None
            if dirty is not None:
                dirty.opens += 1
                info = self._dirty_handle(dirty, False, False)
                self._track(info.fh, inode)
                return info
        locations, keep = await self._run(self._open_sync, node)
        fh = next(self._fh)
        handle = self._handles[fh] = ReadHandle(FileReader(self.cache, locations, self._spawn))
        if not keep:
            # In an open commit the file can be unlinked (or replaced) while
            # open, leaving no entry naming its chunks: gc keeps them while
            # this handle reads them, as for the overlay's dirty files.
            self.pfs.held_chunks[id(handle)] = frozenset(loc.hash for loc in locations if loc.hash != ZERO_HASH)
        self._track(fh, inode)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    def _reopen_orphan(self, inode: int, flags: int) -> pyfuse3.FileInfo:
        """Another handle on an unlinked file, sharing what an open one holds."""
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        for handle in self._handles_on(inode):
            if isinstance(handle, DirtyHandle):
                handle.dirty.opens += 1
                if flags & os.O_TRUNC:
                    handle.dirty.truncate(0)
                info = self._dirty_handle(handle.dirty, writing, bool(flags & os.O_APPEND))
            elif isinstance(handle, ReadHandle) and not writing:
                info = pyfuse3.FileInfo(fh=next(self._fh), keep_cache=False)
                again = self._handles[info.fh] = ReadHandle(handle.reader)
                held = self.pfs.held_chunks.get(id(handle))
                if held is not None:
                    self.pfs.held_chunks[id(again)] = held
            else:
                continue
            self._track(info.fh, inode)
            return info
        raise fuse_error(errno.ENOENT)

    def _dirty_handle(self, dirty: DirtyFile, writing: bool, append: bool) -> pyfuse3.FileInfo:
        """A handle taking over a claim (``opens``) on ``dirty``."""
        fh = next(self._fh)
        self._handles[fh] = DirtyHandle(dirty, writing, append)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    @errno_boundary
    async def read(self, fh, off, size):
        handle = self._handles.get(fh)
        if isinstance(handle, ReadHandle):
            return await handle.reader.read(off, size)
        if isinstance(handle, DirtyHandle):
            return await self._read_dirty(handle.dirty, off, size)
        raise fuse_error(errno.EBADF)

    @errno_boundary
    async def release(self, fh):
        handle = self._handles.pop(fh, None)
        if isinstance(handle, DirtyHandle):
            self._unclaim(handle.dirty)
        elif isinstance(handle, ReadHandle):
            self.pfs.held_chunks.pop(id(handle), None)

    @errno_boundary
    async def write(self, fh, off, buf):
        handle = self._handles.get(fh)
        if not isinstance(handle, DirtyHandle) or not handle.writing:
            raise fuse_error(errno.EBADF)
        dirty = handle.dirty
        self.last_write[dirty.commit_id] = time.monotonic()
        return dirty.write(dirty.size if handle.append else off, buf)

    # No flush handler: pyfuse3 answers ENOSYS once and the kernel stops sending
    # FLUSH on every close(); data lands on release, or at fsync.

    @errno_boundary
    async def fsync(self, fh, datasync):
        handle = self._handles.get(fh)
        if isinstance(handle, DirtyHandle):
            await self.flush_commit(handle.dirty.commit_id, include_open=True)

    # -- not supported: links (special files: posix.py) ----------------------------------

    @errno_boundary
    async def symlink(self, parent_inode, name, target, ctx):
        raise fuse_error(errno.EPERM if self.writable else errno.EROFS)

    @errno_boundary
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise fuse_error(errno.EPERM if self.writable else errno.EROFS)
