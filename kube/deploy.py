"""The objects ``pachctl deploy`` makes: mountd as the cluster's ``pachd``.

``manifests(opts)`` returns them in the order they are applied (a pod's
ServiceAccount, Secrets and claim exist before the StatefulSet that uses
them). Pure data: no cluster is contacted here, so ``--dry-run`` is fast and
what is printed is exactly what would be applied.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from kube.objects import PACHD_SELECTOR, env_field, env_secret, env_value, meta
from pfsfuse import __version__

NAME = "pachy"  # ServiceAccount, Role and RoleBinding
TOKEN_SECRET = "pachy-token"
STORAGE_SECRET = "pachy-storage"
METADATA_CLAIM = "pachd-metadata"
PACHD = "pachd"  # StatefulSet, Service, container
HOME = "/var/lib/pachy"  # mountd's --home: the SQLite metadata, on the claim
OBJECTS = HOME + "/objects"  # the `local` target's object store (a host directory)
API_PORT = 650
NODE_PORT = 30650
HEALTH_PATH = "/healthz"  # mountd's route that answers without a token

# What mountd's Kubernetes runner does with the API (kube/runner.py's
# RBAC_NEEDS and RBAC_WANTS), and nothing else: one Deployment, Secret (the
# worker key) and, for service pipelines, Service per pipeline version, made,
# scaled, replaced on update and deleted; pipeline secrets as Secrets; a watch
# on the workers' pods (a dead or stuck worker), which it may also mark for a
# scale-down (patch: pod-deletion-cost) and delete (cancel). No events, no
# logs (workers send theirs to mountd), nothing cluster-wide: a Role, in
# pachy's namespace only.
RUNNER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets", "services"], "verbs": ["get", "list", "create", "update", "delete"]},
]


@dataclass
class S3Options:
    """An S3-compatible object store (AWS, GCS's interoperability API, MinIO, a gateway)."""

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint: str | None = None  # None: AWS
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass
class DeployOptions:
    target: str = "local"  # local, custom, amazon, google, microsoft
    namespace: str = "default"
    version: str = __version__
    registry: str | None = None
    image: str | None = None  # the whole image reference; overrides registry and version
    image_pull_secret: str | None = None
    token: str | None = None  # None: a new random one
    host_path: str = "/var/pachy"  # `local`: where the objects live on the node
    s3: S3Options | None = None  # every target but `local`
    metadata_size: str = "10Gi"
    storage_class: str | None = None  # None: the cluster's default StorageClass
    cpu: str = "250m"
    memory: str = "512Mi"
    memory_limit: str | None = None
    node_port: int = NODE_PORT
    cluster_domain: str = "cluster.local"
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def pachd_image(self) -> str:
        if self.image:
            return self.image
        name = f"pachy:{self.version}"
        return f"{self.registry}/{name}" if self.registry else name

    @property
    def store(self) -> str:
        return self.s3.url if self.s3 else OBJECTS

    @property
    def address(self) -> str:
        """Where worker sidecars dial mountd: the Service's cluster DNS name."""
        return f"{PACHD}.{self.namespace}.svc.{self.cluster_domain}:{API_PORT}"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def service_account(o: DeployOptions) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(NAME, o.namespace)}


def role(o: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta(NAME, o.namespace),
        "rules": [dict(rule, verbs=list(rule["verbs"])) for rule in RUNNER_RULES],
    }


def role_binding(o: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta(NAME, o.namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": o.namespace}],
    }


def token_secret(o: DeployOptions, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(TOKEN_SECRET, o.namespace),
        "type": "Opaque",
        "data": {"token": _b64(token)},
    }


# Keys of the storage Secret, named as the variables mountd's S3 store reads
# (boto3's chain; PACHY_S3_ENDPOINT for a non-AWS endpoint).
def _storage_values(s3: S3Options) -> dict[str, str]:
    values = {
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_SESSION_TOKEN": s3.session_token,
        # boto3 reads AWS_DEFAULT_REGION; newer SDKs read AWS_REGION: both.
        "AWS_REGION": s3.region,
        "AWS_DEFAULT_REGION": s3.region,
        "PACHY_S3_ENDPOINT": s3.endpoint,
    }
    return {k: v for k, v in values.items() if v}


def storage_secret(o: DeployOptions) -> dict[str, Any]:
    assert o.s3 is not None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(STORAGE_SECRET, o.namespace),
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in _storage_values(o.s3).items()},
    }


