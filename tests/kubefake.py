"""A FAKE Kubernetes API server, for tests only: no Kubernetes runs here.

No API server can be installed on this machine (none in the reachable
registries, and no image can be pulled), so the layers that talk to one —
``pachctl deploy`` applying its objects, the Kubernetes runner's reconcile
loop and pod watch — are tested against this stand-in, served over real
HTTP on loopback to the real ``kubernetes`` client through a real
kubeconfig file. What it does, it does as the API server documents:

- namespaced resources under ``/api/v1`` and ``/apis/<group>/<version>``:
  create (409 if it exists), get, list and watch with ``labelSelector``
  (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!``) and
  ``fieldSelector`` (``metadata.name``, ``metadata.namespace``), replace,
  patch (merge and strategic-merge patches applied as JSON merge patches;
  JSON patches), delete one or a collection; the ``status`` and ``scale``
  subresources;
- ``uid``, ``resourceVersion`` (one counter for all objects),
  ``creationTimestamp``, ``generation`` (bumped when ``spec`` changes); a main
  update keeps ``status``, a status update changes only ``status``;
- watches resume from a ``resourceVersion`` and answer ``410 Gone`` (as an
  ERROR event) for one older than the history kept; ``timeoutSeconds`` ends them;
- deleting an object deletes the objects whose ``ownerReferences`` name it
  (the garbage collector's foreground work, done at once).

What it does not do, and tests must do instead where they need it: no
controllers run. ``run_controllers()`` plays the Deployment and StatefulSet
controllers and the kubelet once (pods for replicas, Running and Ready);
``set_status`` sets what a kubelet would report (a container waiting in
ImagePullBackOff, terminated OOMKilled, a pod unschedulable). No admission,
no defaulting, no authentication; ``forbid`` answers 403 as RBAC would. No
port-forward (it needs the streaming protocols).
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kube.patches import json_patch, merge_patch

HISTORY = 10_000  # watch events kept; older resource versions answer 410 Gone
CLUSTER_SCOPED = {"namespaces", "nodes", "persistentvolumes", "clusterroles", "clusterrolebindings"}

Key = tuple[str, str, str]  # (resource, namespace, name); namespace "" for cluster-scoped resources


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_REQ = re.compile(r"^\s*([A-Za-z0-9._/-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_match(selector: str, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a label selector in its text form."""
    for req in _split_selector(selector or ""):
        req = req.strip()
        if m := _REQ.match(req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (op == "in") != (key in labels and labels[key] in values):
                return False
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def field_match(selector: str, obj: dict) -> bool:
    meta = obj.get("metadata") or {}
    for req in _split_selector(selector or ""):
        neg = "!=" in req
        key, value = (s.strip() for s in req.replace("!=", "=").replace("==", "=").split("=", 1))
        here = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(key)
        if (here == value) == neg:
            return False
    return True


@dataclass
class Denial:
    verb: str
    resource: str


@dataclass
class FakeKubeAPI:
    """The fake's state and its HTTP server; ``with FakeKubeAPI() as api:`` serves it."""

    objects: dict[Key, dict] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    version: int = 1
    _events: list[tuple[int, str, str, dict]] = field(default_factory=list)  # (rv, resource, type, object)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _denials: list[Denial] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _closed: bool = False

    # --- serving ---------------------------------------------------------

    def __enter__(self) -> FakeKubeAPI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-kube-api", daemon=True).start()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self, path: Path, namespace: str = "default", context: str = "fake") -> Path:
        """A kubeconfig file whose current context is this fake (JSON is YAML)."""
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }
        path.write_text(json.dumps(cfg, indent=1))
        return path

    # --- what tests use ----------------------------------------------------

    def forbid(self, verb: str, resource: str) -> None:
        """Answer 403 to ``verb`` (get, list, watch, create, update, patch, delete) on ``resource``."""
        self._denials.append(Denial(verb, resource))

    def allow_all(self) -> None:
        self._denials.clear()

    def get(self, resource: str, namespace: str, name: str) -> dict | None:
        with self._cond:
            obj = self.objects.get((resource, "" if resource in CLUSTER_SCOPED else namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None, selector: str = "") -> list[dict]:
        with self._cond:
            return [copy.deepcopy(o) for (r, ns, _n), o in sorted(self.objects.items())
                    if r == resource and (namespace is None or ns == namespace)
                    and label_match(selector, (o.get("metadata") or {}).get("labels") or {})]

    def count(self, method: str, path_part: str) -> int:
        """How many requests of ``method`` had ``path_part`` in their path."""
        return sum(1 for m, p in self.requests if m == method and path_part in p)

    def put_object(self, resource: str, obj: dict) -> dict:
        """Create or replace ``obj`` as a controller would (events go to watchers)."""
        meta = obj.setdefault("metadata", {})
        key = (resource, "" if resource in CLUSTER_SCOPED else meta.setdefault("namespace", "default"),
               meta["name"])
        with self._cond:
            old = self.objects.get(key)
            return self._store(key, obj, "ADDED" if old is None else "MODIFIED", old)

    def set_status(self, resource: str, namespace: str, name: str, status: dict) -> dict:
        """Replace the object's ``status`` (what a kubelet or controller reports)."""
        with self._cond:
            key = (resource, namespace, name)
            old = self.objects[key]
            new = copy.deepcopy(old)
            new["status"] = status
            return self._store(key, new, "MODIFIED", old, keep_status=False)

    def delete_object(self, resource: str, namespace: str, name: str) -> None:
        with self._cond:
            self._delete((resource, namespace, name))

    def run_controllers(self, ready: bool = True) -> None:
        """One pass of the Deployment/StatefulSet controllers and the kubelet: each has
        ``spec.replicas`` pods from its template (owned by it), Running (and Ready if ``ready``),
        and a status saying so."""
        with self._cond:
            for resource in ("deployments", "statefulsets"):
                for (r, ns, name), owner in list(self.objects.items()):
                    if r != resource:
                        continue
                    want = int((owner.get("spec") or {}).get("replicas", 1))
                    mine = sorted(k for k, o in self.objects.items() if k[0] == "pods" and k[1] == ns and any(
                        ref.get("uid") == owner["metadata"]["uid"]
                        for ref in (o.get("metadata") or {}).get("ownerReferences") or []))
                    for key in mine[want:]:
                        self._delete(key)
                    template = (owner.get("spec") or {}).get("template") or {}
                    for i in range(len(mine), want):
                        pod_name = f"{name}-{i}" if resource == "statefulsets" else \
                            f"{name}-{uuid.uuid4().hex[:5]}"
                        pod = {"apiVersion": "v1", "kind": "Pod",
                               "metadata": {**copy.deepcopy(template.get("metadata") or {}), "name": pod_name,
                                            "namespace": ns,
                                            "ownerReferences": [{"apiVersion": owner.get("apiVersion", "apps/v1"),
                                                                 "kind": owner.get("kind", ""), "name": name,
                                                                 "uid": owner["metadata"]["uid"]}]},
                               "spec": copy.deepcopy(template.get("spec") or {})}
                        self._store(("pods", ns, pod_name), pod, "ADDED", None)
                    for key in sorted(k for k, o in self.objects.items() if k[0] == "pods" and k[1] == ns and any(
                            ref.get("uid") == owner["metadata"]["uid"]
                            for ref in (o.get("metadata") or {}).get("ownerReferences") or [])):
                        pod = self.objects[key]
                        status = pod_status(pod, ready=ready)
                        if pod.get("status") != status:
                            new = copy.deepcopy(pod)
                            new["status"] = status
                            self._store(key, new, "MODIFIED", pod, keep_status=False)
                    count = want if ready else 0
                    new = copy.deepcopy(owner)
                    new["status"] = {"replicas": want, "readyReplicas": count, "availableReplicas": count,
                                     "updatedReplicas": want, "observedGeneration": owner["metadata"]["generation"]}
                    if new["status"] != owner.get("status"):
                        self._store((r, ns, name), new, "MODIFIED", owner, keep_status=False)

    # --- the store (callers hold self._cond) ---------------------------------

    def _store(self, key: Key, obj: dict, kind: str, old: dict | None, keep_status: bool = True) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["name"] = key[2]
        if key[1]:
            meta["namespace"] = key[1]
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
        else:
            om = old["metadata"]
            meta["uid"], meta["creationTimestamp"] = om["uid"], om["creationTimestamp"]
            meta["generation"] = om.get("generation", 1) + (obj.get("spec") != old.get("spec"))
            if keep_status and "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
        self.objects[key] = obj
        self._emit(key[0], kind, obj)
        return copy.deepcopy(obj)

    def _delete(self, key: Key) -> dict | None:
        obj = self.objects.pop(key, None)
        if obj is None:
            return None
        self.version += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.version)
        self._emit(key[0], "DELETED", gone)
        uid = obj["metadata"]["uid"]
        for dep in [k for k, o in self.objects.items()
                    if any(r.get("uid") == uid for r in (o.get("metadata") or {}).get("ownerReferences") or [])]:
            self._delete(dep)
        return gone

    def _emit(self, resource: str, kind: str, obj: dict) -> None:
        self._events.append((self.version, resource, kind, copy.deepcopy(obj)))
        del self._events[:-HISTORY]
        self._cond.notify_all()

    def _denied(self, verb: str, resource: str) -> bool:
        return any(d.verb == verb and d.resource == resource for d in self._denials)

    def _watch(self, resource: str, namespace: str | None, since: int | None, labels: str, fields: str,
               deadline: float) -> Iterator[dict]:
        import time

        def wanted(o: dict) -> bool:
            m = o.get("metadata") or {}
            return (namespace is None or m.get("namespace", "") == namespace) and \
                label_match(labels, m.get("labels") or {}) and field_match(fields, o)

        with self._cond:
            if since is None:
                backlog = [{"type": "ADDED", "object": copy.deepcopy(o)} for (r, _ns, _n), o in
                           sorted(self.objects.items()) if r == resource and wanted(o)]
                cursor = self.version
            elif self._events and since < self._events[0][0] - 1 and since < self.version:
                yield {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                   "message": f"too old resource version: {since}",
                                                   "reason": "Expired", "code": 410}}
                return
            else:
                backlog, cursor = [], since
        yield from backlog
        while True:
            with self._cond:
                while not self._closed and (not self._events or self._events[-1][0] <= cursor):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._cond.wait(left)
                if self._closed:
                    return
                batch = [(rv, k, o) for rv, r, k, o in self._events if rv > cursor and r == resource]
                cursor = self._events[-1][0]
            for _rv, kind, o in batch:
                if wanted(o):
                    yield {"type": kind, "object": o}


