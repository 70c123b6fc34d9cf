"""Choosing the runner: AutoRunner's routing, build_runner's choices, mountd's --runner."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pfsfuse.errors import InvalidArgument, PfsError
from pps.runners.auto import AutoRunner, build_runner
from pps.runners.base import NullRunner, Runner, WorkerSpec
from pps.runners.local import LocalRunner
from pps.spec import Capabilities
from tests.conftest import wait_for

ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class Recording:
    """A runner that starts nothing and records what it was asked (the routing is under test)."""

    name: str
    images: bool  # owns specs naming an image; else owns everything
    workers: dict[str, int] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)

    def capabilities(self, spec: WorkerSpec) -> Capabilities:
        return Capabilities(runner="docker" if self.images else "local", port_mapping=self.images)

    def owns(self, spec: WorkerSpec) -> bool:
        return bool(spec.image) or not self.images

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        self.calls.append(("ensure", pipeline, workers))
        had = self.workers.get(pipeline, 0)
        self.workers[pipeline] = workers
        return [f"{self.name}-{pipeline}-{i}" for i in range(workers, had)]

    def stop(self, pipeline: str, timeout: float = 5.0) -> None:
        self.calls.append(("stop", pipeline))
        self.workers.pop(pipeline, None)

    def cancel(self, pipeline: str, worker_id: str) -> bool:
        self.calls.append(("cancel", pipeline, worker_id))
        return pipeline in self.workers

    def running(self, pipeline: str) -> int:
        return self.workers.get(pipeline, 0)

    def authenticate(self, credential: str) -> tuple[str, str] | None:
        return (credential.split(":")[1], "w") if credential.startswith(self.name + ":") else None

    def close(self, timeout: float = 5.0) -> None:
        self.calls.append(("close",))


def test_auto_routes_each_pipeline_to_the_first_runner_that_owns_it() -> None:
    docker, local = Recording("docker", images=True), Recording("local", images=False)
    auto = AutoRunner([docker, local])
    assert isinstance(auto, Runner)
    boxed, plain = WorkerSpec("boxed", image="busybox"), WorkerSpec("plain")
    assert auto.capabilities(boxed).runner == "docker" and auto.capabilities(plain).runner == "local"
    assert auto.ensure("boxed", boxed, 2) == [] and auto.ensure("plain", plain, 1) == []
    assert docker.workers == {"boxed": 2} and local.workers == {"plain": 1}
    assert auto.running("boxed") == 2 and auto.running("plain") == 1 and auto.running("other") == 0
    assert auto.authenticate("docker:boxed") == ("boxed", "w") and auto.authenticate("local:plain") == ("plain", "w")
    assert auto.authenticate("nobody") is None
    assert auto.cancel("plain", "w1") and ("cancel", "plain", "w1") in local.calls
    assert not auto.cancel("never-seen", "w")
    auto.stop("plain")
    assert local.workers == {} and ("stop", "plain") not in docker.calls
    auto.close()
    assert ("close",) in docker.calls and ("close",) in local.calls


def test_auto_stops_a_pipeline_on_its_old_runner_when_its_spec_moves() -> None:
    docker, local = Recording("docker", images=True), Recording("local", images=False)
    auto = AutoRunner([docker, local])
    auto.ensure("p", WorkerSpec("p"), 2)
    # update-pipeline added an image: the local workers go, their ids come back (tasks requeued)
    stopped = auto.ensure("p", WorkerSpec("p", version=2, image="busybox"), 1)
    assert stopped == ["local-p-0", "local-p-1"]
    assert local.workers == {} and docker.workers == {"p": 1}
    auto.stop("unknown")  # never ensured: asked of every runner
    assert ("stop", "unknown") in docker.calls and ("stop", "unknown") in local.calls


def test_build_runner_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address, home = f"unix:{tmp_path}/none.sock", str(tmp_path / "home")
    assert isinstance(build_runner("none", address, home), NullRunner)
    local = build_runner("local", address, home)
    assert isinstance(local, LocalRunner)
    local.close()
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config there
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PfsError, match="the kubernetes runner cannot start: no cluster configured .*KUBECONFIG"):
        build_runner("kubernetes", address, home)
    monkeypatch.setitem(sys.modules, "kube.runner", None)  # a build without the kubernetes runner
    with pytest.raises(PfsError, match="kubernetes runner is not available in this build"):
        build_runner("kubernetes", address, home)
    with pytest.raises(InvalidArgument, match="unknown runner 'mesos'"):
        build_runner("mesos", address, home)
    monkeypatch.setitem(sys.modules, "pps.runners.docker", None)  # a build without the docker runner
    with pytest.raises(PfsError, match="docker runner is not available"):
        build_runner("docker", address, home)
    fallback = build_runner("auto", address, home)  # auto without Docker: everything runs here
    assert isinstance(fallback, LocalRunner)
    fallback.close()


def test_mountd_refuses_a_runner_it_cannot_use(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "pachy").mkdir(parents=True)
    (cfg / "pachy" / "config.toml").write_text('runner = "yarn"\n')
    for env, args, code, expected in (
        ({}, ["--runner", "mesos"], 2, "argument --runner: invalid choice: 'mesos'"),
        ({"PACHY_RUNNER": "mesos"}, [], 2, "error: unknown runner 'mesos' in PACHY_RUNNER (expected one of auto, "
                                           "local, docker, kubernetes, none); set it to one of them or unset it"),
        ({"XDG_CONFIG_HOME": str(cfg)}, [], 2, f"error: unknown runner 'yarn' in 'runner' of {cfg}/pachy/config.toml"),
        ({}, ["--runner", "bogus"], 2, "argument --runner: invalid choice: 'bogus'"),
        ({}, ["--runner", "kubernetes"], 1, "error: the kubernetes runner cannot start: no cluster configured (no "
                                            f"kubeconfig at {tmp_path}/.kube/config, KUBECONFIG unset, and not in a pod)"),
    ):
        proc = subprocess.run([sys.executable, "-m", "mountd", "--home", str(tmp_path / "h"), *args],
                              capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT, "HOME": str(tmp_path), **env})
        assert proc.returncode == code and expected in proc.stderr, (proc.returncode, proc.stderr)
        assert not (tmp_path / "h" / "mountd.sock").exists()


def test_runner_choice_flag_then_env_then_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mountd.server import runner_choice

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert runner_choice(None) == "auto"
    (tmp_path / "cfg" / "pachy").mkdir(parents=True)
    (tmp_path / "cfg" / "pachy" / "config.toml").write_text('runner = "local"\n')
    assert runner_choice(None) == "local"
    monkeypatch.setenv("PACHY_RUNNER", "none")
    assert runner_choice(None) == "none"
    assert runner_choice("docker") == "docker"
    monkeypatch.setenv("PACHY_RUNNER", "bogus")
    with pytest.raises(InvalidArgument, match="unknown runner 'bogus' in PACHY_RUNNER"):
        runner_choice(None)
    assert runner_choice("local") == "local"  # the flag wins over a broken environment


def test_a_daemon_with_runner_none_plans_jobs_and_starts_no_worker(tmp_path: Path, start_daemon) -> None:
    d = start_daemon(tmp_path / "home", "--runner", "none")
    assert "runner none" in d.log.read_text()
    c = d.client
    c.create_repo("data")
    with c.commit("data") as commit:
        c.put_file("data", commit.id, "a", b"x\n")
    c.create_pipeline({"pipeline": {"name": "cp"}, "transform": {"cmd": ["cp", "-r", "/pfs/data", "/pfs/out"]},
                              "input": {"pfs": {"repo": "data", "glob": "/*"}}})
    job = wait_for(lambda: next(iter(c.list_job("cp")), None), 20, "a job")
    assert job.state == "running"
    assert c.inspect_pipeline("cp").workers == 0  # queued: nothing will run it
