"""resource_limits.cpu/memory on the local runner: a real cgroup per worker (pps/runners/cgroups.py).

A real daemon runs real pipelines whose workers get cgroups of their own:
a unit over its memory limit is OOM-killed and fails with that reason
(inspect-job, list-datum, logs) while its worker lives on and runs the next
job; a cpu limit is a CFS quota in the worker's cgroup, and slows a busy
loop to about that share; the cgroup goes with the pipeline. The
create-time note appears only where limits cannot act. Tests that need
cgroups skip, saying why, only where ``cgroups.available()`` says they
cannot act (not root, no controller).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pachctl.client import Client
from pfsfuse.objstore import LocalStore
from pfsfuse.pfs import PFS
from pps.runners import cgroups
from pps.runners.local import LocalRunner
from pps.scheduler import Scheduler
from shim import oom
from tests.conftest import wait_for
from tests.ppshelp import (
    Pachy,
    commit_files,
    delete_all_pipelines,
    flush,
    jobs,
    outputs,
    pachy_daemon,
    pfs,
    spec,
)

PYTHON = "/usr/bin/python3"  # user code runs as an unprivileged uid: not a python under /root
WHY_NOT = cgroups.available()
if WHY_NOT is None and cgroups.layout()[0].version != 1:  # type: ignore[union-attr]
    WHY_NOT = "these tests read cgroup v1 files, and this host has cgroup v2"
needs_cgroups = pytest.mark.skipif(WHY_NOT is not None, reason=f"cgroups cannot act here: {WHY_NOT}")


@pytest.fixture(scope="module")
def px(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pachy]:
    with pachy_daemon(tmp_path_factory.mktemp("pps-limits")) as p:
        yield p


@pytest.fixture
def c(px: Pachy) -> Iterator[Client]:
    yield px.client
    delete_all_pipelines(px.client)


def worker_cgroups(px: Pachy, pipeline: str) -> tuple[int, list[str]]:
    """(pid, cgroup directories) of the pipeline's one worker, once it runs."""
    got = wait_for(lambda: px.worker_pids(pipeline) or None, 30, f"a worker of {pipeline}")
    (pid, wid), = got.items()
    where, why = cgroups.layout()
    assert where is not None, why
    return pid, where.dirs(cgroups.PARENT, wid)


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@needs_cgroups
def test_a_unit_over_its_memory_limit_is_oom_killed_and_its_worker_runs_the_next(px: Pachy, c: Client) -> None:
    c.create_repo("hogin")
    first = commit_files(c, "hogin", {"mib": "200"})
    # Holds MiB bytes for real (b"x" * n writes every page), then reports the size.
    code = textwrap.dedent("""\
        import os
        n = int(open(os.environ["hogin"]).read())
        held = b"x" * (n << 20)
        open("/pfs/out/held", "w").write(str(len(held)))
        open("/pfs/out/adj", "w").write(open("/proc/self/oom_score_adj").read().strip())
    """)
    (p,) = c.create_pipeline(json.dumps({
        "pipeline": {"name": "hog"}, "input": pfs("hogin"),
        "transform": {"cmd": [PYTHON, "-c", code]},
        "resource_limits": {"memory": "64Mi"}, "datum_tries": 1}))
    assert "resource_limits" not in {n.path for n in p.notes}, p.notes  # limits act: no note
    pid, (memory_dir, _cpu_dir) = worker_cgroups(px, "hog")
    reason = "killed: out of memory (resource_limits.memory is 64Mi)"
    res = flush(c, "hogin", first)
    (job,) = res.failed_jobs
    assert job.state == "failure" and reason in job.reason, job.reason
    (datum,) = c.list_datum(job.id)
    assert datum.state == "failed" and datum.reason.startswith(reason), datum.reason
    assert reason in "".join(line.message for line in c.get_logs(job=job.id))
    assert reason in px("inspect-job", job.id).text
    # The worker (in the same cgroup, less likely to be picked) survived; its cgroup holds the limit.
    assert list(px.worker_pids("hog")) == [pid]
    assert read(f"{memory_dir}/memory.limit_in_bytes") == str(64 << 20)
    assert pid in [int(x) for x in read(f"{memory_dir}/cgroup.procs").split()]
    worker_adj = int(read(f"/proc/{pid}/oom_score_adj"))
    print(f"the worker's cgroup at rest: {int(read(f'{memory_dir}/memory.usage_in_bytes')) >> 20} MiB charged, "
          f"peak {int(read(f'{memory_dir}/memory.max_usage_in_bytes')) >> 20} MiB")
    # The next job, under the limit, succeeds on that same worker.
    second = commit_files(c, "hogin", {"mib": "4"})
    res = flush(c, "hogin", second)
    assert not res.failed_jobs, [j.reason for j in res.failed_jobs]
    assert outputs(c, "hog") == {"held": str(4 << 20).encode(), "adj": str(worker_adj + 500).encode()}
    assert list(px.worker_pids("hog")) == [pid]
    assert [j.state for j in jobs(c, "hog")] == ["failure", "success"]
    c.delete_pipeline("hog")
    wait_for(lambda: not os.path.exists(memory_dir), 15, f"{memory_dir} removed with the pipeline")


