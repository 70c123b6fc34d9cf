"""Pipelines: create-pipeline, update-pipeline, list-pipeline, inspect-pipeline,
delete-pipeline, stop-pipeline, start-pipeline, run-pipeline, create-job."""

from __future__ import annotations

import json
import sys
import time

import httpx

from mountd.models import errors
from mountd.pps_models import Pipeline
from pachctl.cli.cmd_commit import commit_specs
from pachctl.cli.common import add, client, json_flag
from pachctl.cli.output import ago, emit_json, kv, table

MAX_SPEC = 16 << 20  # a spec (or a secret) bigger than this is a mistake


def url_client() -> httpx.Client:
    """The HTTP client that fetches ``-f URL`` (tests swap it for a fake)."""
    return httpx.Client(follow_redirects=True, timeout=30)


def read_source(source: str | None, what: str = "pipeline spec") -> str:
    """The text of ``-f FILE|URL|-`` (no ``-f``: standard input)."""
    if source is None or source == "-":
        if sys.stdin.isatty():
            sys.stderr.write(f"reading the {what} from standard input (end with Ctrl-D)\n")
        text = sys.stdin.read(MAX_SPEC + 1)
        where = "standard input"
    elif source.startswith(("http://", "https://")):
        text, where = _fetch(source), source
    else:
        try:
            with open(source, "rb") as f:
                data = f.read(MAX_SPEC + 1)
        except IsADirectoryError:
            raise errors.SourceError(f"cannot read '{source}': it is a directory") from None
        except OSError as exc:
            raise errors.SourceError(f"cannot read '{source}': {exc.strerror}") from None
        text, where = _decode(data, source), source
    if len(text) > MAX_SPEC:
        raise errors.SourceError(f"{where}: a {what} bigger than {MAX_SPEC >> 20} MiB? refusing")
    if not text.strip():
        raise errors.InvalidArgument(f"{where}: the {what} is empty")
    return text


def _fetch(url: str) -> str:
    try:
        with url_client() as http:
            resp = http.get(url)
    except httpx.HTTPError as exc:
        raise errors.SourceError(f"cannot fetch {url}: {exc or type(exc).__name__}") from None
    if resp.status_code >= 400:
        raise errors.SourceError(f"cannot fetch {url}: HTTP {resp.status_code}")
    return _decode(resp.content, url)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise errors.SourceError(f"'{where}' is not UTF-8 text") from None


def _warn_notes(pipelines: list[Pipeline]) -> None:
    for p in pipelines:
        for note in p.notes:
            sys.stderr.write(f"warning: {note.path}: {note.reason}\n")


def _output(p: Pipeline) -> str:
    return f"{p.output_repo}/{p.output_branch}"


def _state(p: Pipeline) -> str:
    return f"{p.state} / {p.last_job_state}" if p.last_job_state else p.state


# -- commands -------------------------------------------------------------------


def create_pipeline(args) -> int:
    text = read_source(args.file)
    pipelines = client().create_pipeline(text)
    _warn_notes(pipelines)
    if args.json:
        emit_json(pipelines)
    return 0


def update_pipeline(args) -> int:
    if args.reprocess and args.no_archive:
        raise errors.InvalidArgument("--reprocess and --no-archive contradict each other")
    # 1.x: updating archives the old output and reprocesses, unless --no-archive.
    # 2.x: only new data is processed, unless --reprocess.
    reprocess = True if args.reprocess else False if args.no_archive else not args.v2
    text = read_source(args.file)
    pipelines = client().update_pipeline(text, reprocess=reprocess)
    _warn_notes(pipelines)
    if args.json:
        emit_json(pipelines)
    return 0


def list_pipeline(args) -> int:
    pipelines = client().list_pipeline()
    if args.json:
        emit_json(pipelines)
        return 0
    now = time.time()
    # The seed's NAME INPUT OUTPUT STATE, in its order; CREATED after them.
    rows = [(p.name, p.input, _output(p), _state(p), ago(p.created, now)) for p in pipelines]
    table(["NAME", "INPUT", "OUTPUT", "STATE", "CREATED"], rows)
    return 0


