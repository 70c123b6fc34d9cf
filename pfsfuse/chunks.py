"""Content-defined chunks, compressed and packed into immutable objects.

A file's bytes are cut by FastCDC into chunks named by the BLAKE3 hash of
their plain bytes. New chunks are compressed with zstd (kept plain when that
does not shrink them) and appended to a pack: an object of up to
``PACK_TARGET`` bytes holding many chunks, so that 100,000 small files make a
handful of objects, not 100,000. Where each chunk lives (pack, offset,
length, codec) is recorded in the metadata database's chunk index, which is
what makes a chunk "exist"; a pack whose chunks were never indexed is garbage.

Each pack ends with a trailer listing its chunks (msgpack, then its length
as 4 bytes), so the index can be rebuilt from the packs alone.

Ordering (see STORAGE.md): a pack object is written whole (and fsynced) before
any index row names it; index rows are committed in the same transaction as
the file entries that use them.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import blake3
import msgpack
import pyfastcdc
import zstandard

from pfsfuse.errors import Damaged
from pfsfuse.objstore import ObjectStore

CHUNK_AVG = 1 << 20
CHUNK_MIN = 256 << 10
CHUNK_MAX = 4 << 20
PACK_TARGET = 16 << 20
CODEC_PLAIN = 0
CODEC_ZSTD = 1
# Bytes buffered before cutting: enough that the re-scan of the unfinished
# last chunk is a small fraction of the work.
_CUT_WINDOW = 4 * CHUNK_MAX


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    hash: bytes
    pack: str
    offset: int
    stored: int  # bytes in the pack
    size: int  # plain bytes
    codec: int


def chunk_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def pack_key(digest: bytes) -> str:
    h = digest.hex()
    return f"packs/{h[:2]}/{h}"


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    comp = getattr(_local, "comp", None)
    if comp is None or _local.level != level:
        comp = _local.comp = zstandard.ZstdCompressor(level=level)
        _local.level = level
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "dec", None)
    if dec is None:
        dec = _local.dec = zstandard.ZstdDecompressor()
    return dec


def encode_chunk(data: bytes | memoryview, level: int) -> tuple[int, bytes]:
    """Compress unless it does not pay (random data, tiny chunks)."""
    if len(data) < 64:
        return CODEC_PLAIN, bytes(data)
    packed = _compressor(level).compress(data)
    if len(packed) > len(data) * 0.97:
        return CODEC_PLAIN, bytes(data)
    return CODEC_ZSTD, packed


def decode_chunk(codec: int, stored: bytes, size: int) -> bytes:
    if codec == CODEC_ZSTD:
        return _decompressor().decompress(stored, max_output_size=size)
    return stored


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def worker_pool() -> ThreadPoolExecutor:
    """Threads for hashing and compression: zstd and blake3 release the GIL."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="chunk")
        return _pool


