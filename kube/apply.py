"""Putting ``pachctl deploy``'s objects on a cluster, waiting for ``pachd``,
and taking them (and the pipelines' workers) off again.

Deploying twice is safe: what exists is replaced by the new version of it,
except the metadata claim (its spec is immutable, and it holds the data) and
the token Secret's value when the caller keeps the current token.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from typing import Any

from kube import deploy
from kube.cluster import Cluster
from pfsfuse.errors import NotFound, TimedOut

Progress = Callable[[str], None]
# What the Kubernetes runner labels its objects with (kube/pods.py): one
# Deployment, Secret and maybe Service per pipeline version.
PIPELINE_SELECTOR = "app=pipeline"
PIPELINE_KINDS = ("Deployment", "Service", "Secret")
# Pod states that will not fix themselves quickly; shown as they appear.
_STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
          "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def kubectl_name(obj: dict[str, Any]) -> str:
    """``statefulset.apps/pachd``, as kubectl prints what it changed."""
    group = obj["apiVersion"].rpartition("/")[0]
    kind = obj["kind"].lower()
    return f"{kind}.{group}/{obj['metadata']['name']}" if group else f"{kind}/{obj['metadata']['name']}"


def current_token(cluster: Cluster) -> str | None:
    """The API token of a pachd deployed before (so that re-deploying keeps clients working)."""
    secret = cluster.get("Secret", deploy.TOKEN_SECRET)
    data = (secret or {}).get("data") or {}
    if data.get("token"):
        return base64.b64decode(data["token"]).decode()
    return ((secret or {}).get("stringData") or {}).get("token")


def apply(cluster: Cluster, objs: list[dict[str, Any]], progress: Progress) -> None:
    """Create each object, or replace the one that exists."""
    for obj in objs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        existing = cluster.get(kind, name)
        if existing is None:
            cluster.request("POST", kind, body=obj)
            progress(f"{kubectl_name(obj)} created")
            continue
        if kind == "PersistentVolumeClaim":
            _check_claim(obj, existing, progress)
            continue
        body = copy.deepcopy(obj)
        body["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
        if kind == "Service":
            # Allocated by the cluster and immutable: an update must carry them.
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if key in (existing.get("spec") or {}):
                    body["spec"][key] = existing["spec"][key]
        cluster.request("PUT", kind, name, body=body)
        progress(f"{kubectl_name(obj)} configured")
    if not any(o["kind"] == "Secret" and o["metadata"]["name"] == deploy.STORAGE_SECRET for o in objs) \
            and cluster.delete("Secret", deploy.STORAGE_SECRET):
        # Moved from an S3 target to `local`: no credentials left lying around.
        progress(f"secret/{deploy.STORAGE_SECRET} deleted (this target needs no storage credentials)")


def _check_claim(obj: dict[str, Any], existing: dict[str, Any], progress: Progress) -> None:
    want = obj["spec"]["resources"]["requests"]["storage"]
    have = (((existing.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    note = "" if want == have else f" (it asks for {have}, not {want}: a claim keeps its size; resize it with kubectl)"
    progress(f"{kubectl_name(obj)} kept: it holds the metadata{note}")


def pod_state(cluster: Cluster, name: str) -> str:
    """One line on how a pod is doing: phase, and why it waits if it does."""
    pod = cluster.get("Pod", name)
    if pod is None:
        return f"pod {name}: not created yet"
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"pod {name}: cannot be scheduled: {cond.get('message') or cond.get('reason')}"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            msg = f": {waiting['message']}" if waiting.get("message") else ""
            hint = ""
            if waiting["reason"] in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                hint = (" (load the image on every node, or push it to a registry and deploy "
                        "with --registry)")
            return f"pod {name}: {cs.get('name')}: {waiting['reason']}{msg}{hint}"
        terminated = (cs.get("lastState") or {}).get("terminated")
        if terminated and not cs.get("ready"):
            return (f"pod {name}: {cs.get('name')} restarted ({cs.get('restartCount', 0)} times; last "
                    f"exit: {terminated.get('reason') or terminated.get('exitCode')})")
    return f"pod {name}: {status.get('phase') or 'Pending'}"


def statefulset_ready(sts: dict[str, Any]) -> bool:
    """All replicas ready, and the controller has seen the latest spec."""
    meta, spec, status = sts.get("metadata") or {}, sts.get("spec") or {}, sts.get("status") or {}
    want = spec.get("replicas", 1)
    if (status.get("readyReplicas") or 0) < want:
        return False
    observed = status.get("observedGeneration")
    if observed is not None and meta.get("generation") is not None and observed < meta["generation"]:
        return False
    current, update = status.get("currentRevision"), status.get("updateRevision")
    return not (current and update and current != update)


def wait_ready(cluster: Cluster, timeout: float, progress: Progress, poll: float = 1.0) -> None:
    """Until the pachd StatefulSet reports ready, or ``timeout`` seconds: then an
    error naming the state the pod is stuck in."""
    deadline = time.monotonic() + timeout
    pod = f"{deploy.PACHD}-0"  # a StatefulSet's pods are named by ordinal
    last = ""
    while True:
        sts = cluster.get("StatefulSet", deploy.PACHD)
        if sts is None:
            raise NotFound(f"statefulset/{deploy.PACHD} disappeared from namespace '{cluster.namespace}' "
                           "while waiting for it")
        if statefulset_ready(sts):
            progress(f"{deploy.PACHD} is ready")
            return
        state = pod_state(cluster, pod)
        if ((sts.get("status") or {}).get("readyReplicas") or 0) >= (sts.get("spec") or {}).get("replicas", 1):
            state = f"the update is rolling out ({state})"  # the old pod is ready, the new spec not yet
        if state != last:
            progress(f"waiting for {deploy.PACHD}: {state}")
            last = state
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimedOut(
                f"{deploy.PACHD} is not ready after {timeout:g} s: {state}; see kubectl -n "
                f"{cluster.namespace} describe pod {pod} and kubectl -n {cluster.namespace} logs "
                f"{pod}, or wait longer with --timeout")
        time.sleep(min(poll, left))


def undeploy(cluster: Cluster, everything: bool, progress: Progress) -> int:
    """Delete what deploy made and the pipelines' workers; the metadata claim only
    with ``everything``. Returns how many objects were deleted."""
    deleted = 0
    targets: list[tuple[str, str]] = [("Service", deploy.PACHD), ("StatefulSet", deploy.PACHD)]
    for kind in PIPELINE_KINDS:
        targets += [(kind, o["metadata"]["name"]) for o in cluster.list(kind, PIPELINE_SELECTOR)]
    targets += [("Secret", deploy.STORAGE_SECRET), ("Secret", deploy.TOKEN_SECRET),
                ("RoleBinding", deploy.NAME), ("Role", deploy.NAME), ("ServiceAccount", deploy.NAME)]
    if everything:
        targets.append(("PersistentVolumeClaim", deploy.METADATA_CLAIM))
    for kind, name in targets:
        if cluster.delete(kind, name):
            progress(f"{kind.lower()}/{name} deleted")
            deleted += 1
    if not everything and cluster.get("PersistentVolumeClaim", deploy.METADATA_CLAIM) is not None:
        progress(f"persistentvolumeclaim/{deploy.METADATA_CLAIM} kept: it holds the metadata "
                 "(repos, commits, pipelines); 'pachctl undeploy --all' deletes it too")
    return deleted
