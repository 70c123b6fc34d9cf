"""The API's models: what crosses HTTP, shared by mountd and the client.

Kept free of server code so `pachctl` can import them alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pfsfuse import errors  # the API's error kinds, re-exported for clients


class Version(BaseModel):
    version: str
    store: str
    home: str
    pid: int


class Repo(BaseModel):
    name: str
    created: float
    description: str = ""
    size: int = 0
    branches: list[str] = Field(default_factory=list)


class CreateRepo(BaseModel):
    name: str
    description: str = ""


class Commit(BaseModel):
    id: str
    repo: str
    branch: str | None = None
    seq: int | None = None
    ref: str
    parent: str | None = None
    parent_ref: str | None = None
    started: float
    finished: float | None = None
    size: int = Field(0, description="bytes of the commit's whole tree (what the repo holds at this commit)")
    written: int = Field(
        0,
        description="bytes of file content this commit wrote (0 while open): new files whole, appends the "
        "appended bytes, overwrites the new file; deletes, truncations and renames 0. "
        "list-commit's SIZE, as Pachyderm 1.x showed it",
    )
    archived: bool = False
    description: str = ""
    provenance: list[dict] = Field(default_factory=list)
    children: list[str] = Field(default_factory=list)


class StartCommit(BaseModel):
    branch: str | None = "master"
    parent: str | None = None
    description: str = ""


class ForkCommit(BaseModel):
    parent: str
    branch: str


class SquashCommit(BaseModel):
    sources: list[str] = Field(alias="from")
    to: str


class ReplayCommits(BaseModel):
    sources: list[str] = Field(alias="from")
    branch: str


class Branch(BaseModel):
    repo: str
    name: str
    head: str | None = None
    head_ref: str | None = None


class SetBranch(BaseModel):
    head: str | None = None


class FileInfo(BaseModel):
    path: str
    type: str
    size: int
    mtime: float
    chunks: int = 0
    last_commit: str | None = Field(
        None, description="the commit that last modified it (branch/N, or the id of a commit on no branch)"
    )


class PutResult(BaseModel):
    files: int
    bytes: int
    stored: int = Field(description="bytes written to new pack objects (after dedup and compression)")
    commit: Commit | None = Field(None, description="the commit made, for a new_commit upload")


class DiffEntry(BaseModel):
    path: str
    status: str
    old_size: int | None = None
    new_size: int | None = None


class FsckReport(BaseModel):
    ok: bool
    commits: int
    nodes: int
    chunks: int
    problems: list[str]


class GcReport(BaseModel):
    packs_deleted: int
    packs_rewritten: int
    bytes_freed: int
    chunks_freed: int
    nodes_freed: int


class Error(BaseModel):
    """Every error answer: a one-line message and the kind of ``pfsfuse.errors`` it is."""

    error: str
    kind: str


def failure_responses(*failures: type[errors.PfsError]) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for the error classes it can raise: one entry per
    HTTP status (the classes own their status), naming the kinds it covers, so
    the OpenAPI lists what the route really answers."""
    kinds: dict[int, list[str]] = {}
    for cls in failures:
        if cls.kind not in kinds.setdefault(cls.http_status, []):
            kinds[cls.http_status].append(cls.kind)
    return {status: {"model": Error, "description": "error kinds: " + ", ".join(k)} for status, k in sorted(kinds.items())}


class MountRequest(BaseModel):
    path: str = Field(description="an empty directory on the daemon's machine")
    write: bool = False
    repos: list[str] | None = None
    commit_idle: float | None = Field(None, description="finish a written commit after this many idle seconds")
    allow_other: bool = Field(False, description="let other users read the mount (the kernel checks modes)")


class MountInfo(BaseModel):
    path: str
    write: bool = False
    repos: list[str] | None = None
    allow_other: bool = False


class Event(BaseModel):
    """One message of ``GET /v1/events``: ``cursor`` is its SSE ``id`` (give it back as
    ``since`` or ``Last-Event-ID`` to go on after it), ``kind`` its SSE ``event``, and
    ``data`` its JSON (always with ``kind``, ``cursor``, ``ts``, plus the kind's fields)."""

    cursor: str
    kind: str
    data: dict[str, Any]
