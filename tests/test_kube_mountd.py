"""A real mountd (``--runner kubernetes``) against the FAKE Kubernetes API server
(tests/kubefake.py), with real shim processes standing in for the pods' sidecars: each
presents the credential it derives from the version key in the pod's Secret, as the
sidecar does (``PACHY_WORKER_KEY`` and ``PACHY_WORKER_ID``, as the pod's env gives them). Its user code runs here (the local executor), since no
kubelet runs the user container; podman's ``kube play`` runs the pods themselves
elsewhere (installers/).

What this proves beyond tests/test_kube_runner.py: the daemon's worker endpoints accept
the derived credentials, a job completes through them, a restarted mountd adopts the
Deployment (nothing made again) and still accepts the same workers, and the watch's
reasons reach `inspect-pipeline` through the API.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mountd.server import socket_path
from tests.conftest import Daemon, wait_for
from tests.kubefake import FakeKubeAPI, pod_status, waiting_status
from tests.ppshelp import commit_files, flush_ok, outputs

NS = "pachy-test"
ROOT = str(Path(__file__).resolve().parent.parent)
SPEC = {
    "pipeline": {"name": "copy"},
    "transform": {"image": "example/copy:1", "cmd": ["sh"], "stdin": ["cp /pfs/data/* /pfs/out/"]},
    "input": {"pfs": {"repo": "data", "glob": "/*"}},
    "parallelism_spec": {"constant": 1},
}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)))
        monkeypatch.setenv("PACHY_KUBE_IMAGE", "pachy:test")
        for name in ("PACHY_KUBE_NAMESPACE", "PACHY_KUBE_LAZY", "PACHY_KUBE_PULL_SECRET", "PACHY_RUNNER"):
            monkeypatch.delenv(name, raising=False)
        yield api


def sidecar(tmp_path: Path, home: Path, fake: FakeKubeAPI, pod: str, version: int = 1) -> subprocess.Popen:
    """What the pod's shim container runs, here: ``python -m shim`` with the pod's name and the
    key from the pod's Secret in its environment, as the pod gives them (the local executor: no
    kubelet runs the user container)."""
    secret = fake.get("secrets", NS, f"pipeline-copy-v{version}")
    assert secret is not None
    log = open(tmp_path / f"{pod}.log", "ab")  # noqa: SIM115 - the child keeps it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACHY_")} | {
        "PYTHONPATH": ROOT, "PACHY_WORKER_ID": pod, "PACHY_WORKER_KEY": base64.b64decode(secret["data"]["key"]).decode()}
    try:
        return subprocess.Popen([sys.executable, "-m", "shim", "--pipeline", "copy", "--address",
                                 f"unix:{socket_path(str(home))}",
                                 "--scratch", str(tmp_path / "scratch" / pod), "--fast-scratch", "none"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    finally:
        log.close()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_a_job_through_derived_credentials_and_a_restart(fake: FakeKubeAPI, tmp_path: Path,
                                                          start_daemon: Callable[..., Daemon]) -> None:
    home = tmp_path / "home"
    d = start_daemon(home, "--runner", "kubernetes")
    c = d.client
    c.create_repo("data")
    commit_files(c, "data", {"apple": "1\n", "banana": "2\n"})
    (created,) = c.create_pipeline(SPEC)
    assert {n["path"] for n in created.notes} & {"transform.image"} == set()
    wait_for(lambda: fake.get("deployments", NS, "pipeline-copy-v1"), 30, "the Deployment")
    fake.run_controllers()
    (pod,) = [p["metadata"]["name"] for p in fake.list("pods", NS, "pachy.pipeline=copy")]

    shim = sidecar(tmp_path, home, fake, pod)
    try:
        first = commit_files(c, "data", {"cherry": "3\n"})
        flush_ok(c, "data", first)
        assert outputs(c, "copy") == {"apple": b"1\n", "banana": b"2\n", "cherry": b"3\n"}
    finally:
        stop(shim)

    # The kubelet says the image cannot be pulled: the pipeline says so.
    p = fake.get("pods", NS, pod)
    fake.set_status("pods", NS, pod, waiting_status(p, "user", "ImagePullBackOff", "pull access denied"))
    wait_for(lambda: c.inspect_pipeline("copy").state == "crashing", 30, "the pipeline to show crashing")
    assert c.inspect_pipeline("copy").reason.startswith("image 'example/copy:1' cannot be pulled (ImagePullBackOff)")
    fake.set_status("pods", NS, pod, pod_status(p))
    wait_for(lambda: c.inspect_pipeline("copy").state == "running", 30, "the pipeline to run again")

    # mountd restarts: the Deployment is adopted, the same worker's credential still holds.
    posts, puts = fake.count("POST", "/"), fake.count("PUT", "/")
    assert d.stop() == 0
    assert fake.get("deployments", NS, "pipeline-copy-v1") is not None  # close() left the workers
    again = start_daemon(home, "--runner", "kubernetes")
    shim = sidecar(tmp_path, home, fake, pod)
    try:
        second = commit_files(again.client, "data", {"date": "4\n"})
        flush_ok(again.client, "data", second)
        assert outputs(again.client, "copy")["date"] == b"4\n"
    finally:
        stop(shim)
    assert (fake.count("POST", "/"), fake.count("PUT", "/")) == (posts, puts)

    again.client.delete_pipeline("copy")
    wait_for(lambda: fake.list("deployments", NS) == [] and fake.list("secrets", NS) == [], 30, "cleanup")
