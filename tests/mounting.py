"""Helpers and fixtures shared by the FUSE mount tests (test_mount_read, test_mount_write).

A test module takes the fixtures by importing them::

    from tests.mounting import mount, no_mount_left_behind  # noqa: F401

``no_mount_left_behind`` is module-scoped and autouse: once the module's tests
are done it checks /proc/self/mountinfo for pachy mounts left under the
session's temporary directory (taking any down, then failing). ``mount``
mounts through the daemon and takes every mount it made, or was told to
``track``, down at teardown: first through the daemon, then
``fusermount3 -u -z`` / ``umount -l`` for whatever the kernel still holds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pachctl.client import Client
from pfsfuse.mount import pachy_mounts

requires_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fuse3",
)


# -- pachctl ------------------------------------------------------------------------


def _pachctl_argv() -> list[str]:
    script = shutil.which("pachctl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "pachctl.cli.main"]


PACHCTL = _pachctl_argv()


def cli_env(home: Path) -> dict[str, str]:
    """The environment for a pachctl run against the daemon of ``home`` (no autostart)."""
    env = dict(os.environ)
    for name in ("ADDRESS", "PACHD_ADDRESS", "PACHY_ADDRESS", "PACHY_TOKEN", "PACHY_DEBUG"):
        env.pop(name, None)
    env["PACHY_HOME"] = str(home)
    env["PACHY_NO_AUTOSTART"] = "1"
    env["NO_COLOR"] = "1"
    return env


def pachctl(home: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [*PACHCTL, *args], env=cli_env(home), capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in res.stderr, res.stderr
    return res


# -- mounts and files ----------------------------------------------------------------


def mounted(path: Path | str) -> bool:
    return str(path) in pachy_mounts()


def detach(client: Client | None, path: Path | str) -> None:
    """Take the mount at ``path`` down however it can be done; never leave it."""
    path = str(path)
    if not mounted(path):
        return
    if client is not None:
        with contextlib.suppress(Exception):
            client.unmount(path)
    for cmd in (["fusermount3", "-u", "-z", path], ["umount", "-l", path]):
        if not mounted(path):
            break
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(cmd, capture_output=True, timeout=10)
    assert not mounted(path), f"could not unmount {path}"


def errno_of(fn: Callable[[], object]) -> int | None:
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return None


def read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- fixtures -----------------------------------------------------------------------


class Mounts:
    """Mounts made by a test, all taken down at teardown.

    ``mounts(client, path=None, **kw)`` mounts through the daemon (``kw`` goes to
    ``client.mount``: ``repos``, ``write``, ``commit_idle``...) at ``path``, or at a
    fresh directory under ``base``; ``track(client, path)`` adds a mount made
    some other way (``client`` None when its daemon is gone)."""

    def __init__(self, base: Path):
        self.base = base
        self.n = 0
        self.tracked: list[tuple[Client | None, Path]] = []

    def __call__(self, c: Client, path: Path | None = None, **kw) -> Path:
        if path is None:
            self.n += 1
            path = self.base / f"mnt{self.n}"
        path.mkdir(parents=True, exist_ok=True)
        self.tracked.append((c, path))
        c.mount(str(path), **kw)
        assert mounted(path)
        return path

    def track(self, c: Client | None, path: Path) -> None:
        self.tracked.append((c, path))

    def close(self) -> None:
        for c, path in reversed(self.tracked):
            detach(c, path)


@pytest.fixture(scope="module", autouse=True)
def no_mount_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    base = str(tmp_path_factory.getbasetemp())
    yield
    left = [p for p in pachy_mounts() if p.startswith(base)]
    for p in left:
        detach(None, p)
    assert not left, f"pachy mounts left behind: {left}"


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mounts]:
    m = Mounts(tmp_path)
    try:
        yield m
    finally:
        m.close()
