"""A pipeline version's worker objects for Kubernetes (pps/WORKERS.md, "Kubernetes"). Pure: no I/O.

Public, stable (the image helper plays these under ``podman kube play``)::

    worker_objects(spec: WorkerSpec, replicas: int, key: str, settings: PodSettings,
                   *, token: str | None = None) -> list[dict]
        # [Secret, Deployment] (+ [Service] for a service pipeline), all named
        # object_name(spec.pipeline, spec.version) == "pipeline-<name>-v<N>"
    user_secret(name: str, data: Mapping[str, str], settings: PodSettings) -> dict
        # the Secret "pachy-secret-<name>" a pipeline's transform.secrets read
    PodSettings(namespace, image, address, daemon, lazy_privileged=False, pull_secret="")

The pod: init container ``init`` (the pachy image) copies busybox and
agent.sh into the emptyDir ``pachy-bin`` and prepares the control directory
(``pachy-ctl``: FIFOs, ``image.json``); container ``user`` (the pipeline's
image) records the image's environment and working directory (no Kubernetes
API tells us an image's config) and execs the agent with an empty
environment; container ``shim`` (the pachy image) is the worker, dialing
mountd and running units through the agent (``--executor container``). The
worker key (the Secret) reaches only ``shim`` (``PACHY_WORKER_KEY``). ``pod_spec`` (JSON
merge patch) then ``pod_patch`` (JSON Patch) are applied last, as
Pachyderm does.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kube.patches import json_patch, merge_patch
from pps.runners.base import Resources, WorkerSpec

AGENT_SOURCE = "/usr/lib/pachy/agent"  # in the pachy image: busybox (static) and agent.sh
AGENT_BIN = "/.pachy/bin"
AGENT_CTL = "/.pachy/ctl"
SCRATCH = "/pachy/scratch"
IMAGE_ENV = "image-env"  # written by the user container at start: its environment, NUL-separated
IMAGE_CWD = "image-cwd"  # and its working directory (the image's WORKDIR)
GPU_RESOURCE = "nvidia.com/gpu"
NAME_LIMIT = 63  # a Service's name is a DNS label; the Deployment and Secret share it
NO_LAZY = ("lazy inputs need a privileged sidecar with Bidirectional mount propagation on Kubernetes, "
           "which this deployment does not allow (PACHY_KUBE_LAZY=privileged turns it on)")
APP = "pipeline"


@dataclass(frozen=True)
class PodSettings:
    """What the deployment, not the pipeline, decides about worker pods."""

    namespace: str
    image: str  # the pachy image (init container and shim sidecar)
    address: str  # host:port the shim dials (mountd's Service)
    daemon: str  # label value telling this mountd's objects from another's in the namespace
    lazy_privileged: bool = False  # PACHY_KUBE_LAZY=privileged: FUSE lazy inputs in a privileged sidecar
    pull_secret: str = ""  # PACHY_KUBE_PULL_SECRET: for the pachy image, added to every pod


def _dns(name: str) -> str:
    """``name`` as a DNS label part: lower case, '_' and '.' as '-', and a short hash of the original
    when that changed anything (so 'A_b' and 'a-b' stay apart)."""
    mapped = name.lower().replace("_", "-").replace(".", "-")
    if mapped != name:
        mapped += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return mapped


def _fit(prefix: str, part: str, suffix: str, original: str) -> str:
    """prefix+part+suffix, ``part`` cut (with a hash of ``original``) to fit NAME_LIMIT."""
    if len(prefix) + len(part) + len(suffix) <= NAME_LIMIT:
        return prefix + part + suffix
    room = NAME_LIMIT - len(prefix) - len(suffix) - 7
    return f"{prefix}{part[:room].rstrip('-')}-{hashlib.sha256(original.encode()).hexdigest()[:6]}{suffix}"


def object_name(pipeline: str, version: int) -> str:
    """``pipeline-<name>-v<N>``, Pachyderm's name for a pipeline version's workers, made a
    valid Kubernetes name."""
    return _fit("pipeline-", _dns(pipeline), f"-v{version}", pipeline)


def pipeline_label(pipeline: str) -> str:
    """The ``pachy.pipeline`` label value (the raw name is in the annotation of that name)."""
    return _fit("", _dns(pipeline), "", pipeline)


def secret_name(name: str) -> str:
    """The Kubernetes Secret holding mountd's secret ``name`` (pachctl create-secret)."""
    return _fit("pachy-secret-", _dns(name), "", name)


