"""The Kubernetes runner's reconcile loop and pod watch, against the FAKE API server
(tests/kubefake.py: no Kubernetes runs here) through the real ``kubernetes`` client over HTTP.

What this proves: the objects the runner makes (valid, named, labelled), scaling, cleanup
after delete and update, adoption by a restarted mountd (nothing made again), the watch's
reports (a container that ended, an image that cannot be pulled, a pod no node takes, an
OOM kill, RBAC refusals) reaching the scheduler as a pipeline's 'crashing' state with the
reason, and the derived worker credentials. What it cannot: that a real kubelet runs the
pods (podman's `kube play` does that part: installers/, helper C's tests).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kube import credentials
from kube.pods import object_name, secret_name
from kube.runner import KubernetesRunner
from kube.validate import validate
from pfsfuse.errors import PfsError
from pfsfuse.objstore import LocalStore
from pfsfuse.pfs import PFS
from pps.runners.base import Port, Resources, SecretRef, WorkerSpec
from pps.scheduler import Scheduler
from tests.kubefake import (
    FakeKubeAPI,
    pod_status,
    terminated_status,
    unschedulable_status,
    waiting_status,
)

NS = "pachy-test"
SPEC = WorkerSpec("edges", 1, image="example/edges:1", cmd=("sh",), limits=Resources(memory=64 << 20))


class Heard:
    """What the runner told (on_exit, on_trouble, and every pod change), to wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.exits: list[tuple[str, str, int]] = []
        self.troubles: list[tuple[str, str]] = []

    def on_exit(self, pipeline: str, worker: str, code: int) -> None:
        with self.cond:
            self.exits.append((pipeline, worker, code))
            self.cond.notify_all()

    def on_trouble(self, pipeline: str, message: str) -> None:
        with self.cond:
            self.troubles.append((pipeline, message))
            self.cond.notify_all()

    def poke(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def wait(self, what: Callable[[], object], timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(what, timeout), "not heard within the deadline"

    def trouble(self, pipeline: str = "edges") -> str | None:
        said = [m for p, m in self.troubles if p == pipeline]
        return said[-1] if said else None


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)))
        for name in ("PACHY_KUBE_NAMESPACE", "PACHY_KUBE_LAZY", "PACHY_KUBE_PULL_SECRET", "PACHY_MAX_WORKERS"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("PACHY_KUBE_IMAGE", "pachy:test")
        monkeypatch.setenv("PACHY_KUBE_ADDRESS", f"pachd.{NS}.svc.cluster.local:650")
        yield api


def start(home: Path, heard: Heard, on_trouble: Callable[[str, str], None] | None = None) -> KubernetesRunner:
    runner = KubernetesRunner.from_environment("0.0.0.0:650", str(home), token="t0ken", on_exit=heard.on_exit,
                                               on_trouble=on_trouble or heard.on_trouble)
    change = runner.watch.on_change

    def changed(pipeline: str) -> None:
        change(pipeline)
        heard.poke()

    runner.watch.on_change = changed
    return runner


@pytest.fixture
def runner(fake: FakeKubeAPI, tmp_path: Path) -> Iterator[tuple[KubernetesRunner, Heard]]:
    heard = Heard()
    r = start(tmp_path / "home", heard)
    yield r, heard
    r.close()


def pods(fake: FakeKubeAPI, pipeline: str = "edges", version: int | None = None) -> list[dict]:
    sel = f"pachy.pipeline={pipeline}" + (f",pachy.version={version}" if version is not None else "")
    return fake.list("pods", NS, sel)


def test_create_scale_and_delete(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard]) -> None:
    r, heard = runner
    assert r.ensure("edges", SPEC, 2) == []
    name = object_name("edges", 1)
    secret, deployment = fake.get("secrets", NS, name), fake.get("deployments", NS, name)
    assert secret is not None and deployment is not None and fake.get("services", NS, name) is None
    made = [{k: v for k, v in o.items() if k != "status"} for o in (secret, deployment)]
    for o in made:
        for server_field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            o["metadata"].pop(server_field, None)
    assert validate(made) == []
    assert deployment["spec"]["replicas"] == 2 and deployment["metadata"]["labels"]["pachy.spec"] == SPEC.digest
    shim = deployment["spec"]["template"]["spec"]["containers"][1]
    assert shim["image"] == "pachy:test" and f"pachd.{NS}.svc.cluster.local:650" in shim["args"]
    r.ensure("edges", SPEC, 2)  # nothing changed: nothing asked of the API
    assert fake.count("POST", "/deployments") == 1 and fake.count("PATCH", "/deployments") == 0

    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 2)
    r.ensure("edges", SPEC, 3)  # parallelism 3
    assert fake.get("deployments", NS, name)["spec"]["replicas"] == 3
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 3)
    stopped = r.ensure("edges", SPEC, 1)  # shrinking: the pods marked to go are named (tasks requeued)
    assert len(stopped) == 2 and fake.get("deployments", NS, name)["spec"]["replicas"] == 1
    assert all(fake.get("pods", NS, p)["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
               == "-1000" for p in stopped)
    for p in stopped:  # the ReplicaSet removes the pods of lowest deletion cost (the fake's does not rank)
        fake.delete_object("pods", NS, p)
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 1)
    r.ensure("edges", SPEC, 0)  # standby / autoscaling: scaled to zero, the Deployment stays
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 0)
    assert fake.get("deployments", NS, name)["spec"]["replicas"] == 0
    assert heard.exits == []  # pods the runner removed are no news

    r.stop("edges")
    assert fake.list("deployments", NS) == [] and fake.list("secrets", NS) == [] and pods(fake) == []


