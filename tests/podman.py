"""Kubernetes objects executed for real by podman's Kubernetes YAML engine (``podman kube play``).

No Kubernetes runs here, but podman 4.3 plays Pods, Deployments and
PersistentVolumeClaims with init containers, emptyDirs, env and secret
volumes. ``for_podman`` turns the objects pachy generates into what it can
play, changing only what podman 4.3 cannot take as it is (each change says
why); ``Kube`` plays them, waits on containers with deadlines, collects logs,
and tears everything down.

What is converted:
- StatefulSet -> its pod template as a Pod ``<name>-0`` (the name its
  controller would give): podman plays no StatefulSets.
- Service -> a ``hostPort`` on the matching containers' target port (podman
  plays no Services); the host port is the test's.
- ServiceAccount, Role, RoleBinding: dropped (no API server to authorize).
- Secret -> a podman secret made beforehand. podman 4.3 reads one format for
  ``env.valueFrom.secretKeyRef`` (a map of base64 values) and another for a
  ``secret`` volume (a Secret whose ``data`` values it writes verbatim): the
  secret holds the decoded values for volumes, and env refs become literal
  values here.
- ``restartPolicy: Always`` -> ``OnFailure`` in a pod with init containers:
  podman 4.3 applies the pod's policy to init containers, restarts a finished
  one forever, and gives up on the pod after conmon's 20 s timeout.
- env ``fieldRef: metadata.namespace`` -> the namespace (podman 4.3 knows only
  ``metadata.name`` and a few others).
- a ``secret`` volume without ``optional`` gets ``optional: false`` (podman
  4.3 dereferences it unchecked and panics).
- ``hostPath`` volumes -> under the test's directory (never the host's /var),
  but for those the test made there itself.
- ``emptyDir`` volumes -> named ``<pod>-<volume>``: podman 4.3 makes an emptyDir a
  named volume of the volume's own name, shared by every pod that names one alike
  (two workers' ``pachy-bin`` would be one directory) and kept after the pod.
- names podman keeps globally (pods, the volumes of claims and secrets, the
  secrets) get the ``Kube``'s prefix, so a test never meets, nor removes,
  another's ``pachd-metadata``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE_NETWORK = "podman-default-kube-network"  # the network podman kube play puts pods on
BUILD_TIMEOUT = 900.0
DROPPED_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def require_podman() -> str:
    """podman's path; fails the test when it is missing (installers/install.sh --test installs
    it), unless PACHY_TEST_NO_PODMAN=1 says the podman tests are left out on this machine."""
    path = shutil.which("podman")
    if path:
        return path
    why = "podman is not installed (installers/install.sh --test installs it)"
    if os.environ.get("PACHY_TEST_NO_PODMAN") == "1":
        pytest.skip(f"{why} (PACHY_TEST_NO_PODMAN=1)")
    pytest.fail(f"{why}; set PACHY_TEST_NO_PODMAN=1 to leave the podman tests out", pytrace=False)


def podman(*args: str, timeout: float = 120.0, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ensure_pachy_image() -> str:
    """The pachy image in podman's store, built by installers/build-image.sh (a no-op when an
    image of the same sources is there); its tag."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run([str(ROOT / "installers" / "build-image.sh"), "--engine", "podman"],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"installers/build-image.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def ensure_busybox_image() -> str:
    """pachy-test/busybox:1 (tests/images.py) in podman's store."""
    from tests.images import BUSYBOX_IMAGE, REVISION, busybox_rootfs

    have = podman("image", "inspect", "--format", '{{ index .Labels "pachy.test.revision" }}', BUSYBOX_IMAGE,
                  check=False)
    if have.returncode != 0 or have.stdout.strip() != REVISION:
        proc = subprocess.run(["podman", "import", "--quiet", "--change", f"LABEL pachy.test.revision={REVISION}",
                               "-", BUSYBOX_IMAGE], input=busybox_rootfs(), capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return BUSYBOX_IMAGE


def kube_gateway() -> str:
    """The address pods on podman's kube network reach the host at (made if missing)."""
    if podman("network", "exists", KUBE_NETWORK, check=False).returncode != 0:
        podman("network", "create", KUBE_NETWORK)
    info = json.loads(podman("network", "inspect", KUBE_NETWORK).stdout)[0]
    return info["subnets"][0]["gateway"]


# -- conversion ---------------------------------------------------------------------------


@dataclass
class Converted:
    docs: list[dict[str, Any]] = field(default_factory=list)  # what podman kube play gets
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> decoded data
    claims: list[str] = field(default_factory=list)  # podman volumes made for PVCs and emptyDirs
    pods: list[str] = field(default_factory=list)  # the pods podman will run


def _secret_data(obj: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    data.update(obj.get("stringData") or {})
    return data


def _templates(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec holder of a Pod or Deployment (its ``spec`` or template)."""
    return doc if doc["kind"] == "Pod" else doc["spec"]["template"]


def _fix_pod(spec: dict[str, Any], secrets: dict[str, dict[str, str]], namespace: str, host_dir: Path,
             prefix: str, pod: str, volumes: list[str]) -> None:
    if spec.get("initContainers") and spec.get("restartPolicy", "Always") == "Always":
        spec["restartPolicy"] = "OnFailure"
    renamed = {}
    for vol in spec.get("volumes") or []:
        if "emptyDir" in vol:
            renamed[vol["name"]] = vol["name"] = f"{pod}-{vol['name']}"
            volumes.append(vol["name"])
        if "secret" in vol:
            vol["secret"].setdefault("optional", False)
            vol["secret"]["secretName"] = prefix + vol["secret"]["secretName"]
        if "persistentVolumeClaim" in vol:
            vol["persistentVolumeClaim"]["claimName"] = prefix + vol["persistentVolumeClaim"]["claimName"]
        if "hostPath" in vol and not vol["hostPath"]["path"].startswith(f"{host_dir.parent.parent}/"):
            local = host_dir / vol["hostPath"]["path"].lstrip("/")
            local.mkdir(parents=True, exist_ok=True)
            vol["hostPath"] = {"path": str(local), "type": "Directory"}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for m in c.get("volumeMounts") or []:
            m["name"] = renamed.get(m["name"], m["name"])
        env = []
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {})
            if "secretKeyRef" in ref:
                s = ref["secretKeyRef"]
                if s["name"] not in secrets or s["key"] not in secrets[s["name"]]:
                    if s.get("optional"):
                        continue
                    raise AssertionError(f"env {e['name']}: no secret {s['name']} key {s['key']} among the objects")
                e = {"name": e["name"], "value": secrets[s["name"]][s["key"]]}
            elif (ref.get("fieldRef") or {}).get("fieldPath") == "metadata.namespace":
                e = {"name": e["name"], "value": namespace}
            env.append(e)
        if env:
            c["env"] = env


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def for_podman(objects: list[dict[str, Any]], host_dir: Path, *, host_ports: dict[str, int] | None = None,
               namespace: str = "default", prefix: str = "") -> Converted:
    """What podman 4.3 plays of ``objects`` (module docstring). ``host_ports`` maps a Service's
    name to the host port its (first) port is published at; ``prefix`` goes before the names
    podman keeps (``Converted``'s are the prefixed ones)."""
    out = Converted()
    services = []
    for obj in copy.deepcopy(objects):
        kind = obj["kind"]
        if kind in DROPPED_KINDS:
            continue
        if kind == "Secret":
            out.secrets[obj["metadata"]["name"]] = _secret_data(obj)
        elif kind == "Service":
            services.append(obj)
        elif kind == "PersistentVolumeClaim":
            obj["metadata"]["name"] = prefix + obj["metadata"]["name"]
            out.claims.append(obj["metadata"]["name"])
            out.docs.append(obj)
        elif kind == "StatefulSet":
            name, template = obj["metadata"]["name"], obj["spec"]["template"]
            out.docs.append({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {**template.get("metadata", {}), "name": f"{prefix}{name}-0"},
                             "spec": template["spec"]})
        elif kind in ("Pod", "Deployment"):
            obj["metadata"]["name"] = prefix + obj["metadata"]["name"]
            out.docs.append(obj)
        else:
            raise AssertionError(f"for_podman: no conversion for a {kind}")
    for doc in out.docs:
        if doc["kind"] == "PersistentVolumeClaim":
            continue
        holder = _templates(doc)
        out.pods.append(doc["metadata"]["name"] + ("-pod-0" if doc["kind"] == "Deployment" else ""))
        _fix_pod(holder["spec"], out.secrets, namespace, host_dir, prefix, out.pods[-1], out.claims)
        labels = (holder.get("metadata") or {}).get("labels") or {}
        for svc in services:
            name = svc["metadata"]["name"]
            if name not in (host_ports or {}) or not _matches(svc["spec"].get("selector") or {}, labels):
                continue
            target = svc["spec"]["ports"][0].get("targetPort", svc["spec"]["ports"][0]["port"])
            for c in holder["spec"]["containers"]:
                for p in c.get("ports") or []:
                    if target in (p.get("name"), p["containerPort"]):
                        p["hostPort"] = host_ports[name]
    return out


# -- playing --------------------------------------------------------------------------------


class Kube:
    """Objects played under podman; everything made is removed by ``close`` (use ``with``)."""

    def __init__(self, workdir: Path, namespace: str = "default", prefix: str = "") -> None:
        self.workdir = workdir
        self.prefix = prefix or f"pachy-test-{os.urandom(3).hex()}-"
        self.namespace = namespace
        self.pods: list[str] = []
        self.secrets: list[str] = []
        self.volumes: list[str] = []
        self._n = 0

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def play(self, objects: list[dict[str, Any]], *, host_ports: dict[str, int] | None = None) -> Converted:
        conv = for_podman(objects, self.workdir / "hostpath", host_ports=host_ports, namespace=self.namespace,
                          prefix=self.prefix)
        for name, data in ((self.prefix + n, d) for n, d in conv.secrets.items()):
            # a secret volume's data stays in a podman volume of the secret's name: a stale one wins
            podman("volume", "rm", "-f", name, check=False)
            podman("secret", "rm", name, check=False)
            podman("secret", "create", name, "-", input=json.dumps({"data": data}))
            self.secrets.append(name)
            self.volumes.append(name)
        self.volumes += conv.claims
        self.pods += conv.pods
        self._n += 1
        path = self.workdir / f"play-{self._n}.yaml"
        path.write_text(yaml.safe_dump_all(conv.docs, sort_keys=False))
        podman("kube", "play", str(path), timeout=180)
        return conv

    def inspect(self, container: str) -> dict[str, Any] | None:
        proc = podman("container", "inspect", container, check=False)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None

    def wait_running(self, container: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for ``container`` to run; fails with its logs if it exited or never started."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.inspect(container)
            state = (info or {}).get("State", {})
            if state.get("Status") == "running":
                return info  # type: ignore[return-value]
            if state.get("Status") == "exited":
                raise AssertionError(f"{container} exited ({state.get('ExitCode')}):\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{container} not running after {timeout} s ({state}):\n{self.logs()}")
            time.sleep(0.05)

    def log_lines(self, container: str) -> list[tuple[float, str]]:
        """(unix time, line) of what ``container`` wrote, podman's own timestamps."""
        proc = podman("logs", "-t", container, check=False)  # the container's stderr on podman's
        out = []
        for line in (proc.stdout + proc.stderr).splitlines():
            stamp, _, text = line.partition(" ")
            out.append((_unix(stamp), text))
        return sorted(out)

    def logs(self) -> str:
        parts = []
        for pod in self.pods:
            names = podman("ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}}", check=False).stdout.split()
            for name in names:
                if not name.endswith("-infra"):
                    proc = podman("logs", name, check=False)
                    parts.append(f"--- {name}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        # -t 0: the agent (pid 1 of a user container) ignores SIGTERM; nothing here needs grace
        for pod in self.pods:
            podman("pod", "rm", "-f", "-t", "0", pod, check=False)
        for name in self.secrets:
            podman("secret", "rm", name, check=False)
        for name in self.volumes:
            podman("volume", "rm", "-f", name, check=False)
        self.pods, self.secrets, self.volumes = [], [], []


def _unix(stamp: str) -> float:
    """podman's RFC 3339 timestamp (nanoseconds, a zone) as unix time."""
    import datetime
    import re

    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$", stamp)
    if not m:
        return 0.0
    zone = "+00:00" if m.group(3) in (None, "Z") else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{(m.group(2) or '0')[:6].ljust(6, '0')}{zone}").timestamp()


@contextlib.contextmanager
def kube(workdir: Path) -> Iterator[Kube]:
    k = Kube(workdir)
    try:
        yield k
    finally:
        k.close()
