"""The runner boundary: what the scheduler asks of any runner (pps/WORKERS.md).

The scheduler decides *how many* workers a pipeline has and never knows
*where* they run: it hands a runner a :class:`WorkerSpec` (everything about a
worker that comes from the pipeline spec) and a count. A runner starts and
stops workers (processes here, containers under Docker, pods on Kubernetes),
tells the scheduler when one dies unasked (``on_exit``), and vouches for the
credential each worker presents (``authenticate``).

Pure: no I/O here, so the scheduler's tests build specs without a runner.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from pps.spec import Capabilities, PipelineSpec, ResourceSpec

OnExit = Callable[[str, str, int], None]  # (pipeline, worker id, exit code)
# (pipeline, why its workers cannot start or keep running; "" once they can): for what no
# worker can report itself (an image that cannot be pulled, no node to run on, RBAC forbids).
OnTrouble = Callable[[str, str], None]


@dataclass(frozen=True)
class Resources:
    """``resource_requests`` / ``resource_limits`` in numbers a runner can apply."""

    cpu: float = 0.0  # cores; 0: none asked
    memory: int = 0  # bytes; 0: none asked
    disk: int = 0  # bytes; 0: none asked
    gpu: int = 0
    gpu_type: str = ""

    @classmethod
    def from_spec(cls, r: ResourceSpec | None) -> Resources | None:
        if r is None:
            return None
        gpu = r.gpu
        made = cls(cpu=float(r.cpu or 0.0), memory=r.memory_bytes or 0, disk=r.disk_bytes or 0,
                   gpu=gpu.number if gpu else 0, gpu_type=gpu.type if gpu else "")
        return made if made != cls() else None


@dataclass(frozen=True)
class SecretRef:
    """A secret the worker's user code sees (values never travel in the spec)."""

    name: str
    mount_path: str = ""
    env_var: str = ""
    key: str = ""


@dataclass(frozen=True)
class Port:
    internal: int
    external: int = 0  # 0: same as internal


@dataclass(frozen=True)
class WorkerSpec:
    """One pipeline version's workers, as the pipeline spec describes them.

    Two specs that compare equal run the same workers: a runner replaces a
    worker whose spec changed (``digest``), and keeps one whose spec did not.
    """

    pipeline: str
    version: int = 1  # the pipeline's version (Kubernetes: pipeline-<name>-v<version>)
    image: str = ""  # "": the runner's default (local: the host itself)
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    user: str = ""
    working_dir: str = ""
    secrets: tuple[SecretRef, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    requests: Resources | None = None
    limits: Resources | None = None
    sidecar_requests: Resources | None = None
    sidecar_limits: Resources | None = None
    ports: tuple[Port, ...] = ()  # service / spout.service
    service_type: str = ""  # "": NodePort when external_port is a node port, else ClusterIP
    service_ip: str = ""  # the Service's external IP
    service_annotations: tuple[tuple[str, str], ...] = ()
    pod_spec: str = ""  # JSON merge patch, for Kubernetes
    pod_patch: str = ""  # RFC 6902 JSON patch, for Kubernetes
    node_selector: tuple[tuple[str, str], ...] = ()
    priority_class_name: str = ""
    tolerations: tuple[tuple[tuple[str, object], ...], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    long_running: bool = False  # a service or spout: its worker runs one task for as long as it is current

    @classmethod
    def from_spec(cls, spec: PipelineSpec, version: int = 1) -> WorkerSpec:
        t = spec.transform
        svc = spec.service or (spec.spout.service if spec.spout else None)
        ports = (Port(svc.internal_port, svc.external_port or svc.internal_port),) if svc and svc.internal_port \
            else ()
        sched = spec.scheduling_spec
        meta = spec.metadata
        return cls(
            pipeline=spec.name,
            version=version,
            image=t.image,
            cmd=tuple(t.cmd),
            env=tuple(sorted(t.env.items())),
            user=t.user,
            working_dir=t.working_dir,
            secrets=tuple(SecretRef(s.name, s.mount_path, s.env_var, s.key) for s in t.secrets),
            image_pull_secrets=tuple(t.image_pull_secrets),
            requests=Resources.from_spec(spec.resource_requests),
            limits=Resources.from_spec(spec.resource_limits),
            sidecar_requests=Resources.from_spec(spec.sidecar_resource_requests),
            sidecar_limits=Resources.from_spec(spec.sidecar_resource_limits),
            ports=ports,
            service_type=svc.type if svc else "",
            service_ip=svc.ip if svc else "",
            service_annotations=tuple(sorted(svc.annotations.items())) if svc else (),
            pod_spec=spec.pod_spec,
            pod_patch=spec.pod_patch,
            node_selector=tuple(sorted(sched.node_selector.items())) if sched else (),
            priority_class_name=sched.priority_class_name if sched else "",
            tolerations=tuple(tuple(sorted(asdict(x).items())) for x in spec.tolerations),
            labels=tuple(sorted(meta.labels.items())) if meta else (),
            annotations=tuple(sorted(meta.annotations.items())) if meta else (),
            long_running=bool(spec.service or spec.spout),
        )

    @functools.cached_property
    def digest(self) -> str:
        """A short hash of everything here: workers started from another digest are stale."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]


@runtime_checkable
class Runner(Protocol):
    """What the scheduler asks of a runner. Every method is safe to call from any thread."""

    name: str  # "local", "docker", "kubernetes", "auto", "none"

    def capabilities(self, spec: WorkerSpec) -> Capabilities:
        """What the place ``spec``'s workers would run on can do (create-time warnings)."""
        ...

    def owns(self, spec: WorkerSpec) -> bool:
        """Whether this runner runs ``spec``'s workers (``auto`` asks each of its runners)."""
        ...

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        """Have exactly ``workers`` live workers of ``spec`` for ``pipeline`` (replacing any
        started from another spec); returns the ids of the workers it stopped."""
        ...

    def stop(self, pipeline: str, timeout: float = 5.0) -> None:
        """Stop all of ``pipeline``'s workers (SIGTERM, then SIGKILL after ``timeout``); waits."""
        ...

    def cancel(self, pipeline: str, worker_id: str) -> bool:
        """Abandon the task ``worker_id`` is running (its unit is killed, the worker replaced
        by the next ``ensure``); False if no such live worker."""
        ...

    def running(self, pipeline: str) -> int:
        """How many of ``pipeline``'s workers are alive."""
        ...

    def authenticate(self, credential: str) -> tuple[str, str] | None:
        """(pipeline, worker id) of the live worker ``credential`` was issued to, else None."""
        ...

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker, all at once; no ``ensure`` afterwards."""
        ...


@dataclass
class NullRunner:
    """No workers at all (a daemon started with ``--runner none``, and in-process tests):
    jobs are planned and queued, and wait for a worker that never comes."""

    name: str = "none"
    caps: Capabilities = field(default_factory=Capabilities)

    def capabilities(self, spec: WorkerSpec) -> Capabilities:
        return self.caps

    def owns(self, spec: WorkerSpec) -> bool:
        return True

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        return []

    def stop(self, pipeline: str, timeout: float = 5.0) -> None:
        return None

    def cancel(self, pipeline: str, worker_id: str) -> bool:
        return False

    def running(self, pipeline: str) -> int:
        return 0

    def authenticate(self, credential: str) -> tuple[str, str] | None:
        return None

    def close(self, timeout: float = 5.0) -> None:
        return None
