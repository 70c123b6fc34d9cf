"""The scheduler in-process, without a daemon: PFS on a tmp dir, a runner that
records what it is asked, and the scheduler driven tick by tick (no thread,
no HTTP, no worker processes)."""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pfsfuse.objstore import LocalStore
from pfsfuse.pfs import PFS
from pps import wire
from pps.runners.base import NullRunner, WorkerSpec
from pps.scheduler import Scheduler
from pps.spec import Capabilities


@dataclass
class RecordingRunner(NullRunner):
    """Starts nothing; answers with ``caps`` and remembers every ensure (the scheduler's
    worker requests)."""

    name: str = "recording"
    ensured: list[tuple[str, WorkerSpec, int]] = field(default_factory=list)

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        self.ensured.append((pipeline, spec, workers))
        return []


SPEC = {
    "pipeline": {"name": "wc"},
    "transform": {"image": "busybox", "cmd": ["sh"], "stdin": ["wc -c /pfs/data/* > /pfs/out/n"]},
    "input": {"pfs": {"repo": "data", "glob": "/*", "lazy": True}},
    "parallelism_spec": {"constant": 2},
    "resource_limits": {"memory": "64Mi"},
}


@pytest.fixture
def pfs(tmp_path: Path):
    p = PFS(str(tmp_path / "home"), LocalStore(str(tmp_path / "home" / "objects")))
    p.create_repo("data")
    yield p
    p.close()


def commit(pfs: PFS, files: dict[str, bytes]) -> str:
    info = pfs.start_commit("data", "master")
    with pfs.write_session("data", info.id) as ws:
        for path, data in files.items():
            ws.put_bytes(path, data, overwrite=True)
        ws.commit()
    pfs.finish_commit("data", info.id)
    return info.id


def test_a_commit_becomes_a_job_its_tasks_and_worker_requests(pfs: PFS, tmp_path: Path) -> None:
    runner = RecordingRunner()
    s = Scheduler(pfs, str(tmp_path / "home"), runner=runner, max_workers=4)
    (row,) = s.create_pipelines(json.dumps(SPEC))
    notes = {n["path"] for n in row.notes}
    assert {"transform.image", "resource_limits", "input.pfs.lazy"} <= notes  # this runner enforces neither
    s.tick()
    assert s.store.latest_job("wc") is None  # no input commit yet: no job
    assert runner.ensured[-1][0] == "wc" and runner.ensured[-1][2] == 2  # idle, but parallelism 2 is asked
    spec = runner.ensured[-1][1]
    assert (spec.image, spec.cmd, spec.limits.memory if spec.limits else 0) == ("busybox", ("sh",), 64 << 20)

    cid = commit(pfs, {"a": b"aaa", "b": b"bb"})
    s.tick()
    job = s.store.latest_job("wc")
    assert job is not None and job.state == "running" and job.total == 2
    tasks = []  # one datum each: two workers share two datums
    while (task := s.queue.take("wc", f"w-{len(tasks)}", 0)) is not None:
        assert task.job_id == job.id and task.payload["wire"] == wire.WIRE
        tasks.append(wire.Task.from_dict(json.loads(json.dumps(task.payload))))  # exactly what a worker gets
    assert len(tasks) == 2 and all(t.kind == "job" and t.transform.cmd == ["sh"] for t in tasks)
    files = sorted((f.path, f.commit, f.size, f.lazy) for t in tasks for u in t.units for f in u.files)
    assert files == [("a", cid, 3, True), ("b", cid, 2, True)]
    assert tasks[0].env["PACH_JOB_ID"] == job.id and tasks[0].env["PACH_OUTPUT_COMMIT_ID"] == job.output_commit

    # The workers report every unit done (outputs none): the next tick merges and finishes the job.
    running = weakref.ref(s.active["wc"])
    for t in tasks:
        assert s.task_result(t.task_id, [{"unit_id": u.unit_id, "state": "success", "tries": 1} for u in t.units])
    assert s.store.get_job(job.id).state == "running"  # the scheduler's thread completes it, on its tick
    s.tick()
    done = s.store.get_job(job.id)
    assert (done.state, done.processed) == ("success", 2)
    gc.collect()
    assert running() is None  # nothing holds a finished job's units and results (the daemon's memory)
    out = pfs.inspect_commit("wc", job.output_commit)
    assert out.finished is not None and any(p["commit"] == cid for p in out.provenance)
    assert s.flush([("data", cid)], timeout=5) == ([job.output_commit], [])

    # A second commit that changes one file: one datum runs, the other is skipped.
    commit(pfs, {"b": b"bbbb"})
    s.tick()
    second = s.store.latest_job("wc")
    assert second.id != job.id and (second.total, second.skipped) == (2, 1)
    s.close()


