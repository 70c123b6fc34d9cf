"""Run mountd: one trio process that owns a PACHY_HOME and serves its API.

On a unix socket (mode 0600) by default; ``--listen HOST:PORT`` serves TCP
and then requires a bearer token (``--token``, ``PACHY_TOKEN``, or one made
up and saved to ``HOME/token``). SIGTERM or SIGINT shut it down cleanly.
Pipelines run on ``--runner`` (else ``PACHY_RUNNER``, else ``runner`` in
``$XDG_CONFIG_HOME/pachy/config.toml``, else ``auto``).
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import os
import secrets
import signal
import sys
import tomllib

import hypercorn.trio.tcp_server
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from mountd import fastlane
from mountd.app import build_app
from mountd.home import secure_home
from mountd.mounts import MountManager
from pfsfuse.errors import InvalidArgument, PfsError
from pfsfuse.memory import limit_arenas
from pfsfuse.objstore import open_store
from pfsfuse.pfs import PFS
from pps.runners.auto import CHOICES, build_runner
from pps.scheduler import Scheduler


def default_home() -> str:
    if os.environ.get("PACHY_HOME"):
        return os.path.abspath(os.environ["PACHY_HOME"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "pachy")


def socket_path(home: str) -> str:
    return os.path.join(home, "mountd.sock")


def _lock_home(home: str) -> int:
    """Hold an exclusive lock for the daemon's lifetime: one daemon per home."""
    fd = os.open(os.path.join(home, "mountd.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode().strip() or "?"
        raise PfsError(f"a daemon already runs for {home} (pid {pid})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _token(home: str, given: str | None) -> str:
    if given:
        return given
    if os.environ.get("PACHY_TOKEN"):
        return os.environ["PACHY_TOKEN"]
    path = os.path.join(home, "token")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    tok = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tok + "\n")
    print(f"mountd: made a new API token in {path}", file=sys.stderr)
    return tok


def runner_choice(flag: str | None) -> str:
    """Flag, then environment, then config file, then ``auto`` (as pachctl reads its settings).
    A value from the environment or the file that names no runner is refused there, naming
    where it came from (the flag's choices are argparse's)."""
    if flag:
        return flag
    if os.environ.get("PACHY_RUNNER", "").strip():
        return _known_runner(os.environ["PACHY_RUNNER"].strip(), "PACHY_RUNNER", "set it to one of them or unset it")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    path = os.path.join(base, "pachy", "config.toml")
    try:
        with open(path, "rb") as f:
            value = tomllib.load(f).get("runner")
    except FileNotFoundError:
        value = None
    except tomllib.TOMLDecodeError as exc:
        raise PfsError(f"cannot read {path}: {exc}") from None
    return _known_runner(str(value), f"'runner' of {path}", "fix or remove that line") if value else "auto"


def _known_runner(value: str, where: str, fix: str) -> str:
    if value.lower() not in CHOICES:
        raise InvalidArgument(f"unknown runner '{value}' in {where} (expected one of {', '.join(CHOICES)}); {fix}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mountd", description="the pachy daemon")
    p.add_argument("--home", default=None, help="data directory (default: $PACHY_HOME or the XDG data dir)")
    p.add_argument("--listen", default=None, metavar="HOST:PORT", help="serve TCP (requires a token)")
    p.add_argument("--token", default=None, help="bearer token for TCP clients")
    p.add_argument("--store", default=None, help="object store URL: a directory or s3://bucket/prefix")
    p.add_argument("--runner", default=None, choices=CHOICES,
                   help="where pipelines run: auto (Docker for specs naming an image when dockerd answers, "
                        "the rest here), local, docker, kubernetes, none (default: $PACHY_RUNNER, the "
                        "config file's 'runner', else auto)")
    p.add_argument("--zstd-level", type=int, default=int(os.environ.get("PACHY_ZSTD_LEVEL", "1")))
    return p.parse_args(argv)


async def _serve(app, config: Config, mounts: MountManager, on_stop=None) -> None:
    stop = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()
                if on_stop is not None:
                    on_stop()  # wake long polls so the server's graceful stop need not wait them out
                return

    async def run_server(task_status=trio.TASK_STATUS_IGNORED) -> None:
        await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
        # A clean stop unmounts: nothing written through the mount is lost.
        with trio.move_on_after(60):
            await mounts.unmount()
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        mounts.nursery = nursery
        nursery.start_soon(watch_signals)
        await nursery.start(run_server)
        # bind() made the socket 0777 & ~umask = 0700; the documented mode is 0600.
        for bind in config.bind:
            if bind.startswith("unix:"):
                os.chmod(bind[len("unix:") :], 0o600)


def _calm_gc() -> None:
    """What was built at start (modules, app, routes) lives as long as the
    daemon: frozen, so that full collections stop walking it, and full
    collections come 10x less often (each was a 30 ms pause, landing in the
    middle of an ``ls`` of 10,000 files here)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


def main(argv: list[str] | None = None) -> int:
    # hypercorn reads 64 KiB at a time; uploads stream far faster in 1 MiB reads.
    hypercorn.trio.tcp_server.MAX_RECV = 1 << 20
    limit_arenas()  # before any thread: see pfsfuse/memory.py
    args = parse_args(argv)
    home = os.path.abspath(args.home) if args.home else default_home()
    # Everything the daemon creates is private to its user (the metadata holds
    # plaintext secrets), whatever umask it was started with; workers set their own.
    old_umask = os.umask(0o077)
    try:
        secure_home(home)
        lock = _lock_home(home)
        store_url = args.store or os.environ.get("PACHY_STORE") or os.path.join(home, "objects")
        pfs = PFS(home, open_store(store_url), zstd_level=args.zstd_level)
        config = Config()
        config.accesslog = None
        config.errorlog = "-"
        config.keep_alive_timeout = 60
        # A stop waits this long for requests in flight (long polls are woken at once):
        # SIGTERM or `pachctl daemon --stop` ends the daemon within a few seconds.
        config.graceful_timeout = 1.0
        config.h11_max_incomplete_size = 64 * 1024
        token = None
        if args.listen:
            token = _token(home, args.token)
            config.bind = [args.listen]
        else:
            sock = socket_path(home)
            if os.path.exists(sock):
                os.unlink(sock)  # left by a killed daemon; we hold the lock
            config.bind = [f"unix:{sock}"]
        mounts = MountManager(pfs)
        scheduler = Scheduler(pfs, home)
        address = args.listen or f"unix:{socket_path(home)}"
        scheduler.runner = build_runner(runner_choice(args.runner), address, home, token=token,
                                        on_exit=scheduler.worker_exited, on_trouble=scheduler.worker_trouble)
        app = build_app(pfs, token, mounts, scheduler)
        if os.environ.get("PACHY_WORKER_FASTLANE", "1") != "0":  # 0: every request through hypercorn (bench A/B)
            fastlane.install(app, token)
    except PfsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        os.umask(old_umask)
        return exc.exit_code
    try:
        print(f"mountd: serving {home} on {config.bind[0]} (store {pfs.store.describe()}, runner "
              f"{scheduler.runner.name})", file=sys.stderr, flush=True)
        scheduler.start()
        _calm_gc()

        def stopping() -> None:
            scheduler.begin_close()
            pfs.events.close()  # event streams end now, not at the graceful stop's timeout

        trio.run(_serve, app, config, mounts, stopping)
    finally:
        scheduler.close()
        os.umask(old_umask)
        pfs.close()
        if not args.listen and os.path.exists(socket_path(home)):
            os.unlink(socket_path(home))
        os.close(lock)
    print("mountd: stopped", file=sys.stderr)
    return 0

