"""Job logs: JSON lines per job under ``<home>/logs/jobs``, read back filtered or followed.

Lines come from workers (the user code's stdout/stderr, the shim's notes)
and from the scheduler. One file per job keeps ``get-logs --job`` a single
sequential read and makes deleting a pipeline's logs deleting its files.
"""

from __future__ import annotations

import json
import os
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator

from pfsfuse.events import EventHub

INDEXES = 16  # line indexes kept (one per job file and filter): a TUI pages through a few logs at once


class _Index:
    """Byte offsets of the lines of one job file that pass a filter, extended as
    the file grows (log files are only appended to), so a page of a 100,000-line
    log is a seek, not a scan."""

    def __init__(self) -> None:
        self.starts = array("q")  # offset of each matching line
        self.scanned = 0  # bytes of the file looked at so far (whole lines only)


class LogStore:
    def __init__(self, home: str, events: EventHub | None = None):
        self.dir = os.path.join(home, "logs", "jobs")
        os.makedirs(self.dir, exist_ok=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._indexes: OrderedDict[tuple[str, str, str], _Index] = OrderedDict()
        self._indexing = threading.Lock()  # one request brings an index up to date at a time
        self._written = 0  # writes so far: a follower waits for it to move, so no write slips by
        self.events = events  # live clients hear every line (one publish per write call)

    def _path(self, job: str) -> str:
        return os.path.join(self.dir, f"{job}.ndjson")

    def write(self, lines: list[dict]) -> None:
        by_job: dict[str, list[str]] = {}
        for line in lines:
            job = line.get("job") or "_pipeline"
            line.setdefault("ts", time.time())
            by_job.setdefault(job, []).append(json.dumps(line, separators=(",", ":")) + "\n")
        with self._lock:
            for job, texts in by_job.items():
                with open(self._path(job), "a", encoding="utf-8") as f:
                    f.writelines(texts)
            self._written += 1
            self._changed.notify_all()
            if self.events is not None:  # under the lock: events in the files' order
                self.events.publish_many(
                    ("log", {k: v for k, v in line.items() if k not in ("ts", "kind", "cursor")}) for line in lines
                )

    def note(self, pipeline: str, job: str | None, message: str, datum: str | None = None) -> None:
        """A line from the scheduler itself (user: false)."""
        self.write([{"pipeline": pipeline, "job": job, "datum": datum, "worker": None, "user": False,
                     "message": message}])

    def delete_jobs(self, jobs: list[str]) -> None:
        with self._lock:
            for key in [k for k in self._indexes if k[0] in jobs]:
                del self._indexes[key]
        for job in jobs:
            try:
                os.unlink(self._path(job))
            except FileNotFoundError:
                pass

    def read(self, jobs: Callable[[], list[str]], *, pipeline: str | None = None, datum: str | None = None,
             follow: Callable[[], bool] | None = None, poll: float = 0.25) -> Iterator[dict]:
        """Lines of the given jobs in order; with ``follow``, keep reading new lines
        (and jobs) while ``follow()`` is true."""
        offsets: dict[str, int] = {}
        while True:
            with self._lock:
                seen = self._written  # before reading: a write from here on ends the wait below at once
            for job in jobs():
                path = self._path(job)
                try:
                    with open(path, encoding="utf-8") as f:
                        f.seek(offsets.get(job, 0))
                        while True:
                            text = f.readline()
                            if not text.endswith("\n"):
                                break
                            offsets[job] = f.tell()
                            line = json.loads(text)
                            if pipeline and line.get("pipeline") != pipeline:
                                continue
                            if datum and not (line.get("datum") or "").startswith(datum):
                                continue
                            yield line
                except FileNotFoundError:
                    continue
            if follow is None or not follow():
                return
            with self._changed:
                # Woken by the write itself; ``poll`` only bounds how late a ``follow()``
                # that turned false (no write with it) is noticed.
                if self._written == seen:
                    self._changed.wait(poll)

    def _index(self, job: str, pipeline: str, datum: str) -> tuple[_Index, str]:
        """The line index of ``job``'s file under the filters, brought up to date."""
        with self._indexing:
            return self._update_index(job, pipeline, datum)

    def _update_index(self, job: str, pipeline: str, datum: str) -> tuple[_Index, str]:
        key = (job, pipeline, datum)
        with self._lock:
            idx = self._indexes.pop(key, None) or _Index()
            self._indexes[key] = idx
            while len(self._indexes) > INDEXES:
                self._indexes.popitem(last=False)
        path = self._path(job)
        # Lines are written compactly (json.dumps with no spaces), so a filter is a substring
        # test on the raw line; only lines that pass are ever parsed.
        want_pipeline = f'"pipeline":{json.dumps(pipeline)}' if pipeline else ""
        want_datum = f'"datum":{json.dumps(datum)[:-1]}' if datum else ""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < idx.scanned:  # replaced (deleted, then written again): start over
                    idx.starts, idx.scanned = array("q"), 0
                if size > idx.scanned:
                    f.seek(idx.scanned)
                    pos = idx.scanned
                    for raw in f:
                        if not raw.endswith(b"\n"):
                            break
                        if (not want_pipeline or want_pipeline.encode() in raw) and (
                                not want_datum or want_datum.encode() in raw):
                            idx.starts.append(pos)
                        pos += len(raw)
                    idx.scanned = pos
        except FileNotFoundError:
            idx.starts, idx.scanned = array("q"), 0
        return idx, path

    def page(self, jobs: list[str], *, pipeline: str | None = None, datum: str | None = None,
             offset: int = 0, n: int = 1000) -> tuple[int, list[dict]]:
        """Lines ``offset`` .. ``offset + n`` of the given jobs' logs (in that order) under
        the filters, and how many lines there are in all. A negative ``offset`` counts
        from the end (``-100``: the last 100 lines)."""
        indexes = [(self._index(job, pipeline or "", datum or ""), job) for job in jobs]
        total = sum(len(idx.starts) for (idx, _), _ in indexes)
        if offset < 0:
            offset = max(0, total + offset)
        out: list[dict] = []
        skip = offset
        for (idx, path), _job in indexes:
            if len(out) >= n:
                break
            count = len(idx.starts)
            if skip >= count:
                skip -= count
                continue
            with open(path, "rb") as f:
                for i in range(skip, min(count, skip + n - len(out))):
                    f.seek(idx.starts[i])
                    out.append(json.loads(f.readline()))
            skip = 0
        return total, out
