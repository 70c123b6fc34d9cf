"""Pipelines that must not run forever or take the machine down (issue 9, items 5-7).

A real daemon and pachctl as a subprocess: a cycle between pipelines and a
missing secret are refused at create/update time with their JSON path or the
cycle named, exit code from the README's table, nothing changed; a secret
deleted later fails the job instead of leaving it running; a pipeline asking
for 100,000 workers gets the machine's worker budget, the daemon keeps
answering, and its stop (the SIGTERM `pachctl daemon --stop` sends) ends it, every
worker and their user code within 5 s; workers of a daemon killed -9 end with it;
pipelines share the budget and each job gets its turn.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

from pachctl.client import Client, errors
from pps.scheduler import default_max_workers, find_cycle, share_workers
from tests.conftest import pid_gone, wait_for
from tests.ppshelp import (
    Pachy,
    commit_files,
    flush,
    pachy_daemon,
    pachy_fixtures,
    pfs,
    processes,
    spec,
)

px, c = pachy_fixtures("pps-liveness")


def _secret_file(px: Pachy, name: str, **data: str) -> str:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
    return str(px.write(f"{name}.json", json.dumps(doc)))


# -- item 6: cycles ------------------------------------------------------------------------


def test_find_cycle_names_the_shortest_loop() -> None:
    assert find_cycle({"pa": {"pb"}, "pb": {"pa"}}, "pa") == ["pa", "pb", "pa"]
    assert find_cycle({"pa": {"in", "pc"}, "pb": {"pa"}, "pc": {"pb"}}, "pa") == ["pa", "pb", "pc", "pa"]
    assert find_cycle({"pa": {"in"}, "pb": {"pa"}, "pc": {"pb", "pa"}}, "pa") is None


def test_an_update_closing_a_cycle_is_refused_and_changes_nothing(px: Pachy, c: Client) -> None:
    c.create_repo("cy-in")
    c.create_pipeline(spec("pa", pfs("cy-in"), "true"))
    c.create_pipeline(spec("pb", pfs("pa"), "true"))
    before = c.inspect_pipeline("pa")
    looped = json.dumps(spec("pa", pfs("pb"), "true"))
    res = px("update-pipeline", "-f", str(px.write("pa.json", looped)), rc=2)
    assert res.err == "error: pipeline 'pa' would form a cycle: pa -> pb -> pa (each name's output is read by " \
                      "the next)\n", res.err
    after = c.inspect_pipeline("pa")
    assert (after.version, after.spec) == (before.version, before.spec)
    # A longer loop, and one closed within a single create-pipeline of several specs.
    c.create_pipeline(spec("pc", pfs("pb"), "true"))
    looped = json.dumps(spec("pa", {"cross": [pfs("cy-in"), pfs("pc")]}, "true"))
    res = px("update-pipeline", "-f", str(px.write("pa.json", looped)), rc=2)
    assert "pa -> pb -> pc -> pa" in res.err
    pair = spec("qa", pfs("qb"), "true"), spec("qb", pfs("cy-in"), "true") | {"input": pfs("qa")}
    res = px("create-pipeline", "-f", str(px.write("q.json", "\n".join(json.dumps(p) for p in pair))), rc=2)
    assert "cycle" in res.err and "Traceback" not in res.err
    assert {p.name for p in c.list_pipeline()} == {"pa", "pb", "pc"}
    assert not {"qa", "qb"} & {r.name for r in c.list_repo()}


# -- item 7: secrets -----------------------------------------------------------------------


def test_a_missing_secret_is_refused_at_create_time(px: Pachy, c: Client) -> None:
    c.create_repo("sec-in")
    px("create-secret", "-f", _secret_file(px, "present", token="t"))
    secrets = [{"name": "present", "env_var": "T", "key": "token"}, {"name": "absent", "mount_path": "/s"}]
    bad = spec("sec", pfs("sec-in"), "true", transform={"cmd": ["sh"], "stdin": ["true"], "secrets": secrets})
    res = px("create-pipeline", "-f", str(px.write("sec.json", json.dumps(bad))), rc=3)
    assert res.err.startswith("error: transform.secrets[1].name: secret 'absent' not found"), res.err
    assert len(res.err.splitlines()) == 1
    secrets[1] = {"name": "present", "env_var": "T", "key": "nokey"}
    res = px("create-pipeline", "-f", str(px.write("sec.json", json.dumps(bad))), rc=2)
    assert res.err.startswith("error: transform.secrets[1].key: secret 'present' has no key 'nokey'"), res.err
    assert c.list_pipeline() == [] and "sec" not in {r.name for r in c.list_repo()}
    px("delete-secret", "present")


def test_a_secret_deleted_later_fails_the_job_with_the_reason(px: Pachy, c: Client) -> None:
    c.create_repo("gone-in")
    px("create-secret", "-f", _secret_file(px, "fleeting", token="t"))
    c.create_pipeline(spec("gone", pfs("gone-in"), "true", transform={
        "cmd": ["sh"], "stdin": ["true"], "secrets": [{"name": "fleeting", "env_var": "T", "key": "token"}]}))
    px("delete-secret", "fleeting")
    head = commit_files(c, "gone-in", {"a": b"1"})
    res = flush(c, "gone-in", head, timeout=20)  # before: the job stayed running, flush never returned
    (job,) = res.failed_jobs
    assert job.state == "failure" and "secret 'fleeting' not found" in job.reason, job.reason
    waited = px("wait-job", job.id, rc=1)
    assert "secret 'fleeting' not found" in waited.err


# -- item 5: a worker budget, and a prompt stop ---------------------------------------------


def test_share_workers_keeps_to_the_budget_busy_pipelines_first() -> None:
    assert share_workers([("huge", 100_000, True)], 4) == {"huge": 4}
    # busy first (oldest job first), one each, then in turn; idle pipelines get what is left
    got = share_workers([("a", 3, True), ("b", 1, True), ("idle", 2, False), ("c", 5, True)], 4)
    assert got == {"a": 2, "b": 1, "c": 1, "idle": 0}
    assert share_workers([("a", 1, True), ("idle", 2, False)], 4) == {"a": 1, "idle": 2}
    assert sum(share_workers([(f"p{i}", 2, True) for i in range(50)], 4).values()) == 4


def test_parallelism_100000_gets_the_budget_and_the_daemon_stops_within_5_s(tmp_path: Path) -> None:
    budget = default_max_workers()  # 2 per core here (fewer only where memory is short)
    with pachy_daemon(tmp_path) as p:
        c = p.client
        c.create_repo("many-in")
        commit_files(c, "many-in", {f"f{i}": b"x" for i in range(3 * budget)})
        # User code that ignores SIGTERM: the stop must still end it.
        huge = spec("huge", pfs("many-in"), ["trap '' TERM", "sleep 1000.37"],
                    parallelism_spec={"constant": 100_000})
        res = p("create-pipeline", "-f", str(p.write("huge.json", json.dumps(huge))))
        assert f"this machine runs at most {budget} at once" in res.err, res.err
        slowest, most = 0.0, 0
        deadline = time.monotonic() + 30
        while len(processes("sleep", "1000.37")) < budget or time.monotonic() < deadline - 28:
            assert time.monotonic() < deadline, f"{len(processes('sleep', '1000.37'))} datums run, want {budget}"
            # distinct worker ids: a worker forking its user code briefly shows twice
            most = max(most, len(set(p.worker_pids("huge").values())))
            t0 = time.monotonic()
            assert [q.name for q in c.list_pipeline()] == ["huge"]
            slowest = max(slowest, time.monotonic() - t0)
        assert most <= budget and len(set(p.worker_pids("huge").values())) == budget
        assert c.inspect_pipeline("huge").workers == budget
        assert slowest < 1.0, f"list-pipeline took {slowest:.2f} s"
        workers, user_code = list(p.worker_pids()), processes("sleep", "1000.37")
        # A client following the logs (a request in flight) must not hold the stop up, nor hang.
        following, ended = threading.Event(), threading.Event()
        waiter = threading.Thread(target=_follow_logs, args=(p, "huge", following, ended), daemon=True)
        waiter.start()
        wait_for(following.is_set, 10, "get-logs -f to stream")
        # `pachctl daemon --stop` sends the daemon this SIGTERM and waits; sent from here, the
        # time measured is the daemon's, not a loaded machine's Python start-up of pachctl.
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        everything = {"daemon": [p.pid], "workers": workers, "user code": user_code}
        try:
            wait_for(lambda: all(pid_gone(pid) for pids in everything.values() for pid in pids),
                     5.0 - (time.monotonic() - t0), "the daemon, its workers and their user code to end")
        except AssertionError as exc:
            left = {what: [pid for pid in pids if not pid_gone(pid)] for what, pids in everything.items()}
            raise AssertionError(f"{exc}; still running: {left}") from None
        finally:
            _kill(processes("sleep", "1000.37"))
        assert ended.wait(5), "get-logs -f still streams from a stopped daemon"
        print(f"budget {budget}: at most {most} workers, slowest list-pipeline {slowest * 1000:.0f} ms, "
              f"everything stopped in {time.monotonic() - t0:.2f} s")


def _follow_logs(p: Pachy, pipeline: str, following: threading.Event, ended: threading.Event) -> None:
    with Client(home=str(p.home), autostart=False, timeout=60) as client:
        try:
            for _line in client.get_logs(pipeline=pipeline, follow=True):
                following.set()
        except errors.PfsError:
            pass  # the daemon went away mid-stream
        finally:
            ended.set()


def test_workers_of_a_killed_daemon_end_with_it(tmp_path: Path) -> None:
    """kill -9 of the daemon: its workers and their user code end at once (before:
    they ran on beside the next daemon's workers until the user code finished)."""
    with pachy_daemon(tmp_path) as p:
        c = p.client
        c.create_repo("orph-in")
        commit_files(c, "orph-in", {"a": b"1", "b": b"2"})
        c.create_pipeline(spec("orph", pfs("orph-in"), ["trap '' TERM", "sleep 1000.43"],
                               parallelism_spec={"constant": 2}))
        user_code = wait_for(lambda: len(found := processes("sleep", "1000.43")) == 2 and found, 30,
                             "both datums to run")
        workers = list(p.worker_pids("orph"))
        p.kill9()
        try:
            wait_for(lambda: all(pid_gone(pid) for pid in [*workers, *user_code]), 5,
                     "the killed daemon's workers and their user code to end")
        finally:
            _kill(processes("sleep", "1000.43"))


def _kill(pids: list[int]) -> None:
    """Leave nothing behind if a test fails (its user code ignores SIGTERM)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_pipelines_share_one_worker_budget_and_each_job_gets_its_turn(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    with pachy_daemon(tmp_path / "d", PACHY_MAX_WORKERS="2") as p:
        c = p.client

        def workers(pipeline: str | None = None) -> int:
            n = len(set(p.worker_pids(pipeline).values()))
            assert pipeline or n <= 2, f"{n} workers, budget 2"
            return n

        c.create_repo("share-in")
        head = commit_files(c, "share-in", {"a": b"1", "b": b"2"})
        c.create_pipeline(spec("first", pfs("share-in"), wait, parallelism_spec={"constant": 2}))
        wait_for(lambda: workers("first") == 2 and workers(), 30, "2 workers for the first job")
        # A second job: the first pipeline gives up one worker (its task goes back to the queue).
        c.create_pipeline(spec("second", pfs("share-in"), wait))
        wait_for(lambda: workers("second") == 1 and workers("first") == 1 and workers(), 30,
                 "one worker each")
        # A third: the budget is in use; its job waits, and says so.
        c.create_pipeline(spec("third", pfs("share-in"), "cp /pfs/share-in/* /pfs/out/"))
        wait_for(lambda: workers() and any("waiting for a worker" in line.message
                                           for line in c.get_logs(pipeline="third")), 10, "the third to wait")
        assert workers("third") == 0
        gate.touch()
        res = flush(c, "share-in", head, timeout=60)  # every job runs in its turn
        assert not res.failed_jobs and len(res.commits) == 3
        assert {r.name: r.last_job_state for r in c.list_pipeline()} == dict.fromkeys(
            ("first", "second", "third"), "success")
        assert workers() <= 2


def test_a_flush_that_times_out_is_the_callers_timeout_not_a_server_error(px: Pachy, c: Client) -> None:
    """The wait a client bounded ran out: 408 `timed_out` (exit 1), never a 500."""
    gate = px.write("slow-go", "")
    gate.unlink()
    c.create_repo("slow-in")
    c.create_pipeline(spec("slow", pfs("slow-in"), f"while [ ! -e {gate} ]; do sleep 0.05; done"))
    head = commit_files(c, "slow-in", {"a": b"1"})
    try:
        try:
            c.flush_commit([("slow-in", head)], timeout=0.5)
            raise AssertionError("the flush did not time out")
        except errors.TimedOut as exc:
            assert "timed out waiting for" in str(exc)
    finally:
        gate.touch()
        flush(c, "slow-in", head, timeout=30)
