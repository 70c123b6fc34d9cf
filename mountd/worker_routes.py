"""The worker endpoints' logic (pps/WORKERS.md, "Worker endpoints"), in one home
for both ways a request reaches it: FastAPI's routes (mountd/pps_api.py, which
also document them in the OpenAPI) and the worker fast lane
(mountd/fastlane.py), which serves the same requests on the same port without
the ASGI stack. A handler takes a request that has ``headers.get(name)`` and
``stream()`` (Starlette's, or the fast lane's) and returns a Starlette
``Response``, or raises a ``PfsError`` that the app's exception handlers turn
into the API's error answer."""

from __future__ import annotations

import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple, Protocol

import msgpack
import trio
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from mountd import pps_models, wire
from mountd.app import drain, pump, run
from mountd.ingest import WireIngest
from pfsfuse.errors import Forbidden, InvalidArgument, NoSpace, NotFound, PfsError, Unauthorized
from pfsfuse.files import PinSession
from pfsfuse.pfs import PFS
from pps.scheduler import Scheduler
from pps.store import JobRow

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
WORKER_HEADER = "X-Pachy-Worker"  # shim.link sends it; the daemon must not import the shim

class Worker(NamedTuple):
    pipeline: str
    worker: str


def _find_job(s: Scheduler, job_id: str) -> JobRow | None:
    try:
        return s.store.get_job(job_id)
    except PfsError:  # unknown, or an ambiguous prefix
        return None


SMALL = 1 << 20  # bytes of a batch read handed over per thread hop
SMALL_RESULT = 256 << 10  # a task result up to this is read whole, then stored in one thread hop


class ResultIngest(WireIngest):
    """A task's result stream (WORKERS.md): each ``U`` record opens a unit whose
    outputs are pinned under their own owner as they stream in (one pin session
    for the whole task)."""

    what = "result stream"

    def __init__(self, pfs: PFS, job_id: str):
        super().__init__(tags=wire.RESULT_TAGS)
        self.pfs, self.job_id = pfs, job_id
        self.results: list[dict] = []
        self._nonce = uuid.uuid4().hex[:8]
        self._session: PinSession | None = None
        self._unit: dict | None = None

    def _pins(self) -> PinSession:
        if self._unit is None:
            raise InvalidArgument("result stream: an output record before any unit record")
        if self._session is None:
            self._session = self.pfs.pin_session()
        if self._unit["owner"] is None:
            self._unit["owner"] = f"job/{self.job_id}/{self._unit['unit_id']}/{self._nonce}"
        self._session.owner = self._unit["owner"]
        return self._session

    def put_target(self, header: dict) -> tuple[PinSession, str]:
        return self._pins(), "append" if header.get("append") else "put"

    def other(self, tag: bytes, header: dict) -> None:
        if tag == wire.UNIT:
            # The owner of the unit's pins is the daemon's to name, never the worker's.
            self._unit = dict(header) | {"owner": None}
            self.results.append(self._unit)
        else:
            self._pins().mark("mkdir" if tag == wire.MKDIR else "delete", header.get("path", ""))

    def close(self) -> list[dict]:
        self.end_of_stream()
        if self._session is not None:
            self._session.commit()
            self._session = None
        return self.results

    def abort(self) -> None:
        if self._session is not None:
            self._session.close()
        for r in self.results:
            if r.get("owner"):
                self.pfs.unpin(r["owner"])


def unit_records(body: bytes) -> list[dict] | None:
    """The results of a result stream made of unit records only (no outputs), as
    ``ResultIngest`` would give them; None if it holds anything else."""
    results = []
    pos, end = 0, len(body)
    try:
        while pos < end:
            if body[pos : pos + 1] != wire.UNIT:
                return None
            n = _U32.unpack_from(body, pos + 1)[0]
            if pos + 5 + n > end:
                return None
            header = msgpack.unpackb(body[pos + 5 : pos + 5 + n], raw=False)
            if not isinstance(header, dict):
                return None
            results.append(header | {"owner": None})  # no outputs, so nothing pinned
            pos += 5 + n
    except (struct.error, ValueError, msgpack.UnpackException):
        return None  # malformed: ResultIngest says how
    return results


