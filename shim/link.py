"""The worker's HTTP calls to mountd (pps/WORKERS.md, "Worker endpoints").

Everything goes through the ``pachctl`` Client's transport (unix socket or
TCP, bearer token) and its error mapping, so a worker reaches a daemon
exactly as ``pachctl`` does. A daemon that cannot be reached raises
``errors.Unreachable``; the worker loop decides how long to keep trying.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator

import httpx
import msgpack

from mountd import wire
from pachctl.client import Client, errors
from shim import collect

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
SMALL = 64 * 1024  # records below this are joined into bigger writes; larger ones pass through
STILL_TIMEOUT = 10.0
WORKER_HEADER = "X-Pachy-Worker"


def encode_unit(header: dict) -> bytes:
    """The ``b"U"`` record: a unit's header, no data; its outputs follow it."""
    return wire.encode_header(wire.UNIT, header)


def encode_put(path: str, pieces: Iterable[bytes], append: bool = False) -> Iterator[bytes]:
    """A ``b"P"`` record of a worker result (``append`` instead of ``overwrite``)."""
    h = msgpack.packb({"path": path, "append": append}, use_bin_type=True)
    yield wire.PUT + _U32.pack(len(h)) + h
    for piece in pieces:
        if piece:
            yield _U32.pack(len(piece))
            yield piece
    yield _U32.pack(0)


def encode_actions(actions: Iterable[collect.Action]) -> Iterator[bytes]:
    """A unit's outputs as wire records, file contents streamed from disk."""
    for a in actions:
        if a.kind == "put":
            yield from encode_put(a.path, collect.pieces(a.source))
        elif a.kind == "append":
            yield from encode_put(a.path, collect.pieces(a.source, a.offset), append=True)
        elif a.kind == "mkdir":
            yield wire.encode_header(wire.MKDIR, {"path": a.path})
        else:
            yield wire.encode_header(wire.DELETE, {"path": a.path})


def coalesce(records: Iterable[bytes]) -> Iterator[bytes]:
    """Join small records into ~1 MiB writes; hand big pieces on without copying them."""
    buf = bytearray()
    for rec in records:
        if len(rec) >= SMALL:
            if buf:
                yield bytes(buf)
                buf.clear()
            yield rec
            continue
        buf += rec
        if len(buf) >= 1 << 20:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


class Link:
    """One worker's connection to the daemon."""

    def __init__(
        self, address: str | None = None, token: str | None = None, home: str | None = None,
        *, credential: str | None = None,
    ):
        self.client = Client(address, token=token, home=home, autostart=False)
        self.where = self.client.where
        self.home = self.client.settings.home
        self._http = self.client._http
        if credential:
            # Every request carries it: the worker endpoints answer only the worker it was issued to.
            self._http.headers[WORKER_HEADER] = credential

    def close(self) -> None:
        self.client.close()

    def _call(self, fn: Callable[[], httpx.Response]) -> httpx.Response:
        try:
            return Client._check(fn())
        except httpx.TransportError as exc:
            raise self.client._unreachable(exc) from None

    def next_task(self, pipeline: str, worker: str, wait: float = 20.0) -> dict | None:
        """Long-poll for a task; None when none came within ``wait`` seconds."""
        url = f"/v1/workers/{_seg(pipeline)}/next"
        timeout = httpx.Timeout(wait + 30.0, connect=10.0)  # the daemon answers by `wait`
        resp = self._call(
            lambda: self._http.post(url, params={"worker": worker, "wait": wait}, timeout=timeout)
        )
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def still_current(self, pipeline: str, task_id: str) -> bool:
        """``POST /v1/workers/{pipeline}/still``: keep running this spout or service task?"""
        url = f"/v1/workers/{_seg(pipeline)}/still"
        timeout = httpx.Timeout(STILL_TIMEOUT, connect=STILL_TIMEOUT)  # asked every second: never hang on it
        resp = self._call(lambda: self._http.post(url, params={"task": task_id}, timeout=timeout))
        return bool(resp.json().get("current"))

    def walk(self, repo: str, commit: str) -> list[dict]:
        """Every file and directory of a commit (for 1.x ``/pfs/prev``)."""
        url = f"/v1/repos/{_seg(repo)}/glob"
        resp = self._call(lambda: self._http.get(url, params={"ref": commit, "pattern": "**"}))
        return resp.json()

    def read_batch(self, items: list[dict]) -> Iterator[Iterator[bytes]]:
        """``POST /v1/workers/read``: per item, in order, an iterator of its bytes.

        The answer is streamed: nothing holds more than one network chunk.
        Each item's iterator must be consumed (or dropped) before the next.
        """
        try:
            with self._http.stream(
                "POST", "/v1/workers/read", json={"items": items}, timeout=httpx.Timeout(None, connect=10.0)
            ) as resp:
                Client._check(resp)
                frames = _Frames(resp.iter_raw())
                for _ in items:
                    size = _U64.unpack(frames.exact(8))[0]
                    body = frames.stream(size)
                    yield body
                    for _ in body:  # the consumer stopped early: skip the rest of this item
                        pass
        except httpx.TransportError as exc:
            raise self.client._unreachable(exc) from None

    def upload_result(self, task_id: str, worker: str, records: Iterable[bytes]) -> int:
        """Stream a task's result; the number of units the daemon accepted."""
        url = f"/v1/workers/tasks/{_seg(task_id)}/result"
        resp = self._call(
            lambda: self._http.post(
                url,
                params={"worker": worker},
                content=coalesce(records),
                headers={"content-type": "application/octet-stream"},
                timeout=httpx.Timeout(None, connect=10.0),
            )
        )
        return int(resp.json().get("accepted", 0))

    def upload_result_and_next(self, task_id: str, worker: str, records: Iterable[bytes]) -> tuple[int, dict | None]:
        """``upload_result``, and the worker's next task in the same answer if one is waiting
        (``?next=true``; None otherwise, or from a daemon that predates it): one exchange
        per task under load instead of two."""
        url = f"/v1/workers/tasks/{_seg(task_id)}/result"
        resp = self._call(
            lambda: self._http.post(
                url,
                params={"worker": worker, "next": "true"},
                content=coalesce(records),
                headers={"content-type": "application/octet-stream"},
                timeout=httpx.Timeout(None, connect=10.0),
            )
        )
        answer = resp.json()
        return int(answer.get("accepted", 0)), answer.get("next") or None

    def post_logs(self, lines: list[dict]) -> None:
        body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        self._call(
            lambda: self._http.post(
                "/v1/workers/logs", content=body.encode(), headers={"content-type": "application/x-ndjson"}
            )
        )


class GiveUp(Exception):
    """The daemon stayed unreachable for the whole give-up period."""


def _seg(name: str) -> str:
    from urllib.parse import quote

    if "/" in name or name in ("", ".", ".."):
        raise errors.InvalidArgument(f"invalid name '{name}' in a worker URL")
    return quote(name, safe="")


class _Frames:
    """Length-prefixed items out of a stream of network chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = memoryview(b"")

    def _fill(self) -> None:
        for chunk in self._chunks:
            if chunk:
                self._buf = memoryview(chunk)
                return
        raise errors.PfsError("the daemon's answer to a batched read ended early")

    def exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if not self._buf:
                self._fill()
            take = self._buf[: n - len(out)]
            out += take
            self._buf = self._buf[len(take) :]
        return bytes(out)

    def stream(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self._buf:
                self._fill()
            take = self._buf[:n]
            self._buf = self._buf[len(take) :]
            n -= len(take)
            yield bytes(take)
