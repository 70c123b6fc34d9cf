"""Each unit in a sandbox of its own: a private ``/pfs``, a private ``/proc``, no daemon.

What user code of a unit sees (pps/WORKERS.md, "Isolation"):

- its own ``/pfs`` (and secrets), bind-mounted in a fresh mount namespace
  made for the unit by the spawning thread (Linux keeps mount namespaces
  per thread, and a child inherits the namespace of the thread that forked
  it). Processes a unit leaves behind never see a later unit's files.
- the daemon's home (its socket, ``meta.sqlite``, every worker's scratch)
  and the worker's own scratch roots hidden under empty read-only tmpfs
  mounts, made after the binds so ``/pfs`` stays reachable; ``/dev/shm``
  is a fresh tmpfs (the workers' fast scratch lives in the host's).
- a PID namespace per worker thread: a tiny init process (``PidSpace``) is
  pid 1 there and has mounted a ``/proc`` of that namespace in a mount
  namespace of its own, which every unit's namespace is copied from. So
  ``/proc`` lists the unit's own processes (and that init) only, and
  nothing outside the namespace can be signalled or traced. After each
  unit the init kills whatever the unit left in the namespace.
- no new privileges from set-uid programs (``PR_SET_NO_NEW_PRIVS``).

Who the code runs as is ``shim.execute``'s business (an unprivileged uid
unless ``transform.user`` asks otherwise).

Measured on the 2-core dev VM (spawn of ``sh -c true`` alone: 0.72 ms):

    unshare(1) + sh -c 'mount --bind ...' around the command   +2.4 ms
    ctypes unshare + mount in a preexec_fn (fork, not vfork)     +1.3 ms
    enter + release here (setns, unshare, binds, hiding)         +0.13 ms (0.11 with binds only)
    a unit's start, all included (uid switch, init's cleanup)    +0.06 ms over a bind-only sandbox

Root (with CAP_SYS_ADMIN) needs nothing more. Without root, call
``enter_user_namespace()`` once at start-up, while the process has a single
thread: it maps the user to root in a new user namespace, which may then
make namespaces of its own (``unshare --user --map-root-user``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
PR_SET_NO_NEW_PRIVS = 38

PFS = "/pfs"
SHM = "/dev/shm"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

_local = threading.local()
_userns = False
_hidden: list[str] = []  # directories user code must not see (the daemon's home, scratch roots)
_FIX = (
    "run the worker as root (with CAP_SYS_ADMIN), or as a user where unprivileged user "
    "namespaces are enabled (sysctl user.max_user_namespaces > 0)"
)

class SandboxError(RuntimeError):
    """The sandbox cannot be set up; the message names the fix."""


@dataclass(frozen=True)
class Bind:
    source: str  # a directory of the worker's filesystem
    target: str  # where the unit sees it
    readonly: bool = False
    owned: bool = True  # handed to the identity user code runs as (shim.execute.hand_over)


def _fail(what: str) -> SandboxError:
    err = ctypes.get_errno()
    msg = f"{what} failed: {os.strerror(err)}"
    if err in (errno.EPERM, errno.EACCES):
        return SandboxError(f"{msg}; {_FIX}")
    return SandboxError(msg)


def _mount(source: str | None, target: str, flags: int, fstype: str | None = None, data: str | None = None) -> None:
    src = source.encode() if source is not None else b"none"
    if _libc.mount(src, target.encode(), fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        raise _fail(f"mount of {source or '(remount)'} at {target}")


_host_mountpoints = True


def no_host_mountpoints() -> None:
    """User code does not run on this host (the Docker runner's workers): make no mount
    points here for it (/pfs, secrets' mount_path); the container's agent makes its own."""
    global _host_mountpoints
    _host_mountpoints = False


def ensure_mountpoint(path: str = PFS) -> None:
    """``path`` must be an existing directory of the host to bind over; make it once."""
    if not _host_mountpoints or os.path.isdir(path):
        return
    if os.path.lexists(path):
        raise SandboxError(f"{path} exists but is not a directory; remove it so workers can mount over it")
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise SandboxError(
            f"{path} does not exist and the worker cannot create it ({exc.strerror}); "
            f"create it once as root: sudo mkdir -p {path}"
        ) from None


def enter_user_namespace() -> None:
    """Become root of a new user namespace (for workers run without root).

    Must run before the process starts any thread: the kernel refuses
    CLONE_NEWUSER to a multithreaded process.
    """
    global _userns
    if threading.active_count() > 1:
        raise SandboxError("enter_user_namespace() must run before the worker starts threads")
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        raise _fail("unshare(CLONE_NEWUSER) (a user namespace for a worker run without root)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _userns = True


def in_user_namespace() -> bool:
    """True after ``enter_user_namespace``: root here is the worker's own user outside."""
    return _userns


def hide(paths: Iterable[str]) -> None:
    """Directories no unit may see (the daemon's home, the worker's scratch roots)."""
    for p in paths:
        p = os.path.realpath(p)
        if p != "/" and p not in _hidden:
            _hidden.append(p)


class PidSpace:
    """A PID namespace for the units of one thread, with its init and its /proc.

    The init is a fork of the worker (no program to find and start): pid 1
    of the namespace. It mounts that namespace's /proc in a mount namespace
    of its own, which every unit's namespace is then copied from, says
    "ready", and on each request kills every other process of the namespace
    (what a unit left behind) and answers. It exits when the worker closes
    its end of the pipe (or dies), and the kernel then kills whatever is
    left in the namespace.
    """

    def __init__(self) -> None:
        if not getattr(_local, "fs_own", False):
            # setns(CLONE_NEWNS) wants a thread that does not share its root and cwd.
            if _libc.unshare(CLONE_FS) != 0:
                raise _fail("unshare(CLONE_FS)")
            _local.fs_own = True
        if not getattr(_local, "nnp", False):
            # Inherited by every process the thread starts: set-uid programs grant nothing.
            if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")
            _local.nnp = True
        if getattr(_local, "own_pidns", None) is None:
            _local.own_pidns = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            _local.own_mntns = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        # After the first: back to our own namespace for children first (a namespace
        # whose init died cannot be reused; a new one can only be made from our own).
        if getattr(_local, "had_space", False) and _libc.setns(_local.own_pidns, CLONE_NEWPID) != 0:
            raise _fail("setns(CLONE_NEWPID) (a new PID namespace after its init died)")
        _local.had_space = True
        if _libc.unshare(CLONE_NEWPID) != 0:
            raise _fail("unshare(CLONE_NEWPID) (a PID namespace for user code)")
        self.mntns: int | None = None
        req_r, self.req = os.pipe2(os.O_CLOEXEC)
        self.ans, ans_w = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:  # the init
            try:
                _init_main(req_r, ans_w)
            finally:
                os._exit(1)
        os.close(req_r)
        os.close(ans_w)
        _inits.add(self.pid)
        try:
            if os.read(self.ans, 6) != b"ready\n":
                raise SandboxError(
                    "cannot make a PID namespace with its own /proc for user code (see the worker's log); " + _FIX
                )
            self.mntns = os.open(f"/proc/{self.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False

    def kill_strays(self) -> None:
        """Kill every process of the namespace but its init (what the last unit left)."""
        try:
            os.write(self.req, b"k")
            os.read(self.ans, 1)
        except OSError:
            pass  # the init is gone, and the kernel killed the namespace with it

    def close(self) -> None:
        for fd in (self.req, self.ans, self.mntns):
            if fd is not None:
                os.close(fd)
        self.req = self.ans = self.mntns = None
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)  # it exits on the closed pipe
            except ChildProcessError:
                pass
            _inits.discard(self.pid)
            self.pid = None

    def __del__(self) -> None:  # the thread that owned it ended: end its namespace
        try:
            self.close()
        except Exception:
            pass


_inits: set[int] = set()  # pids of live inits: children of the worker it must not reap


def inits() -> frozenset[int]:
    """The worker's children that are PID namespace inits (not a unit's leftovers)."""
    return frozenset(_inits)


def _init_main(req: int, ans: int) -> None:
    """The body of a PID namespace's init (a fork of the worker; never returns)."""
    os.dup2(req, 0)
    os.dup2(ans, 1)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # nothing of the worker's stays open here
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # it ends when the worker closes the pipe
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if _libc.unshare(CLONE_NEWNS) != 0 or _libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None) != 0 \
            or _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
        os.write(2, f"sandbox init: cannot mount a /proc: {os.strerror(ctypes.get_errno())}\n".encode())
        os._exit(1)
    os.write(1, b"ready\n")
    while True:
        try:
            if not os.read(0, 1):
                os._exit(0)
        except InterruptedError:
            continue
        try:
            os.kill(-1, signal.SIGKILL)  # from pid 1: every process of the namespace but itself
        except ProcessLookupError:
            pass
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.001)
            except ChildProcessError:
                break  # nothing left
        os.write(1, b"k")