def test_an_update_removes_the_old_versions_objects(fake: FakeKubeAPI,
                                                     runner: tuple[KubernetesRunner, Heard]) -> None:
    r, heard = runner
    svc = WorkerSpec("edges", 1, image="nginx", ports=(Port(80, 30080),),
                     long_running=True)
    r.ensure("edges", svc, 1)
    assert fake.get("services", NS, "pipeline-edges-v1")["spec"]["type"] == "NodePort"
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 1)
    old = [p["metadata"]["name"] for p in pods(fake)]
    v2 = WorkerSpec("edges", 2, image="example/edges:2")
    stopped = r.ensure("edges", v2, 1)
    assert stopped == old  # the old version's workers: their tasks go back to the queue
    names = {o["metadata"]["name"] for kind in ("deployments", "secrets", "services") for o in fake.list(kind, NS)}
    assert names == {"pipeline-edges-v2"}
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 1)
    assert heard.exits == []


def test_a_restarted_mountd_adopts_the_workers(fake: FakeKubeAPI, tmp_path: Path) -> None:
    heard = Heard()
    first = start(tmp_path / "home", heard)
    first.ensure("edges", SPEC, 2)
    fake.run_controllers()
    heard.wait(lambda: first.running("edges") == 2)
    uid = fake.get("deployments", NS, "pipeline-edges-v1")["metadata"]["uid"]
    first.close()  # leaves the workers running
    assert len(pods(fake)) == 2
    pod = pods(fake)[0]["metadata"]["name"]
    key = credentials.version_key(credentials.daemon_secret(str(tmp_path / "home")), "edges", 1)

    posts, puts = fake.count("POST", "/"), fake.count("PUT", "/")
    second = start(tmp_path / "home", Heard())
    try:
        assert second.running("edges") == 2  # known at once, before any ensure
        assert second.authenticate(credentials.worker_credential(key, "edges", pod)) == ("edges", pod)
        second.ensure("edges", SPEC, 2)
        assert (fake.count("POST", "/"), fake.count("PUT", "/")) == (posts, puts)  # nothing made again
        assert fake.get("deployments", NS, "pipeline-edges-v1")["metadata"]["uid"] == uid
    finally:
        second.close()


def test_worker_credentials(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard], tmp_path: Path) -> None:
    r, heard = runner
    r.ensure("edges", SPEC, 1)
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 1)
    pod = pods(fake)[0]["metadata"]["name"]
    stored = fake.get("secrets", NS, "pipeline-edges-v1")["data"]
    import base64

    key = base64.b64decode(stored["key"]).decode()
    assert base64.b64decode(stored["token"]).decode() == "t0ken"
    from shim.__main__ import derive_credential

    good = derive_credential(key, "edges", pod)  # what the shim sidecar presents
    assert r.authenticate(good) == ("edges", pod)
    assert r.authenticate(derive_credential(key, "other", pod)) is None  # another pipeline
    assert r.authenticate(good[:-1] + ("0" if good[-1] != "0" else "1")) is None
    assert r.authenticate("32 random bytes of a local worker") is None
    r.ensure("edges", WorkerSpec("edges", 2, image="example/edges:2"), 1)
    assert r.authenticate(good) is None  # an earlier version's worker
    fake.delete_object("pods", NS, pod)
    heard.wait(lambda: r.watch.dead(pod))


