"""The event hub: what changed, in order, for clients that follow it live.

Pure and thread-safe (no I/O): publishers in any thread call ``publish``; a
reader asks for what came after its cursor, and waits (in a thread with
``wait``, or woken by a listener callback, e.g. on an event loop).

Every event has a ``seq`` (1, 2, ... in this daemon run) and the run's random
``epoch``; its cursor is ``"<epoch>-<seq>"``. Events live in two bounded rings:
log lines in one, everything else (repos, commits, branches, pipelines, jobs,
datums) in the other, so a burst of log lines never pushes a job or commit
event out before a slow client read it. A reader whose cursor is older than
what a ring it asks for still holds, or from another run, is given a
``reset`` event (refetch your state) instead of a silent gap.

Each event is stored once, already serialized (one JSON line), as a tuple
``(seq, kind, pipeline, job, repo, data)``; the filter fields are kept apart
so that filtering never parses JSON.
"""

from __future__ import annotations

import heapq
import itertools
import json
import operator
import secrets
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pfsfuse.errors import InvalidArgument

Stored = tuple[int, str, str | None, str | None, str | None, str]  # seq, kind, pipeline, job, repo, data
_SEQ = operator.itemgetter(0)
LOG = "log"
# A 100,000-line log burst fits in the log ring whole; the other ring holds
# 32,768 commit/job/datum changes (a job of 20,000 datums at full speed is
# ~10 s of them). Stored events are one JSON line each (~370 bytes with the
# tuple), so the rings full are ~12 MB and ~45 MB of the daemon's memory.
MAIN_SIZE = 1 << 15
LOG_SIZE = 1 << 17


class _Ring:
    """Events in seq order, the oldest dropped past ``size`` (a list with a moving
    start, compacted now and then: appends and bisects stay O(1) and O(log n))."""

    __slots__ = ("items", "start", "size", "dropped")

    def __init__(self, size: int):
        self.items: list[Stored] = []
        self.start = 0
        self.size = size
        self.dropped = 0  # seq of the newest event dropped (0: none yet)

    def append(self, ev: Stored) -> None:
        self.items.append(ev)
        if len(self.items) - self.start > self.size:
            self.dropped = self.items[self.start][0]
            self.start += 1
            if self.start >= self.size:
                del self.items[: self.start]
                self.start = 0

    def after(self, seq: int) -> int:
        """Index of the first event with a seq above ``seq``."""
        return bisect_right(self.items, seq, lo=self.start, key=_SEQ)


@dataclass(frozen=True)
class Filter:
    """Which events a reader wants: kind prefixes (none: all) and field values."""

    kinds: tuple[str, ...] = ()
    pipeline: str | None = None
    job: str | None = None
    repo: str | None = None

    @property
    def wants_logs(self) -> bool:
        return not self.kinds or any(LOG.startswith(k) or k.startswith(LOG) for k in self.kinds)

    @property
    def wants_others(self) -> bool:
        # A prefix that names only "log" ("l", "lo", "log") leaves the other ring out.
        return not self.kinds or any(not (k and LOG.startswith(k)) and not k.startswith(LOG) for k in self.kinds)

    def match(self, ev: Stored) -> bool:
        _seq, kind, pipeline, job, repo, _data = ev
        if self.kinds and not any(kind.startswith(k) for k in self.kinds):
            return False
        if self.pipeline is not None and pipeline != self.pipeline:
            return False
        if self.job is not None and (job is None or not job.startswith(self.job)):
            return False
        return self.repo is None or repo == self.repo


