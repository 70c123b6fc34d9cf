"""The task on the wire (pps/WORKERS.md, "The task"): one typed, versioned module
shared by the scheduler, which builds tasks, and the shim, which runs them.

Standard library only and no I/O, so the worker side can import it without
pulling in the scheduler, whatever runner (process, container, pod) it runs
under. ``to_dict`` is what travels as JSON; ``from_dict`` is what a worker
trusts: lenient about optional keys left out, strict about paths (nothing in
a task may place a file outside the unit's ``/pfs``) and about the version.

``WIRE`` changes only when a worker of the old version would misread a task;
adding an optional key a worker may ignore does not change it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any, NamedTuple

WIRE = 1  # the version of this format ("wire" in every task)
KINDS = ("job", "service", "spout")


class TaskError(ValueError):
    """A task the worker cannot act on (a bug in the scheduler, or a worker too old for it)."""


def clean_rel(path: str, what: str) -> str:
    """``/a/b/`` -> ``a/b``; refuse anything that would climb out with ``..``."""
    norm = posixpath.normpath("/" + (path or "")).lstrip("/")
    if norm.startswith("..") or "\x00" in norm:
        raise TaskError(f"{what} '{path}' leaves its directory")
    return "" if norm == "." else norm


def clean_name(name: str, what: str) -> str:
    """A single path component (an input's name under /pfs)."""
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise TaskError(f"{what} '{name}' is not a valid directory name")
    return name


def _strs(d: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (d or {}).items()}


@dataclass
class Transform:
    """What to run (long-running tasks have no err_cmd)."""

    cmd: list[str]
    stdin: list[str] = field(default_factory=list)
    err_cmd: list[str] = field(default_factory=list)
    err_stdin: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    accept_return_code: list[int] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": list(self.cmd), "stdin": list(self.stdin), "err_cmd": list(self.err_cmd),
                "err_stdin": list(self.err_stdin), "env": dict(self.env),
                "accept_return_code": list(self.accept_return_code), "user": self.user,
                "working_dir": self.working_dir}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        cmd = [str(c) for c in d.get("cmd") or []]
        if not cmd:
            raise TaskError("the task's transform has no cmd")
        return cls(
            cmd=cmd,
            stdin=[str(x) for x in d.get("stdin") or []],
            err_cmd=[str(x) for x in d.get("err_cmd") or []],
            err_stdin=[str(x) for x in d.get("err_stdin") or []],
            env=_strs(d.get("env")),
            accept_return_code=[int(c) for c in d.get("accept_return_code") or []],
            user=str(d.get("user") or ""),
            working_dir=str(d.get("working_dir") or ""),
        )


@dataclass
class Secret:
    """A secret with its values (only the pipeline's own workers ever receive a task)."""

    name: str
    mount_path: str = ""
    env_var: str = ""
    key: str = ""
    data: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mount_path": self.mount_path, "env_var": self.env_var, "key": self.key,
                "data": dict(self.data)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Secret:
        mount = str(d.get("mount_path") or "")
        if mount and not mount.startswith("/"):
            raise TaskError(f"secret '{d.get('name')}': mount_path '{mount}' must be absolute")
        return cls(
            name=clean_name(str(d.get("name") or ""), "secret name"),
            mount_path=posixpath.normpath(mount) if mount else "",
            env_var=str(d.get("env_var") or ""),
            key=str(d.get("key") or ""),
            data=_strs(d.get("data")),
        )


@dataclass(slots=True)
class FileSpec:
    """One input file of a unit: ``/pfs/<input>/<path>`` holds ``length`` bytes of
    ``repo@commit:src`` from ``offset`` (-1: to the end)."""

    input: str
    path: str  # relative to /pfs/<input>
    repo: str
    commit: str
    src: str
    offset: int = 0
    length: int = -1
    size: int = 0
    empty: bool = False  # input.pfs.empty_files: an empty file stands for it
    lazy: bool = False  # input.pfs.lazy: served on demand (the FUSE view), not copied in first

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "path": self.path, "repo": self.repo, "commit": self.commit, "src": self.src,
                "offset": self.offset, "length": self.length, "size": self.size, "empty": self.empty,
                "lazy": self.lazy}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileSpec:
        path = clean_rel(str(d.get("path") or ""), "file path")
        if not path:
            raise TaskError("a file of the task has an empty path")
        return cls(
            input=clean_name(str(d.get("input") or ""), "input name"),
            path=path,
            repo=str(d.get("repo") or ""),
            commit=str(d.get("commit") or ""),
            src=str(d.get("src") or d.get("path") or ""),
            offset=int(d.get("offset") or 0),
            length=-1 if d.get("length") is None else int(d["length"]),
            size=int(d.get("size") or 0),
            empty=bool(d.get("empty")),
            lazy=bool(d.get("lazy")),
        )

    def piece(self) -> tuple[str, str, str, int, int]:
        """What to read, as a hashable key (identical pieces are read once)."""
        return (self.repo, self.commit, self.src, self.offset, self.length)