def test_the_watch_reports_exits_and_trouble(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard]) -> None:
    r, heard = runner
    r.ensure("edges", SPEC, 1)
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 1)
    pod = pods(fake)[0]
    name = pod["metadata"]["name"]

    fake.set_status("pods", NS, name, terminated_status(pod, "user", "Error", 1))
    heard.wait(lambda: ("edges", name, 1) in heard.exits)

    fake.set_status("pods", NS, name, waiting_status(pod, "user", "ImagePullBackOff",
                                                     'Back-off pulling image "example/edges:1"'))
    heard.wait(lambda: (heard.trouble() or "").startswith("image 'example/edges:1' cannot be pulled"))
    assert "push it to a registry the cluster can reach, or set transform.image_pull_secrets" in heard.trouble()
    fake.set_status("pods", NS, name, pod_status(pod))
    heard.wait(lambda: heard.trouble() == "")  # running again: cleared

    fake.set_status("pods", NS, name, unschedulable_status("0/3 nodes are available: 3 Insufficient memory."))
    heard.wait(lambda: (heard.trouble() or "").startswith(
        "workers are Pending: unschedulable: 0/3 nodes are available: 3 Insufficient memory."))

    fake.set_status("pods", NS, name, terminated_status(pod, "user", "OOMKilled", 137))
    heard.wait(lambda: ("edges", name, 137) in heard.exits and "OOMKilled" in (heard.trouble() or ""))
    assert "raise resource_limits.memory" in heard.trouble()

    fake.set_status("pods", NS, name, waiting_status(pod, "user", "CreateContainerConfigError",
                                                     'secret "pachy-secret-creds" not found'))
    heard.wait(lambda: "pachctl create-secret" in (heard.trouble() or ""))
    fake.set_status("pods", NS, name, waiting_status(pod, "shim", "CrashLoopBackOff", "back-off 10s"))
    heard.wait(lambda: "keeps crashing (CrashLoopBackOff" in (heard.trouble() or ""))
    fake.set_status("pods", NS, name, pod_status(pod))
    heard.wait(lambda: heard.trouble() == "")

    fake.delete_object("pods", NS, name)  # deleted by someone else: its task goes elsewhere
    heard.wait(lambda: ("edges", name, -1) in heard.exits)


def test_rbac_refusals_are_said_and_cleared(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard]) -> None:
    r, heard = runner
    fake.forbid("create", "deployments")
    assert r.ensure("edges", SPEC, 1) == []
    said = heard.trouble()
    assert said.startswith(f"RBAC forbids mountd to create deployments in namespace '{NS}'"), said
    assert "in the Role 'pachy'" in said
    fake.allow_all()
    r.ensure("edges", SPEC, 1)  # the next tick
    assert heard.trouble() == "" and fake.get("deployments", NS, "pipeline-edges-v1") is not None


def test_mountd_secrets_become_kubernetes_secrets(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard]) -> None:
    r, _heard = runner
    store = {"creds": {"password": "hunter2"}}
    r.use_secret_store(lambda name: dict(store[name]))
    spec = WorkerSpec("edges", 1, image="busybox", secrets=(SecretRef("creds", env_var="PASSWORD", key="password"),))
    r.ensure("edges", spec, 1)
    made = fake.get("secrets", NS, secret_name("creds"))
    assert made["data"] == {"password": "aHVudGVyMg=="}
    store["creds"] = {"password": "correct horse"}  # create-secret again: applied on the next tick
    r.ensure("edges", spec, 1)
    assert fake.get("secrets", NS, secret_name("creds"))["data"] == {"password": "Y29ycmVjdCBob3JzZQ=="}
    r.ensure("edges", spec, 1)
    assert fake.count("PUT", "/secrets/" + secret_name("creds")) == 1  # unchanged: not sent again