def _space() -> PidSpace:
    space: PidSpace | None = getattr(_local, "space", None)
    if space is None or not space.alive():
        if space is not None:
            space.close()
        _local.space = space = PidSpace()
    return space


def renew() -> None:
    """End the calling thread's PID namespace: the next unit's gets a new one, whose
    mount namespace is copied from the worker's as it is now (with a mount made
    since, such as the lazy inputs' FUSE view: the worker's root is not shared,
    so a later mount does not propagate into an existing copy)."""
    space: PidSpace | None = getattr(_local, "space", None)
    if space is not None:
        space.close()
        _local.space = None


def enter(binds: Sequence[Bind]) -> None:
    """Move the calling thread into a fresh namespace for one unit (module doc).

    Processes the thread starts afterwards see the binds; nothing else does.
    Binds are applied in order, so a bind inside another (``/pfs/prev`` in
    ``/pfs``) must come after it. ``release()`` takes the thread back out.
    """
    space = _space()
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # A copy of the init's namespace: the host's mounts (as a slave, so a
        # mount the host makes later still shows), with the PID namespace's /proc.
        if _libc.setns(space.mntns, CLONE_NEWNS) != 0:
            raise _fail("setns(CLONE_NEWNS)")
        if _libc.unshare(CLONE_NEWNS) != 0:
            raise _fail("unshare(CLONE_NEWNS) (a private /pfs for the unit)")
        _local.entered = True
        os.fchdir(cwd)  # setns moved the thread to "/"
    finally:
        os.close(cwd)
    try:
        for b in binds:
            _mount(b.source, b.target, MS_BIND | MS_REC)
            if b.readonly:
                _mount(None, b.target, MS_BIND | MS_REMOUNT | MS_RDONLY)
        # After the binds, whose sources live under what is hidden.
        for path in _hidden:
            if os.path.isdir(path):
                _mount("tmpfs", path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "tmpfs", "size=4k,mode=755")
            elif os.path.exists(path):  # a socket elsewhere than the home
                _mount("/dev/null", path, MS_BIND)
        if os.path.isdir(SHM):
            _mount("tmpfs", SHM, MS_NOSUID | MS_NODEV, "tmpfs", "mode=1777")
    except BaseException:
        release()  # not left in a namespace where the scratch is busy
        raise


