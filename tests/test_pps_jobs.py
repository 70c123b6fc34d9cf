"""Job features end to end: a real daemon, real shim workers, pachctl as a subprocess.

One daemon is shared by the module (it can reach a moto S3 server, for
egress); each test has its own repos and pipelines, all deleted after it.
Covered: datum_tries (a datum failing once, then succeeding), a failing
datum failing its job (reason, list-datum), accept_return_code, err_cmd,
datum_timeout, job_timeout, transform env, secrets (env_var and mount_path,
never in the logs), working_dir, stop/start-pipeline, run-pipeline, stop-job,
update-pipeline with and without --reprocess, delete-pipeline, get-logs
(--job, -f), egress to S3 and to a local directory, cron inputs and
standby workers.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pachctl.client import Client, errors
from pps.runners import cgroups
from tests.clihelp import PACHCTL
from tests.conftest import wait_for
from tests.ppshelp import (
    Pachy,
    commit_files,
    delete_all_pipelines,
    flush,
    flush_ok,
    jobs,
    outputs,
    pachy_daemon,
    pfs,
    processes,
    spec,
    table_rows,
    wait_job_running,
    wait_jobs,
)
from tests.s3server import s3_endpoint  # noqa: F401


@pytest.fixture(scope="module")
def px(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Pachy]:  # noqa: F811
    with pachy_daemon(tmp_path_factory.mktemp("pps-jobs"), PACHY_S3_ENDPOINT=s3_endpoint) as p:
        yield p


@pytest.fixture
def c(px: Pachy) -> Iterator[Client]:
    yield px.client
    delete_all_pipelines(px.client)


# -- retries, failures, return codes -------------------------------------------------------


def test_datum_tries_retries_a_failing_datum(c: Client, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    c.create_repo("retry")
    head = commit_files(c, "retry", {"a": b"A", "b": b"B"})
    # Datum a fails its first try (the marker lives outside /pfs, on the host), then succeeds.
    c.create_pipeline(spec("retrier", pfs("retry"), [
        f'if [ "$(basename "$retry")" = a ] && [ ! -e {marker} ]; then touch {marker}; echo first try fails >&2; exit 1; fi',
        'cp "$retry" /pfs/out/',
    ], datum_tries=2))
    flush_ok(c, "retry", head)
    (job,) = jobs(c, "retrier")
    assert (job.state, job.data_processed, job.data_failed) == ("success", 2, 0)
    assert outputs(c, "retrier") == {"a": b"A", "b": b"B"}
    tries = {d.files[0].path: d.tries for d in c.list_datum(job.id)}
    assert tries == {"/a": 2, "/b": 1}
    assert "first try fails" in "".join(line.message for line in c.get_logs(job=job.id))


def test_a_failing_datum_fails_the_job(px: Pachy, c: Client) -> None:
    c.create_repo("failing")
    head = commit_files(c, "failing", {"good": b"1", "bad": b"2"})
    c.create_pipeline(spec("failer", pfs("failing"), [
        'if [ "$(basename "$failing")" = bad ]; then echo "cannot digest $failing" >&2; exit 3; fi',
        'cp "$failing" /pfs/out/',
    ], datum_tries=1))
    # flush-commit reports the failed job and exits 1.
    res = px("flush-commit", f"failing@{head}", rc=1)
    (job,) = jobs(c, "failer")
    assert job.state == "failure"
    assert f"job {job.id} of pipeline failer failed" in res.err
    assert "exit code 3" in job.reason and "cannot digest /pfs/failing/bad" in job.reason
    assert job.reason in res.err
    rows = table_rows(px("list-datum", job.id))
    states = {r[3]: r[1] for r in rows[1:]}
    assert states["failing:/bad"] == "failed"
    assert states["failing:/good"] in ("success", "failed")  # may have been cut short by the failure
    bad = next(d for d in c.list_datum(job.id) if d.files[0].path == "/bad")
    assert bad.id in job.reason
    shown = px("inspect-datum", job.id, bad.id).text
    assert "failed" in shown and "exit code 3" in shown
    assert px("wait-job", job.id, rc=1).err.strip().endswith(job.reason)
    # No output commit is left behind by a failed job.
    assert c.list_commit("failer") == []


def test_accept_return_code(c: Client) -> None:
    c.create_repo("codes")
    head = commit_files(c, "codes", {"x": b"X"})
    c.create_pipeline({
        "pipeline": {"name": "accepter"}, "input": pfs("codes"), "datum_tries": 1,
        "transform": {"cmd": ["sh"], "stdin": ['cp "$codes" /pfs/out/', "exit 3"], "accept_return_code": [3]},
    })
    flush_ok(c, "codes", head)
    (job,) = jobs(c, "accepter")
    assert job.state == "success"
    assert outputs(c, "accepter") == {"x": b"X"}


def test_err_cmd_recovers_a_datum(c: Client) -> None:
    c.create_repo("recover")
    head = commit_files(c, "recover", {"ok": b"1", "broken": b"2"})
    c.create_pipeline({
        "pipeline": {"name": "recoverer"}, "input": pfs("recover"), "datum_tries": 1,
        "transform": {"cmd": ["sh"],
                      "stdin": ['[ "$(basename "$recover")" = broken ] && exit 1', 'cp "$recover" /pfs/out/'],
                      "err_cmd": ["sh"], "err_stdin": ['echo "recovering $recover"']},
    })
    flush_ok(c, "recover", head)
    (job,) = jobs(c, "recoverer")
    assert (job.state, job.data_processed, job.data_recovered, job.data_failed) == ("success", 1, 1, 0)
    # A recovered datum has no outputs.
    assert outputs(c, "recoverer") == {"ok": b"1"}
    states = {d.files[0].path: d.state for d in c.list_datum(job.id)}
    assert states == {"/ok": "success", "/broken": "recovered"}
    assert "recovering /pfs/recover/broken" in "".join(line.message for line in c.get_logs(job=job.id))


def test_datum_timeout_kills_a_hanging_datum(c: Client) -> None:
    c.create_repo("hang")
    head = commit_files(c, "hang", {"x": b"1"})
    t0 = time.monotonic()
    c.create_pipeline(spec("hanger", pfs("hang"), "sleep 1000.25", datum_timeout="1s", datum_tries=1))
    res = flush(c, "hang", head, timeout=30)
    assert time.monotonic() - t0 < 20
    (job,) = res.failed_jobs
    assert job.state == "failure" and "timed out" in job.reason and "datum_timeout" in job.reason
    wait_for(lambda: not processes("sleep", "1000.25"), 10, "sleep 1000.25 to be killed")


def test_job_timeout_fails_the_job_and_kills_its_code(c: Client) -> None:
    c.create_repo("slowjob")
    head = commit_files(c, "slowjob", {"x": b"1"})
    c.create_pipeline(spec("slowpoke", pfs("slowjob"), "sleep 987654", job_timeout="2s"))
    t0 = time.monotonic()
    res = flush(c, "slowjob", head, timeout=30)
    assert time.monotonic() - t0 < 20
    (job,) = res.failed_jobs
    assert job.state == "failure" and "job_timeout" in job.reason
    wait_for(lambda: not processes("sleep", "987654"), 10, "the job's user code to be killed")
    assert c.list_commit("slowpoke") == []
    # The pipeline goes on: a later commit gets a job (which times out too, but runs).
    head2 = commit_files(c, "slowjob", {"y": b"2"})
    assert flush(c, "slowjob", head2, timeout=30).failed_jobs[0].id != job.id


# -- what user code sees ----------------------------------------------------------------------


def test_env_secrets_and_working_dir(px: Pachy, c: Client, tmp_path: Path) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
           "data": {"token": base64.b64encode(value.encode()).decode()}, "stringData": {"user": "alice"}}
    px("create-secret", "-f", str(px.write("secret.json", json.dumps(doc))))
    listed = px("list-secret")
    assert "creds" in listed.text and value not in listed.text
    workdir = tmp_path / "wd"
    workdir.mkdir()
    c.create_repo("seen")
    head = commit_files(c, "seen", {"x": b"1"})
    c.create_pipeline({
        "pipeline": {"name": "seer"}, "input": pfs("seen"), "datum_tries": 1,
        "transform": {
            "cmd": ["sh"],
            "stdin": ['echo "greeting is $GREETING"', 'echo "$GREETING" > /pfs/out/greeting',
                      'printf %s "$TOKEN" > /pfs/out/token', "cat /etc/creds/user > /pfs/out/user",
                      "cat /etc/creds/token > /pfs/out/mounted", "pwd > /pfs/out/pwd",
                      'echo "the token is ${#TOKEN} characters long"'],
            "env": {"GREETING": "hello there"},
            "working_dir": str(workdir),
            "secrets": [{"name": "creds", "env_var": "TOKEN", "key": "token"},
                        {"name": "creds", "mount_path": "/etc/creds"}],
        },
    })
    flush_ok(c, "seen", head)
    assert outputs(c, "seer") == {"greeting": b"hello there\n", "token": value.encode(), "user": b"alice",
                                  "mounted": value.encode(), "pwd": f"{workdir}\n".encode()}
    (job,) = jobs(c, "seer")
    logs = px("get-logs", "--job", job.id, "--raw").text
    assert "greeting is hello there" in logs
    assert f"the token is {len(value)} characters long" in logs
    assert value not in logs
    assert value not in px("get-logs", "-p", "seer", "--raw").text
    assert value not in px("inspect-pipeline", "seer").text
    # Nothing in the daemon's and workers' own logs either.
    for path in [px.log, *(px.home / "logs").rglob("*")]:
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path
    px("delete-secret", "creds")


def test_get_logs_by_job_and_follow(px: Pachy, c: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    c.create_repo("chatty")
    head = commit_files(c, "chatty", {"a": b"1"})
    c.create_pipeline(spec("talker", pfs("chatty"), [
        'echo "before waiting on $(basename "$chatty")"',
        f"while [ ! -e {go} ]; do sleep 0.05; done",
        'echo "after waiting"', 'cp "$chatty" /pfs/out/',
    ]))
    job = wait_job_running(c, "talker")
    proc = subprocess.Popen([*PACHCTL, "get-logs", "-f", "--job", job.id], env=px.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"before waiting on a" not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"get-logs -f showed no user line: {seen!r}"
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"get-logs -f ended early: {seen!r} {proc.stderr.read()!r}"
                seen += chunk
        assert proc.poll() is None  # still following the running job
        go.touch()
        out, err = proc.communicate(timeout=30)
        seen += out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"after waiting" in seen
    flush_ok(c, "chatty", head)
    # get-logs --job: the user's stdout lines (not the shim's notes) in order.
    user = [line.message for line in c.get_logs(job=job.id) if line.user]
    assert user == ["before waiting on a", "after waiting"]
    assert "after waiting" in px("get-logs", "--job", job.id).text


# -- pipeline lifecycle -------------------------------------------------------------------------


def test_stop_start_and_run_pipeline(px: Pachy, c: Client) -> None:
    c.create_repo("ss")
    first = commit_files(c, "ss", {"a": b"1"})
    copy = 'cp "$ss" /pfs/out/'
    c.create_pipeline([spec("stopper", pfs("ss"), copy), spec("witness", pfs("ss"), copy)])
    flush_ok(c, "ss", first)
    px("stop-pipeline", "stopper")
    p = c.inspect_pipeline("stopper")
    assert p.stopped and p.state == "paused"
    wait_for(lambda: c.inspect_pipeline("stopper").workers == 0, 10, "the stopped pipeline's workers to stop")

    # While stopped: the witness (same input) gets its job, the stopped pipeline none.
    second = commit_files(c, "ss", {"b": b"2"})
    c.flush_commit([("ss", second)], repos=["witness"], timeout=30)
    assert len(jobs(c, "witness")) == 2
    assert len(jobs(c, "stopper")) == 1
    assert outputs(c, "stopper") == {"a": b"1"}

    # start-pipeline catches up on what came in meanwhile.
    px("start-pipeline", "stopper")
    flush_ok(c, "ss", second)
    assert outputs(c, "stopper") == {"a": b"1", "b": b"2"}
    assert c.inspect_pipeline("stopper").state == "running"

    # run-pipeline: a new job on the heads; with a commit, on that commit.
    job_id = px("run-pipeline", "stopper").text.strip()
    assert px("wait-job", job_id).rc == 0
    job = c.inspect_job(job_id)
    assert job.state == "success" and job.input_commits[0].commit == second
    assert outputs(c, "stopper") == {"a": b"1", "b": b"2"}
    job_id = px("run-pipeline", "stopper", f"ss@{first}").text.strip()
    job = c.wait_job(job_id)
    assert job.state == "success" and job.input_commits[0].commit == first
    assert outputs(c, "stopper") == {"a": b"1"}


def test_stop_job(px: Pachy, c: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    c.create_repo("sj")
    c.create_pipeline(spec("sj-p", pfs("sj"), [f"while [ ! -e {go} ]; do sleep 0.05; done",
                                               'cp "$sj" /pfs/out/']))
    h1 = commit_files(c, "sj", {"a": b"1"})
    job = wait_job_running(c, "sj-p")
    px("stop-job", job.id)
    stopped = c.inspect_job(job.id)
    assert stopped.state == "killed" and "stopped" in stopped.reason
    assert px("wait-job", job.id, rc=1).err.strip().startswith(f"error: job {job.id} of pipeline sj-p was killed")
    assert c.list_commit("sj-p", all=True) == []
    # The next commit's job runs the stopped job's datum too (it never succeeded).
    go.touch()
    h2 = commit_files(c, "sj", {"b": b"2"})
    res = flush_ok(c, "sj", h2)
    assert outputs(c, "sj-p") == {"a": b"1", "b": b"2"}
    assert [cm["id"] for cm in res.commits] == [jobs(c, "sj-p")[-1].output_commit.commit]
    assert jobs(c, "sj-p")[-1].input_commits[0].commit == h2 != h1


def test_flush_of_a_stopped_jobs_input_returns(c: Client, tmp_path: Path) -> None:
    c.create_repo("sj2")
    c.create_pipeline(spec("sj2-p", pfs("sj2"), f"while [ ! -e {tmp_path}/never ]; do sleep 0.05; done"))
    head = commit_files(c, "sj2", {"a": b"1"})
    job = wait_job_running(c, "sj2-p")
    c.stop_job(job.id)
    res = flush(c, "sj2", head, timeout=3)
    assert [j.id for j in res.failed_jobs] == [job.id]


def test_update_pipeline_with_and_without_reprocess(px: Pachy, c: Client) -> None:
    c.create_repo("upd")
    first = commit_files(c, "upd", {"a": b"1", "b": b"2"})

    def the_spec(tag: str) -> str:
        return str(px.write(f"upd-{tag}.json", json.dumps(spec(
            "updater", pfs("upd"), f'(cat "$upd"; echo " {tag}") > /pfs/out/"$(basename "$upd")"'))))

    px("create", "pipeline", "-f", the_spec("v1"))
    flush_ok(c, "upd", first)
    assert outputs(c, "updater") == {"a": b"1 v1\n", "b": b"2 v1\n"}

    # A plain (2.x) update: old results stay, only new datums run with the new code.
    px("update", "pipeline", "-f", the_spec("v2"))
    assert c.inspect_pipeline("updater").version == 2
    second = commit_files(c, "upd", {"c": b"3"})
    flush_ok(c, "upd", second)
    assert outputs(c, "updater") == {"a": b"1 v1\n", "b": b"2 v1\n", "c": b"3 v2\n"}
    last = jobs(c, "updater")[-1]
    assert (last.data_processed, last.data_skipped) == (1, 2)

    # --reprocess: everything runs again with the new code.
    n = len(jobs(c, "updater"))
    px("update", "pipeline", "--reprocess", "-f", the_spec("v3"))
    wait_jobs(c, "updater", n + 1)
    assert outputs(c, "updater") == {"a": b"1 v3\n", "b": b"2 v3\n", "c": b"3 v3\n"}
    last = jobs(c, "updater")[-1]
    assert (last.state, last.data_processed, last.data_skipped) == ("success", 3, 0)


def test_delete_pipeline(px: Pachy, c: Client) -> None:
    c.create_repo("del")
    head = commit_files(c, "del", {"a": b"1"})
    c.create_pipeline([spec("doomed", pfs("del"), 'cp "$del" /pfs/out/'),
                       spec("kept-out", pfs("del"), 'cp "$del" /pfs/out/')])
    flush_ok(c, "del", head)
    assert px.worker_pids("doomed")
    (job,) = jobs(c, "doomed")
    px("delete-pipeline", "doomed")
    px("delete-pipeline", "kept-out", "--keep-repo")
    names = [p["name"] for p in px("list-pipeline", "--json").json()]
    assert "doomed" not in names and "kept-out" not in names
    repos = [r["name"] for r in px("list-repo", "--json").json()]
    assert "doomed" not in repos and "kept-out" in repos
    assert c.read_file("kept-out", "master", "a") == b"1"
    with pytest.raises(errors.NotFound):
        c.inspect_job(job.id)
    wait_for(lambda: not px.worker_pids("doomed"), 10, "the deleted pipeline's worker to exit")
    px("inspect-pipeline", "doomed", rc=3)
    # The input repo can go once the kept output repo (whose commits came from it) is gone.
    assert "kept-out" in px("delete-repo", "del", rc=4).err
    px("delete-repo", "kept-out")
    px("delete-repo", "del")


# -- egress, cron, standby ---------------------------------------------------------------------


def test_egress_to_s3_and_to_a_directory(c: Client, tmp_path: Path, s3_endpoint: str) -> None:  # noqa: F811
    bucket = f"egress-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    target = tmp_path / "egress"
    c.create_repo("egin")
    head = commit_files(c, "egin", {"a": b"alpha", "sub/b": b"beta"})
    copy = 'mkdir -p /pfs/out/"$(dirname "${egin#/pfs/egin/}")" && cp "$egin" /pfs/out/"${egin#/pfs/egin/}"'
    c.create_pipeline([
        spec("to-s3", pfs("egin", "/**"), f'[ -f "$egin" ] && {{ {copy}; }} || true',
             egress={"URL": f"s3://{bucket}/results"}),
        spec("to-dir", pfs("egin", "/**"), f'[ -f "$egin" ] && {{ {copy}; }} || true',
             egress={"URL": f"file://{target}"}),
    ])
    flush_ok(c, "egin", head)
    assert outputs(c, "to-s3") == {"a": b"alpha", "sub/b": b"beta"}
    assert [j.state for j in jobs(c, "to-s3")] == ["success"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert keys == ["results/a", "results/sub/b"]
    assert s3.get_object(Bucket=bucket, Key="results/sub/b")["Body"].read() == b"beta"
    assert (target / "a").read_bytes() == b"alpha" and (target / "sub" / "b").read_bytes() == b"beta"
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == ["a", "sub/b"]


def test_cron_input_ticks_and_runs_jobs(c: Client) -> None:
    c.create_pipeline(spec("ticker", {"cron": {"name": "tick", "spec": "@every 1s"}}, 'cp "$tick" /pfs/out/'))
    wait_for(lambda: len([j for j in jobs(c, "ticker") if j.state == "success"]) >= 2, 30, "two cron jobs")
    ticks = c.list_commit("ticker_tick")
    assert len(ticks) >= 2 and all(t.description.startswith("cron tick ") for t in ticks)
    # Each tick adds a file named by its time; every job sees all of them (glob /*), one datum each.
    stamps = [t.description.removeprefix("cron tick ") for t in ticks]
    assert len(set(stamps)) == len(stamps) and all(s.endswith("Z") for s in stamps)
    done = [j for j in jobs(c, "ticker") if j.state not in ("created", "running")]
    assert all(j.state == "success" for j in done), [j.reason for j in done]
    last = done[-1]
    tick_commit = last.input_commits[0].commit
    files = sorted(f.path.lstrip("/") for f in c.list_file("ticker_tick", tick_commit))
    assert last.data_total == len(files) and (last.data_processed, last.data_skipped) == (1, len(files) - 1)
    assert sorted(outputs(c, "ticker", last.output_commit.commit)) == files
    assert c.inspect_pipeline("ticker").input == "tick:@@every 1s"


def test_standby_workers_stop_when_idle_and_start_on_a_commit(c: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    c.create_repo("sb")
    c.create_pipeline(spec("sleepy", pfs("sb"), [f"while [ ! -e {go} ]; do sleep 0.05; done",
                                                 'cp "$sb" /pfs/out/'], standby=True))
    wait_for(lambda: c.inspect_pipeline("sleepy").state == "standby", 15, "the pipeline to be in standby")
    assert c.inspect_pipeline("sleepy").workers == 0
    head = commit_files(c, "sb", {"a": b"1"})
    wait_job_running(c, "sleepy")
    wait_for(lambda: c.inspect_pipeline("sleepy").workers == 1, 15, "a worker for the job")
    go.touch()
    flush_ok(c, "sb", head)
    assert outputs(c, "sleepy") == {"a": b"1"}
    wait_for(lambda: (p := c.inspect_pipeline("sleepy")).workers == 0 and p.state == "standby", 15,
             "the workers to stop again")
    head = commit_files(c, "sb", {"b": b"2"})
    flush_ok(c, "sb", head)
    assert outputs(c, "sleepy") == {"a": b"1", "b": b"2"}
    assert [j.state for j in jobs(c, "sleepy")] == ["success", "success"]
    wait_for(lambda: c.inspect_pipeline("sleepy").workers == 0, 15, "the workers to stop once more")


# -- stats, one-off jobs, notes ----------------------------------------------------------


def test_enable_stats_writes_a_stats_branch_per_job(c: Client) -> None:
    c.create_repo("st")
    head = commit_files(c, "st", {"a": b"1", "b": b"2"})
    c.create_pipeline(spec("stats", pfs("st"), ['echo "seen $st"', 'cp "$st" /pfs/out/'], enable_stats=True))
    flush_ok(c, "st", head)
    (job,) = jobs(c, "stats")
    assert job.stats_commit is not None and job.stats_commit.branch == "stats"
    files = {f.path for f in c.list_file("stats", "stats", "/")}
    datums = {d.id for d in c.list_datum(job.id)}
    assert files == {f"/{d}" for d in datums} | {"/job.json"}
    for d in datums:
        logs = c.read_file("stats", "stats", f"/{d}/logs").decode()
        assert logs.startswith("seen /pfs/st/"), logs
        assert b'"state": "success"' in c.read_file("stats", "stats", f"/{d}/stats.json")
    assert outputs(c, "stats") == {"a": b"1", "b": b"2"}


def test_create_job_runs_once_and_does_not_subscribe(c: Client) -> None:
    c.create_repo("once-in")
    head = commit_files(c, "once-in", {"a": b"1"})
    text = json.dumps(spec("once", pfs("once-in"), "cp /pfs/once-in/* /pfs/out/"))
    job = c.create_job(text)
    assert job.pipeline == "once"
    flush_ok(c, "once-in", head)
    assert outputs(c, "once") == {"a": b"1"}
    assert c.inspect_pipeline("once").stopped
    c.create_pipeline(spec("witness", pfs("once-in"), "cp /pfs/once-in/* /pfs/out/"))
    second = commit_files(c, "once-in", {"b": b"2"})
    flush_ok(c, "once-in", second)  # a stopped pipeline ("once") is not waited for
    assert outputs(c, "witness") == {"a": b"1", "b": b"2"}
    assert len(jobs(c, "once")) == 1  # no job for the new commit: a one-off


def test_git_input_is_accepted_with_a_note(c: Client) -> None:
    (p,) = c.create_pipeline(json.dumps({
        "pipeline": {"name": "gitp"}, "transform": {"cmd": ["true"]},
        "input": {"git": {"URL": "https://github.com/pachyderm/pachyderm.git"}}}))
    assert any(n.path == "input.git" for n in p.notes), p.notes


def test_input_pinned_to_a_commit_and_a_commits_trigger(c: Client) -> None:
    c.create_repo("pin-a")
    c.create_repo("pin-b")
    a0 = commit_files(c, "pin-a", {"x": b"old"})
    commit_files(c, "pin-a", {"x": b"new"})
    commit_files(c, "pin-b", {"y": b"1"})
    (p,) = c.create_pipeline(spec(
        "pinned", {"cross": [pfs("pin-a", commit="master/0"), pfs("pin-b", trigger={"commits": 2})]},
        "cat /pfs/pin-a/x /pfs/pin-b/y > /pfs/out/xy", resource_limits={"memory": "1G"}))
    # A memory limit is noted at create time only where cgroups cannot act (test_pps_limits).
    assert ("resource_limits" in {n.path for n in p.notes}) == (cgroups.available() is not None), p.notes
    b1 = commit_files(c, "pin-b", {"y": b"2"})  # the second commit: the trigger fires
    flush_ok(c, "pin-b", b1)
    assert outputs(c, "pinned") == {"xy": b"old2"}  # pin-a stays at master/0
    (job,) = jobs(c, "pinned")
    assert {i.repo: i.commit for i in job.input_commits} == {"pin-a": a0, "pin-b": b1}
    b2 = commit_files(c, "pin-b", {"y": b"3"})  # one commit since: held
    assert flush(c, "pin-b", b2).commits == []
    b3 = commit_files(c, "pin-b", {"y": b"4"})
    flush_ok(c, "pin-b", b3)
    assert outputs(c, "pinned") == {"xy": b"old4"} and len(jobs(c, "pinned")) == 2


def test_trigger_branch_moves_the_input_branch(c: Client) -> None:
    c.create_repo("trig")
    c.create_pipeline(spec("trigp", pfs("trig", trigger={"branch": "staging", "size": "10"}),
                           "cp /pfs/trig/* /pfs/out/"))
    small = commit_files(c, "trig", {"a": b"12345"}, branch="staging")
    assert flush(c, "trig", small).commits == [] and jobs(c, "trigp") == []
    big = commit_files(c, "trig", {"b": b"0123456789"}, branch="staging")
    flush_ok(c, "trig", big)
    assert outputs(c, "trigp") == {"a": b"12345", "b": b"0123456789"}
    assert c.inspect_commit("trig", "master").id == big  # master was moved to staging's head


def test_a_job_that_cannot_start_shows_in_the_pipeline_state(c: Client) -> None:
    c.create_repo("nostart")
    commit_files(c, "nostart", {"a": b"1"})
    c.create_pipeline(spec("nostartp", pfs("nostart", commit="master/7"), "true"))
    p = wait_for(lambda: (q := c.inspect_pipeline("nostartp")).state == "failure" and q, 15, "state failure")
    assert "cannot start a job" in p.reason and "master/7" in p.reason, p.reason
    assert jobs(c, "nostartp") == []
