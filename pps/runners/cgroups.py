"""``resource_limits.cpu/memory`` for local workers: one cgroup per worker (pps/WORKERS.md).

A worker with limits gets a cgroup ``pachy/<worker id>`` under the daemon's
own cgroup, in the memory and cpu hierarchies (cgroup v1) or in the unified
one (v2). The worker process joins it before it execs (the runner's
``preexec_fn`` writes into ``cgroup.procs``), so every process it starts,
user code included, is inside from its first instruction: the limits cover
the worker and its user code together, as a container's would.

The cgroups nest under the daemon's own cgroup rather than the hierarchy's
root, so whatever caps the daemon (a systemd slice, a container) still
caps its workers, and a delegated v2 subtree is enough.

- memory: ``memory.limit_in_bytes`` (v2 ``memory.max``), and swap closed
  (``memory.memsw.limit_in_bytes`` equal to it, v2 ``memory.swap.max`` 0)
  so that swapping cannot hide an overrun: over the limit, the kernel's OOM
  killer ends a process of the cgroup (``shim/oom.py`` says so in the
  datum's failure reason).
- cpu: a CFS quota per 100 ms period, ``cpu`` cores x 100 ms
  (``cpu.cfs_quota_us``/``cpu.cfs_period_us``, v2 ``cpu.max``).

Where the controllers are not mounted (a fresh machine without dockerd or
systemd having done it), a daemon run as root mounts them the way dockerd's
``cgroupfs-mount`` does: a tmpfs at ``/sys/fs/cgroup``, then one ``cgroup``
mount per v1 hierarchy.

Standard library only (``pps`` knows nothing of the daemon).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass

ROOT = "/sys/fs/cgroup"
PARENT = "pachy"  # under the daemon's own cgroup
CONTROLLERS = ("memory", "cpu")
PERIOD_US = 100_000  # the CFS period: the quota is cpu cores x this
MIN_QUOTA_US = 1_000  # the kernel's minimum quota
STALE_AGE = 10.0  # an empty worker cgroup older than this, left by a killed daemon, is swept


class CgroupError(RuntimeError):
    """A worker's cgroup cannot be made or removed; the message says why."""


@dataclass(frozen=True)
class Layout:
    """Where the daemon's own cgroups are: v1 one directory per controller, v2 one for all."""

    version: int  # 1 or 2
    bases: tuple[tuple[str, str], ...]  # (controller, directory); v2: (("unified", dir),)

    def dirs(self, *parts: str) -> list[str]:
        return [os.path.join(base, *parts) for _c, base in self.bases]


# -- where things are -------------------------------------------------------------


