"""The fake Kubernetes API server behaves as the real client expects (tests/kubefake.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.kubefake import FakeKubeAPI, terminated_status

kubernetes = pytest.importorskip("kubernetes")


@pytest.fixture
def fake(tmp_path: Path):
    with FakeKubeAPI() as api:
        api.kubeconfig(tmp_path / "kubeconfig")
        yield api


def clients(fake: FakeKubeAPI, tmp_path: Path):
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(tmp_path / "kubeconfig"))
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)


def deployment(name: str, replicas: int) -> dict:
    labels = {"app": "pipeline", "pachy.pipeline": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "user", "image": "busybox"}]}}}}


def test_create_list_patch_delete_through_the_real_client(fake: FakeKubeAPI, tmp_path: Path) -> None:
    from kubernetes.client.exceptions import ApiException

    core, apps = clients(fake, tmp_path)
    apps.create_namespaced_deployment("default", deployment("pipeline-a-v1", 2))
    apps.create_namespaced_deployment("default", deployment("pipeline-b-v1", 1))
    with pytest.raises(ApiException) as exists:
        apps.create_namespaced_deployment("default", deployment("pipeline-a-v1", 2))
    assert exists.value.status == 409
    found = apps.list_namespaced_deployment("default", label_selector="pachy.pipeline=pipeline-a-v1").items
    assert [d.metadata.name for d in found] == ["pipeline-a-v1"]
    assert found[0].metadata.uid and found[0].metadata.resource_version
    apps.patch_namespaced_deployment("pipeline-a-v1", "default", {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("pipeline-a-v1", "default").spec.replicas == 3
    fake.run_controllers()
    pods = core.list_namespaced_pod("default", label_selector="pachy.pipeline in (pipeline-a-v1)").items
    assert len(pods) == 3 and all(p.status.phase == "Running" for p in pods)
    assert apps.read_namespaced_deployment("pipeline-a-v1", "default").status.ready_replicas == 3
    apps.delete_namespaced_deployment("pipeline-a-v1", "default")
    assert core.list_namespaced_pod("default", label_selector="pachy.pipeline=pipeline-a-v1").items == []
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_deployment("pipeline-a-v1", "default")
    assert gone.value.status == 404


def test_watch_sees_changes_and_resumes(fake: FakeKubeAPI, tmp_path: Path) -> None:
    from kubernetes import watch

    core, apps = clients(fake, tmp_path)
    apps.create_namespaced_deployment("default", deployment("pipeline-w-v1", 1))
    listed = core.list_namespaced_pod("default")
    seen: list[tuple[str, str, str]] = []
    done = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_pod, "default", resource_version=listed.metadata.resource_version,
                           timeout_seconds=20):
            state = ev["raw_object"].get("status", {}).get("containerStatuses", [{}])[0].get("state", {})
            seen.append((ev["type"], ev["object"].metadata.name, next(iter(state), "")))
            if ev["type"] == "DELETED":
                w.stop()
        done.set()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    fake.run_controllers()
    pod = fake.list("pods")[0]
    fake.set_status("pods", "default", pod["metadata"]["name"], terminated_status(pod, "user", "OOMKilled", 137))
    fake.delete_object("pods", "default", pod["metadata"]["name"])
    assert done.wait(10)
    name = pod["metadata"]["name"]
    assert [s for s in seen if s[1] == name][-2:] == [("MODIFIED", name, "terminated"), ("DELETED", name, "terminated")]


def test_forbidden_answers_as_rbac_does(fake: FakeKubeAPI, tmp_path: Path) -> None:
    from kubernetes.client.exceptions import ApiException

    _core, apps = clients(fake, tmp_path)
    fake.forbid("create", "deployments")
    with pytest.raises(ApiException) as denied:
        apps.create_namespaced_deployment("default", deployment("pipeline-x-v1", 1))
    message = json.loads(denied.value.body)["message"]
    assert denied.value.status == 403
    assert 'cannot create resource "deployments" in API group "apps" in the namespace "default"' in message