def selector(settings: PodSettings, pipeline: str, version: int | None = None) -> dict[str, str]:
    """The labels every object of ``pipeline`` (of ``version``, if given) carries."""
    labels = {"app": APP, "pachy.daemon": settings.daemon, "pachy.pipeline": pipeline_label(pipeline)}
    if version is not None:
        labels["pachy.version"] = str(version)
    return labels


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _meta(name: str, settings: PodSettings, labels: dict[str, str], pipeline: str) -> dict[str, Any]:
    return {"name": name, "namespace": settings.namespace, "labels": dict(labels),
            "annotations": {"pachy.pipeline": pipeline}}


def _quantities(r: Resources | None, *, gpu: bool = True) -> dict[str, str]:
    if r is None:
        return {}
    q: dict[str, str] = {}
    if r.cpu:
        q["cpu"] = f"{max(1, round(r.cpu * 1000))}m"
    if r.memory:
        q["memory"] = str(r.memory)
    if r.disk:
        q["ephemeral-storage"] = str(r.disk)
    if gpu and r.gpu:
        q[r.gpu_type or GPU_RESOURCE] = str(r.gpu)
    return q


def _resources(requests: Resources | None, limits: Resources | None, *, gpu: bool = True) -> dict[str, Any]:
    req, lim = _quantities(requests, gpu=gpu), _quantities(limits, gpu=gpu)
    # An extended resource (a GPU) must be in limits, with any request equal to it.
    for name in [n for n in req if "/" in n]:
        lim.setdefault(name, req[name])
        req[name] = lim[name]
    out: dict[str, Any] = {}
    if req:
        out["requests"] = req
    if lim:
        out["limits"] = lim
    return out


def _literal(value: str) -> str:
    """An env value Kubernetes must not expand: ``$(X)`` would be replaced by X's value."""
    return value.replace("$(", "$$(")


