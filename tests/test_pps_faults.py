"""Pipelines under faults: user code that crashes, hangs, fails or writes too much; a
full disk; the daemon killed -9 mid-job and restarted; a worker killed -9 mid-task.

Most tests share one daemon; the disk tests run a daemon whose PACHY_HOME is
a small tmpfs, and the restart tests a daemon of their own. After every
fault the system must answer, keep no half-written output commit, and run
the next job correctly.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pachctl.client import Client, errors
from tests.conftest import tmpfs_at, wait_for
from tests.ppshelp import (
    Pachy,
    commit_files,
    flush,
    flush_ok,
    jobs,
    outputs,
    pachy_daemon,
    pachy_fixtures,
    pfs,
    processes,
    spec,
    vm_hwm_kib,
    wait_job_running,
)

MiB = 1 << 20


px, c = pachy_fixtures("pps-faults")


def _finished_commits_only(c: Client, repo: str) -> list[str]:
    commits = c.list_commit(repo, all=True)
    assert all(cm.finished is not None for cm in commits), [(cm.id, cm.finished) for cm in commits]
    return [cm.id for cm in commits]


def _session_members(sid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(name))
    return out


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# -- user code misbehaving ---------------------------------------------------------------


def test_user_code_crashing_with_sigsegv(c: Client) -> None:
    c.create_repo("crash")
    head = commit_files(c, "crash", {"a": b"1"})
    c.create_pipeline(spec("crasher", pfs("crash"), ["echo about to crash >&2", "kill -SEGV $$"], datum_tries=2))
    (job,) = flush(c, "crash", head).failed_jobs
    assert "SIGSEGV" in job.reason and "about to crash" in job.reason, job.reason
    (datum,) = c.list_datum(job.id)
    assert (datum.state, datum.tries) == ("failed", 2)
    assert c.list_commit("crasher") == []
    assert c.inspect_pipeline("crasher").state == "running"  # user code crashing is not the worker crashing


def test_a_hanging_datum_then_the_next_commit_succeeds(c: Client) -> None:
    c.create_repo("stuck")
    head = commit_files(c, "stuck", {"ok": b"1", "hang": b"2"})
    c.create_pipeline(spec("stucker", pfs("stuck"), [
        '[ "$(basename "$stuck")" = hang ] && exec sleep 3600', 'cp "$stuck" /pfs/out/'],
        datum_timeout="1s", datum_tries=1))
    (job,) = flush(c, "stuck", head, timeout=30).failed_jobs
    assert "datum_timeout" in job.reason
    assert c.list_commit("stucker") == []
    # Take the hanging input away: the next job succeeds, and holds every output.
    head = commit_files(c, "stuck", {"hang": None, "more": b"3"})
    flush_ok(c, "stuck", head, timeout=30)
    assert outputs(c, "stucker") == {"ok": b"1", "more": b"3"}
    assert [j.state for j in jobs(c, "stucker")] == ["failure", "success"]


def test_exit_non_zero_then_fixed_by_an_update(c: Client) -> None:
    c.create_repo("buggy")
    head = commit_files(c, "buggy", {"a": b"1", "b": b"2"})
    c.create_pipeline(spec("buggy-p", pfs("buggy"), "exit 42", datum_tries=1))
    (job,) = flush(c, "buggy", head).failed_jobs
    assert "exit code 42" in job.reason
    c.update_pipeline(spec("buggy-p", pfs("buggy"), 'cp "$buggy" /pfs/out/'))
    wait_for(lambda: [j.state for j in jobs(c, "buggy-p")] == ["failure", "success"], 30, "the fixed job")
    assert outputs(c, "buggy-p") == {"a": b"1", "b": b"2"}
    _finished_commits_only(c, "buggy-p")


def test_processes_user_code_leaves_behind_are_killed(c: Client) -> None:
    c.create_repo("bg")
    head = commit_files(c, "bg", {"a": b"1"})
    tags = ["876543.5", "876544.5", "876545.5"]
    c.create_pipeline(spec("bg-p", pfs("bg"), [
        f"setsid sleep {tags[0]} &", f"(sleep {tags[1]} &)", f"nohup sleep {tags[2]} >/dev/null 2>&1 &",
        'cp "$bg" /pfs/out/']))
    flush_ok(c, "bg", head)
    assert outputs(c, "bg-p") == {"a": b"1"}
    wait_for(lambda: not any(processes("sleep", t) for t in tags), 10,
             "the unit's background processes to be killed")


def test_huge_output_streams_through_the_daemon(px: Pachy, c: Client) -> None:
    size = 300 * MiB
    c.create_repo("huge")
    head = commit_files(c, "huge", {"x": b"1"})
    before = vm_hwm_kib(px.pid)
    c.create_pipeline(spec("huger", pfs("huge"), f"head -c {size} /dev/zero > /pfs/out/big"))
    flush_ok(c, "huge", head, timeout=120)
    after = vm_hwm_kib(px.pid)
    assert c.inspect_file("huger", "master", "big").size == size
    # The daemon never held the output in memory: its peak RSS grew by far less than 300 MiB.
    assert (after - before) * 1024 < 100 * MiB, (before, after)
    assert after * 1024 < 256 * MiB, after
    # And the bytes are right where we look.
    first = next(c.get_file("huger", "master", "big"))
    assert first and first == bytes(len(first))


# -- the disk fills up -------------------------------------------------------------------


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Pachy]:
    """A daemon whose PACHY_HOME (store, scratch, logs) is a 64 MiB tmpfs; every task's
    scratch stays there (no /dev/shm fast scratch for small tasks)."""
    with tmpfs_at(tmp_path / "small", "64m") as root, pachy_daemon(root, PACHY_FAST_SCRATCH="none") as p:
        yield p


def test_user_code_filling_the_disk_fails_the_job_cleanly(small_home: Pachy, tmp_path: Path) -> None:
    c = small_home.client
    runs = tmp_path / "runs"
    c.create_repo("fill")
    head = commit_files(c, "fill", {"huge": b"1", "small": b"2"})
    c.create_pipeline(spec("filler", pfs("fill"), [
        f'echo "$fill" >> {runs}',
        f'if [ "$(basename "$fill")" = huge ]; then head -c {100 * MiB} /dev/zero > /pfs/out/huge; fi',
        'cp "$fill" /pfs/out/"$(basename "$fill")".copy',
    ], datum_tries=1))
    (job,) = flush(c, "fill", head, timeout=60).failed_jobs
    assert "No space left on device" in job.reason, job.reason
    assert c.list_commit("filler", all=True) == []
    assert _lines(runs).count("/pfs/fill/huge") == 1
    # The daemon answers, the scratch space came back, and the next job succeeds.
    assert c.version()
    head = commit_files(c, "fill", {"huge": None, "more": b"3"})
    flush_ok(c, "fill", head, timeout=60)
    assert outputs(c, "filler") == {"small.copy": b"2", "more.copy": b"3"}
    _finished_commits_only(c, "filler")


def test_store_filling_up_on_a_result_fails_the_job(small_home: Pachy, tmp_path: Path) -> None:
    c = small_home.client
    runs = tmp_path / "runs"
    c.create_repo("fill2")
    head = commit_files(c, "fill2", {"x": b"1"})
    # 40 MiB of incompressible output fits the scratch space, but not the store beside it.
    c.create_pipeline(spec("filler2", pfs("fill2"), [
        f"echo run >> {runs}", f"head -c {40 * MiB} /dev/urandom > /pfs/out/big"], datum_tries=1))
    try:
        res = flush(c, "fill2", head, timeout=10)
    except errors.PfsError as exc:
        raise AssertionError(f"the job is still running after 10 s ({exc}); with datum_tries 1 its user "
                             f"code ran {len(_lines(runs))} times") from None
    (job,) = res.failed_jobs
    assert "no space" in job.reason.lower(), job.reason
    assert len(_lines(runs)) == 1
    assert c.list_commit("filler2", all=True) == []
    assert c.version()


# -- processes killed ----------------------------------------------------------------------


def _start_gated(c: Client, repo: str, pipeline: str, files: dict[str, bytes], started: Path, go: Path):
    """A repo with ``files`` and a pipeline whose datums log their name to
    ``started`` and wait for ``go`` before copying; returns (input head, the
    running job) once a datum has started."""
    c.create_repo(repo)
    head = commit_files(c, repo, files)
    c.create_pipeline(spec(pipeline, pfs(repo), [
        f'echo "$(basename "${repo}")" >> {started}',
        f"while [ ! -e {go} ]; do sleep 0.05; done",
        f'cp "${repo}" /pfs/out/',
    ]))  # fmt: skip
    job = wait_job_running(c, pipeline)
    wait_for(lambda: _lines(started), 30, f"a datum of {pipeline} to start")
    return head, job


def test_worker_killed_mid_task_hands_the_task_to_a_new_worker(px: Pachy, c: Client, tmp_path: Path) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    head, job = _start_gated(c, "wk", "wk-p", {"a": b"1", "b": b"2"}, started, go)
    (old,) = px.worker_pids("wk-p")
    orphans = [p for p in _session_members(old) if p != old]
    os.kill(old, signal.SIGKILL)
    try:
        # A new worker takes the task over and runs the datum again.
        wait_for(lambda: len(_lines(started)) >= 2, 30, "the datum to start on a new worker")
        (new,) = px.worker_pids("wk-p")
        assert new != old
        go.touch()
        flush_ok(c, "wk", head, timeout=60)
    finally:
        for pid in orphans:  # the killed worker's user code, if it outlived it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert [j.id for j in jobs(c, "wk-p")] == [job.id]
    done = c.inspect_job(job.id)
    assert (done.state, done.data_processed, done.data_failed) == ("success", 2, 0)
    assert outputs(c, "wk-p") == {"a": b"1", "b": b"2"}
    _finished_commits_only(c, "wk-p")


@dataclass
class Restarted:
    px: Pachy
    killed_job: str
    head: str
    started: Path


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    """A daemon killed -9 while a slow datum ran, then started again on the same home."""
    root = tmp_path_factory.mktemp("pps-restart")
    started, go = root / "started", root / "go"
    with pachy_daemon(root) as p:
        c = p.client
        head, job = _start_gated(c, "slow", "slowpoke", {"a": b"alpha", "b": b"beta"}, started, go)
        p.kill9()
        p.start()
        go.touch()
        yield Restarted(p, job.id, head, started)


def test_daemon_killed_mid_job_runs_the_job_again(restarted: Restarted) -> None:
    c = restarted.px.client
    flush_ok(c, "slow", restarted.head, timeout=60)
    old, new = jobs(c, "slowpoke")
    assert old.id == restarted.killed_job
    assert old.state == "killed" and "daemon stopped" in old.reason
    assert (new.state, new.data_processed) == ("success", 2)
    assert new.input_commits[0].commit == restarted.head
    # No half-written output commit: the only commit is the new job's, finished, and right.
    assert _finished_commits_only(c, "slowpoke") == [new.output_commit.commit]
    assert outputs(c, "slowpoke") == {"a": b"alpha", "b": b"beta"}
    assert c.fsck().ok


def test_after_a_restart_only_the_new_daemons_workers_serve(restarted: Restarted) -> None:
    p = restarted.px
    c = p.client
    flush_ok(c, "slow", restarted.head, timeout=60)
    c.stop_pipeline("slowpoke")
    try:
        wait_for(lambda: not p.worker_pids("slowpoke"), 8, "every worker of the stopped pipeline to exit")
    finally:
        with contextlib.suppress(errors.PfsError):
            c.start_pipeline("slowpoke")
