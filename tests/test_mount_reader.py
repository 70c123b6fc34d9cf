"""The mount's read path without a mount: runs of chunks read together, the
bounded cache, buffer reuse, damaged chunks, random versus sequential readers."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from pfsfuse.chunks import ChunkLocation
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
    # The cache stays within its bound plus the one run being added.
    assert max(read_all.cache_bytes) <= 32 * MiB + RUN_BYTES + 2 * 4096
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
