"""The worker fast lane: the worker endpoints served on mountd's own listeners
without the ASGI stack.

Measured here (bench/mountd_scale.py), hypercorn costs ~350-460 us of CPU a
request before the app runs, FastAPI's routing and pydantic more; a worker's
round trip is a few small POSTs, and all of it runs on one core (the GIL). A
request read off the socket and parsed here (HTTP/1.1, keep-alive) costs ~20 us.

Every connection hypercorn accepts comes here first (``install`` swaps the
connection class its trio server builds). A connection whose next request is
one the lane knows — ``POST /v1/workers/...`` of the five worker routes, over
HTTP/1.1, with a ``Content-Length`` or chunked body — is served here, request
after request; at the first request it does not know (any other path or method,
``Expect``, an upgrade, HTTP/1.0, a head over 64 KiB), the connection is handed
to hypercorn's own connection class with the bytes read so far replayed, and
hypercorn serves it from then on, exactly as before. So the rest of the API
(and its OpenAPI, SSE, streaming) is untouched, and one port serves all.

What the lane serves is the same code as the FastAPI routes
(mountd/worker_routes.py: one home); here is only the HTTP: the bearer token
check (as ``mountd.app.TokenAuth``), path and query parsing with the same
validation messages, and errors answered by the app's own exception handlers.
"""

from __future__ import annotations

import http
import secrets
import traceback
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

import hypercorn.trio.run
import trio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from hypercorn.trio.tcp_server import TCPServer
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response, StreamingResponse

from mountd import pps_models
from mountd.worker_routes import WorkerRoutes
from pfsfuse.errors import InvalidArgument

MAX_HEAD = 64 * 1024  # as mountd.server's h11_max_incomplete_size: a bigger head goes to hypercorn
RECV = 1 << 20  # as hypercorn's MAX_RECV in mountd.server
PREFIX = b"POST /v1/workers/"
TRUE, FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}  # pydantic's bools
PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}


class Lane:
    """What the lane serves, for one daemon (set by ``install``)."""

    def __init__(self, app: FastAPI, routes: WorkerRoutes, token: str | None):
        self.app, self.routes = app, routes
        self.expected = f"Bearer {token}" if token is not None else None
        # Idle keep-alive connections, closed at once when the server stops (as hypercorn's are).
        self.idle: weakref.WeakSet[trio.CancelScope] = weakref.WeakSet()
        self.watching: set[int] = set()


_lane: Lane | None = None


def install(app: FastAPI, token: str | None) -> None:
    """Serve the worker routes of ``app`` (``app.state.worker_routes``) in the lane on every
    listener of hypercorn's trio server started after this (a process serves one daemon)."""
    global _lane
    _lane = Lane(app, app.state.worker_routes, token)
    hypercorn.trio.run.TCPServer = Connection  # worker_serve builds one per accepted connection


class _Head:
    """A request's line and headers, parsed; ``None`` from ``parse`` when not the lane's."""

    __slots__ = ("path", "query", "headers", "length", "chunked", "close")

    @classmethod
    def parse(cls, raw: bytes) -> _Head | None:
        lines = raw.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1" or not parts[1].startswith(b"/v1/"):
            return None
        h = cls()
        target = parts[1].decode("latin-1")
        h.path, _, h.query = target.partition("?")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            key = name.decode("latin-1").lower()
            if not sep or key != key.strip() or key in headers:
                return None  # malformed, or repeated: hypercorn says what it thinks of it
            headers[key] = value.strip().decode("latin-1")
        if "expect" in headers or "upgrade" in headers:
            return None
        te, cl = headers.get("transfer-encoding"), headers.get("content-length")
        h.chunked = te is not None
        if h.chunked and (te.lower() != "chunked" or cl is not None):
            return None
        if cl is not None and not cl.isdigit():
            return None
        h.length = int(cl or 0)
        h.close = headers.get("connection", "").lower() == "close"
        h.headers = headers
        return h


