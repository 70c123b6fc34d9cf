"""A task's inputs as files: one batched read per task, one ``/pfs`` tree per unit.

Layout under the task's scratch directory::

    <task>/<i>/                  unit i's /pfs (bound there)
    <task>/<i>/<input>/...       its inputs
    <task>/<i>/out/              what it writes (1.x: starts as a copy of prev)
    <task>/<i>/prev/             an empty mount point (1.x): prev is bound here read-only
    <task>/prev/...              the previous output commit (1.x), read once per task
    <task>/secrets/<name>/<key>  secrets with a mount_path outside /pfs
    <task>/<i>/<lazy input>      an empty mount point: the unit's FUSE view of that
                                 input is bound there (or, ``Lazy.links``, a symlink
                                 to ``<mount>/current/<input>``); nothing is copied

Unit directories are numbered, not named after unit ids: ids are the
scheduler's business and need not be safe file names. Identical inputs of
several units (a cross product repeats files) are read once and copied.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from shim import collect, sandbox
from shim.task import FileSpec, Task, TaskError, Unit, clean_rel

Piece = tuple[str, str, str, int, int]  # (repo, commit, src, offset, length)
RESERVED_1X = ("out", "prev")  # /pfs/prev exists only for 1.x specs: a 2.x input may be named "prev"


# The name under the lazy inputs' mount that always shows the running unit
# (shim.lazyfs takes it from here: materializing must not need pyfuse3).
LAZY_CURRENT = "current"


class Reader(Protocol):
    """What materializing needs from the daemon (``link.Link`` in production)."""

    def read_batch(self, items: list[dict]) -> Iterator[Iterator[bytes]]:
        """Per item, in order, an iterator of its bytes (consume each before the next)."""
        ...

    def walk(self, repo: str, commit: str) -> list[dict]:
        """Every file and directory of a commit: ``{"path", "type": "file"|"dir", "size"}``."""
        ...


class MaterializeError(RuntimeError):
    """The inputs could not be laid out (a conflict in the task, a full disk)."""


@dataclass(frozen=True)
class Lazy:
    """Where lazy inputs come from (``shim.lazyfs``): the worker's mount, and whether a
    unit's ``<input>`` is a symlink to ``<mount>/current/<input>`` (for a runner that
    shows the unit's directory without binds) rather than a mount point to bind on."""

    mount: str
    links: bool = False


@dataclass
class UnitDir:
    index: int
    pfs: str  # bound at /pfs
    out: str
    baseline: collect.Baseline | None = None  # 1.x with a previous output: what out started with
    lazy_inputs: list[str] = field(default_factory=list)  # served by the FUSE view, not copied
    lazy_files: list[FileSpec] = field(default_factory=list)
    lazy_dirs: list[tuple[str, str]] = field(default_factory=list)
    view: str | None = None  # the unit's view directory in the mount, once shown


@dataclass
class TaskDirs:
    root: str
    units: list[UnitDir]
    prev: str | None = None
    secret_binds: list[sandbox.Bind] = field(default_factory=list)
    secret_dirs: list[str] = field(default_factory=list)  # every directory holding secret files
    lazy: Lazy | None = None

    def binds(self, unit: UnitDir) -> list[sandbox.Bind]:
        """What the unit's namespace mounts: its /pfs, its lazy inputs' views, then prev
        and secrets inside or beside it."""
        binds = [sandbox.Bind(unit.pfs, sandbox.PFS)]
        if unit.view is not None and self.lazy is not None and not self.lazy.links:
            binds += [sandbox.Bind(f"{unit.view}/{name}", f"{sandbox.PFS}/{name}", readonly=True, owned=False)
                      for name in unit.lazy_inputs]
        if self.prev is not None:
            binds.append(sandbox.Bind(self.prev, sandbox.PFS + "/prev", readonly=True, owned=False))
        return binds + self.secret_binds

    def reset_out(self, unit: UnitDir) -> None:
        """Put /pfs/out back as the unit started it (before a retry)."""
        shutil.rmtree(unit.out, ignore_errors=True)
        unit.baseline = start_out(unit.out, self.prev)

    def view(self, unit: UnitDir) -> collect.View:
        lazy = {name: f"{unit.view}/{name}" for name in unit.lazy_inputs} if unit.view is not None else {}
        return collect.View(unit.pfs, self.prev, lazy)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def start_out(out: str, prev: str | None) -> collect.Baseline | None:
    """Create /pfs/out: empty (2.x), or a copy of prev (1.x) with the copy's stamps."""
    if prev is None:
        os.makedirs(out, exist_ok=True)
        return None
    # copyfile, not copy2: the stamps taken right after the copy are what
    # "unchanged" is measured against, not prev's own times.
    shutil.copytree(prev, out, symlinks=True, copy_function=shutil.copyfile, dirs_exist_ok=True)
    return collect.snapshot(out)


