"""The FUSE view of PFS: repos, branches and commits as directories."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess

from pfsfuse.errors import Conflict, InvalidArgument, PfsError


def check_mountpoint(path: str) -> str:
    """The absolute mountpoint, or an error that says what is wrong and how to fix it."""
    path = os.path.abspath(os.path.expanduser(path))
    # Before any stat: on a dead FUSE mount stat fails (ENOTCONN) and the
    # directory looks missing.
    if mount_device(path) is not None:
        raise Conflict(f"'{path}' is already a mountpoint (maybe a dead one); unmount it first (pachctl unmount {path})")
    if not os.path.exists("/dev/fuse"):
        raise PfsError("/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available")
    if not os.path.exists(path):
        raise InvalidArgument(f"mountpoint '{path}' does not exist; create it first (mkdir -p {path})")
    if not os.path.isdir(path):
        raise InvalidArgument(f"mountpoint '{path}' is not a directory")
    if os.listdir(path):
        raise InvalidArgument(f"mountpoint '{path}' is not empty; mount on an empty directory")
    return path


def mount_device(path: str) -> str | None:
    """'major:minor' of the filesystem mounted at ``path``, from mountinfo (no
    stat: that would ask our own FUSE server, which may be this thread)."""
    found = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == path:
                    found = fields[2]  # the last match is the mount on top
    except OSError:
        pass
    return found


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def pachy_mounts() -> list[str]:
    """Every pachy FUSE mount on this machine, live or dead."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields = pre.split()
                if post.split()[:1] == ["fuse.pachy"]:
                    out.append(_unescape(fields[4]))
    except OSError:
        pass
    return out


def fuse_unavailable() -> str | None:
    """Why a process of this user cannot mount FUSE here (None: it can)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (load the fuse module: modprobe fuse)"
    if os.geteuid() != 0 and not any(
        os.access(os.path.join(d, "fusermount3"), os.X_OK) for d in os.environ.get("PATH", "/usr/bin").split(":")
    ):
        return "fusermount3 is missing (apt-get install fuse3)"
    return None


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest first (from this process's mountinfo)."""
    path = os.path.abspath(path)
    found = set()
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = _unescape(line.split()[4])
                if point == path or point.startswith(path + "/"):
                    found.add(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


_MNT_DETACH = 2
_MS_BIND, _MS_REC, _MS_SHARED = 0x1000, 0x4000, 1 << 20


def make_shared(path: str) -> None:
    """Make ``path`` a shared mount point (bound on itself first if it is none), so
    that what is mounted under it later reaches its copies: a container that binds
    it with ``rslave`` propagation sees a FUSE mount made after it started (the
    host's root here is private). Root only; OSError says why not."""
    path = os.path.abspath(path)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    if mount_device(path) is None and libc.mount(path.encode(), path.encode(), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot bind {path} on itself: {os.strerror(err)}")
    if libc.mount(b"none", path.encode(), None, _MS_SHARED | _MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot make {path} a shared mount: {os.strerror(err)}")


def detach_under(path: str) -> None:
    """Lazily unmount whatever is mounted at or below ``path``: a worker killed with
    its FUSE view up leaves a dead mount there, on which even ``stat`` fails and
    which no ``rmtree`` can pass."""
    points = mounts_under(path)
    if not points:
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    for point in points:
        if libc.umount2(point.encode(), _MNT_DETACH) == 0:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # not root: fuse3's helper may
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True, timeout=10)
