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
# A run of zeros of any length, stored nowhere: the chunk reference
# (ZERO_HASH, n) stands for n zero bytes (a hole left by truncate or a
# write past the end). No BLAKE3 digest is 32 zero bytes in practice, and
# the chunk index never holds this name; readers make the zeros.
ZERO_HASH = bytes(32)
CODEC_ZERO = -1
ZERO_PIECE = 4 << 20  # zeros are handed out at most this much at a time
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
    """Compress unless it does not pay (random data, tiny chunks). Returns
    bytes of its own even when ``data`` is a view of a reused buffer."""
    if len(data) < 64:
        return CODEC_PLAIN, bytes(data)
    packed = _compressor(level).compress(data)
    if len(packed) > len(data) * 0.97:
        return CODEC_PLAIN, bytes(data)
    return CODEC_ZSTD, packed


def decode_chunk(codec: int, stored: bytes | memoryview, size: int) -> bytes | memoryview:
    if codec == CODEC_ZSTD:
        return _decompressor().decompress(stored, max_output_size=size)
    return stored


_pools: dict[str, ThreadPoolExecutor] = {}
_pool_lock = threading.Lock()


def _named_pool(name: str, workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        return _pools[name]


def worker_pool() -> ThreadPoolExecutor:
    """Threads for hashing and compression: zstd and blake3 release the GIL."""
    return _named_pool("chunk", max(2, os.cpu_count() or 2))


def writer_pool() -> ThreadPoolExecutor:
    """Threads that write (and fsync) pack objects."""
    return _named_pool("pack", PackWriter.IN_FLIGHT)


class PackWriter:
    """Accumulates encoded chunks and writes them out as pack objects.

    A full pack is written by a background thread (fsync is slow, and runs
    in parallel with chunking the next one); ``flush(wait=True)`` returns
    only once every pack is durable.
    """

    IN_FLIGHT = 3

    def __init__(self, store: ObjectStore):
        self.store = store
        self._parts: list[bytes] = []
        self._size = 0
        self._entries: list[tuple[bytes, int, int, int, int]] = []  # hash, offset, stored, size, codec
        self._writes: deque[Future[None]] = deque()
        self.written: list[ChunkLocation] = []
        self.bytes_written = 0
        # Told each pack key before it is written, so gc can tell an
        # in-flight pack from garbage.
        self.on_pack: Callable[[str], None] | None = None

    def add(self, digest: bytes, codec: int, stored: bytes, size: int) -> None:
        self._entries.append((digest, self._size, len(stored), size, codec))
        self._parts.append(stored)
        self._size += len(stored)
        if self._size >= PACK_TARGET:
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        if self._entries:
            trailer = msgpack.packb([list(e) for e in self._entries], use_bin_type=True)
            parts = self._parts + [trailer, len(trailer).to_bytes(4, "big")]
            hasher = blake3.blake3()
            for part in parts:
                hasher.update(part)
            key = pack_key(hasher.digest())
            if self.on_pack is not None:
                self.on_pack(key)
            while len(self._writes) >= self.IN_FLIGHT:
                self._writes.popleft().result()
            self._writes.append(writer_pool().submit(self.store.put_parts, key, parts))
            self.bytes_written += self._size + len(trailer) + 4
            for digest, offset, stored, size, codec in self._entries:
                self.written.append(ChunkLocation(digest, key, offset, stored, size, codec))
            self._parts, self._entries, self._size = [], [], 0
        if wait:
            while self._writes:
                self._writes.popleft().result()

    def abandon(self) -> None:
        """Give up: wait until no pack write is running any more (their
        errors no longer matter), so the caller can delete what they left."""
        while self._writes:
            try:
                self._writes.popleft().result()
            except Exception:  # noqa: BLE001 - a failed write is what we are cleaning up after
                pass
        self._parts, self._entries, self._size = [], [], 0


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


class _Slot:
    """Where a chunk's name lands once its worker is done: streams keep these,
    not the futures, so compressed bytes are freed as soon as they are packed."""

    __slots__ = ("digest", "size")

    def __init__(self) -> None:
        self.digest = b""
        self.size = 0


_Encoded = tuple[bytes, int, int, bytes | None]  # digest, plain size, codec, stored (None: known)


class ChunkSink:
    """Turns byte streams into chunk lists, writing only chunks not stored yet.

    One sink serves one write session (a put-file, a batch of files); its
    ``packs.written`` are the index rows to commit with the session's file
    entries. ``known`` answers whether the index already has a chunk; it is
    called from worker threads.
    """

    def __init__(self, store: ObjectStore, known: Callable[[bytes], bool], level: int = 1):
        self.packs = PackWriter(store)
        self._known = known
        self._level = level
        self._seen: set[bytes] = set()
        self._seen_lock = threading.Lock()
        self._cdc = pyfastcdc.FastCDC(CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX)
        # In-flight chunks in order: packs are laid out deterministically.
        self._pending: deque[tuple[Future[_Encoded], _Slot]] = deque()
        self._max_pending = 3 * (os.cpu_count() or 2)
        self.bytes_in = 0

    def _encode(self, data: bytes | memoryview) -> _Encoded:
        """In a worker: hash, skip if stored already, else compress (always
        returning bytes of its own: ``data`` may be a reused buffer)."""
        digest = chunk_hash(data)
        with self._seen_lock:
            new = digest not in self._seen
            self._seen.add(digest)
        if not new or self._known(digest):
            return digest, len(data), 0, None
        codec, stored = encode_chunk(data, self._level)
        return digest, len(data), codec, stored

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            fut, slot = self._pending.popleft()
            digest, size, codec, stored = fut.result()
            slot.digest, slot.size = digest, size
            if stored is not None:
                self.packs.add(digest, codec, stored, size)

    def submit(self, data: bytes | memoryview) -> _Slot:
        slot = _Slot()
        self._pending.append((worker_pool().submit(self._encode, data), slot))
        self._drain(keep=self._max_pending)
        return slot

    def wait(self, slots: list[_Slot]) -> None:
        """Until every slot given is filled (its worker is done)."""
        if slots and not slots[-1].digest:
            while self._pending and not slots[-1].digest:
                self._drain(keep=len(self._pending) - 1)

    def add_bytes(self, data: bytes) -> list[tuple[bytes, int]]:
        """Chunk a whole (small) buffer at once."""
        self.bytes_in += len(data)
        if not data:
            return []
        if len(data) <= CHUNK_MIN:
            # Small files: hashing inline beats a thread hop.
            digest, size, codec, stored = self._encode(data)
            if stored is not None:
                self._drain(keep=0)
                self.packs.add(digest, codec, stored, size)
            return [(digest, size)]
        slots = [self.submit(bytes(c.data)) for c in self._cdc.cut_buf(data)]
        self.wait(slots)
        return [(s.digest, s.size) for s in slots]

    def stream(self) -> StreamChunker:
        return StreamChunker(self)

    def close(self) -> list[ChunkLocation]:
        """Write every pending chunk out; return the index rows to commit."""
        self._drain(keep=0)
        self.packs.flush(wait=True)
        return self.packs.written


class StreamChunker:
    """Feeds a stream through CDC with bounded memory and no per-chunk copy.

    Two fixed windows take turns: workers hash and compress chunks straight
    out of one while the other fills. A window is refilled only once every
    chunk cut from it is done, and refilling memory whose pages are already
    mapped is several times faster than allocating fresh buffers.
    """

    def __init__(self, sink: ChunkSink):
        self._sink = sink
        self._bufs: list[bytearray] = []  # allocated on first write: most files are small
        self._cur = 0
        self._fill = 0
        self._users: list[list[_Slot]] = [[], []]  # chunks still reading each window
        self._slots: list[_Slot] = []
        self.size = 0

    def _window(self) -> memoryview:
        if not self._bufs:
            self._bufs = [bytearray(_CUT_WINDOW), bytearray(_CUT_WINDOW)]
        return memoryview(self._bufs[self._cur])

    def write(self, piece: bytes | memoryview) -> None:
        view = memoryview(piece)
        self.size += len(view)
        while view:
            n = min(len(view), _CUT_WINDOW - self._fill)
            self._window()[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == _CUT_WINDOW:
                self._cut(final=False)

    def write_from(self, f) -> None:
        """Read a file straight into the windows (no intermediate buffers)."""
        while True:
            n = f.readinto(self._window()[self._fill :])
            if not n:
                return
            self._fill += n
            self.size += n
            if self._fill == _CUT_WINDOW:
                self._cut(final=False)

    def _cut(self, final: bool) -> None:
        window = self._window()[: self._fill]
        chunks = list(self._sink._cdc.cut_buf(window))
        if not final:
            # The last cut ends where our buffer ends, not at a content boundary.
            chunks = chunks[:-1]
        consumed = 0
        users = self._users[self._cur] = []
        for c in chunks:
            users.append(self._sink.submit(c.data))
            consumed = c.offset + c.length
        self._slots += users
        del chunks
        rest = self._fill - consumed
        other = 1 - self._cur
        self._sink.wait(self._users[other])  # its chunks are done before we overwrite it
        self._bufs[other][:rest] = window[consumed : self._fill]
        self._cur, self._fill = other, rest

    def finish(self) -> list[tuple[bytes, int]]:
        if self._fill:
            if self._fill <= CHUNK_MIN:
                self._slots.append(self._sink.submit(bytes(self._window()[: self._fill])))
                self._fill = 0
            else:
                self._cut(final=True)
        self._sink.wait(self._slots)
        self._bufs = []
        self._sink.bytes_in += self.size
        return [(s.digest, s.size) for s in self._slots]


def read_chunks(
    store: ObjectStore,
    locations: Iterable[ChunkLocation],
    verify: bool = True,
) -> Iterator[bytes]:
    """Yield the plain bytes of each chunk in order, checking each hash (a
    zero run as pieces of at most ``ZERO_PIECE`` bytes)."""
    for loc in locations:
        if loc.codec == CODEC_ZERO:
            yield from zeros(loc.size)
            continue
        yield _checked(loc, store.get_range(loc.pack, loc.offset, loc.stored), verify)


def zero_location(size: int) -> ChunkLocation:
    return ChunkLocation(ZERO_HASH, "", 0, 0, size, CODEC_ZERO)


def zeros(n: int) -> Iterator[bytes]:
    """``n`` zero bytes in pieces: a long run never sits in memory at once."""
    while n > 0:
        k = min(n, ZERO_PIECE)
        yield bytes(k)
        n -= k


def read_run_into(
    store: ObjectStore, run: list[ChunkLocation], buf: bytearray | memoryview
) -> list[bytes | memoryview | Damaged]:
    """Chunks stored back to back in one pack, read at once into ``buf`` (room
    for the run plus ``2 * DIRECT_ALIGN``): each chunk's plain bytes (a view of
    ``buf`` when stored plain), hash checked, or the ``Damaged`` error it has."""
    first = run[0]
    span = run[-1].offset + run[-1].stored - first.offset
    stored = store.read_into(first.pack, first.offset, span, buf)
    out: list[bytes | memoryview | Damaged] = []
    for loc in run:
        lo = loc.offset - first.offset
        try:
            out.append(_checked(loc, stored[lo : lo + loc.stored], True))
        except Damaged as exc:
            out.append(exc)
    return out


def _checked(loc: ChunkLocation, stored: bytes | memoryview, verify: bool) -> bytes | memoryview:
    if len(stored) != loc.stored:
        raise Damaged(f"chunk {loc.hash.hex()[:12]} in pack '{loc.pack}' is truncated")
    plain = decode_chunk(loc.codec, stored, loc.size)
    if verify and chunk_hash(plain) != loc.hash:
        raise Damaged(
            f"chunk {loc.hash.hex()[:12]} in pack '{loc.pack}' does not match its hash; "
            "run 'pachctl fsck'"
        )
    return plain