def inspect_pipeline(args) -> int:
    p = client().inspect_pipeline(args.pipeline)
    if args.json:
        emit_json(p)
        return 0
    pairs = [
        ("Name", p.name),
        ("Description", p.description),
        ("Version", p.version),
        ("State", p.state + (" (stopped)" if p.stopped and p.state != "paused" else "")),
    ]
    if p.reason:
        pairs.append(("Reason", p.reason))
    pairs += [
        ("Input", p.input),
        ("Output", _output(p)),
        ("Created", ago(p.created)),
        ("Updated", ago(p.updated)),
        ("Workers", p.workers),
        ("Last Job", f"{p.last_job} ({p.last_job_state})" if p.last_job else "<none>"),
    ]
    pairs += [("Note", f"{n.path}: {n.reason}") for n in p.notes]
    kv(pairs)
    sys.stdout.write("Spec:\n" + json.dumps(p.spec, indent=2) + "\n")
    return 0


def delete_pipeline(args) -> int:
    c = client()
    if args.all:
        if args.pipeline:
            raise errors.InvalidArgument("name a pipeline or pass --all, not both")
        c.delete_all_pipelines(force=args.force, keep_repo=args.keep_repo)
        return 0
    if not args.pipeline:
        raise errors.InvalidArgument("name a pipeline to delete, or pass --all")
    c.delete_pipeline(args.pipeline, force=args.force, keep_repo=args.keep_repo)
    return 0


def stop_pipeline(args) -> int:
    p = client().stop_pipeline(args.pipeline)
    if args.json:
        emit_json(p)
    return 0


def start_pipeline(args) -> int:
    p = client().start_pipeline(args.pipeline)
    if args.json:
        emit_json(p)
    return 0


def run_pipeline(args) -> int:
    commits = commit_specs(args.commits, "use REPO@COMMIT, REPO/COMMIT or REPO COMMIT")
    job = client().run_pipeline(args.pipeline, commits)
    if args.json:
        emit_json(job)
    else:
        print(job.id)
    return 0


def create_job(args) -> int:
    job = client().create_job(read_source(args.file, "job spec"))
    if args.json:
        emit_json(job)
    else:
        print(job.id)
    return 0


def register(sub) -> None:
    def spec_file(p) -> None:
        p.add_argument("-f", "--file", metavar="FILE|URL|-", help="the spec: a file, a URL, or - (default: stdin)")

    p = add(sub, "create-pipeline", "Create a new pipeline (or several) from a spec.", create_pipeline)
    spec_file(p)
    json_flag(p)
    p = add(sub, "update-pipeline", "Update an existing Pachyderm pipeline.", update_pipeline)
    spec_file(p)
    p.add_argument("--reprocess", action="store_true", help="reprocess every datum, not only new ones")
    p.add_argument(
        "--no-archive", "-no-archive", dest="no_archive", action="store_true",
        help="keep the output and only process new data (the 1.x form's default is to reprocess)",
    )
    json_flag(p)
    p = add(sub, "list-pipeline", "Return info about all pipelines.", list_pipeline)
    json_flag(p)
    p = add(sub, "inspect-pipeline", "Return info about a pipeline.", inspect_pipeline)
    p.add_argument("pipeline")
    json_flag(p)
    p = add(sub, "delete-pipeline", "Delete a pipeline.", delete_pipeline)
    p.add_argument("pipeline", nargs="?")
    p.add_argument("-a", "--all", action="store_true", help="delete every pipeline")
    p.add_argument("-f", "--force", action="store_true", help="delete even if other pipelines read its output")
    p.add_argument("--keep-repo", action="store_true", help="keep the pipeline's output repo")
    p = add(sub, "stop-pipeline", "Stop a running pipeline.", stop_pipeline)
    p.add_argument("pipeline")
    json_flag(p)
    p = add(sub, "start-pipeline", "Restart a stopped pipeline.", start_pipeline)
    p.add_argument("pipeline")
    json_flag(p)
    p = add(sub, "run-pipeline", "Run a pipeline once (on its inputs' heads, or the commits given).", run_pipeline)
    p.add_argument("pipeline")
    p.add_argument("commits", nargs="*", metavar="COMMIT", help="REPO@COMMIT, REPO/COMMIT or REPO COMMIT")
    json_flag(p)
    p = add(sub, "create-job", "Create a new job. Returns the id of the created job.", create_job)
    spec_file(p)
    json_flag(p)
