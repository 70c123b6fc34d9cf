"""version, daemon, fsck, gc, delete-all (deploy is cmd_deploy: Kubernetes)."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time

from mountd.models import errors
from pachctl import config
from pachctl.cli.common import add, client, json_flag
from pachctl.cli.output import emit_json, human_size, table
from pfsfuse import __version__  # noqa: F401 - one version for every component

VERSION = __version__
RUNNERS = ("auto", "local", "docker", "kubernetes", "none")  # mountd's --runner (pachctl imports no pps)


def version(args) -> int:
    try:
        daemon = client().version()
    except errors.Unreachable:
        if args.json:
            emit_json({"pachctl": VERSION, "pachd": None})
        else:
            table(["COMPONENT", "VERSION"], [("pachctl", VERSION), ("pachd", "(unreachable)")])
        raise
    if args.json:
        emit_json({"pachctl": VERSION, "pachd": daemon.version, "store": daemon.store, "home": daemon.home})
        return 0
    table(["COMPONENT", "VERSION"], [("pachctl", VERSION), ("pachd", daemon.version)])
    return 0


def daemon(args) -> int:
    """Run mountd in the foreground (for a supervisor), or stop a running one."""
    home = config.resolve(home=args.home).home
    if args.stop:
        return _stop(home)
    argv = [sys.executable, "-m", "mountd", "--home", home]
    for flag in ("listen", "token", "store", "runner"):
        if getattr(args, flag):
            argv += [f"--{flag}", getattr(args, flag)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def _stop(home: str) -> int:
    pid = _daemon_pid(home)
    if pid is None:
        print(f"no daemon runs for {home}", file=sys.stderr)
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not _alive(pid):
            return 0
        time.sleep(0.02)
    raise errors.PfsError(f"the daemon (pid {pid}) did not stop within 30 s")


def _daemon_pid(home: str) -> int | None:
    """The pid of the daemon serving ``home``, on a unix socket or TCP (``--listen``)
    alike: the one holding the home's lock, which records its pid."""
    try:
        fd = os.open(os.path.join(home, "mountd.lock"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a daemon runs
        else:
            return None  # nobody holds it: what it records is a dead daemon's pid
        try:
            pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
        except ValueError:
            pid = 0
        return pid or None
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs. A zombie (exited, not yet reaped by its parent:
    the daemon is reparented to init, and a container's init may never reap)
    has released its lock and socket, so it counts as stopped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # reaped meanwhile, unless there is no /proc
    except (OSError, IndexError):
        return True


def fsck(args) -> int:
    report = client().fsck()
    if args.json:
        emit_json(report)
    else:
        for p in report.problems:
            print(f"problem: {p}")
        state = "ok" if report.ok else f"DAMAGED ({len(report.problems)} problems)"
        print(f"checked {report.commits} commits, {report.nodes} tree nodes, {report.chunks} chunks: {state}")
    return 0 if report.ok else errors.EXIT_DAMAGED


def gc(args) -> int:
    r = client().gc()
    if args.json:
        emit_json(r)
        return 0
    print(
        f"freed {human_size(max(r.bytes_freed, 0))}: {r.packs_deleted} pack(s) deleted, "
        f"{r.packs_rewritten} rewritten, {r.chunks_freed} chunk(s), {r.nodes_freed} tree node(s)"
    )
    return 0


def delete_all(args) -> int:
    client().delete_all()
    return 0


def register(sub) -> None:
    p = add(sub, "version", "Return version information.", version)
    json_flag(p)
    for name, help_text in (("daemon", "Run the daemon (pachd) in the foreground."),):
        p = add(sub, name, help_text, daemon)
        p.add_argument("--home", help="data directory (default: $PACHY_HOME or ~/.local/share/pachy)")
        p.add_argument("--listen", metavar="HOST:PORT", help="serve TCP instead of the unix socket (needs a token)")
        p.add_argument("--token", help="the bearer token TCP clients must send")
        p.add_argument("--store", help="object store: a directory or s3://bucket/prefix")
        p.add_argument("--runner", choices=RUNNERS,
                       help="where pipelines run: auto (default: Docker for specs naming an image when "
                            "dockerd answers, the rest here), local, docker, kubernetes, none; or $PACHY_RUNNER, "
                            "or 'runner' in the config file")
        p.add_argument("--stop", action="store_true", help="stop the running daemon")
    p = add(sub, "fsck", "Verify that every referenced object exists and hashes right.", fsck)
    json_flag(p)
    p = add(sub, "gc", "Free objects that nothing references any more.", gc)
    json_flag(p)
    add(sub, "delete-all", "Delete everything.", delete_all)
