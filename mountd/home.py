"""PACHY_HOME is private to the daemon's user, whatever state it was found in.

The home holds plaintext secrets (``meta.sqlite``), the API token, the
daemon's socket and the workers' scratch. Before the daemon (or the CLI
starting one) writes anything there:

- the home must be a directory owned by this user: one owned by someone
  else could hold a planted socket, or a log symlinked to a file of ours,
  so it is refused, with the fix in the message;
- every entry the daemon uses must be ours and not a symlink (same reason);
- the home is made 0700 and the entries 0600 (files) / 0700 (directories),
  so a home made 0755 by hand, or by an older version, stops exposing them.

Standard library only: ``pachctl`` calls it before starting a daemon.
"""

from __future__ import annotations

import os
import stat

from pfsfuse.errors import PfsError

# What the daemon and the CLI create in a home (files and directories).
ENTRIES = (
    "meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm", "meta.sqlite-journal", "token",
    "mountd.lock", "mountd.sock", "mountd.log", "autostart.lock",
    "objects", "logs", "scratch", "mount-tmp",
)  # fmt: skip


class UnsafeHome(PfsError):
    """The data directory is not safely ours: refuse to use it."""

    kind = "unsafe_home"


def secure_home(home: str) -> str:
    """Create ``home`` (0700) or check and tighten an existing one; its absolute path.

    Raises ``UnsafeHome`` naming the problem and the fix."""
    home = os.path.abspath(home)
    me = os.geteuid()
    try:
        os.makedirs(home, mode=0o700, exist_ok=True)
        st = os.stat(home)  # a symlinked home is fine if what it points at is ours
    except OSError as exc:
        raise UnsafeHome(f"cannot create or open the data directory {home}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeHome(f"the data directory {home} is not a directory; set PACHY_HOME to a directory of yours")
    if st.st_uid != me:
        raise UnsafeHome(
            f"the data directory {home} belongs to uid {st.st_uid}, not to this user (uid {me}); "
            f"another user could plant files in it: use a directory of your own (PACHY_HOME or --home)"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(home, 0o700)
    for name in ENTRIES:
        path = os.path.join(home, name)
        try:
            est = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(est.st_mode):
            raise UnsafeHome(f"{path} is a symlink; pachy does not follow links in its data directory: remove it")
        if est.st_uid != me:
            raise UnsafeHome(
                f"{path} belongs to uid {est.st_uid}, not to this user (uid {me}); "
                f"someone else put it there: remove it (and check who can write to {home})"
            )
        want = 0o700 if stat.S_ISDIR(est.st_mode) else 0o600
        if stat.S_IMODE(est.st_mode) & 0o077:
            os.chmod(path, want, follow_symlinks=False)
    return home


def open_private(path: str, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT) -> int:
    """Open a file of the home for the daemon: never through a symlink, created 0600."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