def _sh(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def _init_script(spec: WorkerSpec) -> str:
    info = {"image": spec.image, "memory": spec.limits.memory if spec.limits else 0,
            "env_file": IMAGE_ENV, "cwd_file": IMAGE_CWD}
    b, c = f"{AGENT_SOURCE}/busybox", AGENT_CTL
    return "; ".join([
        "set -e",
        f"{b} cp {AGENT_SOURCE}/busybox {AGENT_SOURCE}/agent.sh {AGENT_BIN}/",
        f"{b} chmod 0755 {AGENT_BIN}/busybox {AGENT_BIN}/agent.sh",
        f"{b} mkdir -p {c}/links",
        # (idempotent: the emptyDir outlives a restart of the pod's containers)
        f"for f in cmd events; do [ -p {c}/$f ] || {b} mkfifo -m 0600 {c}/$f; done",
        f"{b} chmod 0711 {c} {c}/links",  # user code follows symlinks through links/ (not listed)
        f"echo {_sh(json.dumps(info))} >{c}/image.json.tmp",
        f"{b} mv -f {c}/image.json.tmp {c}/image.json",
    ])


def _user_script() -> str:
    """The user container's command: record what Kubernetes does not tell (the image's env and
    WORKDIR), then become the agent with an empty environment (units get exactly theirs)."""
    b, c = f"{AGENT_BIN}/busybox", AGENT_CTL
    return "; ".join([
        f"pwd >{c}/{IMAGE_CWD}.tmp && {b} mv -f {c}/{IMAGE_CWD}.tmp {c}/{IMAGE_CWD}",
        f"{b} env -0 >{c}/{IMAGE_ENV}.tmp && {b} mv -f {c}/{IMAGE_ENV}.tmp {c}/{IMAGE_ENV}",  # last: the shim waits for it
        f"exec {b} env -i {b} sh {AGENT_BIN}/agent.sh {c}",
    ])


def _secret_volumes(spec: WorkerSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """(volumes, user mounts, user env) for transform.secrets. A mount_path under /pfs is the
    shim's to lay out per unit (from the task): /pfs is the agent's symlink, not a directory."""
    volumes, mounts, env = [], [], []
    for i, s in enumerate(spec.secrets):
        if s.env_var:
            env.append({"name": s.env_var, "valueFrom": {"secretKeyRef": {"name": secret_name(s.name), "key": s.key}}})
        if s.mount_path and not (s.mount_path == "/pfs" or s.mount_path.startswith("/pfs/")):
            # ("optional" said: podman 4.3's kube play dereferences it unchecked)
            volumes.append({"name": f"secret-{i}", "secret": {"secretName": secret_name(s.name), "optional": False}})
            mounts.append({"name": f"secret-{i}", "mountPath": s.mount_path, "readOnly": True})
    return volumes, mounts, env


def _pod(spec: WorkerSpec, settings: PodSettings, name: str, token: bool) -> dict[str, Any]:
    lazy = settings.lazy_privileged
    scratch = {"name": "pachy-scratch", "mountPath": SCRATCH}
    secret_vols, secret_mounts, secret_env = _secret_volumes(spec)
    user_env = [{"name": k, "value": _literal(v)} for k, v in spec.env] + secret_env
    user: dict[str, Any] = {
        "name": "user",
        "image": spec.image,
        "command": [f"{AGENT_BIN}/busybox", "sh", "-c", _user_script()],
        # The agent runs as root to switch to transform.user per unit; the image's USER is
        # not known here (no API shows an image's config): transform.user, else root, applies.
        "securityContext": {"runAsUser": 0, "runAsGroup": 0},
        "volumeMounts": [
            {"name": "pachy-bin", "mountPath": AGENT_BIN, "readOnly": True},
            {"name": "pachy-ctl", "mountPath": AGENT_CTL},
            {**scratch, "mountPropagation": "HostToContainer"} if lazy else dict(scratch),
            *secret_mounts,
        ],
    }
    if user_env:
        user["env"] = user_env
    if res := _resources(spec.requests, spec.limits):
        user["resources"] = res
    if spec.ports:
        user["ports"] = [{"name": f"port-{i}", "containerPort": p.internal, "protocol": "TCP"}
                         for i, p in enumerate(spec.ports)]
    # No $(VAR) in the arguments: podman's kube play does not expand them; the environment carries them.
    args = ["-m", "shim", "--pipeline", spec.pipeline, "--address", settings.address,
            "--executor", "container", "--ctl", AGENT_CTL, "--scratch", SCRATCH, "--fast-scratch", "none"]
    if not lazy:
        args += ["--no-lazy", NO_LAZY]
    # The worker id is the pod's name; the version's key reaches the shim only (the shim drops it
    # from its environment at start; the user container is another process namespace).
    shim_env: list[dict[str, Any]] = [
        {"name": "PACHY_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PACHY_WORKER_KEY", "valueFrom": {"secretKeyRef": {"name": name, "key": "key"}}},
    ]
    if token:
        shim_env.append({"name": "PACHY_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}})
    shim: dict[str, Any] = {
        "name": "shim",
        "image": settings.image,
        "command": ["python3"],
        "args": args,
        "env": shim_env,
        "volumeMounts": [
            {"name": "pachy-ctl", "mountPath": AGENT_CTL},
            {**scratch, "mountPropagation": "Bidirectional"} if lazy else dict(scratch),
        ],
    }
    # Root, whatever the pachy image's USER: the control directory's FIFOs and the key are root's.
    shim["securityContext"] = {"runAsUser": 0, "runAsGroup": 0}
    if lazy:
        shim["securityContext"]["privileged"] = True  # FUSE, and mounts that reach the user container
    sidecar = _resources(spec.sidecar_requests, spec.sidecar_limits, gpu=False)
    if sidecar:
        shim["resources"] = sidecar
    init: dict[str, Any] = {
        "name": "init",
        "image": settings.image,
        "command": [f"{AGENT_SOURCE}/busybox", "sh", "-c", _init_script(spec)],
        "securityContext": {"runAsUser": 0, "runAsGroup": 0},
        "volumeMounts": [{"name": "pachy-bin", "mountPath": AGENT_BIN},
                         {"name": "pachy-ctl", "mountPath": AGENT_CTL}],
    }
    if sidecar:
        init["resources"] = sidecar
    pod: dict[str, Any] = {
        "initContainers": [init],
        "containers": [user, shim],
        "volumes": [
            {"name": "pachy-bin", "emptyDir": {}},
            {"name": "pachy-ctl", "emptyDir": {}},
            {"name": "pachy-scratch", "emptyDir": {}},
            *secret_vols,
        ],
        "restartPolicy": "Always",
        # User code gets no API credential of the namespace (mountd's service account is not its business).
        "automountServiceAccountToken": False,
        # The agent (pid 1, no handler) ignores SIGTERM; the shim hands its task back quickly.
        "terminationGracePeriodSeconds": 10,
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.tolerations:
        pod["tolerations"] = [_toleration(dict(t)) for t in spec.tolerations]
    pulls = list(dict.fromkeys([*spec.image_pull_secrets, *([settings.pull_secret] if settings.pull_secret else [])]))
    if pulls:
        pod["imagePullSecrets"] = [{"name": n} for n in pulls]
    if spec.pod_spec:
        pod = merge_patch(pod, json.loads(spec.pod_spec))
    if spec.pod_patch:
        pod = json_patch(pod, json.loads(spec.pod_patch))
    return pod


def _toleration(t: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for ours, theirs in (("key", "key"), ("operator", "operator"), ("value", "value"), ("effect", "effect"),
                         ("toleration_seconds", "tolerationSeconds")):
        if t.get(ours) not in (None, ""):
            out[theirs] = t[ours]
    return out


def worker_objects(spec: WorkerSpec, replicas: int, key: str, settings: PodSettings, *,
                   token: str | None = None) -> list[dict[str, Any]]:
    """The Secret (worker key, and the API token if any), the Deployment and, for a service
    pipeline, the Service of ``spec``'s pipeline version. PatchError if pod_spec/pod_patch
    cannot apply."""
    name = object_name(spec.pipeline, spec.version)
    labels = selector(settings, spec.pipeline, spec.version)
    data = {"key": _b64(key)}
    if token:
        data["token"] = _b64(token)
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": _meta(name, settings, labels, spec.pipeline), "data": data}
    template_meta: dict[str, Any] = {"labels": {**dict(spec.labels), **labels, "pachy.spec": spec.digest},
                                     "annotations": {**dict(spec.annotations), "pachy.pipeline": spec.pipeline}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_meta(name, settings, {**labels, "pachy.spec": spec.digest}, spec.pipeline)},
        "spec": {
            "replicas": max(0, replicas),
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": template_meta, "spec": _pod(spec, settings, name, bool(token))},
        },
    }
    objects: list[dict[str, Any]] = [secret, deployment]
    if spec.ports:
        ports, node_port = [], False
        for i, p in enumerate(spec.ports):
            port: dict[str, Any] = {"name": f"port-{i}", "port": p.external or p.internal, "targetPort": p.internal,
                                    "protocol": "TCP"}
            if p.external and p.external != p.internal and 30000 <= p.external <= 32767:
                port |= {"port": p.internal, "nodePort": p.external}  # Pachyderm's external_port: a NodePort
                node_port = True
            ports.append(port)
        kind = spec.service_type or ("NodePort" if node_port else "ClusterIP")
        if kind == "ClusterIP":  # a node port needs a NodePort or LoadBalancer Service
            for port in ports:
                port.pop("nodePort", None)
        meta = _meta(name, settings, labels, spec.pipeline)
        meta["annotations"] |= dict(spec.service_annotations)
        service: dict[str, Any] = {"type": kind, "selector": dict(labels), "ports": ports}
        if spec.service_ip:
            service["externalIPs"] = [spec.service_ip]
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": service})
    return objects


def user_secret(name: str, data: Mapping[str, str], settings: PodSettings) -> dict[str, Any]:
    """mountd's secret ``name`` as the Kubernetes Secret its pipelines' pods read."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name(name), "namespace": settings.namespace,
                         "labels": {"app": "pachy-secret", "pachy.daemon": settings.daemon},
                         "annotations": {"pachy.secret": name}},
            "data": {k: _b64(v) for k, v in sorted(data.items())}}
