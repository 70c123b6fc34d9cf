"""Jobs, datums and logs: list-job, inspect-job, wait-job, stop-job,
list-datum, inspect-datum, get-logs (2.x ``logs``)."""

from __future__ import annotations

import sys
import time

from mountd.models import errors
from mountd.pps_models import Datum, Job, OutputCommit
from pachctl.cli.common import add, client, json_flag
from pachctl.cli.output import ago, emit_json, error, human_duration, human_size, kv, table

FAILED = ("failure", "killed")
FILES_WIDTH = 60


def _job_ref(tokens: list[str]) -> tuple[str | None, str]:
    """``JOB``, ``PIPELINE@JOB`` or ``PIPELINE JOB`` (what 2.x ``pipeline@job`` becomes)."""
    if len(tokens) == 1:
        pipeline, at, job = tokens[0].rpartition("@")
        return (pipeline or None) if at else None, job
    if len(tokens) == 2:
        return tokens[0], tokens[1]
    raise errors.InvalidArgument("name a job as JOB or PIPELINE@JOB")


def _get_job(tokens: list[str], wait: bool = False) -> Job:
    pipeline, job_id = _job_ref(tokens)
    job = client().inspect_job(job_id, wait=wait)
    if pipeline and job.pipeline != pipeline:
        raise errors.NotFound(f"job '{job_id}' is not a job of pipeline '{pipeline}' (it is of '{job.pipeline}')")
    return job


def _commit(c: OutputCommit | None) -> str:
    return f"{c.repo}@{c.commit}" if c else ""


def _duration(start: float | None, end: float | None) -> str:
    return human_duration(end - start) if start is not None and end is not None else "-"


def progress(j: Job) -> str:
    """``processed + skipped / total``, as Pachyderm's list-job shows it."""
    return f"{j.data_processed} + {j.data_skipped} / {j.data_total}"


def _as_commit(spec: str | None) -> str | None:
    """``repo@commit`` for the API; ``repo/commit`` (1.x) accepted."""
    if spec is None or "@" in spec:
        return spec
    repo, slash, commit = spec.partition("/")
    if not slash or not repo or not commit:
        raise errors.InvalidArgument(f"'{spec}' is not a commit; use REPO@COMMIT")
    return f"{repo}@{commit}"


# -- jobs -------------------------------------------------------------------------


def list_job(args) -> int:
    jobs = client().list_job(args.pipeline, input=_as_commit(args.input), output=_as_commit(args.output))
    if args.json:
        emit_json(jobs)
        return 0
    now = time.time()
    # The seeds' columns in the seeds' order (ID OUTPUT STARTED DURATION
    # STATE), then PROGRESS. OUTPUT names the pipeline's repo, so there is no
    # PIPELINE column; it is repo@commit (the form every command takes), as
    # a job knows its output commit's id, not its branch/N.
    rows = [
        (
            j.id,
            _commit(j.output_commit) or "-",
            ago(j.started or j.created, now),
            _duration(j.started, j.finished),
            j.state,
            progress(j),
        )
        for j in jobs
    ]
    table(["ID", "OUTPUT", "STARTED", "DURATION", "STATE", "PROGRESS"], rows)
    return 0


def _job_kv(j: Job) -> None:
    inputs = ", ".join(
        f"{c.repo}@{c.commit}" if c.name == c.repo else f"{c.name}={c.repo}@{c.commit}" for c in j.input_commits
    )
    pairs = [
        ("ID", j.id),
        ("Pipeline", j.pipeline),
        ("Pipeline Version", j.pipeline_version),
        ("State", j.state),
        ("Reason", j.reason),
        ("Created", ago(j.created)),
        ("Started", ago(j.started) if j.started else "-"),
        ("Duration", _duration(j.started, j.finished) if j.finished else "-"),
        ("Datums Processed", j.data_processed),
        ("Datums Skipped", j.data_skipped),
        ("Datums Failed", j.data_failed),
        ("Datums Recovered", j.data_recovered),
        ("Datums Total", j.data_total),
        ("Input Commits", inputs or "<none>"),
        ("Output Commit", _commit(j.output_commit) or "<none>"),
    ]
    if j.stats_commit:
        pairs.append(("Stats Commit", _commit(j.stats_commit)))
    kv(pairs)


def inspect_job(args) -> int:
    j = _get_job(args.job, wait=args.block)
    if args.json:
        emit_json(j)
    else:
        _job_kv(j)
    return 0


def wait_job(args) -> int:
    """Block until the job is finished; exit 1 if it failed."""
    j = _get_job(args.job, wait=True)
    if args.json:
        emit_json(j)
    if j.state in FAILED:
        error(f"job {j.id} of pipeline {j.pipeline} {'was killed' if j.state == 'killed' else 'failed'}"
              + (f": {j.reason}" if j.reason else ""))
        return 1
    return 0


def stop_job(args) -> int:
    job = _get_job(args.job)  # a prefix names one job, and PIPELINE@ must match
    client().stop_job(job.id)
    return 0


# -- datums -----------------------------------------------------------------------


