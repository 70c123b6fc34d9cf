"""mount and unmount: PFS as directories, served by the daemon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from mountd.models import errors
from pachctl.cli.common import add, client
from pachctl.client import Client


def _fuse_mounts() -> list[str]:
    """Mountpoints of every pachy FUSE mount here, live or dead (from mountinfo:
    stat-ing a dead mount would hang or fail)."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split()[:1] == ["fuse.pachy"]:
                    out.append(pre.split()[4].replace("\\040", " "))
    except OSError:
        pass
    return out


def _force_unmount(path: str) -> None:
    """Detach a mount whose daemon is gone (reads fail with ENOTCONN)."""
    for cmd in (["fusermount3", "-u", "-z", path], ["fusermount", "-u", "-z", path], ["umount", "-l", path]):
        if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
            return
    raise errors.PfsError(f"cannot unmount {path}; try 'fusermount3 -u -z {path}' or 'umount -l {path}' as root")


def mount(args) -> int:
    c = client()
    if c.socket is None:
        raise errors.InvalidArgument(
            "mount needs the daemon on this machine; unset ADDRESS to use the local daemon"
        )
    path = os.path.abspath(os.path.expanduser(args.dir))
    repos = [r for r in args.repos.split(",") if r] if args.repos else None
    if path in _fuse_mounts():
        raise errors.Conflict(f"'{path}' is a pachy mount already (maybe a dead one); run 'pachctl unmount {path}' first")
    if not args.foreground:
        c.mount(path, write=args.write, repos=repos, commit_idle=args.commit_idle, allow_other=args.allow_other)
        if args.verbose:
            print(f"mounted at {path}", file=sys.stderr)
        return 0
    # Block the signals before mounting: a Ctrl-C must always lead to the unmount.
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        c.mount(path, write=args.write, repos=repos, commit_idle=args.commit_idle, allow_other=args.allow_other)
        print(f"mounted at {path}; press Ctrl-C (or run 'pachctl unmount {path}') to unmount", file=sys.stderr)
        signal.sigwait(signals)
        c.unmount(path)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    print(f"unmounted {path}", file=sys.stderr)
    return 0


def unmount(args) -> int:
    if not args.dir and not args.all:
        raise errors.InvalidArgument("name the mountpoint to unmount, or pass -a for all")
    targets = _fuse_mounts() if args.all else [os.path.abspath(os.path.expanduser(args.dir))]
    done: list[str] = []
    try:
        # Never start a daemon just to hear it serves nothing.
        done = Client(autostart=False).unmount(None if args.all else targets[0])
    except (errors.Unreachable, errors.NotFound):
        pass  # the daemon is gone or never served it: detach what the kernel still holds
    live = _fuse_mounts()
    for path in targets:
        if path not in done and path in live:
            _force_unmount(path)
            done.append(path)
    if not done and not args.all:
        raise errors.NotFound(f"no pachy mount at {targets[0]}")
    return 0


def register(sub) -> None:
    p = add(sub, "mount", "Mount pfs locally (returns once the mount is ready).", mount)
    p.add_argument("dir", help="an empty directory")
    p.add_argument("-w", "--write", action="store_true", help="allow writes (they open commits)")
    p.add_argument("--repos", help="only these repos, comma-separated")
    p.add_argument("--foreground", action="store_true", help="stay in the foreground; Ctrl-C unmounts")
    p.add_argument("--commit-idle", type=float, metavar="SECONDS", help="finish a written commit after this long without writes")
    p.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users (a container's user, a notebook server) read the mount; only you write. "
        "Needs 'user_allow_other' in /etc/fuse.conf unless the daemon runs as root",
    )
    p = add(sub, "unmount", "Unmount pfs.", unmount)
    p.add_argument("dir", nargs="?")
    p.add_argument("-a", "--all", action="store_true", help="remove all pachy mounts")