def pod_status(pod: dict, *, ready: bool = True) -> dict:
    """What a kubelet reports for a pod whose containers all run."""
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    cond = "True" if ready else "False"
    return {"phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": cond},
                           {"type": "ContainersReady", "status": cond}],
            "containerStatuses": [{"name": n, "ready": ready, "restartCount": 0, "image": "", "imageID": "",
                                   "state": {"running": {"startedAt": _now()}}} for n in names]}


def waiting_status(pod: dict, container: str, reason: str, message: str = "") -> dict:
    """A pod whose ``container`` waits (ImagePullBackOff, CrashLoopBackOff, ...)."""
    status = pod_status(pod, ready=False)
    status["phase"] = "Pending"
    for c in status["containerStatuses"]:
        if c["name"] == container:
            c["state"] = {"waiting": {"reason": reason, "message": message}}
    return status


def terminated_status(pod: dict, container: str, reason: str, exit_code: int) -> dict:
    """A pod whose ``container`` ended (OOMKilled with 137, Error, ...)."""
    status = pod_status(pod, ready=False)
    for c in status["containerStatuses"]:
        if c["name"] == container:
            c["state"] = {"terminated": {"reason": reason, "exitCode": exit_code, "finishedAt": _now()}}
            c["lastState"] = copy.deepcopy(c["state"])
    return status