def metadata_claim(o: DeployOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],  # one mountd owns the SQLite metadata
        "resources": {"requests": {"storage": o.metadata_size}},
    }
    if o.storage_class:
        spec["storageClassName"] = o.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(METADATA_CLAIM, o.namespace),
            "spec": spec}


def _env(o: DeployOptions) -> list[dict[str, Any]]:
    env = [
        env_secret("PACHY_TOKEN", TOKEN_SECRET, "token"),
        env_field("PACHY_KUBE_NAMESPACE", "metadata.namespace"),
        env_value("PACHY_KUBE_IMAGE", o.pachd_image),
        env_value("PACHY_KUBE_ADDRESS", o.address),
    ]
    if o.image_pull_secret:
        env.append(env_value("PACHY_KUBE_PULL_SECRET", o.image_pull_secret))
    if o.s3:
        env += [env_secret(key, STORAGE_SECRET, key) for key in _storage_values(o.s3)]
    return env


def _probe(period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": HEALTH_PATH, "port": "api"}, "periodSeconds": period,
            "timeoutSeconds": timeout, "failureThreshold": failures}


def pachd_container(o: DeployOptions) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": o.cpu, "memory": o.memory}}
    if o.memory_limit:
        resources["limits"] = {"memory": o.memory_limit}
    mounts = [{"name": "metadata", "mountPath": HOME}]
    if not o.s3:
        mounts.append({"name": "objects", "mountPath": OBJECTS})
    return {
        "name": PACHD,
        "image": o.pachd_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "mountd", "--home", HOME, "--listen", f"0.0.0.0:{API_PORT}",
                    "--runner", "kubernetes", "--store", o.store],
        "env": _env(o),
        "ports": [{"name": "api", "containerPort": API_PORT, "protocol": "TCP"}],
        "volumeMounts": mounts,
        # Opening a large metadata file may take a while: the startup probe gives it
        # five minutes before liveness (a minute of silence restarts it) takes over.
        "startupProbe": _probe(period=2, timeout=3, failures=150),
        "readinessProbe": _probe(period=5, timeout=3, failures=3),
        "livenessProbe": _probe(period=10, timeout=5, failures=6),
        "resources": resources,
    }


def pachd_statefulset(o: DeployOptions) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "metadata", "persistentVolumeClaim": {"claimName": METADATA_CLAIM}},
    ]
    if not o.s3:
        volumes.append({"name": "objects", "hostPath": {"path": o.host_path, "type": "DirectoryOrCreate"}})
    pod: dict[str, Any] = {
        "serviceAccountName": NAME,
        # The Service's variables (PACHD_PORT=tcp://...) would only confuse.
        "enableServiceLinks": False,
        "containers": [pachd_container(o)],
        "volumes": volumes,
    }
    if o.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": o.image_pull_secret}]
    labels = {**PACHD_SELECTOR, "app.kubernetes.io/version": o.version}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(PACHD, o.namespace, labels),
        "spec": {
            # One replica: SQLite has one writer, and the claim is ReadWriteOnce.
            "replicas": 1,
            "serviceName": PACHD,
            "selector": {"matchLabels": dict(PACHD_SELECTOR)},
            "template": {"metadata": {"labels": meta(PACHD, None, labels)["labels"]}, "spec": pod},
        },
    }


def pachd_service(o: DeployOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(PACHD, o.namespace, dict(PACHD_SELECTOR)),
        "spec": {
            "type": "NodePort",
            "selector": dict(PACHD_SELECTOR),
            "ports": [{"name": "api", "port": API_PORT, "targetPort": "api", "protocol": "TCP",
                       "nodePort": o.node_port}],
        },
    }


def manifests(opts: DeployOptions, token: str | None = None) -> list[dict[str, Any]]:
    """Every object, in apply order. ``token`` (else ``opts.token``, else a new
    random one) goes into the ``pachy-token`` Secret."""
    objs = [service_account(opts), role(opts), role_binding(opts),
            token_secret(opts, token or opts.token or new_token())]
    if opts.s3:
        objs.append(storage_secret(opts))
    objs += [metadata_claim(opts), pachd_statefulset(opts), pachd_service(opts)]
    return objs


def to_json(objs: list[dict[str, Any]]) -> str:
    """A kubectl ``List``: what ``kubectl apply/delete -f -`` reads in one document."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=2) + "\n"


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """One YAML document per object."""
    import yaml

    return yaml.safe_dump_all(objs, sort_keys=False, explicit_start=True)
