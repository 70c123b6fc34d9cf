"""Pipelines, jobs, datums and secrets as rows, in the store's own SQLite file.

The tables live next to PFS's so that a job's bookkeeping and the commits it
produces land in the same transactions (``pfs.tx()``): after a crash either
both say the job finished or neither does.

  pps_pipelines  name -> spec (JSON, 2.x names), version, salt, state, stopped
  pps_cursors    (pipeline, repo, branch) -> seq of the last input commit given a job
  pps_jobs       id -> pipeline, state, inputs (JSON), output commit, counts
  pps_datums     (job, datum) -> unit, state, tries, files (JSON)
  pps_units      (pipeline, unit) -> datums (JSON): the units whose outputs
                 the output branch's head holds (2.x carry-forward)
  pps_paths      (pipeline, path) -> unit: who wrote each output path
  pps_secrets    name -> data (JSON)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pfsfuse.errors import AlreadyExists, InvalidArgument, NotFound
from pfsfuse.names import escape

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pps_pipelines(
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    version INTEGER NOT NULL,
    salt TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'starting',
    reason TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS pps_cursors(
    pipeline TEXT NOT NULL,
    repo TEXT NOT NULL,
    branch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY(pipeline, repo, branch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pps_jobs(
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    inputs TEXT NOT NULL,
    trigger TEXT,
    output_repo TEXT NOT NULL,
    output_branch TEXT,
    output_commit TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    processed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    recovered INTEGER NOT NULL DEFAULT 0,
    stats_commit TEXT,
    provenance TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS pps_jobs_by_pipeline ON pps_jobs(pipeline, created);
CREATE INDEX IF NOT EXISTS pps_jobs_by_created ON pps_jobs(created);
CREATE TABLE IF NOT EXISTS pps_datums(
    job TEXT NOT NULL,
    datum TEXT NOT NULL,
    unit TEXT NOT NULL,
    ord INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    tries INTEGER NOT NULL DEFAULT 0,
    started REAL,
    finished REAL,
    files TEXT NOT NULL,
    PRIMARY KEY(job, datum)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pps_datums_by_unit ON pps_datums(job, unit);
CREATE TABLE IF NOT EXISTS pps_units(
    pipeline TEXT NOT NULL,
    unit TEXT NOT NULL,
    datums TEXT NOT NULL,
    PRIMARY KEY(pipeline, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pps_paths(
    pipeline TEXT NOT NULL,
    path TEXT NOT NULL,
    unit TEXT NOT NULL,
    PRIMARY KEY(pipeline, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pps_paths_by_unit ON pps_paths(pipeline, unit);
CREATE TABLE IF NOT EXISTS pps_secrets(
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""

DONE_STATES = ("success", "failure", "killed")


@dataclass
class PipelineRow:
    name: str
    spec: dict
    version: int
    salt: str
    created: float
    updated: float
    stopped: bool
    state: str
    reason: str
    notes: list[dict] = field(default_factory=list)


@dataclass
class JobRow:
    id: str
    pipeline: str
    version: int
    state: str
    reason: str
    created: float
    started: float | None
    finished: float | None
    inputs: list[dict]
    trigger: str | None
    output_repo: str
    output_branch: str | None
    output_commit: str | None
    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    recovered: int = 0
    stats_commit: str | None = None
    provenance: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


_JOB_COLS = ("id, pipeline, version, state, reason, created, started, finished, inputs, trigger, output_repo,"
             " output_branch, output_commit, total, processed, skipped, failed, recovered, stats_commit, provenance")


def _job(r: tuple) -> JobRow:
    return JobRow(*r[:8], json.loads(r[8]), *r[9:19], json.loads(r[19]))


def _pipeline(r: tuple) -> PipelineRow:
    return PipelineRow(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], json.loads(r[9]))


class PpsStore:
    """Row access for the scheduler and the API; every write is one transaction."""

    def __init__(self, pfs):
        self.pfs = pfs
        with pfs.tx() as db:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)

    # -- pipelines -----------------------------------------------------------

    def get_pipeline(self, name: str) -> PipelineRow:
        r = self.pfs.q1("SELECT * FROM pps_pipelines WHERE name=?", (name,))
        if r is None:
            raise NotFound(f"pipeline '{name}' not found")
        return _pipeline(r)

    def find_pipeline(self, name: str) -> PipelineRow | None:
        r = self.pfs.q1("SELECT * FROM pps_pipelines WHERE name=?", (name,))
        return _pipeline(r) if r is not None else None

    def list_pipelines(self) -> list[PipelineRow]:
        return [_pipeline(r) for r in self.pfs.q("SELECT * FROM pps_pipelines ORDER BY created")]

    def put_pipeline(self, db, name: str, spec: dict, salt: str, notes: list[dict], *, update: bool) -> PipelineRow:
        now = time.time()
        old = db.execute("SELECT version, created FROM pps_pipelines WHERE name=?", (name,)).fetchone()
        if old is not None and not update:
            raise AlreadyExists(
                f"pipeline '{name}' already exists; use update-pipeline to change it "
                f"or delete-pipeline {name} first"
            )
        if old is None and update:
            raise NotFound(f"pipeline '{name}' not found; use create-pipeline")
        version = old[0] + 1 if old else 1
        db.execute(
            "INSERT INTO pps_pipelines(name, spec, version, salt, created, updated, stopped, state, reason, notes)"
            " VALUES(?,?,?,?,?,?,0,'starting','',?) ON CONFLICT(name) DO UPDATE SET spec=excluded.spec,"
            " version=excluded.version, salt=excluded.salt, updated=excluded.updated, state='starting',"
            " reason='', notes=excluded.notes",
            (name, json.dumps(spec), version, salt, old[1] if old else now, now, json.dumps(notes)),
        )
        return _pipeline(db.execute("SELECT * FROM pps_pipelines WHERE name=?", (name,)).fetchone())

    def set_pipeline_state(self, name: str, state: str, reason: str = "", stopped: bool | None = None) -> None:
        with self.pfs.tx() as db:
            if stopped is None:
                db.execute("UPDATE pps_pipelines SET state=?, reason=? WHERE name=?", (state, reason, name))
            else:
                db.execute("UPDATE pps_pipelines SET state=?, reason=?, stopped=? WHERE name=?",
                           (state, reason, int(stopped), name))
            self.pfs.emit("pipeline.state", pipeline=name, state=state, reason=reason)

    @staticmethod
    def pause_new(db, name: str) -> None:
        """create-job: the pipeline is created stopped (it runs only the job it was given)."""
        db.execute("UPDATE pps_pipelines SET stopped=1, state='paused' WHERE name=?", (name,))

    def delete_pipeline(self, db, name: str) -> None:
        for table in ("pps_pipelines WHERE name=?", "pps_cursors WHERE pipeline=?", "pps_units WHERE pipeline=?",
                      "pps_paths WHERE pipeline=?"):
            db.execute(f"DELETE FROM {table}", (name,))
        jobs = [r[0] for r in db.execute("SELECT id FROM pps_jobs WHERE pipeline=?", (name,))]
        db.executemany("DELETE FROM pps_datums WHERE job=?", [(j,) for j in jobs])
        db.execute("DELETE FROM pps_jobs WHERE pipeline=?", (name,))

    # -- cursors: which input commits already have their job -----------------

    def cursor(self, pipeline: str, repo: str, branch: str) -> int | None:
        r = self.pfs.q1("SELECT seq FROM pps_cursors WHERE pipeline=? AND repo=? AND branch=?",
                        (pipeline, repo, branch))
        return r[0] if r else None

    @staticmethod
    def set_cursor(db, pipeline: str, repo: str, branch: str, seq: int) -> None:
        db.execute(
            "INSERT INTO pps_cursors(pipeline, repo, branch, seq) VALUES(?,?,?,?) "
            "ON CONFLICT(pipeline, repo, branch) DO UPDATE SET seq=MAX(seq, excluded.seq)",
            (pipeline, repo, branch, seq),
        )

    @staticmethod
    def clear_cursors(db, pipeline: str) -> None:
        """Every input commit is new again (update-pipeline --reprocess)."""
        db.execute("DELETE FROM pps_cursors WHERE pipeline=?", (pipeline,))

    @staticmethod
    def rewind_cursor(db, pipeline: str, repo: str, branch: str, seq: int) -> None:
        """Move the cursor back to ``seq`` if it is past it (the commit after it is picked again)."""
        db.execute("UPDATE pps_cursors SET seq=? WHERE pipeline=? AND repo=? AND branch=? AND seq>?",
                   (seq, pipeline, repo, branch, seq))

    # -- jobs ----------------------------------------------------------------

    @staticmethod
    def insert_job(db, job: JobRow) -> None:
        db.execute(
            f"INSERT INTO pps_jobs({_JOB_COLS}) VALUES({','.join('?' * 20)})",
            (job.id, job.pipeline, job.version, job.state, job.reason, job.created, job.started, job.finished,
             json.dumps(job.inputs), job.trigger, job.output_repo, job.output_branch, job.output_commit,
             job.total, job.processed, job.skipped, job.failed, job.recovered, job.stats_commit,
             json.dumps(job.provenance)),
        )

    @staticmethod
    def update_job(db, job: JobRow) -> None:
        db.execute(
            "UPDATE pps_jobs SET state=?, reason=?, started=?, finished=?, output_commit=?, total=?, processed=?,"
            " skipped=?, failed=?, recovered=?, stats_commit=? WHERE id=?",
            (job.state, job.reason, job.started, job.finished, job.output_commit, job.total, job.processed,
             job.skipped, job.failed, job.recovered, job.stats_commit, job.id),
        )

    def get_job(self, ref: str) -> JobRow:
        rows = self.pfs.q(f"SELECT {_JOB_COLS} FROM pps_jobs WHERE id>=? AND id<? LIMIT 2", (ref, ref + "\uffff"))
        if not rows or len(ref) < 4 and not any(r[0] == ref for r in rows):
            raise NotFound(f"job '{ref}' not found")
        exact = [r for r in rows if r[0] == ref]
        if len(rows) > 1 and not exact:
            raise InvalidArgument(f"job id prefix '{ref}' is ambiguous; give more of it")
        return _job(exact[0] if exact else rows[0])

    def list_jobs(self, pipeline: str | None = None, states: tuple[str, ...] = (), *, n: int | None = None,
                  before: str | None = None) -> list[JobRow]:
        """Newest first; ``n``: at most that many; ``before``: only jobs strictly older than
        that job (a page after the one it ended), so 10,000 jobs come a page at a time."""
        sql, args = f"SELECT {_JOB_COLS} FROM pps_jobs", []
        where = []
        if pipeline:
            where.append("pipeline=?")
            args.append(pipeline)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if before:
            ref = self.get_job(before).id
            created, rowid = self.pfs.q1("SELECT created, rowid FROM pps_jobs WHERE id=?", (ref,))
            where.append("(created<? OR (created=? AND rowid<?))")
            args += [created, created, rowid]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, rowid DESC"
        if n is not None:
            sql += " LIMIT ?"
            args.append(n)
        return [_job(r) for r in self.pfs.q(sql, tuple(args))]

    def latest_job(self, pipeline: str) -> JobRow | None:
        r = self.pfs.q1(f"SELECT {_JOB_COLS} FROM pps_jobs WHERE pipeline=? ORDER BY created DESC, rowid DESC"
                        " LIMIT 1", (pipeline,))
        return _job(r) if r else None

    @staticmethod
    def mark_killed(db, job: str, reason: str, finished: float) -> None:
        db.execute("UPDATE pps_jobs SET state='killed', reason=?, finished=? WHERE id=?", (reason, finished, job))

    def has_job_on(self, pipeline: str, commit: str) -> bool:
        """Whether some job of ``pipeline`` has ``commit`` in its provenance."""
        return self.pfs.q1("SELECT 1 FROM pps_jobs WHERE pipeline=? AND provenance LIKE ?",
                           (pipeline, f'%"{commit}"%')) is not None

    def outputs_on(self, pipeline: str, commit: str) -> list[str]:
        """Output commits of ``pipeline``'s successful jobs with ``commit`` in their provenance, oldest first."""
        return [r[0] for r in self.pfs.q("SELECT output_commit FROM pps_jobs WHERE pipeline=? AND state='success'"
                                         " AND provenance LIKE ? ORDER BY created", (pipeline, f'%"{commit}"%'))]

    def failed_on(self, pipeline: str, commit: str, but_not: str) -> str | None:
        """The newest failed or killed job of ``pipeline`` on ``commit``, unless its reason is ``but_not``."""
        r = self.pfs.q1("SELECT id FROM pps_jobs WHERE pipeline=? AND state IN ('failure', 'killed') AND reason<>?"
                        " AND provenance LIKE ? ORDER BY created DESC LIMIT 1", (pipeline, but_not, f'%"{commit}"%'))
        return r[0] if r else None

    # -- datums --------------------------------------------------------------

    @staticmethod
    def insert_datums(db, job: str, rows: Iterable[tuple[str, str, int, str, str]]) -> None:
        """rows: (datum, unit, ord, state, files as JSON), written as they come (a big
        job's rows are never all in memory)."""
        db.executemany(
            "INSERT OR REPLACE INTO pps_datums(job, datum, unit, ord, state, files) VALUES(?,?,?,?,?,?)",
            ((job, d, u, o, s, f) for d, u, o, s, f in rows),
        )

    @staticmethod
    def fail_unfinished(db, job: str) -> None:
        """The job ended: its datums still starting or running failed with it."""
        db.execute("UPDATE pps_datums SET state='failed', reason='job ended' WHERE job=? AND state IN"
                   " ('starting', 'running')", (job,))

    @staticmethod
    def finish_unit(db, job: str, unit: str, state: str, reason: str, tries: int, started: float | None,
                    finished: float | None) -> int:
        cur = db.execute(
            "UPDATE pps_datums SET state=?, reason=?, tries=?, started=?, finished=? WHERE job=? AND unit=?",
            (state, reason, tries, started, finished, job, unit),
        )
        return cur.rowcount

    def list_datums(self, job: str) -> list[dict]:
        rows = self.pfs.q("SELECT datum, unit, state, reason, tries, started, finished, files FROM pps_datums"
                          " WHERE job=? ORDER BY ord", (job,))
        return [_datum(job, r) for r in rows]

    def get_datum(self, job: str, datum: str) -> dict:
        rows = self.pfs.q("SELECT datum, unit, state, reason, tries, started, finished, files FROM pps_datums"
                          " WHERE job=? AND datum>=? AND datum<? LIMIT 2", (job, datum, datum + "\uffff"))
        if not rows:
            raise NotFound(f"datum '{datum}' not found in job '{job}'")
        if len(rows) > 1 and rows[0][0] != datum:
            raise InvalidArgument(f"datum id prefix '{datum}' is ambiguous; give more of it")
        return _datum(job, rows[0])

    # -- units and output paths (2.x carry-forward) ----------------------------

    def iter_units(self, pipeline: str, page: int = 5000) -> Iterator[tuple[str, list[str]]]:
        """``units`` a page at a time, in unit order (a big pipeline's units are never all loaded)."""
        after = ""
        while True:
            rows = self.pfs.q("SELECT unit, datums FROM pps_units WHERE pipeline=? AND unit>? ORDER BY unit LIMIT ?",
                              (pipeline, after, page))
            for unit, datums in rows:
                yield unit, json.loads(datums)
            if len(rows) < page:
                return
            after = rows[-1][0]

    def paths_of(self, pipeline: str, unit: str) -> list[str]:
        return [r[0] for r in self.pfs.q("SELECT path FROM pps_paths WHERE pipeline=? AND unit=?",
                                         (pipeline, unit))]

    def owner_of(self, pipeline: str, path: str) -> str | None:
        r = self.pfs.q1("SELECT unit FROM pps_paths WHERE pipeline=? AND path=?", (pipeline, path))
        return r[0] if r else None

    @staticmethod
    def replace_units(db, pipeline: str, dropped: list[str], added: dict[str, list[str]],
                      paths: dict[str, list[str]]) -> None:
        db.executemany("DELETE FROM pps_units WHERE pipeline=? AND unit=?", [(pipeline, u) for u in dropped])
        db.executemany("DELETE FROM pps_paths WHERE pipeline=? AND unit=?", [(pipeline, u) for u in dropped])
        db.executemany("INSERT OR REPLACE INTO pps_units(pipeline, unit, datums) VALUES(?,?,?)",
                       [(pipeline, u, json.dumps(d)) for u, d in added.items()])
        db.executemany("INSERT OR REPLACE INTO pps_paths(pipeline, path, unit) VALUES(?,?,?)",
                       [(pipeline, p, u) for u, ps in paths.items() for p in ps])

    @staticmethod
    def clear_units(db, pipeline: str) -> None:
        db.execute("DELETE FROM pps_units WHERE pipeline=?", (pipeline,))
        db.execute("DELETE FROM pps_paths WHERE pipeline=?", (pipeline,))

    # -- secrets ---------------------------------------------------------------

    def put_secret(self, name: str, data: dict[str, str]) -> None:
        check_secret(name, data)
        with self.pfs.tx() as db:
            db.execute("INSERT OR REPLACE INTO pps_secrets(name, data) VALUES(?,?)", (name, json.dumps(data)))

    def get_secret(self, name: str) -> dict[str, str]:
        r = self.pfs.q1("SELECT data FROM pps_secrets WHERE name=?", (name,))
        if r is None:
            raise NotFound(f"secret '{name}' not found; create it with pachctl create-secret")
        return json.loads(r[0])

    def list_secrets(self) -> list[str]:
        return [r[0] for r in self.pfs.q("SELECT name FROM pps_secrets ORDER BY name")]

    def delete_secret(self, name: str) -> None:
        with self.pfs.tx() as db:
            if db.execute("DELETE FROM pps_secrets WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"secret '{name}' not found")


# Kubernetes' rule for Secret keys (and, with at most 253 characters, a fair
# rule for the names): each key becomes a file under the mount path, so '/',
# '.', '..' and control characters could escape it or garble a terminal.
_SECRET_WORD = re.compile(r"[-._a-zA-Z0-9]{1,253}")


def check_secret(name: str, data: dict[str, str]) -> None:
    """Refuse a secret name or key that is not a plain file name. Errors name
    the name or key (escaped), never a value."""
    for what, word in [("name", name)] + [("key", k) for k in data]:
        if not isinstance(word, str) or not _SECRET_WORD.fullmatch(word) or word in (".", ".."):
            prefix = f"secret '{escape(name)}': " if what == "key" else ""
            raise InvalidArgument(
                f"{prefix}invalid secret {what} '{escape(str(word))}': use letters, digits, '-', '_' and '.' "
                "(at most 253 characters, not '.' or '..'), as Kubernetes requires"
            )


def _datum(job: str, r: tuple) -> dict[str, Any]:
    return {"id": r[0], "job": job, "unit": r[1], "state": r[2], "reason": r[3], "tries": r[4],
            "started": r[5], "finished": r[6], "files": json.loads(r[7])}
