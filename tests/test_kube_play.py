"""The Kubernetes manifests executed for real by ``podman kube play`` (tests/podman.py says what is
converted for podman 4.3 and why). The pachy image is built once per session
(installers/build-image.sh, cached by a hash of the sources).

- ``test_mountd_in_a_pod_answers_pachctl``: the deploy objects (``kube.deploy.manifests``) run
  mountd in a pod of the pachy image, its metadata on the claim's volume, its token from the
  ``pachy-token`` Secret, its port published as the Service would; ``pachctl`` on the host, with
  ADDRESS and PACHY_TOKEN, creates a repo, puts a file, lists and reads it back through that port. A wrong token is refused. With
  kube/deploy.py's objects mountd runs ``--runner kubernetes`` against the FAKE API
  (tests/kubefake.py, served on 0.0.0.0 and reached through podman's kube network gateway; the
  kubeconfig is a hostPath file).
- ``test_worker_pod_cold_start_and_its_shim_dials_mountd``: a worker pod (kube.pods' builder)
  comes up and its shim reaches mountd-in-a-pod within 3 s of ``podman kube play`` starting
  (measured ~0.9 s here); mountd refuses it, since no runner of its made it.
- ``test_fruit_stand_through_mountd_in_a_pod_and_worker_pods``: the whole chain, mountd in a pod ->
  its Kubernetes runner writes the Deployments into the fake API -> podman plays them -> the
  shims authenticate and run the fruit stand in the busybox image; totals against awk's.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_for
from tests.podman import (
    ROOT,
    Kube,
    ensure_busybox_image,
    ensure_pachy_image,
    kube_gateway,
    require_podman,
)

pytestmark = [pytest.mark.slow, pytest.mark.podman]


@pytest.fixture(scope="session")
def pachy_image() -> str:
    require_podman()
    ensure_busybox_image()
    return ensure_pachy_image()


@pytest.fixture
def kube(tmp_path: Path, pachy_image: str) -> Iterator[Kube]:
    k = Kube(tmp_path / "kube")
    k.workdir.mkdir()
    try:
        yield k
    finally:
        print(k.logs())  # shown by pytest when the test failed
        k.close()


def deploy_objects(image: str, token: str) -> list[dict[str, Any]]:
    """``pachctl deploy local``'s objects, from kube.deploy's builder."""
    from kube.deploy import DeployOptions, manifests

    return manifests(DeployOptions(image=image, token=token))


def with_kubeconfig(objects: list[dict[str, Any]], kubeconfig: Path, worker_address: str) -> list[dict[str, Any]]:
    """mountd's runner pointed at a kubeconfig file (the fake API's, reached through podman's
    gateway): a hostPath volume holding it, and KUBECONFIG; worker sidecars told to dial mountd
    at ``worker_address`` (no cluster DNS under podman)."""
    for obj in objects:
        if obj["kind"] == "StatefulSet":
            spec = obj["spec"]["template"]["spec"]
            spec["volumes"].append({"name": "kubeconfig", "hostPath": {"path": str(kubeconfig.parent)}})
            for c in spec["containers"]:
                c["env"] = [e for e in c.get("env", []) if e["name"] != "PACHY_KUBE_ADDRESS"]
                c["env"].append({"name": "PACHY_KUBE_ADDRESS", "value": worker_address})
                c.setdefault("env", []).append({"name": "KUBECONFIG", "value": "/etc/pachy-kube/config"})
                c["volumeMounts"].append({"name": "kubeconfig", "mountPath": "/etc/pachy-kube", "readOnly": True})
    return objects


def pachctl(address: str, token: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "ADDRESS": address, "PACHY_TOKEN": token, "PACHY_NO_AUTOSTART": "1",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pachctl.cli.main", *args], env=env, input=input,
                          capture_output=True, timeout=60)


@pytest.fixture
def mountd_pod(kube: Kube, pachy_image: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from _mountd_pod(kube, pachy_image, tmp_path, None)


def _mountd_pod(kube: Kube, pachy_image: str, tmp_path: Path, hand: list | None) -> Iterator[tuple[str, str]]:
    """mountd from the deploy objects in a pod; (ADDRESS, token) for pachctl on the host."""
    from tests.kubefake import FakeKubeAPI

    token = secrets.token_urlsafe(18)
    port = free_port()
    fake = FakeKubeAPI()
    fake.start(host="0.0.0.0")  # the pod reaches the host through podman's gateway
    try:
        server_port = fake.url.rsplit(":", 1)[1]
        cfg = tmp_path / "kubeconfig" / "config"
        cfg.parent.mkdir()
        cfg.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://{kube_gateway()}:{server_port}"}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        }))
        conv = kube.play(with_kubeconfig(deploy_objects(pachy_image, token), cfg, f"{kube_gateway()}:{port}"),
                         host_ports={"pachd": port})
        if hand is not None:
            hand.append(fake)
        (pod,) = [p for p in conv.pods if p.endswith("pachd-0")]
        kube.wait_running(f"{pod}-pachd")
        address = f"127.0.0.1:{port}"
        wait_for(lambda: pachctl(address, token, "list-repo").returncode == 0 or
                 kube.inspect(f"{pod}-pachd")["State"]["Status"] != "running", 60, "mountd in the pod to answer")
        yield address, token
    finally:
        print(kube.logs())  # shown by pytest when the test failed
        kube.close()  # the pods first: mountd's runner would complain of the fake API gone
        fake.close()


def test_mountd_in_a_pod_answers_pachctl(mountd_pod: tuple[str, str]) -> None:
    address, token = mountd_pod
    assert pachctl(address, token, "list-repo").returncode == 0
    made = pachctl(address, token, "create-repo", "images")
    assert made.returncode == 0, made.stderr
    put = pachctl(address, token, "put-file", "images", "master", "/hello.txt", "-c", input=b"hello from a pod\n")
    assert put.returncode == 0, put.stderr
    listed = pachctl(address, token, "list-file", "images", "master")
    assert listed.returncode == 0 and b"hello.txt" in listed.stdout, listed.stdout + listed.stderr
    got = pachctl(address, token, "get-file", "images", "master", "/hello.txt")
    assert got.stdout == b"hello from a pod\n", got.stderr
    refused = pachctl(address, "not-the-token", "list-repo")
    assert refused.returncode != 0 and b"error" in refused.stderr.lower()


def worker_objects(pachy_image: str, user_image: str, address: str, token: str) -> list[dict[str, Any]]:
    """A pipeline version's worker objects, from kube.pods' builder (init ``init`` copies the agent
    into ``pachy-bin``, ``user`` runs it, ``shim`` dials mountd)."""
    from kube import pods
    from pps.runners.base import WorkerSpec

    spec = WorkerSpec(pipeline="fruit", image=user_image, cmd=("sh",))
    settings = pods.PodSettings("default", pachy_image, address, "pachy-test")
    return pods.worker_objects(spec, 1, "0" * 64, settings, token=token)


COLD_START = 3.0  # seconds: a worker pod's init copy + shim ready (issue 11's figure)


def test_worker_pod_cold_start_and_its_shim_dials_mountd(kube: Kube, mountd_pod: tuple[str, str],
                                                         pachy_image: str) -> None:
    """A worker pod (init copying the agent, the user container running it from the busybox
    image, the shim sidecar) comes up and its shim reaches mountd through podman's gateway and the
    published port, within COLD_START of `podman kube play` starting. No runner in this mountd
    vouches for its credential, so mountd answers 401 and the shim says it was refused: the
    request went all the way."""
    import time

    address, token = mountd_pod
    port = address.rsplit(":", 1)[1]
    objs = worker_objects(pachy_image, "pachy-test/busybox:1", f"{kube_gateway()}:{port}", token)
    t0 = time.time()
    conv = kube.play(objs)
    played = time.time()
    (pod,) = conv.pods

    def serving() -> float | None:
        return next((t for t, line in kube.log_lines(f"{pod}-shim") if "serving pipeline fruit" in line), None)

    ready = wait_for(serving, 30, "the shim to start serving")
    refused = wait_for(lambda: any("refused this worker" in line for _, line in kube.log_lines(f"{pod}-shim")),
                       30, "mountd to answer the shim")
    agent = kube.inspect(f"{pod}-user")
    print(f"worker pod cold start: {ready - t0:.2f} s from podman kube play starting "
          f"({played - t0:.2f} s in kube play: pod, init copy, containers started; shim ready "
          f"{ready - played:.2f} s later); agent {agent['State']['Status']}")
    assert refused
    assert ready - t0 <= COLD_START, f"cold start {ready - t0:.2f} s > {COLD_START} s"


def _plain(obj: dict[str, Any]) -> dict[str, Any]:
    """An object read back from the API as it was written (no uid, status, ...)."""
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "labels", "annotations")}
    return {k: v for k, v in obj.items() if k not in ("status", "metadata")} | {"metadata": meta}


def test_fruit_stand_through_mountd_in_a_pod_and_worker_pods(kube: Kube, pachy_image: str, tmp_path: Path) -> None:
    """The whole chain: mountd in a pod (the deploy objects) runs ``--runner kubernetes`` against the
    FAKE API; creating the fruit stand makes its runner write each pipeline's Secret and Deployment
    there; the test reads them back and plays them in podman (standing in for the kubelet); the shim
    sidecars authenticate to mountd with the credential derived from the Secret's key and run the
    units in the busybox image; the totals are awk's."""
    import random

    hand: list = []
    gen = _mountd_pod(kube, pachy_image, tmp_path, hand)
    address, token = next(gen)
    try:
        rng = random.Random(11)
        sales = b"".join(f"{rng.choice(('apple', 'banana', 'orange'))}\t{rng.randint(1, 99)}\n".encode()
                         for _ in range(200))
        (tmp_path / "sales").write_bytes(sales)
        assert pachctl(address, token, "create-repo", "data").returncode == 0
        put = pachctl(address, token, "put-file", "data", "master", "sales", "-c", "-f", str(tmp_path / "sales"))
        assert put.returncode == 0, put.stderr
        specs, text, pos = [], (ROOT / "examples" / "fruit_stand" / "pipeline.json").read_text(), 0
        dec = json.JSONDecoder()
        while pos < len(text.rstrip()):
            obj, pos = dec.raw_decode(text, pos)
            obj["transform"]["image"] = "pachy-test/busybox:1"
            specs.append(obj)
            while pos < len(text) and text[pos].isspace():
                pos += 1
        (tmp_path / "fruit.json").write_text("\n".join(json.dumps(s) for s in specs))
        made = pachctl(address, token, "create-pipeline", "-f", str(tmp_path / "fruit.json"))
        assert made.returncode == 0, made.stderr
        fake = hand[0]
        names = {"pipeline-filter-v1", "pipeline-sum-v1"}
        wait_for(lambda: names <= {d["metadata"]["name"] for d in fake.list("deployments", "default")}, 60,
                 "the runner's Deployments in the fake API")
        objs = [_plain(o) for o in fake.list("secrets", "default") + fake.list("deployments", "default")
                if o["metadata"]["name"] in names]
        kube.play(objs)
        want = subprocess.run(["awk", "-F", "\t", '{s[$1] += $2} END {for (f in s) print f "\\t" s[f]}'],
                              input=sales, capture_output=True, check=True).stdout.decode()
        totals = dict(line.split("\t") for line in want.splitlines())

        def done() -> bool:
            got = {f: pachctl(address, token, "get-file", "sum", "master", f).stdout for f in totals}
            return all(got[f] == f"{n}\n".encode() for f, n in totals.items())

        wait_for(done, 120, f"the sum pipeline's totals {totals}")
    finally:
        gen.close()