class _Replay:
    """A request body of which the first pieces were read already: ``pump`` reads
    them again, then the rest of the stream."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes]):
        self.head, self.rest = head, rest

    async def stream(self) -> AsyncIterator[bytes]:
        for piece in self.head:
            yield piece
        async for piece in self.rest:
            yield piece


def parse_log_lines(body: bytes) -> list[dict]:
    """``POST /v1/workers/logs``: one JSON object per line, each checked (a
    malformed line is the caller's error, not the daemon's)."""
    lines = []
    for number, text in enumerate(body.decode("utf-8", "replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            lines.append(pps_models.WorkerLogLine.model_validate_json(text).model_dump())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise InvalidArgument(f"malformed log line {number}: {where + ': ' if where else ''}{first['msg']}") from None
    return lines



class WorkerRequest(Protocol):
    """What the handlers use of a request: Starlette's ``Request`` has it, and so has
    the fast lane's."""

    @property
    def headers(self): ...

    def stream(self) -> AsyncIterator[bytes]: ...


async def _body(request: WorkerRequest) -> bytes:
    return b"".join([piece async for piece in request.stream()])


class WorkerRoutes:
    """The worker endpoints of one daemon. Every one wants the credential its runner
    gave the worker (header X-Pachy-Worker) and answers only about that worker's
    pipeline and tasks: a task (with its secrets) goes only to the pipeline's own workers."""

    def __init__(self, pfs: PFS, s: Scheduler, poll_limiter: trio.CapacityLimiter):
        self.pfs, self.s, self.poll_limiter = pfs, s, poll_limiter

    def worker_of(self, request: WorkerRequest) -> Worker:
        credential = request.headers.get(WORKER_HEADER, "")
        found = self.s.runner.authenticate(credential) if credential else None
        if found is None:
            raise Unauthorized(
                "worker endpoints answer only workers this daemon started, with the credential it gave them "
                f"({WORKER_HEADER}); a worker of an earlier run of the daemon must exit"
            )
        return Worker(*found)

    @staticmethod
    def own_pipeline(w: Worker, pipeline: str) -> None:
        if pipeline != w.pipeline:
            raise Forbidden(f"worker '{w.worker}' serves pipeline '{w.pipeline}', not '{pipeline}'")

    async def next_task(self, request: WorkerRequest, pipeline: str, worker: str = "", wait: float = 20.0) -> Response:
        s = self.s
        w = self.worker_of(request)
        self.own_pipeline(w, pipeline)
        if worker and worker != w.worker:
            raise Forbidden(f"this credential was issued to worker '{w.worker}', not '{worker}'")
        # Under load a task is waiting: taken at once on the event loop (a deque under a lock
        # held for microseconds), with no thread hop and no SQLite. A queued task means its
        # pipeline exists (deleting a pipeline drops its tasks).
        task = s.queue.take(pipeline, w.worker, 0)
        if task is None:
            if await run(s.store.find_pipeline, pipeline) is None:
                # Deleted (perhaps while the runner was starting this worker): it must exit.
                raise NotFound(f"pipeline '{pipeline}' not found")
            task = await trio.to_thread.run_sync(s.queue.take, pipeline, w.worker, min(wait, 60.0),
                                                 abandon_on_cancel=True, limiter=self.poll_limiter)
            if task is None:
                return Response(status_code=204)
        return Response(task.encoded, media_type="application/json")

    async def still_current(self, request: WorkerRequest, pipeline: str, task: str) -> Response:
        """A spout or service worker asks whether to keep running its task."""
        self.own_pipeline(self.worker_of(request), pipeline)
        current = await run(self.s.still_current, pipeline, task)
        return Response(b'{"current":true}' if current else b'{"current":false}', media_type="application/json")

    async def read_batch(self, request: WorkerRequest, body: pps_models.ReadBatch) -> Response:
        pfs, s = self.pfs, self.s
        w = self.worker_of(request)
        items = [it.model_dump() for it in body.items]
        lease = s.queue.leased(w.worker)
        allowed = lease.commits if lease is not None and lease.pipeline == w.pipeline else set()
        for it in items:
            if (it["repo"], it["commit"]) not in allowed:
                raise Forbidden(
                    f"worker '{w.worker}' may read only the inputs of the task it holds, not "
                    f"{it['repo']}@{it['commit']}"
                )

        def chunks() -> Iterator[bytes]:
            rows: dict[tuple[str, str], tuple] = {}  # a task reads many files of few commits
            for it in items:
                key = (it["repo"], it["commit"])
                if key not in rows:
                    rows[key] = pfs.resolve(*key)
                n, pieces = pfs.read_range(it["repo"], it["commit"], it["path"], int(it.get("offset", 0)),
                                           int(it.get("length", -1)), row=rows[key])
                yield _U64.pack(n)
                yield from pieces

        gen = chunks()

        def batch() -> list[bytes]:
            """Pieces worth ~1 MiB per thread hop: a task of small files is one hop, not two per file."""
            out, size = [], 0
            for piece in gen:
                out.append(piece)
                size += len(piece)
                if size >= SMALL:
                    break
            return out

        first = await run(batch)  # errors (a missing file) answer before the 200

        async def chunked():
            pieces = first
            while pieces:
                if all(len(p) < 65536 for p in pieces):
                    yield b"".join(pieces)
                else:
                    for p in pieces:
                        yield p
                pieces = await run(batch)

        return StreamingResponse(chunked(), media_type="application/octet-stream")

    async def task_result(self, request: WorkerRequest, task_id: str, worker: str = "",
                          then: bool = False) -> Response:
        """``then`` (``?next=true``): the worker wants its next task in the answer, if one is waiting
        (``{"accepted": n, "next": task or null}``): one exchange per task, not two."""
        pfs, s = self.pfs, self.s
        w = self.worker_of(request)
        held = s.queue.get(task_id)
        if held is not None and (held.pipeline != w.pipeline or held.worker != w.worker):
            await drain(request)
            raise Forbidden(f"task '{task_id}' is not held by worker '{w.worker}'")
        found = s.job_for_task(task_id)  # in memory, locks held for microseconds: no thread hop
        if found is None:
            await drain(request)
            raise NotFound(f"task '{task_id}' is not running (its job ended, or another worker finished it)")
        ingest = ResultIngest(pfs, found[1].row.id)

        def accepted(n: int) -> Response:
            if not then:
                return Response(b'{"accepted":%d}' % n, media_type="application/json")
            # Only a task waiting now: the result's answer is not held back for a poll.
            task = s.queue.take(w.pipeline, w.worker, 0)
            nxt = task.encoded if task is not None else b"null"
            return Response(b'{"accepted":%d,"next":%s}' % (n, nxt), media_type="application/json")

        def failed(exc: BaseException) -> None:
            ingest.abort()
            if isinstance(exc, NoSpace | InvalidArgument) or getattr(exc, "errno", None) in (28, 122):
                # Not the worker's fault, and trying again elsewhere would fail alike.
                reason = exc.message if isinstance(exc, PfsError) else f"no space left on device: {exc}"
                s.task_failed(task_id, f"storing the outputs failed: {reason}")

        def store_and_record(body: bytes) -> int:
            try:
                ingest.feed(body)
                results = ingest.close()
            except (PfsError, OSError) as exc:
                failed(exc)
                raise
            except BaseException:
                ingest.abort()
                raise
            return len(results) if s.task_result(task_id, results) else 0

        async def record_units(units: list[dict]) -> Response:
            """Results without outputs: nothing to store, so no thread hop; the writer thread
            records them with others' (one fsync for all) and wakes this request."""
            token = trio.lowlevel.current_trio_token()
            written = trio.Event()
            failure: list[BaseException | None] = []

            def done(error: BaseException | None) -> None:
                failure.append(error)
                token.run_sync_soon(written.set)

            if not s.submit_result(task_id, units, done):
                return accepted(0)
            await written.wait()
            if failure[0] is not None:
                raise failure[0]
            return accepted(len(units))

        # Most results are a few unit records and small files: read whole on the event loop,
        # then stored and recorded in one thread hop (none without outputs). A bigger one
        # streams into the ingest.
        stream = request.stream()
        head: list[bytes] = []
        size = 0
        async for piece in stream:
            head.append(piece)
            size += len(piece)
            if size > SMALL_RESULT:
                break
        else:
            body = b"".join(head)
            units = unit_records(body)
            if units is not None:
                return await record_units(units)
            return accepted(await run(store_and_record, body))
        try:
            await pump(_Replay(head, stream), ingest.feed)
            results = await run(ingest.close)
        except (PfsError, OSError) as exc:
            await run(failed, exc)
            raise
        except BaseException:
            await run(ingest.abort)
            raise
        ok = await run(s.task_result, task_id, results)
        return accepted(len(results) if ok else 0)

    async def worker_logs(self, request: WorkerRequest) -> Response:
        s = self.s
        w = self.worker_of(request)
        lines = parse_log_lines(await _body(request))

        def write() -> None:
            jobs: dict[str, bool] = {}  # job id -> is it this worker's pipeline's?
            mine = []
            for line in lines:
                job = line.get("job")
                if job is not None:
                    if job not in jobs:
                        row = _find_job(s, str(job))
                        jobs[job] = row is not None and row.id == job and row.pipeline == w.pipeline
                    if not jobs[job]:
                        continue  # a line for another pipeline's job: not this worker's to write
                mine.append(line | {"pipeline": w.pipeline, "worker": w.worker})
            s.logs.write(mine)

        await run(write)
        return Response(b"{}", media_type="application/json")