def test_bad_configuration_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    with pytest.raises(PfsError, match="no kubeconfig at .*/nowhere \\(KUBECONFIG\\)"):
        KubernetesRunner.from_environment("x:650", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG")
    with pytest.raises(PfsError, match="no cluster configured .*point KUBECONFIG at your cluster's kubeconfig"):
        KubernetesRunner.from_environment("x:650", str(tmp_path / "home"))
    with FakeKubeAPI() as api:  # a cluster that answers no more: its port closed
        cfg = api.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    with pytest.raises(PfsError, match="the Kubernetes API server does not answer .*kubectl get pods"):
        KubernetesRunner.from_environment("x:650", str(tmp_path / "home"))
    with FakeKubeAPI() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        api.forbid("list", "deployments")
        with pytest.raises(PfsError, match="RBAC forbids mountd to list deployments in namespace 'default'"):
            KubernetesRunner.from_environment("x:650", str(tmp_path / "home"))
        api.allow_all()
        api.forbid("list", "pods")  # the pod watch
        with pytest.raises(PfsError, match="RBAC forbids mountd to list pods in namespace 'default'"):
            KubernetesRunner.from_environment("x:650", str(tmp_path / "home"))
        api.allow_all()
        monkeypatch.setenv("PACHY_KUBE_LAZY", "yes")
        with pytest.raises(PfsError, match="PACHY_KUBE_LAZY='yes': expected 'privileged'"):
            KubernetesRunner.from_environment("x:650", str(tmp_path / "home"))


# -- through a real scheduler and store -------------------------------------------------

PIPELINE = {
    "pipeline": {"name": "edges"},
    "transform": {"image": "example/edges:1", "cmd": ["sh"], "stdin": ["cp -r /pfs/data /pfs/out/"]},
    "input": {"pfs": {"repo": "data", "glob": "/*"}},
    "parallelism_spec": {"constant": 2},
    "resource_limits": {"memory": "64Mi"},
}


def test_trouble_shows_in_list_pipeline(fake: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    pfs = PFS(str(home), LocalStore(str(home / "objects")))
    pfs.create_repo("data")
    info = pfs.start_commit("data", "master")
    with pfs.write_session("data", info.id) as ws:
        ws.put_bytes("a", b"apple\n", overwrite=True)
        ws.commit()
    pfs.finish_commit("data", info.id)
    s = Scheduler(pfs, str(home))
    heard = Heard()

    def trouble(pipeline: str, message: str) -> None:
        s.worker_trouble(pipeline, message)
        heard.on_trouble(pipeline, message)

    r = start(home, heard, on_trouble=trouble)
    s.runner = r  # as mountd does: the runner reports to the scheduler made before it
    try:
        s._use_runner()
        assert s.max_workers == 1000  # the cluster's budget, not this machine's
        (row,) = s.create_pipelines(json.dumps(PIPELINE))
        assert {n["path"] for n in row.notes} & {"transform.image", "resource_limits"} == set()
        s.tick()
        deployment = fake.get("deployments", NS, "pipeline-edges-v1")
        assert deployment["spec"]["replicas"] == 2
        fake.run_controllers()
        heard.wait(lambda: r.running("edges") == 2)
        pod = pods(fake)[0]
        fake.set_status("pods", NS, pod["metadata"]["name"],
                        waiting_status(pod, "user", "ErrImagePull", "pull access denied"))
        heard.wait(lambda: heard.trouble() is not None and "cannot be pulled" in heard.trouble())
        s.tick()
        row = s.store.find_pipeline("edges")
        assert row.state == "crashing" and row.reason.startswith("image 'example/edges:1' cannot be pulled"), row
        fake.set_status("pods", NS, pod["metadata"]["name"], pod_status(pod))
        heard.wait(lambda: heard.trouble() == "")
        s.tick()
        assert s.store.find_pipeline("edges").state != "crashing"

        fake.forbid("create", "deployments")  # RBAC: the Role lacks create
        update = {**PIPELINE, "parallelism_spec": {"constant": 3}}
        s.create_pipelines(json.dumps(update), update=True)
        s.tick()
        row = s.store.find_pipeline("edges")
        assert row.state == "crashing" and "RBAC forbids mountd to" in row.reason and "Role 'pachy'" in row.reason
        fake.allow_all()
        s.tick()
        assert fake.get("deployments", NS, "pipeline-edges-v2")["spec"]["replicas"] == 3
        assert fake.get("deployments", NS, "pipeline-edges-v1") is None

        s.delete_pipeline("edges")
        assert fake.list("deployments", NS) == [] and fake.list("secrets", NS) == []
        monkeypatch.setenv("PACHY_MAX_WORKERS", "7")
        other = Scheduler(pfs, str(home))
        other.runner = r
        other._use_runner()
        assert other.max_workers == 7  # still wins
    finally:
        s.close()
        pfs.close()


def test_a_watch_too_old_starts_over_from_a_list(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard]) -> None:
    """A watch resumed from a resource version the server no longer keeps (410 Gone) lists
    again: what happened meanwhile (a pod gone) is not missed."""
    from kube.podwatch import PodWatch

    r, heard = runner
    r.ensure("edges", SPEC, 2)
    fake.run_controllers()
    heard.wait(lambda: r.running("edges") == 2)
    second = Heard()
    late = PodWatch(r, on_exit=second.on_exit, on_change=lambda _p: second.poke())
    gone = pods(fake)[0]["metadata"]["name"]
    late._pods = {n: v for n, v in r.watch._pods.items()}  # what it knew when it lost track
    fake.delete_object("pods", NS, gone)
    with fake._cond:
        del fake._events[:-1]  # the server's history no longer reaches back to "1"
    thread = threading.Thread(target=late._run, args=("1",), daemon=True)
    thread.start()
    try:
        second.wait(lambda: late.ready("edges", 1) == 1 and ("edges", gone, -1) in second.exits)
    finally:
        late.stop()


def test_a_deployment_deleted_behind_its_back_is_made_again(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import kube.runner

    r, _heard = runner
    r.ensure("edges", SPEC, 2)
    monkeypatch.setattr(kube.runner, "RESYNC", 0.0)  # check on every ensure, not every 30 s
    fake.delete_object("deployments", NS, "pipeline-edges-v1")  # kubectl delete deployment
    r.ensure("edges", SPEC, 2)
    assert fake.get("deployments", NS, "pipeline-edges-v1")["spec"]["replicas"] == 2
    fake.put_object("deployments", {**fake.get("deployments", NS, "pipeline-edges-v1"),
                                    "spec": {**fake.get("deployments", NS, "pipeline-edges-v1")["spec"], "replicas": 5}})
    r.ensure("edges", SPEC, 2)  # kubectl scale: put back
    assert fake.get("deployments", NS, "pipeline-edges-v1")["spec"]["replicas"] == 2


def test_a_cluster_gone_away_is_said(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard]) -> None:
    r, heard = runner
    fake.close()
    assert r.ensure("edges", SPEC, 1) == []
    assert (heard.trouble() or "").startswith("the Kubernetes API server does not answer ("), heard.trouble()
    assert "kubectl get pods" in heard.trouble()
    requests = len(fake.requests)
    assert r.ensure("other", SPEC, 1) == []  # while it is away: said, without asking (waiting) again
    assert heard.trouble("other") == heard.trouble("edges") and len(fake.requests) == requests


def test_the_deployed_role_grants_what_the_runner_needs() -> None:
    """pachctl deploy's Role (kube/deploy.py) against what the runner asks of the API."""
    import kube.deploy as deploy
    from kube.runner import RBAC_NEEDS

    granted: dict[tuple[str, str], set[str]] = {}
    for rule in deploy.RUNNER_RULES:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    missing = {k: v - granted.get(k, set()) for k, v in RBAC_NEEDS.items() if v - granted.get(k, set())}
    assert missing == {}


def test_another_mountds_objects_are_not_taken(fake: FakeKubeAPI, runner: tuple[KubernetesRunner, Heard]) -> None:
    r, heard = runner
    theirs = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {},
              "metadata": {"name": "pipeline-edges-v1", "namespace": NS, "labels": {"pachy.daemon": "0123abcd"}}}
    fake.put_object("secrets", theirs)
    assert r.ensure("edges", SPEC, 1) == []
    assert "Secret pipeline-edges-v1 in namespace 'pachy-test' is not this mountd's" in heard.trouble()
    assert fake.get("secrets", NS, "pipeline-edges-v1")["metadata"]["labels"] == {"pachy.daemon": "0123abcd"}
    assert fake.get("deployments", NS, "pipeline-edges-v1") is None


def test_objects_that_could_not_be_deleted_are_deleted_later(fake: FakeKubeAPI,
                                                             runner: tuple[KubernetesRunner, Heard]) -> None:
    r, _heard = runner
    r.ensure("edges", SPEC, 1)
    fake.forbid("delete", "deployments")
    r.stop("edges")  # delete-pipeline while RBAC forbids it
    assert fake.get("deployments", NS, "pipeline-edges-v1") is not None
    fake.allow_all()
    r.ensure("other", WorkerSpec("other", 1, image="busybox"), 1)  # the next tick
    assert fake.get("deployments", NS, "pipeline-edges-v1") is None and fake.get("secrets", NS, "pipeline-edges-v1") \
        is None
