"""The live event stream: the hub (pure) and ``GET /v1/events`` over a real daemon's socket.

Waiting is on conditions with deadlines: a reader thread ends when the event
it waits for arrives, and the test joins it with a timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mountd.models import Event
from pachctl.client import Client, errors
from pfsfuse.events import EventHub, Filter, parse_cursor
from pps.logs import LogStore
from tests.conftest import Daemon, free_port, wait_for
from tests.ppshelp import Pachy, commit_files, flush_ok, pachy_fixtures, pfs, spec

px, c = pachy_fixtures("events")

WAIT = 30.0


# -- the hub, pure ---------------------------------------------------------------------


def test_hub_cursors_increase_and_read_after_a_cursor() -> None:
    hub = EventHub(epoch="e1")
    assert hub.publish("repo.created", repo="a") == "e1-1"
    hub.publish("commit.started", repo="a", commit="c1", branch="master")
    after, reset = hub.open("e1-1")
    assert (after, reset) == (1, None)
    found, last = hub.read(after)
    assert [json.loads(ev[5])["commit"] for ev in found] == ["c1"]
    assert last == 2 and hub.read(last) == ([], 2)
    data = json.loads(found[0][5])
    assert data["kind"] == "commit.started" and data["cursor"] == "e1-2" and isinstance(data["ts"], float)


def test_hub_filters_by_kind_prefix_and_fields() -> None:
    hub = EventHub(epoch="e")
    hub.publish("job.state", job="j1", pipeline="p", state="running")
    hub.publish("datum.state", job="j1", pipeline="p", datum="d", state="success")
    hub.publish("log", job="j1", pipeline="p", message="hi")
    hub.publish("job.state", job="j2", pipeline="q", state="running")
    hub.publish("commit.finished", repo="p", commit="c", branch="master")

    def kinds(want: Filter) -> list[str]:
        return [ev[1] for ev in hub.read(0, want)[0]]

    assert kinds(Filter(("job", "datum"))) == ["job.state", "datum.state", "job.state"]
    assert kinds(Filter((), pipeline="p")) == ["job.state", "datum.state", "log"]
    assert kinds(Filter(("log",), job="j1")) == ["log"]
    assert kinds(Filter((), job="j2")) == ["job.state"]
    assert kinds(Filter((), repo="p")) == ["commit.finished"]


def test_hub_log_burst_keeps_other_events_and_too_old_cursor_resets() -> None:
    hub = EventHub(size=8, log_size=100, epoch="e")
    hub.publish("job.state", job="j", pipeline="p", state="running")  # seq 1
    hub.publish_many(("log", {"pipeline": "p", "job": "j", "message": str(i)}) for i in range(1000))
    hub.publish("job.state", job="j", pipeline="p", state="success")
    # The burst pushed old log lines out, never the job's events: a job-only reader misses nothing.
    found, _ = hub.read(0, Filter(("job",)))
    assert [json.loads(ev[5])["state"] for ev in found] == ["running", "success"]
    # A reader of the logs that far behind is told so (reset), not given a silent gap.
    found, last = hub.read(0, Filter(("log",)))
    assert [ev[1] for ev in found] == ["reset"] and last == hub.head
    assert json.loads(found[0][5])["cursor"] == hub.cursor()
    # "0": everything still kept, no reset.
    after, _ = hub.open("0", Filter(("log",)))
    found, _ = hub.read(after, Filter(("log",)), limit=10_000)
    assert len(found) == 100 and json.loads(found[-1][5])["message"] == "999"


def test_hub_cursor_of_another_run_resets_and_bad_cursor_refused() -> None:
    hub = EventHub(epoch="now")
    hub.publish("repo.created", repo="a")
    after, reset = hub.open("before-7")
    assert after == 1 and reset is not None and reset[1] == "reset"
    assert "earlier run" in json.loads(reset[5])["reason"]
    with pytest.raises(errors.InvalidArgument):
        parse_cursor("no-cursor-here")


def test_hub_wait_wakes_on_publish_and_read_limit_pages() -> None:
    hub = EventHub(epoch="e")
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(hub.wait(0, 30)))
    t.start()
    hub.publish("repo.created", repo="a")
    t.join(10)
    assert woke == [True]
    hub.publish_many(("repo.created", {"repo": f"r{i}"}) for i in range(10))
    page, last = hub.read(0, limit=4)
    assert [ev[0] for ev in page] == [1, 2, 3, 4] and last == 4


def test_log_follow_is_woken_by_the_write_not_the_poll(tmp_path: Path) -> None:
    """``logs -f``: a line written while the follower waits reaches it at once (the
    poll interval here is far longer than the deadline)."""
    hub = EventHub()
    logs = LogStore(str(tmp_path), hub)
    logs.note("p", "j1", "first")
    got: list[str] = []
    lines = logs.read(lambda: ["j1"], follow=lambda: len(got) < 2, poll=300)
    t = threading.Thread(target=lambda: got.extend(line["message"] for line in lines), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        t.join(0.01)
    start = time.monotonic()
    logs.note("p", "j1", "second")
    t.join(10)
    assert got == ["first", "second"] and time.monotonic() - start < 5
    assert [json.loads(ev[5])["message"] for ev in hub.read(0, Filter(("log",)))[0]] == ["first", "second"]


# -- over a daemon's socket ------------------------------------------------------------


class Reader:
    """``client.events(**kw)`` read in a thread until ``until(event)``."""

    def __init__(self, client: Client, until: Callable[[Event], bool], **kw: object):
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._until = until
        self._thread = threading.Thread(target=self._run, args=(client, kw), daemon=True)
        self._thread.start()

    def _run(self, client: Client, kw: dict) -> None:
        try:
            for ev in client.events(**kw):
                self.events.append(ev)
                if self._until(ev):
                    return
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    def join(self, timeout: float = WAIT) -> list[Event]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"no final event within {timeout} s; got {self.kinds()}"
        if self.error is not None:
            raise self.error
        return self.events

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def seqs(events: list[Event]) -> list[int]:
    return [parse_cursor(e.cursor)[1] for e in events]


def test_put_file_commit_and_branch_move(c: Client) -> None:
    reader = Reader(c, lambda e: e.kind == "branch.moved" and e.data["branch"] == "dev", since="0", repo="ev-pfs")
    c.create_repo("ev-pfs")
    res = c.put_file("ev-pfs", "master", "a.txt", b"hello\n", new_commit=True)
    c.create_branch("ev-pfs", "dev", "master")
    events = reader.join()
    assert reader.kinds() == ["repo.created", "commit.started", "branch.moved", "commit.finished", "branch.moved"]
    started, created, finished, dev = events[1:]
    head = c.inspect_commit("ev-pfs", "master").id
    assert res is not None
    assert started.data | {"ts": 0} == {"kind": "commit.started", "cursor": started.cursor, "ts": 0,
                                        "repo": "ev-pfs", "commit": head, "branch": "master"}
    assert (created.data["branch"], created.data["head"], created.data["change"]) == ("master", head, "created")
    assert finished.data["commit"] == head
    assert (dev.data["head"], dev.data["change"]) == (head, "created")
    assert seqs(events) == sorted(seqs(events)) and len(set(seqs(events))) == len(events)
    assert all(e.cursor == e.data["cursor"] and e.kind == e.data["kind"] for e in events)

    c.delete_branch("ev-pfs", "dev")
    gone = list(c.events(events[-1].cursor, ["branch"], repo="ev-pfs", follow=False))
    assert [(e.data["branch"], e.data["head"], e.data["change"]) for e in gone] == [("dev", None, "deleted")]


def test_filters_and_follow_false_ends(c: Client) -> None:
    c.create_repo("ev-filter")
    c.create_repo("ev-other")
    first = commit_files(c, "ev-filter", {"f": "1\n"})
    commit_files(c, "ev-other", {"f": "1\n"})
    second = commit_files(c, "ev-filter", {"f": "2\n"})
    finished = list(c.events("0", ["commit.fin"], repo="ev-filter", follow=False))
    assert [(e.kind, e.data["commit"]) for e in finished] == [("commit.finished", first), ("commit.finished", second)]
    branch_and_repo = list(c.events("0", ["branch", "repo"], repo="ev-other", follow=False))
    assert [e.kind for e in branch_and_repo] == ["repo.created", "branch.moved"]


def test_pipeline_job_datums_and_logs(c: Client) -> None:
    c.create_repo("ev-in")
    reader = Reader(c, lambda e: e.kind == "job.state" and e.data["state"] == "success", since="0",
                    pipeline="ev-copy")
    c.create_pipeline(spec("ev-copy", pfs("ev-in", "/*"), ['cp /pfs/ev-in/* /pfs/out/', 'echo copied-it']))
    head = commit_files(c, "ev-in", {"a": "1\n", "b": "2\n"})
    flush_ok(c, "ev-in", head)
    events = reader.join()
    kinds = reader.kinds()
    assert kinds[0] == "pipeline.state" and events[0].data["pipeline"] == "ev-copy"
    jobs = [e for e in events if e.kind == "job.state"]
    job = jobs[-1].data
    assert jobs[0].data["state"] == "running" and job["state"] == "success"
    assert (job["data_total"], job["data_processed"], job["data_skipped"], job["data_failed"]) == (2, 2, 0, 0)
    assert c.inspect_job(job["job"]).state == "success"
    datums = [e.data for e in events if e.kind == "datum.state"]
    assert len(datums) == 2 and {d["state"] for d in datums} == {"success"}
    assert {d["job"] for d in datums} == {job["job"]}
    logs = [e.data for e in events if e.kind == "log"]
    assert any(line["message"].strip() == "copied-it" and line["user"] for line in logs)
    assert all(set(line) >= {"pipeline", "job", "datum", "worker", "user", "message"} for line in logs)
    # The job filter (a prefix of the id works) and a kind filter, on what the daemon still holds.
    only = list(c.events("0", ["datum"], job=job["job"][:8], follow=False))
    assert [e.data for e in only] == datums


def test_reconnect_with_a_cursor_misses_nothing(c: Client) -> None:
    c.create_repo("ev-resume")
    commit_files(c, "ev-resume", {"f": "0\n"})
    stream = c.events("0", repo="ev-resume")
    seen = [next(stream) for _ in range(3)]  # repo.created, commit.started, branch.moved
    stream.close()  # the connection drops mid-stream
    for i in range(1, 4):
        commit_files(c, "ev-resume", {"f": f"{i}\n"})
    c.create_branch("ev-resume", "later", "master")
    rest = list(c.events(seen[-1].cursor, repo="ev-resume", follow=False))
    everything = list(c.events("0", repo="ev-resume", follow=False))
    assert [e.cursor for e in seen + rest] == [e.cursor for e in everything]
    assert seqs(everything) == sorted(seqs(everything)) and len(set(seqs(everything))) == len(everything)
    assert [e.kind for e in rest][-1] == "branch.moved" and rest[-1].data["branch"] == "later"
    assert sum(e.kind == "commit.finished" for e in everything) == 4


def test_last_event_id_header_wins_over_since(px: Pachy, c: Client) -> None:
    c.create_repo("ev-header")
    commit_files(c, "ev-header", {"f": "1\n"})
    everything = list(c.events("0", repo="ev-header", follow=False))
    transport = httpx.HTTPTransport(uds=str(px.home / "mountd.sock"))
    with httpx.Client(transport=transport, base_url="http://mountd", timeout=30) as http:
        resp = http.get("/v1/events", params={"since": "0", "repo": "ev-header", "follow": "false"},
                        headers={"Last-Event-ID": everything[1].cursor})
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        ids = [line[4:] for line in resp.text.splitlines() if line.startswith("id: ")]
        assert ids == [e.cursor for e in everything[2:]]
        assert resp.text.startswith(f": cursor {everything[1].cursor}\n")
        bad = http.get("/v1/events", params={"since": "nonsense", "follow": "false"})
        assert bad.status_code == 400 and bad.json()["kind"] == "invalid_argument"
        doc = http.get("/openapi.json").json()["paths"]["/v1/events"]["get"]
        assert "text/event-stream" in doc["responses"]["200"]["content"]
        assert {p["name"] for p in doc["parameters"]} >= {"since", "kinds", "pipeline", "job", "repo", "follow",
                                                          "last-event-id"}
        assert "job.state" in doc["description"] and "reset" in doc["description"]


def test_cursor_from_another_run_gives_reset(c: Client) -> None:
    c.create_repo("ev-foreign")
    events = list(c.events("0000aaaa-3", repo="ev-foreign", follow=False))
    assert events[0].kind == "reset" and "earlier run" in events[0].data["reason"]
    assert [e.kind for e in events[1:]] == []  # then from the newest event on: nothing after it yet


def test_client_reconnects_by_itself_and_a_restarted_daemon_resets(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    home = tmp_path / "home"
    d = start_daemon(home)
    d.client.create_repo("before")
    listener = Client(home=str(home), autostart=False, timeout=30)
    reader = Reader(listener, lambda e: e.kind == "repo.created" and e.data["repo"] == "after", since="0")
    wait_for(lambda: reader.events, WAIT, "the first event")
    assert reader.kinds() == ["repo.created"]
    assert d.stop() == 0
    d2 = start_daemon(home)
    # The reset says: refetch, then go on; what changes after it comes as events.
    wait_for(lambda: "reset" in reader.kinds(), WAIT, "the reset from the new daemon run")
    d2.client.create_repo("after")
    events = reader.join()
    assert [e.kind for e in events] == ["repo.created", "reset", "repo.created"]
    assert events[1].cursor.split("-")[0] != events[0].cursor.split("-")[0]
    assert events[2].data["repo"] == "after"


def test_token_required_over_tcp(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    address = f"127.0.0.1:{free_port()}"
    good = Client(address, token="secret", timeout=30)
    start_daemon(tmp_path / "tcp-home", "--listen", address, "--token", "secret", client=good)
    good.create_repo("r")
    assert [e.kind for e in good.events("0", follow=False)] == ["repo.created"]
    with Client(address, token=None, timeout=30) as bad, pytest.raises(errors.Unauthorized):
        list(bad.events("0", follow=False))


def test_scheduler_wait_is_ended_by_a_change_it_did_not_see(tmp_path: Path) -> None:
    """wait job / flush: a change between the caller's check and its wait ends the
    wait at once (the timeout here is far longer than the deadline)."""
    from pfsfuse.pfs import PFS
    from pps.scheduler import Scheduler

    engine = PFS(str(tmp_path / "engine"))
    s = Scheduler(engine, str(tmp_path / "engine"))
    try:
        seen = s.generation
        s._changed_now()  # lands after the check, before the wait
        start = time.monotonic()
        s.wait_changed(300, seen)
        assert time.monotonic() - start < 5
    finally:
        s.close()
        engine.close()