class PackWriter:
    """Accumulates encoded chunks and writes them out as pack objects."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self._buf = bytearray()
        self._entries: list[tuple[bytes, int, int, int, int]] = []  # hash, offset, stored, size, codec
        self.written: list[ChunkLocation] = []
        self.bytes_written = 0
        # Told each pack key before it is written, so gc can tell an
        # in-flight pack from garbage.
        self.on_pack: Callable[[str], None] | None = None

    def add(self, digest: bytes, codec: int, stored: bytes, size: int) -> None:
        self._entries.append((digest, len(self._buf), len(stored), size, codec))
        self._buf += stored
        if len(self._buf) >= PACK_TARGET:
            self.flush()

    def flush(self) -> None:
        if not self._entries:
            return
        trailer = msgpack.packb([list(e) for e in self._entries], use_bin_type=True)
        self._buf += trailer
        self._buf += len(trailer).to_bytes(4, "big")
        key = pack_key(chunk_hash(self._buf))
        if self.on_pack is not None:
            self.on_pack(key)
        self.store.put(key, self._buf)
        self.bytes_written += len(self._buf)
        for digest, offset, stored, size, codec in self._entries:
            self.written.append(ChunkLocation(digest, key, offset, stored, size, codec))
        self._buf = bytearray()
        self._entries = []


def read_pack_trailer(store: ObjectStore, key: str) -> list[ChunkLocation]:
    """The chunk list a pack carries at its end (for fsck and index rebuilds)."""
    size = store.size(key)
    if size < 4:
        raise Damaged(f"pack '{key}' is truncated ({size} bytes)")
    n = int.from_bytes(store.get_range(key, size - 4, 4), "big")
    if n + 4 > size:
        raise Damaged(f"pack '{key}' has a corrupt trailer")
    entries = msgpack.unpackb(store.get_range(key, size - 4 - n, n), raw=False)
    return [ChunkLocation(bytes(e[0]), key, e[1], e[2], e[3], e[4]) for e in entries]


class ChunkSink:
    """Turns byte streams into chunk lists, writing only chunks not stored yet.

    One sink serves one write session (a put-file, a batch of files); its
    ``packs.written`` are the index rows to commit with the session's file
    entries. ``known`` answers whether the index already has a chunk.
    """

    def __init__(self, store: ObjectStore, known: Callable[[bytes], bool], level: int = 1):
        self.packs = PackWriter(store)
        self._known = known
        self._level = level
        self._seen: set[bytes] = set()
        self._cdc = pyfastcdc.FastCDC(CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX)
        # In-flight compressions, kept in order so packs are deterministic.
        self._pending: deque[tuple[bytes, int, Future[tuple[int, bytes]]]] = deque()
        self.bytes_in = 0

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            digest, size, fut = self._pending.popleft()
            codec, stored = fut.result()
            self.packs.add(digest, codec, stored, size)

    def _take(self, data: bytes | memoryview) -> tuple[bytes, int]:
        digest = chunk_hash(data)
        if digest not in self._seen and not self._known(digest):
            self._seen.add(digest)
            fut = worker_pool().submit(encode_chunk, bytes(data), self._level)
            self._pending.append((digest, len(data), fut))
            self._drain(keep=2 * (os.cpu_count() or 2))
        return digest, len(data)

    def add_bytes(self, data: bytes) -> list[tuple[bytes, int]]:
        """Chunk a whole (small) buffer at once."""
        self.bytes_in += len(data)
        if not data:
            return []
        if len(data) <= CHUNK_MIN:
            return [self._take(data)]
        return [self._take(c.data) for c in self._cdc.cut_buf(data)]

    def stream(self) -> StreamChunker:
        return StreamChunker(self)

    def close(self) -> list[ChunkLocation]:
        """Write every pending chunk out; return the index rows to commit."""
        self._drain(keep=0)
        self.packs.flush()
        return self.packs.written


class StreamChunker:
    """Feeds a stream of arbitrary pieces through CDC with bounded memory."""

    def __init__(self, sink: ChunkSink):
        self._sink = sink
        self._buf = bytearray()
        self.refs: list[tuple[bytes, int]] = []
        self.size = 0

    def write(self, piece: bytes | memoryview) -> None:
        self._buf += piece
        self.size += len(piece)
        if len(self._buf) >= _CUT_WINDOW:
            self._cut(final=False)

    def _cut(self, final: bool) -> None:
        chunks = list(self._sink._cdc.cut_buf(self._buf))
        if not final:
            # The last cut ends where our buffer ends, not at a content boundary.
            chunks = chunks[:-1]
        consumed = 0
        for c in chunks:
            self.refs.append(self._sink._take(c.data))
            consumed = c.offset + c.length
        del chunks
        self._buf = self._buf[consumed:]

    def finish(self) -> list[tuple[bytes, int]]:
        if self._buf:
            if len(self._buf) <= CHUNK_MIN:
                self.refs.append(self._sink._take(self._buf))
                self._buf = bytearray()
            else:
                self._cut(final=True)
        self._sink.bytes_in += self.size
        return self.refs


def read_chunks(
    store: ObjectStore,
    locations: Iterable[ChunkLocation],
    verify: bool = True,
) -> Iterator[bytes]:
    """Yield the plain bytes of each chunk in order, checking each hash."""
    for loc in locations:
        stored = store.get_range(loc.pack, loc.offset, loc.stored)
        if len(stored) != loc.stored:
            raise Damaged(f"chunk {loc.hash.hex()[:12]} in pack '{loc.pack}' is truncated")
        plain = decode_chunk(loc.codec, stored, loc.size)
        if verify and chunk_hash(plain) != loc.hash:
            raise Damaged(
                f"chunk {loc.hash.hex()[:12]} in pack '{loc.pack}' does not match its hash; "
                "run 'pachctl fsck'"
            )
        yield plain
