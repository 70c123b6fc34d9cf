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


# C0 controls, DEL and C1 controls: a terminal acts on them (ESC starts an
# escape sequence), so they are refused in anything a user names and escaped
# wherever a name is shown.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What a commit id looks like (a uuid4 in hex): a branch with such a name
# would shadow the commit it reads as (refs resolve a branch first).
COMMIT_ID = re.compile(r"[0-9a-f]{32}")


def escape(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\n``):
    safe to echo to a terminal, and still telling the user what was there."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid repo/branch/pipeline name, else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(f"invalid {kind} name '{escape(str(name))}': {NAME_RULE}")
    return name


def check_branch_name(name: str) -> str:
    """A name for a new branch: a valid name that cannot be read as a commit
    id (refs resolve a branch first, so it would hide the commit)."""
    check_name("branch", name)
    if COMMIT_ID.fullmatch(name):
        raise InvalidArgument(f"invalid branch name '{name}': it reads as a commit id (32 hex digits)")
    return name


def is_valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def clean_path(path: str, *, allow_root: bool = False) -> str:
    """Normalise a file path to its stored form: no leading or trailing '/'.

    The root is '' and is accepted only where a directory is expected.
    """
    if "\x00" in path:
        raise InvalidArgument(f"invalid path '{escape(path)}': paths cannot contain NUL bytes")
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


NAME_MAX = 255  # bytes of one path component, as every Linux file system (and the mount) allows


def check_new_path(path: str) -> str:
    """A path a client asks to create (put-file, mkdir): ``clean_path`` plus
    no control characters, and no trailing '/' (that names a directory, and
    would otherwise be silently stored as a file)."""
    if CONTROL.search(path):
        raise InvalidArgument(
            f"invalid path '{escape(path)}': paths cannot contain control characters (newlines, ESC, ...)"
        )
    clean = clean_path(path)
    if path.endswith("/"):
        raise InvalidArgument(f"invalid path '{path}': a file path cannot end in '/'; name the file")
    for part in clean.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise InvalidArgument(
                f"invalid path '{escape(path)}': a name is at most {NAME_MAX} bytes (as on a local disk)"
            )
    return clean


def check_glob(pattern: str) -> str:
    """Refuse what no glob means: a '[' class never closed (as in '/[a-') or
    a trailing '\\' (as the pipelines' globs do, pps/datums.py). Otherwise
    fnmatch would read the '[' as a plain character and match nothing, silently."""
    if CONTROL.search(pattern):
        raise InvalidArgument(f"invalid glob pattern '{escape(pattern)}': it holds control characters")
    for part in pattern.split("/"):
        i = 0
        while i < len(part):
            c = part[i]
            if c == "\\" and i == len(part) - 1:
                raise InvalidArgument(f"invalid glob pattern '{pattern}': it ends in an unfinished escape '\\'")
            if c == "[":
                j = i + 1
                if j < len(part) and part[j] in "!^":
                    j += 1
                if j < len(part) and part[j] == "]":
                    j += 1  # a ']' first is a member, not the end
                end = part.find("]", j)
                if end < 0:
                    raise InvalidArgument(f"invalid glob pattern '{pattern}': unterminated '[' (a class needs its ']')")
                i = end
            i += 1
    return pattern


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
