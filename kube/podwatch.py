"""The Kubernetes runner's pod watch: which workers are ready, which ended, what is wrong.

One thread lists this daemon's worker pods once, then watches them from that
list's resource version (no polling); a watch that ends is resumed from the
last version seen, and one the server says is too old (410 Gone) starts over
from a fresh list. Each pod is read by ``kube/podstatus.py``; a container that
ended is reported once (``on_exit``), and every change tells the runner to
recompute the pipeline's trouble (``on_change``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kube.pods import label_selector
from kube.podstatus import PodReading, read_pod
from pps.runners.base import OnExit

log = logging.getLogger("kube.runner")

WATCH_SECONDS = 60  # one watch request's length; then it is resumed from where it was
TIMEOUT = (5.0, WATCH_SECONDS + 15.0)
DEAD_KEPT = 10_000  # names of pods known gone, remembered to refuse their credentials


class PodWatch:
    def __init__(self, runner: Any, *, on_exit: OnExit | None, on_change: Callable[[str], None]):
        self.core = runner.core
        self.api = runner.api
        self.namespace = runner.settings.namespace
        self.selector = label_selector({"app": "pipeline", "pachy.daemon": runner.settings.daemon})
        self.on_exit = on_exit
        self.on_change = on_change
        self._lock = threading.Lock()
        self._pods: dict[str, tuple[PodReading, str]] = {}  # name -> (reading, creationTimestamp)
        self._dead: OrderedDict[str, None] = OrderedDict()
        self._ended: set[str] = set()  # container terminations already reported
        self._expected: set[str] = set()  # pods the runner itself removes: their end is no news
        self._stop = threading.Event()
        self._watch = None
        self._thread: threading.Thread | None = None

    # -- what the runner asks ------------------------------------------------------------

    def start(self) -> None:
        """List the pods now (so a restarted mountd knows its adopted workers at once), then watch."""
        rv = self._list(initial=True)
        self._thread = threading.Thread(target=self._run, args=(rv,), name="kube-pod-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def ready(self, pipeline: str, version: int) -> int:
        with self._lock:
            return sum(1 for r, _c in self._pods.values()
                       if r.pipeline == pipeline and r.version == version and r.ready and not r.deleting)

    def trouble(self, pipeline: str, version: int) -> str:
        with self._lock:
            found = sorted((r.name, r.trouble) for r, _c in self._pods.values()
                           if r.pipeline == pipeline and r.version == version and r.trouble and not r.deleting)
        return found[0][1] if found else ""

    def dead(self, pod: str) -> bool:
        with self._lock:
            known = self._pods.get(pod)
            return pod in self._dead or (known is not None and known[0].deleting)

    def pipeline_of(self, pod: str) -> str:
        with self._lock:
            known = self._pods.get(pod)
        return known[0].pipeline if known is not None else ""

    def choose_victims(self, pipeline: str, version: int, n: int) -> list[str]:
        """``n`` pods to remove when shrinking: not ready ones first, then the newest."""
        with self._lock:
            pods = [(r, c) for r, c in self._pods.values()
                    if r.pipeline == pipeline and r.version == version and not r.deleting]
            pods.sort(key=lambda rc: rc[1], reverse=True)
            pods.sort(key=lambda rc: rc[0].ready)
            chosen = [r.name for r, _c in pods[:n]]
            self._expected.update(chosen)
        return chosen

    def pods_of(self, pipeline: str, exclude_version: int) -> list[str]:
        """The pods of ``pipeline``'s other versions (about to be deleted: their end is no news)."""
        with self._lock:
            names = [r.name for r, _c in self._pods.values() if r.pipeline == pipeline and r.version != exclude_version]
            self._expected.update(names)
        return names

    def forget(self, pipeline: str) -> None:
        """The pipeline is stopped or deleted: its pods' ends are no news."""
        with self._lock:
            self._expected.update(r.name for r, _c in self._pods.values() if r.pipeline == pipeline)

    # -- the watch ----------------------------------------------------------------------

    def _list(self, initial: bool = False) -> str:
        found = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector, _request_timeout=TIMEOUT)
        pods = [self.api.sanitize_for_serialization(p) for p in found.items]
        names = {(p.get("metadata") or {}).get("name") for p in pods}
        with self._lock:
            vanished = [n for n in self._pods if n not in names]
        for name in vanished:
            self._gone(name)
        for pod in pods:
            self._seen(pod, report=not initial)
        return found.metadata.resource_version or ""

    def _run(self, rv: str) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        pause = 0.5
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                self._watch = watch.Watch()
                for event in self._watch.stream(self.core.list_namespaced_pod, self.namespace,
                                                label_selector=self.selector, resource_version=rv,
                                                timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True,
                                                deserialize=False, _request_timeout=TIMEOUT):
                    if self._stop.is_set():
                        break
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event.get("type") == "DELETED":
                        self._gone((obj.get("metadata") or {}).get("name", ""))
                    elif event.get("type") in ("ADDED", "MODIFIED"):
                        self._seen(obj)
                pause = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    rv = ""  # too old: start over from a fresh list
                    continue
                log.warning("kubernetes runner: the pod watch failed (%s %s); again in %.1f s", exc.status,
                            exc.reason, pause)
                self._stop.wait(pause)
                pause, rv = min(pause * 2, 10.0), ""
            except Exception as exc:  # noqa: BLE001 - connection errors: the API server is away for a while
                if self._stop.is_set():
                    return
                log.warning("kubernetes runner: the pod watch failed (%s); again in %.1f s", exc, pause)
                self._stop.wait(pause)
                pause, rv = min(pause * 2, 10.0), ""

    def _seen(self, pod: dict[str, Any], report: bool = True) -> None:
        r = read_pod(pod)
        if not r.pipeline:
            return
        created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
        with self._lock:
            self._pods[r.name] = (r, created)
            new = [e for e in r.ended if e.key not in self._ended]
            self._ended.update(e.key for e in new)
            quiet = r.deleting or r.name in self._expected
            if r.deleting:
                self._bury(r.name)
        if report and not quiet and self.on_exit is not None:
            for e in new:
                log.info("kubernetes runner: pod %s: container %s ended (%s, exit code %d)", r.name, e.container,
                         e.reason or "?", e.code)
                self.on_exit(r.pipeline, r.name, e.code)
        self.on_change(r.pipeline)

    def _gone(self, name: str) -> None:
        with self._lock:
            known = self._pods.pop(name, None)
            self._bury(name)
            expected = name in self._expected
            self._expected.discard(name)
        if known is None:
            return
        r = known[0]
        if not expected and not r.deleting and self.on_exit is not None:
            # Deleted by someone else (kubectl delete, an eviction): its task goes to another worker.
            self.on_exit(r.pipeline, name, -1)
        self.on_change(r.pipeline)

    def _bury(self, name: str) -> None:
        self._dead[name] = None
        while len(self._dead) > DEAD_KEPT:
            self._dead.popitem(last=False)
