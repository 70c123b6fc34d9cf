"""The batch upload stream (``POST .../files``): many files in one request.

A stream of records, each a tag byte, a 4-byte big-endian header length and
a msgpack header:
  b"P" {"path", "overwrite"} followed by data segments (4-byte length, then
       bytes), ended by a zero-length segment: put a file, of any size, even
       one whose size is not known up front (a URL being downloaded);
  b"M" {"path"}: make a directory;
  b"D" {"path"}: delete a file or directory.
A worker's task result (``POST /v1/workers/tasks/{id}/result``, pps/WORKERS.md)
adds b"U" {"unit_id", "state", ...}: a unit header, no data, before that
unit's records. Decoders accept it only when asked (``tags=RESULT_TAGS``), so
a plain file upload can never carry one.
Pure framing, shared by the client and the daemon.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator

import msgpack

PUT, MKDIR, DELETE, UNIT = b"P", b"M", b"D", b"U"
UPLOAD_TAGS = (PUT, MKDIR, DELETE)
RESULT_TAGS = (PUT, MKDIR, DELETE, UNIT)
_U32 = struct.Struct(">I")
SEGMENT = 1 << 20


def encode_header(tag: bytes, header: dict) -> bytes:
    h = msgpack.packb(header, use_bin_type=True)
    return tag + _U32.pack(len(h)) + h


def encode_put(path: str, pieces: Iterable[bytes], overwrite: bool = False) -> Iterator[bytes]:
    yield encode_header(PUT, {"path": path, "overwrite": overwrite})
    for piece in pieces:
        if not piece:
            continue
        if len(piece) < 65536:
            yield _U32.pack(len(piece)) + piece
        else:  # don't copy big pieces just to prepend four bytes
            yield _U32.pack(len(piece))
            yield piece
    yield _U32.pack(0)


def encode_small_put(path: str, data: bytes, overwrite: bool = False) -> bytes:
    """One buffer for a whole small file: cheaper than the generator per file."""
    h = msgpack.packb({"path": path, "overwrite": overwrite}, use_bin_type=True)
    body = _U32.pack(len(data)) + data if data else b""
    return PUT + _U32.pack(len(h)) + h + body + _U32.pack(0)


class Decoder:
    """Incremental parser: feed it bytes as they arrive; it calls back per event.

    ``on_start(tag, header)`` at each record, ``on_data(bytes)`` per segment,
    ``on_end()`` after a put's last segment. Holds at most one segment.
    """

    def __init__(
        self,
        on_start: Callable[[bytes, dict], None],
        on_data: Callable[[memoryview], None],
        on_end: Callable[[], None],
        tags: tuple[bytes, ...] = UPLOAD_TAGS,
    ):
        self._tags = tags
        self._buf = bytearray()
        self._state = "tag"
        self._need = 1
        self._tag = b""
        self.on_start, self.on_data, self.on_end = on_start, on_data, on_end

    def feed(self, data: bytes) -> None:
        self._buf += data
        buf = self._buf
        pos = 0
        n = len(buf)
        while n - pos >= self._need:
            if self._state == "tag":
                self._tag = bytes(buf[pos : pos + 1])
                if self._tag not in self._tags:
                    raise ValueError(f"bad record tag {self._tag!r} in upload stream")
                pos += 1
                self._state, self._need = "hlen", 4
            elif self._state == "hlen":
                self._need = _U32.unpack_from(buf, pos)[0]
                pos += 4
                self._state = "header"
            elif self._state == "header":
                header = msgpack.unpackb(bytes(buf[pos : pos + self._need]), raw=False)
                pos += self._need
                self.on_start(self._tag, header)
                if self._tag == PUT:
                    self._state, self._need = "seglen", 4
                else:
                    self._state, self._need = "tag", 1
            elif self._state == "seglen":
                seg = _U32.unpack_from(buf, pos)[0]
                pos += 4
                if seg == 0:
                    self.on_end()
                    self._state, self._need = "tag", 1
                else:
                    self._state, self._need = "segment", seg
            else:  # segment
                with memoryview(buf) as mv:
                    self.on_data(mv[pos : pos + self._need])
                pos += self._need
                self._state, self._need = "seglen", 4
        del buf[:pos]

    def close(self) -> None:
        if self._buf or self._state != "tag":
            raise ValueError("upload stream ended in the middle of a record")
