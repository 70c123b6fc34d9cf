"""The task a worker receives (pps/WORKERS.md, "The task"), as typed objects.

Parsing is lenient about missing optional keys (the scheduler may leave
defaults out) and strict about paths: nothing in a task may place a file
outside the unit's ``/pfs``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any


class TaskError(ValueError):
    """A task the shim cannot act on (a bug in the scheduler, not in user code)."""


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


@dataclass
class Transform:
    cmd: list[str]
    stdin: list[str] = field(default_factory=list)
    err_cmd: list[str] = field(default_factory=list)
    err_stdin: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    accept_return_code: list[int] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        cmd = list(d.get("cmd") or [])
        if not cmd:
            raise TaskError("the task's transform has no cmd")
        return cls(
            cmd=cmd,
            stdin=list(d.get("stdin") or []),
            err_cmd=list(d.get("err_cmd") or []),
            err_stdin=list(d.get("err_stdin") or []),
            env={str(k): str(v) for k, v in (d.get("env") or {}).items()},
            accept_return_code=[int(c) for c in d.get("accept_return_code") or []],
            user=str(d.get("user") or ""),
            working_dir=str(d.get("working_dir") or ""),
        )


@dataclass
class Secret:
    name: str
    mount_path: str = ""
    env_var: str = ""
    key: str = ""
    data: dict[str, str] = field(default_factory=dict)

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
            data={str(k): str(v) for k, v in (d.get("data") or {}).items()},
        )


@dataclass
class FileSpec:
    input: str
    path: str  # relative to /pfs/<input>
    repo: str
    commit: str
    src: str
    offset: int = 0
    length: int = -1
    size: int = 0
    empty: bool = False
    lazy: bool = False  # input.pfs.lazy: served through the worker's FUSE view, not copied

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


@dataclass
class Unit:
    unit_id: str
    datums: list[str]
    env: dict[str, str]
    files: list[FileSpec]
    dirs: list[tuple[str, str]]  # (input, path relative to /pfs/<input>)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Unit:
        return cls(
            unit_id=str(d.get("unit_id") or ""),
            datums=[str(x) for x in d.get("datums") or []],
            env={str(k): str(v) for k, v in (d.get("env") or {}).items()},
            files=[FileSpec.from_dict(f) for f in d.get("files") or []],
            dirs=[
                (clean_name(str(x.get("input") or ""), "input name"), clean_rel(str(x.get("path") or ""), "dir path"))
                for x in d.get("dirs") or []
            ],
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


KINDS = ("job", "service", "spout")


@dataclass
class Task:
    task_id: str
    job_id: str
    pipeline: str
    generation: int
    transform: Transform
    secrets: list[Secret]
    datum_timeout: float | None
    datum_tries: int
    env: dict[str, str]
    prev: tuple[str, str] | None  # (repo, commit) of the previous output, 1.x only
    units: list[Unit]
    kind: str = "job"  # "job" | "service" | "spout" (pps/WORKERS.md, "Spouts and services")
    output: Output | None = None
    spout_overwrite: bool = False  # spout.overwrite: each stream replaces the branch's files
    internal_port: int | None = None  # service.internal_port (informational: the code listens there)

    @property
    def long_running(self) -> bool:
        return self.kind in ("service", "spout")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
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
            datum_tries=max(1, int(d.get("datum_tries") or 3)),  # Pachyderm's default
            env={str(k): str(v) for k, v in (d.get("env") or {}).items()},
            prev=(str(prev["repo"]), str(prev["commit"])) if prev else None,
            units=[Unit.from_dict(u) for u in d.get("units") or []],
            kind=kind,
            output=output,
            spout_overwrite=bool(spout.get("overwrite")),
            internal_port=int(service["internal_port"]) if service.get("internal_port") else None,
        )
