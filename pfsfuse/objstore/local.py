"""The embedded default: objects as files under a directory.

A put writes a temporary name in the same directory, fsyncs it and renames it
over the final name, so a crash leaves either the whole object or a stray
``.tmp-*`` file that ``cleanup_temporaries`` removes at daemon start.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

from pfsfuse.errors import NoSpace, PfsError
from pfsfuse.objstore.base import ObjectMissing, ObjectStore

TMP_PREFIX = ".tmp-"


class LocalStore(ObjectStore):
    OPEN_FILES = 64

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        os.makedirs(self.root, exist_ok=True)
        self._made_dirs: set[str] = set()
        self._fds: OrderedDict[str, int] = OrderedDict()
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
        # Packs are read in many ranges: keep their descriptors open, so the
        # kernel's read-ahead on each pack builds up across chunks.
        fd = self._fds.get(key)
        if fd is None:
            try:
                fd = os.open(self._path(key), os.O_RDONLY)
            except FileNotFoundError:
                raise ObjectMissing(key) from None
            with self._fd_lock:
                if key in self._fds:
                    os.close(fd)
                    fd = self._fds[key]
                else:
                    self._fds[key] = fd
                    while len(self._fds) > self.OPEN_FILES:
                        _, old = self._fds.popitem(last=False)
                        os.close(old)
        return os.pread(fd, length, offset)

    def size(self, key: str) -> int:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def delete(self, key: str) -> None:
        with self._fd_lock:
            fd = self._fds.pop(key, None)
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
            while self._fds:
                os.close(self._fds.popitem()[1])
