"""``pachctl port-forward``: a local TCP port carried to pachd's API port
through the API server (the pod's ``portforward`` subresource, a websocket),
as ``kubectl port-forward`` does. Blocks until interrupted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

from kube import deploy
from kube.cluster import Cluster
from pfsfuse.errors import InvalidArgument, PfsError


def pachd_pod(cluster: Cluster) -> str:
    """The running pachd pod's name, or an error saying why there is none."""
    name = f"{deploy.PACHD}-0"
    pod = cluster.get("Pod", name)
    if pod is None:
        raise PfsError(f"no pachd pod ({name}) in namespace '{cluster.namespace}' on {cluster.server}; "
                       "deploy first (pachctl deploy), or name the namespace with --namespace")
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        raise PfsError(f"pod {name} is {phase or 'Pending'}, not Running; 'pachctl deploy' waits "
                       f"until it is ready, or see kubectl -n {cluster.namespace} describe pod {name}")
    return name


def _pump(src, dst) -> None:
    """Copy until either side closes, then close both (the other pump stops too)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _serve(cluster: Cluster, pod: str, conn: socket.socket, say: Callable[[str], None]) -> None:
    from kubernetes import client
    from kubernetes.stream import portforward

    try:
        core = client.CoreV1Api(cluster.api)
        pf = portforward(core.connect_get_namespaced_pod_portforward, pod, cluster.namespace,
                         ports=str(deploy.API_PORT))
        remote = pf.socket(deploy.API_PORT)
        remote.setblocking(True)
    except Exception as exc:  # the websocket's failures have no common base class
        say(f"error: cannot forward to {pod}:{deploy.API_PORT}: {exc}")
        conn.close()
        return
    back = threading.Thread(target=_pump, args=(remote, conn), daemon=True)
    back.start()
    _pump(conn, remote)
    back.join(timeout=5)
    conn.close()
    with contextlib.suppress(Exception):
        pf.close()


def listen(address: str, port: int) -> socket.socket:
    """The local listening socket, or an error naming --port."""
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((address, port))
    except OSError as exc:
        listener.close()
        raise InvalidArgument(f"--port: cannot listen on {address}:{port}: {exc.strerror}; "
                              "choose another with --port") from None
    listener.listen(64)
    return listener


def forward(cluster: Cluster, pod: str, listener: socket.socket, say: Callable[[str], None]) -> None:
    """Carry each connection accepted on ``listener`` to ``pod``'s API port, until
    the listener is shut down."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # shut down: stop
            return
        threading.Thread(target=_serve, args=(cluster, pod, conn, say), daemon=True).start()


def port_forward(cluster: Cluster, port: int, address: str, say: Callable[[str], None]) -> None:
    """Listen on ``address:port`` and forward each connection to pachd; blocks."""
    pod = pachd_pod(cluster)
    listener = listen(address, port)
    say(f"Forwarding from {address}:{port} -> {pod}:{deploy.API_PORT} (namespace {cluster.namespace})")
    try:
        forward(cluster, pod, listener, say)
    finally:
        listener.close()
