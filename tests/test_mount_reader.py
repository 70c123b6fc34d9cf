"""The mount's read path without a mount: runs of chunks read together, the
bounded cache, buffer reuse, damaged chunks, random versus sequential readers."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from pfsfuse.chunks import CODEC_PLAIN, ChunkLocation, chunk_hash
from pfsfuse.errors import Damaged
from pfsfuse.mount import reader as reader_module
from pfsfuse.mount.reader import RUN_BYTES, BufferPool, ChunkCache, FileReader
from pfsfuse.pfs import PFS

MiB = 1 << 20


class CountingStore:
    """Wraps a store and records every range read (key, offset, length)."""

    def __init__(self, store):
        self.store, self.reads = store, []

    def read_into(self, key, offset, length, buf):
        self.reads.append((key, offset, length))
        return self.store.read_into(key, offset, length, buf)

    def __getattr__(self, name):
        return getattr(self.store, name)


def put_file(pfs: PFS, data: bytes, name: str = "f") -> list[ChunkLocation]:
    if "r" not in {r.name for r in pfs.list_repos()}:
        pfs.create_repo("r")
    c = pfs.start_commit("r", "master")
    with pfs.write_session("r", c.id) as s:
        s.put_bytes(name, data)
        s.commit()
    pfs.finish_commit("r", c.id)
    row = pfs.resolve("r", "master")
    return pfs.locate(pfs.load_refs(pfs.lookup_row(row, name)))


def read_all(cache: ChunkCache, locations, size: int, step: int = MiB, order=None) -> bytes:
    out = bytearray(size)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            f = FileReader(cache, locations, nursery.start_soon)
            for off in order if order is not None else range(0, size, step):
                got = await f.read(off, step)
                out[off : off + len(got)] = got
                cache_bytes.append(cache._bytes)

    cache_bytes: list[int] = []
    trio.run(main)
    read_all.cache_bytes = cache_bytes
    return bytes(out)


def random_bytes(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_sequential_read_comes_back_identical_in_few_large_pack_reads(pfs: PFS) -> None:
    data = random_bytes(40 * MiB)
    locations = put_file(pfs, data)
    store = CountingStore(pfs.store)
    cache = ChunkCache(store, max_bytes=32 * MiB)
    assert read_all(cache, locations, len(data)) == data
    # Neighbouring chunks come in one read: far fewer reads than chunks, none over a run.
    assert len(store.reads) < len(locations) / 2
    assert max(length for _, _, length in store.reads) <= RUN_BYTES
    # Every byte read once: read-ahead never fetched a chunk twice.
    assert sum(length for _, _, length in store.reads) == sum(loc.stored for loc in locations)
    # The cache stays within its bound, runs being read included.
    assert max(read_all.cache_bytes) <= 32 * MiB
    # Run buffers are reused: about a cache's worth plus those in flight, not one per run.
    assert cache.pool.made <= 32 * MiB // RUN_BYTES + 4 + 2 < len(store.reads) + 6


def test_random_reads_fetch_single_chunks_and_read_no_further(pfs: PFS) -> None:
    data = random_bytes(48 * MiB, seed=2)
    locations = put_file(pfs, data)
    store = CountingStore(pfs.store)
    cache = ChunkCache(store, max_bytes=64 * MiB)
    rng = random.Random(3)
    offsets = [rng.randrange(20 * MiB, len(data) - 4096) for _ in range(4)]
    offsets.sort(key=lambda o: -o)  # far apart, backwards
    offsets = [o for i, o in enumerate(offsets) if i == 0 or offsets[i - 1] - o > 17 * MiB] or offsets[:1]

    out = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            f = FileReader(cache, locations, nursery.start_soon)
            for off in offsets:
                out[off] = bytes(await f.read(off, 4096))

    trio.run(main)
    for off, got in out.items():
        assert got == data[off : off + 4096]
    # Each jump read the one chunk it needed (at most two, across a boundary).
    assert len(store.reads) <= 2 * len(offsets)
    assert all(length <= 4 * MiB for _, _, length in store.reads)


def test_a_damaged_chunk_fails_only_its_readers(pfs: PFS) -> None:
    data = random_bytes(12 * MiB, seed=4)
    locations = put_file(pfs, data)
    assert len(locations) >= 3
    bad = locations[1]
    path = Path(pfs.store.root) / bad.pack
    with open(path, "r+b") as f:  # flip one byte inside the second chunk
        f.seek(bad.offset + 10)
        byte = f.read(1)
        f.seek(bad.offset + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.posix_fadvise(os.open(path, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
    cache = ChunkCache(pfs.store)
    starts = [0]
    for loc in locations:
        starts.append(starts[-1] + loc.size)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            f = FileReader(cache, locations, nursery.start_soon)
            # The first chunk is fine, though its run holds the damaged one.
            assert bytes(await f.read(0, 4096)) == data[:4096]
            with pytest.raises(Damaged, match="does not match its hash"):
                await f.read(starts[1] + 5, 100)
            assert bytes(await f.read(starts[2], 100)) == data[starts[2] : starts[2] + 100]
            # Asked again, it is read again (and still damaged): no stale success, no hang.
            with pytest.raises(Damaged):
                await f.read(starts[1], 10)

    trio.run(main)


def test_missing_pack_is_reported_to_every_waiter(pfs: PFS) -> None:
    data = random_bytes(6 * MiB, seed=5)
    locations = put_file(pfs, data)
    os.unlink(Path(pfs.store.root) / locations[0].pack)
    cache = ChunkCache(pfs.store)
    errors = []

    async def main() -> None:
        with trio.fail_after(10):
            await readers()

    async def readers() -> None:
        async with trio.open_nursery() as nursery:
            f = FileReader(cache, locations, nursery.start_soon)

            async def one(off: int) -> None:
                try:
                    await f.read(off, 4096)
                except Exception as exc:  # noqa: BLE001 - collected and checked below
                    errors.append(type(exc).__name__)

            for off in (0, 4096, 8192):
                nursery.start_soon(one, off)

    trio.run(main)
    assert errors == ["ObjectMissing"] * 3


def test_buffer_pool_never_hands_out_a_buffer_still_viewed() -> None:
    pool = BufferPool(MiB, max_idle=4 * MiB)
    a = pool.take(1000)
    a_id = id(a)
    view = memoryview(a)[:10]
    pool.give(a)
    del a
    b = pool.take(1000)
    assert id(b) != a_id  # a reply still holds a view of the first buffer
    pool.give(b)
    del b, view
    assert id(pool.take(1000)) == a_id  # free again once the view is gone
    big = pool.take(3 * MiB)  # bigger than the pool's size: a one-off
    assert len(big) >= 3 * MiB
    pool.give(big)
    assert all(len(buf) == MiB for buf in pool._free)


def test_small_files_do_not_pin_whole_run_buffers(pfs: PFS) -> None:
    cache = ChunkCache(pfs.store, max_bytes=16 * MiB)
    files = [(random_bytes(3000, seed=i), f"s{i}") for i in range(50)]
    locs = [put_file(pfs, body, name) for body, name in files]
    for (body, _), loc in zip(files, locs, strict=True):
        assert read_all(cache, loc, len(body), step=4096) == body
    # 50 small chunks cached by their size, not 50 run buffers.
    assert cache._bytes < MiB
    assert len(cache._data) == 50


def test_read_ahead_is_bounded(pfs: PFS, monkeypatch) -> None:
    monkeypatch.setattr(reader_module, "READ_AHEAD", 8 * MiB)
    data = random_bytes(40 * MiB, seed=6)
    locations = put_file(pfs, data)
    store = CountingStore(pfs.store)
    cache = ChunkCache(store, max_bytes=64 * MiB)
    read_all(cache, locations, 2 * MiB, order=[0, MiB])
    fetched = sum(length for _, _, length in store.reads)
    # Two 1 MiB reads at the start: what they need plus about READ_AHEAD, not the file.
    assert fetched <= 2 * MiB + 8 * MiB + 2 * RUN_BYTES


DEADLINE = 10  # seconds: what a test waits for at most before it fails


class GatedStore:
    """Packs in memory whose reads wait, in their worker thread, while the
    test holds the pack: runs land in the order the test chooses. Records
    every range read, and the cache's size whenever a read starts."""

    def __init__(self, packs: dict[str, bytes]):
        self.packs, self.reads, self.sizes = packs, [], []
        self.cache: ChunkCache | None = None
        self._held: set[str] = set()
        self._cond = threading.Condition()

    def hold(self, *keys: str) -> None:
        with self._cond:
            self._held.update(keys)

    def release(self) -> None:
        with self._cond:
            self._held.clear()
            self._cond.notify_all()

    def read_into(self, key, offset, length, buf):
        with self._cond:
            self.reads.append((key, offset, length))
            if self.cache is not None:
                self.sizes.append(self.cache._bytes)
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: key not in self._held, DEADLINE), f"{key} held too long"
        buf[:length] = self.packs[key][offset : offset + length]
        return memoryview(buf)[:length]

    def wait_for_reads(self, *keys: str) -> None:
        """Until a read of each pack has started (from a thread: it blocks)."""
        with self._cond:
            started = lambda: set(keys) <= {key for key, _, _ in self.reads}  # noqa: E731
            assert self._cond.wait_for(started, DEADLINE), f"no read of {keys}"