def unschedulable_status(message: str = "0/3 nodes are available: 3 Insufficient memory.") -> dict:
    return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                "reason": "Unschedulable", "message": message}]}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubeAPI
    group = ""  # the API group of the request being served ("" for the core group)
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet: tests read requests from fake.requests
        pass

    # -- parsing --
    def _route(self) -> tuple[str, str | None, str | None, str | None, dict[str, str]]:
        """(resource, namespace, name, subresource, query) of the request path."""
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        parts = [p for p in split.path.split("/") if p]
        if parts[:1] == ["api"]:
            rest, self.group = parts[2:], ""
        elif parts[:1] == ["apis"]:
            rest, self.group = parts[3:], parts[1]
        else:
            raise LookupError(split.path)
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        else:
            ns = None
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return resource, ns, name, sub, query

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null") if n else None

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code})

    # -- verbs --
    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        # A request is recorded once it has been handled (a watch: once it starts streaming),
        # so a test that waits on fake.count() sees the object as that request left it.
        try:
            self._handle(method)
        finally:
            if "watch=" not in self.path:
                self.fake.requests.append((method, self.path))

    def _handle(self, method: str) -> None:
        fake = self.fake
        if urlsplit(self.path).path in ("/version", "/version/"):
            self._send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "platform": "fake"})
            return
        try:
            resource, ns, name, sub, query = self._route()
        except (LookupError, IndexError):
            self._status(404, "NotFound", f"the server could not find the requested resource ({self.path})")
            return
        body = self._body() if method != "GET" else None  # a DELETE's options too: a kept-alive connection must not see them
        watching = query.get("watch") in ("true", "1")
        verb = {"GET": "watch" if watching else ("get" if name else "list"), "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete" if name else "deletecollection"}[method]
        if fake._denied(verb, resource):
            scope = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            self._status(403, "Forbidden",
                         f'{resource} is forbidden: User "system:serviceaccount:{ns or "default"}:pachy" '
                         f'cannot {verb} resource "{resource}" in API group "{self.group}"{scope}')
            return
        ns_key = "" if resource in CLUSTER_SCOPED else (ns or "default")
        if verb == "watch":
            fake.requests.append((method, self.path))
            self._stream(resource, ns if resource not in CLUSTER_SCOPED else None, query)
            return
        with fake._cond:
            if verb == "list":
                items = [o for (r, n, _), o in sorted(fake.objects.items()) if r == resource
                         and (ns is None or n == ns_key)
                         and label_match(query.get("labelSelector", ""), (o.get("metadata") or {}).get("labels") or {})
                         and field_match(query.get("fieldSelector", ""), o)]
                self._send(200, {"kind": "List", "apiVersion": "v1",
                                 "metadata": {"resourceVersion": str(fake.version)}, "items": items})
                return
            if verb == "deletecollection":
                for key in [k for k, o in fake.objects.items() if k[0] == resource and k[1] == ns_key
                            and label_match(query.get("labelSelector", ""),
                                            (o.get("metadata") or {}).get("labels") or {})]:
                    fake._delete(key)
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})
                return
            if verb == "create":
                key = (resource, ns_key, (body.get("metadata") or {}).get("name", ""))
                if not key[2]:
                    self._status(422, "Invalid", "metadata.name: Required value")
                elif key in fake.objects:
                    self._status(409, "AlreadyExists", f'{resource} "{key[2]}" already exists')
                else:
                    self._send(201, fake._store(key, body, "ADDED", None, keep_status=False))
                return
            key = (resource, ns_key, name or "")
            old = fake.objects.get(key)
            if old is None:
                self._status(404, "NotFound", f'{resource} "{name}" not found')
                return
            if verb == "get":
                self._send(200, _subresource(old, sub))
                return
            if verb == "delete":
                self._send(200, fake._delete(key) or {})
                return
            if method == "PUT":
                new = _apply_sub(old, sub, body)
            else:
                kind = self.headers.get("Content-Type", "")
                current = _subresource(old, sub)
                try:
                    patched = json_patch(current, body) if "json-patch" in kind else merge_patch(current, body)
                except (KeyError, IndexError, ValueError) as exc:
                    self._status(422, "Invalid", f"the patch cannot be applied: {exc}")
                    return
                new = _apply_sub(old, sub, patched)
            want = ((body or {}).get("metadata") or {}).get("resourceVersion") if method == "PUT" else None
            if want and want != old["metadata"]["resourceVersion"]:
                self._status(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the object '
                                              "has been modified; please apply your changes to the latest version")
                return
            stored = fake._store(key, new, "MODIFIED", old, keep_status=sub != "status")
            self._send(200, _subresource(stored, sub))

    def _stream(self, resource: str, ns: str | None, query: dict[str, str]) -> None:
        import time

        rv = query.get("resourceVersion", "")
        since = int(rv) if rv.isdigit() and rv != "0" else None  # "0": any version, i.e. the current state first
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 3600)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in self.fake._watch(resource, ns, since, query.get("labelSelector", ""),
                                          query.get("fieldSelector", ""), deadline):
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def _subresource(obj: dict, sub: str | None) -> dict:
    if sub == "scale":
        m = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": m["name"], "namespace": m.get("namespace", ""),
                             "resourceVersion": m["resourceVersion"]},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0)}}
    return copy.deepcopy(obj)


def _apply_sub(old: dict, sub: str | None, body: dict) -> dict:
    new = copy.deepcopy(old)
    if sub == "status":
        new["status"] = body.get("status", {})
    elif sub == "scale":
        new.setdefault("spec", {})["replicas"] = (body.get("spec") or {}).get("replicas", 0)
    else:
        new = copy.deepcopy(body)
    return new