def release() -> None:
    """Take the calling thread back to the namespace it started in (so the
    scratch tree can be removed); the unit's namespace ends with its last process."""
    if not getattr(_local, "entered", False):
        return
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.setns(_local.own_mntns, CLONE_NEWNS) != 0:
            raise _fail("setns(CLONE_NEWNS) back to the worker's namespace")
        _local.entered = False
        os.fchdir(cwd)
    finally:
        os.close(cwd)


def kill_strays() -> None:
    """After a unit: kill what it left in the thread's PID namespace."""
    space: PidSpace | None = getattr(_local, "space", None)
    if space is not None:
        space.kill_strays()


# -- spawning as another user without giving up vfork ---------------------------
# subprocess forks (instead of vforking) as soon as it is asked to change the
# child's uid, which costs ~1 ms per start of a big worker process. The kernel
# keeps credentials per thread, so the spawning thread takes the identity
# itself for the spawn (raw syscalls: glibc's wrappers would change every
# thread), keeping root as its saved uid to come back. The child's exec makes
# its saved uid the new effective one, so user code cannot come back.
_SYS_SETGROUPS, _SYS_SETRESUID, _SYS_SETRESGID = 116, 117, 119  # x86_64
_libc.syscall.restype = ctypes.c_long


def _sys(nr: int, *args: int | ctypes.Array) -> None:
    if _libc.syscall(nr, *args) != 0:
        raise _fail(f"syscall {nr} (switching the spawning thread's user)")


PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2


def _parent_death_signal() -> tuple[int, int]:
    """(signal, parent pid) the runner asked for at start (0 if none), read once."""
    got = ctypes.c_int(0)
    _libc.prctl(PR_GET_PDEATHSIG, ctypes.cast(ctypes.pointer(got), ctypes.c_void_p).value or 0, 0, 0, 0)
    return got.value, os.getppid()


# Read at import, before any thread changes its credentials (which clears it).
_PDEATH = _parent_death_signal()


def _rearm_parent_death() -> None:
    """A credential change clears the thread's parent-death signal (prctl(2)): set it
    again, and raise it now if the parent (the daemon) died in between."""
    sig, parent = _PDEATH
    if not sig:
        return
    _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


class acting_as:  # noqa: N801 - used as a context manager, like contextlib's
    """``with acting_as(uid, gid, groups):`` the calling thread alone runs as that user."""

    def __init__(self, uid: int, gid: int, groups: Sequence[int]):
        self.uid, self.gid, self.groups = uid, gid, list(groups)

    def __enter__(self) -> None:
        self.saved = os.getgroups()
        arr = (ctypes.c_uint * max(1, len(self.groups)))(*self.groups)
        _sys(_SYS_SETGROUPS, ctypes.c_size_t(len(self.groups)), arr)
        _sys(_SYS_SETRESGID, ctypes.c_uint(self.gid), ctypes.c_uint(self.gid), ctypes.c_uint(0))
        # uid last (it drops the capability the others need); saved uid 0 to come back.
        _sys(_SYS_SETRESUID, ctypes.c_uint(self.uid), ctypes.c_uint(self.uid), ctypes.c_uint(0))

    def __exit__(self, *exc: object) -> None:
        _sys(_SYS_SETRESUID, ctypes.c_uint(0), ctypes.c_uint(0), ctypes.c_uint(0))
        _sys(_SYS_SETRESGID, ctypes.c_uint(0), ctypes.c_uint(0), ctypes.c_uint(0))
        arr = (ctypes.c_uint * max(1, len(self.saved)))(*self.saved)
        _sys(_SYS_SETGROUPS, ctypes.c_size_t(len(self.saved)), arr)
        _rearm_parent_death()
