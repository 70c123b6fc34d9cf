"""File and directory entries as stored in commit trees (msgpack values).

  file: [0, size, mtime_ns, inline_refs, list_ref]
  dir:  [1, size, mtime_ns]

A file's content is its chunk list: ``(hash, size)`` pairs. Short lists live
inline, flattened; a long list (a big file) is stored once as its own
content-addressed blob (``list_ref``) so a tree leaf stays small however big
the file. A directory's size is the total of the files below it, kept up to
date when a commit finishes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgpack

FILE = 0
DIR = 1
INLINE_REFS = 32

ChunkRef = tuple[bytes, int]


@dataclass(slots=True)
class Entry:
    kind: int
    size: int
    mtime_ns: int
    refs: list[ChunkRef] | None = None  # None when stored behind list_ref
    list_ref: bytes | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR

    @property
    def type_name(self) -> str:
        return "dir" if self.kind == DIR else "file"


def encode(entry: Entry) -> bytes:
    if entry.kind == DIR:
        return msgpack.packb([DIR, entry.size, entry.mtime_ns], use_bin_type=True)
    flat = None
    if entry.refs is not None:
        flat = [x for ref in entry.refs for x in ref]
    return msgpack.packb([FILE, entry.size, entry.mtime_ns, flat, entry.list_ref], use_bin_type=True)


def decode(data: bytes) -> Entry:
    v = msgpack.unpackb(data, raw=False)
    if v[0] == DIR:
        return Entry(DIR, v[1], v[2])
    flat = v[3]
    refs = None if flat is None else [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    return Entry(FILE, v[1], v[2], refs, v[4])


def decode_stat(data: bytes) -> tuple[bool, int, int]:
    """(is a directory, size, mtime_ns) without building the chunk list: listings."""
    v = msgpack.unpackb(data, raw=False)
    return v[0] == DIR, v[1], v[2]


def encode_ref_list(refs: list[ChunkRef]) -> bytes:
    return msgpack.packb([x for ref in refs for x in ref], use_bin_type=True)


def decode_ref_list(data: bytes) -> list[ChunkRef]:
    flat = msgpack.unpackb(data, raw=False)
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def content_key(raw: bytes) -> str:
    """A file value's content identity (its chunk list), blind to mtime: equal keys, equal bytes."""
    v = msgpack.unpackb(raw, raw=False)
    if v[0] == DIR:
        return ""
    body = v[4] if v[4] is not None else msgpack.packb(v[3], use_bin_type=True)
    return hashlib.blake2b(body, digest_size=16).hexdigest()