def materialize(task: Task, root: str, reader: Reader, lazy: Lazy | None = None) -> TaskDirs:
    """Lay out every unit of ``task`` under ``root`` with one ``read_batch``.

    With ``lazy``, the files of lazy inputs are left to the FUSE view (an input is
    lazy in a unit when any of its files is); without it, they are copied too."""
    try:
        return _materialize(task, root, reader, lazy)
    except OSError as exc:
        where = exc.filename or root
        raise MaterializeError(f"cannot lay out the task's inputs at {where}: {exc.strerror}") from None


def _materialize(task: Task, root: str, reader: Reader, lazy: Lazy | None) -> TaskDirs:
    os.makedirs(root, mode=0o700, exist_ok=True)
    dirs = TaskDirs(root, [], lazy=lazy)
    reserved = RESERVED_1X if task.generation == 1 else ("out",)
    made: set[str] = set()

    def mkdir(path: str) -> None:
        if path not in made:
            os.makedirs(path, exist_ok=True)
            made.add(path)

    # Every distinct file content (its list of pieces) is read once, into the
    # first path that wants it; the other paths get a copy afterwards.
    first: dict[tuple[Piece, ...], str] = {}
    copies: list[tuple[str, str]] = []
    wanted: dict[str, list[Piece]] = {}
    for i, unit in enumerate(task.units):
        pfs = os.path.join(root, str(i))
        u = UnitDir(i, pfs, os.path.join(pfs, "out"))
        dirs.units.append(u)
        mkdir(pfs)
        names = _inputs(unit, reserved)
        if lazy is not None:
            u.lazy_inputs = sorted({f.input for f in unit.files if f.lazy})
            u.lazy_files = [f for f in unit.files if f.input in u.lazy_inputs]
            u.lazy_dirs = [(n, "") for n in u.lazy_inputs] + [d for d in unit.dirs if d[0] in u.lazy_inputs]
        for name in names:
            if name not in u.lazy_inputs:
                mkdir(os.path.join(pfs, name))
            elif lazy is not None and lazy.links:
                os.symlink(os.path.join(lazy.mount, LAZY_CURRENT, name), os.path.join(pfs, name))
            else:
                os.mkdir(os.path.join(pfs, name), 0o555)  # only a mount point: the view is bound on it
        for name, rel in unit.dirs:
            if name not in u.lazy_inputs:
                mkdir(os.path.join(pfs, name, rel))
        for path, pieces, empty in _unit_files(unit, pfs, u.lazy_inputs):
            mkdir(os.path.dirname(path))
            if empty or not pieces:
                open(path, "wb").close()
                continue
            key = tuple(pieces)
            if key in first:
                copies.append((first[key], path))
            else:
                first[key] = path
                wanted[path] = pieces

    if task.prev is not None:
        dirs.prev = os.path.join(root, "prev")
        mkdir(dirs.prev)
        repo, commit = task.prev
        for entry in reader.walk(repo, commit):
            rel = clean_rel(str(entry.get("path", "")), "path of the previous output")
            if not rel:
                continue
            path = os.path.join(dirs.prev, rel)
            if entry.get("type") == "dir":
                mkdir(path)
            else:
                mkdir(os.path.dirname(path))
                wanted[path] = [(repo, commit, "/" + rel, 0, -1)]

    _fetch(reader, wanted)
    for src, dst in copies:
        shutil.copyfile(src, dst)
    _write_secrets(task, dirs, reserved)
    for u in dirs.units:
        if dirs.prev is not None:
            mkdir(os.path.join(u.pfs, "prev"))  # the mount point for the read-only bind
        u.baseline = start_out(u.out, dirs.prev)
    return dirs


