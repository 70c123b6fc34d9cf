"""Files being written through the mount, before they become commit content.

A file opened for writing gets a ``DirtyFile``: its whole new content, in
memory while small and spilled to a temporary file beyond that, so writes at
any offset, truncates and appends behave as on a local disk. When the last
handle closes, the file waits (briefly) to be ingested together with others
into its open commit in one write session; until then lookups, listings and
reads of that path are answered from here.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

SPILL = 4 << 20  # bytes kept in memory per file before spilling to disk


class DirtyFile:
    def __init__(self, commit_id: str, path: str, tmpdir: str):
        self.commit_id = commit_id
        self.path = path
        self.data = tempfile.SpooledTemporaryFile(max_size=SPILL, dir=tmpdir)  # noqa: SIM115
        self.size = 0
        self.mtime_ns = time.time_ns()
        self.opens = 0
        self.version = 0  # bumped by every change, so a flush knows what it saw
        # One file position, used by the loop (reads, writes) and by the thread
        # ingesting the file: every seek-and-access holds this.
        self.lock = threading.RLock()

    def write(self, offset: int, buf: bytes) -> int:
        with self.lock:
            if offset > self.size:  # a hole reads back as zeros
                self.data.seek(self.size)
                self.data.write(b"\0" * (offset - self.size))
            self.data.seek(offset)
            self.data.write(buf)
            self.size = max(self.size, offset + len(buf))
            self._changed()
        return len(buf)

    def read(self, offset: int, length: int) -> bytes:
        with self.lock:
            if offset >= self.size:
                return b""
            self.data.seek(offset)
            return self.data.read(min(length, self.size - offset))

    def truncate(self, size: int) -> None:
        with self.lock:
            if size > self.size:
                self.write(self.size, b"\0" * (size - self.size))
            else:
                self.data.truncate(size)
                self.size = size
                self._changed()

    def _changed(self) -> None:
        self.mtime_ns = time.time_ns()
        self.version += 1

    def reader(self):
        """A file object over the content from its start (for ingestion)."""
        return _Limited(self, self.size)

    def close(self) -> None:
        self.data.close()


class _Limited:
    """readinto() over the first ``size`` bytes of a dirty file, with its own position."""

    def __init__(self, dirty: DirtyFile, size: int):
        self.dirty, self.pos, self.left = dirty, 0, size

    def readinto(self, view) -> int:
        if self.left <= 0:
            return 0
        mv = memoryview(view)[: self.left]
        with self.dirty.lock:
            self.dirty.data.seek(self.pos)
            n = self.dirty.data.readinto(mv) or 0
        self.pos += n
        self.left -= n
        return n


class Overlay:
    """Dirty files by (commit, path), indexed by directory for listings."""

    def __init__(self, tmpdir: str):
        os.makedirs(tmpdir, exist_ok=True)
        self.tmpdir = tmpdir
        self.files: dict[tuple[str, str], DirtyFile] = {}
        self._by_dir: dict[tuple[str, str], set[str]] = {}

    def get(self, commit_id: str, path: str) -> DirtyFile | None:
        return self.files.get((commit_id, path))

    def create(self, commit_id: str, path: str) -> DirtyFile:
        f = self.files.get((commit_id, path))
        if f is None:
            f = self.files[(commit_id, path)] = DirtyFile(commit_id, path, self.tmpdir)
            parent, _, name = path.rpartition("/")
            self._by_dir.setdefault((commit_id, parent), set()).add(name)
        return f

    def drop(self, commit_id: str, path: str) -> None:
        f = self.files.pop((commit_id, path), None)
        if f is None:
            return
        parent, _, name = path.rpartition("/")
        names = self._by_dir.get((commit_id, parent))
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_dir[(commit_id, parent)]
        if f.opens == 0:
            f.close()

    def names_in(self, commit_id: str, directory: str) -> set[str]:
        return set(self._by_dir.get((commit_id, directory), ()))

    def of_commit(self, commit_id: str) -> list[DirtyFile]:
        return [f for (cid, _), f in self.files.items() if cid == commit_id]

    def commits(self) -> set[str]:
        return {cid for cid, _ in self.files}
