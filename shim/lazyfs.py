"""``input.pfs.lazy``: a unit's lazy inputs served through a read-only FUSE view.

One pyfuse3 mount per worker process (pyfuse3 allows one ``init`` per
process), made on the first task with a lazy input at
``<scratch>/lazy-pfs`` and kept until the worker stops. It runs in a
thread of its own with its own trio loop, so the worker's main thread (which
runs units and blocks in syscalls) never stalls it. Its tree::

    <mount>/u<N>/<input>/<path>   the lazy files of one unit (N: never reused)
    <mount>/current -> u<N>       the unit running now (a symlink, never cached)

The table of files is swapped, not the mount: ``show`` adds a unit's view
and points ``current`` at it, ``clear`` drops the task's views. Inode
numbers are never reused, so nothing the kernel cached from an earlier view
reaches a later one. The views of a task's units stay until its result is
uploaded (a unit may symlink an input file into /pfs/out, read at upload).

Reads go to the daemon in blocks (``POST /v1/workers/read`` with offset and
length) through a cache of a few MiB shared by every file; a reader that
has read ``AHEAD_START`` bytes in a row gets the next block fetched while
it reads this one, and after ``STREAM_MIN`` a window doubling up to
``AHEAD_MAX``; one that seeks reads only what it asks for (and what the
kernel reads ahead, 256 KiB). No whole file is ever in memory. Only
``FUSEError`` leaves a handler: a daemon error is EIO, with a log line.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyfuse3
import trio

from pfsfuse.mount import detach_under, fuse_unavailable, make_shared
from pfsfuse.mount.common import (
    errno_boundary,  # only FUSEError reaches pyfuse3; the daemon's errors as errnos
)
from shim.materialize import LAZY_CURRENT as CURRENT
from shim.materialize import Piece
from shim.task import FileSpec

__all__ = ["LazyMount", "LazyUnavailable", "detach_under", "make_shared", "unavailable"]

MOUNT_DIR = "lazy-pfs"  # under the worker's scratch (hidden from user code like the rest of it)
FSTYPE = "fuse.pachy-lazy"
BLOCK = 256 << 10  # what one fetch brings at least (a 1 MiB read: 5 round trips, 1.25 MiB)
AHEAD_START = 512 << 10  # a reader that went on this far without a seek gets the next block fetched ahead
STREAM_MIN = 2 << 20  # ...and this far: it streams, the window grows
AHEAD_MAX = 8  # blocks fetched ahead of a streaming reader, at most (2 MiB)
CACHE_BYTES = 8 << 20  # blocks kept, all files together
VIEW_TIMEOUT = 3600.0  # a view never changes: the kernel may keep its entries
START_TIMEOUT = 10.0
TRACE = bool(os.environ.get("PACHY_LAZY_TRACE"))  # a line per read in the worker's log



class Reader(Protocol):
    def read_batch(self, items: list[dict]) -> Iterator[Iterator[bytes]]: ...


class LazyUnavailable(RuntimeError):
    """FUSE cannot be mounted here; lazy inputs are copied instead (the message says why)."""


def _say(message: str) -> None:
    print(f"[lazy /pfs] {message}", file=sys.stderr, flush=True)


# -- the table ---------------------------------------------------------------------


@dataclass
class Counters:
    """What one view cost: bytes and requests to the daemon, and when its first byte came."""

    shown: float = field(default_factory=time.monotonic)
    bytes: int = 0
    requests: int = 0
    first_byte: float | None = None  # seconds from ``show`` to the first read answered

    def describe(self) -> str:
        first = f", first byte {self.first_byte * 1000:.1f} ms after the unit started" if self.first_byte else ""
        return f"{self.bytes} bytes read from the daemon in {self.requests} requests{first}"


@dataclass
class Node:
    inode: int
    kind: int  # stat.S_IFDIR | S_IFREG | S_IFLNK
    size: int = 0
    pieces: tuple[Piece, ...] = ()
    children: dict[bytes, int] = field(default_factory=dict)
    target: bytes = b""  # a symlink's
    counters: Counters | None = None
    volatile: bool = False  # the root, `current`, a view's top: looked up afresh every time


class Table:
    """Every node the mount shows (replaced whole: a handler sees one table or the next)."""

    def __init__(self, nodes: dict[int, Node]):
        self.nodes = nodes


_inodes = itertools.count(pyfuse3.ROOT_INODE + 1)


def build_view(files: Iterable[FileSpec], dirs: Iterable[tuple[str, str]], counters: Counters) -> tuple[Node, dict]:
    """A unit's lazy files as nodes: (the view's directory, every node by inode)."""
    nodes: dict[int, Node] = {}

    def new(kind: int) -> Node:
        n = Node(next(_inodes), kind, counters=counters)
        nodes[n.inode] = n
        return n

    top = new(stat.S_IFDIR)
    top.volatile = True  # dropped with its view: no path walk may find it after that

    def directory(rel: str) -> Node:
        at = top
        for part in (p for p in rel.split("/") if p):
            name = os.fsencode(part)
            ino = at.children.get(name)
            if ino is None:
                child = new(stat.S_IFDIR)
                at.children[name] = child.inode
                at = child
            else:
                at = nodes[ino]
                if at.kind != stat.S_IFDIR:
                    raise ValueError(f"'{rel}' is a file and a directory in the unit's inputs")
        return at

    for name, rel in dirs:
        directory(f"{name}/{rel}")
    pieces: dict[str, list[Piece]] = {}
    sizes: dict[str, int] = {}
    for f in files:
        path = f"{f.input}/{f.path}"
        pieces.setdefault(path, [])
        sizes.setdefault(path, 0)
        if f.empty:
            continue
        length = f.length if f.length >= 0 else f.size
        pieces[path].append((f.repo, f.commit, f.src, f.offset, length))
        sizes[path] += length
    for path, ps in pieces.items():
        parent, _, base = path.rpartition("/")
        d = directory(parent)
        name = os.fsencode(base)
        if name in d.children:
            raise ValueError(f"'{path}' appears twice in the unit's inputs")
        node = new(stat.S_IFREG)
        node.size, node.pieces = sizes[path], tuple(ps)
        d.children[name] = node.inode
    return top, nodes


# -- the file system -----------------------------------------------------------------


@dataclass
class _Handle:
    node: Node
    last_end: int = -1
    streamed: int = 0  # bytes read in a row without a seek
    ahead: int = 0  # blocks fetched beyond what a read needs (0 until it streams)


class LazyOps(pyfuse3.Operations):
    """Read-only handlers over a ``Table``; reads through the block cache."""

    def __init__(self, reader: Reader, *, block: int = BLOCK, cache_bytes: int = CACHE_BYTES):
        super().__init__()
        self.reader = reader
        self.block = block
        self.cache_bytes = cache_bytes
        root = Node(pyfuse3.ROOT_INODE, stat.S_IFDIR, volatile=True)
        self.table = Table({root.inode: root})
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.mtime_ns = time.time_ns()
        self._handles: dict[int, _Handle] = {}
        self._fh = itertools.count(1)
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._cached = 0
        self._fetching: dict[tuple, trio.Event] = {}
        self.nursery: trio.Nursery | None = None
        self.bytes_read = 0  # all views together, for the worker's log
        self.requests = 0

    # -- nodes --

    def _node(self, inode: int) -> Node:
        node = self.table.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)  # a view that was dropped
        return node

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        if node.kind == stat.S_IFDIR:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o555, 2
        elif node.kind == stat.S_IFLNK:
            a.st_mode, a.st_nlink = stat.S_IFLNK | 0o777, 1
        else:
            a.st_mode, a.st_nlink = stat.S_IFREG | 0o444, 1
        size = len(node.target) if node.kind == stat.S_IFLNK else node.size
        a.st_size, a.st_blksize, a.st_blocks = size, self.block, (size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.mtime_ns
        a.st_uid, a.st_gid = self.uid, self.gid
        # The root and `current` change between units; a view never does.
        timeout = 0.0 if node.volatile else VIEW_TIMEOUT
        a.attr_timeout = a.entry_timeout = timeout
        return a

    @errno_boundary
    async def lookup(self, parent_inode, name, ctx=None):
        child = self._node(parent_inode).children.get(bytes(name))
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self._node(child))

    @errno_boundary
    async def getattr(self, inode, ctx=None):
        return self._attr(self._node(inode))

    @errno_boundary
    async def readlink(self, inode, ctx=None):
        node = self._node(inode)
        if node.kind != stat.S_IFLNK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.target

    @errno_boundary
    async def opendir(self, inode, ctx=None):
        if self._node(inode).kind != stat.S_IFDIR:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    @errno_boundary
    async def readdir(self, fh, start_id, token):
        node = self.table.nodes.get(fh)
        if node is None:
            return
        entries = sorted(node.children.items())
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            child = self.table.nodes.get(ino)
            if child is None:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attr(child), i + 1):
                return

    async def releasedir(self, fh):
        return None

    @errno_boundary
    async def open(self, inode, flags, ctx=None):
        node = self._node(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if node.kind != stat.S_IFREG:
            raise pyfuse3.FUSEError(errno.EISDIR if node.kind == stat.S_IFDIR else errno.EINVAL)
        fh = next(self._fh)
        self._handles[fh] = _Handle(node)
        # Its bytes never change (a new view has new inodes): keep the kernel's pages.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def release(self, fh):
        self._handles.pop(fh, None)

    async def forget(self, inode_list):
        return None  # nodes live as long as their table, not as long as the kernel's lookups

    @errno_boundary
    async def statfs(self, ctx=None):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = self.block
        s.f_namemax = 255
        return s

    # -- reading --

    @errno_boundary
    async def read(self, fh, off, size):
        h = self._handles.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        node = h.node
        t0 = time.monotonic()
        end = min(off + size, node.size)
        if off >= end:
            return b""
        # Read ahead only for a reader that streams: the kernel reads a little ahead
        # itself, and a datum reading 1 MiB somewhere must not cost much more.
        h.streamed = h.streamed + size if off == h.last_end else 0
        if h.streamed >= STREAM_MIN:
            h.ahead = min(max(1, h.ahead * 2), AHEAD_MAX)
        else:  # the next block only, while it may still be a short read: one round trip hidden
            h.ahead = 1 if h.streamed >= AHEAD_START else 0
        out = bytearray()
        pos = 0
        for repo, commit, src, p_off, p_len in node.pieces:
            lo, hi = max(off, pos), min(end, pos + p_len)
            if lo < hi:
                data = await self._source(node, (repo, commit, src), p_off + lo - pos, p_off + hi - pos,
                                          p_off + p_len, h.ahead)
                out += data
                if len(data) < hi - lo:
                    break  # the source is shorter than the task said: a short read, as at EOF
            pos += p_len
            if pos >= end:
                break
        h.last_end = off + len(out)
        if TRACE:
            _say(f"read {off} {size}: {(time.monotonic() - t0) * 1e3:.1f} ms")
        c = node.counters
        if c is not None and c.first_byte is None and out:
            c.first_byte = time.monotonic() - c.shown
        return bytes(out)

    async def _source(self, node: Node, src: tuple, a: int, b: int, limit: int, ahead: int) -> bytes:
        """Bytes [a, b) of a source file, by blocks (read ahead never past ``limit``, the end
        of the piece being read)."""
        first, last = a // self.block, (b - 1) // self.block
        needed = list(range(first, last + 1))
        missing = [i for i in needed if (*src, i) not in self._cache and (*src, i) not in self._fetching]
        if missing:
            await self._fetch(node, src, missing)
        if ahead and self.nursery is not None:
            end_block = (limit - 1) // self.block
            more = [i for i in range(last + 1, min(last + 1 + ahead, end_block + 1))
                    if (*src, i) not in self._cache and (*src, i) not in self._fetching]
            if more:
                self._reserve(src, more)
                self.nursery.start_soon(self._fetch_ahead, node, src, more)
        parts = []
        for i in needed:
            key = (*src, i)
            data = self._cache.get(key)
            if data is None:
                event = self._fetching.get(key)
                if event is not None:
                    await event.wait()
                data = self._cache.get(key)
                if data is None:
                    # its fetch ahead failed, or it was evicted before we took it: fetch it alone
                    await self._fetch(node, src, [i])
                    data = self._cache.get(key, b"")
            else:
                self._cache.move_to_end(key)
            lo = max(a - i * self.block, 0)
            hi = min(b - i * self.block, len(data))
            parts.append(data[lo:hi])
            if len(data) < self.block:
                break  # end of the source
        return b"".join(parts)

    def _reserve(self, src: tuple, blocks: list[int]) -> None:
        for i in blocks:
            self._fetching[(*src, i)] = trio.Event()

    async def _fetch(self, node: Node, src: tuple, blocks: list[int]) -> None:
        self._reserve(src, blocks)
        if not await self._fetch_reserved(node, src, blocks):
            raise pyfuse3.FUSEError(errno.EIO)

    async def _fetch_ahead(self, node: Node, src: tuple, blocks: list[int]) -> None:
        await self._fetch_reserved(node, src, blocks)  # a failure: the reader fetches it again

    async def _fetch_reserved(self, node: Node, src: tuple, blocks: list[int]) -> bool:
        """One request for ``blocks`` (a run of neighbours is one item); False (logged) if it failed."""
        runs: list[list[int]] = []
        for i in blocks:
            if runs and runs[-1][-1] + 1 == i:
                runs[-1].append(i)
            else:
                runs.append([i])
        repo, commit, path = src
        items = []
        for run in runs:
            # Whole blocks, whatever piece of the source asked: a block is the same for
            # every reader of the source (the daemon stops at its end).
            start = run[0] * self.block
            items.append({"repo": repo, "commit": commit, "path": path, "offset": start,
                          "length": len(run) * self.block})
        try:
            datas = await trio.to_thread.run_sync(self._read_sync, items)
        except Exception as exc:
            _say(f"cannot read {repo}@{commit}:{path} at offset {items[0]['offset']}: {exc}")
            return False
        else:
            got = sum(len(d) for d in datas)
            self.bytes_read += got
            self.requests += 1
            if node.counters is not None:
                node.counters.bytes += got
                node.counters.requests += 1
            for run, data in zip(runs, datas, strict=True):
                for k, i in enumerate(run):
                    self._put((*src, i), data[k * self.block : (k + 1) * self.block])
            return True
        finally:
            for i in blocks:
                event = self._fetching.pop((*src, i), None)
                if event is not None:
                    event.set()

    def _read_sync(self, items: list[dict]) -> list[bytes]:
        return [b"".join(chunks) for chunks in self.reader.read_batch(items)]

    def _put(self, key: tuple, data: bytes) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached -= len(old)
        self._cache[key] = data
        self._cached += len(data)
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= len(dropped)


# -- the mount -----------------------------------------------------------------------


class LazyMount:
    """The worker's one FUSE mount of lazy inputs (module doc)."""

    def __init__(self, reader: Reader, scratch: str, *, allow_other: bool, block: int = BLOCK,
                 cache_bytes: int = CACHE_BYTES):
        self.path = os.path.join(scratch, MOUNT_DIR)
        self.allow_other = allow_other
        self.ops = LazyOps(reader, block=block, cache_bytes=cache_bytes)
        self._views: dict[str, Node] = {}
        self._seq = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: str | None = None

    # -- life --

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Mount (in a thread of its own); ``LazyUnavailable`` says why it cannot."""
        why = unavailable()
        if why:
            raise LazyUnavailable(why)
        detach_under(self.path)
        os.makedirs(self.path, mode=0o755, exist_ok=True)
        self._thread = threading.Thread(target=self._main, name="lazy-pfs", daemon=True)
        self._thread.start()
        try:
            if not self._ready.wait(timeout):
                self._error = self._error or f"the FUSE mount at {self.path} did not start within {timeout:g} s"
        except BaseException:  # a signal stops the worker meanwhile: leave no mount behind
            self.close()
            raise
        if self._error:
            self.close()
            raise LazyUnavailable(self._error)

    def _main(self) -> None:
        options = {"fsname=pachy-lazy", "subtype=pachy-lazy", "ro", "default_permissions"}
        if self.allow_other:
            options.add("allow_other")  # user code runs as another uid than the worker
        try:
            pyfuse3.init(self.ops, self.path, options)
        except Exception as exc:
            self._error = f"cannot mount FUSE at {self.path}: {exc} (is fuse3 installed? apt-get install fuse3)"
            self._ready.set()
            return
        try:
            trio.run(self._serve)
        except BaseException as exc:  # the mount is gone: every read of it fails from now on
            _say(f"the FUSE loop stopped: {exc!r}")
        finally:
            with contextlib.suppress(Exception):
                pyfuse3.close(unmount=True)

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.ops.nursery = nursery
            self._ready.set()
            await pyfuse3.main(min_tasks=2, max_tasks=16)
            nursery.cancel_scope.cancel()

    def close(self) -> None:
        """Unmount and end the thread; what is still mounted is detached."""
        t, token = self._thread, self._token
        if t is not None and t.is_alive() and token is not None:
            with contextlib.suppress(Exception):
                trio.from_thread.run_sync(pyfuse3.terminate, trio_token=token)
            t.join(10.0)
        self._thread = self._token = None
        detach_under(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- views --

    def show(self, files: list[FileSpec], dirs: list[tuple[str, str]]) -> tuple[str, Counters]:
        """Add a unit's view and make it ``current``: (its directory, its counters)."""
        counters = Counters()
        top, nodes = build_view(files, dirs, counters)
        name = f"u{next(self._seq)}"
        self._views[name] = top
        # New inodes first: none can be looked up before the new root lists them.
        self.ops.table.nodes.update(nodes)
        self._publish(name)
        return os.path.join(self.path, name), counters

    def clear(self) -> None:
        """Drop every view (the task is done)."""
        self._views.clear()
        self.ops.table = Table({pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE, stat.S_IFDIR, volatile=True)})

    def _publish(self, current: str) -> None:
        """A new root listing the views, with ``current`` pointing at one: one assignment,
        so a handler sees the old root or this one (dicts are safe to grow under the GIL)."""
        nodes = self.ops.table.nodes
        root = Node(pyfuse3.ROOT_INODE, stat.S_IFDIR, volatile=True)
        for name, top in self._views.items():
            root.children[name.encode()] = top.inode
        link = Node(next(_inodes), stat.S_IFLNK, target=current.encode(), volatile=True)
        nodes[link.inode] = link
        root.children[CURRENT.encode()] = link.inode
        nodes[root.inode] = root


# -- availability and clean-up ------------------------------------------------------------


def unavailable() -> str | None:
    """Why this worker cannot serve a FUSE view (None: it can)."""
    return fuse_unavailable()
