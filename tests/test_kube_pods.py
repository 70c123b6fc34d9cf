"""kube/pods.py, kube/patches.py, kube/credentials.py: the worker objects are valid Kubernetes
objects in every variant (schemas, strict, and the rules schemas miss), shaped as the
contracts say; the patches follow their RFCs; the shim derives the credential the runner checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kube import credentials
from kube.patches import PatchError, json_patch, merge_patch
from kube.pods import (
    NAME_LIMIT,
    PodSettings,
    object_name,
    secret_name,
    user_secret,
    worker_objects,
)
from kube.validate import validate
from pps.runners.base import Port, Resources, SecretRef, WorkerSpec
from shim.__main__ import derive_credential

SETTINGS = PodSettings("pachy-test", "pachy:0.1.0", "pachd.pachy-test.svc.cluster.local:650", "d41d8cd98f00b204")

VARIANTS = {
    "plain": WorkerSpec("edges", 1, image="busybox", cmd=("sh",)),
    "service": WorkerSpec("web", 2, image="nginx", ports=(Port(80, 30080),), long_running=True),
    "service-cluster-ip": WorkerSpec("api", 1, image="nginx", ports=(Port(8080, 8080),), long_running=True),
    "service-load-balancer": WorkerSpec("lb", 1, image="nginx", cmd=("nginx",), ports=(Port(8080, 30080),),
                                        long_running=True,
                                        service_type="LoadBalancer", service_ip="192.0.2.7",
                                        service_annotations=(("cloud.example/lb", "internal"),)),
    "secrets": WorkerSpec("s", 1, image="busybox", env=(("A", "$(NOT_EXPANDED)"),),
                          secrets=(SecretRef("creds", mount_path="/secrets/creds"),
                                   SecretRef("creds", env_var="PASSWORD", key="password"),
                                   SecretRef("in_pfs", mount_path="/pfs/secret"))),
    "gpu": WorkerSpec("train", 1, image="tensorflow", requests=Resources(cpu=0.5, memory=1 << 30, gpu=1),
                      limits=Resources(cpu=2, memory=2 << 30, disk=10 << 30),
                      sidecar_requests=Resources(cpu=0.1, memory=64 << 20),
                      sidecar_limits=Resources(memory=256 << 20)),
    "tolerations": WorkerSpec("t", 1, image="busybox", node_selector=(("disk", "ssd"),),
                              priority_class_name="high",
                              tolerations=((("effect", "NoSchedule"), ("key", "dedicated"), ("operator", "Equal"),
                                            ("toleration_seconds", None), ("value", "pachy")),
                                           (("effect", "NoExecute"), ("key", "flaky"), ("operator", "Exists"),
                                            ("toleration_seconds", 30), ("value", ""))),
                              image_pull_secrets=("regcred",), labels=(("team", "data"),),
                              annotations=(("owner", "me@example.com"),)),
    "pod_spec": WorkerSpec("ps", 1, image="busybox",
                           pod_spec=json.dumps({"hostNetwork": True, "terminationGracePeriodSeconds": None,
                                                "dnsPolicy": "ClusterFirstWithHostNet"})),
    "pod_patch": WorkerSpec("pp", 1, image="busybox", pod_patch=json.dumps(
        [{"op": "add", "path": "/containers/0/env", "value": [{"name": "Z", "value": "1"}]},
         {"op": "replace", "path": "/restartPolicy", "value": "Always"},
         {"op": "add", "path": "/volumes/-", "value": {"name": "cache", "emptyDir": {"medium": "Memory"}}},
         {"op": "add", "path": "/containers/0/volumeMounts/-", "value": {"name": "cache", "mountPath": "/cache"}}])),
    "odd-name": WorkerSpec("My_Pipeline_" + "x" * 38, 12345, image="busybox"),
}


def pod_of(objects: list[dict]) -> dict:
    return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]


def container(pod: dict, name: str) -> dict:
    return next(c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name)


@pytest.mark.parametrize("lazy", [False, True], ids=["copy", "lazy-privileged"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_is_valid(variant: str, lazy: bool) -> None:
    settings = PodSettings(**{**SETTINGS.__dict__, "lazy_privileged": lazy, "pull_secret": "pachy-pull"})
    spec = VARIANTS[variant]
    objects = worker_objects(spec, 3, "k" * 64, settings, token="t0ken")
    assert validate(objects) == []
    name = object_name(spec.pipeline, spec.version)
    assert all(o["metadata"]["name"] == name and o["metadata"]["namespace"] == "pachy-test" for o in objects)
    assert [o["kind"] for o in objects] == ["Secret", "Deployment"] + (["Service"] if spec.ports else [])
    pod = pod_of(objects)
    shim = container(pod, "shim")
    scratch = next(m for m in shim["volumeMounts"] if m["name"] == "pachy-scratch")
    if lazy:
        assert shim["securityContext"]["privileged"] is True and scratch["mountPropagation"] == "Bidirectional"
        assert "--no-lazy" not in shim["args"]
    else:
        assert "privileged" not in shim["securityContext"] and "mountPropagation" not in scratch
        assert "--no-lazy" in shim["args"]
    assert {"name": "pachy-pull"} in pod["imagePullSecrets"]


def test_the_pod_layout_follows_the_contract() -> None:
    spec = VARIANTS["plain"]
    secret, deployment = worker_objects(spec, 2, "abc", SETTINGS, token="tok")
    assert deployment["metadata"]["name"] == "pipeline-edges-v1" and deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "pipeline", "pachy.daemon": SETTINGS.daemon, "pachy.pipeline": "edges",
                      "pachy.version": "1", "pachy.spec": spec.digest}
    assert "pachy.spec" not in deployment["spec"]["selector"]["matchLabels"]  # a selector is immutable
    assert secret["data"] == {"key": "YWJj", "token": "dG9r"}
    pod = deployment["spec"]["template"]["spec"]
    init, user, shim = container(pod, "init"), container(pod, "user"), container(pod, "shim")
    assert init["image"] == shim["image"] == "pachy:0.1.0" and user["image"] == "busybox"
    assert "/usr/lib/pachy/agent/busybox /usr/lib/pachy/agent/agent.sh /.pachy/bin/" in init["command"][-1]
    assert user["command"][:3] == ["/.pachy/bin/busybox", "sh", "-c"]
    assert user["command"][3].endswith("exec /.pachy/bin/busybox env -i /.pachy/bin/busybox sh "
                                       "/.pachy/bin/agent.sh /.pachy/ctl")
    assert user["securityContext"]["runAsUser"] == 0
    assert shim["command"] == ["python3"] and shim["args"][:2] == ["-m", "shim"]
    args = shim["args"]
    assert "--worker" not in args and not any("$(" in a for a in args)  # podman's kube play expands none
    assert args[args.index("--address") + 1] == SETTINGS.address
    assert {"name": "PACHY_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in shim["env"]
    assert {"name": "PACHY_WORKER_KEY", "valueFrom": {"secretKeyRef": {"name": "pipeline-edges-v1", "key": "key"}}} \
        in shim["env"]
    # the worker key: in the shim only; the same paths for ctl and scratch in both
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (user, shim)}
    assert "PACHY_WORKER_KEY" not in json.dumps(user) and "pipeline-edges-v1" not in json.dumps(user)
    assert mounts["user"]["pachy-ctl"] == mounts["shim"]["pachy-ctl"] == "/.pachy/ctl"
    assert mounts["user"]["pachy-scratch"] == mounts["shim"]["pachy-scratch"] == "/pachy/scratch"
    assert "PACHY_TOKEN" not in json.dumps(user) and pod["automountServiceAccountToken"] is False
    # without a token, no reference to one
    _, bare = worker_objects(spec, 1, "abc", SETTINGS)
    assert "PACHY_TOKEN" not in json.dumps(bare)


def test_secrets_resources_and_scheduling() -> None:
    pod = pod_of(worker_objects(VARIANTS["secrets"], 1, "k", SETTINGS))
    user = container(pod, "user")
    assert {"name": "A", "value": "$$(NOT_EXPANDED)"} in user["env"]  # Kubernetes would expand $(X)
    assert {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "pachy-secret-creds", "key": "password"}}} \
        in user["env"]
    assert {"name": "secret-0", "mountPath": "/secrets/creds", "readOnly": True} in user["volumeMounts"]
    assert not any(m["mountPath"].startswith("/pfs") for m in user["volumeMounts"])  # the shim's, per unit
    gpu = pod_of(worker_objects(VARIANTS["gpu"], 1, "k", SETTINGS))
    assert container(gpu, "user")["resources"] == {
        "requests": {"cpu": "500m", "memory": str(1 << 30), "nvidia.com/gpu": "1"},
        "limits": {"cpu": "2000m", "memory": str(2 << 30), "ephemeral-storage": str(10 << 30), "nvidia.com/gpu": "1"}}
    assert container(gpu, "shim")["resources"] == {"requests": {"cpu": "100m", "memory": str(64 << 20)},
                                                   "limits": {"memory": str(256 << 20)}}
    t = worker_objects(VARIANTS["tolerations"], 1, "k", SETTINGS)
    tp = pod_of(t)
    assert tp["nodeSelector"] == {"disk": "ssd"} and tp["priorityClassName"] == "high"
    assert tp["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "pachy", "effect": "NoSchedule"},
                                 {"key": "flaky", "operator": "Exists", "effect": "NoExecute",
                                  "tolerationSeconds": 30}]
    assert tp["imagePullSecrets"] == [{"name": "regcred"}]
    meta = t[1]["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "data" and meta["annotations"] == {"owner": "me@example.com", "pachy.pipeline": "t"}


def test_services() -> None:
    svc = worker_objects(VARIANTS["service"], 1, "k", SETTINGS)[2]
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [{"name": "port-0", "port": 80, "targetPort": 80, "protocol": "TCP",
                                     "nodePort": 30080}]
    assert svc["spec"]["selector"]["pachy.version"] == "2"
    plain = worker_objects(VARIANTS["service-cluster-ip"], 1, "k", SETTINGS)[2]
    assert plain["spec"]["type"] == "ClusterIP" and plain["spec"]["ports"][0]["port"] == 8080


def test_service_type_ip_and_annotations_come_from_the_spec() -> None:
    """service.type, .ip and .annotations (pipeline spec 2.x) reach the Service."""
    from pps.spec import parse_spec

    spec = parse_spec({"pipeline": {"name": "lb"}, "transform": {"image": "nginx", "cmd": ["nginx"]},
                       "input": {"pfs": {"repo": "models", "glob": "/"}},
                       "service": {"internal_port": 8080, "external_port": 30080, "type": "LoadBalancer",
                                   "ip": "192.0.2.7", "annotations": {"cloud.example/lb": "internal"}}})
    assert WorkerSpec.from_spec(spec, 1) == VARIANTS["service-load-balancer"]
    svc = worker_objects(VARIANTS["service-load-balancer"], 1, "k", SETTINGS)[2]
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["externalIPs"] == ["192.0.2.7"]
    assert svc["spec"]["ports"][0]["nodePort"] == 30080
    assert svc["metadata"]["annotations"] == {"pachy.pipeline": "lb", "cloud.example/lb": "internal"}
    as_cluster_ip = WorkerSpec("c", 1, image="nginx", ports=(Port(8080, 30080),), long_running=True,
                               service_type="ClusterIP")
    svc = worker_objects(as_cluster_ip, 1, "k", SETTINGS)[2]
    assert "nodePort" not in svc["spec"]["ports"][0] and validate([svc]) == []


def test_pod_spec_then_pod_patch_apply_last() -> None:
    pod = pod_of(worker_objects(VARIANTS["pod_spec"], 1, "k", SETTINGS))
    assert pod["hostNetwork"] is True and "terminationGracePeriodSeconds" not in pod
    assert [c["name"] for c in pod["containers"]] == ["user", "shim"]  # a merge patch keeps what it does not name
    patched = pod_of(worker_objects(VARIANTS["pod_patch"], 1, "k", SETTINGS))
    assert patched["containers"][0]["env"] == [{"name": "Z", "value": "1"}]
    assert patched["volumes"][-1]["name"] == "cache"
    bad = WorkerSpec("bad", 1, image="x", pod_patch=json.dumps([{"op": "remove", "path": "/nothing"}]))
    with pytest.raises(PatchError, match="operation 0 \\(remove /nothing\\): .*no member 'nothing'"):
        worker_objects(bad, 1, "k", SETTINGS)


def test_names_are_valid_and_deterministic() -> None:
    assert object_name("edges", 3) == "pipeline-edges-v3"
    a, b = object_name("A_b", 1), object_name("a-b", 1)
    assert a != b and b == "pipeline-a-b-v1" and a == object_name("A_b", 1)
    long = object_name("My_Pipeline_" + "x" * 38, 12345)
    assert len(long) <= NAME_LIMIT and long.endswith("-v12345") and long.islower()
    assert secret_name("db.creds") == "pachy-secret-db-creds-" + secret_name("db.creds")[-6:]
    s = user_secret("db.creds", {"password": "hunter2"}, SETTINGS)
    assert validate([s]) == [] and s["data"] == {"password": "aHVudGVyMg=="}


# -- patches: the RFCs' own examples ---------------------------------------------------

def test_merge_patch_rfc7386() -> None:
    target = {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
              "tags": ["example", "sample"], "content": "This will be unchanged"}
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None},
             "tags": ["example"]}
    assert merge_patch(target, patch) == {"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                                          "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"}
    assert merge_patch({"a": "b"}, {"a": {"bb": None}}) == {"a": {}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert target["author"]["familyName"] == "Doe"  # the target is not changed


def test_json_patch_rfc6902() -> None:
    doc = {"foo": ["bar", "baz"], "q": {"x": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/foo/1", "value": "qux"}])["foo"] == ["bar", "qux", "baz"]
    assert json_patch(doc, [{"op": "remove", "path": "/foo/0"}])["foo"] == ["baz"]
    assert json_patch(doc, [{"op": "replace", "path": "/q/x", "value": 2}])["q"] == {"x": 2}
    assert json_patch(doc, [{"op": "move", "from": "/q/x", "path": "/y"}]) == {"foo": ["bar", "baz"], "q": {}, "y": 1}
    assert json_patch(doc, [{"op": "copy", "from": "/foo/0", "path": "/foo/-"}])["foo"] == ["bar", "baz", "bar"]
    assert json_patch({"a/b": {"m~n": 1}}, [{"op": "replace", "path": "/a~1b/m~0n", "value": 2}]) == {"a/b": {"m~n": 2}}
    json_patch(doc, [{"op": "test", "path": "/foo/1", "value": "baz"}])
    for ops, why in (([{"op": "test", "path": "/foo/1", "value": "x"}], "test failed"),
                     ([{"op": "replace", "path": "/nope", "value": 1}], "no member"),
                     ([{"op": "add", "path": "/foo/9", "value": 1}], "out of range"),
                     ([{"op": "frobnicate", "path": "/foo"}], "unknown op")):
        with pytest.raises(PatchError, match=why):
            json_patch(doc, ops)
    assert doc == {"foo": ["bar", "baz"], "q": {"x": 1}}  # the document is not changed


# -- credentials -----------------------------------------------------------------------

def test_the_shim_derives_the_credential_the_runner_checks(tmp_path: Path) -> None:
    secret = credentials.daemon_secret(str(tmp_path))
    assert os.stat(tmp_path / credentials.SECRET_FILE).st_mode & 0o777 == 0o600
    assert credentials.daemon_secret(str(tmp_path)) == secret  # a restarted daemon: the same
    key = credentials.version_key(secret, "edges", 2)
    cred = derive_credential(key, "edges", "pipeline-edges-v2-5d4f-abcde")
    assert cred == credentials.worker_credential(key, "edges", "pipeline-edges-v2-5d4f-abcde")
    assert credentials.check(cred, key)
    assert not credentials.check(cred, credentials.version_key(secret, "edges", 3))  # another version's key
    assert not credentials.check(cred.replace("abcde", "abcdf"), key)  # another pod's name
    assert credentials.parse("garbage") is None and credentials.parse(cred) == ("edges", "pipeline-edges-v2-5d4f-abcde")


# -- the pod's scripts, run for real with this host's busybox --------------------------

def test_init_and_user_scripts_give_the_shim_the_image_config(tmp_path: Path) -> None:
    """The init container's and user container's commands (paths moved under tmp_path) leave
    what the shim's container executor reads: FIFOs, image.json, the image's env and cwd."""
    import shutil
    import subprocess

    from pps.runners.docker import _AGENT_SH, find_busybox
    from shim.container import ContainerExecutor

    src, bin_, ctl, workdir = (tmp_path / d for d in ("agent", "bin", "ctl", "work"))
    for d in (src, bin_, ctl, workdir):
        d.mkdir()
    shutil.copy(find_busybox(), src / "busybox")
    shutil.copy(_AGENT_SH, src / "agent.sh")
    spec = WorkerSpec("edges", 1, image="example/edges:1", limits=Resources(memory=64 << 20))
    pod = pod_of(worker_objects(spec, 1, "k", SETTINGS))

    def local(script: str) -> str:
        return (script.replace("/usr/lib/pachy/agent", str(src)).replace("/.pachy/bin", str(bin_))
                .replace("/.pachy/ctl", str(ctl)))

    init, user = container(pod, "init")["command"], container(pod, "user")["command"]
    subprocess.run([local(init[0]), *init[1:3], local(init[3])], check=True, timeout=30)
    subprocess.run([local(init[0]), *init[1:3], local(init[3])], check=True, timeout=30)  # a restart: idempotent
    assert (ctl / "cmd").is_fifo() and (ctl / "events").is_fifo() and (ctl / "links").is_dir()
    assert (bin_ / "busybox").stat().st_mode & 0o777 == 0o755
    # Not the real agent here: it makes /pfs, which in a container is its own, here the host's.
    (bin_ / "agent.sh").write_text('exec 3<>"$1/cmd"; read -r verb <&3; [ "$verb" = exit ]\n')
    agent = subprocess.Popen([local(user[0]), *user[1:3], local(user[3])],
                             cwd=workdir, env={"PATH": "/opt/bin:/usr/bin:/bin", "GREETING": "a b\nc"})
    try:
        ex = ContainerExecutor(str(ctl))
        assert ex.image == "example/edges:1" and ex.memory == 64 << 20
        assert ex.default_cwd == str(workdir)
        assert ex.image_env == {"PATH": "/opt/bin:/usr/bin:/bin", "GREETING": "a b\nc"}  # no PWD, SHLVL
        os.write(ex.cmd, b"exit\n")
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()


# -- what pod statuses mean ------------------------------------------------------------

def test_pod_statuses_read_in_the_specs_terms() -> None:
    from kube.podstatus import read_pod

    pod = {"metadata": {"name": "p", "labels": {"pachy.version": "3"}, "annotations": {"pachy.pipeline": "edges"}},
           "spec": {"containers": [{"name": "user", "image": "x:1", "resources": {"limits": {"memory": "64Mi"}}},
                                   {"name": "shim", "image": "pachy:1"}]}}
    running = {"conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [
        {"name": "user", "restartCount": 1, "state": {"running": {}},
         "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "containerID": "c1"}}}]}
    r = read_pod({**pod, "status": running})
    assert (r.pipeline, r.version, r.ready, r.trouble) == ("edges", 3, True, "")  # an OOM kill long past
    assert [(e.container, e.code) for e in r.ended] == [("user", 137)]
    now = {"containerStatuses": [{"name": "user", "restartCount": 0,
                                  "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "containerID": "c1"}}}]}
    r2 = read_pod({**pod, "status": now})
    assert r2.ended[0].key == r.ended[0].key  # the same run, seen terminated then as lastState: once
    assert r2.trouble == ("container 'user' of pod p was killed for using more memory than its limit "
                          "(OOMKilled, limit 64Mi); raise resource_limits.memory")
    crash = {"containerStatuses": [{"name": "shim", "restartCount": 4, "state": {"waiting": {
        "reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}
    assert "raise sidecar_resource_limits.memory" in read_pod({**pod, "status": crash}).trouble
    bad = {"containerStatuses": [{"name": "user", "state": {"waiting": {"reason": "InvalidImageName",
                                                                        "message": "bad name"}}}]}
    assert read_pod({**pod, "status": bad}).trouble.startswith("image 'x:1' cannot be pulled (InvalidImageName): bad")
    assert read_pod({"metadata": {"name": "q"}}).pipeline == ""  # not a worker of ours
