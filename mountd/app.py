"""The HTTP API (FastAPI on trio): a thin skin over the PFS engine.

Every engine call runs in a worker thread; bodies stream both ways in pieces
of a few MiB, so no request holds a whole file in memory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

import trio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from mountd import models, wire
from mountd.events_api import add_event_routes
from mountd.ingest import (
    NEW_COMMIT_DOC,
    CancellableReader,
    WireIngest,
    commit_upload,
    open_session,
    run_until_disconnect,
)
from mountd.mounts import MountManager
from pfsfuse import __version__
from pfsfuse.errors import (
    AlreadyExists,
    Conflict,
    Damaged,
    Forbidden,
    InvalidArgument,
    NoSpace,
    NotFound,
    PfsError,
    SourceError,
)
from pfsfuse.files import WriteSession
from pfsfuse.pfs import PFS

BATCH = 4 << 20  # bytes handed to a worker thread at a time

# What a route can fail with, by what it does; each route names one of these
# (or its own tuple) in ``responses=failures(...)``, and the statuses in the
# OpenAPI come from the classes (pfsfuse/errors.py). Malformed requests (400)
# and a wrong token (401) are added to every route that can answer them by
# ``document_common_failures``.
LOOKUP = (InvalidArgument, NotFound)  # reads naming a repo, commit, branch or path
CONTENT = (*LOOKUP, Damaged)  # reads of file contents: a missing or corrupt chunk
CHANGE = (*LOOKUP, Conflict, NoSpace)  # writes to what exists
CREATE = (*CHANGE, AlreadyExists)  # writes that make something named
failures = models.failure_responses

# Bodies that are streamed rather than parsed as JSON, described for the OpenAPI.
BINARY_BODY = {"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
BINARY_ANSWER = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


async def run(fn: Callable, *args):
    return await trio.to_thread.run_sync(fn, *args)


async def pump(request: Request, feed: Callable[[bytes], None]) -> None:
    """Receive the body on the event loop while a worker thread consumes it,
    a few MiB of pieces per hand-off (handed over as they came: no copy)."""
    send, recv = trio.open_memory_channel(1)

    async def produce() -> None:
        async with send:
            pieces: list[bytes] = []
            size = 0
            async for piece in request.stream():
                pieces.append(piece)
                size += len(piece)
                if size >= BATCH:
                    await send.send(pieces)
                    pieces, size = [], 0
            if pieces:
                await send.send(pieces)

    def consume(pieces: list[bytes]) -> None:
        for piece in pieces:
            feed(piece)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with recv:
                async for pieces in recv:
                    await run(consume, pieces)
    except BaseExceptionGroup as group:
        # trio wraps what the nursery raised in a group; re-raise the error
        # itself so the PfsError/OSError handlers answer with its kind, not 500.
        raise _cause(group) from None


async def drain(request: Request) -> None:
    """Read and drop the rest of a body we gave up on: clients send all of it
    before they read the answer, so answering early leaves them hanging (or
    the connection unusable) instead of seeing the error."""
    try:
        async for _ in request.stream():
            pass
    except Exception:  # read to its end already ("Stream consumed"), or the client left
        pass


def _cause(group: BaseExceptionGroup) -> BaseException:
    """The error that matters in a nursery's exception group: a PfsError or
    OSError (ENOSPC) if there is one, else the first."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        e = pending.pop(0)
        if isinstance(e, BaseExceptionGroup):
            pending[:0] = e.exceptions
        else:
            leaves.append(e)
    return next((e for e in leaves if isinstance(e, PfsError | OSError)), leaves[0])


