"""``GET /v1/events``: the live event stream (Server-Sent Events) over the event hub.

Publishers are threads (the engine, the scheduler, the results writer, log
writes); readers are trio tasks. A hub listener hands each publish to trio
with ``TrioToken.run_sync_soon`` (thread-safe, no polling), coalesced so a
burst of events costs one wake-up of the event loop, not one per event.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import trio
from fastapi import FastAPI, Header, Query
from fastapi.responses import StreamingResponse

from mountd.models import failure_responses
from pfsfuse.errors import InvalidArgument
from pfsfuse.events import EventHub, Filter, Stored, parse_cursor

KEEPALIVE = 15.0  # seconds of silence before a ": keepalive" comment (proxies drop idle streams)

EVENTS_DOC = """Server-Sent Events: what changes in the daemon, live, each with a cursor.

Each message is `id: <cursor>`, `event: <kind>`, `data: <one JSON line>`; the
JSON always has `kind`, `cursor` (`<epoch>-<seq>`, epoch = this daemon run) and
`ts` (unix seconds), plus per kind:

- `repo.created`, `repo.deleted`: `repo`
- `commit.started`, `commit.finished`, `commit.deleted`: `repo`, `commit`, `branch` (or null)
- `branch.moved` (created, moved or deleted: `change`; `head` null when deleted): `repo`, `branch`, `head`
- `pipeline.state`: `pipeline`, `state`, `reason` (`state` is `deleted` when it was deleted)
- `job.state` (also on progress): `job`, `pipeline`, `state`, `reason`, `data_processed`,
  `data_skipped`, `data_failed`, `data_total`
- `datum.state`: `job`, `pipeline`, `datum`, `state`
- `log`: `pipeline`, `job`, `datum`, `worker`, `user`, `message` (a line as `/v1/logs` gives it)
- `reset`: `reason`. The cursor given is from an earlier daemon run, or older than the
  events the daemon keeps: refetch your state, then go on from this message's cursor.

The stream opens with a comment `: cursor <cursor>` (where it starts; reconnect
with it if no event came yet) and sends `: keepalive` every 15 s while idle.
To resume, pass the last cursor as `since` or the `Last-Event-ID` header (which wins):
every event after it comes exactly once, in order, or a `reset` does.
"""


class TrioWaker:
    """Wakes the trio tasks waiting on ``changed()`` after any publish, from any thread."""

    def __init__(self, hub: EventHub):
        self.hub = hub
        self.token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self._pending = False
        self._event = trio.Event()
        hub.add_listener(self._published)

    def _published(self) -> None:
        with self._lock:
            if self._pending:
                return  # a wake-up is on its way and will cover this event too
            self._pending = True
        try:
            self.token.run_sync_soon(self._wake)
        except trio.RunFinishedError:  # the event loop is gone: nobody to wake
            self.hub.remove_listener(self._published)

    def _wake(self) -> None:
        with self._lock:
            self._pending = False
        event, self._event = self._event, trio.Event()
        event.set()

    def changed(self) -> trio.Event:
        """Take it BEFORE reading the hub; it is set by the next publish after that."""
        return self._event


def sse(ev: Stored, epoch: str) -> str:
    return f"id: {epoch}-{ev[0]}\nevent: {ev[1]}\ndata: {ev[5]}\n\n"


def split_kinds(kinds: str | None) -> tuple[str, ...]:
    return tuple(k.strip() for k in (kinds or "").split(",") if k.strip())


def add_event_routes(app: FastAPI, hub: EventHub) -> None:
    waker: list[TrioWaker] = []  # made on first use: it needs the running event loop

    def current_waker() -> TrioWaker:
        token = trio.lowlevel.current_trio_token()
        if not waker or waker[0].token is not token:
            if waker:
                hub.remove_listener(waker[0]._published)
            waker[:] = [TrioWaker(hub)]
        return waker[0]

    @app.get(
        "/v1/events",
        response_class=StreamingResponse,
        description=EVENTS_DOC,
        responses={
            200: {"description": "the event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **failure_responses(InvalidArgument),
        },
    )
    async def events(
        since: str | None = Query(None, description="a cursor: events after it (absent: from now on; "
                                                    "`0`: all the daemon still keeps)"),
        kinds: str | None = Query(None, description="comma list of kind prefixes, e.g. `job,datum` (absent: all)"),
        pipeline: str | None = Query(None, description="only events of this pipeline"),
        job: str | None = Query(None, description="only events of this job (an id or a prefix of one)"),
        repo: str | None = Query(None, description="only events of this repo"),
        follow: bool = Query(True, description="false: send the events held after `since`, then end"),
        last_event_id: str | None = Header(None, description="the SSE reconnect cursor; wins over `since`"),
    ) -> StreamingResponse:
        start = last_event_id or since
        if start not in (None, "", "0"):
            parse_cursor(start)  # a malformed cursor is a 400 now, not a broken stream
        want = Filter(split_kinds(kinds), pipeline or None, job or None, repo or None)
        wake = current_waker()
        after, reset = hub.open(start, want)

        async def body() -> AsyncIterator[str]:
            nonlocal after
            yield f": cursor {hub.cursor(after)}\n\n"
            if reset is not None:
                yield sse(reset, hub.epoch)
            while True:
                changed = wake.changed()
                found, after = hub.read(after, want)
                if found:
                    yield "".join(sse(ev, hub.epoch) for ev in found)
                    continue
                if not follow or hub.closed:
                    return
                with trio.move_on_after(KEEPALIVE) as idle:
                    await changed.wait()
                if idle.cancelled_caught:
                    yield ": keepalive\n\n"

        return StreamingResponse(
            body(), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
