"""What the mount's handlers share: the errno boundary, timeouts, node stats."""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable

import pyfuse3

from pfsfuse import names
from pfsfuse.errors import (
    AlreadyExists,
    Conflict,
    Damaged,
    InvalidArgument,
    NoSpace,
    NotFound,
    PfsError,
)

log = logging.getLogger("pachy.mount")

IMMUTABLE_TIMEOUT = 3600.0  # finished commits never change
MUTABLE_TIMEOUT = 1.0  # branch heads, repo lists, open commits: seen within a second
OPEN_ROW_TTL = 0.5  # an open commit's row is read again after this (or after our own writes)
BLOCK = 1 << 20  # st_blksize: tools like cp read this much at a time
FLUSH_DELAY = 0.2  # closed files wait this long to be ingested together
FLUSH_FILES = 2000  # ...or until this many are waiting
LISTING_CACHE = 200_000  # entries of finished directories kept listed


def errno_of(exc: BaseException) -> int:
    if isinstance(exc, NotFound):
        return errno.ENOENT
    if isinstance(exc, AlreadyExists):
        return errno.EEXIST
    if isinstance(exc, Conflict):
        return errno.EROFS if "finished" in str(exc) else errno.EBUSY
    if isinstance(exc, InvalidArgument):
        return errno.EINVAL
    if isinstance(exc, NoSpace):
        return errno.ENOSPC
    if isinstance(exc, Damaged):
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def errno_boundary(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def handler(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except (PfsError, OSError) as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None
        except Exception:
            log.exception("mount: %s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


def fuse_error(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


class Stat:
    """What getattr needs to know about a node (``subdirs``: a directory's
    subdirectories, for its link count)."""

    __slots__ = ("is_dir", "size", "mtime_ns", "mutable", "subdirs")

    def __init__(self, is_dir: bool, size: int, mtime_ns: int, mutable: bool, subdirs: int = 0):
        self.is_dir, self.size, self.mtime_ns, self.mutable = is_dir, size, mtime_ns, mutable
        self.subdirs = subdirs


def check_name(name: bytes | str) -> None:
    """ENAMETOOLONG for a name longer than names.NAME_MAX bytes, before any other
    check: a local disk says so for every call that takes a name (lookup,
    create, mkdir, unlink, rmdir, rename's both sides, ...), whether or not
    the name exists."""
    if len(os.fsencode(name)) > names.NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)


def join(directory: str, name: bytes | str) -> str:
    """A child's path inside a commit, checked like any path."""
    check_name(name)
    text = os.fsdecode(name)
    return names.clean_path(f"{directory}/{text}" if directory else text)