class _Headers:
    """Case-insensitive ``get``, as Starlette's request headers."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, str]):
        self._d = d

    def get(self, name: str, default: Any = None) -> Any:
        return self._d.get(name.lower(), default)


class _Request:
    """One request of a connection: its headers and its body as a stream (read off the
    socket as the handler asks for it; whatever of it the handler left is drained)."""

    def __init__(self, conn: Connection, head: _Head):
        self.conn, self.head = conn, head
        self.headers = _Headers(head.headers)
        self.started = self.complete = False
        self.method = "POST"

    async def _more(self) -> None:
        data = await self.conn.stream.receive_some(RECV)
        if not data:
            raise trio.BrokenResourceError("the client closed the connection in the middle of a body")
        self.conn.buf += data

    async def stream(self) -> AsyncIterator[bytes]:
        if self.started:
            raise RuntimeError("Stream consumed")  # as Starlette's; mountd.app.drain expects it
        self.started = True
        buf = self.conn.buf
        if not self.head.chunked:
            left = self.head.length
            while left:
                if not buf:
                    await self._more()
                piece = bytes(buf[:left])
                del buf[: len(piece)]
                left -= len(piece)
                yield piece
        else:
            while True:
                while (eol := buf.find(b"\r\n")) < 0:
                    await self._more()
                size = int(bytes(buf[:eol]).split(b";")[0], 16)
                if size == 0:
                    while (end := buf.find(b"\r\n")) != 0:  # trailers, if any, then the empty line
                        if end < 0:
                            await self._more()
                        else:
                            del buf[: end + 2]
                    del buf[:2]
                    break
                while len(buf) < eol + 2 + size + 2:
                    await self._more()
                piece = bytes(buf[eol + 2 : eol + 2 + size])
                del buf[: eol + 2 + size + 2]
                yield piece
        self.complete = True

    async def body(self) -> bytes:
        return b"".join([piece async for piece in self.stream()])


def _malformed(where: str, message: str) -> InvalidArgument:
    """As FastAPI's validation of a query parameter reads in the API's error (mountd.app)."""
    return InvalidArgument(f"malformed request: {where}: {message}")


def _float(query: dict[str, str], name: str, default: float) -> float:
    if name not in query:
        return default
    try:
        return float(query[name])
    except ValueError:
        raise _malformed(f"query.{name}", "Input should be a valid number, unable to parse string as a number") from None


def _bool(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise _malformed(f"query.{name}", "Input should be a valid boolean, unable to interpret input")


async def _read_batch(routes: WorkerRoutes, request: _Request, _query: dict[str, str]) -> Response:
    raw = await request.body()
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and not (ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))):
        # As FastAPI: a body not declared JSON is not parsed as JSON, and bytes are no object.
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "input": raw,
                                       "msg": "Input should be a valid dictionary or object to extract fields from"}])
    try:
        body = pps_models.ReadBatch.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([e | {"loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    return await routes.read_batch(request, body)


def _route(head: _Head) -> Callable[[WorkerRoutes, _Request, dict[str, str]], Any] | None:
    """The handler for a request's path, with its path parameters bound; None if not a worker route."""
    segs = head.path.split("/")  # "", "v1", "workers", ...
    if len(segs) < 4 or segs[2] != "workers":
        return None
    args = [unquote(s) for s in segs[3:]]
    if any("/" in a or not a for a in args):
        return None  # as Starlette would route it: not the lane's to decide
    if args == ["read"]:
        return _read_batch
    if args == ["logs"]:
        return lambda r, req, _q: r.worker_logs(req)
    if len(args) == 3 and args[0] == "tasks" and args[2] == "result":
        return lambda r, req, q: r.task_result(req, args[1], q.get("worker", ""), _bool(q, "next"))
    if len(args) == 2 and args[1] == "next":
        return lambda r, req, q: r.next_task(req, args[0], q.get("worker", ""), _float(q, "wait", 20.0))
    if len(args) == 2 and args[1] == "still":
        def still(r: WorkerRoutes, req: _Request, q: dict[str, str]) -> Any:
            if "task" not in q:
                raise _malformed("query.task", "Field required")
            return r.still_current(req, args[0], q["task"])
        return still
    return None


class _Replayed:
    """A connection's stream for hypercorn, with what the lane read of it first."""

    def __init__(self, stream: Any, data: bytes):
        self._stream, self._data = stream, data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._data:
            data, self._data = self._data, b""
            return data
        return await self._stream.receive_some(max_bytes)

    def __getattr__(self, name: str) -> Any:  # send_all, send_eof, aclose, socket, ...
        return getattr(self._stream, name)