def _mounts() -> list[tuple[str, str, str, list[str], list[str]]]:
    """(mount root, mount point, fs type, mount options, super options) of every mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 6 or len(tail) < 3:
                continue
            out.append((_unescape(fields[3]), _unescape(fields[4]), tail[0], fields[5].split(","),
                        tail[2].split(",")))
    return out


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _own_cgroups(pid: str = "self") -> dict[str, str]:
    """controller -> this process's cgroup path in its hierarchy; "" -> the v2 one."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _join(mountpoint: str, mount_root: str, path: str) -> str:
    """The directory of cgroup ``path`` in a hierarchy mounted at ``mountpoint``."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root):]  # a mount of a sub-tree (a container's view)
    return os.path.normpath(os.path.join(mountpoint, path.lstrip("/")))


def _enabled_controllers() -> dict[str, tuple[int, bool]]:
    """controller -> (v1 hierarchy id, 0 if none; enabled in the kernel), from /proc/cgroups."""
    out = {}
    try:
        with open("/proc/cgroups") as f:
            for line in f:
                if line.startswith("#"):
                    continue
                name, hid, _n, enabled = line.split()[:4]
                out[name] = (int(hid), enabled == "1")
    except OSError:
        pass
    return out


def detect() -> Layout | str:
    """The daemon's cgroups for memory and cpu, or the reason there are none (mounts nothing)."""
    try:
        mounts, own = _mounts(), _own_cgroups()
    except OSError as exc:
        return f"cannot read /proc/self/mountinfo or /proc/self/cgroup: {exc.strerror}"
    v1 = []
    for c in CONTROLLERS:
        for root, point, fstype, opts, sup in mounts:
            if fstype == "cgroup" and c in sup and c in own:
                v1.append((c, _join(point, root, own[c]), "ro" in opts))
                break
    if len(v1) == len(CONTROLLERS):
        if any(ro for _c, _d, ro in v1):
            return f"the cgroup hierarchies under {ROOT} are mounted read-only (in a container without " \
                   "--privileged?)"
        return Layout(1, tuple((c, d) for c, d, _ro in v1))
    for root, point, fstype, opts, _sup in mounts:
        if fstype != "cgroup2" or "" not in own:
            continue
        base = _join(point, root, own[""])
        try:
            with open(os.path.join(point, "cgroup.controllers")) as f:
                have = f.read().split()
        except OSError:
            continue
        if all(c in have for c in CONTROLLERS):
            if "ro" in opts:
                return f"the cgroup2 hierarchy at {point} is mounted read-only (in a container without --privileged?)"
            return Layout(2, (("unified", base),))
    kernel = _enabled_controllers()
    off = [c for c in CONTROLLERS if c in kernel and not kernel[c][1]]
    if off:
        return f"the kernel has the {' and '.join(off)} controller disabled (cgroup_disable= on its command line)"
    missing = [c for c in CONTROLLERS if c not in {x for x, _d, _ro in v1}]
    return f"no cgroup hierarchy with the {' and '.join(missing)} controller is mounted under {ROOT}"


# -- mounting what is missing (as dockerd's cgroupfs-mount does) ------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8


def _mount(source: str, target: str, fstype: str, data: str, flags: int = MS_NOSUID | MS_NODEV | MS_NOEXEC) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} -o {data or 'defaults'} {source} {target}: {os.strerror(err)}")


def mount_missing() -> None:
    """Mount the memory and cpu hierarchies that are not mounted (root only); OSError if one
    cannot be. A controller comounted with others (``cpu,cpuacct``) is mounted with them."""
    mounts = _mounts()
    points = {point for _r, point, _t, _o, _s in mounts}
    if ROOT not in points:
        os.makedirs(ROOT, exist_ok=True)
        _mount("tmpfs", ROOT, "tmpfs", "mode=755")
    kernel = _enabled_controllers()
    v2_mounted = any(t == "cgroup2" for _r, _p, t, _o, _s in mounts)
    for c in CONTROLLERS:
        if any(t == "cgroup" and c in sup for _r, _p, t, _o, sup in mounts):
            continue
        hid = kernel.get(c, (0, True))[0]
        # Controllers already bound together in one v1 hierarchy must be mounted together.
        together = sorted(x for x, (h, _e) in kernel.items() if hid and h == hid) or [c]
        target = os.path.join(ROOT, ",".join(together))
        os.makedirs(target, exist_ok=True)
        try:
            _mount("cgroup", target, "cgroup", ",".join(together))
        except OSError as exc:
            os.rmdir(target)
            # EBUSY: the controller is bound to cgroup v2; mount that instead.
            if exc.errno != errno.EBUSY or v2_mounted:
                raise
            unified = os.path.join(ROOT, "unified")
            os.makedirs(unified, exist_ok=True)
            _mount("cgroup2", unified, "cgroup2", "")
            return


# -- can limits act here? ----------------------------------------------------------

_lock = threading.Lock()
_cached: tuple[Layout | None, str | None] | None = None


