"""Did the kernel's OOM killer end a unit? (pps/WORKERS.md, "Resource limits")

A memory cgroup counts the processes its OOM killer ended (``oom_kill`` in
v1's ``memory.oom_control``, v2's ``memory.events``). Read before and after
a unit: when the unit failed and the count grew, the unit hit its memory
limit, and its reason says so ("killed: out of memory (resource_limits.memory
is 64Mi)") instead of a bare "killed by SIGKILL".

The local runner's worker shares its cgroup with its user code (one cgroup
per worker, as a container); :func:`user_code_adj` starts user code with a
higher ``oom_score_adj`` than the worker's, so the kernel picks the user's
process rather than the worker, which then reports the failure. Under the Docker
runner, the shim's container executor (``shim/container.py``) watches its
container's cgroup with an :class:`OomWatch`, found by :func:`own_memory_cgroup`
from the container's first process.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

COUNTERS = ("memory.oom_control", "memory.events")  # v1, v2: both hold "oom_kill N"
KILLED = (-9, 128 + 9)  # SIGKILL, as the process's status or as a shell reports its child's


def describe(size: int) -> str:
    """64Mi, 1Gi, 500M, or a plain number of bytes: as a spec would write it."""
    for unit, scale in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10),
                        ("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size} bytes"


class OomWatch:
    """The OOM kill count of one memory cgroup directory (v1 or v2).

    ``limit``: the memory limit the user asked for, in bytes, to name in the
    reason (``resource_limits.memory``); else the cgroup's own limit is named."""

    def __init__(self, cgroup_dir: str, limit: int | None = None):
        self.dir = cgroup_dir
        self.limit = limit
        self.fd: int | None = None
        for name in COUNTERS:
            try:
                # Kept open: a unit's thread reads it from inside the unit's mount namespace.
                self.fd = os.open(os.path.join(cgroup_dir, name), os.O_RDONLY | os.O_CLOEXEC)
                break
            except OSError:
                continue

    def count(self) -> int | None:
        """OOM kills in the cgroup so far; None where the kernel does not say."""
        if self.fd is None:
            return None
        try:
            text = os.pread(self.fd, 4096, 0).decode()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return None

    def limit_text(self) -> str:
        if self.limit:
            return f"resource_limits.memory is {describe(self.limit)}"
        for name in ("memory.limit_in_bytes", "memory.max"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    raw = f.read().strip()
            except OSError:
                continue
            if raw.isdigit() and int(raw) < 1 << 60:  # "max" / a huge v1 value: no limit
                return f"the memory limit of its cgroup is {describe(int(raw))}"
        return ""

    def explain(self, before: int | None, rc: int, why: str) -> str:
        """The reason of a unit that ended with ``rc`` (``why`` as said without this watch),
        given :meth:`count` before it started."""
        if before is None or rc == 0:
            return why
        after = self.count()
        if after is None or after <= before:
            return why
        limit = self.limit_text()
        oom = f"out of memory ({limit})" if limit else "out of memory"
        if rc in KILLED:
            return f"killed: {oom}"
        return f"{why}, after one of its processes was killed: {oom}"

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def own_memory_cgroup(pid: str = "self") -> str | None:
    """The directory of a process's memory cgroup (v1 memory hierarchy, else v2), or None;
    ``pid`` may be a container's process (its cgroup, as found through our own mounts)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = {}
            for line in f:
                _hid, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    paths[c] = path
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    for want_type, key in (("cgroup", "memory"), ("cgroup2", "")):
        if key not in paths:
            continue
        for m in mounts:
            sep = m.index("-")
            fstype, sup = m[sep + 1], m[sep + 3].split(",") if len(m) > sep + 3 else []
            if fstype != want_type or (key and key not in sup):
                continue
            root, point, path = m[3], m[4], paths[key]
            if root != "/" and path.startswith(root):
                path = path[len(root):]
            d = os.path.join(point, path.lstrip("/"))
            if os.path.exists(os.path.join(d, COUNTERS[0] if key else COUNTERS[1])):
                return d
    return None


def _worker_watch() -> OomWatch | None:
    d = own_memory_cgroup()
    if d is None:
        return None
    limit = os.environ.get("PACHY_MEMORY_LIMIT", "")  # the local runner's: resource_limits.memory in bytes
    return OomWatch(d, int(limit) if limit.isdigit() else None)


# Found at import, in the worker's own namespaces (a unit's thread sees another /proc).
_worker = _worker_watch()


def mark() -> int | None:
    """The worker's OOM kill count now (before a unit)."""
    return _worker.count() if _worker is not None else None


def explain(before: int | None, rc: int, why: str) -> str:
    """``why``, or the out-of-memory reason if the worker's cgroup killed a process since ``before``."""
    return _worker.explain(before, rc, why) if _worker is not None else why


# -- oom_score_adj: user code, not the worker, is the one to go ----------------------

# The kernel's OOM killer picks the process of the cgroup with the most memory plus
# oom_score_adj/1000 of the limit. User code starts this much above the worker, so the
# worker (~35 MB of Python) is picked only if it outgrows its user code by half the
# limit. Raised for user code rather than lowered for the worker: raising needs no
# privilege (lowering needs CAP_SYS_RESOURCE, which root lacks in some containers).
USER_CODE_ADJ_ABOVE = 500
_adj_lock = threading.Lock()


def _open_adj() -> tuple[int | None, int]:
    """(a descriptor of the worker's own oom_score_adj, its value). Opened at import: a
    unit's thread, which spawns user code, sees the unit's PID namespace at /proc."""
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None, 0
    try:
        return fd, int(os.pread(fd, 16, 0))
    except (OSError, ValueError):
        os.close(fd)
        return None, 0


_adj_fd, _worker_adj = _open_adj()
# Only for a worker in a memory cgroup of its own (the runner gave its limit): elsewhere
# user code shares the daemon's cgroup, and keeps the worker's score.
_user_adj = min(1000, _worker_adj + USER_CODE_ADJ_ABOVE) if _worker is not None and _worker.limit else None


@contextlib.contextmanager
def user_code_adj() -> Iterator[None]:
    """Around a spawn of user code: the child inherits a higher score than the worker's.

    ``oom_score_adj`` belongs to the whole process (no per-thread value to give a
    spawning thread), so the worker takes the user code's score for the spawn and
    its own back after: both are at or above its own, which needs no privilege."""
    if _user_adj is None or _adj_fd is None:
        yield
        return
    with _adj_lock:
        try:
            os.pwrite(_adj_fd, str(_user_adj).encode(), 0)
        except OSError:
            yield  # cannot change it: user code keeps the worker's score
            return
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.pwrite(_adj_fd, str(_worker_adj).encode(), 0)
