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
from collections.abc import Callable, Iterator

from pfsfuse.events import EventHub


class LogStore:
    def __init__(self, home: str, events: EventHub | None = None):
        self.dir = os.path.join(home, "logs", "jobs")
        os.makedirs(self.dir, exist_ok=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
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
