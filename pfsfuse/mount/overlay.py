"""Files being written through the mount, before they become commit content.

Copy-on-write by chunk. A file opened for writing gets a ``DirtyFile`` that
starts as a reference to the file's stored chunk list: nothing is read or
copied at open. Bytes written go to a scratch area at their own offsets (in
memory while small, then a sparse temporary file) and the ranges written are
kept as ``Extents``. A byte of the file is, in this order of precedence:

- written: from the scratch area;
- below ``base_valid``: from the stored chunks (truncating lowers it, so
  bytes cut off and grown back read as zeros, as POSIX says);
- otherwise a hole: zero, costing neither memory nor disk.

When the file lands (``landing.py``), chunks no write touched stay references
and only the spans around the edits are read, re-chunked and stored.

When the last handle closes, the file waits (briefly) to be landed together
with others into its open commit in one write session; until then lookups,
listings and reads of that path are answered from here.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

from pfsfuse.chunks import ZERO_HASH
from pfsfuse.entries import ChunkRef

SPILL = 4 << 20  # scratch bytes kept in memory per file, below this offset
# A stored file this small is read into the scratch area when opened for
# writing (one or two chunks): every later read and landing is then served
# from memory, which for small files costs less than going back to the
# chunks each time (fsx rewrites and msyncs a 256 KiB file thousands of times).
SMALL_BASE = 1 << 20
# The largest file the mount accepts (EFBIG beyond). Holes cost nothing, so
# this bounds sizes, not storage: 1 PiB leaves room for thousands of such
# files before a commit's total size (a signed 64-bit integer) could
# overflow. Writing far out also needs the scratch disk to allow such an
# offset (ext4: 16 TiB); beyond that the write says EFBIG too.
MAX_FILE_SIZE = 1 << 50

WRITTEN, STORED, HOLE = range(3)  # where a span of a dirty file's bytes comes from


class Extents:
    """Disjoint, non-adjacent ranges [start, end), sorted: what was written."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, a: int, b: int) -> None:
        if a >= b:
            return
        i = bisect.bisect_left(self.ends, a)  # first range ending at or after a (touching counts)
        j = bisect.bisect_right(self.starts, b)  # ranges starting at or before b: [0, j)
        if i < j:
            a, b = min(a, self.starts[i]), max(b, self.ends[j - 1])
        self.starts[i:j] = [a]
        self.ends[i:j] = [b]

    def clip(self, n: int) -> None:
        """Forget everything at or after ``n``."""
        j = bisect.bisect_left(self.starts, n)
        del self.starts[j:], self.ends[j:]
        if j and self.ends[-1] > n:
            self.ends[-1] = n

    def overlaps(self, a: int, b: int) -> bool:
        i = bisect.bisect_right(self.ends, a)  # first range ending after a
        return a < b and i < len(self.starts) and self.starts[i] < b

    def pieces(self, a: int, b: int) -> Iterator[tuple[int, int, bool]]:
        """[a, b) cut into (lo, hi, written) pieces."""
        i = bisect.bisect_right(self.ends, a)
        pos = a
        while pos < b:
            if i < len(self.starts) and self.starts[i] <= pos:
                hi = min(self.ends[i], b)
                yield pos, hi, True
                i += 1
            else:
                hi = min(self.starts[i], b) if i < len(self.starts) else b
                yield pos, hi, False
            pos = hi

    def copy(self) -> Extents:
        e = Extents()
        e.starts, e.ends = list(self.starts), list(self.ends)
        return e

    def __len__(self) -> int:
        return len(self.starts)


class StoredBase:
    """The stored chunk list a dirty file was opened on, with chunk offsets."""

    __slots__ = ("refs", "starts", "size")

    def __init__(self, refs: list[ChunkRef]):
        self.refs = refs
        self.starts = list(itertools.accumulate((size for _, size in refs), initial=0))
        self.size = self.starts[-1]

    def digests(self) -> frozenset[bytes]:
        return frozenset(h for h, _ in self.refs if h != ZERO_HASH)


class Snapshot:
    """What a dirty file holds at one moment, for landing it from a thread."""

    __slots__ = ("size", "base_valid", "written", "base", "version")

    def __init__(self, size: int, base_valid: int, written: Extents, base: StoredBase, version: int):
        self.size, self.base_valid, self.written, self.base, self.version = size, base_valid, written, base, version

    def layout(self, a: int, b: int) -> Iterator[tuple[int, int, int]]:
        """[a, b) cut into (lo, hi, WRITTEN | STORED | HOLE) pieces."""
        for lo, hi, written in self.written.pieces(a, b):
            if written:
                yield lo, hi, WRITTEN
                continue
            cut = min(max(lo, self.base_valid), hi)
            if lo < cut:
                yield lo, cut, STORED
            if cut < hi:
                yield cut, hi, HOLE