@needs_cgroups
def test_a_shell_pipeline_over_the_limit_is_out_of_memory_too(px: Pachy, c: Client) -> None:
    """``tail`` holds a 200 MiB line; its shell reports it as exit code 137."""
    c.create_repo("tailin")
    head = commit_files(c, "tailin", {"x": ""})
    c.create_pipeline(json.dumps(spec("tailer", pfs("tailin"), "head -c 200M /dev/zero | tail >/dev/null",
                                      resource_limits={"memory": "64Mi"}, datum_tries=1)))
    (job,) = flush(c, "tailin", head).failed_jobs
    assert "failed: killed: out of memory (resource_limits.memory is 64Mi)" in job.reason, job.reason


@needs_cgroups
def test_a_cpu_limit_is_a_quota_in_the_workers_cgroup(px: Pachy, c: Client) -> None:
    c.create_repo("spin")
    head = commit_files(c, "spin", {"seconds": "1.5"})
    # A busy loop for a while of wall time: its CPU time over that time is the share it got.
    code = textwrap.dedent("""\
        import os, time
        wall = float(open(os.environ["spin"]).read())
        t0, c0 = time.monotonic(), time.process_time()
        while time.monotonic() - t0 < wall:
            pass
        open("/pfs/out/share", "w").write(str((time.process_time() - c0) / (time.monotonic() - t0)))
    """)
    c.create_pipeline(json.dumps({
        "pipeline": {"name": "spinner"}, "input": pfs("spin"),
        "transform": {"cmd": [PYTHON, "-c", code]}, "resource_limits": {"cpu": 0.5}}))
    _pid, (memory_dir, cpu_dir) = worker_cgroups(px, "spinner")
    assert (read(f"{cpu_dir}/cpu.cfs_quota_us"), read(f"{cpu_dir}/cpu.cfs_period_us")) == ("50000", "100000")
    res = flush(c, "spin", head)
    assert not res.failed_jobs, [j.reason for j in res.failed_jobs]
    share = float(outputs(c, "spinner")["share"])
    print(f"busy loop under resource_limits.cpu 0.5: {share:.2f} of a core")
    assert share < 0.75, share  # ~0.5; never a whole core (the machine may be busier: no lower bound)
    c.delete_pipeline("spinner")
    for d in (memory_dir, cpu_dir):
        wait_for(lambda d=d: not os.path.exists(d), 15, f"{d} removed with the pipeline")


@needs_cgroups
def test_a_killed_worker_is_replaced_in_a_fresh_cgroup(px: Pachy, c: Client) -> None:
    c.create_repo("crashin")
    c.create_pipeline(json.dumps(spec("crasher", pfs("crashin"), "cp -r /pfs/crashin/. /pfs/out/",
                                      resource_limits={"memory": "128Mi", "cpu": 1})))
    pid, dirs = worker_cgroups(px, "crasher")
    made = [os.stat(d).st_ino for d in dirs]
    os.kill(pid, signal.SIGKILL)
    # The scheduler starts a worker of the same id again: in a cgroup of its own, with the limits.
    new = wait_for(lambda: [p for p in px.worker_pids("crasher") if p != pid] or None, 30, "a new worker")
    assert new[0] in [int(x) for x in read(f"{dirs[0]}/cgroup.procs").split()]
    assert [os.stat(d).st_ino for d in dirs] != made
    assert read(f"{dirs[0]}/memory.limit_in_bytes") == str(128 << 20)
    assert read(f"{dirs[1]}/cpu.cfs_quota_us") == "100000"
    head = commit_files(c, "crashin", {"a": "1"})
    res = flush(c, "crashin", head)
    assert not res.failed_jobs and outputs(c, "crasher") == {"a": b"1"}


