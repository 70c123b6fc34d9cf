"""The pipeline API's models: what crosses HTTP for pipelines, jobs, datums and logs.

Kept free of server code so `pachctl` can import them alone.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field


class Note(BaseModel):
    """A spec field that is accepted but cannot act here, and why (JSON path)."""

    path: str
    reason: str


class CreatePipelines(BaseModel):
    """``create-pipeline -f``: the spec text as given (one or several JSON objects)."""

    text: str
    update: bool = False
    reprocess: bool = False  # update: reprocess every datum (2.x --reprocess / 1.x without --no-archive)


class Pipeline(BaseModel):
    name: str
    version: int = 1
    generation: int = 2  # 1: a 1.x spec (inputs/method), 2: a 2.x spec (input)
    state: str  # starting | running | standby | paused | crashing | failure
    stopped: bool = False
    reason: str = ""
    input: str  # a one-line summary: "data:/*", "(a:/* ⨯ b:/*)", "data:map"
    output_repo: str
    output_branch: str = "master"
    description: str = ""
    created: float
    updated: float
    workers: int = 0  # worker processes running now
    last_job: str | None = None
    last_job_state: str | None = None
    spec: dict = Field(default_factory=dict)  # the normalized spec (2.x field names)
    notes: list[Note] = Field(default_factory=list)


class InputCommit(BaseModel):
    name: str  # the input's name (its repo's name unless the spec names it)
    repo: str
    branch: str | None = None
    commit: str


class OutputCommit(BaseModel):
    repo: str
    branch: str | None = None
    commit: str


class Job(BaseModel):
    id: str
    pipeline: str
    pipeline_version: int = 1
    state: str  # created | running | success | failure | killed
    reason: str = ""
    created: float
    started: float | None = None
    finished: float | None = None
    input_commits: list[InputCommit] = Field(default_factory=list)
    output_commit: OutputCommit | None = None
    data_total: int = 0
    data_processed: int = 0
    data_skipped: int = 0
    data_failed: int = 0
    data_recovered: int = 0
    stats_commit: OutputCommit | None = None


class DatumFile(BaseModel):
    input: str
    repo: str
    commit: str
    path: str
    size: int = 0


class Datum(BaseModel):
    id: str
    job: str
    state: str  # starting | running | success | failed | skipped | recovered
    reason: str = ""
    tries: int = 0
    started: float | None = None
    finished: float | None = None
    files: list[DatumFile] = Field(default_factory=list)


class RestartedDatum(Datum):
    """restart-datum's answer: the datum, and whether a worker's run of it was cut short
    (False: it was still waiting for a worker)."""

    restarted: bool = False


class RunPipeline(BaseModel):
    """``run-pipeline``: a job now, on the inputs' heads or the commits given."""

    commits: list[InputCommit] = Field(default_factory=list)


class Flush(BaseModel):
    """``flush-commit``/``wait commit``: wait for everything downstream of these commits."""

    commits: list[OutputCommit]  # repo + commit ref (branch names allowed)
    repos: list[str] = Field(default_factory=list)  # only these downstream repos, if given
    timeout: float | None = None


class FlushResult(BaseModel):
    commits: list[dict] = Field(default_factory=list)  # models.Commit dicts, downstream, finished
    failed_jobs: list[Job] = Field(default_factory=list)


class LogLine(BaseModel):
    ts: float
    pipeline: str
    job: str | None = None
    datum: str | None = None
    worker: str | None = None
    user: bool = True
    message: str


class Secret(BaseModel):
    name: str
    data: dict[str, str]


class ReadItem(BaseModel):
    """One file range a worker reads (``POST /v1/workers/read``)."""

    repo: str
    commit: str
    path: str
    offset: int = Field(0, ge=0, le=2**63 - 1)
    length: int = Field(-1, ge=-1, le=2**63 - 1, description="-1: to the end of the file")


class ReadBatch(BaseModel):
    items: list[ReadItem] = Field(default_factory=list)


class WorkerLogLine(BaseModel):
    """One line of ``POST /v1/workers/logs`` (NDJSON). The job names the log file
    it lands in, so it must be a job id (or empty: a spout's or service's line).
    Strict: a worker writes these, so ``"ts": false`` is a bug to report, not 0."""

    model_config = ConfigDict(strict=True)

    pipeline: str
    job: str | None = Field(None, pattern=r"^([0-9a-f]{32})?$")
    datum: str | None = None
    worker: str | None = None
    user: bool = True
    message: str
    ts: float = Field(default_factory=time.time, allow_inf_nan=False)
