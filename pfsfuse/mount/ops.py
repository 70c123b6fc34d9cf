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
from collections.abc import Callable

import pyfuse3
import trio

from pfsfuse import names
from pfsfuse.entries import Entry
from pfsfuse.errors import (
    AlreadyExists,
    Conflict,
    Damaged,
    InvalidArgument,
    NoSpace,
    NotFound,
    PfsError,
)
from pfsfuse.mount.inodes import BRANCH, COMMIT, ENTRY, REPO, ROOT, InodeTable, Node, inode_of
from pfsfuse.mount.reader import ChunkCache, FileReader

log = logging.getLogger("pachy.mount")

IMMUTABLE_TIMEOUT = 3600.0  # finished commits never change
MUTABLE_TIMEOUT = 1.0  # branch heads, repo lists, open commits: seen within a second
BLOCK = 1 << 20  # st_blksize: tools like cp read this much at a time


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


class PfsOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, pfs, *, writable: bool = False, repos: set[str] | None = None, spawn: Callable):
        super().__init__()
        self.pfs = pfs
        self.writable = writable
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

    def _stat_sync(self, node: Node) -> Stat:
        if node.kind == ROOT:
            return Stat(True, 0, self.started, True)
        if node.kind == REPO:
            row = self.pfs.q1("SELECT created FROM repos WHERE name=?", (node.repo,))
            if row is None or not self._repo_ok(node.repo):
                raise NotFound(node.repo)
            return Stat(True, 0, int(row[0] * 1e9), True)
        if node.kind == BRANCH:
            head = self._head(node.repo, node.ref)
            if head is None:
                return Stat(True, 0, self.started, True)
            row = self._commit_row(head)
            return Stat(True, row[8], int((row[6] or row[5]) * 1e9), True)
        row = self._commit_row(node.ref)
        mutable = row[6] is None
        if node.kind == COMMIT:
            return Stat(True, row[8], int((row[6] or row[5]) * 1e9), mutable)
        e = self.pfs.lookup_row(row, node.path)
        if e is None:
            raise NotFound(node.path)
        return Stat(e.is_dir, e.size, e.mtime_ns, mutable)

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
        elif parent.kind == BRANCH:
            head = self._head(parent.repo, parent.ref)
            node = None
            if head is not None:
                node = Node(ENTRY, parent.repo, head, names.clean_path(name))
                if self.pfs.lookup_row(self._commit_row(head), node.path) is None:
                    node = None
            if node is None:
                if not name.isdigit():
                    raise NotFound(name)
                # The 1.x docs' layout: /<repo>/<branch>/<N> is commit branch/N.
                row = self.pfs.resolve(parent.repo, f"{parent.ref}/{name}")
                node = Node(COMMIT, parent.repo, row[0])
        else:
            node = parent.child(names.clean_path(name))
        return node, self._stat_sync(node)

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
        if node.kind == BRANCH:
            head = self._head(node.repo, node.ref)
            if head is None:
                return out
            node = Node(COMMIT, node.repo, head)
        row = self._commit_row(node.ref)
        mutable = row[6] is None
        for path, e in self.pfs._children(self.pfs.root_of(row), node.path, self.pfs._staging_of(row)):
            child = Node(ENTRY, node.repo, node.ref, path)
            out.append((path.rpartition("/")[2].encode(), child, Stat(e.is_dir, e.size, e.mtime_ns, mutable)))
        return out

    # -- attributes ---------------------------------------------------------------

    def _attr(self, node: Node, st: Stat, entry_timeout: float | None = None) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode_of(node)
        write_bits = 0o200 if (self.writable and st.mutable and node.kind in (COMMIT, ENTRY, BRANCH)) else 0
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
        return a

    def _entry_timeout(self, parent: Node, child: Node, st: Stat) -> float:
        # Names directly under a branch follow its head, which may move.
        if parent.kind in (ROOT, REPO, BRANCH) or st.mutable:
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
            node, st = await self._run(self._child_sync, parent, text)
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
        try:
            st = await self._run(self._stat_sync, node)
        except NotFound:
            raise _fail(errno.ENOENT) from None
        return self._attr(node, st)

    @_boundary
    async def opendir(self, inode, ctx):
        node = self._node(inode)
        st = await self._run(self._stat_sync, node)
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
        for i in range(start_id, len(entries)):
            name, child, st = entries[i]
            if not pyfuse3.readdir_reply(token, name, self._attr(child, st, self._entry_timeout(node, child, st)), i + 1):
                return
            self.inodes.remember(child)

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

    def _open_sync(self, node: Node) -> tuple[Entry, list, bool]:
        row = self._commit_row(node.ref)
        e = self.pfs.lookup_row(row, node.path)
        if e is None:
            raise NotFound(node.path)
        if e.is_dir:
            raise IsADirectoryError(errno.EISDIR, node.path)
        return e, self.pfs.locate(self.pfs.load_refs(e)), row[6] is not None

    @_boundary
    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if node.kind != ENTRY:
            raise _fail(errno.EISDIR)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise _fail(errno.EROFS)
        _e, locations, finished = await self._run(self._open_sync, node)
        fh = next(self._fh)
        self._handles[fh] = ReadHandle(FileReader(self.cache, locations, self._spawn))
        return pyfuse3.FileInfo(fh=fh, keep_cache=finished)

    @_boundary
    async def read(self, fh, off, size):
        handle = self._handles.get(fh)
        if not isinstance(handle, ReadHandle):
            raise _fail(errno.EBADF)
        return await handle.reader.read(off, size)

    @_boundary
    async def release(self, fh):
        self._handles.pop(fh, None)

    # -- writes: refused on a read-only mount ---------------------------------------

    @_boundary
    async def create(self, parent_inode, name, mode, flags, ctx):
        raise _fail(errno.EROFS)

    @_boundary
    async def mkdir(self, parent_inode, name, mode, ctx):
        raise _fail(errno.EROFS)

    @_boundary
    async def unlink(self, parent_inode, name, ctx):
        raise _fail(errno.EROFS)

    @_boundary
    async def rmdir(self, parent_inode, name, ctx):
        raise _fail(errno.EROFS)

    @_boundary
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        raise _fail(errno.EROFS)

    @_boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        raise _fail(errno.EROFS)

    @_boundary
    async def symlink(self, parent_inode, name, target, ctx):
        raise _fail(errno.EPERM)

    @_boundary
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise _fail(errno.EPERM)
