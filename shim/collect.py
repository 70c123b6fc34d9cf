"""What a unit wrote to ``/pfs/out``, as a list of actions, and the bytes to send.

``plan`` walks the unit's out directory right after the run and decides,
per path, what the upload says (pps/WORKERS.md):

- 2.x: every file is a whole put; an empty directory a mkdir.
- 1.x (``/pfs/out`` started as a copy of the previous output): a file
  whose stamp (size, mtime, ctime, inode) is the copy's is unchanged and
  sends nothing; a file that kept the old bytes as a prefix sends only the
  new bytes (append); anything else a whole put; a path the unit removed a
  delete (one for a whole removed directory).

Symlinks are followed when they point inside ``/pfs`` (a unit may link an
input into its output rather than copy it); one pointing outside, or to
nothing, fails the unit: the worker's own files are not the unit's to
publish. Planning reads no file contents except to compare a 1.x file
with its old version; ``pieces`` streams a file at upload time, one
piece of at most ``PIECE`` bytes at a time.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

PIECE = 1 << 20
MAX_HOPS = 40  # symlinks followed for one path, as the kernel's ELOOP limit


class CollectError(RuntimeError):
    """Something in /pfs/out cannot be published; fails the unit with this reason."""


@dataclass(frozen=True)
class Stamp:
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass
class Baseline:
    """What a 1.x /pfs/out started with (relative paths)."""

    files: dict[str, Stamp] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Action:
    kind: str  # "put" | "append" | "mkdir" | "delete"
    path: str  # as the output commit has it: "/a/b"
    source: str = ""  # put/append: the file to read (on the worker)
    offset: int = 0  # append: send the bytes from here on


@dataclass(frozen=True)
class View:
    """How the unit's paths (/pfs/...) map to the worker's scratch tree."""

    pfs: str  # the unit's /pfs
    prev: str | None = None  # what is bound read-only at /pfs/prev
    lazy: dict[str, str] = field(default_factory=dict)  # input -> its FUSE view, bound at /pfs/<input>

    def host(self, view_path: str) -> str | None:
        """The worker's path for a path the unit sees; None if outside /pfs."""
        for name, src in self.lazy.items():
            at = f"/pfs/{name}"
            if view_path == at or view_path.startswith(at + "/"):
                return src + view_path[len(at) :]
        if self.prev is not None and (view_path == "/pfs/prev" or view_path.startswith("/pfs/prev/")):
            return self.prev + view_path[len("/pfs/prev") :]
        if view_path.startswith("/pfs/"):
            return self.pfs + view_path[len("/pfs") :]
        return None


def snapshot(out: str) -> Baseline:
    """The stamps of every file under ``out`` (taken right after copying prev there)."""
    base = Baseline()
    for rel, entry in _scan(out, ""):
        if entry.is_dir(follow_symlinks=False):
            base.dirs.add(rel)
        else:
            base.files[rel] = Stamp.of(entry.stat(follow_symlinks=False))
    return base


def _scan(top: str, rel: str) -> Iterator[tuple[str, os.DirEntry]]:
    """Depth first, parents before children; relative paths without a leading slash."""
    with os.scandir(os.path.join(top, rel) if rel else top) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        sub = f"{rel}/{entry.name}" if rel else entry.name
        yield sub, entry
        if entry.is_dir(follow_symlinks=False):
            yield from _scan(top, sub)


def plan(view: View, baseline: Baseline | None = None) -> list[Action]:
    """The actions for the unit's /pfs/out; ``baseline`` given for 1.x."""
    out = os.path.join(view.pfs, "out")
    if os.path.islink(out):
        raise CollectError("/pfs/out was replaced by a symlink; write into the /pfs/out directory instead")
    if not os.path.isdir(out):
        os.makedirs(out)  # the unit removed it: it wrote nothing (1.x: it deleted everything)
    deletes: list[Action] = []
    actions: list[Action] = []
    seen_files: set[str] = set()
    seen_dirs: set[str] = set()
    has_child: set[str] = set()
    for rel, entry in _scan(out, ""):
        parent = rel.rpartition("/")[0]
        has_child.add(parent)
        if entry.is_symlink():
            for path, source in _follow(view, rel):
                has_child.add(posixpath.dirname(path.lstrip("/")))
                actions.append(Action("put", path, source))
            if baseline is not None and rel in baseline.dirs:
                deletes.append(Action("delete", "/" + rel))  # a directory became a link
            seen_files.add(rel)
            continue
        if entry.is_dir(follow_symlinks=False):
            seen_dirs.add(rel)
            continue
        if not entry.is_file(follow_symlinks=False):
            raise CollectError(
                f"/pfs/out/{rel} is a {_kind(entry)}; only files, directories and symlinks "
                f"into /pfs can be output"
            )
        seen_files.add(rel)
        action = _file_action(view, rel, entry, baseline)
        if action is not None:
            actions.append(action)
    for rel in sorted(seen_dirs):
        if rel not in has_child and (baseline is None or rel not in baseline.dirs):
            actions.append(Action("mkdir", "/" + rel))
    if baseline is not None:
        deletes.extend(_deletes(baseline, seen_files, seen_dirs))
    return deletes + actions