def too_big(size: int) -> OSError:
    return OSError(errno.EFBIG, f"a file of {size} bytes: files are at most {MAX_FILE_SIZE} bytes")


class DirtyFile:
    def __init__(self, commit_id: str, path: str, tmpdir: str, base: list[ChunkRef] | None = None):
        self.commit_id = commit_id
        self.path = path
        self.tmpdir = tmpdir
        self.base = StoredBase(base or [])
        self.size = self.base_valid = self.base.size
        self.written = Extents()
        self._mem: bytearray | None = bytearray()  # the scratch area while small
        self._fd: int | None = None  # ...then a sparse temporary file
        self.mtime_ns = time.time_ns()
        self.opens = 0
        self.version = 0  # bumped by every change, so a landing knows what it saw
        self.landed_version = -1  # the version last landed (fsync of an unchanged file lands nothing)
        self.reader = None  # a FileReader over the stored base, made on the first read of it
        # The loop changes the file while a thread lands it: changes and
        # snapshots hold this (never across an await).
        self.lock = threading.Lock()

    # -- the scratch area ------------------------------------------------------------

    def _spill(self) -> None:
        fd, name = tempfile.mkstemp(dir=self.tmpdir)
        os.unlink(name)
        if self._mem:
            os.pwrite(fd, self._mem, 0)
        self._fd, self._mem = fd, None

    def _scratch(self, lo: int, hi: int) -> bytes:
        """Written bytes [lo, hi) (zeros where a concurrent truncate took them)."""
        out = os.pread(self._fd, hi - lo, lo) if self._fd is not None else bytes(self._mem[lo:hi])
        return out if len(out) == hi - lo else out + bytes(hi - lo - len(out))

    # -- changes (the loop) --------------------------------------------------------

    def write(self, offset: int, buf: bytes) -> int:
        end = offset + len(buf)
        if end > MAX_FILE_SIZE:
            raise too_big(end)
        with self.lock:
            if self._fd is None and end > SPILL:
                self._spill()
            if self._fd is not None:
                # Raw pwrite, unbuffered: an offset the disk cannot hold fails
                # here (EFBIG), not at some later flush.
                done = 0
                while done < len(buf):
                    done += os.pwrite(self._fd, memoryview(buf)[done:], offset + done)
            else:
                mem = self._mem
                if len(mem) < offset:
                    mem.extend(bytes(offset - len(mem)))
                mem[offset:end] = buf
            self.written.add(offset, end)
            self.size = max(self.size, end)
            self._changed()
        return len(buf)

    def truncate(self, size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise too_big(size)
        with self.lock:
            if size < self.size:
                self.written.clip(size)
                self.base_valid = min(self.base_valid, size)
                if self._fd is not None:
                    if os.fstat(self._fd).st_size > size:
                        os.ftruncate(self._fd, size)
                elif len(self._mem) > size:
                    del self._mem[size:]
            # Growing only moves the end: what lies past the old end is a hole.
            self.size = size
            self._changed()

    def _changed(self) -> None:
        self.mtime_ns = time.time_ns()
        self.version += 1

    def snapshot(self) -> Snapshot:
        with self.lock:
            return Snapshot(self.size, self.base_valid, self.written.copy(), self.base, self.version)

    def absorb(self, base: StoredBase, data: bytes, version: int) -> bool:
        """The stored base's bytes, read at open: from now on kept in the
        scratch area (unless the file changed since ``version``)."""
        with self.lock:
            if self.version != version or self.base is not base or len(data) != base.size:
                return False
            if self._fd is None and base.size > SPILL:
                self._spill()
            if self._fd is not None:
                os.pwrite(self._fd, data, 0)
            else:
                self._mem[: len(data)] = data
            self.written.add(0, base.size)
            self.base = StoredBase([])
            self.base_valid = 0
            return True

    @property
    def spilled(self) -> bool:
        return self._fd is not None

    def rebase(self, refs: list[ChunkRef], version: int) -> frozenset[bytes] | None:
        """The file landed as ``refs`` and did not change since: start again
        from them, dropping the scratch area (the next landing re-chunks only
        what is written from now on). Returns the new base's chunks, or None
        when the file changed meanwhile and keeps its old base."""
        with self.lock:
            if self.version != version:
                return None
            self.base = StoredBase(refs)
            self.base_valid = self.base.size
            self.written = Extents()
            self.reader = None
            if self._fd is not None:
                os.ftruncate(self._fd, 0)
            else:
                self._mem = bytearray()
            return self.base.digests()

    # -- reading (the loop) ----------------------------------------------------------

    async def read(self, offset: int, length: int, stored: Callable[[int, int], Awaitable[bytes]]) -> bytes:
        """Bytes at ``offset``; ``stored(offset, length)`` reads the stored base."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        parts = []
        for lo, hi, kind in self.snapshot_layout(offset, end):
            if kind == WRITTEN:
                with self.lock:
                    parts.append(self._scratch(lo, hi))
            elif kind == STORED:
                parts.append(await stored(lo, hi - lo))
            else:
                parts.append(bytes(hi - lo))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def snapshot_layout(self, a: int, b: int) -> list[tuple[int, int, int]]:
        with self.lock:
            return list(Snapshot(self.size, self.base_valid, self.written, self.base, self.version).layout(a, b))

    def read_written(self, lo: int, hi: int) -> bytes:
        """Written bytes, from a thread (landing)."""
        with self.lock:
            return self._scratch(lo, hi)

    def close(self) -> None:
        with self.lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._mem = bytearray()


class Overlay:
    """Dirty files by (commit, path), indexed by directory for listings.

    ``held`` (the engine's ``held_chunks``) learns which stored chunks each
    dirty file is built on, so gc keeps them while the file lives."""

    def __init__(self, tmpdir: str, held: dict[int, frozenset[bytes]] | None = None):
        os.makedirs(tmpdir, exist_ok=True)
        self.tmpdir = tmpdir
        self.held = held if held is not None else {}
        self.files: dict[tuple[str, str], DirtyFile] = {}
        self._by_dir: dict[tuple[str, str], set[str]] = {}

    def get(self, commit_id: str, path: str) -> DirtyFile | None:
        return self.files.get((commit_id, path))

    def create(self, commit_id: str, path: str, base: list[ChunkRef] | None = None) -> DirtyFile:
        f = self.files.get((commit_id, path))
        if f is None:
            f = self.files[(commit_id, path)] = DirtyFile(commit_id, path, self.tmpdir, base)
            if f.base.refs:
                self.held[id(f)] = f.base.digests()
            self._index(commit_id, path)
        return f

    def _index(self, commit_id: str, path: str) -> None:
        parent, _, name = path.rpartition("/")
        self._by_dir.setdefault((commit_id, parent), set()).add(name)

    def _unindex(self, commit_id: str, path: str) -> None:
        parent, _, name = path.rpartition("/")
        names = self._by_dir.get((commit_id, parent))
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_dir[(commit_id, parent)]

    def rebased(self, f: DirtyFile, digests: frozenset[bytes]) -> None:
        self.held[id(f)] = digests

    def drop(self, commit_id: str, path: str) -> None:
        """The path no longer has this file (landed, unlinked, replaced); a
        file still open stays usable through its handles until closed."""
        f = self.files.pop((commit_id, path), None)
        if f is None:
            return
        self._unindex(commit_id, path)
        if f.opens == 0:
            self.close(f)

    def close(self, f: DirtyFile) -> None:
        self.held.pop(id(f), None)
        f.close()

    def owns(self, f: DirtyFile) -> bool:
        return self.files.get((f.commit_id, f.path)) is f

    def move(self, commit_id: str, src: str, dst: str) -> None:
        """rename(2) of ``src`` (a file or a directory) to ``dst``: files still
        open keep being written under their new path."""
        self.drop(commit_id, dst)
        moved = [
            (path, f)
            for (cid, path), f in self.files.items()
            if cid == commit_id and (path == src or path.startswith(src + "/"))
        ]
        for path, f in moved:
            del self.files[(commit_id, path)]
            self._unindex(commit_id, path)
            f.path = dst + path[len(src) :]
            self.files[(commit_id, f.path)] = f
            self._index(commit_id, f.path)

    def names_in(self, commit_id: str, directory: str) -> set[str]:
        return set(self._by_dir.get((commit_id, directory), ()))

    def of_commit(self, commit_id: str) -> list[DirtyFile]:
        return [f for (cid, _), f in self.files.items() if cid == commit_id]

    def commits(self) -> set[str]:
        return {cid for cid, _ in self.files}
