"""What a worker pod's status says, in the terms of the pipeline spec. Pure: no I/O.

The kubelet reports in container states and pod conditions what no worker can
report itself: an image that cannot be pulled, a pod no node can take, a
container killed for its memory. :func:`read_pod` turns one pod (as the API
serves it, a dict) into what the runner tells the scheduler: whether it is
ready, why its workers cannot run (``on_trouble``), and which of its
containers ended (``on_exit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PULL_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


@dataclass
class Ended:
    """A container of the pod that terminated: ``key`` tells one termination from the next."""

    container: str
    key: str
    code: int
    reason: str


@dataclass
class PodReading:
    name: str
    pipeline: str  # the raw pipeline name (annotation pachy.pipeline), "" if not ours
    version: int
    ready: bool = False
    deleting: bool = False
    trouble: str = ""  # "" when nothing is wrong that the pod can tell
    ended: list[Ended] = field(default_factory=list)


def _container_spec(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if c.get("name") == name:
            return c
    return {}


def _memory_field(container: str) -> str:
    return "resource_limits.memory" if container == "user" else "sidecar_resource_limits.memory"


def read_pod(pod: dict[str, Any]) -> PodReading:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    try:
        version = int(labels.get("pachy.version", "0"))
    except ValueError:
        version = 0
    r = PodReading(meta.get("name", ""), annotations.get("pachy.pipeline", ""), version,
                   deleting=bool(meta.get("deletionTimestamp")))
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            r.ready = cond.get("status") == "True"
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                and cond.get("reason") == "Unschedulable":
            r.trouble = (f"workers are Pending: unschedulable: {cond.get('message') or 'no node fits'}; lower "
                         "resource_requests (or resource_limits), check scheduling_spec.node_selector and "
                         "tolerations, or add nodes")
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for cs in statuses:
        name = cs.get("name", "")
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason, message = waiting.get("reason", ""), (waiting.get("message") or "").strip()
        image = _container_spec(pod, name).get("image") or cs.get("image") or "?"
        trouble = ""
        if reason in PULL_REASONS:
            trouble = (f"image '{image}' cannot be pulled ({reason}): {message or 'no detail'}; push it to a "
                       "registry the cluster can reach, or set transform.image_pull_secrets")
        elif reason in CONFIG_REASONS:
            trouble = (f"container '{name}' of pod {r.name} cannot start ({reason}): {message or 'no detail'}"
                       + ("; create the secret first (pachctl create-secret), then update the pipeline"
                          if "secret" in message.lower() else ""))
        elif reason == "CrashLoopBackOff":
            last = (cs.get("lastState") or {}).get("terminated") or {}
            why = last.get("reason") or "Error"
            hint = (f"; raise {_memory_field(name)}" if why == "OOMKilled" else "")
            trouble = (f"container '{name}' of pod {r.name} keeps crashing (CrashLoopBackOff; last: {why}, exit "
                       f"code {last.get('exitCode', '?')}){hint}; see kubectl logs {r.name} -c {name} --previous")
        if trouble and not r.trouble:
            r.trouble = trouble
        for now, term in ((True, state.get("terminated")), (False, (cs.get("lastState") or {}).get("terminated"))):
            if not term:
                continue
            # The same run of a container, whether seen terminated now or as lastState after its
            # restart (restartCount has then moved on by one); its container ID tells runs apart.
            run = int(cs.get("restartCount") or 0) - (0 if now else 1)
            key = (f"{name}/{run}/{term.get('containerID') or ''}/{term.get('finishedAt') or ''}/"
                   f"{term.get('exitCode')}/{term.get('reason') or ''}")
            r.ended.append(Ended(name, key, int(term.get("exitCode", -1)), term.get("reason") or ""))
            # (an OOM kill long past, in lastState of a container running again, is no trouble now)
            if now and term.get("reason") == "OOMKilled" and not r.trouble:
                limit = ((_container_spec(pod, name).get("resources") or {}).get("limits") or {}).get("memory")
                r.trouble = (f"container '{name}' of pod {r.name} was killed for using more memory than its limit "
                             f"(OOMKilled{', limit ' + str(limit) if limit else ''}); raise {_memory_field(name)}")
    # The same termination may show as state then lastState: once each.
    seen: set[str] = set()
    r.ended = [e for e in r.ended if not (e.key in seen or seen.add(e.key))]
    return r