def _files(d: Datum) -> str:
    text = ", ".join(f"{f.input}:{f.path}" for f in d.files)
    return text if len(text) <= FILES_WIDTH else text[: FILES_WIDTH - 3] + "..."


def list_datum(args) -> int:
    _, job_id = _job_ref(args.job)
    datums = client().list_datum(job_id)
    if args.json:
        emit_json(datums)
        return 0
    rows = [(d.id, d.state, _duration(d.started, d.finished), _files(d)) for d in datums]
    table(["ID", "STATE", "TIME", "FILES"], rows)
    return 0


def inspect_datum(args) -> int:
    if len(args.ids) < 2:
        raise errors.InvalidArgument("usage: inspect-datum JOB DATUM (or PIPELINE@JOB DATUM)")
    _, job_id = _job_ref(args.ids[:-1])
    d = client().inspect_datum(job_id, args.ids[-1])
    if args.json:
        emit_json(d)
        return 0
    kv(
        [
            ("ID", d.id),
            ("Job", d.job),
            ("State", d.state),
            ("Reason", d.reason),
            ("Tries", d.tries),
            ("Started", ago(d.started) if d.started else "-"),
            ("Duration", _duration(d.started, d.finished)),
            ("Files", len(d.files)),
        ]
    )
    if d.files:
        sys.stdout.write("\n")
        table(
            ["INPUT", "FILE", "SIZE"],
            [(f.input, f"{f.repo}@{f.commit}:{f.path}", human_size(f.size)) for f in d.files],
        )
    return 0


def restart_datum(args) -> int:
    """2.x ``restart datum PIPELINE@JOB DATUM[,DATUM...]`` (also ``JOB DATUM``)."""
    if len(args.ids) < 2:
        raise errors.InvalidArgument("usage: restart-datum JOB DATUM[,DATUM...] (or PIPELINE@JOB DATUM)")
    job = _get_job(args.ids[:-1])
    c = client()
    for datum in [d for d in args.ids[-1].split(",") if d]:
        d = c.restart_datum(job.id, datum)
        if args.verbose:
            print(f"datum {d.id}: {'restarted' if d.restarted else 'waiting for a worker'}", file=sys.stderr)
    return 0


# -- logs ------------------------------------------------------------------------


def get_logs(args) -> int:
    job = args.job or args.job_arg
    pipeline = args.pipeline
    if job and "@" in job:  # 2.x pipeline@job
        at_pipeline, _, job = job.rpartition("@")
        pipeline = pipeline or at_pipeline
    lines = client().get_logs(pipeline=pipeline, job=job, datum=args.datum, follow=args.follow)
    out = sys.stdout
    for line in lines:
        if args.raw:
            out.write(line.model_dump_json() + "\n")
        else:
            out.write(line.message if line.message.endswith("\n") else line.message + "\n")
        out.flush()
    return 0


def register(sub) -> None:
    p = add(sub, "list-job", "Return info about jobs.", list_job)
    p.add_argument("-p", "--pipeline", help="only this pipeline's jobs")
    p.add_argument("-i", "--input", metavar="REPO@COMMIT", help="only jobs with this input commit")
    p.add_argument("-o", "--output", metavar="REPO@COMMIT", help="only the job that made this output commit")
    json_flag(p)
    p = add(sub, "inspect-job", "Return info about a job.", inspect_job)
    p.add_argument("job", nargs="+", metavar="JOB", help="JOB or PIPELINE@JOB (an ID prefix will do)")
    p.add_argument("-b", "--block", action="store_true", help="wait until the job has finished")
    json_flag(p)
    p = add(sub, "wait-job", "Wait for a job to finish; exit 1 if it failed.", wait_job)
    p.add_argument("job", nargs="+", metavar="JOB")
    json_flag(p)
    p = add(sub, "stop-job", "Stop a job (its datums stop; the output commit is not made).", stop_job)
    p.add_argument("job", nargs="+", metavar="JOB")
    p = add(sub, "list-datum", "Return the datums of a job.", list_datum)
    p.add_argument("job", nargs="+", metavar="JOB")
    json_flag(p)
    p = add(sub, "inspect-datum", "Return info about a datum.", inspect_datum)
    p.add_argument("ids", nargs="+", metavar="JOB DATUM")
    json_flag(p)
    p = add(sub, "restart-datum", "Restart a datum of a running job: its run is cut short and tried again.",
            restart_datum)
    p.add_argument("ids", nargs="+", metavar="JOB DATUM", help="PIPELINE@JOB (or JOB) and DATUM[,DATUM...]")
    p = add(sub, "get-logs", "Return logs from a job or pipeline.", get_logs, aliases=("logs",))
    p.add_argument("job_arg", nargs="?", metavar="JOB", help="the job (same as --job)")
    p.add_argument("-p", "--pipeline", help="only this pipeline's logs")
    p.add_argument("-j", "--job", help="only this job's logs (JOB or PIPELINE@JOB)")
    p.add_argument("--datum", help="only this datum's logs")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they arrive")
    p.add_argument("--raw", "--json", dest="raw", action="store_true", help="print each line as JSON")