def test_the_create_time_note_only_where_limits_cannot_act(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    pfs_ = PFS(str(store), LocalStore(str(store / "objects")))
    s = Scheduler(pfs_, str(store), runner=LocalRunner("unix:/nonexistent", str(tmp_path / "home")))
    try:
        pfs_.create_repo("limin")

        def create(name: str) -> dict[str, str]:
            (row,) = s.create_pipelines(json.dumps({
                "pipeline": {"name": name}, "input": pfs("limin"), "transform": {"cmd": ["true"]},
                "resource_limits": {"cpu": 1, "memory": "1G"}}))
            return {n["path"]: n["reason"] for n in row.notes}

        if cgroups.available() is None:
            assert "resource_limits" not in create("acts")
        why = "no cgroup hierarchy with the memory controller is mounted under /sys/fs/cgroup"
        monkeypatch.setattr(cgroups, "available", lambda: why)
        assert create("inert")["resource_limits"] == f"the local runner cannot cap cpu or memory here: {why}"
    finally:
        s.runner.close()
        pfs_.close()


@needs_cgroups
def test_missing_controllers_are_mounted_as_dockerd_does(tmp_path: Path) -> None:
    """In a private mount namespace (the host's mounts stay), with /sys/fs/cgroup gone:
    the daemon's probe mounts a tmpfs there and the memory and cpu hierarchies."""
    probe = textwrap.dedent("""\
        import json
        from pps.runners import cgroups
        where, why = cgroups.layout()
        mounts = [(m[1], m[2], m[4]) for m in cgroups._mounts() if m[1].startswith("/sys/fs/cgroup")]
        print(json.dumps({"why": why, "version": where and where.version, "mounts": mounts}))
    """)
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'umount -R /sys/fs/cgroup && exec {sys.executable} -c "$0"', probe],
        capture_output=True, text=True, timeout=60, check=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    got = json.loads(out.stdout)
    assert got["why"] is None and got["version"] == 1, got
    kinds = {point: (fstype, opts) for point, fstype, opts in got["mounts"]}
    assert kinds["/sys/fs/cgroup"][0] == "tmpfs"
    assert any(t == "cgroup" and "memory" in o for t, o in kinds.values())
    assert any(t == "cgroup" and "cpu" in o for t, o in kinds.values())
    assert cgroups.detect() == cgroups.layout()[0]  # the host's own mounts are untouched


def test_v2_files(tmp_path: Path) -> None:
    """cgroup v2 cannot run here (every controller is bound to v1): what the worker's
    cgroup writes there, on a plain directory standing in for the unified hierarchy."""
    base = tmp_path / "unified"
    base.mkdir()
    (base / "cgroup.procs").write_text("")
    cgroups.WorkerCgroup(cgroups.Layout(2, (("unified", str(base)),)), "w-1", cpu=0.25, memory=64 << 20)
    d = base / "pachy" / "w-1"
    assert (base / "cgroup.subtree_control").read_text() == "+memory +cpu"
    assert (d / "memory.max").read_text() == str(64 << 20) and (d / "cpu.max").read_text() == "25000 100000"
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    watch = oom.OomWatch(str(d), 64 << 20)
    before = watch.count()
    assert before == 1 and watch.explain(before, -9, "killed by SIGKILL") == "killed by SIGKILL"
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n")
    assert watch.explain(before, 137, "exit code 137") == "killed: out of memory (resource_limits.memory is 64Mi)"
    assert watch.explain(before, 1, "exit code 1") == ("exit code 1, after one of its processes was killed: "
                                                       "out of memory (resource_limits.memory is 64Mi)")
    watch.close()


def test_sizes_are_named_as_a_spec_writes_them() -> None:
    assert [oom.describe(n) for n in (64 << 20, 1 << 30, 10**9, 500 * 10**6, 12345)] == [
        "64Mi", "1Gi", "1G", "500M", "12345 bytes"]