def test_create_time_notes_follow_the_runners_capabilities(pfs: PFS, tmp_path: Path) -> None:
    caps = Capabilities(runner="docker", cpu_memory_limits=True, lazy_inputs=True, port_mapping=True)
    s = Scheduler(pfs, str(tmp_path / "home"), runner=RecordingRunner(caps=caps), max_workers=4)
    (row,) = s.create_pipelines(json.dumps(SPEC))
    assert {n["path"] for n in row.notes} & {"transform.image", "resource_limits", "input.pfs.lazy"} == set()
    s.close()


def test_a_scheduler_without_a_runner_queues_and_waits(pfs: PFS, tmp_path: Path) -> None:
    s = Scheduler(pfs, str(tmp_path / "home"), max_workers=2)
    assert s.runner.name == "none"
    s.create_pipelines(json.dumps(SPEC | {"transform": {"cmd": ["true"]}}))
    commit(pfs, {"a": b"x"})
    s.tick()
    job = s.store.latest_job("wc")
    assert job is not None and job.state == "running" and s.queue.take("wc", "w", 0) is not None
    s.stop_pipeline("wc")
    s.close()


def test_a_runner_says_why_a_field_is_inert(pfs: PFS, tmp_path: Path) -> None:
    caps = Capabilities(cpu_memory_why="no memory controller", lazy_inputs_why="no FUSE on this machine (no /dev/fuse)")
    s = Scheduler(pfs, str(tmp_path / "home"), runner=RecordingRunner(caps=caps), max_workers=4)
    (row,) = s.create_pipelines(json.dumps(SPEC))
    reasons = {n["path"]: n["reason"] for n in row.notes}
    assert reasons["resource_limits"] == "the local runner cannot cap cpu or memory here: no memory controller"
    assert reasons["input.pfs.lazy"].startswith("no FUSE on this machine (no /dev/fuse): inputs are copied")
    s.close()


def test_runner_trouble_shows_on_the_pipeline_and_its_waiting_job(pfs: PFS, tmp_path: Path) -> None:
    """What no worker can report (its pod cannot even start) reaches list-pipeline, the job's
    reason and the logs, and goes away once the runner says the workers run again."""
    from mountd.pps_api import job_model

    s = Scheduler(pfs, str(tmp_path / "home"), runner=RecordingRunner(), max_workers=4)
    s.create_pipelines(json.dumps(SPEC))
    commit(pfs, {"a": b"aaa"})
    s.tick()
    job = s.store.latest_job("wc")
    assert job is not None and job.state == "running"
    why = "image 'busybox' cannot be pulled: ErrImagePull; push it to a registry the cluster can reach"
    s.worker_trouble("wc", why)
    s.tick()
    row = s.store.find_pipeline("wc")
    assert (row.state, row.reason) == ("crashing", why)
    assert job_model(s.store.get_job(job.id), s.trouble_of("wc")).reason == f"waiting for workers: {why}"
    s.worker_trouble("wc", why)  # said again (every watch event): logged once
    s.worker_trouble("wc", "")
    s.tick()
    row = s.store.find_pipeline("wc")
    assert row.state == "running" and row.reason == ""
    assert job_model(s.store.get_job(job.id), s.trouble_of("wc")).reason == ""
    said = [line["message"] for line in s.logs.read(lambda: [job.id]) if line["message"].startswith("workers:")]
    assert said == [f"workers: {why}", "workers: running again"]
