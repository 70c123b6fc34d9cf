"""Talking to a Kubernetes API server for ``pachctl deploy``: where it is
(kubeconfig or in-cluster), plain JSON requests with deadlines, and every
failure turned into an error that says what was refused and what to do.

Objects stay plain dicts (the ones :mod:`kube.deploy` builds), so requests go
through the client's transport (auth, TLS, proxies from the kubeconfig)
without its typed models.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from pfsfuse.errors import (
    AlreadyExists,
    Forbidden,
    InvalidArgument,
    NotFound,
    PfsError,
    Unauthorized,
    Unreachable,
)

# kind -> (API path prefix, resource name); every kind deploy and undeploy touch.
RESOURCES: dict[str, tuple[str, str]] = {
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Secret": ("/api/v1", "secrets"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "Deployment": ("/apis/apps/v1", "deployments"),
}
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
NO_CLUSTER = (
    "no Kubernetes cluster configured: not running inside a cluster, and no kubeconfig file at "
    "{where} (KUBECONFIG, ~/.kube/config); to see the objects use --dry-run; to run pachy on this "
    "machine without Kubernetes: pachctl daemon"
)


@dataclass
class Cluster:
    api: Any  # kubernetes.client.ApiClient
    server: str
    context: str  # the kubeconfig context, or "in-cluster"
    namespace: str
    timeout: tuple[float, float] = (5.0, 30.0)  # connect, read: no request hangs

    def request(self, method: str, kind: str, name: str | None = None, *, body: Any = None,
                query: dict[str, str] | None = None, sub: str = "",
                content_type: str = "application/json") -> dict[str, Any]:
        """One request on ``kind``/``name`` in the namespace; the answer as a dict.
        Raises NotFound (404), AlreadyExists (409), Forbidden, Unauthorized,
        Unreachable or PfsError, each with a message fit for ``error:``."""
        import urllib3

        prefix, plural = RESOURCES[kind]
        path = f"{prefix}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "") + sub
        resource = plural + sub
        verb = _VERBS[method] if name or method != "GET" else "list"
        method_, url, headers, body_, _ = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(method_, url, headers, body_, _request_timeout=self.timeout)
            resp.read()
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(
                f"cannot reach the Kubernetes API server at {self.server}: {_why(exc)}; check that "
                f"the cluster runs and that the context '{self.context}' points at it "
                "(kubectl cluster-info)") from None
        if 200 <= resp.status < 300:
            return json.loads(resp.data or b"{}")
        raise self._failure(resp.status, _message(resp.data), verb, resource, name)

    def _failure(self, status: int, message: str, verb: str, resource: str, name: str | None) -> PfsError:
        what = f"{resource}/{name}" if name else resource
        exc: PfsError
        if status == 404:
            exc = NotFound(f"{what} not found in namespace '{self.namespace}'")
            if re.match(r'namespaces? "[^"]*" not found', message):
                exc = NotFound(f"namespace '{self.namespace}' does not exist on {self.server}; create "
                               f"it (kubectl create namespace {self.namespace}) or choose another "
                               "with --namespace")
        elif status == 409:
            exc = AlreadyExists(f"{what} already exists in namespace '{self.namespace}': {message}")
        elif status == 403:
            exc = Forbidden(
                f"Kubernetes forbids '{verb}' on {resource} in namespace '{self.namespace}' "
                f"(context '{self.context}'): {message}; ask a cluster administrator for a Role in "
                f"'{self.namespace}' that grants '{verb}' on '{resource}' (check with: kubectl auth "
                f"can-i {verb} {resource} -n {self.namespace})")
        elif status == 401:
            exc = Unauthorized(
                f"the Kubernetes API server at {self.server} did not accept the credentials of "
                f"context '{self.context}': {message}; renew them (kubectl get pods tells whether "
                "they work)")
        elif status == 422:
            exc = InvalidArgument(f"Kubernetes refused {what}: {message}")
        else:
            exc = PfsError(f"the Kubernetes API server at {self.server} answered {status} to "
                           f"'{verb}' on {what}: {message}")
        exc.status = status  # type: ignore[attr-defined]
        return exc

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        try:
            return self.request("GET", kind, name)
        except NotFound:  # no such object (or namespace: creating will say so)
            return None

    def list(self, kind: str, selector: str) -> list[dict[str, Any]]:
        return self.request("GET", kind, query={"labelSelector": selector}).get("items") or []

    def delete(self, kind: str, name: str) -> bool:
        """Delete; False when it was not there. Dependents (a StatefulSet's pods,
        a Deployment's ReplicaSets) go with it, in the background."""
        try:
            self.request("DELETE", kind, name, query={"propagationPolicy": "Background"})
        except NotFound:
            return False
        return True


def _message(data: bytes | None) -> str:
    """The ``message`` of a Kubernetes Status answer, else the body's start."""
    try:
        body = json.loads(data or b"")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    text = (data or b"").decode(errors="replace").strip()
    return text[:200] or "(no message)"


def _why(exc: Exception) -> str:
    """The useful end of a urllib3 failure: 'Connection refused', not object reprs."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    m = re.search(r"\[Errno -?\d+\] ([^')\]]+)", text)
    if m:
        return m.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text.split(": ", 1)[-1][:200]


def _kubeconfig_files(flag: str | None) -> tuple[list[str], str]:
    """The kubeconfig files that exist, and where they were looked for."""
    if flag:
        path = os.path.expanduser(flag)
        if not os.path.isfile(path):
            raise InvalidArgument(f"--kubeconfig: no such file: {flag}")
        return [path], flag
    where = os.environ.get("KUBECONFIG") or "~/.kube/config"
    paths = [os.path.expanduser(p) for p in where.split(os.pathsep) if p]
    return [p for p in paths if os.path.isfile(p)], where


def connect(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
            connect_timeout: float = 5.0) -> Cluster:
    """The cluster of the kubeconfig's current (or the given) context, else the
    one this process runs in. ``namespace`` defaults to the context's, then
    'default'."""
    import urllib3
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    files, where = _kubeconfig_files(kubeconfig)
    if files:
        joined = os.pathsep.join(files)
        try:
            config.load_kube_config(config_file=joined, context=context, client_configuration=cfg,
                                    persist_config=False)
            contexts, active = config.list_kube_config_contexts(joined)
        except (ConfigException, ValueError, OSError) as exc:
            raise PfsError(f"cannot use the kubeconfig {where}: {exc}") from None
        ctx = next((c for c in contexts if c.get("name") == context), None) if context else active
        ctx_name = (ctx or {}).get("name") or "?"
        namespace = namespace or ((ctx or {}).get("context") or {}).get("namespace") or "default"
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        if context:
            raise InvalidArgument("--context: there is no kubeconfig here, only the cluster this runs in")
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise PfsError(f"cannot use the in-cluster configuration: {exc}") from None
        ctx_name = "in-cluster"
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                namespace = namespace or f.read().strip()
        except OSError:
            pass
        namespace = namespace or "default"
    else:
        raise PfsError(NO_CLUSTER.format(where=where))
    # A dead server must fail in seconds: one quick retry of the connection, none
    # of reads (they may not be idempotent), and a connect timeout on every call.
    cfg.retries = urllib3.util.Retry(total=1, connect=1, read=0, status=0, redirect=0, backoff_factor=0.2)
    return Cluster(client.ApiClient(cfg), cfg.host, ctx_name, namespace, (connect_timeout, 30.0))
