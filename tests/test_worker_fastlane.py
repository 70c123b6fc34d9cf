"""The worker fast lane (mountd/fastlane.py) answers as the FastAPI routes do: a real
daemon over TCP with a token, raw HTTP/1.1 on keep-alive connections, the same
requests asked of a daemon with the lane on and of one with it off
(``PACHY_WORKER_FASTLANE=0``); and a connection that asks for something else
is handed to hypercorn without losing a byte."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench import mountd_scale as ms

pytestmark = [pytest.mark.timeout(90)]


async def _get(conn: ms.Conn, target: str) -> tuple[int, bytes]:
    """A GET on the same connection (``Conn.post`` writes POSTs only)."""
    conn.writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode() + conn.fixed.split(b"\r\n", 1)[1] + b"\r\n")
    status = int((await conn.reader.readline()).split(b" ", 2)[1])
    length = 0
    while (line := await conn.reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await conn.reader.readexactly(length)


def _answers(d: ms.Daemon, creds: list[tuple[str, str, str]]) -> list[tuple[int, object]]:
    host, port = d.address.rsplit(":", 1)
    (_p, worker, credential), (_p2, other, _c2) = creds[0], creds[1]

    async def main() -> list[tuple[int, object]]:
        out = []

        async def ask(conn: ms.Conn, target: str, body: bytes = b"") -> None:
            status, answer = await conn.post(target, body)
            out.append((status, json.loads(answer) if answer else None))

        good = ms.Conn(host, int(port), d.token, credential)
        await good.open()
        no_token = ms.Conn(host, int(port), "wrong", credential)
        await no_token.open()
        stranger = ms.Conn(host, int(port), d.token, "not-a-credential")
        await stranger.open()
        await ask(no_token, f"/v1/workers/{ms.PIPELINE}/next?worker={worker}&wait=0")
        await ask(stranger, f"/v1/workers/{ms.PIPELINE}/next?worker={worker}&wait=0")
        await ask(good, f"/v1/workers/other/next?worker={worker}&wait=0")
        await ask(good, f"/v1/workers/{ms.PIPELINE}/next?worker={other}&wait=0")
        await ask(good, f"/v1/workers/{ms.PIPELINE}/next?worker={worker}&wait=soon")
        await ask(good, f"/v1/workers/{ms.PIPELINE}/still")
        await ask(good, "/v1/workers/read", b'{"items": [{"repo": "in"}]}')
        await ask(good, "/v1/workers/tasks/nosuchtask/result?worker=" + worker, b"")
        await ask(good, f"/v1/workers/{ms.PIPELINE}/next?worker={worker}&wait=0")  # no job: 204
        # Something else on the same connection: hypercorn serves it, then the rest.
        status, body = await _get(good, "/v1/version")
        out.append((status, sorted(json.loads(body))))
        await ask(good, f"/v1/workers/{ms.PIPELINE}/next?worker={worker}&wait=0")
        await ask(good, "/v1/workers/logs", b'{"pipeline": "scale", "job": null, "message": "hello", "user": false, "ts": 1.0}\n')
        for c in (good, no_token, stranger):
            c.close()
        return out

    return asyncio.run(main())


def test_fast_lane_answers_as_fastapi(tmp_path):
    creds = ms.mint([ms.PIPELINE], 2)
    seen = {}
    for lane in (True, False):
        d = ms.Daemon(tmp_path / str(lane), creds, fastlane=lane)
        try:
            ms.setup(d)
            seen[lane] = _answers(d, creds)
        finally:
            d.stop()
    assert seen[True] == seen[False]
    statuses = [s for s, _ in seen[True]]
    assert statuses == [401, 401, 403, 403, 400, 400, 400, 404, 204, 200, 204, 200], seen[True]
    assert seen[True][4][1]["kind"] == "invalid_argument" and "query.wait" in seen[True][4][1]["error"]


def test_piggyback_every_task_once(tmp_path):
    """Results answered with the next task: still every task handed out and accepted once."""
    creds = ms.mint([ms.PIPELINE], 20)
    d = ms.Daemon(tmp_path, creds)
    try:
        ms.setup(d)
        res = ms.measure(d, ms.PIPELINE, creds, 1000, 1, piggyback=True)
    finally:
        d.stop()
    assert res["exactly_once"] and res["round_trips"] == 1000 and res["duplicates"] == 0, res
