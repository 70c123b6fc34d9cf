"""Reading file contents for the mount: chunk by chunk, cached, read ahead.

A file is a list of chunks; a read at an offset finds its chunk by binary
search over the chunks' starting offsets and takes it from a bounded cache.
A chunk not there is read in a worker thread together with the chunks that
follow it in the same pack (one disk read of up to ``RUN_BYTES``: this disk
gives 1.2 GB/s in 1 MiB reads and 2.2 GB/s in 4 MiB ones), straight into a
reused buffer with O_DIRECT where the filesystem allows, then hash checked
(and decompressed) chunk by chunk. Sequential readers keep ``READ_AHEAD``
bytes being fetched ahead of them, within the cache's bound: what was
fetched for a reader stays until it has read it (read-ahead waits for room
rather than evict it), and every chunk is read from the store once however
the reads and fetches interleave. Nothing ever holds a whole file.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import mmap
import sys
import weakref
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
# A sequential reader's chunks are kept until it is this far past them: the
# kernel's reads come in parallel and may be handled out of order.
BEHIND = 4 * JOIN_BYTES


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

    def length(self, length: int) -> int:
        """How long a buffer ``take(length)`` hands out is."""
        return self.size if length <= self.size else -(-length // mmap.PAGESIZE) * mmap.PAGESIZE

    def give(self, buf: mmap.mmap) -> None:
        if len(buf) == self.size and (len(self._free) + 1) * self.size <= self.max_idle:
            self._free.append(buf)


class _Slab:
    """A pooled buffer that cached chunks are views into; back to the pool
    when the last of them leaves the cache. ``unread``: how many of them a
    reader has yet to read (see ``_Ahead``)."""

    __slots__ = ("buf", "users", "unread")

    def __init__(self, buf: mmap.mmap, users: int):
        self.buf, self.users, self.unread = buf, users, 0


class _Ahead:
    """The cached chunks one sequential reader is still to read: fetched for
    it (read ahead, or the rest of a run it needed) and not yet passed, and
    the one it is in the middle of. Dropping one of them only means reading it
    again a moment later, so room for new read-ahead is never made by evicting
    them: read-ahead waits instead. ``epoch`` moves on when the reader gives
    them up (it jumped elsewhere, or is gone); fetches started before that
    keep nothing for it."""

    __slots__ = ("digests", "epoch")

    def __init__(self) -> None:
        self.digests: set[bytes] = set()
        self.epoch = 0


class _Fetch:
    """One run being read: waiters of any of its chunks wait on ``done``,
    then take their chunk from ``results`` (or its error from ``errors``);
    neither holds it when the read was cancelled: a waiter then reads it."""

    __slots__ = ("done", "errors", "results", "ahead", "epoch")

    def __init__(self, ahead: _Ahead | None) -> None:
        self.done = trio.Event()
        self.errors: dict[bytes, BaseException] = {}
        self.results: dict[bytes, bytes | memoryview] = {}
        self.ahead, self.epoch = ahead, ahead.epoch if ahead is not None else 0


def _span(run: list[ChunkLocation]) -> int:
    """Bytes of the pack one read of ``run`` covers."""
    return run[-1].offset + run[-1].stored - run[0].offset


class ChunkCache:
    """Plain chunks by hash, at most ``max_bytes`` (buffers counted whole,
    runs being read included); concurrent readers of one chunk share a single
    read. Chunks fetched for a reader and not read by it yet are evicted only
    to make room for a chunk some reader is waiting for, never for read-ahead:
    read-ahead stops while the cache is full of them."""

    def __init__(self, store: ObjectStore, max_bytes: int = 64 << 20, threads: int = 4):
        self.store = store
        self.max_bytes = max_bytes
        # hash -> (plain bytes, the slab they are a view of or None, where in it)
        self._data: OrderedDict[bytes, tuple[bytes | memoryview, _Slab | None, int]] = OrderedDict()
        self._bytes = 0
        self._loading = 0  # of _bytes: buffers of runs being read
        self._unread: dict[bytes, set[_Ahead]] = {}  # cached chunks readers are still to read
        self._pinned = 0  # of _bytes: what holds them (a slab counted whole)
        self._inflight: dict[bytes, _Fetch] = {}
        self._landed = trio.Event()  # set (and replaced) each time a run being read lands
        self._needy = 0  # readers waiting for room to read a chunk they want now
        self._limiter = trio.CapacityLimiter(threads)
        self.pool = BufferPool(RUN_BYTES + 2 * DIRECT_ALIGN, max_idle=2 * (RUN_BYTES + 2 * DIRECT_ALIGN))
        self.joins = BufferPool(JOIN_BYTES, max_idle=4 * JOIN_BYTES)

    def peek(self, digest: bytes) -> bytes | memoryview | None:
        entry = self._data.get(digest)
        if entry is None:
            return None
        self._data.move_to_end(digest)
        return entry[0]

    def consumed(self, digest: bytes, reader: _Ahead | None = None) -> None:
        """A sequential reader is past this chunk: first to go (the kernel's
        page cache has its bytes now), before chunks read ahead and not yet used."""
        if digest in self._data:
            self._data.move_to_end(digest, last=False)
            if reader is not None:
                self._unpin(digest, reader)

    def reading(self, digest: bytes, reader: _Ahead) -> None:
        """A sequential reader is in the middle of this chunk: kept for it."""
        self._pin(digest, reader)

    def wanted(self, digest: bytes) -> bool:
        return digest not in self._data and digest not in self._inflight

    def forget(self, reader: _Ahead) -> None:
        """``reader`` will not read what was fetched for it: ordinary cached
        chunks now, and runs still being read for it keep nothing for it."""
        for digest in list(reader.digests):
            self._unpin(digest, reader)
        reader.epoch += 1

    async def get(
        self, locations: list[ChunkLocation], i: int, alone: bool = False, reader: _Ahead | None = None
    ) -> bytes | memoryview:
        """Chunk ``i`` of a file; when not cached, read together with its run
        (``alone``: by itself, for a reader jumping around the file), what is
        read kept for ``reader`` until it says it is past it (``consumed``)."""
        digest = locations[i].hash
        while True:
            data = self.peek(digest)
            if data is not None:
                return data
            fetch = self._inflight.get(digest)
            if fetch is None:
                run = [locations[i]] if alone else self.run(locations, i)
                started = self._start(run, reader, demand=True)
                if started is None:  # all the room is in runs being read: wait for one
                    landed = self._landed
                    self._needy += 1
                    try:
                        await landed.wait()
                    finally:
                        self._needy -= 1
                    continue
                fetch, buf = started
                await self._fetch(run, fetch, buf)
            else:
                await fetch.done.wait()
            err = fetch.errors.get(digest)
            if err is not None:
                raise err
            # From the fetch itself, not the cache: whatever the cache has
            # dropped since, this read has been made for us and is not made again.
            data = fetch.results.get(digest)
            if data is not None:
                return data
            # The read was cancelled before it was made (its task was): make it.

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

    def _start(self, run: list[ChunkLocation], reader: _Ahead | None, demand: bool) -> tuple[_Fetch, mmap.mmap] | None:
        """Room and a buffer for a run, and the run marked as being read, all
        before any checkpoint (so nobody reads it twice, and the next run
        started before this one's task runs sees its buffer counted); None
        when there is no room. Read-ahead (not ``demand``) gets room only from
        chunks nobody is still to read, and none while a reader waits for room;
        a reader waiting for a chunk may have any cached chunk's room, but not
        that of runs being read (unless nothing is)."""
        span = _span(run)
        need = self.pool.length(span)
        if demand:
            if self._loading and self._loading + need > self.max_bytes:
                return None
        elif self._needy or self._loading + self._pinned + need > self.max_bytes:
            return None
        # Room first, so that the buffer is one the cache just let go of (a
        # fresh one costs a page fault per 4 KiB).
        self._evict(extra=need, spare=not demand)
        buf = self.pool.take(span)
        self._bytes += len(buf)
        self._loading += len(buf)
        fetch = _Fetch(reader)
        for loc in run:
            self._inflight[loc.hash] = fetch
        return fetch, buf

    async def _fetch(self, run: list[ChunkLocation], fetch: _Fetch, buf: mmap.mmap) -> None:
        try:
            try:
                results = await trio.to_thread.run_sync(read_run_into, self.store, run, buf, limiter=self._limiter)
            finally:
                self._loading -= len(buf)
        except BaseException as exc:
            self._bytes -= len(buf)
            self.pool.give(buf)
            if isinstance(exc, Exception):  # not a cancellation: the waiters' error too
                fetch.errors.update((loc.hash, exc) for loc in run)
            raise
        else:
            self._keep(run, fetch, buf, results)
        finally:
            self._land(run, fetch)

    def _land(self, run: list[ChunkLocation], fetch: _Fetch) -> None:
        """A run is no longer being read: wake its waiters, and readers waiting for room."""
        for loc in run:
            del self._inflight[loc.hash]
        fetch.done.set()
        self._landed.set()
        self._landed = trio.Event()

    def _keep(self, run: list[ChunkLocation], fetch: _Fetch, buf: mmap.mmap, results: list) -> None:
        """A run just read: its chunks into the cache (views of ``buf`` when
        the run is large), kept for the reader it was read for."""
        span = _span(run)
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
                    fetch.results[loc.hash] = data
                    continue
                data = bytes(data)  # a small run: not worth pinning a whole buffer
            self._put(loc.hash, data, None, -1)
            fetch.results[loc.hash] = data
        ahead = fetch.ahead
        if ahead is not None and ahead.epoch == fetch.epoch:
            for digest in fetch.results:
                self._pin(digest, ahead)
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

    def _pin(self, digest: bytes, reader: _Ahead) -> None:
        """``reader`` is still to read this cached chunk."""
        readers = self._unread.get(digest)
        if readers is None:
            entry = self._data.get(digest)
            if entry is None:
                return
            readers = self._unread[digest] = set()
            data, slab, _ = entry
            if slab is None:
                self._pinned += len(data)
            else:
                slab.unread += 1
                if slab.unread == 1:
                    self._pinned += len(slab.buf)
        readers.add(reader)
        reader.digests.add(digest)

    def _unpin(self, digest: bytes, reader: _Ahead | None = None) -> None:
        """``reader`` (None: every reader) is no longer to read this chunk."""
        readers = self._unread.get(digest)
        if readers is None:
            return
        for gone in list(readers) if reader is None else [reader]:
            readers.discard(gone)
            gone.digests.discard(digest)
        if readers:
            return
        del self._unread[digest]
        data, slab, _ = self._data[digest]
        if slab is None:
            self._pinned -= len(data)
        else:
            slab.unread -= 1
            if slab.unread == 0:
                self._pinned -= len(slab.buf)

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

    def _evict(self, extra: int = 0, spare: bool = True) -> None:
        """Down to ``max_bytes`` less ``extra``, least recently used first,
        sparing chunks a reader has yet to read (and buffers they hold) unless
        ``spare`` is false and nothing else is left (then the oldest go first:
        those of a reader gone idle, before the one a reader is in). Runs
        being read stay."""
        self._evict_pass(extra, spare=True)
        if not spare:
            self._evict_pass(extra, spare=False)

    def _evict_pass(self, extra: int, spare: bool) -> None:
        over = self._bytes + extra - self.max_bytes
        if over <= 0:
            return
        victims, leaving = [], {}  # leaving: id(slab) -> its chunks among the victims
        for digest, (data, slab, _) in self._data.items():
            if over <= 0:
                break
            if spare and (digest in self._unread or (slab is not None and slab.unread)):
                continue
            victims.append(digest)
            if slab is None:
                over -= len(data)
            else:
                leaving[id(slab)] = gone = leaving.get(id(slab), 0) + 1
                if gone == slab.users:
                    over -= len(slab.buf)
        for digest in victims:
            self._unpin(digest)
            old, slab, _ = self._data.pop(digest)
            if slab is None:
                self._bytes -= len(old)
            else:
                del old
                self._release(slab)

    def prefetch(
        self, locations: list[ChunkLocation], i: int, spawn: Callable, reader: _Ahead | None = None
    ) -> int | None:
        """Start reading the run at chunk ``i`` for ``reader`` unless cached or
        coming; returns the index after the run, or None when the cache has no
        room for it but what readers are still to read (read no further ahead now)."""
        if locations[i].codec == CODEC_ZERO or not self.wanted(locations[i].hash):
            return i + 1
        run = self.run(locations, i)
        started = self._start(run, reader, demand=False)
        if started is None:
            return None
        fetch, buf = started

        async def read() -> None:
            try:
                await self._fetch(run, fetch, buf)
            except Exception:  # a reader of these chunks gets the error from the fetch
                pass

        try:
            spawn(read)
        except BaseException:  # never started: nobody may wait on it
            self._loading -= len(buf)
            self._bytes -= len(buf)
            self.pool.give(buf)
            self._land(run, fetch)
            raise
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
        self._ahead = _Ahead()  # what the cache keeps for this reader
        weakref.finalize(self, cache.forget, self._ahead)
        # Where sequential reading has got to: the kernel has several reads in
        # flight and they end in any order, so a chunk is passed only when
        # behind all of them.
        self._active: list[int] = []  # offsets of the sequential reads in progress
        self._high = 0  # the furthest end of a sequential read
        self._passed = 0  # the chunks before this one are passed

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
        first = i = bisect.bisect_right(self.starts, offset) - 1
        if sequential:
            self._active.append(offset)
        else:  # what was read ahead of the old place is nothing special now
            self.cache.forget(self._ahead)
            self._high, self._passed = end, first
        parts, digests = [], []
        pos = offset
        try:
            while pos < end:
                lo = pos - self.starts[i]
                if self.locations[i].codec == CODEC_ZERO:  # a hole: only the zeros asked for
                    hi = min(end, self.starts[i + 1]) - self.starts[i]
                    parts.append(bytes(hi - lo))
                    digests.append(b"")  # in no cache
                    pos = self.starts[i] + hi
                    i += 1
                    continue
                reader = self._ahead if sequential else None
                data = await self.cache.get(self.locations, i, not sequential, reader)
                hi = min(end - self.starts[i], len(data))
                parts.append(memoryview(data)[lo:hi] if (lo, hi) != (0, len(data)) else data)
                digests.append(self.locations[i].hash)
                pos = self.starts[i] + hi
                i += 1
        finally:
            if sequential:
                self._active.remove(offset)
        # The reply before any read-ahead: that may evict the chunks just read.
        out = self._join(parts, digests, offset - self.starts[first], end - offset)
        if sequential:
            self._high = max(self._high, end)
            self._pass(first, i)
            self._read_ahead(i)
        return out

    def _pass(self, first: int, last: int) -> None:
        """After a sequential read of chunks ``first`` to ``last - 1``: the
        chunks behind every sequential read still in progress are passed (the
        kernel's page cache has their bytes); those just read and not passed
        are kept for the reads to come."""
        low = min(self._active, default=self._high) - BEHIND  # reads in progress start below _high
        passed = bisect.bisect_right(self.starts, low) - 1  # chunks before it end by ``low``
        behind = range(first, min(last, self._passed))  # read again, after a step back
        for k in itertools.chain(range(self._passed, passed), behind):
            self.cache.consumed(self.locations[k].hash, self._ahead)
        for k in range(max(first, passed), last):
            self.cache.reading(self.locations[k].hash, self._ahead)
        self._passed = max(self._passed, passed)

    def _join(self, parts: list, digests: list[bytes], lo: int, length: int) -> bytes | memoryview:
        if len(parts) == 1:
            return parts[0]
        whole = self.cache.contiguous(digests, lo, length)
        if whole is not None:
            return whole
        out = self.cache.joins.take(length)
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
        # Never more than half the cache ahead; and nothing fetched ahead is
        # evicted before it is read: read-ahead stops short instead.
        ahead = min(READ_AHEAD, self.cache.max_bytes // 2)
        stop = min(bisect.bisect_left(self.starts, self.starts[i] + ahead, lo=i), len(self.locations))
        while i is not None and i < stop:
            i = self.cache.prefetch(self.locations, i, self._spawn, self._ahead)