def _file_action(view: View, rel: str, entry: os.DirEntry, baseline: Baseline | None) -> Action | None:
    source = entry.path
    path = "/" + rel
    if baseline is None or view.prev is None:
        return Action("put", path, source)
    old = baseline.files.get(rel)
    if old is None:
        return Action("put", path, source)
    st = entry.stat(follow_symlinks=False)
    if Stamp.of(st) == old:
        return None
    before = os.path.join(view.prev, rel)
    try:
        old_size = os.stat(before).st_size
    except OSError:
        return Action("put", path, source)
    if st.st_size < old_size or not _same_prefix(before, source, old_size):
        return Action("put", path, source)
    if st.st_size == old_size:
        return None  # rewritten with the same bytes
    return Action("append", path, source, old_size)


def _deletes(baseline: Baseline, files: set[str], dirs: set[str]) -> Iterator[Action]:
    """A delete per removed path; a removed directory once, not per file in it."""
    gone_dirs = sorted(d for d in baseline.dirs if d not in dirs)
    gone_tops: list[str] = []
    for d in gone_dirs:
        if not any(d.startswith(top + "/") for top in gone_tops):
            gone_tops.append(d)
    for d in gone_tops:
        yield Action("delete", "/" + d)
    for f in sorted(baseline.files):
        if f in files or any(f.startswith(top + "/") for top in gone_tops):
            continue
        yield Action("delete", "/" + f)


def _same_prefix(a: str, b: str, n: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while n > 0:
            want = min(PIECE, n)
            x, y = fa.read(want), fb.read(want)
            if x != y or len(x) < want:
                return False
            n -= want
    return True


def _follow(view: View, rel: str) -> Iterator[tuple[str, str]]:
    """(output path, worker file) for a symlink in /pfs/out: one file, or a whole tree."""
    target = _resolve(view, f"/pfs/out/{rel}")
    host = view.host(target)
    assert host is not None
    try:
        st = os.stat(host)
    except OSError:
        raise CollectError(f"/pfs/out/{rel} is a symlink to {target}, which does not exist") from None
    if stat.S_ISREG(st.st_mode):
        yield "/" + rel, host
        return
    if not stat.S_ISDIR(st.st_mode):
        raise CollectError(f"/pfs/out/{rel} is a symlink to {target}, which is not a file or directory")
    if target == "/pfs/out" or target.startswith(f"/pfs/out/{rel}/") or f"/pfs/out/{rel}".startswith(target + "/"):
        raise CollectError(f"/pfs/out/{rel} is a symlink to {target}, which contains it; link something else")
    for sub, entry in _scan(host, ""):
        if entry.is_dir(follow_symlinks=False):
            continue
        if entry.is_symlink():
            yield from _follow_nested(view, f"{target}/{sub}", f"{rel}/{sub}")
        elif entry.is_file(follow_symlinks=False):
            yield f"/{rel}/{sub}", entry.path


def _follow_nested(view: View, target: str, rel: str) -> Iterator[tuple[str, str]]:
    end = _resolve(view, target, shown=f"/pfs/out/{rel}")
    host = view.host(end)
    if host is None or not os.path.isfile(host):
        raise CollectError(f"/pfs/out/{rel} is a symlink to {end}, which is not a file inside /pfs")
    yield "/" + rel, host


def _resolve(view: View, path: str, shown: str | None = None) -> str:
    """Resolve symlinks the way the unit saw them, refusing to leave /pfs."""
    shown = shown or path
    done = "/"
    todo = [p for p in path.split("/") if p][::-1]
    hops = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            done = posixpath.dirname(done)
            continue
        cand = posixpath.join(done, part)
        host = view.host(cand)
        if host is None:
            if cand in ("/pfs",):
                done = cand
                continue
            raise CollectError(
                f"{shown} is a symlink that leads to {cand}{'/' + '/'.join(todo[::-1]) if todo else ''}, "
                f"outside /pfs; copy the file into /pfs/out instead of linking it"
            )
        if os.path.islink(host):
            hops += 1
            if hops > MAX_HOPS:
                raise CollectError(f"{shown}: too many levels of symlinks")
            link = os.readlink(host)
            if link.startswith("/"):
                done = "/"
            todo.extend(p for p in reversed(link.split("/")) if p)
            continue
        done = cand
    if view.host(done) is None:
        raise CollectError(f"{shown} is a symlink to {done}, outside /pfs; copy the file into /pfs/out instead")
    return done


def _kind(entry: os.DirEntry) -> str:
    mode = entry.stat(follow_symlinks=False).st_mode
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device")):
        if test(mode):
            return name
    return "special file"


def pieces(source: str, offset: int = 0) -> Iterator[bytes]:
    """A file's bytes from ``offset``, one piece of at most PIECE bytes at a time."""
    with open(source, "rb") as f:
        if offset:
            f.seek(offset)
        while True:
            piece = f.read(PIECE)
            if not piece:
                return
            yield piece