def _inputs(unit: Unit, reserved: tuple[str, ...]) -> list[str]:
    names = {f.input for f in unit.files} | {name for name, _ in unit.dirs}
    for name in names:
        if name in reserved:
            raise TaskError(f"an input is named '{name}', which /pfs reserves; rename the input")
    return sorted(names)


def _unit_files(unit: Unit, pfs: str, skip: list[str]) -> Iterator[tuple[str, list[Piece], bool]]:
    """(path, pieces in order, empty) per file but those of the inputs in ``skip``;
    pieces of one path are concatenated."""
    order: list[str] = []
    pieces: dict[str, list[Piece]] = {}
    empty: dict[str, bool] = {}
    for f in unit.files:
        if f.input in skip:
            continue
        path = os.path.join(pfs, f.input, f.path)
        if path not in pieces:
            order.append(path)
            pieces[path] = []
            empty[path] = False
        if f.empty:
            empty[path] = True
        else:
            pieces[path].append(f.piece())
    for path in order:
        yield path, pieces[path], empty[path]


def _fetch(reader: Reader, wanted: dict[str, list[Piece]]) -> None:
    """One request for every piece; each piece streams into its file."""
    if not wanted:
        return
    items: list[dict] = []
    sinks: list[tuple[str, bool]] = []  # (path, first piece of that path)
    for path, pieces in wanted.items():
        for n, (repo, commit, src, offset, length) in enumerate(pieces):
            items.append({"repo": repo, "commit": commit, "path": src, "offset": offset, "length": length})
            sinks.append((path, n == 0))
    out = None
    try:
        for (path, fresh), chunks in zip(sinks, reader.read_batch(items), strict=True):
            if fresh:
                if out is not None:
                    out.close()
                out = open(path, "wb")  # noqa: SIM115 - kept open across this path's pieces
            for chunk in chunks:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()


def _write_secrets(task: Task, dirs: TaskDirs, reserved: tuple[str, ...]) -> None:
    """Secrets with a mount_path: files ``<mount_path>/<key>``, private to the unit."""
    for s in task.secrets:
        if not s.mount_path:
            continue
        if s.mount_path == sandbox.PFS or s.mount_path.startswith(sandbox.PFS + "/"):
            rel = clean_rel(s.mount_path[len(sandbox.PFS) :], "secret mount_path")
            if not rel or rel.split("/")[0] in reserved:
                raise TaskError(f"secret '{s.name}': mount_path '{s.mount_path}' would hide /pfs/out or /pfs/prev")
            targets = [os.path.join(u.pfs, rel) for u in dirs.units]
        else:
            src = os.path.join(dirs.root, "secrets", s.name)
            sandbox.ensure_mountpoint(s.mount_path)
            dirs.secret_binds.append(sandbox.Bind(src, s.mount_path, readonly=True))
            targets = [src]
        for target in targets:
            os.makedirs(target, mode=0o700, exist_ok=True)
            dirs.secret_dirs.append(target)
            for key, value in s.data.items():
                name = clean_rel(key, f"key of secret '{s.name}'")
                fd = os.open(os.path.join(target, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(value)