class EventHub:
    """One per daemon run. ``publish`` from any thread; ``open`` a cursor, then
    ``read`` after it and ``wait`` (or listen) for more."""

    def __init__(self, size: int = MAIN_SIZE, log_size: int = LOG_SIZE, epoch: str | None = None):
        self.epoch = epoch or secrets.token_hex(6)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._main = _Ring(size)
        self._logs = _Ring(log_size)
        self._seq = 0
        self._listeners: list[Callable[[], None]] = []
        self.closed = False

    # -- publishing ------------------------------------------------------------

    def publish(self, kind: str, **fields: object) -> str:
        """Add one event; returns its cursor."""
        return self.publish_many([(kind, fields)])

    def publish_many(self, events: Iterable[tuple[str, dict]]) -> str:
        """Add events in this order with one lock and one wake-up (a batch of
        results, a batch of log lines); returns the last cursor."""
        with self._lock:
            now = time.time()
            for kind, fields in events:
                self._seq += 1
                data = {"kind": kind, "cursor": f"{self.epoch}-{self._seq}", "ts": now, **fields}
                ev = (self._seq, kind, fields.get("pipeline"), fields.get("job"), fields.get("repo"),
                      json.dumps(data, separators=(",", ":"), default=str))
                (self._logs if kind == LOG else self._main).append(ev)
            cursor = f"{self.epoch}-{self._seq}"
            self._cond.notify_all()
            listeners = self._listeners
        for wake in listeners:
            wake()
        return cursor

    def add_listener(self, wake: Callable[[], None]) -> None:
        """``wake()`` runs after every publish (in the publisher's thread: keep it
        short and non-blocking, e.g. schedule work on an event loop)."""
        with self._lock:
            self._listeners = [*self._listeners, wake]

    def remove_listener(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._listeners = [w for w in self._listeners if w is not wake]

    def close(self) -> None:
        """The daemon stops: readers' waits end."""
        with self._lock:
            self.closed = True
            self._cond.notify_all()
            listeners = self._listeners
        for wake in listeners:
            wake()

    # -- reading -----------------------------------------------------------------

    @property
    def head(self) -> int:
        """The seq of the newest event (0: none yet)."""
        return self._seq

    def cursor(self, seq: int | None = None) -> str:
        return f"{self.epoch}-{self._seq if seq is None else seq}"

    def open(self, since: str | None, want: Filter = Filter()) -> tuple[int, Stored | None]:
        """Where a reader starts: the seq it has seen, and a ``reset`` event to
        give it first if its cursor is from another run. ``None``: from now on;
        ``"0"``: everything still held."""
        with self._lock:
            if since is None or since == "":
                return self._seq, None
            if since == "0":
                rings = [r for r, on in ((self._main, want.wants_others), (self._logs, want.wants_logs)) if on]
                return max((r.dropped for r in rings), default=0), None
            epoch, seq = parse_cursor(since)
            if epoch != self.epoch or seq > self._seq:
                return self._seq, self._reset("the cursor is from an earlier run of the daemon")
            return seq, None

    def read(self, after: int, want: Filter = Filter(), limit: int = 1000) -> tuple[list[Stored], int]:
        """Events after seq ``after`` that ``want`` matches, oldest first, at most
        ``limit``; and the seq to read after next time. A reader too far behind
        (events it asked for were dropped) gets one ``reset`` event and goes on
        from the newest event."""
        with self._lock:
            rings = [r for r, on in ((self._main, want.wants_others), (self._logs, want.wants_logs)) if on]
            if any(after < r.dropped for r in rings):
                return [self._reset("the cursor is older than the events the daemon keeps")], self._seq
            if after >= self._seq:
                return [], after
            streams = [itertools.islice(r.items, r.after(after), None) for r in rings]
            merged = streams[0] if len(streams) == 1 else _merge(streams)
            out: list[Stored] = []
            last = after
            for ev in merged:
                last = ev[0]
                if want.match(ev):
                    out.append(ev)
                    if len(out) >= limit:
                        break
            else:
                last = self._seq  # scanned to the end: nothing more up to the newest
            return out, last

    def wait(self, after: int, timeout: float | None) -> bool:
        """Block until an event newer than ``after`` exists (True) or the timeout or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._seq <= after and not self.closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return self._seq > after

    def _reset(self, reason: str) -> Stored:
        cursor = f"{self.epoch}-{self._seq}"
        data = {"kind": "reset", "cursor": cursor, "ts": time.time(), "reason": reason}
        return (self._seq, "reset", None, None, None, json.dumps(data, separators=(",", ":")))


def _merge(streams: list) -> Iterable[Stored]:
    return heapq.merge(*streams, key=_SEQ)


def parse_cursor(cursor: str) -> tuple[str, int]:
    """``"<epoch>-<seq>"`` as (epoch, seq); a malformed one is the caller's error."""
    epoch, _, seq = cursor.rpartition("-")
    if not epoch or not seq.isdigit():
        raise InvalidArgument(f"invalid event cursor '{cursor}': expected EPOCH-SEQ as an event's id gave it")
    return epoch, int(seq)
