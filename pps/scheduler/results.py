"""Workers' task results written by one thread, many per transaction (group commit).

A result used to be one SQLite transaction of its own, with its fsync, in the
API's thread: at a few thousand results/s that fsync (0.4 ms here) and the
metadata lock it holds were the limit, and every reader of the metadata
waited behind them. Now a result is queued; the writer thread takes all that
are queued, writes them in one transaction, and tells each submitter
(``Pending.done``) once that transaction committed, so a result is still on
disk before its worker hears ``accepted``. While it writes, the next batch
gathers: under load, one fsync serves as many results as arrived meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pps.scheduler.state import ActiveJob

log = logging.getLogger("pps.scheduler")

Done = Callable[[BaseException | None], None]


class Pending:
    """A task's results waiting for the writer; ``done(error)`` runs once they are written
    (or failed to be), in the writer's thread."""

    __slots__ = ("job", "results", "done")

    def __init__(self, job: ActiveJob, results: list[dict], done: Done):
        self.job, self.results, self.done = job, results, done

    def finish(self, error: BaseException | None) -> None:
        try:
            self.done(error)
        except Exception:  # a submitter gone (its event loop ended): not the writer's problem
            log.exception("telling a worker's request its result was recorded failed")


class ResultWriter:
    """The thread (started on first use) that writes results in batches.

    ``write(batch)`` writes a batch in one transaction and returns whether a job
    became complete or failed; then ``wake()`` runs (the scheduler merges it)."""

    def __init__(self, write: Callable[[list[Pending]], bool], wake: Callable[[], None]):
        self._write, self._wake = write, wake
        self._cond = threading.Condition()
        self._pending: list[Pending] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, p: Pending) -> None:
        with self._cond:
            if not self._closed:
                self._pending.append(p)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="pps-results", daemon=True)
                    self._thread.start()
                self._cond.notify()
                return
        self._apply([p])  # the scheduler is closing: written in the caller's thread

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            self._apply(batch)
            # Not held while waiting: a batch's Pendings hold their job (its units, its
            # results), which would outlive the job until the next result came.
            del batch

    def _apply(self, batch: list[Pending]) -> None:
        try:
            wake = self._write(batch)
        except BaseException as exc:  # noqa: BLE001 - every submitter hears it, the thread goes on
            for p in batch:
                p.finish(exc)
            return
        for p in batch:
            p.finish(None)
        if wake:
            self._wake()
