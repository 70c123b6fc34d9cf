"""Landing a dirty file: its new chunk list, re-chunking only around the edits.

Runs in a worker thread, on a ``Snapshot`` of the file. Every stored chunk
that lies wholly below ``base_valid`` and that no write overlaps is kept as
it is, by reference. Between kept chunks, each maximal run of bytes that
changed (chunks a write touched, bytes past the old end) is a span: its
bytes are assembled from the scratch area, the stored chunks it covers and
zeros, and cut into new chunks. A span also takes the kept chunk just before
it when that one is smaller than the chunker's minimum (the tail a previous
append left), so that appending line after line does not leave a trail of
tiny chunks. Holes and stored zero runs of ``ZERO_RUN`` bytes or more
become zero references: a terabyte-sized hole costs one list entry.

So appending a line to a 1 GiB file reads nothing, and stores one chunk
holding the line (or the small old tail plus the line).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from pfsfuse.chunks import CHUNK_MIN, ZERO_HASH, ChunkSink, StreamChunker
from pfsfuse.entries import ChunkRef
from pfsfuse.mount.overlay import HOLE, STORED, WRITTEN, DirtyFile, Snapshot

ZERO_RUN = CHUNK_MIN  # zeros at least this long become a zero reference, not chunk bytes
IN_MEMORY = 4 << 20  # a span up to this size is cut at once; longer ones stream through the chunker
PIECE = 4 << 20  # bytes read from the scratch area at a time


class _SpanWriter:
    """The new chunk references of a span's bytes, in order."""

    def __init__(self, sink: ChunkSink):
        self.sink = sink
        self.refs: list[ChunkRef] = []
        self._buf = bytearray()
        self._stream: StreamChunker | None = None

    def write(self, piece: bytes | memoryview) -> None:
        if self._stream is None:
            if len(self._buf) + len(piece) <= IN_MEMORY:
                self._buf += piece
                return
            self._stream = self.sink.stream()  # two chunker windows: only for long spans
            self._stream.write(self._buf)
            self._buf = bytearray()
        self._stream.write(piece)

    def zeros(self, n: int) -> None:
        if n >= ZERO_RUN:
            self.end()
            self.refs.append((ZERO_HASH, n))
            return
        self.write(bytes(n))

    def end(self) -> None:
        if self._stream is not None:
            self.refs += self._stream.finish()
            self._stream = None
        elif self._buf:
            self.refs += self.sink.add_bytes(bytes(self._buf))
            self._buf = bytearray()


def plan(snap: Snapshot) -> list[ChunkRef | tuple[int, int]]:
    """Kept references, and (start, end) spans to re-chunk, in file order."""
    base, written = snap.base, snap.written
    out: list = []
    span_start: int | None = None
    pos = 0  # end of what ``out`` covers
    for i, ref in enumerate(base.refs):
        s, e = base.starts[i], base.starts[i + 1]
        if s >= snap.size:
            break
        if e <= snap.base_valid and not written.overlaps(s, e):
            if span_start is not None:
                out.append((span_start, s))
                span_start = None
            out.append(ref)
        elif span_start is None:
            span_start = _take_small_tail(out, s)
        pos = e
    if span_start is None and pos < snap.size:
        span_start = _take_small_tail(out, pos)
    if span_start is not None:
        out.append((span_start, snap.size))
    return out


def _take_small_tail(out: list, start: int) -> int:
    """A span starting at ``start`` also takes a small kept chunk right before it."""
    if out and isinstance(out[-1][0], bytes) and out[-1][0] != ZERO_HASH and out[-1][1] < CHUNK_MIN:
        return start - out.pop()[1]
    return start


def land(
    f: DirtyFile, snap: Snapshot, sink: ChunkSink, stored_chunk: Callable[[ChunkRef], bytes | memoryview]
) -> list[ChunkRef]:
    """The chunk list of ``snap`` of ``f``, new chunks going to ``sink``;
    ``stored_chunk(ref)`` reads a stored chunk's plain bytes."""
    refs: list[ChunkRef] = []
    for item in plan(snap):
        if isinstance(item[0], bytes):
            refs.append(item)
        else:
            refs += _span(f, snap, item[0], item[1], sink, stored_chunk)
    merged: list[ChunkRef] = []
    for ref in refs:  # zero runs side by side become one
        if ref[0] == ZERO_HASH and merged and merged[-1][0] == ZERO_HASH:
            merged[-1] = (ZERO_HASH, merged[-1][1] + ref[1])
        elif ref[1]:
            merged.append(ref)
    return merged


def _span(f: DirtyFile, snap: Snapshot, a: int, b: int, sink: ChunkSink, stored_chunk) -> list[ChunkRef]:
    out = _SpanWriter(sink)
    base = snap.base
    held: tuple[int, bytes | memoryview] | None = None  # the stored chunk last read (a write may split it)
    for lo, hi, kind in snap.layout(a, b):
        if kind == HOLE:
            out.zeros(hi - lo)
        elif kind == WRITTEN:
            for p in range(lo, hi, PIECE):
                out.write(f.read_written(p, min(hi, p + PIECE)))
        else:
            assert kind == STORED
            pos = lo
            while pos < hi:
                i = _chunk_at(base.starts, pos)
                s, e = base.starts[i], base.starts[i + 1]
                top = min(hi, e)
                digest = base.refs[i][0]
                if digest == ZERO_HASH:
                    out.zeros(top - pos)
                else:
                    if held is None or held[0] != i:
                        held = (i, stored_chunk(base.refs[i]))
                    out.write(memoryview(held[1])[pos - s : top - s])
                pos = top
    out.end()
    return out.refs


def _chunk_at(starts: list[int], pos: int) -> int:
    return bisect.bisect_right(starts, pos) - 1