class Connection:
    """Built by hypercorn's trio server for each accepted connection, in place of its
    ``TCPServer`` (same arguments): the lane, until a request that is not the lane's."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: Any):
        self.args = (app, config, context, state)
        self.config, self.context, self.stream = config, context, stream
        self.buf = bytearray()
        self.handed = False

    def __await__(self):
        return self.run().__await__()

    async def run(self) -> None:
        lane = _lane
        if lane is None or hasattr(self.stream, "do_handshake"):  # TLS: hypercorn's
            return await TCPServer(*self.args, self.stream).run()
        self._watch(lane)
        try:
            while True:
                head = await self._next_head(lane)
                if head is None:
                    return
                if head is False:
                    self.handed = True
                    return await TCPServer(*self.args, _Replayed(self.stream, bytes(self.buf))).run()
                if not await self._serve(lane, head) or self.context.terminated.is_set():
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            if not self.handed:
                with trio.CancelScope(shield=True):
                    await self.stream.aclose()

    def _watch(self, lane: Lane) -> None:
        """Once per server: when it stops, idle keep-alive connections close at once."""
        if id(self.context) in lane.watching:
            return
        lane.watching.add(id(self.context))

        async def watch() -> None:
            await self.context.terminated.wait()
            for scope in list(lane.idle):
                scope.cancel()

        trio.lowlevel.spawn_system_task(watch)

    async def _next_head(self, lane: Lane) -> _Head | None | bool:
        """The next request's head if the lane serves it (its bytes consumed); False to hand
        the connection over (nothing consumed); None when the connection is done."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD or (self.buf and not PREFIX.startswith(bytes(self.buf[: len(PREFIX)]))):
                return False
            if self.buf:
                data = await self.stream.receive_some(RECV)
            else:  # between requests: idle, as long as hypercorn keeps a connection idle
                if self.context.terminated.is_set():
                    return None
                data = b""
                with trio.move_on_after(self.config.keep_alive_timeout) as scope:
                    lane.idle.add(scope)
                    data = await self.stream.receive_some(RECV)
                lane.idle.discard(scope)
            if not data:
                return None
            self.buf += data
        head = _Head.parse(bytes(self.buf[:end]))
        if head is None or _route(head) is None:
            return False
        del self.buf[: end + 4]
        return head

    async def _serve(self, lane: Lane, head: _Head) -> bool:
        """One request; whether the connection goes on."""
        request = _Request(self, head)
        try:
            if lane.expected is not None and not secrets.compare_digest(
                head.headers.get("authorization", "").encode("latin-1"), lane.expected.encode()
            ):
                response: Response = JSONResponse(
                    {"error": "missing or wrong token; set PACHY_TOKEN to the daemon's token", "kind": "unauthorized"},
                    status_code=401,
                )
            else:
                query = dict(parse_qsl(head.query, keep_blank_values=True))
                response = await _route(head)(lane.routes, request, query)
        except Exception as exc:
            response = await self._error(lane, request, exc)
        keep = not head.close
        if not request.started:
            async for _ in request.stream():  # unread body (a refusal): read past it
                pass
        elif not request.complete:
            keep = False  # the handler stopped in the middle of a body: the rest is unknown
        await self._send(response, keep)
        return keep

    @staticmethod
    async def _error(lane: Lane, request: _Request, exc: Exception) -> Response:
        """The app's own answer to an error (its exception handlers: mountd.app)."""
        for cls in type(exc).__mro__:
            handler = lane.app.exception_handlers.get(cls)
            if handler is not None:
                return await handler(request, exc)
        traceback.print_exc()
        return JSONResponse({"error": f"internal error: {exc!r}", "kind": "error"}, status_code=500)

    async def _send(self, response: Response, keep: bool) -> None:
        status = response.status_code
        head = [b"HTTP/1.1 %d %s\r\n" % (status, PHRASES.get(status, b""))]
        for name, value in response.raw_headers:
            head.append(name + b": " + value + b"\r\n")
        if not keep:
            head.append(b"connection: close\r\n")
        if isinstance(response, StreamingResponse):
            head.append(b"transfer-encoding: chunked\r\n\r\n")
            await self.stream.send_all(b"".join(head))
            async for piece in response.body_iterator:
                if piece:
                    data = piece if isinstance(piece, bytes) else piece.encode()
                    await self.stream.send_all(b"%x\r\n" % len(data) + data + b"\r\n")
            await self.stream.send_all(b"0\r\n\r\n")
        else:
            head.append(b"\r\n")
            await self.stream.send_all(b"".join(head) + response.body)