class BatchIngest(WireIngest):
    """Applies a wire stream of puts/mkdirs/deletes to a write session (in a thread)."""

    def __init__(self, session: WriteSession):
        super().__init__()
        self.session = session

    def put_target(self, header: dict) -> tuple[WriteSession, bool]:
        return self.session, bool(header.get("overwrite"))

    def other(self, tag: bytes, header: dict) -> None:
        path = header.get("path", "")
        if tag == wire.MKDIR:
            self.session.mkdir(path)
        else:
            self.session.delete(path)

    def close(self, cancelled: threading.Event | None = None) -> models.PutResult:
        self.end_of_stream()
        commit_upload(self.session, cancelled)
        return _put_result(self.session)


def _put_result(session: WriteSession) -> models.PutResult:
    finished = getattr(session, "finished", None)  # the commit a new_commit upload made
    return models.PutResult(
        files=session.files, bytes=session.bytes, stored=session.sink.packs.bytes_written,
        commit=_commit(finished) if finished is not None else None,
    )


def _commit(info) -> models.Commit:
    return models.Commit(**info.to_dict())


@contextlib.asynccontextmanager
async def upload_session(pfs: PFS, repo: str, ref: str, new_commit: bool) -> AsyncIterator[WriteSession]:
    """A write session for one upload request, closed in a worker thread even
    when the request is cancelled: closing an abandoned session deletes the
    packs it wrote (and waits for those still being written)."""
    session = await run(open_session, pfs, repo, ref, new_commit)
    try:
        yield session
    finally:
        with trio.CancelScope(shield=True):
            await run(session.close)


class LocalUnavailable(PfsError):
    """The client named a file on its machine that this daemon cannot read as
    the same file: the client streams it instead."""

    kind = "local_unavailable"
    http_status = 412


class TokenAuth:
    """Bearer-token check as plain ASGI (a per-request wrapper costs nothing on
    the body stream, unlike an ``@app.middleware`` one)."""

    # /healthz: Kubernetes probes carry no token.
    PUBLIC = ("/openapi.json", "/docs", "/healthz")

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.PUBLIC:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                resp = JSONResponse(
                    {"error": "missing or wrong token; set PACHY_TOKEN to the daemon's token", "kind": "unauthorized"},
                    status_code=401,
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def ingest_local(
    pfs: PFS, repo: str, ref: str, path: str, local: str, dev: int, ino: int, overwrite: bool,
    new_commit: bool = False, cancelled: threading.Event | None = None,
):
    """Put a file the client named on this machine, read straight into the
    chunker: no copy through HTTP. The device and inode the client saw must
    match what we open, so a different mount namespace falls back to streaming.
    Only regular files: a FIFO or a device could block this thread for ever
    (opening with O_NONBLOCK never waits for a writer); the client reads those."""
    try:
        regular = stat.S_ISREG(os.stat(local).st_mode)
    except OSError as exc:
        raise LocalUnavailable(f"cannot open '{local}' here: {exc.strerror}") from None
    if not regular:  # never even open a FIFO: its writer would see us as its reader
        raise LocalUnavailable(f"'{local}' is not a regular file; the client reads it")
    with open_session(pfs, repo, ref, new_commit) as session:
        stream = session.put_stream(path)
        try:
            fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise LocalUnavailable(f"cannot open '{local}' here: {exc.strerror}") from None
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
                raise LocalUnavailable(f"'{local}' is not the client's file here")
            os.set_blocking(fd, True)
            try:
                stream.write_from(CancellableReader(f, cancelled) if cancelled is not None else f)
            except OSError as exc:
                if exc.errno in (28, 122):  # ENOSPC/EDQUOT: ours, not the source's
                    raise
                raise SourceError(f"cannot read '{local}': {exc.strerror}") from None
        session.add(path, stream.finish(), stream.size, overwrite)
        commit_upload(session, cancelled)
    return _put_result(session)


def error_answer(exc: PfsError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "kind": exc.kind}, status_code=exc.http_status)