def layout() -> tuple[Layout | None, str | None]:
    """(where the daemon's cgroups are, None) or (None, why limits cannot act); mounts the
    missing controllers first when run as root. Computed once per process."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = _probe()
        return _cached


def _probe() -> tuple[Layout | None, str | None]:
    found = detect()
    if isinstance(found, str) and os.geteuid() == 0:
        try:
            mount_missing()
        except OSError as exc:
            return None, f"{found}, and mounting it failed: {exc.strerror or exc}"
        found = detect()
    if isinstance(found, str):
        if os.geteuid() != 0:
            found += " (the daemon is not root, so it cannot mount them)"
        return None, found
    for base in found.dirs():
        if not os.access(base, os.W_OK):
            who = "the daemon is not root" if os.geteuid() != 0 else "it is not writable"
            return None, f"the daemon cannot create cgroups in {base} ({who}); run the daemon as root"
    if found.version == 2:
        why = _v2_delegation(found.dirs()[0])
        if why:
            return None, why
    return found, None


def _v2_delegation(base: str) -> str | None:
    """v2 gives a child cgroup a controller only if its parent enables it in
    ``cgroup.subtree_control``, which a cgroup holding processes may not (but the root)."""
    try:
        with open(os.path.join(base, "cgroup.subtree_control")) as f:
            if all(c in f.read().split() for c in CONTROLLERS):
                return None
        if not os.path.exists(os.path.join(base, "cgroup.events")):
            return None  # the root: may enable controllers while holding processes
        with open(os.path.join(base, "cgroup.procs")) as f:
            busy = bool(f.read().split())
    except OSError as exc:
        return f"cannot read cgroup v2 files in {base}: {exc.strerror}"
    if busy:
        return (f"the daemon's cgroup v2 {base} holds processes, so it cannot enable memory and cpu for "
                f"child cgroups; start the daemon in a cgroup with those delegated (systemd: Delegate=yes "
                f"and a sub-cgroup of its own)")
    return None


def available() -> str | None:
    """None when ``resource_limits.cpu/memory`` act on local workers; else why not."""
    return layout()[1]


def reset() -> None:
    """Forget what was detected (the host's cgroups changed)."""
    global _cached
    with _lock:
        _cached = None


# -- one worker's cgroup -----------------------------------------------------------


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _procs(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


class WorkerCgroup:
    """The cgroup of one worker: made with its limits, joined before exec, removed after."""

    def __init__(self, where: Layout, worker_id: str, cpu: float = 0.0, memory: int = 0):
        if not worker_id or "/" in worker_id or worker_id in (".", ".."):
            raise CgroupError(f"'{worker_id}' cannot name a cgroup")
        self.layout = where
        self.worker_id = worker_id
        self.cpu, self.memory = cpu, memory
        self.dirs = where.dirs(PARENT, worker_id)
        self._inodes: dict[str, int] = {}  # what this start made: a later start of the same id makes others
        try:
            self._make()
        except OSError as exc:
            self.remove(1.0)
            raise CgroupError(f"cannot set up the cgroup of worker {worker_id}: {exc}") from None

    def _make(self) -> None:
        v2 = self.layout.version == 2
        for base, d in zip(self.layout.dirs(), self.dirs, strict=True):
            parent = os.path.dirname(d)
            if v2:
                _write(os.path.join(base, "cgroup.subtree_control"), " ".join(f"+{c}" for c in CONTROLLERS))
            if os.path.isdir(d):  # a worker of this id being replaced, or left by a killed daemon
                self._empty(d, 2.0)
                os.rmdir(d)
            for tries_left in (2, 1, 0):
                os.makedirs(parent, exist_ok=True)
                if v2:
                    _write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in CONTROLLERS))
                try:
                    os.mkdir(d)
                    self._inodes[d] = os.stat(d).st_ino
                    break
                except FileNotFoundError:  # another daemon's sweep removed the empty parent just now
                    if not tries_left:
                        raise
        for (controller, _base), d in zip(self.layout.bases, self.dirs, strict=True):
            if controller in ("memory", "unified") and self.memory:
                self._limit_memory(d)
            if controller in ("cpu", "unified") and self.cpu:
                self._limit_cpu(d)

    def _limit_memory(self, d: str) -> None:
        limit = str(self.memory)
        if self.layout.version == 2:
            _write(os.path.join(d, "memory.max"), limit)
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                _write(os.path.join(d, "memory.swap.max"), "0")
            return
        _write(os.path.join(d, "memory.limit_in_bytes"), limit)
        memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # memory + swap: equal to the limit, no swap at all
            _write(memsw, limit)
        else:  # the kernel does not account swap (swapaccount=0): ask it not to swap instead
            _write(os.path.join(d, "memory.swappiness"), "0")

    def _limit_cpu(self, d: str) -> None:
        quota = max(MIN_QUOTA_US, round(self.cpu * PERIOD_US))
        if self.layout.version == 2:
            _write(os.path.join(d, "cpu.max"), f"{quota} {PERIOD_US}")
            return
        _write(os.path.join(d, "cpu.cfs_period_us"), str(PERIOD_US))
        _write(os.path.join(d, "cpu.cfs_quota_us"), str(quota))

    def open_procs(self) -> list[int]:
        """Descriptors of its ``cgroup.procs`` files, for :func:`join` in the worker before exec
        (opened here: the forked child then only writes). Close them after the spawn."""
        fds: list[int] = []
        try:
            for d in self.dirs:
                fds.append(os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise CgroupError(f"cannot open {d}/cgroup.procs: {exc.strerror}") from None
        return fds

    def pids(self) -> list[int]:
        return sorted({p for d in self.dirs for p in _procs(d)})

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left in it (the worker is gone by now), then remove it; CgroupError
        if processes outlive ``timeout`` (unkillable, in the kernel)."""
        for d in self.dirs:
            try:
                if os.stat(d).st_ino != self._inodes.get(d):
                    continue  # gone, or another start's (a worker of this id started again)
            except FileNotFoundError:
                continue
            self._empty(d, timeout)
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CgroupError(f"cannot remove the cgroup {d}: {exc.strerror}") from None

    @staticmethod
    def _empty(d: str, timeout: float) -> None:
        kill = os.path.join(d, "cgroup.kill")  # v2 (Linux 5.14): every process at once
        deadline = time.monotonic() + timeout
        while pids := _procs(d):
            if os.path.exists(kill):
                _write(kill, "1")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise CgroupError(f"processes {pids} of the cgroup {d} did not end within {timeout:g} s")
            time.sleep(0.005)  # SIGKILLed processes leave the cgroup as they exit: a few ms


def join(fds: list[int]) -> None:
    """In the worker between fork and exec: move this process into its cgroup."""
    for fd in fds:
        os.write(fd, b"0")  # 0: the writing process itself


def create(worker_id: str, cpu: float = 0.0, memory: int = 0) -> WorkerCgroup:
    """A cgroup ``pachy/<worker_id>`` with these limits (cores, bytes; 0: none);
    CgroupError when limits cannot act here (``available()`` says why) or it cannot be made."""
    where, why = layout()
    if where is None:
        raise CgroupError(f"resource limits cannot act here: {why}")
    return WorkerCgroup(where, worker_id, cpu, memory)


def sweep() -> None:
    """Remove the empty worker cgroups a killed daemon left behind (and ``pachy`` itself
    when empty). A live worker's cgroup is never empty for long: only old ones go."""
    where, _why = layout()
    if where is None:
        return
    now = time.time()
    for parent in where.dirs(PARENT):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            d = os.path.join(parent, name)
            try:
                if os.path.isdir(d) and now - os.stat(d).st_mtime > STALE_AGE and not _procs(d):
                    os.rmdir(d)
            except OSError:
                pass  # in use again, or gone
        try:
            os.rmdir(parent)  # another daemon's workers may still be in it: then it stays
        except OSError:
            pass
