"""The Kubernetes runner's worker pod run for real: ``mountd --runner kubernetes`` makes its
Deployment in the FAKE API server (tests/kubefake.py), and podman's Kubernetes engine
(``podman kube play``) runs that Deployment: the init container copies the agent, the user
container (an image with nothing of pachy) runs units through it, the shim sidecar
authenticates with the credential derived from the Secret's key. No kubelet runs here;
podman stands in for one.

Adapted for podman 4.3, which differs from a kubelet in three ways said where they are met:
a Secret is a podman secret holding its data map as JSON; init containers would be restarted
under the Deployment's ``restartPolicy: Always`` (so: OnFailure here); and the pod runs on the
host's network to reach this mountd (``pod_spec``). The shim comes from this checkout (a
``pod_patch`` mounts it), not from the image, which holds the shim of when it was built.

Needs podman and the pachy image (installers/build-image.sh); PACHY_TEST_NO_PODMAN=1 leaves
it out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from pachctl.client import Client
from pfsfuse import __version__
from tests.conftest import Daemon, free_port, wait_for
from tests.images import REVISION, busybox_rootfs
from tests.kubefake import FakeKubeAPI
from tests.ppshelp import commit_files, flush_ok, outputs

ROOT = str(Path(__file__).resolve().parent.parent)
PACHY_IMAGE = f"localhost/pachy:{__version__}"
NAME = "pipeline-count-v1"
# tests/images.py's busybox rootfs (with the user 'fruit'), under a name of this test's own
USER_IMAGE = f"localhost/pachy-test/kube-busybox:{REVISION}"

pytestmark = pytest.mark.skipif(os.environ.get("PACHY_TEST_NO_PODMAN") == "1", reason="PACHY_TEST_NO_PODMAN=1")


def podman(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, check=check, timeout=timeout, **kw)


@pytest.fixture
def engine() -> Iterator[None]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: installers/install.sh --test installs it (or PACHY_TEST_NO_PODMAN=1)")
    if podman("image", "exists", PACHY_IMAGE, check=False).returncode != 0:
        pytest.fail(f"no image {PACHY_IMAGE}: build it with installers/build-image.sh (or PACHY_TEST_NO_PODMAN=1)")
    if podman("image", "exists", USER_IMAGE, check=False).returncode != 0:
        podman("import", "-", USER_IMAGE, input=busybox_rootfs())
    yield


def test_the_runners_pod_runs_under_podman(engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           start_daemon: Callable[..., Daemon]) -> None:
    port = free_port()
    with FakeKubeAPI() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", namespace="default")))
        monkeypatch.setenv("PACHY_KUBE_IMAGE", PACHY_IMAGE)
        monkeypatch.setenv("PACHY_KUBE_ADDRESS", f"127.0.0.1:{port}")
        monkeypatch.setenv("PACHY_TOKEN", "podman-test-token")
        for name in ("PACHY_KUBE_NAMESPACE", "PACHY_KUBE_LAZY", "PACHY_KUBE_PULL_SECRET", "PACHY_RUNNER"):
            monkeypatch.delenv(name, raising=False)
        client = Client(f"127.0.0.1:{port}", token="podman-test-token", autostart=False, timeout=60)
        d = start_daemon(tmp_path / "home", "--listen", f"127.0.0.1:{port}", "--runner", "kubernetes", client=client)
        c = d.client
        c.create_repo("data")
        first = commit_files(c, "data", {"apple": "1\n", "banana": "22\n"})
        c.create_pipeline({
            "pipeline": {"name": "count"},
            "transform": {"image": USER_IMAGE, "cmd": ["sh"], "user": "fruit", "env": {"GREETING": "hi $(X)"},
                          "stdin": ["for f in /pfs/data/*; do b=$(basename $f); wc -c < $f > /pfs/out/$b; "
                                    "echo \"$(id -un) $(pwd) $GREETING\" > /pfs/out/$b.who; done"]},
            "input": {"pfs": {"repo": "data", "glob": "/*"}},
            "pod_spec": json.dumps({"hostNetwork": True}),  # to reach this mountd on 127.0.0.1
            "pod_patch": json.dumps([  # this checkout's shim, not the image's
                {"op": "add", "path": "/volumes/-", "value": {"name": "src", "hostPath": {"path": ROOT}}},
                {"op": "add", "path": "/containers/1/volumeMounts/-",
                 "value": {"name": "src", "mountPath": "/src", "readOnly": True}},
                {"op": "add", "path": "/containers/1/env/-", "value": {"name": "PYTHONPATH", "value": "/src"}}]),
        })
        deployment = wait_for(lambda: fake.get("deployments", "default", NAME), 30, "the Deployment")
        secret = fake.get("secrets", "default", NAME)
        template = deployment["spec"]["template"]["spec"]
        template["restartPolicy"] = "OnFailure"  # podman 4.3 would restart the init container too
        play = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
                "spec": {k: deployment["spec"][k] for k in ("replicas", "selector", "template")}}
        (tmp_path / "secret.json").write_text(json.dumps(secret["data"]))  # podman's form of a Secret
        (tmp_path / "play.yaml").write_text(yaml.safe_dump(play))
        podman("secret", "create", NAME, str(tmp_path / "secret.json"))
        try:
            started = time.monotonic()
            podman("kube", "play", str(tmp_path / "play.yaml"))
            played = time.monotonic() - started
            flush_ok(c, "data", first)
            done = time.monotonic() - started
            assert outputs(c, "count") == {"apple": b"2\n", "banana": b"3\n", "apple.who": b"fruit / hi $(X)\n",
                                           "banana.who": b"fruit / hi $(X)\n"}
            print(f"podman kube play: {played:.2f} s; the first job's output {done:.2f} s after it began")
            second = commit_files(c, "data", {"cherry": "333\n"})
            flush_ok(c, "data", second)
            assert outputs(c, "count")["cherry"] == b"4\n"
        finally:
            podman("kube", "down", str(tmp_path / "play.yaml"), check=False)
            podman("secret", "rm", NAME, check=False)
