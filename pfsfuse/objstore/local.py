"""The embedded default: objects as files under a directory.

A put writes a temporary name in the same directory, fsyncs it and renames it
over the final name, so a crash leaves either the whole object or a stray
``.tmp-*`` file that ``cleanup_temporaries`` removes at daemon start.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import threading
from collections import OrderedDict
from collections.abc import Iterator

from pfsfuse.errors import NoSpace, PfsError
from pfsfuse.objstore.base import DIRECT_ALIGN, ObjectMissing, ObjectStore

TMP_PREFIX = ".tmp-"


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


_libc = ctypes.CDLL(None, use_errno=True)  # CDLL: the GIL is released during the call
_SYS_CACHESTAT = {"x86_64": 451, "aarch64": 451}.get(platform.machine())


def cached(fd: int, offset: int, length: int) -> bool:
    """Whether the page cache holds all of a file's range (cachestat(2), Linux
    6.5+; False where the kernel cannot say)."""
    global _SYS_CACHESTAT
    if _SYS_CACHESTAT is None:
        return False
    rng, st = _Range(offset, length), _Cachestat()
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(st), 0) != 0:
        _SYS_CACHESTAT = None  # ENOSYS: an older kernel
        return False
    return st.cache * mmap.PAGESIZE >= length


class LocalStore(ObjectStore):
    OPEN_FILES = 64

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        os.makedirs(self.root, exist_ok=True)
        self._made_dirs: set[str] = set()
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._dfds: OrderedDict[str, int] = OrderedDict()
        self._direct = True  # until the filesystem refuses O_DIRECT
        self._fd_lock = threading.Lock()

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise PfsError(f"invalid object key '{key}'")
        return os.path.join(self.root, key)

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self.put_parts(key, [data])

    def put_parts(self, key: str, parts: list) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        if directory not in self._made_dirs:
            os.makedirs(directory, exist_ok=True)
            self._made_dirs.add(directory)
        tmp = os.path.join(
            directory, f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident():x}-{os.path.basename(path)}"
        )
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for part in parts:
                    view = memoryview(part)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(
                    f"no space left on device under {self.root}; free some space and retry"
                ) from None
            raise

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return os.pread(self._fd(key), length, offset)

    def read_into(self, key: str, offset: int, length: int, buf: bytearray | memoryview) -> memoryview:
        # From the page cache when the pack is there (a fresh write, a hot
        # pack); otherwise straight from the disk into ``buf`` with O_DIRECT:
        # no copy through the page cache, and a big read does not push the
        # mount's own cached pages out with pack pages nobody reads twice.
        view = memoryview(buf)
        fd = self._fd(key)
        dfd = self._fd(key, direct=True) if self._direct and not cached(fd, offset, length) else None
        if dfd is None:
            got = os.preadv(fd, [view[:length]], offset)
            return view[:got]
        start = offset - offset % DIRECT_ALIGN
        end = -(-(offset + length) // DIRECT_ALIGN) * DIRECT_ALIGN
        got = os.preadv(dfd, [view[: end - start]], start)
        lo = offset - start
        return view[lo : lo + max(0, min(length, got - lo))]

    def _fd(self, key: str, direct: bool = False) -> int | None:
        # Packs are read in many ranges: keep their descriptors open, so the
        # kernel's read-ahead on each pack builds up across chunks.
        fds = self._dfds if direct else self._fds
        fd = fds.get(key)
        if fd is not None:
            return fd
        try:
            fd = os.open(self._path(key), os.O_RDONLY | (os.O_DIRECT if direct else 0))
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            if direct and exc.errno == errno.EINVAL:  # tmpfs and friends: no O_DIRECT
                self._direct = False
                return None
            raise
        with self._fd_lock:
            if key in fds:
                os.close(fd)
                return fds[key]
            fds[key] = fd
            while len(fds) > self.OPEN_FILES:
                _, old = fds.popitem(last=False)
                os.close(old)
        return fd

    def size(self, key: str) -> int:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def delete(self, key: str) -> None:
        with self._fd_lock:
            fds = [self._fds.pop(key, None), self._dfds.pop(key, None)]
        for fd in fds:
            if fd is not None:
                os.close(fd)
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = []
        for directory, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(directory, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue
                key = base + name
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def cleanup_temporaries(self) -> int:
        """Remove partial writes a crash left behind; returns how many."""
        removed = 0
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TMP_PREFIX):
                    os.unlink(os.path.join(directory, name))
                    removed += 1
        return removed

    def describe(self) -> str:
        return self.root

    def close(self) -> None:
        with self._fd_lock:
            for fds in (self._fds, self._dfds):
                while fds:
                    os.close(fds.popitem()[1])
