"""Reading file contents for the mount: chunk by chunk, cached, read ahead.

A file is a list of chunks; a read at an offset finds its chunk by binary
search over the chunks' starting offsets, fetches it (in a worker thread:
range read, decompress, hash check) unless the bounded cache has it, and
starts fetching the next one so sequential readers rarely wait. Nothing ever
holds a whole file.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Callable

import trio

from pfsfuse.chunks import ChunkLocation, read_chunks
from pfsfuse.objstore import ObjectStore


class ChunkCache:
    """Decoded chunks by hash, at most ``max_bytes``; concurrent fetches of one
    chunk share a single read."""

    def __init__(self, store: ObjectStore, max_bytes: int = 64 << 20, threads: int = 4):
        self.store = store
        self.max_bytes = max_bytes
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[bytes, trio.Event] = {}
        self._errors: dict[bytes, BaseException] = {}
        self._limiter = trio.CapacityLimiter(threads)

    def peek(self, digest: bytes) -> bytes | None:
        data = self._data.get(digest)
        if data is not None:
            self._data.move_to_end(digest)
        return data

    async def get(self, loc: ChunkLocation) -> bytes:
        while True:
            data = self.peek(loc.hash)
            if data is not None:
                return data
            event = self._inflight.get(loc.hash)
            if event is None:
                break
            await event.wait()
            err = self._errors.pop(loc.hash, None)
            if err is not None:
                raise err
        event = self._inflight[loc.hash] = trio.Event()
        try:
            data = await trio.to_thread.run_sync(_fetch, self.store, loc, limiter=self._limiter)
        except BaseException as exc:
            self._errors[loc.hash] = exc
            raise
        finally:
            del self._inflight[loc.hash]
            event.set()
        self._put(loc.hash, data)
        return data

    def _put(self, digest: bytes, data: bytes) -> None:
        if digest in self._data:
            return
        self._data[digest] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes and len(self._data) > 1:
            _, old = self._data.popitem(last=False)
            self._bytes -= len(old)

    def prefetch(self, loc: ChunkLocation, spawn: Callable) -> None:
        if loc.hash in self._data or loc.hash in self._inflight:
            return

        async def fetch() -> None:
            try:
                await self.get(loc)
            except Exception:  # the reader will hit it again and report it
                self._errors.pop(loc.hash, None)

        spawn(fetch)


def _fetch(store: ObjectStore, loc: ChunkLocation) -> bytes:
    return next(read_chunks(store, [loc], verify=True))


class FileReader:
    """Random access to one file's bytes."""

    READ_AHEAD = 8  # chunks: enough in flight to keep the disk and both cores busy

    def __init__(self, cache: ChunkCache, locations: list[ChunkLocation], spawn: Callable):
        self.cache = cache
        self.locations = locations
        self.starts = list(itertools.accumulate((loc.size for loc in locations), initial=0))
        self.size = self.starts[-1]
        self._spawn = spawn

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes at ``offset``: a view into the cached chunk when one chunk
        covers the request (no copy), joined when it spans two."""
        if offset >= self.size or length <= 0:
            return b""
        end = min(offset + length, self.size)
        i = bisect.bisect_right(self.starts, offset) - 1
        parts = []
        pos = offset
        while pos < end:
            data = await self.cache.get(self.locations[i])
            lo = pos - self.starts[i]
            hi = min(end - self.starts[i], len(data))
            parts.append(memoryview(data)[lo:hi] if (lo, hi) != (0, len(data)) else data)
            pos = self.starts[i] + hi
            i += 1
        for j in range(i, min(i + self.READ_AHEAD, len(self.locations))):
            self.cache.prefetch(self.locations[j], self._spawn)
        return parts[0] if len(parts) == 1 else b"".join(parts)