def packed_file(layout: list[list[int]], seed: int) -> tuple[GatedStore, list[ChunkLocation], bytes]:
    """A file of random chunks stored plain, back to back, in packs p0, p1, ...:
    ``layout[k]`` lists pack k's chunk sizes."""
    rng = random.Random(seed)
    packs, locations, data = {}, [], bytearray()
    for k, sizes in enumerate(layout):
        key, body = f"p{k}", bytearray()
        for size in sizes:
            chunk = rng.randbytes(size)
            locations.append(ChunkLocation(chunk_hash(chunk), key, len(body), size, size, CODEC_PLAIN))
            body += chunk
            data += chunk
        packs[key] = bytes(body)
    store = GatedStore(packs)
    return store, locations, bytes(data)


def test_runs_read_ahead_and_not_yet_read_are_not_evicted_for_more_read_ahead() -> None:
    # Runs of 8 chunks, each its own pack, but for a one-chunk run (p2) that
    # takes a whole run buffer while it is read. Under load the runs read
    # ahead land out of order: here p1 and p2 are held while the reader goes
    # on. The cache then holds the first run (mostly unread) and two runs
    # being read, and has no room for a fourth: read-ahead must wait rather
    # than evict the first run's unread chunks (which the reader would fetch
    # again a moment later).
    store, locations, data = packed_file([[MiB] * 8, [MiB] * 8, [MiB], [MiB] * 8, [MiB] * 8, [MiB] * 7], seed=7)
    cache = store.cache = ChunkCache(store, max_bytes=32 * MiB)
    out = bytearray(len(data))

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                f = FileReader(cache, locations, nursery.start_soon)
                store.hold("p1", "p2")
                try:
                    for off in range(0, len(data), MiB):
                        got = await f.read(off, MiB)
                        out[off : off + len(got)] = got
                        if off == 0:  # p1 and p2 are being read ahead, and held
                            await trio.to_thread.run_sync(store.wait_for_reads, "p1", "p2")
                        elif off == MiB:
                            # Whatever this read started ahead has landed (it
                            # may have: it is not held) before p1 and p2 do.
                            coming = cache._inflight.get(locations[17].hash)
                            if coming is not None:
                                await coming.done.wait()
                            store.release()
                finally:
                    store.release()

    trio.run(main)
    assert out == data
    # Every byte read from the store once, and the cache within its bound.
    assert len(set(store.reads)) == len(store.reads)
    assert sum(length for _, _, length in store.reads) == len(data)
    assert max(store.sizes) <= 32 * MiB


