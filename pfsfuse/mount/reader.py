"""Reading file contents for the mount: chunk by chunk, cached, read ahead.

A file is a list of chunks; a read at an offset finds its chunk by binary
search over the chunks' starting offsets and takes it from a bounded cache.
A chunk not there is read in a worker thread together with the chunks that
follow it in the same pack (one disk read of up to ``RUN_BYTES``: this disk
gives 1.2 GB/s in 1 MiB reads and 2.2 GB/s in 4 MiB ones), straight into a
reused buffer with O_DIRECT where the filesystem allows, then hash checked
(and decompressed) chunk by chunk. Sequential readers keep ``READ_AHEAD``
bytes being fetched ahead of them. Nothing ever holds a whole file.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import mmap
import sys
from collections import OrderedDict
from collections.abc import Callable

import trio

from pfsfuse.chunks import CODEC_ZERO, ChunkLocation, read_run_into
from pfsfuse.objstore import ObjectStore
from pfsfuse.objstore.base import DIRECT_ALIGN

RUN_BYTES = 8 << 20  # one pack read: neighbouring chunks of a file come together
READ_AHEAD = 32 << 20  # fetched ahead of a sequential reader
JOIN_BYTES = 1 << 20  # the kernel's largest read request
NEAR = 16 << 20  # a read this close to the previous one is taken as sequential


def _address(view: mmap.mmap | memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class BufferPool:
    """Buffers of one size, used again and again: fresh memory costs a page
    fault per 4 KiB (about 1.7 GB/s here), more than the read it serves. A
    buffer handed out may be given back while a view of it still exists (a
    reply on its way to the kernel); it is not handed out again until then."""

    def __init__(self, size: int, max_idle: int):
        self.size, self.max_idle = size, max_idle
        self._free: list[mmap.mmap] = []
        self.made = 0  # buffers allocated: stays small when reuse works

    def take(self, length: int) -> mmap.mmap:
        if length <= self.size:
            for k in range(len(self._free)):
                if sys.getrefcount(self._free[k]) <= 2:  # the list and the call: no view left
                    return self._free.pop(k)
        else:
            length = -(-length // mmap.PAGESIZE) * mmap.PAGESIZE
        # Page aligned, as O_DIRECT wants; private, so not a shared-memory file.
        self.made += 1
        return mmap.mmap(-1, max(length, self.size), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def give(self, buf: mmap.mmap) -> None:
        if len(buf) == self.size and (len(self._free) + 1) * self.size <= self.max_idle:
            self._free.append(buf)


class _Slab:
    """A pooled buffer that cached chunks are views into; back to the pool
    when the last of them leaves the cache."""

    __slots__ = ("buf", "users")

    def __init__(self, buf: mmap.mmap, users: int):
        self.buf, self.users = buf, users


class _Fetch:
    """One run being read: waiters of any of its chunks wait on ``done``."""

    __slots__ = ("done", "errors")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.errors: dict[bytes, BaseException] = {}


class ChunkCache:
    """Plain chunks by hash, at most ``max_bytes`` (buffers counted whole);
    concurrent readers of one chunk share a single read."""

    def __init__(self, store: ObjectStore, max_bytes: int = 64 << 20, threads: int = 4):
        self.store = store
        self.max_bytes = max_bytes
        # hash -> (plain bytes, the slab they are a view of or None, where in it)
        self._data: OrderedDict[bytes, tuple[bytes | memoryview, _Slab | None, int]] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[bytes, _Fetch] = {}
        self._limiter = trio.CapacityLimiter(threads)
        self.pool = BufferPool(RUN_BYTES + 2 * DIRECT_ALIGN, max_idle=2 * (RUN_BYTES + 2 * DIRECT_ALIGN))
        self.joins = BufferPool(JOIN_BYTES, max_idle=4 * JOIN_BYTES)

    def peek(self, digest: bytes) -> bytes | memoryview | None:
        entry = self._data.get(digest)
        if entry is None:
            return None
        self._data.move_to_end(digest)
        return entry[0]

    def consumed(self, digest: bytes) -> None:
        """A sequential reader is past this chunk: first to go (the kernel's
        page cache has its bytes now), before chunks read ahead and not yet used."""
        if digest in self._data:
            self._data.move_to_end(digest, last=False)

    def wanted(self, digest: bytes) -> bool:
        return digest not in self._data and digest not in self._inflight

    async def get(self, locations: list[ChunkLocation], i: int, alone: bool = False) -> bytes | memoryview:
        """Chunk ``i`` of a file; when not cached, read together with its run
        (``alone``: by itself, for a reader jumping around the file)."""
        digest = locations[i].hash
        while True:
            data = self.peek(digest)
            if data is not None:
                return data
            fetch = self._inflight.get(digest)
            if fetch is None:
                run = [locations[i]] if alone else self.run(locations, i)
                fetch = self._claim(run)
                await self._fetch(run, fetch)
            else:
                await fetch.done.wait()
            err = fetch.errors.get(digest)
            if err is not None:
                raise err

    def run(self, locations: list[ChunkLocation], i: int) -> list[ChunkLocation]:
        """Chunk ``i`` and the chunks after it stored right behind it in its pack."""
        first = locations[i]
        out, seen, end, plain = [first], {first.hash}, first.offset + first.stored, first.size
        for loc in itertools.islice(locations, i + 1, None):
            # RUN_BYTES bounds the plain bytes too: a compressed run must not
            # swamp the cache when it is unpacked.
            if (loc.pack != first.pack or loc.offset != end or plain + loc.size > RUN_BYTES
                    or loc.hash in seen or not self.wanted(loc.hash)):  # fmt: skip
                break
            out.append(loc)
            seen.add(loc.hash)
            end += loc.stored
            plain += loc.size
        return out

    def _claim(self, run: list[ChunkLocation]) -> _Fetch:
        """Mark a run as being read (before any checkpoint, so nobody reads it twice)."""
        fetch = _Fetch()
        for loc in run:
            self._inflight[loc.hash] = fetch
        return fetch

    async def _fetch(self, run: list[ChunkLocation], fetch: _Fetch) -> None:
        span = run[-1].offset + run[-1].stored - run[0].offset
        # Room first, so that the buffer is one the cache just let go of (a
        # fresh one costs a page fault per 4 KiB), and in-flight reads count.
        self._evict(extra=max(span, self.pool.size))
        buf = self.pool.take(span)
        self._bytes += len(buf)
        try:
            results = await trio.to_thread.run_sync(read_run_into, self.store, run, buf, limiter=self._limiter)
        except BaseException as exc:
            self._bytes -= len(buf)
            self.pool.give(buf)
            fetch.errors = {loc.hash: exc for loc in run}
            raise
        finally:
            for loc in run:
                del self._inflight[loc.hash]
            fetch.done.set()
        slab = _Slab(buf, 1)  # held by this frame until every view is in
        base = _address(buf)
        for loc, data in zip(run, results, strict=True):
            if isinstance(data, BaseException):
                fetch.errors[loc.hash] = data
                continue
            if isinstance(data, memoryview) and data.obj is buf:
                if span > RUN_BYTES // 2:
                    slab.users += 1
                    self._put(loc.hash, data, slab, _address(data) - base)
                    continue
                data = bytes(data)  # a small run: not worth pinning a whole buffer
            self._put(loc.hash, data, None, -1)
        self._release(slab)
        self._evict()

    def _put(self, digest: bytes, data: bytes | memoryview, slab: _Slab | None, pos: int) -> None:
        if digest in self._data:
            if slab is not None:
                slab.users -= 1
            return
        self._data[digest] = (data, slab, pos)
        if slab is None:
            self._bytes += len(data)

    def contiguous(self, digests: list[bytes], lo: int, length: int) -> memoryview | None:
        """``length`` bytes from ``lo`` into the first of these chunks, as one
        view, when they sit back to back in one buffer (chunks of a run do)."""
        first = self._data.get(digests[0])
        if first is None or first[1] is None:
            return None
        _, slab, pos = first
        at = pos
        for digest in digests:
            entry = self._data.get(digest)
            if entry is None or entry[1] is not slab or entry[2] != at:
                return None
            at += len(entry[0])
        return memoryview(slab.buf)[pos + lo : pos + lo + length]

    def _release(self, slab: _Slab) -> None:
        slab.users -= 1
        if slab.users == 0:
            self._bytes -= len(slab.buf)
            self.pool.give(slab.buf)

    def _evict(self, extra: int = 0) -> None:
        while self._bytes + extra > self.max_bytes and self._data:
            _, (old, slab, _) = self._data.popitem(last=False)
            if slab is None:
                self._bytes -= len(old)
            else:
                del old
                self._release(slab)

    def prefetch(self, locations: list[ChunkLocation], i: int, spawn: Callable) -> int:
        """Start reading the run at chunk ``i`` unless cached or coming;
        returns the index after the run."""
        if locations[i].codec == CODEC_ZERO or not self.wanted(locations[i].hash):
            return i + 1
        run = self.run(locations, i)
        claim = self._claim(run)

        async def fetch() -> None:
            try:
                await self._fetch(run, claim)
            except Exception:  # a reader of these chunks gets the error from the claim
                pass

        spawn(fetch)
        return i + len(run)


class FileReader:
    """Random access to one file's bytes; sequential readers are read ahead of."""

    def __init__(self, cache: ChunkCache, locations: list[ChunkLocation], spawn: Callable):
        self.cache = cache
        self.locations = locations
        self.starts = list(itertools.accumulate((loc.size for loc in locations), initial=0))
        self.size = self.starts[-1]
        self._spawn = spawn
        self._last_end = 0  # a first read at the start counts as sequential

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes at ``offset``: a view into the cached chunk when one chunk
        covers the request (no copy), joined when it spans two."""
        if offset >= self.size or length <= 0:
            return b""
        end = min(offset + length, self.size)
        # The kernel's read-ahead has several requests in flight, so "next to
        # the last one" rather than "right after it".
        sequential = abs(offset - self._last_end) <= NEAR
        self._last_end = end
        i = bisect.bisect_right(self.starts, offset) - 1
        parts, digests = [], []
        pos = offset
        while pos < end:
            lo = pos - self.starts[i]
            if self.locations[i].codec == CODEC_ZERO:  # a hole: only the zeros asked for
                hi = min(end, self.starts[i + 1]) - self.starts[i]
                parts.append(bytes(hi - lo))
                digests.append(b"")  # in no cache
                pos = self.starts[i] + hi
                i += 1
                continue
            data = await self.cache.get(self.locations, i, alone=not sequential)
            hi = min(end - self.starts[i], len(data))
            parts.append(memoryview(data)[lo:hi] if (lo, hi) != (0, len(data)) else data)
            digests.append(self.locations[i].hash)
            pos = self.starts[i] + hi
            i += 1
        if sequential:
            for digest in digests[:-1] if pos < self.starts[i] else digests:
                self.cache.consumed(digest)
            self._read_ahead(i)
        if len(parts) == 1:
            return parts[0]
        whole = self.cache.contiguous(digests, offset - self.starts[i - len(parts)], end - offset)
        if whole is not None:
            return whole
        out = self.cache.joins.take(end - offset)
        at = 0
        for part in parts:
            out[at : at + len(part)] = part
            at += len(part)
        view = memoryview(out)[:at]
        self.cache.joins.give(out)  # free again once the reply has dropped the view
        return view

    def _read_ahead(self, i: int) -> None:
        if i >= len(self.locations):
            return
        # Never more than half the cache ahead: what is fetched must still be
        # there when the reader gets to it.
        ahead = min(READ_AHEAD, self.cache.max_bytes // 2)
        stop = min(bisect.bisect_left(self.starts, self.starts[i] + ahead, lo=i), len(self.locations))
        while i < stop:
            i = self.cache.prefetch(self.locations, i, self._spawn)
