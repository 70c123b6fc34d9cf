"""The pyfuse3 ``Operations`` that show PFS as directories.

One class; every handler goes through ``_boundary``, so only ``FUSEError``
ever reaches pyfuse3 (an escaping exception would take the mount down), and
each failure becomes the errno a local disk would give. Engine calls run in
worker threads: a long commit finishing elsewhere must not stall the loop.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable

import pyfuse3
import trio

from pfsfuse import names
from pfsfuse.entries import decode_stat
from pfsfuse.errors import (
    AlreadyExists,
    Conflict,
    Damaged,
    InvalidArgument,
    NoSpace,
    NotFound,
    PfsError,
)
from pfsfuse.mount.inodes import (
    BENTRY,
    BRANCH,
    COMMIT,
    ENTRY,
    REPO,
    ROOT,
    InodeTable,
    Node,
    inode_of,
)
from pfsfuse.mount.overlay import DirtyFile, Overlay
from pfsfuse.mount.reader import ChunkCache, FileReader

log = logging.getLogger("pachy.mount")

IMMUTABLE_TIMEOUT = 3600.0  # finished commits never change
MUTABLE_TIMEOUT = 1.0  # branch heads, repo lists, open commits: seen within a second
BLOCK = 1 << 20  # st_blksize: tools like cp read this much at a time
FLUSH_DELAY = 0.2  # closed files wait this long to be ingested together
FLUSH_FILES = 2000  # ...or until this many are waiting
LISTING_CACHE = 200_000  # entries of finished directories kept listed
SMALL_FILE = 4 << 20  # landed from memory in one piece; larger files stream through the chunker


def _errno_of(exc: BaseException) -> int:
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, AlreadyExists):
        return errno.EEXIST
    if isinstance(exc, Conflict):
        return errno.EROFS if "finished" in str(exc) else errno.EBUSY
    if isinstance(exc, InvalidArgument):
        return errno.EINVAL
    if isinstance(exc, NoSpace):
        return errno.ENOSPC
    if isinstance(exc, Damaged):
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def _boundary(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def handler(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except (PfsError, OSError) as exc:
            raise pyfuse3.FUSEError(_errno_of(exc)) from None
        except Exception:
            log.exception("mount: %s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class Stat:
    """What getattr needs to know about a node."""

    __slots__ = ("is_dir", "size", "mtime_ns", "mutable")

    def __init__(self, is_dir: bool, size: int, mtime_ns: int, mutable: bool):
        self.is_dir, self.size, self.mtime_ns, self.mutable = is_dir, size, mtime_ns, mutable


class ReadHandle:
    def __init__(self, reader: FileReader):
        self.reader = reader


class DirtyHandle:
    """An open file whose content lives in the overlay (written, or being written)."""

    def __init__(self, dirty: DirtyFile, writing: bool, append: bool):
        self.dirty, self.writing, self.append = dirty, writing, append


class PfsOperations(pyfuse3.Operations):
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
    ):
        super().__init__()
        self.pfs = pfs
        self.writable = writable
        self.commit_idle = commit_idle
        self.overlay = Overlay(os.path.join(pfs.home, "mount-tmp"))
        self.opened: dict[str, str] = {}  # commits this mount opened (id -> repo): finished at unmount
        self.repo_of: dict[str, str] = {}  # every open commit written through the mount
        self.last_write: dict[str, float] = {}
        self._flush_due: dict[str, bool] = {}
        self._open_lock = trio.Lock()
        self._open_heads: dict[tuple[str, str], str] = {}  # (repo, branch) -> its open head
        self._listings: OrderedDict[tuple[str, str], list] = OrderedDict()  # finished dirs
        self._listed = 0
        self._flush_locks: dict[str, trio.Lock] = {}
        self.repos = repos
        self.inodes = InodeTable()
        self.cache = ChunkCache(pfs.store)
        self._spawn = spawn
        self._fh = itertools.count(1)
        self._handles: dict[int, object] = {}
        self._dirs: dict[int, list[tuple[bytes, Node, Stat]]] = {}
        self._finished: dict[str, tuple] = {}  # commit rows that can no longer change
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
        if row is None:
            row = self.pfs._row(cid)
            if row[6] is not None:
                self._finished[cid] = row
        return row

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

    def _stat_sync(self, node: Node) -> Stat:
        if node.kind == ROOT:
            return Stat(True, 0, self.started, True)
        if node.kind == REPO:
            row = self.pfs.q1("SELECT created FROM repos WHERE name=?", (node.repo,))
            if row is None or not self._repo_ok(node.repo):
                raise NotFound(node.repo)
            return Stat(True, 0, int(row[0] * 1e9), True)
        row, path = self._resolve(node)
        if row is None:
            if node.kind == BRANCH:
                return Stat(True, 0, self.started, True)
            raise NotFound(path)
        if node.kind in (BRANCH, COMMIT):
            return Stat(True, row[8], int((row[6] or row[5]) * 1e9), node.kind == BRANCH or row[6] is None)
        st = self._lookup_entry(row, path)
        if st is None:
            raise NotFound(path)
        if node.kind == BENTRY:
            st.mutable = True  # follows the branch head
        return st

    def _child_sync(self, parent: Node, name: str) -> tuple[Node, Stat]:
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
            node = None
            if head is not None:
                node = Node(ENTRY, parent.repo, head, names.clean_path(name))
                if self.pfs.lookup_row(self._commit_row(head), node.path) is None:
                    node = None
            if node is None:
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

    def _list_sync(self, node: Node) -> list[tuple[bytes, Node, Stat]]:
        out: list[tuple[bytes, Node, Stat]] = []
        if node.kind == ROOT:
            for (repo,) in self.pfs.q("SELECT name FROM repos ORDER BY name"):
                if self.repos is None or repo in self.repos:
                    child = Node(REPO, repo)
                    out.append((repo.encode(), child, self._stat_sync(child)))
            return out
        if node.kind == REPO:
            for (branch,) in self.pfs.q("SELECT name FROM branches WHERE repo=? ORDER BY name", (node.repo,)):
                child = Node(BRANCH, node.repo, branch)
                out.append((branch.encode(), child, self._stat_sync(child)))
            for (cid,) in self.pfs.q(
                "SELECT id FROM commits WHERE repo=? AND finished IS NULL ORDER BY started", (node.repo,)
            ):
                child = Node(COMMIT, node.repo, cid)
                out.append((cid.encode(), child, self._stat_sync(child)))
            return out
        row, path = self._resolve(node)
        if row is None:
            return out
        if node.kind == BRANCH and not self.writable:
            node = Node(COMMIT, node.repo, row[0])
        mutable = row[6] is None or node.kind in (BRANCH, BENTRY)
        if not mutable:
            return self._list_finished(node, row, path)
        seen = set()
        for child_path, e in self.pfs._children(self.pfs.root_of(row), path, self.pfs._staging_of(row)):
            name = child_path.rpartition("/")[2]
            seen.add(name)
            child = node.child(name) if node.kind != COMMIT else Node(ENTRY, node.repo, node.ref, child_path)
            dirty = self.overlay.get(row[0], child_path) if mutable else None
            st = Stat(False, dirty.size, dirty.mtime_ns, True) if dirty else Stat(e.is_dir, e.size, e.mtime_ns, mutable)
            out.append((name.encode(), child, st))
        if row[6] is None:
            for name in sorted(self.overlay.names_in(row[0], path) - seen):
                dirty = self.overlay.get(row[0], f"{path}/{name}" if path else name)
                if dirty is not None:
                    child = node.child(name) if node.kind != COMMIT else Node(ENTRY, node.repo, node.ref, dirty.path)
                    out.append((name.encode(), child, Stat(False, dirty.size, dirty.mtime_ns, True)))
        return out

    def _list_finished(self, node: Node, row: tuple, path: str) -> list[tuple[bytes, Node, Stat]]:
        """A finished commit's directory: immutable, so listed lean and kept."""
        key = (row[0], path)
        cached = self._listings.get(key)
        if cached is not None:
            self._listings.move_to_end(key)
            return cached
        prefix = names.dir_prefix(path)
        cut = len(prefix)
        base = f"{path}/" if path else ""
        kind, repo, ref = (ENTRY, node.repo, node.ref) if node.kind != BRANCH else (ENTRY, node.repo, row[0])
        out = []
        for k, raw in self.pfs.tree.iter_prefix(row[7], prefix):
            name = k[cut:]
            is_dir, size, mtime = decode_stat(raw)
            out.append((name, Node(kind, repo, ref, base + name.decode()), Stat(is_dir, size, mtime, False)))
        self._listings[key] = out
        self._listed += len(out)
        while self._listed > LISTING_CACHE and len(self._listings) > 1:
            self._listed -= len(self._listings.popitem(last=False)[1])
        return out

    # -- attributes ---------------------------------------------------------------

    def _attr(
        self, node: Node, st: Stat, entry_timeout: float | None = None, ino: int | None = None
    ) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode_of(node) if ino is None else ino
        write_bits = 0o200 if (self.writable and st.mutable and node.kind in (COMMIT, ENTRY, BRANCH, BENTRY)) else 0
        if st.is_dir:
            a.st_mode = stat.S_IFDIR | 0o555 | write_bits
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | 0o444 | write_bits
            a.st_nlink = 1
        a.st_size = st.size
        a.st_blksize = BLOCK
        a.st_blocks = (st.size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = st.mtime_ns
        a.st_uid, a.st_gid = self.uid, self.gid
        timeout = MUTABLE_TIMEOUT if st.mutable else IMMUTABLE_TIMEOUT
        a.attr_timeout = timeout
        a.entry_timeout = timeout if entry_timeout is None else entry_timeout
        if self.writable and st.mutable and node.kind in (ENTRY, BENTRY):
            # Inodes stand for paths: after rename(2) the kernel keeps the moved
            # dentry on the old path's inode, so names must be looked up again.
            a.entry_timeout = 0.0
        return a

    def _entry_timeout(self, parent: Node, child: Node, st: Stat) -> float:
        # Names directly under a branch follow its head, which may move.
        if parent.kind in (ROOT, REPO, BRANCH, BENTRY) or st.mutable:
            return MUTABLE_TIMEOUT
        return IMMUTABLE_TIMEOUT

    def _node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise _fail(errno.ESTALE)
        return node

    # -- pyfuse3 handlers: namespace ---------------------------------------------

    @_boundary
    async def lookup(self, parent_inode, name, ctx=None):
        parent = self._node(parent_inode)
        text = os.fsdecode(name)
        if text in (".", ".."):
            raise _fail(errno.ENOENT)
        try:
            node, st = await self._quick(self._child_sync, parent, text)
        except (NotFound, InvalidArgument):
            raise _fail(errno.ENOENT) from None
        self.inodes.remember(node)
        return self._attr(node, st, self._entry_timeout(parent, node, st))

    @_boundary
    async def forget(self, inode_list):
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

    @_boundary
    async def getattr(self, inode, ctx=None):
        node = self._node(inode)
        if node.kind == BENTRY and (cid := self._open_heads.get((node.repo, node.ref))):
            dirty = self.overlay.get(cid, node.path)
            if dirty is not None:  # being written: no need to ask the engine
                return self._attr(node, Stat(False, dirty.size, dirty.mtime_ns, True))
        try:
            st = await self._quick(self._stat_sync, node)
        except NotFound:
            raise _fail(errno.ENOENT) from None
        return self._attr(node, st)

    @_boundary
    async def opendir(self, inode, ctx):
        node = self._node(inode)
        st = await self._quick(self._stat_sync, node)
        if not st.is_dir:
            raise _fail(errno.ENOTDIR)
        fh = next(self._fh)
        self._handles[fh] = node
        return fh

    @_boundary
    async def readdir(self, fh, start_id, token):
        node = self._handles.get(fh)
        if node is None:
            raise _fail(errno.EBADF)
        if start_id == 0 or fh not in self._dirs:
            self._dirs[fh] = await self._run(self._list_sync, node)
        entries = self._dirs[fh]
        remember = self.inodes.remember
        for i in range(start_id, len(entries)):
            name, child, st = entries[i]
            ino = inode_of(child)
            attr = self._attr(child, st, self._entry_timeout(node, child, st), ino)
            if not pyfuse3.readdir_reply(token, name, attr, i + 1):
                return
            remember(child, ino)

    @_boundary
    async def releasedir(self, fh):
        self._handles.pop(fh, None)
        self._dirs.pop(fh, None)

    @_boundary
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

    @_boundary
    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if node.kind not in (ENTRY, BENTRY):
            raise _fail(errno.EISDIR)
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND))
        if writing:
            if not self.writable:
                raise _fail(errno.EROFS)
            cid, path = await self._target(node)
            dirty = await self._dirty_for_write(node.repo, cid, path, truncate=bool(flags & os.O_TRUNC))
            return self._dirty_handle(dirty, True, bool(flags & os.O_APPEND))
        if self.writable:
            row, path = await self._quick(self._resolve, node)
            dirty = self.overlay.get(row[0], path) if row is not None else None
            if dirty is not None:
                return self._dirty_handle(dirty, False, False)
        locations, keep = await self._run(self._open_sync, node)
        fh = next(self._fh)
        self._handles[fh] = ReadHandle(FileReader(self.cache, locations, self._spawn))
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    def _dirty_handle(self, dirty: DirtyFile, writing: bool, append: bool) -> pyfuse3.FileInfo:
        dirty.opens += 1
        fh = next(self._fh)
        self._handles[fh] = DirtyHandle(dirty, writing, append)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    @_boundary
    async def read(self, fh, off, size):
        handle = self._handles.get(fh)
        if isinstance(handle, ReadHandle):
            return await handle.reader.read(off, size)
        if isinstance(handle, DirtyHandle):
            return handle.dirty.read(off, size)
        raise _fail(errno.EBADF)

    @_boundary
    async def release(self, fh):
        handle = self._handles.pop(fh, None)
        if isinstance(handle, DirtyHandle):
            handle.dirty.opens -= 1
            if handle.dirty.opens == 0 and (cid := handle.dirty.commit_id) in self.repo_of:
                self._schedule_flush(cid)

    @_boundary
    async def write(self, fh, off, buf):
        handle = self._handles.get(fh)
        if not isinstance(handle, DirtyHandle) or not handle.writing:
            raise _fail(errno.EBADF)
        dirty = handle.dirty
        self.last_write[dirty.commit_id] = time.monotonic()
        return dirty.write(dirty.size if handle.append else off, buf)

    # No flush handler: pyfuse3 answers ENOSYS once and the kernel stops sending
    # FLUSH on every close(); data lands on release, or at fsync.

    @_boundary
    async def fsync(self, fh, datasync):
        handle = self._handles.get(fh)
        if isinstance(handle, DirtyHandle):
            await self.flush_commit(handle.dirty.commit_id, include_open=True)

    # -- writes ---------------------------------------------------------------------

    def _ensure_open_sync(self, node: Node) -> str:
        """The open commit that writes under ``node`` go to; writing under a
        branch whose head is finished starts a commit on it."""
        if node.kind in (BRANCH, BENTRY):
            cached = self._open_heads.get((node.repo, node.ref))
            if cached is not None:
                return cached
            for _ in range(3):
                head = self._head(node.repo, node.ref)
                if head is not None and self._commit_row(head)[6] is None:
                    self._open_heads[(node.repo, node.ref)] = head
                    return head
                try:
                    c = self.pfs.start_commit(node.repo, node.ref)
                except Conflict:
                    continue  # someone opened one meanwhile: use it
                self.opened[c.id] = node.repo
                self._open_heads[(node.repo, node.ref)] = c.id
                return c.id
            raise Conflict(f"cannot open a commit on branch '{node.ref}'")
        if node.kind in (COMMIT, ENTRY):
            row = self._commit_row(node.ref)
            if row[6] is not None:
                raise OSError(errno.EROFS, "commit is finished")
            return row[0]
        raise OSError(errno.EPERM, "only commits hold files")

    def forget_commit(self, cid: str) -> None:
        """A commit finished or went away: writes on its branch open a new one."""
        for key, head in list(self._open_heads.items()):
            if head == cid:
                del self._open_heads[key]

    async def _target(self, node: Node) -> tuple[str, str]:
        if not self.writable:
            raise _fail(errno.EROFS)
        async with self._open_lock:
            cid = await self._quick(self._ensure_open_sync, node)
        self.repo_of[cid] = node.repo
        self.last_write[cid] = time.monotonic()
        return cid, node.path

    def _lookup_cid(self, cid: str, path: str) -> Stat | None:
        return self._lookup_entry(self.pfs._row(cid), path)

    def _content_sync(self, cid: str, path: str) -> tuple[bool, list]:
        """(is it a directory, chunk locations) of what ``path`` holds in the commit now."""
        e = self.pfs.lookup_row(self.pfs._row(cid), path)
        if e is None:
            return False, []
        return e.is_dir, ([] if e.is_dir else self.pfs.locate(self.pfs.load_refs(e)))

    async def _dirty_for_write(self, repo: str, cid: str, path: str, truncate: bool) -> DirtyFile:
        dirty = self.overlay.get(cid, path)
        if dirty is None and truncate:
            dirty = self.overlay.create(cid, path)  # the old content does not matter
        if dirty is None:
            is_dir, locations = await self._quick(self._content_sync, cid, path)
            if is_dir:
                raise _fail(errno.EISDIR)
            dirty = self.overlay.get(cid, path) or self.overlay.create(cid, path)
            if not truncate and locations and dirty.size == 0:
                # Writing into an existing file: start from its content.
                reader = FileReader(self.cache, locations, self._spawn)
                pos = 0
                while pos < reader.size:
                    piece = await reader.read(pos, 4 << 20)
                    dirty.write(pos, piece)
                    pos += len(piece)
        if truncate:
            dirty.truncate(0)
        return dirty

    def _child_node(self, parent: Node, cid: str, path: str) -> Node:
        if parent.kind in (BRANCH, BENTRY):
            return Node(BENTRY, parent.repo, parent.ref, path)
        return Node(ENTRY, parent.repo, cid, path)

    @_boundary
    async def create(self, parent_inode, name, mode, flags, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = names.clean_path(f"{ppath}/{os.fsdecode(name)}" if ppath else os.fsdecode(name))
        if flags & os.O_EXCL:
            st = await self._quick(self._lookup_cid, cid, path)
            if st is not None:
                raise _fail(errno.EEXIST)
        dirty = await self._dirty_for_write(parent.repo, cid, path, truncate=True)
        info = self._dirty_handle(dirty, True, bool(flags & os.O_APPEND))
        node = self._child_node(parent, cid, path)
        self.inodes.remember(node)
        return info, self._attr(node, Stat(False, dirty.size, dirty.mtime_ns, True), MUTABLE_TIMEOUT)

    async def _session(self, cid: str, apply: Callable) -> None:
        """Run metadata changes in one write session on the commit (in a thread)."""
        repo = self.repo_of[cid]

        def run() -> None:
            with self.pfs.write_session(repo, cid) as session:
                apply(session)
                session.commit()

        await self._run(run)

    @_boundary
    async def mkdir(self, parent_inode, name, mode, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = names.clean_path(f"{ppath}/{os.fsdecode(name)}" if ppath else os.fsdecode(name))
        if self.overlay.get(cid, path) or await self._quick(self._lookup_cid, cid, path):
            raise _fail(errno.EEXIST)
        await self._session(cid, lambda s: s.mkdir(path))
        node = self._child_node(parent, cid, path)
        st = await self._quick(self._stat_sync, node)
        self.inodes.remember(node)
        return self._attr(node, st, MUTABLE_TIMEOUT)

    @_boundary
    async def unlink(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = names.clean_path(f"{ppath}/{os.fsdecode(name)}" if ppath else os.fsdecode(name))
        # Not while a flush is landing this file: it would come back after the delete.
        async with self._flush_locks.setdefault(cid, trio.Lock()):
            dirty = self.overlay.get(cid, path)
            is_dir, _ = await self._quick(self._content_sync, cid, path)
            if is_dir:
                raise _fail(errno.EISDIR)
            in_pfs = await self._run(self.pfs.lookup_row, self.pfs._row(cid), path) is not None
            if dirty is None and not in_pfs:
                raise _fail(errno.ENOENT)
            self.overlay.drop(cid, path)
            if in_pfs:
                await self._session(cid, lambda s: s.delete(path))

    @_boundary
    async def rmdir(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = names.clean_path(f"{ppath}/{os.fsdecode(name)}" if ppath else os.fsdecode(name))
        st = await self._quick(self._lookup_cid, cid, path)
        if st is None:
            raise _fail(errno.ENOENT)
        if not st.is_dir:
            raise _fail(errno.ENOTDIR)
        row = self.pfs._row(cid)
        children = await self._run(lambda: next(iter(self.pfs._children(self.pfs.root_of(row), path, (self.pfs.db, cid))), None))
        if children is not None or self.overlay.names_in(cid, path):
            raise _fail(errno.ENOTEMPTY)
        await self._session(cid, lambda s: s.delete(path))

    @_boundary
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise _fail(errno.EINVAL)
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        cid, old_dir = await self._target(old_parent)
        cid2, new_dir = await self._target(new_parent)
        if cid != cid2:
            raise _fail(errno.EXDEV)
        src = names.clean_path(f"{old_dir}/{os.fsdecode(name_old)}" if old_dir else os.fsdecode(name_old))
        dst = names.clean_path(f"{new_dir}/{os.fsdecode(name_new)}" if new_dir else os.fsdecode(name_new))
        # Moves work on commit content: land written files first.
        await self.flush_commit(cid, include_open=True)
        noreplace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        await self._session(cid, lambda s: s.move(src, dst, noreplace))

    @_boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        if node.kind not in (ENTRY, BENTRY, COMMIT, BRANCH):
            raise _fail(errno.EROFS if not self.writable else errno.EPERM)
        if fields.update_size or fields.update_mtime:
            cid, path = await self._target(node)
            # Not while a flush is landing this file: it would land the old size or mtime.
            async with self._flush_locks.setdefault(cid, trio.Lock()):
                st = await self._quick(self._lookup_cid, cid, path)
                if st is None and self.overlay.get(cid, path) is None:
                    raise _fail(errno.ENOENT)
                if fields.update_size:
                    dirty = await self._dirty_for_write(node.repo, cid, path, truncate=False)
                    dirty.truncate(attr.st_size)
                    if dirty.opens == 0:
                        self._schedule_flush(cid)
                if fields.update_mtime:
                    dirty = self.overlay.get(cid, path)
                    if dirty is not None:
                        dirty.mtime_ns = attr.st_mtime_ns
                    elif st is not None and not st.is_dir:
                        await self._session(cid, lambda s: s.touch(path, attr.st_mtime_ns))
        # Modes and owners are not versioned: accepted and ignored, as on vfat.
        return await self.getattr(inode, ctx)

    # -- landing written files ----------------------------------------------------------

    def _schedule_flush(self, cid: str) -> None:
        waiting = [f for f in self.overlay.of_commit(cid) if f.opens == 0]
        if len(waiting) >= FLUSH_FILES:
            self._spawn(self.flush_commit, cid)
            return
        if self._flush_due.get(cid):
            return
        self._flush_due[cid] = True

        async def later() -> None:
            await trio.sleep(FLUSH_DELAY)
            self._flush_due[cid] = False
            try:
                await self.flush_commit(cid)
            except Exception:
                log.exception("mount: landing written files in commit %s failed", cid)

        self._spawn(later)

    async def flush_commit(self, cid: str, include_open: bool = False) -> int:
        """Ingest the overlay's files of one commit in one write session."""
        lock = self._flush_locks.setdefault(cid, trio.Lock())
        async with lock:
            files = [f for f in self.overlay.of_commit(cid) if include_open or f.opens == 0]
            repo = self.repo_of.get(cid)
            if not files or repo is None:
                return 0
            seen = [(f, f.version) for f in files]

            def ingest() -> None:
                with self.pfs.write_session(repo, cid) as session:
                    for f, _ in seen:
                        if f.size <= SMALL_FILE:  # most files: no chunker windows to set up
                            session.put_bytes(f.path, f.read(0, f.size), overwrite=True)
                        else:
                            stream = session.put_stream(f.path)
                            stream.write_from(f.reader())
                            session.add(f.path, stream.finish(), stream.size, overwrite=True)
                        session.touch(f.path, f.mtime_ns)
                    session.commit()

            await self._run(ingest)
            for f, version in seen:
                if f.version == version and f.opens == 0 and self.overlay.get(cid, f.path) is f:
                    self.overlay.drop(cid, f.path)
            return len(seen)

    async def flush_all(self, finish: bool) -> list[str]:
        """Land everything written; with ``finish``, finish the commits this mount opened."""
        for cid in list(self.overlay.commits()):
            await self.flush_commit(cid, include_open=True)
        finished = []
        if finish:
            for cid, repo in list(self.opened.items()):
                row = await self._run(self.pfs._row, cid)
                if row[6] is None:
                    await self._run(self.pfs.finish_commit, repo, cid)
                    finished.append(cid)
                self.opened.pop(cid, None)
                self.forget_commit(cid)
        return finished

    async def watch_idle(self) -> None:
        """Finish commits nobody has written to for ``commit_idle`` seconds."""
        if not self.commit_idle:
            return
        while True:
            await trio.sleep(min(self.commit_idle / 4, 1.0))
            now = time.monotonic()
            for cid, when in list(self.last_write.items()):
                busy = any(f.opens for f in self.overlay.of_commit(cid))
                if now - when >= self.commit_idle and not busy:
                    self.last_write.pop(cid, None)
                    await self.flush_commit(cid, include_open=True)
                    row = await self._run(self.pfs._row, cid)
                    if row[6] is None:
                        await self._run(self.pfs.finish_commit, self.repo_of[cid], cid)
                    self.opened.pop(cid, None)
                    self.forget_commit(cid)

    # -- not supported: links ------------------------------------------------------------

    @_boundary
    async def symlink(self, parent_inode, name, target, ctx):
        raise _fail(errno.EPERM if self.writable else errno.EROFS)

    @_boundary
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise _fail(errno.EPERM if self.writable else errno.EROFS)
