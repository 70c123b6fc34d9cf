"""The interface every object store implements.

Objects are immutable byte strings under string keys such as
``packs/ab/abcdef...``. The contract each backend keeps (and
tests/test_objstore.py checks for all of them alike):

- ``put`` is atomic: a reader sees the whole object or no object, never a
  prefix. Putting a key again replaces it whole.
- ``get``/``get_range``/``size`` on a missing key raise ``ObjectMissing``.
- ``delete`` of a missing key is not an error.
- ``list(prefix)`` yields every key that starts with ``prefix``, sorted.
- A full disk raises ``pfsfuse.errors.NoSpace`` and leaves nothing behind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from pfsfuse.errors import NotFound

DIRECT_ALIGN = 4096  # O_DIRECT offsets, lengths and buffers are multiples of this


class ObjectMissing(NotFound):
    """An object the metadata refers to is not in the store."""

    def __init__(self, key: str):
        super().__init__(f"object '{key}' is missing from the object store")
        self.key = key


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None: ...

    def put_parts(self, key: str, parts: list[bytes]) -> None:
        """Put an object given as consecutive parts (saves joining big buffers)."""
        self.put(key, b"".join(parts))

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    def read_into(self, key: str, offset: int, length: int, buf: bytearray | memoryview) -> memoryview:
        """``length`` bytes at ``offset``, read into ``buf`` where the backend can
        (which saves allocating a fresh buffer per read); the result is a view of
        ``buf`` or of new bytes. ``buf`` holds at least ``length + 2 * DIRECT_ALIGN``."""
        return memoryview(self.get_range(key, offset, length))

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the objects live, for `pachctl version` and error messages."""

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectMissing:
            return False
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
