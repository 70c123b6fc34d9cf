"""The pipeline half of the HTTP API: pipelines, jobs, datums, logs, flush, secrets,
and the worker endpoints the shim uses (pps/WORKERS.md)."""

from __future__ import annotations

import json

import trio
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse

from mountd import models, pps_models
from mountd.app import (
    BINARY_ANSWER,
    BINARY_BODY,
    CHANGE,
    CONTENT,
    CREATE,
    LOOKUP,
    failures,
    run,
)
from mountd.worker_routes import WorkerRoutes
from pfsfuse.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    NoSpace,
    NotFound,
    PfsError,
    TimedOut,
    Unauthorized,
)
from pfsfuse.pfs import PFS
from pps.scheduler import Scheduler
from pps.store import JobRow, PipelineRow

WORKER = (Unauthorized, Forbidden)  # every worker route: no credential, or outside its pipeline or task

_ALIASES = {("BLOCK", "DIFF"): "map", ("FILE", "NONE"): "reduce", ("REPO", "NONE"): "global"}


def input_summary(node: dict | None) -> str:
    """A one-line view of an input tree: ``data:/*``, ``(a:/* ⨯ b:/*)``."""
    if not node:
        return "none"
    for kind, sep in (("cross", " ⨯ "), ("union", " ∪ "), ("join", " ⋈ "), ("group", " ⊔ ")):
        if kind in node:
            return "(" + sep.join(input_summary(c) for c in node[kind]) + ")"
    if "pfs" in node:
        p = node["pfs"]
        label = p.get("repo", "")
        if p.get("branch", "master") != "master":
            label += "@" + p["branch"]
        method = p.get("method")
        if method:
            if isinstance(method, str):
                how = method
            else:
                pair = (method.get("partition"), method.get("incremental"))
                how = _ALIASES.get(pair) or "/".join(str(x) for x in pair)
            return f"{label}:{how}"
        return f"{label}:{p.get('glob', '')}"
    if "cron" in node:
        return f"{node['cron'].get('name')}:@{node['cron'].get('spec')}"
    if "git" in node:
        return f"git:{node['git'].get('URL') or node['git'].get('url')}"
    return "?"


def pipeline_model(s: Scheduler, row: PipelineRow) -> pps_models.Pipeline:
    spec = row.spec
    last = s.store.latest_job(row.name)
    return pps_models.Pipeline(
        name=row.name, version=row.version, generation=spec.get("generation", 2), state=row.state,
        stopped=row.stopped, reason=row.reason, input=input_summary(spec.get("input")), output_repo=row.name,
        output_branch=spec.get("output_branch", "master"), description=spec.get("description", ""),
        created=row.created, updated=row.updated,
        workers=s.runner.running(row.name),
        last_job=last.id if last else None, last_job_state=last.state if last else None,
        spec=spec, notes=[pps_models.Note(**n) for n in row.notes],
    )


def job_model(row: JobRow, trouble: str = "") -> pps_models.Job:
    """``trouble``: why the pipeline's workers cannot start (the runner's on_trouble), shown as
    the reason of a job that waits for them."""
    reason = row.reason or (f"waiting for workers: {trouble}" if trouble and not row.done else "")
    return pps_models.Job(
        id=row.id, pipeline=row.pipeline, pipeline_version=row.version, state=row.state, reason=reason,
        created=row.created, started=row.started, finished=row.finished,
        input_commits=[pps_models.InputCommit(**i) for i in row.inputs],
        output_commit=pps_models.OutputCommit(repo=row.output_repo, branch=row.output_branch,
                                              commit=row.output_commit) if row.output_commit else None,
        data_total=row.total, data_processed=row.processed, data_skipped=row.skipped, data_failed=row.failed,
        data_recovered=row.recovered,
        stats_commit=pps_models.OutputCommit(repo=row.output_repo, branch="stats", commit=row.stats_commit)
        if row.stats_commit else None,
    )


# One WorkerLogLine per line (NDJSON has no schema of its own; the items' is the useful one).
NDJSON_BODY = {
    "requestBody": {
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "array", "items": pps_models.WorkerLogLine.model_json_schema()}
            }
        }
    }
}