class Dir(NamedTuple):
    """A directory a datum names (a glob matching a directory): ``/pfs/<input>/<path>``."""

    input: str
    path: str  # relative to /pfs/<input> ("" for /pfs/<input> itself)

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "path": self.path}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Dir:
        return cls(clean_name(str(d.get("input") or ""), "input name"), clean_rel(str(d.get("path") or ""), "dir path"))


@dataclass
class Unit:
    """What a worker runs the user code on once: one datum, or a chunk of datums together."""

    unit_id: str
    datums: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: list[FileSpec] = field(default_factory=list)
    dirs: list[Dir] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"unit_id": self.unit_id, "datums": list(self.datums), "env": dict(self.env),
                "files": [f.to_dict() for f in self.files], "dirs": [x.to_dict() for x in self.dirs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(
            unit_id=str(d.get("unit_id") or ""),
            datums=[str(x) for x in d.get("datums") or []],
            env=_strs(d.get("env")),
            files=[FileSpec.from_dict(f) for f in d.get("files") or []],
            dirs=[Dir.from_dict(x) for x in d.get("dirs") or []],
        )

    @property
    def log_datum(self) -> str:
        """The ``datum`` of this unit's log lines: its datum, or the unit id for a chunk."""
        return self.datums[0] if len(self.datums) == 1 else self.unit_id


@dataclass
class Output:
    """Where a spout's commits go (``output.repo``@``output.branch``)."""

    repo: str
    branch: str = "master"


@dataclass
class Task:
    """One task: some units of a job, or the one unit of a service or spout."""

    task_id: str
    job_id: str  # "": a service or spout (no job)
    pipeline: str
    generation: int
    transform: Transform
    secrets: list[Secret] = field(default_factory=list)
    datum_timeout: float | None = None
    datum_tries: int = 3  # Pachyderm's default
    env: dict[str, str] = field(default_factory=dict)
    prev: tuple[str, str] | None = None  # (repo, commit) of the previous output, 1.x only
    units: list[Unit] = field(default_factory=list)
    kind: str = "job"  # "job" | "service" | "spout" (pps/WORKERS.md, "Spouts and services")
    output: Output | None = None
    spout_overwrite: bool = False  # spout.overwrite: each stream replaces the branch's files
    internal_port: int | None = None  # service.internal_port (informational: the code listens there)
    external_port: int | None = None  # service.external_port (a runner with port mapping publishes it)

    @property
    def long_running(self) -> bool:
        return self.kind in ("service", "spout")

    def to_dict(self) -> dict[str, Any]:
        service = None
        if self.kind == "service":
            service = {"internal_port": self.internal_port, "external_port": self.external_port}
        return {
            "wire": WIRE, "task_id": self.task_id, "job_id": self.job_id or None, "pipeline": self.pipeline,
            "generation": self.generation, "kind": self.kind, "transform": self.transform.to_dict(),
            "secrets": [s.to_dict() for s in self.secrets], "datum_timeout": self.datum_timeout,
            "datum_tries": self.datum_tries, "env": dict(self.env),
            "prev": {"repo": self.prev[0], "commit": self.prev[1]} if self.prev else None,
            "units": [u.to_dict() for u in self.units],
            "output": {"repo": self.output.repo, "branch": self.output.branch} if self.output else None,
            "spout": {"overwrite": self.spout_overwrite} if self.kind == "spout" else None,
            "service": service,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        version = d.get("wire", WIRE)  # a task without the field predates it: version 1
        if version != WIRE:
            raise TaskError(f"the daemon sent a task in wire format {version!r}; this worker reads format {WIRE}: "
                            "upgrade the worker (run the daemon and its workers from the same pachy)")
        prev = d.get("prev")
        timeout = d.get("datum_timeout")
        kind = str(d.get("kind") or "job")
        if kind not in KINDS:
            raise TaskError(f"unknown task kind '{kind}' (this worker knows {', '.join(KINDS)}); upgrade the worker")
        out = d.get("output") or None
        output = Output(str(out.get("repo") or ""), str(out.get("branch") or "master")) if out else None
        if kind == "spout" and (output is None or not output.repo):
            raise TaskError("a spout task has no output repo")
        spout = d.get("spout") or {}
        service = d.get("service") or {}
        return cls(
            task_id=str(d.get("task_id") or ""),
            job_id=str(d.get("job_id") or ""),
            pipeline=str(d.get("pipeline") or ""),
            generation=int(d.get("generation") or 2),
            transform=Transform.from_dict(d.get("transform") or {}),
            secrets=[Secret.from_dict(s) for s in d.get("secrets") or []],
            datum_timeout=float(timeout) if timeout else None,
            datum_tries=max(1, int(d.get("datum_tries") or 3)),
            env=_strs(d.get("env")),
            prev=(str(prev["repo"]), str(prev["commit"])) if prev else None,
            units=[Unit.from_dict(u) for u in d.get("units") or []],
            kind=kind,
            output=output,
            spout_overwrite=bool(spout.get("overwrite")),
            internal_port=int(service["internal_port"]) if service.get("internal_port") else None,
            external_port=int(service["external_port"]) if service.get("external_port") else None,
        )
