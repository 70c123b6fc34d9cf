"""Hosting the FUSE mount inside mountd's trio loop.

pyfuse3 serves one mount per process, on the trio loop of the process that
called ``pyfuse3.init``; mountd is that process. A second mount request is
refused with a message saying which directory holds the mount.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import pyfuse3
import trio

from pfsfuse.errors import Conflict, NotFound, PfsError
from pfsfuse.mount import check_mountpoint, mount_device
from pfsfuse.mount.ops import PfsOperations

log = logging.getLogger("pachy.mount")
READ_AHEAD_KB = 1024  # lets the kernel send 1 MiB reads instead of 128 KiB


@dataclass
class Mount:
    path: str
    writable: bool
    repos: list[str] | None
    ops: PfsOperations
    done: trio.Event
    allow_other: bool = False

    def describe(self) -> dict:
        return {"path": self.path, "write": self.writable, "repos": self.repos, "allow_other": self.allow_other}


class MountManager:
    def __init__(self, pfs):
        self.pfs = pfs
        self.nursery: trio.Nursery | None = None
        self.current: Mount | None = None
        self._lock = trio.Lock()

    def list(self) -> list[dict]:
        return [self.current.describe()] if self.current else []

    async def mount(
        self,
        path: str,
        writable: bool = False,
        repos: list[str] | None = None,
        commit_idle: float | None = None,
        allow_other: bool = False,
    ) -> dict:
        async with self._lock:
            if self.current is not None:
                raise Conflict(
                    f"this daemon already serves a mount at {self.current.path} (one per daemon); "
                    f"unmount it first (pachctl unmount {self.current.path})"
                )
            path = check_mountpoint(path)
            assert self.nursery is not None
            ops = PfsOperations(
                self.pfs,
                writable=writable,
                repos=set(repos) if repos else None,
                spawn=self.nursery.start_soon,
                commit_idle=commit_idle,
                allow_other=allow_other,
            )
            # By default only the mounting user reaches the mount, so no
            # default_permissions: the handlers decide what may change, and a
            # GETATTR of the directory before every create is spared. Shared
            # with other users (allow_other), the kernel checks the modes
            # (default_permissions): everyone reads, only the owner writes.
            options = {"fsname=pachy", "subtype=pachy"}
            if allow_other:
                options |= {"allow_other", "default_permissions"}
            if not writable:
                options.add("ro")
            try:
                pyfuse3.init(ops, path, options)
            except RuntimeError as exc:
                hint = "is fuse3 installed? apt-get install fuse3"
                if allow_other and os.getuid() != 0:
                    hint = "--allow-other needs 'user_allow_other' in /etc/fuse.conf when the daemon is not root"
                raise PfsError(f"cannot mount {path}: {exc} ({hint})") from None
            mount = self.current = Mount(path, writable, repos, ops, trio.Event(), allow_other)
            self.nursery.start_soon(self._serve, mount)
            await trio.to_thread.run_sync(_raise_read_ahead, path)
            log.info("mounted %s (%s)", path, "read-write" if writable else "read-only")
            return mount.describe()

    async def _serve(self, mount: Mount) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mount.ops.watch_idle)
                await pyfuse3.main(min_tasks=4, max_tasks=32)
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("mount %s stopped with an error", mount.path)
        finally:
            with contextlib.suppress(Exception):
                pyfuse3.close(unmount=True)
            self.current = None
            mount.done.set()

    async def unmount(self, path: str | None = None) -> list[str]:
        """Unmount ``path`` (or whatever is mounted when None); returns what was unmounted."""
        async with self._lock:
            mount = self.current
            if mount is None:
                if path is None:
                    return []
                raise NotFound(f"no pachy mount at {path} served by this daemon")
            if path is not None and os.path.abspath(path) != mount.path:
                raise NotFound(f"no pachy mount at {os.path.abspath(path)}; this daemon serves {mount.path}")
            # What was written and closed lands, and the commits the mount opened finish.
            try:
                await mount.ops.flush_all(finish=True)
            finally:
                pyfuse3.terminate()
                await mount.done.wait()
            return [mount.path]

    async def before_finish(self, commit_id: str) -> None:
        """``finish-commit`` on a commit being written through the mount: land
        its files first."""
        if self.current is not None and self.current.writable:
            await self.current.ops.flush_commit(commit_id, include_open=True)
            self.current.ops.forget_commit(commit_id)


def _raise_read_ahead(path: str) -> None:
    dev = mount_device(path)
    if dev is None:
        return
    try:
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as exc:  # not root, or no such bdi: reads stay at 128 KiB
        log.info("could not raise read_ahead_kb for %s: %s", path, exc)