def add_pps_routes(app: FastAPI, pfs: PFS, s: Scheduler) -> None:
    poll_limiter = trio.CapacityLimiter(256)  # long polls wait in threads of their own

    # -- pipelines -------------------------------------------------------------

    @app.post(
        "/v1/pipelines", response_model=list[pps_models.Pipeline], status_code=201, responses=failures(*CREATE)
    )
    async def create_pipelines(body: pps_models.CreatePipelines):
        rows = await run(lambda: s.create_pipelines(body.text, update=body.update, reprocess=body.reprocess))
        return [await run(pipeline_model, s, s.store.get_pipeline(r.name)) for r in rows]

    @app.get("/v1/pipelines", response_model=list[pps_models.Pipeline])
    async def list_pipelines():
        return await run(lambda: [pipeline_model(s, r) for r in s.store.list_pipelines()])

    @app.get("/v1/pipelines/{name}", response_model=pps_models.Pipeline, responses=failures(*LOOKUP))
    async def inspect_pipeline(name: str):
        return await run(lambda: pipeline_model(s, s.store.get_pipeline(name)))

    @app.delete("/v1/pipelines/{name}", responses=failures(*CHANGE))
    async def delete_pipeline(name: str, force: bool = False, keep_repo: bool = False):
        await run(lambda: s.delete_pipeline(name, force=force, keep_repo=keep_repo))
        return {}

    @app.delete("/v1/pipelines", responses=failures(*CHANGE))
    async def delete_all_pipelines(all: bool = False, force: bool = False, keep_repo: bool = False):
        if not all:
            raise InvalidArgument("name a pipeline, or pass all=true")

        def delete_all() -> list[str]:
            names = [p.name for p in reversed(s.store.list_pipelines())]
            for n in names:
                s.delete_pipeline(n, force=True, keep_repo=keep_repo)
            return names

        return {"deleted": await run(delete_all)}

    @app.post("/v1/pipelines/{name}/stop", response_model=pps_models.Pipeline, responses=failures(*CHANGE))
    async def stop_pipeline(name: str):
        return await run(lambda: pipeline_model(s, s.stop_pipeline(name)))

    @app.post("/v1/pipelines/{name}/start", response_model=pps_models.Pipeline, responses=failures(*CHANGE))
    async def start_pipeline(name: str):
        return await run(lambda: pipeline_model(s, s.start_pipeline(name)))

    async def first_new_job(name: str, before: set[str], what: str) -> pps_models.Job:
        """The first job of ``name`` not in ``before``, once the scheduler has started it."""
        deadline = trio.current_time() + 30
        while True:
            seen = s.generation  # before the read: a job started after it ends the wait at once
            jobs = [j for j in await run(s.store.list_jobs, name) if j.id not in before]
            if jobs:
                return job_model(jobs[-1])
            if trio.current_time() > deadline:
                raise InvalidArgument(what)
            await trio.to_thread.run_sync(s.wait_changed, 0.2, seen, abandon_on_cancel=True, limiter=poll_limiter)

    @app.post("/v1/pipelines/{name}/run", response_model=pps_models.Job, responses=failures(*CHANGE))
    async def run_pipeline(name: str, body: pps_models.RunPipeline | None = None):
        commits = [c.model_dump() for c in (body.commits if body else [])]
        before = {j.id for j in await run(s.store.list_jobs, name)}
        await run(s.request_run, name, commits)
        return await first_new_job(name, before, f"pipeline '{name}' did not start a job within 30 s")

    @app.post("/v1/jobs", response_model=pps_models.Job, status_code=201, responses=failures(*CREATE))
    async def create_job(body: pps_models.CreatePipelines):
        """create-job: a one-off run of a spec: a stopped pipeline given one job."""
        rows = await run(lambda: s.create_pipelines(body.text, update=body.update, one_off=True))
        name = rows[0].name
        return await first_new_job(name, set(), f"the job of '{name}' did not start within 30 s")

    # -- jobs and datums ---------------------------------------------------------

    @app.get("/v1/jobs", response_model=list[pps_models.Job], responses=failures(*LOOKUP))
    async def list_jobs(pipeline: str | None = None, input: str | None = None, output: str | None = None,
                        n: int | None = Query(None, ge=1, le=100_000, description="at most this many jobs"),
                        before: str | None = Query(None, description="only jobs older than this job (the last "
                                                   "of the previous page)")):
        def jobs() -> list[pps_models.Job]:
            paged = not input and not output  # those filter after the query: page what they leave
            rows = s.store.list_jobs(pipeline, n=n if paged else None, before=before)
            if input:
                repo, _, ref = input.partition("@")
                cid = pfs.inspect_commit(repo, ref or "master").id
                rows = [r for r in rows if any(p["commit"] == cid for p in r.provenance)]
            if output:
                repo, _, ref = output.partition("@")
                cid = pfs.inspect_commit(repo, ref or "master").id
                rows = [r for r in rows if r.output_commit == cid]
            if n is not None:
                rows = rows[:n]
            return [job_model(r, s.trouble_of(r.pipeline)) for r in rows]

        return await run(jobs)

    @app.get("/v1/jobs/{job_id}", response_model=pps_models.Job, responses=failures(*LOOKUP))
    async def inspect_job(job_id: str, wait: bool = False, timeout: float | None = None):
        if not wait:
            row = await run(s.store.get_job, job_id)
            return job_model(row, s.trouble_of(row.pipeline))
        seen = s.generation  # before the read: a change after it ends the first wait at once
        row = await run(s.store.get_job, job_id)
        deadline = None if timeout is None else trio.current_time() + timeout
        while not row.done and (deadline is None or trio.current_time() < deadline):
            await trio.to_thread.run_sync(s.wait_changed, 0.5, seen, abandon_on_cancel=True, limiter=poll_limiter)
            seen = s.generation
            row = await run(s.store.get_job, job_id)
        return job_model(row, s.trouble_of(row.pipeline))

    @app.delete("/v1/jobs/{job_id}", response_model=pps_models.Job, responses=failures(*CHANGE))
    async def stop_job(job_id: str):
        return job_model(await run(s.stop_job, job_id))

    @app.get("/v1/jobs/{job_id}/datums", response_model=list[pps_models.Datum], responses=failures(*LOOKUP))
    async def list_datums(job_id: str):
        job = await run(s.store.get_job, job_id)
        return [pps_models.Datum(**d) for d in await run(s.store.list_datums, job.id)]

    @app.get(
        "/v1/jobs/{job_id}/datums/{datum_id}", response_model=pps_models.Datum, responses=failures(*LOOKUP)
    )
    async def inspect_datum(job_id: str, datum_id: str):
        job = await run(s.store.get_job, job_id)
        return pps_models.Datum(**await run(s.store.get_datum, job.id, datum_id))

    @app.post(
        "/v1/jobs/{job_id}/datums/{datum_id}/restart", response_model=pps_models.RestartedDatum,
        responses=failures(*CHANGE),
    )
    async def restart_datum(job_id: str, datum_id: str):
        """Pachyderm's restart-datum: a running datum of a running job is cut short and
        tried again (with the other datums of its worker's task)."""
        return pps_models.RestartedDatum(**await run(s.restart_datum, job_id, datum_id))

    # -- logs --------------------------------------------------------------------

    @app.get(
        "/v1/logs",
        responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}, **failures(*LOOKUP)},
    )
    async def get_logs(pipeline: str | None = None, job: str | None = None, datum: str | None = None,
                       follow: bool = False,
                       offset: int | None = Query(None, description="a page of lines from this one (from 0; "
                                                  "negative: from the end); the answer's X-Pachy-Lines header "
                                                  "says how many lines there are in all"),
                       n: int = Query(1000, ge=1, le=100_000, description="lines per page (with offset)")):
        if job:
            row = await run(s.store.get_job, job)
            job_ids = [row.id]

            def jobs() -> list[str]:
                return job_ids

            def running() -> bool:
                return not s.store.get_job(job_ids[0]).done
        elif pipeline:
            await run(s.store.get_pipeline, pipeline)

            def jobs() -> list[str]:
                return [j.id for j in reversed(s.store.list_jobs(pipeline))] + ["_pipeline"]

            def running() -> bool:
                return s.store.find_pipeline(pipeline) is not None
        else:
            def jobs() -> list[str]:
                return [j.id for j in reversed(s.store.list_jobs())] + ["_pipeline"]

            def running() -> bool:
                return True

        if offset is not None:
            if follow:
                raise InvalidArgument("offset pages through the lines there are: leave out follow")
            total, page = await run(lambda: s.logs.page(jobs(), pipeline=pipeline, datum=datum, offset=offset,
                                                        n=n))
            text = "".join(json.dumps(line) + "\n" for line in page)
            return Response(text.encode(), media_type="application/x-ndjson", headers={"X-Pachy-Lines": str(total)})

        lines = s.logs.read(jobs, pipeline=pipeline, datum=datum, follow=running if follow else None)

        async def body():
            while True:
                line = await trio.to_thread.run_sync(next, lines, None, abandon_on_cancel=True,
                                                     limiter=poll_limiter)
                if line is None:
                    return
                yield (json.dumps(line) + "\n").encode()

        return StreamingResponse(body(), media_type="application/x-ndjson")

    # -- provenance --------------------------------------------------------------

    @app.post("/v1/flush", response_model=pps_models.FlushResult, responses=failures(*LOOKUP, TimedOut, PfsError))
    async def flush(body: pps_models.Flush):
        commits = [(c.repo, c.commit) for c in body.commits]
        ids, failed = await trio.to_thread.run_sync(
            lambda: s.flush(commits, body.repos or None, body.timeout), abandon_on_cancel=True,
            limiter=poll_limiter)

        def infos() -> list[dict]:
            out = []
            for cid in ids:
                repo = pfs.q1("SELECT repo FROM commits WHERE id=?", (cid,))
                if repo is not None:
                    info = pfs.inspect_commit(repo[0], cid)
                    out.append(models.Commit(**info.to_dict()).model_dump())
            return out

        return pps_models.FlushResult(commits=await run(infos), failed_jobs=[job_model(j) for j in failed])

    # -- secrets -----------------------------------------------------------------

    @app.put("/v1/secrets/{name}", responses=failures(InvalidArgument, NoSpace))
    async def put_secret(name: str, body: pps_models.Secret):
        await run(s.store.put_secret, name, body.data)
        return {}

    @app.get("/v1/secrets")
    async def list_secrets():
        return await run(s.store.list_secrets)

    @app.get("/v1/secrets/{name}", response_model=pps_models.Secret, responses=failures(NotFound))
    async def inspect_secret(name: str):
        # The values, for `pachctl debug datum --show-secrets`. This widens no access:
        # whoever may call the API can read every secret through a pipeline anyway.
        return pps_models.Secret(name=name, data=await run(s.store.get_secret, name))

    @app.delete("/v1/secrets/{name}", responses=failures(NotFound, Conflict, NoSpace))
    async def delete_secret(name: str):
        await run(s.store.delete_secret, name)
        return {}

    # -- workers (the shim) ------------------------------------------------------
    # The logic is mountd/worker_routes.py's (the fast lane, mountd/fastlane.py, serves the
    # same handlers); these routes document them and serve what the fast lane hands over.
    w = app.state.worker_routes = WorkerRoutes(pfs, s, poll_limiter)

    @app.post(
        "/v1/workers/{pipeline}/next",
        responses={204: {"description": "no task within `wait` seconds"}, **failures(*WORKER, NotFound)},
    )
    async def next_task(request: Request, pipeline: str, worker: str = "", wait: float = 20.0):
        return await w.next_task(request, pipeline, worker, wait)

    @app.post("/v1/workers/{pipeline}/still", responses=failures(*WORKER, NotFound))
    async def still_current(request: Request, pipeline: str, task: str):
        """A spout or service worker asks whether to keep running its task."""
        return await w.still_current(request, pipeline, task)

    @app.post("/v1/workers/read", responses={200: BINARY_ANSWER, **failures(*WORKER, *CONTENT)})
    async def read_batch(request: Request, body: pps_models.ReadBatch):
        return await w.read_batch(request, body)

    @app.post("/v1/workers/tasks/{task_id}/result", responses=failures(*WORKER, *CHANGE), openapi_extra=BINARY_BODY)
    async def task_result(request: Request, task_id: str, worker: str = "", next: bool = False):
        """``next=true``: answer ``{"accepted": n, "next": task or null}``, the worker's next
        task if one is waiting (pps/WORKERS.md)."""
        return await w.task_result(request, task_id, worker, next)

    @app.post("/v1/workers/logs", responses=failures(*WORKER, InvalidArgument, NoSpace), openapi_extra=NDJSON_BODY)
    async def worker_logs(request: Request):
        return await w.worker_logs(request)

    # Workers' requests are the daemon's most frequent: their routes are tried first, so a
    # worker's request is not matched against every other route's pattern on the way.
    hot = [r for r in app.router.routes if getattr(r, "path", "").startswith("/v1/workers/")]
    app.router.routes[:] = hot + [r for r in app.router.routes if r not in hot]
