"""Log lines to the daemon, batched (``POST /v1/workers/logs``).

User code's stdout/stderr lines and the shim's own notes are buffered and
sent by a background thread every ``interval`` seconds, so ``get-logs -f``
shows a long unit as it runs, and a chatty unit costs one request per
batch, not per line. The worker flushes before it uploads a task's result,
so a finished job's logs are complete. Notes are also written to the
worker's stderr (its log file under the runner).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from pachctl.client import errors

Post = Callable[[list[dict]], None]
MAX_BATCH = 5000  # lines per request
MAX_BUFFER = 100_000  # lines kept while the daemon is away; older ones are dropped


class LogShipper:
    def __init__(self, post: Post, pipeline: str, worker: str, interval: float = 0.5):
        self._post = post
        self.pipeline, self.worker = pipeline, worker
        self.interval = interval
        self._buf: list[dict] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one batch in flight, in order
        self._wake = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="shim-logs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and send what is left, once, without retrying."""
        self._done.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except errors.PfsError:
            pass

    def bind(self, job: str | None, datum: str | None) -> Callable[[str, bool], None]:
        """A ``log(message, user)`` for one unit (what ``execute.run_unit`` takes);
        ``None`` for both: a spout's or service's lines (they belong to no job)."""

        def log(message: str, user: bool) -> None:
            self.add(job, datum, message, user)

        return log

    def add(self, job: str | None, datum: str | None, message: str, user: bool) -> None:
        line = {
            "job": job,
            "pipeline": self.pipeline,
            "datum": datum,
            "worker": self.worker,
            "user": user,
            "message": message,
            "ts": time.time(),
        }
        if not user:
            where = f"{(job or '')[:12]} {(datum or '')[:12]}" if job or datum else "-"
            print(f"[{self.worker}] {where}: {message}", file=sys.stderr, flush=True)
        with self._lock:
            self._buf.append(line)
            if len(self._buf) > MAX_BUFFER:
                drop = len(self._buf) - MAX_BUFFER
                del self._buf[:drop]
                self._dropped += drop
            full = len(self._buf) >= MAX_BATCH
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Send everything buffered; raises ``errors.Unreachable`` (lines kept) if the daemon is away."""
        with self._send_lock:
            while True:
                with self._lock:
                    batch = self._buf[:MAX_BATCH]
                    dropped, self._dropped = self._dropped, 0
                if dropped:
                    batch = [self._note(f"{dropped} log lines were dropped while the daemon was unreachable")] + batch
                if not batch:
                    return
                try:
                    self._post(batch)
                except errors.PfsError:
                    with self._lock:
                        self._dropped += dropped
                    raise
                with self._lock:
                    del self._buf[: len(batch) - (1 if dropped else 0)]

    def _note(self, message: str) -> dict:
        return {
            "job": "",
            "pipeline": self.pipeline,
            "datum": "",
            "worker": self.worker,
            "user": False,
            "message": message,
            "ts": time.time(),
        }

    def _loop(self) -> None:
        while not self._done.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._done.is_set():
                return
            try:
                self.flush()
            except errors.PfsError:
                pass  # kept; the worker loop notices an absent daemon and decides