def test_a_chunk_read_for_a_reader_reaches_it_however_tight_the_cache() -> None:
    # Room for one run buffer only, and two readers wanting a chunk each
    # (large enough to stay in its run buffer). The second read waits for room
    # rather than overfilling the cache, and neither chunk is evicted on
    # landing before its reader has it (which would have it read again).
    store, locations, data = packed_file([[5 * MiB], [5 * MiB]], seed=8)
    cache = store.cache = ChunkCache(store, max_bytes=9 * MiB)
    got = {}

    async def read(i: int) -> None:
        got[i] = bytes(await cache.get(locations, i, alone=True))

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                store.hold("p0", "p1")
                nursery.start_soon(read, 0)
                nursery.start_soon(read, 1)
                await trio.testing.wait_all_tasks_blocked()
                store.release()

    trio.run(main)
    assert got == {0: data[: 5 * MiB], 1: data[5 * MiB :]}
    assert sorted(store.reads) == [("p0", 0, 5 * MiB), ("p1", 0, 5 * MiB)]
    assert max(store.sizes) <= 9 * MiB and cache._bytes <= 9 * MiB


def test_readers_of_a_chunk_share_one_read_even_when_its_reader_is_cancelled() -> None:
    store, locations, data = packed_file([[MiB] * 3, [MiB]], seed=9)
    cache = ChunkCache(store, threads=1)  # one read at a time: the next waits for the thread
    got: dict[str, bytes | str] = {}

    async def read(name: str, i: int) -> None:
        try:
            got[name] = bytes(await cache.get(locations, i, alone=True))
        except BaseException as exc:  # noqa: BLE001 - what each reader got is checked below
            got[name] = type(exc).__name__

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                store.hold("p0")
                for name in ("a", "b", "c"):  # chunk 0: one read, held; the others wait on it
                    nursery.start_soon(read, name, 0)
                await trio.testing.wait_all_tasks_blocked()
                first = trio.CancelScope()

                async def cancelled() -> None:
                    with first:
                        await read("cancelled", 3)

                nursery.start_soon(cancelled)  # chunk 3: its read waits for the thread...
                await trio.testing.wait_all_tasks_blocked()
                for name in ("d", "e"):  # ...and these for that read
                    nursery.start_soon(read, name, 3)
                await trio.testing.wait_all_tasks_blocked()
                # The first reader of chunk 3 gives up before its read began:
                # the others neither get its cancellation nor read twice.
                first.cancel()
                await trio.testing.wait_all_tasks_blocked()
                store.release()

    trio.run(main)
    assert got.pop("cancelled") == "Cancelled"
    assert got == {"a": data[:MiB], "b": data[:MiB], "c": data[:MiB], "d": data[3 * MiB :], "e": data[3 * MiB :]}
    assert sorted(store.reads) == [("p0", 0, MiB), ("p1", 0, MiB)]
