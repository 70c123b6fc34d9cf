"""What the TUI pages through, and restart-datum: a real daemon, real shim workers.

Covered: ``GET /v1/jobs`` with ``n``/``before`` (pages newest first, no job
twice, none missed); ``GET /v1/logs`` with ``offset``/``n`` (pages of a long
job log, a negative offset as a tail, the total in ``X-Pachy-Lines``, the
datum filter); ``restart-datum`` (the running datum's worker is cut short,
the datum runs again and the job succeeds; a finished datum or job is
refused with an error that says why).
"""

from __future__ import annotations

from pathlib import Path

from pachctl.client import Client, errors
from tests.conftest import wait_for
from tests.ppshelp import (
    Pachy,
    commit_files,
    flush_ok,
    pachy_fixtures,
    pfs,
    processes,
    spec,
    wait_jobs,
)

px, c = pachy_fixtures("pps-paging")


def test_jobs_come_in_pages(c: Client) -> None:
    c.create_repo("pg")
    c.create_pipeline(spec("pg-p", pfs("pg"), 'cp "$pg" /pfs/out/'))
    for i in range(5):
        flush_ok(c, "pg", commit_files(c, "pg", {f"f{i}": str(i)}))
    every = c.list_job("pg-p")
    assert len(every) == 5
    first = c.list_job("pg-p", n=2)
    second = c.list_job("pg-p", n=2, before=first[-1].id)
    third = c.list_job("pg-p", n=2, before=second[-1].id)
    assert [j.id for j in first + second + third] == [j.id for j in every]
    assert c.list_job("pg-p", n=2, before=every[-1].id) == []
    assert [j.id for j in c.list_job(n=1)] == [every[0].id]


def test_logs_come_in_pages(c: Client) -> None:
    c.create_repo("lg")
    c.create_pipeline(spec("lg-p", pfs("lg"), ['seq 1 3000 | sed "s/^/line /"']))
    flush_ok(c, "lg", commit_files(c, "lg", {"a": "1"}))
    job = wait_jobs(c, "lg-p", 1)[0]
    user = [line.message for line in c.get_logs(job=job.id) if line.user]
    assert user[0] == "line 1" and user[-1] == "line 3000"
    total, page = c.log_page(job=job.id, offset=0, n=10)
    everything = [line.message for line in c.get_logs(job=job.id)]
    assert total == len(everything) >= 3000
    assert [line.message for line in page] == everything[:10]
    total2, middle = c.log_page(job=job.id, offset=1500, n=100)
    assert total2 == total and [line.message for line in middle] == everything[1500:1600]
    _, tail = c.log_page(job=job.id, offset=-5, n=5)
    assert [line.message for line in tail] == everything[-5:]
    _, past = c.log_page(job=job.id, offset=total + 10, n=5)
    assert past == []
    datum = c.list_datum(job.id)[0].id
    n_datum, _ = c.log_page(job=job.id, datum=datum[:8], offset=0, n=1)
    assert n_datum == len([line for line in c.get_logs(job=job.id, datum=datum)])


def test_restart_datum_cuts_the_running_datum_short(px: Pachy, c: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    c.create_repo("rd")
    # A distinctive sleep: the datum is running while a process "sleep 0.0517" exists.
    c.create_pipeline(spec("rd-p", pfs("rd"), [f"while [ ! -e {go} ]; do sleep 0.0517; done",
                                               'cp "$rd" /pfs/out/']))
    head = commit_files(c, "rd", {"a": b"1"})
    job = wait_for(lambda: next(iter(c.list_job("rd-p")), None), 30, "the job of rd-p")
    wait_for(lambda: processes("sleep", "0.0517"), 30, "the datum to run")
    before = set(px.worker_pids("rd-p"))
    datum = c.list_datum(job.id)[0]
    res = px("restart", "datum", f"rd-p@{job.id}", datum.id[:12])  # the 2.x wording
    assert res.err == ""
    # Its worker was replaced (a new process runs the datum again), and the job goes on.
    wait_for(lambda: not before & set(px.worker_pids("rd-p")), 20, "the datum's worker to be cut short")
    wait_for(lambda: px.worker_pids("rd-p"), 30, "a new worker for rd-p")
    go.touch()
    flush_ok(c, "rd", head)
    done = c.inspect_job(job.id)
    assert done.state == "success" and done.data_processed == 1
    notes = [line.message for line in c.get_logs(job=job.id) if not line.user]
    assert any(f"datum {datum.id} restarted by the user" in m for m in notes), notes
    # A finished datum of a finished job: nothing to restart, and the error says why.
    res = px("restart-datum", job.id, datum.id, rc=4)  # a conflict, as stop-job of a finished job
    assert res.err.startswith(f"error: job '{job.id}' is not running (state success)")
    try:
        c.restart_datum(job.id, "nosuchdatum")
    except errors.NotFound as exc:
        assert "nosuchdatum" in str(exc)
    else:
        raise AssertionError("restart_datum of an unknown datum did not fail")
