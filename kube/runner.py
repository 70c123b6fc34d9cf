"""The Kubernetes runner: a pipeline version's workers as a Deployment of pods (pps/WORKERS.md,
"Kubernetes").

``ensure`` reconciles: the version's Secret (its worker key), Deployment and
Service exist with this spec's digest (made or replaced, else left alone:
a restarted mountd adopts what is there), ``replicas`` is the scheduler's
count (0: standby, autoscaling), and earlier versions' objects are deleted.
A pod watch (``kube/podwatch.py``) tells which workers are ready, which
ended (``on_exit``) and why workers cannot run (``on_trouble``). ``close``
leaves the workers running: the next mountd adopts them, and their
credentials (derived from a secret in mountd's home: ``kube/credentials.py``)
still hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kube import credentials
from kube.patches import PatchError
from kube.pods import (
    PodSettings,
    label_selector,
    object_name,
    selector,
    user_secret,
    worker_objects,
)
from kube.podwatch import PodWatch
from pfsfuse import __version__
from pfsfuse.errors import PfsError
from pps.runners.base import OnExit, OnTrouble, WorkerSpec
from pps.spec import Capabilities

log = logging.getLogger("kube.runner")

TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for every API call: never a hang
MAX_WORKERS = 1000  # the cluster's budget unless PACHY_MAX_WORKERS says otherwise (the scheduler reads it)
AWAY_PAUSE = 5.0  # seconds without API calls after one got no answer (a scheduler tick must not wait on each)
RESYNC = 30.0  # seconds between checks that a Deployment is still as this runner left it
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
ROLE_HINT = "grant it to mountd's service account in the Role 'pachy' (pachctl deploy makes it)"
SecretSource = Callable[[str], dict[str, str]]
# What the runner asks of the API (pachctl deploy's Role must grant it): (API group, resource) -> verbs.
RBAC_NEEDS: dict[tuple[str, str], set[str]] = {
    ("apps", "deployments"): {"get", "list", "create", "update", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "secrets"): {"get", "list", "create", "update", "delete"},
    ("", "services"): {"get", "list", "create", "update", "delete"},
}
# Used when granted, done without otherwise: marking the pods a scale-down should remove first
# (patch), and cancel (delete).
RBAC_WANTS: dict[tuple[str, str], set[str]] = {("", "pods"): {"patch", "delete"}}


@dataclass
class _Deployed:
    """What this runner knows is applied for a pipeline (made, or adopted)."""

    version: int
    digest: str
    replicas: int
    key: str
    checked: float = 0.0  # when the Deployment was last seen to be as recorded (time.monotonic)


class KubernetesRunner:
    name = "kubernetes"
    max_workers: int | None = MAX_WORKERS

    def __init__(self, api_client, settings: PodSettings, home: str, *, token: str | None = None,
                 on_exit: OnExit | None = None, on_trouble: OnTrouble | None = None, secret: bytes | None = None):
        from kubernetes import client

        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.settings = settings
        self.home = home
        self.token = token
        self.on_exit = on_exit
        self.on_trouble = on_trouble
        self.secret = secret if secret is not None else credentials.daemon_secret(home)
        self.read_secret: SecretSource | None = None  # the scheduler's store (use_secret_store)
        self._lock = threading.RLock()
        self._deployed: dict[str, _Deployed] = {}
        self._api_trouble: dict[str, str] = {}  # pipeline -> why the API refused what ensure asked
        self._told: dict[str, str] = {}  # pipeline -> the trouble last reported
        self._secrets_applied: dict[str, str] = {}  # mountd secret name -> hash of the data applied
        self._away_until = 0.0  # the API server did not answer: no calls before then
        self._away_why = ""
        self._undeleted: set[str] = set()  # pipelines stopped whose objects could not all be deleted yet
        self._adopt()
        self.watch = PodWatch(self, on_exit=on_exit, on_change=self._pods_changed)
        try:
            self.watch.start()
        except Exception as exc:  # noqa: BLE001 - as for _adopt: said at start
            raise PfsError(f"the kubernetes runner cannot start: "
                           f"{explain(exc, 'list', 'pods', settings.namespace)}") from None

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_environment(cls, address: str, home: str, *, token: str | None = None, on_exit: OnExit | None = None,
                         on_trouble: OnTrouble | None = None) -> KubernetesRunner:
        """From the kubeconfig (KUBECONFIG, else ~/.kube/config) or, in a pod, the in-cluster
        config; PACHY_KUBE_* settings (kube/README.md). PfsError saying what to do if there is
        no cluster to talk to."""
        api_client, namespace = connect()
        namespace = os.environ.get("PACHY_KUBE_NAMESPACE", "").strip() or namespace
        lazy = os.environ.get("PACHY_KUBE_LAZY", "").strip().lower()
        if lazy not in ("", "privileged", "copy"):
            raise PfsError(f"PACHY_KUBE_LAZY='{lazy}': expected 'privileged' (lazy inputs through FUSE in a "
                           "privileged sidecar) or unset (lazy inputs are copied)")
        secret = credentials.daemon_secret(home)
        settings = PodSettings(
            namespace=namespace,
            image=os.environ.get("PACHY_KUBE_IMAGE", "").strip() or f"pachy:{__version__}",
            address=os.environ.get("PACHY_KUBE_ADDRESS", "").strip() or f"pachd.{namespace}.svc.cluster.local:650",
            daemon=credentials.daemon_label(secret),
            lazy_privileged=lazy == "privileged",
            pull_secret=os.environ.get("PACHY_KUBE_PULL_SECRET", "").strip(),
        )
        return cls(api_client, settings, home, token=token, on_exit=on_exit, on_trouble=on_trouble, secret=secret)

    def use_secret_store(self, read: SecretSource) -> None:
        """How to read mountd's secrets (``pachctl create-secret``), which become Kubernetes
        Secrets ``pachy-secret-<name>`` for the pods (the scheduler hands over its store's)."""
        self.read_secret = read

    def _adopt(self) -> None:
        """The Deployments a previous mountd on this home left: kept as they are (same digest),
        not made again. Also the first call to the API: an unreachable cluster, or RBAC that
        forbids listing, is said here, at start."""
        ns = self.settings.namespace
        try:
            found = self.apps.list_namespaced_deployment(
                ns, label_selector=label_selector({"app": "pipeline", "pachy.daemon": self.settings.daemon}),
                _request_timeout=TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - ApiException, urllib3's connection errors
            raise PfsError(f"the kubernetes runner cannot start: {explain(exc, 'list', 'deployments', ns)}") \
                from None
        for d in found.items:
            meta = d.metadata
            pipeline = (meta.annotations or {}).get("pachy.pipeline", "")
            labels = meta.labels or {}
            try:
                version = int(labels.get("pachy.version", ""))
            except ValueError:
                continue
            if not pipeline:
                continue
            have = self._deployed.get(pipeline)
            if have is None or have.version < version:
                self._deployed[pipeline] = _Deployed(version, labels.get("pachy.spec", ""), d.spec.replicas or 0,
                                                     credentials.version_key(self.secret, pipeline, version),
                                                     time.monotonic())
        if self._deployed:
            log.info("kubernetes runner: adopted the workers of %s", ", ".join(sorted(self._deployed)))

    # -- the interface --------------------------------------------------------------

    def capabilities(self, spec: WorkerSpec) -> Capabilities:
        lazy = self.settings.lazy_privileged
        return Capabilities(runner="kubernetes", gpus=1 << 20, cpu_memory_limits=True, port_mapping=True,
                            lazy_inputs=lazy, lazy_inputs_why="" if lazy else
                            "the cluster's mountd copies lazy inputs (PACHY_KUBE_LAZY=privileged serves them "
                            "through FUSE in a privileged sidecar)")

    def owns(self, spec: WorkerSpec) -> bool:
        return True

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        if not spec.image:
            self._api_troubled(pipeline, "transform.image is not set: on Kubernetes every pipeline runs in "
                                         "an image; set it and update the pipeline")
            return []
        workers = max(0, workers)
        stopped: list[str] = []
        if time.monotonic() < self._away_until:
            # The API server did not answer a moment ago: said for this pipeline too; asked again later.
            self._api_troubled(pipeline, self._away_why)
            return stopped
        with self._lock:
            # (wanted again: its objects are made anew, and its other versions' deleted, below)
            self._undeleted.discard(pipeline)
            left = sorted(self._undeleted)
        for gone in left:
            self._delete_pipeline(gone)
        try:
            self._sync_secrets(spec)
            with self._lock:
                have = self._deployed.get(pipeline)
            if have is not None and time.monotonic() - have.checked > RESYNC:
                have = self._resync(pipeline, have)
            if have is None or have.version != spec.version or have.digest != spec.digest:
                key = credentials.version_key(self.secret, pipeline, spec.version)
                self._apply(pipeline, spec, workers, key)
                with self._lock:
                    self._deployed[pipeline] = _Deployed(spec.version, spec.digest, workers, key, time.monotonic())
                stopped += self._delete_others(pipeline, spec.version)
            elif have.replicas != workers:
                stopped += self._scale(pipeline, spec, have.replicas, workers)
                with self._lock:
                    have.replicas = workers
        except PatchError as exc:
            self._api_troubled(pipeline, f"pod_spec/pod_patch cannot apply to the worker pod: {exc}")
            return stopped
        except PfsError as exc:
            self._api_troubled(pipeline, exc.message)
            return stopped
        except Exception as exc:  # noqa: BLE001 - the API's errors: said, tried again next tick
            from kubernetes.client.exceptions import ApiException

            verb, resource = getattr(exc, "pachy_what", ("update", "objects"))
            self._api_troubled(pipeline, explain(exc, verb, resource, self.settings.namespace))
            if not isinstance(exc, ApiException):
                # No answer at all: every pipeline's calls would wait out their timeouts each tick.
                self._away_until = time.monotonic() + AWAY_PAUSE
                self._away_why = explain(exc, verb, resource, self.settings.namespace)
            return stopped
        self._api_troubled(pipeline, "")
        return stopped

    def stop(self, pipeline: str, timeout: float = 5.0) -> None:
        with self._lock:
            self._deployed.pop(pipeline, None)
        self.watch.forget(pipeline)
        self._delete_pipeline(pipeline)
        self._api_troubled(pipeline, "")

    def _delete_pipeline(self, pipeline: str) -> bool:
        """Delete every object of ``pipeline``; one that cannot be deleted now (the API server
        away, RBAC) is tried again on later calls to ``ensure``, so none is left behind."""
        try:
            self._delete_where(selector(self.settings, pipeline))
        except Exception as exc:  # noqa: BLE001
            log.warning("kubernetes runner: cannot delete the workers of %s (tried again later): %s", pipeline,
                        explain(exc, "delete", "deployments", self.settings.namespace))
            with self._lock:
                self._undeleted.add(pipeline)
            return False
        with self._lock:
            self._undeleted.discard(pipeline)
        return True

    def cancel(self, pipeline: str, worker_id: str) -> bool:
        if self.watch.pipeline_of(worker_id) != pipeline:
            return False
        try:
            self.core.delete_namespaced_pod(worker_id, self.settings.namespace, grace_period_seconds=0,
                                            _request_timeout=TIMEOUT)
        except Exception as exc:  # noqa: BLE001
            log.warning("kubernetes runner: cannot delete pod %s: %s", worker_id, exc)
            return False
        return True

    def running(self, pipeline: str) -> int:
        with self._lock:
            have = self._deployed.get(pipeline)
        return self.watch.ready(pipeline, have.version) if have is not None else 0

    def authenticate(self, credential: str) -> tuple[str, str] | None:
        claimed = credentials.parse(credential) if credential else None
        if claimed is None:
            return None
        pipeline, pod = claimed
        with self._lock:
            have = self._deployed.get(pipeline)
        if have is None or not credentials.check(credential, have.key) or self.watch.dead(pod):
            return None
        return pipeline, pod

    def close(self, timeout: float = 5.0) -> None:
        """Stop watching; the workers keep running (a new mountd on this home adopts them)."""
        self.watch.stop()

    # -- objects --------------------------------------------------------------------

    def _apply(self, pipeline: str, spec: WorkerSpec, workers: int, key: str) -> None:
        ns = self.settings.namespace
        for obj in worker_objects(spec, workers, key, self.settings, token=self.token):
            kind, name = obj["kind"], obj["metadata"]["name"]
            create, read, replace = {
                "Secret": (self.core.create_namespaced_secret, self.core.read_namespaced_secret,
                           self.core.replace_namespaced_secret),
                "Deployment": (self.apps.create_namespaced_deployment, self.apps.read_namespaced_deployment,
                               self.apps.replace_namespaced_deployment),
                "Service": (self.core.create_namespaced_service, self.core.read_namespaced_service,
                            self.core.replace_namespaced_service),
            }[kind]
            resource = kind.lower() + "s"
            current = _call("get", resource, read, name, ns, missing_ok=True)
            if current is None:
                _call("create", resource, create, ns, obj)
                continue
            current = self.api.sanitize_for_serialization(current)
            labels = (current.get("metadata") or {}).get("labels") or {}
            if labels.get("pachy.daemon") != self.settings.daemon:
                raise PfsError(f"{kind} {name} in namespace '{ns}' is not this mountd's (another pachd's, "
                               f"pachy.daemon={labels.get('pachy.daemon', 'none')}); run each pachd in a namespace "
                               "of its own, or delete that pipeline there")
            if kind == "Deployment" and labels.get("pachy.spec") == spec.digest:
                # Adopted as it is (a restarted mountd): only its replicas may need to change.
                if (current.get("spec") or {}).get("replicas") != workers:
                    _call("patch", "deployments", self.apps.patch_namespaced_deployment, name, ns,
                          {"spec": {"replicas": workers}})
                continue
            obj["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            if kind == "Service":  # the cluster's own choices stay (replace must keep them)
                obj["spec"]["clusterIP"] = (current.get("spec") or {}).get("clusterIP") or None
                if obj["spec"]["clusterIP"] is None:
                    del obj["spec"]["clusterIP"]
            _call("update", resource, replace, name, ns, obj)

    def _resync(self, pipeline: str, have: _Deployed) -> _Deployed | None:
        """Check now and then that the Deployment is still as this runner left it (someone may
        have deleted or scaled it: ``kubectl``); None if it is gone (made again)."""
        found = _call("get", "deployments", self.apps.read_namespaced_deployment, object_name(pipeline, have.version),
                      self.settings.namespace, missing_ok=True)
        with self._lock:
            if found is None:
                log.warning("kubernetes runner: the Deployment of %s is gone; making it again", pipeline)
                self._deployed.pop(pipeline, None)
                return None
            have.replicas = found.spec.replicas or 0
            have.digest = (found.metadata.labels or {}).get("pachy.spec", "")
            have.checked = time.monotonic()
            return have

    def _scale(self, pipeline: str, spec: WorkerSpec, before: int, workers: int) -> list[str]:
        """Change replicas; shrinking, first mark the pods to go (not ready ones, then the newest)
        so the ReplicaSet removes those, and return their names (their tasks go back at once)."""
        ns, name = self.settings.namespace, object_name(pipeline, spec.version)
        victims: list[str] = []
        if workers < before:
            victims = self.watch.choose_victims(pipeline, spec.version, before - workers)
            for pod in victims:
                try:
                    _call("patch", "pods", self.core.patch_namespaced_pod, pod, ns,
                          {"metadata": {"annotations": {DELETION_COST: "-1000"}}}, missing_ok=True)
                except Exception as exc:  # noqa: BLE001 - a hint only: the ReplicaSet then picks by itself
                    log.warning("kubernetes runner: cannot mark pod %s to go first: %s", pod,
                                explain(exc, "patch", "pods", ns))
        # (the Deployment itself, not its scale subresource: one RBAC rule fewer)
        _call("patch", "deployments", self.apps.patch_namespaced_deployment, name, ns,
              {"spec": {"replicas": workers}})
        return victims

    def _delete_others(self, pipeline: str, version: int) -> list[str]:
        """Earlier (or later) versions' objects of ``pipeline``: an update's cleanup."""
        labels = selector(self.settings, pipeline)
        others = f"{label_selector(labels)},pachy.version!={version}"
        gone = self.watch.pods_of(pipeline, exclude_version=version)
        self._delete_where(labels, others)
        return gone

    def _delete_where(self, labels: dict[str, str], text: str | None = None) -> None:
        ns, sel = self.settings.namespace, text or label_selector(labels)
        found = _call("list", "deployments", self.apps.list_namespaced_deployment, ns, label_selector=sel)
        for d in found.items:
            _call("delete", "deployments", self.apps.delete_namespaced_deployment, d.metadata.name, ns,
                  propagation_policy="Background", missing_ok=True)
        for resource, lister, deleter in (
            ("services", self.core.list_namespaced_service, self.core.delete_namespaced_service),
            ("secrets", self.core.list_namespaced_secret, self.core.delete_namespaced_secret),
        ):
            for o in _call("list", resource, lister, ns, label_selector=sel).items:
                _call("delete", resource, deleter, o.metadata.name, ns, missing_ok=True)

    def _sync_secrets(self, spec: WorkerSpec) -> None:
        """mountd's secrets this spec reads, as Kubernetes Secrets (made, or replaced when their
        data changed in mountd's store since last applied)."""
        if self.read_secret is None:
            return
        ns = self.settings.namespace
        for name in sorted({s.name for s in spec.secrets}):
            try:
                data = self.read_secret(name)
            except PfsError:
                continue  # deleted since create-pipeline: the job's tasks fail saying so
            digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
            if self._secrets_applied.get(name) == digest:
                continue
            obj = user_secret(name, data, self.settings)
            kname = obj["metadata"]["name"]
            if _call("get", "secrets", self.core.read_namespaced_secret, kname, ns, missing_ok=True) is None:
                _call("create", "secrets", self.core.create_namespaced_secret, ns, obj)
            else:
                _call("update", "secrets", self.core.replace_namespaced_secret, kname, ns, obj)
            self._secrets_applied[name] = digest

    # -- trouble ----------------------------------------------------------------------

    def _api_troubled(self, pipeline: str, message: str) -> None:
        with self._lock:
            if message:
                self._api_trouble[pipeline] = message
            else:
                self._api_trouble.pop(pipeline, None)
        self._tell(pipeline)

    def _pods_changed(self, pipeline: str) -> None:
        self._tell(pipeline)

    def _tell(self, pipeline: str) -> None:
        """Report ``pipeline``'s trouble (the API's first, else its pods') when it changed."""
        with self._lock:
            have = self._deployed.get(pipeline)
            message = self._api_trouble.get(pipeline) or (
                self.watch.trouble(pipeline, have.version) if have is not None else "")
            if self._told.get(pipeline, "") == message:
                return
            self._told[pipeline] = message
        if self.on_trouble is not None:
            self.on_trouble(pipeline, message)


def _call(verb: str, resource: str, fn, *args, missing_ok: bool = False, **kwargs):
    """One API call with a timeout; a 404 is None when ``missing_ok``; other errors are raised
    marked with what was asked (for ``explain``)."""
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, _request_timeout=TIMEOUT, **kwargs)
    except ApiException as exc:
        if exc.status == 404 and missing_ok:
            return None
        exc.pachy_what = (verb, resource)  # type: ignore[attr-defined]
        raise
    except Exception as exc:
        try:
            exc.pachy_what = (verb, resource)  # type: ignore[attr-defined]
        except AttributeError:
            pass
        raise


def explain(exc: BaseException, verb: str, resource: str, namespace: str) -> str:
    """An API error as what it means and what to do."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        detail = exc.reason or ""
        try:
            detail = json.loads(exc.body or "{}").get("message") or detail
        except (ValueError, AttributeError):
            pass
        if exc.status == 403:
            return (f"RBAC forbids mountd to {verb} {resource} in namespace '{namespace}' ({detail}); "
                    f"{ROLE_HINT}; the runner tries again each second")
        if exc.status == 401:
            return f"the Kubernetes API server refused mountd's credentials ({detail}); check the kubeconfig"
        return f"the Kubernetes API server refused to {verb} {resource}: {exc.status} {detail}"
    text = str(exc).strip().splitlines()
    return (f"the Kubernetes API server does not answer ({text[0][:200] if text else type(exc).__name__}); "
            "check that the cluster is up (kubectl get pods) and that the kubeconfig points at it; the runner "
            f"asks again every {AWAY_PAUSE:g} s")


def connect():
    """(an API client, the namespace the config names): the kubeconfig (KUBECONFIG, else
    ~/.kube/config), else the in-cluster config of a pod. PfsError if neither is there."""
    from kubernetes import client, config

    cfg = client.Configuration()
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0].strip()
    default = os.path.expanduser("~/.kube/config")
    namespace = "default"
    if path or os.path.exists(default):
        path = path or default
        if not os.path.exists(path):
            raise PfsError(f"the kubernetes runner cannot start: no kubeconfig at {path} (KUBECONFIG); "
                           "point KUBECONFIG at your cluster's kubeconfig, or unset it")
        try:
            config.load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
            _contexts, active = config.list_kube_config_contexts(config_file=path)
            namespace = ((active or {}).get("context") or {}).get("namespace") or namespace
        except Exception as exc:  # noqa: BLE001 - config.ConfigException, YAML errors
            raise PfsError(f"the kubernetes runner cannot start: the kubeconfig {path} cannot be used: {exc}; "
                           "fix it (kubectl config view) or point KUBECONFIG at another") from None
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except Exception as exc:  # noqa: BLE001
            raise PfsError(f"the kubernetes runner cannot start: the in-cluster config cannot be used: {exc}") \
                from None
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                namespace = f.read().strip() or namespace
        except OSError:
            pass
    else:
        raise PfsError("the kubernetes runner cannot start: no cluster configured (no kubeconfig at "
                       f"{default}, KUBECONFIG unset, and not in a pod); point KUBECONFIG at your cluster's "
                       "kubeconfig, run mountd in the cluster (pachctl deploy), or use --runner local")
    return client.ApiClient(cfg), namespace
