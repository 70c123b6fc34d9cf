"""Worker credentials on Kubernetes (pps/WORKERS.md, "Kubernetes").

A pod cannot be handed a secret through a pipe as a local worker is, and
mountd may restart while its workers keep running. So the credential is
derived, not stored:

- the daemon's secret: 32 random bytes in ``<home>/kube-worker-secret``
  (0600), made once; the home is mountd's volume, so a restarted mountd has
  the same one and accepts the workers already running;
- a pipeline version's key: ``HMAC(daemon secret, "<pipeline>:<version>")``
  (hex), in the Secret ``pipeline-<name>-v<N>`` mounted only in the shim's
  container (user code never sees it);
- a worker's credential: ``k1:<pipeline>:<pod>:<HMAC(key, "<pipeline>:<pod>")>``
  (``shim/__main__.py``'s ``derive_credential`` makes it from the key file).

The runner recomputes the key of the pipeline's *current* version: a pod of
an earlier version (its key differs) is refused, as is one known dead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

SECRET_FILE = "kube-worker-secret"


def daemon_secret(home: str) -> bytes:
    """The daemon's secret, made (0600) on first use."""
    path = os.path.join(home, SECRET_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    os.makedirs(home, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # the first writer wins (two daemons on one home would disagree otherwise)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, "rb") as f:
        return f.read()


def daemon_label(secret: bytes) -> str:
    """A label value telling this daemon's objects from another's in the same namespace
    (stable across restarts: it comes from the secret in the home)."""
    return hmac.new(secret, b"label", hashlib.sha256).hexdigest()[:16]


def version_key(secret: bytes, pipeline: str, version: int) -> str:
    return hmac.new(secret, f"{pipeline}:{version}".encode(), hashlib.sha256).hexdigest()


def worker_credential(key: str, pipeline: str, pod: str) -> str:
    """What a worker with ``key`` presents as pod ``pod`` (the same as the shim derives)."""
    mac = hmac.new(key.encode(), f"{pipeline}:{pod}".encode(), hashlib.sha256).hexdigest()
    return f"k1:{pipeline}:{pod}:{mac}"


def parse(credential: str) -> tuple[str, str] | None:
    """(pipeline, pod) a credential claims, or None if it is not one of ours."""
    parts = credential.split(":")
    if len(parts) != 4 or parts[0] != "k1" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def check(credential: str, key: str) -> bool:
    claimed = parse(credential)
    return claimed is not None and hmac.compare_digest(credential, worker_credential(key, *claimed))
