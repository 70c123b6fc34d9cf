"""Tasks waiting for workers: one queue per pipeline, a lease per worker.

A worker holds at most one task. Asking for the next task, or dying (the
runner reports it), ends its lease; a task whose result never arrived goes
back to the front of its queue for another worker.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any


class Task:
    """A task waiting for, or held by, a worker. It keeps what a worker is sent as JSON
    bytes (``encoded``, made once here; a dict of it is ~3x the size and a big job
    queues one task per datum) and the input commits its worker may read."""

    __slots__ = ("task_id", "job_id", "pipeline", "units", "encoded", "commits", "attempts", "done", "worker",
                 "leased")

    def __init__(self, task_id: str, job_id: str, pipeline: str, units: list[str], payload: dict[str, Any]):
        self.task_id, self.job_id, self.pipeline, self.units = task_id, job_id, pipeline, units
        self.encoded = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        self.commits = task_commits(payload)
        self.attempts = 0
        self.done = False
        self.worker: str | None = None
        self.leased = 0.0

    @property
    def payload(self) -> dict[str, Any]:
        """The task as it goes to the worker: pps.wire.Task.to_dict()."""
        return json.loads(self.encoded)


def task_commits(payload: dict) -> frozenset[tuple[str, str]]:
    """The (repo, commit) pairs a task's worker may read: its units' inputs and 1.x prev."""
    pairs = {(f.get("repo"), f.get("commit")) for u in payload.get("units") or [] for f in u.get("files") or []}
    prev = payload.get("prev")
    if isinstance(prev, dict):
        pairs.add((prev.get("repo"), prev.get("commit")))
    return frozenset(pairs)


class TaskQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Task]] = {}
        self._tasks: dict[str, Task] = {}
        self._leases: dict[str, Task] = {}  # worker -> task
        self._closed = False

    def put(self, tasks: list[Task]) -> None:
        with self._cond:
            for t in tasks:
                self._tasks[t.task_id] = t
                self._queues.setdefault(t.pipeline, deque()).append(t)
            self._cond.notify_all()

    def take(self, pipeline: str, worker: str, timeout: float) -> Task | None:
        """The next task for ``pipeline``, waiting up to ``timeout`` s; ends ``worker``'s lease."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._release(worker)
            while not self._closed:
                q = self._queues.get(pipeline)
                while q:
                    t = q.popleft()
                    if t.done or t.task_id not in self._tasks:
                        continue
                    t.worker, t.leased = worker, time.monotonic()
                    t.attempts += 1
                    self._leases[worker] = t
                    return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return None

    def _release(self, worker: str) -> None:
        t = self._leases.pop(worker, None)
        if t is not None and not t.done and t.task_id in self._tasks:
            t.worker = None
            self._queues.setdefault(t.pipeline, deque()).appendleft(t)
            self._cond.notify_all()

    def release_worker(self, worker: str) -> None:
        """The worker died: its task, if unfinished, goes to someone else."""
        with self._cond:
            self._release(worker)

    def leased(self, worker: str) -> Task | None:
        """The task ``worker`` holds now, if any."""
        with self._cond:
            return self._leases.get(worker)

    def get(self, task_id: str) -> Task | None:
        with self._cond:
            return self._tasks.get(task_id)

    def complete(self, task_id: str) -> Task | None:
        """Mark done (first result wins); None if unknown or already done."""
        with self._cond:
            t = self._tasks.get(task_id)
            if t is None or t.done:
                return None
            t.done = True
            if t.worker and self._leases.get(t.worker) is t:
                del self._leases[t.worker]
            del self._tasks[task_id]
            return t

    def holding(self, job_id: str, unit: str) -> Task | None:
        """The unfinished task of ``job_id`` that carries ``unit``, if any."""
        with self._cond:
            for t in self._tasks.values():
                if t.job_id == job_id and unit in t.units and not t.done:
                    return t
            return None

    def drop_job(self, job_id: str) -> None:
        with self._cond:
            for tid in [tid for tid, t in self._tasks.items() if t.job_id == job_id]:
                self._tasks.pop(tid).done = True
            for w in [w for w, t in self._leases.items() if t.job_id == job_id]:
                del self._leases[w]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
