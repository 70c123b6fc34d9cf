"""Names and paths: what is valid, in one place, free of I/O.

Repo and branch names follow the 2.x spec ("Name"): letters, digits, '_' and
'-', starting and ending with a letter or digit, at most 50 characters.
File paths are '/'-separated; a leading '/' is optional and they are stored
without it. A path never holds '..', '.', NUL or an empty component.
"""

from __future__ import annotations

import re

from pfsfuse.errors import InvalidArgument

MAX_NAME = 50
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,48}[A-Za-z0-9])?")
NAME_RULE = (
    "names use letters, digits, '_' and '-', start and end with a letter or digit, "
    f"and have at most {MAX_NAME} characters"
)


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid repo/branch/pipeline name, else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid {kind} name '{name}': {NAME_RULE}")
    return name


def is_valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def clean_path(path: str, *, allow_root: bool = False) -> str:
    """Normalise a file path to its stored form: no leading or trailing '/'.

    The root is '' and is accepted only where a directory is expected.
    """
    if "\x00" in path:
        raise InvalidArgument(f"invalid path {path!r}: paths cannot contain NUL bytes")
    stripped = path.strip("/")
    if not stripped:
        if allow_root:
            return ""
        raise InvalidArgument("invalid path '/': name a file, not the root directory")
    parts = stripped.split("/")
    for part in parts:
        if part == "":
            raise InvalidArgument(f"invalid path '{path}': empty path component ('//')")
        if part in (".", ".."):
            raise InvalidArgument(f"invalid path '{path}': '{part}' is not allowed in paths")
    return stripped


def split_path(path: str) -> tuple[str, str]:
    """'a/b/c' -> ('a/b', 'c'); 'c' -> ('', 'c')."""
    parent, _, name = path.rpartition("/")
    return parent, name


def ancestors(path: str) -> list[str]:
    """Every directory above ``path``, nearest last, excluding the root: 'a/b/c' -> ['a', 'a/b']."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


# Tree keys put a directory's children next to each other: parent + NUL + name.
# NUL sorts below every character allowed in names, so the children of one
# directory form one contiguous key range and readdir is a range scan.
def tree_key(path: str) -> bytes:
    parent, name = split_path(path)
    return parent.encode() + b"\x00" + name.encode()


def key_path(key: bytes) -> str:
    parent, _, name = key.partition(b"\x00")
    return (parent + b"/" + name).decode() if parent else name.decode()


def dir_prefix(directory: str) -> bytes:
    """The key prefix of a directory's immediate children."""
    return directory.encode() + b"\x00"
