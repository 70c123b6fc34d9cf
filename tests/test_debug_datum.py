"""`pachctl debug datum`: one datum reproduced here, against a real daemon whose
local runner ran the same datums. What the user code printed in the worker (its
logs) is what it prints under `debug datum`: the same /pfs (`find /pfs`), the
same environment, the same exit code and message for the failing datum."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mountd.pps_models import Job
from pachctl.cli import cmd_debug
from pachctl.client import Client
from tests.ppshelp import Pachy, commit_files, flush, jobs, pachy_fixtures

px, c = pachy_fixtures("debug-datum")

# Prints its /pfs and environment, then fails (exit 3, a message on stderr) on bad.txt.
STDIN = [
    "find /pfs | sort",
    'echo "job=$PACH_JOB_ID out=$PACH_OUTPUT_COMMIT_ID in=$PACH_DEBUGIN_COMMIT_ID data=$debugin '
    'commit=$debugin_COMMIT foo=$FOO token=$TOKEN home=$HOME pwd=$(pwd)"',
    'if [ "$(basename "$debugin")" = bad.txt ]; then echo "cannot parse $debugin" >&2; exit 3; fi',
    "cp -r /pfs/debugin/* /pfs/out/",
]


def _user_lines(c: Client, job: Job, datum: str) -> list[str]:
    return [ln.message for ln in c.get_logs(job=job.id, datum=datum) if ln.user]


@pytest.fixture(scope="module")
def jobs_(px: Pachy) -> tuple[Job, Job]:
    """Job 1 succeeds on a.txt and the directory d; job 2 fails on bad.txt."""
    c = px.client
    c.create_repo("debugin")
    c.create_secret("debugtok", {"key": "s3cret"})
    first = commit_files(c, "debugin", {"a.txt": "hello\n", "d/x": "1", "d/y": "2"})
    c.create_pipeline({
        "pipeline": {"name": "debugp"},
        "input": {"pfs": {"repo": "debugin", "glob": "/*"}},
        "transform": {"cmd": ["sh"], "stdin": STDIN, "env": {"FOO": "bar"},
                      "secrets": [{"name": "debugtok", "env_var": "TOKEN", "key": "key"}]},
        "datum_tries": 1,
    })
    assert not flush(c, "debugin", first).failed_jobs
    second = commit_files(c, "debugin", {"bad.txt": "boom\n"})
    assert flush(c, "debugin", second).failed_jobs
    j1, j2 = jobs(c, "debugp")
    assert (j1.state, j2.state) == ("success", "failure")
    return j1, j2


def _datum(c: Client, job: Job, path: str) -> str:
    return next(d.id for d in c.list_datum(job.id) if any(f.path == path for f in d.files))


@pytest.mark.parametrize("path", ["/a.txt", "/d/x"])
def test_a_passing_datum_sees_what_the_worker_saw(px: Pachy, jobs_: tuple[Job, Job], path: str) -> None:
    j1, _ = jobs_
    datum = _datum(px.client, j1, path)
    res = px("debug", "datum", j1.id, datum, "--show-secrets", rc=0)
    assert res.lines == _user_lines(px.client, j1, datum), res.err  # the same /pfs tree, env and output
    assert "/pfs/out" in res.lines and "exit code: 0" in res.err


def test_the_failing_datum_reproduces_its_exit_code_and_message(px: Pachy, jobs_: tuple[Job, Job]) -> None:
    _, j2 = jobs_
    datum = _datum(px.client, j2, "/bad.txt")
    assert px.client.inspect_datum(j2.id, datum).state == "failed"
    res = px("debug", "datum", j2.id, datum, rc=3)
    assert "cannot parse /pfs/debugin/bad.txt" in res.err
    assert "exit code: 3 (the worker counts this datum as failed)" in res.err
    worker = _user_lines(px.client, j2, datum)
    assert "cannot parse /pfs/debugin/bad.txt" in worker
    assert res.lines == [ln.replace("token=s3cret", "token=<redacted>") for ln in worker[: len(res.lines)]]
    assert res.lines[0] == "/pfs" and "/pfs/debugin/bad.txt" in res.lines


def test_secrets_are_redacted_unless_asked(px: Pachy, jobs_: tuple[Job, Job]) -> None:
    j1, _ = jobs_
    datum = _datum(px.client, j1, "/a.txt")
    res = px("debug-datum", j1.id, datum, rc=0)  # the 1.x-like spelling
    assert "token=<redacted>" in res.text and "s3cret" not in res.text + res.err
    assert "TOKEN=<redacted>" in res.err  # the environment is listed on stderr
    shown = px("debug", "datum", j1.id, datum, "--show-secrets", rc=0)
    assert "token=s3cret" in shown.text


def test_dir_is_kept_and_shell_opens_there(px: Pachy, jobs_: tuple[Job, Job], tmp_path: Path) -> None:
    j1, _ = jobs_
    datum = _datum(px.client, j1, "/a.txt")
    where = tmp_path / "datum"
    env = px.env | {"SHELL": "/bin/sh"}
    from tests.clihelp import run

    res = run(env, "debug", "datum", j1.id, datum, "--dir", str(where), "--shell",
              input=b'cat /pfs/debugin/a.txt; echo "$PACH_JOB_ID $(pwd)"; ls /pfs/out | wc -l; exit 5\n', rc=5)
    assert res.lines == ["hello", f"{j1.id} /", "0"]
    assert (where / "pfs" / "debugin" / "a.txt").read_text() == "hello\n"  # --dir: kept
    assert (where / "pfs" / "out").is_dir()
    again = run(env, "debug", "datum", j1.id, datum, "--dir", str(where), rc=2)
    assert "is not empty" in again.err


def test_the_temporary_dir_goes_unless_kept(px: Pachy, jobs_: tuple[Job, Job]) -> None:
    j1, _ = jobs_
    datum = _datum(px.client, j1, "/a.txt")
    gone = px("debug", "datum", j1.id, datum, rc=0)
    where = gone.err.split("/pfs laid out in ", 1)[1].split()[0]
    assert not os.path.exists(where)
    kept = px("debug", "datum", j1.id, datum, "--keep", rc=0)
    where = kept.err.split("/pfs laid out in ", 1)[1].split()[0]
    assert os.path.isfile(os.path.join(where, "debugin", "a.txt"))
    import shutil

    shutil.rmtree(os.path.dirname(where))


def test_1x_prev_is_the_previous_output(px: Pachy) -> None:
    c = px.client
    c.create_repo("debug1x")
    first = commit_files(c, "debug1x", {"n": "1\n"})
    c.create_pipeline({
        "pipeline": {"name": "debug1xp"},
        "transform": {"cmd": ["sh"], "stdin": ["find /pfs | sort", "cat /pfs/prev/total 2>/dev/null || true",
                                               "cat /pfs/debug1x/n >> /pfs/out/total"]},
        "inputs": [{"repo": {"name": "debug1x"}, "method": "map"}],
    })
    assert not flush(c, "debug1x", first).failed_jobs
    second = commit_files(c, "debug1x", {"n": "2\n"})
    assert not flush(c, "debug1x", second).failed_jobs
    j2 = jobs(c, "debug1xp")[-1]
    (datum,) = c.list_datum(j2.id)
    res = px("debug", "datum", j2.id, datum.id, rc=0)
    assert res.lines == _user_lines(c, j2, datum.id)
    assert "/pfs/prev/total" in res.lines and "1" in res.lines


def test_unknown_job_and_datum(px: Pachy, jobs_: tuple[Job, Job]) -> None:
    j1, _ = jobs_
    assert "not found" in px("debug", "datum", "nosuchjob", "x", rc=None).err
    res = px("debug", "datum", j1.id, "nosuchdatum", rc=None)
    assert res.rc != 0 and res.err.startswith("error: ")


def test_matched_path() -> None:
    assert cmd_debug.matched_path("/*", ["/d/x", "/d/y"]) == "/d"
    assert cmd_debug.matched_path("/*", ["/a.txt"]) == "/a.txt"
    assert cmd_debug.matched_path("/", ["/a", "/b/c"]) == "/"
    assert cmd_debug.matched_path("/*/*", ["/a/b/c"]) == "/a/b"
    assert cmd_debug.matched_path("/**", ["/a/b/c", "/a/b/d"]) == "/a/b"


def test_secret_files_under_pfs(px: Pachy, jobs_: tuple[Job, Job], tmp_path: Path) -> None:
    c = px.client
    c.create_pipeline({
        "pipeline": {"name": "debugsec"},
        "input": {"pfs": {"repo": "debugin", "glob": "/a.txt"}},
        "transform": {"cmd": ["sh"], "stdin": ["find /pfs | sort"],
                      "secrets": [{"name": "debugtok", "mount_path": "/pfs/creds"}]},
    })
    head = c.inspect_commit("debugin", "master").id
    res = c.flush_commit([("debugin", head)], repos=["debugsec"], timeout=60)
    assert not [j for j in res.failed_jobs if j.pipeline == "debugsec"]
    (job,) = jobs(c, "debugsec")
    (datum,) = c.list_datum(job.id)
    worker = _user_lines(c, job, datum.id)
    assert "/pfs/creds/key" in worker
    assert px("debug", "datum", job.id, datum.id, "--show-secrets", "--dir", str(tmp_path / "a"), rc=0).lines == worker
    assert (tmp_path / "a" / "pfs" / "creds" / "key").read_text() == "s3cret"
    px("debug", "datum", job.id, datum.id, "--dir", str(tmp_path / "b"), rc=0)
    assert [p.read_text() for p in (tmp_path / "b" / "pfs" / "creds").iterdir()] == ["<redacted>"]
    c.delete_pipeline("debugsec")


def test_without_unshare_it_says_how_to_run_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd_debug.shutil, "which", lambda name: None)
    assert cmd_debug.local_argv("/tmp/x/pfs", "/", ["sh"]) is None
    p = cmd_debug.Plan(cmd=["python3", "run.py"], stdin=b"", cwd="/work")
    text = cmd_debug._manual("/tmp/x", p, {"data": "/pfs/data/a b"})
    assert "mount --bind /tmp/x/pfs /pfs" in text and "data='/pfs/data/a b'" in text and "python3 run.py" in text


def test_docker_argv_mounts_the_dir_at_pfs() -> None:
    p = cmd_debug.Plan(cmd=["python3", "/app/run.py"], cwd="/app", image="example/edges:1")
    argv = cmd_debug.docker_argv("/tmp/x/pfs", p, {"PACH_JOB_ID": "j1"}, interactive=False)
    assert argv == ["docker", "run", "--rm", "-i", "-v", "/tmp/x/pfs:/pfs", "-w", "/app",
                    "-e", "PACH_JOB_ID=j1", "example/edges:1"]