def describe_validation(exc: RequestValidationError) -> str:
    """``body.items.0.repo: Field required``: the first problems, one line."""
    parts = []
    for err in exc.errors()[:3]:
        if err.get("type") == "json_invalid":  # loc is ("body", position)
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            parts.append(f"the body is not JSON ({reason} at character {err['loc'][-1]})")
            continue
        where = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def allowed_methods(routes: list[BaseRoute], scope: dict) -> set[str]:
    """Every method some route serves on the request's path."""
    allowed: set[str] = set()
    for route in routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] != Match.NONE:
            allowed |= methods
    return allowed


def document_common_failures(schema: dict, token_required: bool) -> dict:
    """Add to the generated OpenAPI what every route shares: a malformed request
    is a 400 (FastAPI documents a 422 we never send), and over TCP a missing or
    wrong token is a 401 (with the bearer scheme declared)."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = models.Error.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for item in schema.get("paths", {}).values():
        for op in item.values():
            responses = op.setdefault("responses", {})
            if responses.pop("422", None) is not None:
                said = responses.get("400", {}).get("description")
                responses["400"] = {
                    "description": "malformed request" + (f"; {said}" if said else ""),
                    "content": error,
                }
            if token_required:
                responses["401"] = {"description": "missing or wrong token", "content": error}
    if token_required:
        components["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"token": []}]
    return schema


def build_app(pfs: PFS, token: str | None = None, mounts: MountManager | None = None, scheduler=None) -> FastAPI:
    app = FastAPI(
        title="pachy mountd",
        version=__version__,
        description="Version control for data: repos, commits, branches and files (PFS).",
    )

    if token is not None:
        app.add_middleware(TokenAuth, token=token)

    @app.exception_handler(PfsError)
    async def pfs_error(_request: Request, exc: PfsError):
        return error_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def malformed_request(_request: Request, exc: RequestValidationError):
        # FastAPI's 422 and its own error shape would be a second way of saying
        # "invalid argument"; clients know one: 400 with {"error", "kind"}.
        return error_answer(InvalidArgument(f"malformed request: {describe_validation(exc)}"))

    @app.exception_handler(OverflowError)
    async def number_out_of_range(_request: Request, exc: OverflowError):
        # SQLite holds 64-bit integers; a bigger one can only have come from the
        # request (a commit number, a limit, an offset): the caller's error.
        return error_answer(InvalidArgument(f"a number in the request is out of range ({exc})"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        """The router's and FastAPI's own refusals (no such path, a body that is
        not JSON, a method the path lacks) in the API's error shape."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # The router names the methods of the first route whose path
            # matched; the path may have several routes (GET, POST and DELETE).
            allowed = allowed_methods(app.router.routes, request.scope)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": ", ".join(sorted(allowed | {"OPTIONS"}))})
            headers["Allow"] = ", ".join(sorted(allowed))
        kind = {400: "invalid_argument", 401: "unauthorized", 404: "not_found"}.get(exc.status_code, "error")
        return JSONResponse({"error": str(exc.detail), "kind": kind}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(sqlite3.OperationalError)
    async def sqlite_error(_request: Request, exc: sqlite3.OperationalError):
        if "full" in str(exc):
            e = NoSpace(f"no space left on device for the metadata database in {pfs.home}")
            return JSONResponse({"error": e.message, "kind": e.kind}, status_code=e.http_status)
        traceback.print_exc()
        return JSONResponse({"error": f"internal error: {exc}", "kind": "error"}, status_code=500)

    @app.exception_handler(OSError)
    async def os_error(_request: Request, exc: OSError):
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT
            e = NoSpace(f"no space left on device under {pfs.home}; free some space and retry")
            return JSONResponse({"error": e.message, "kind": e.kind}, status_code=e.http_status)
        traceback.print_exc()
        return JSONResponse({"error": f"internal error: {exc}", "kind": "error"}, status_code=500)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = document_common_failures(schema, token is not None)
        return app.openapi_schema

    app.openapi = openapi

    # -- general ------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        """Liveness and readiness for Kubernetes probes: the daemon serves requests."""
        return {"ok": True}

    @app.get("/v1/version", response_model=models.Version)
    async def version():
        return models.Version(version=__version__, store=pfs.store.describe(), home=pfs.home, pid=os.getpid())

    @app.post("/v1/delete-all", responses=failures(NoSpace))
    async def delete_all():
        def everything() -> None:
            if scheduler is not None:  # seed 4.2.5: "Delete all pipelines and repos"
                for p in reversed(scheduler.store.list_pipelines()):
                    scheduler.delete_pipeline(p.name, force=True)
            pfs.delete_all()

        await run(everything)
        return {}

    @app.post("/v1/archive-all", responses=failures(NoSpace))
    async def archive_all():
        return {"archived": await run(pfs.archive_all)}

    @app.post("/v1/fsck", response_model=models.FsckReport)
    async def fsck():
        return models.FsckReport(**await run(pfs.fsck))

    @app.post("/v1/gc", response_model=models.GcReport, responses=failures(Conflict, NoSpace))
    async def gc():
        return models.GcReport(**await run(pfs.gc))

    # -- the FUSE mount ------------------------------------------------------

    @app.get("/v1/mounts", response_model=list[models.MountInfo])
    async def list_mounts():
        return [models.MountInfo(**m) for m in (mounts.list() if mounts else [])]

    @app.post(
        "/v1/mounts",
        response_model=models.MountInfo,
        status_code=201,
        responses=failures(InvalidArgument, Forbidden, Conflict, PfsError),
    )
    async def mount(body: models.MountRequest):
        if token is not None:
            # Over TCP the caller may be on another machine, and a mount runs as the
            # daemon's user at any path of this one: only local (unix socket) clients.
            raise Forbidden(
                "mounts are refused over TCP: run 'pachctl mount' on the daemon's machine, "
                "against its unix socket"
            )
        if mounts is None or mounts.nursery is None:
            raise PfsError("this daemon cannot serve mounts")
        return models.MountInfo(**await mounts.mount(body.path, body.write, body.repos, body.commit_idle, body.allow_other))

    @app.delete("/v1/mounts", responses=failures(NotFound))
    async def unmount(path: str | None = None):
        return {"unmounted": await mounts.unmount(path) if mounts else []}

    # -- repos --------------------------------------------------------------

    @app.get("/v1/repos", response_model=list[models.Repo])
    async def list_repos():
        return [models.Repo(**asdict(r)) for r in await run(pfs.list_repos)]

    @app.post("/v1/repos", response_model=models.Repo, status_code=201, responses=failures(*CREATE))
    async def create_repo(body: models.CreateRepo):
        return models.Repo(**asdict(await run(pfs.create_repo, body.name, body.description)))

    @app.get("/v1/repos/{repo}", response_model=models.Repo, responses=failures(*LOOKUP))
    async def inspect_repo(repo: str):
        return models.Repo(**asdict(await run(pfs.inspect_repo, repo)))

    @app.delete("/v1/repos/{repo}", responses=failures(*CHANGE))
    async def delete_repo(repo: str, force: bool = False):
        if scheduler is not None and not force:
            readers = await run(scheduler.readers_of, repo)
            if readers:
                raise Conflict(
                    f"repo '{repo}' is an input of pipeline(s) {', '.join(readers)}; delete those first "
                    f"(pachctl delete-pipeline {readers[0]}) or pass --force"
                )
        await run(pfs.delete_repo, repo, force)
        return {}

    # -- commits ------------------------------------------------------------

    @app.post("/v1/repos/{repo}/commits", response_model=models.Commit, status_code=201, responses=failures(*CREATE))
    async def start_commit(repo: str, body: models.StartCommit):
        return _commit(await run(lambda: pfs.start_commit(repo, body.branch, body.parent, body.description)))

    @app.get("/v1/repos/{repo}/commits", response_model=list[models.Commit], responses=failures(*LOOKUP))
    async def list_commits(
        repo: str,
        branch: str | None = None,
        n: int | None = Query(None, ge=0, le=2**63 - 1),
        all: bool = False,
        before: str | None = Query(None, description="a commit id or ref: only commits older than it (paging)"),
    ):
        return [_commit(c) for c in await run(pfs.list_commits, repo, branch, n, all, before)]

    @app.get("/v1/repos/{repo}/commit", response_model=models.Commit, responses=failures(*LOOKUP))
    async def inspect_commit(repo: str, ref: str = Query(...)):
        return _commit(await run(pfs.inspect_commit, repo, ref))

    @app.post("/v1/repos/{repo}/commit/finish", response_model=models.Commit, responses=failures(*CHANGE))
    async def finish_commit(repo: str, ref: str = Query(...), description: str | None = None):
        if mounts is not None:
            row = await run(pfs.resolve, repo, ref)
            await mounts.before_finish(row[0])
        return _commit(await run(pfs.finish_commit, repo, ref, description))

    @app.delete("/v1/repos/{repo}/commit", responses=failures(*CHANGE))
    async def delete_commit(repo: str, ref: str = Query(...)):
        row = await run(pfs.resolve, repo, ref)
        await run(pfs.delete_commit, repo, ref)
        if mounts is not None and mounts.current is not None:
            mounts.current.ops.forget_commit(row[0])
        return {}

    @app.post("/v1/repos/{repo}/commit/archive", responses=failures(*CHANGE))
    async def archive_commit(repo: str, ref: str = Query(...)):
        await run(pfs.archive_commit, repo, ref)
        return {}

    @app.post("/v1/repos/{repo}/fork", response_model=models.Commit, status_code=201, responses=failures(*CREATE))
    async def fork_commit(repo: str, body: models.ForkCommit):
        return _commit(await run(pfs.fork_commit, repo, body.parent, body.branch))

    @app.post("/v1/repos/{repo}/squash", response_model=models.Commit, responses=failures(*CHANGE))
    async def squash_commit(repo: str, body: models.SquashCommit):
        return _commit(await run(pfs.squash_commits, repo, body.sources, body.to))

    @app.post("/v1/repos/{repo}/replay", response_model=list[models.Commit], responses=failures(*CREATE))
    async def replay_commit(repo: str, body: models.ReplayCommits):
        return [_commit(c) for c in await run(pfs.replay_commits, repo, body.sources, body.branch)]

    # -- branches -----------------------------------------------------------

    @app.get("/v1/repos/{repo}/branches", response_model=list[models.Branch], responses=failures(*LOOKUP))
    async def list_branches(repo: str):
        return [models.Branch(**asdict(b)) for b in await run(pfs.list_branches, repo)]

    @app.put("/v1/repos/{repo}/branches/{branch}", response_model=models.Branch, responses=failures(*CREATE))
    async def create_branch(repo: str, branch: str, body: models.SetBranch):
        return models.Branch(**asdict(await run(pfs.create_branch, repo, branch, body.head)))

    @app.delete("/v1/repos/{repo}/branches/{branch}", responses=failures(*CHANGE))
    async def delete_branch(repo: str, branch: str):
        await run(pfs.delete_branch, repo, branch)
        return {}

    # -- files --------------------------------------------------------------

    @app.put(
        "/v1/repos/{repo}/file",
        response_model=models.PutResult,
        responses=failures(*CHANGE, LocalUnavailable),
        openapi_extra=BINARY_BODY,
    )
    async def put_file(
        request: Request,
        repo: str,
        ref: str = Query(...),
        path: str = Query(...),
        overwrite: bool = False,
        local: str | None = Query(None, description="a file on the daemon's machine (unix-socket clients only)"),
        dev: int = 0,
        ino: int = 0,
        new_commit: bool = Query(False, description=NEW_COMMIT_DOC),
    ):
        if local is not None:
            if token is not None:
                raise LocalUnavailable("local files are read only for clients on the daemon's unix socket")
            return await run_until_disconnect(
                request,
                lambda cancelled: ingest_local(pfs, repo, ref, path, local, dev, ino, overwrite, new_commit, cancelled),
            )
        try:
            async with upload_session(pfs, repo, ref, new_commit) as session:
                stream = await run(session.put_stream, path)
                await pump(request, stream.write)
                refs = await run(stream.finish)
                session.add(path, refs, stream.size, overwrite)
                await run_until_disconnect(request, lambda cancelled: commit_upload(session, cancelled))
        except Exception:
            await drain(request)
            raise
        return _put_result(session)

    @app.post(
        "/v1/repos/{repo}/files", response_model=models.PutResult, responses=failures(*CHANGE), openapi_extra=BINARY_BODY
    )
    async def put_files(
        request: Request, repo: str, ref: str = Query(...), new_commit: bool = Query(False, description=NEW_COMMIT_DOC)
    ):
        try:
            async with upload_session(pfs, repo, ref, new_commit) as session:
                ingest = BatchIngest(session)
                await pump(request, ingest.feed)
                return await run_until_disconnect(request, ingest.close)
        except Exception:
            await drain(request)
            raise

    @app.get(
        "/v1/repos/{repo}/file",
        response_class=StreamingResponse,
        responses={200: BINARY_ANSWER, **failures(*CONTENT)},
    )
    async def get_file(repo: str, ref: str = Query(...), path: str = Query(...)):
        info, chunks = await run(pfs.read_file, repo, ref, path)
        # Read the first chunk before answering: once the 200 is sent, a damaged
        # chunk can only cut the body short (the client checks X-Pachy-Size).
        first = await run(next, chunks, None)

        async def body():
            piece = first
            while piece is not None:
                yield piece
                piece = await run(next, chunks, None)

        return StreamingResponse(
            body(), media_type="application/octet-stream", headers={"X-Pachy-Size": str(info.size)}
        )

    @app.get("/v1/repos/{repo}/file/info", response_model=models.FileInfo, responses=failures(*LOOKUP))
    async def inspect_file(repo: str, ref: str = Query(...), path: str = Query(...)):
        return models.FileInfo(**(await run(pfs.inspect_file, repo, ref, path)).to_dict())

    @app.delete("/v1/repos/{repo}/file", responses=failures(*CHANGE))
    async def delete_file(repo: str, ref: str = Query(...), path: str = Query(...)):
        def delete() -> None:
            with pfs.write_session(repo, ref) as session:
                session.delete(path)
                session.commit()

        await run(delete)
        return {}

    @app.get("/v1/repos/{repo}/files", response_model=list[models.FileInfo], responses=failures(*LOOKUP))
    async def list_files(repo: str, ref: str = Query(...), path: str = "/"):
        return [models.FileInfo(**f.to_dict()) for f in await run(pfs.list_files, repo, ref, path)]

    @app.get("/v1/repos/{repo}/glob", response_model=list[models.FileInfo], responses=failures(*LOOKUP))
    async def glob_files(repo: str, ref: str = Query(...), pattern: str = Query(...)):
        return [models.FileInfo(**f.to_dict()) for f in await run(pfs.glob_files, repo, ref, pattern)]

    @app.get(
        "/v1/repos/{repo}/diff",
        response_model=list[models.DiffEntry],
        responses=failures(*LOOKUP, Conflict),  # an open commit has no diff yet
    )
    async def diff_files(repo: str, ref: str = Query(...), old: str | None = None):
        return [models.DiffEntry(**d) for d in await run(pfs.diff_files, repo, ref, old)]

    add_event_routes(app, pfs.events)

    if scheduler is not None:
        from mountd.pps_api import add_pps_routes  # pps_api imports this module's helpers

        add_pps_routes(app, pfs, scheduler)
    return app
