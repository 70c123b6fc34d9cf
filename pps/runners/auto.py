"""Choosing the runner: ``--runner auto|local|docker|kubernetes|none``.

``auto`` composes several runners and gives each pipeline to the first that
``owns`` its :class:`WorkerSpec` (Docker for a spec naming an image when a
Docker engine answers, the local runner for the rest). It remembers which
runner has which pipeline, so that stopping, counting, cancelling and
authenticating reach the right one, and a pipeline whose spec moves to
another runner (an update adds or drops ``transform.image``) has its old
workers stopped first.
"""

from __future__ import annotations

import importlib
import logging
import threading

from pfsfuse.errors import InvalidArgument, PfsError
from pps.runners.base import NullRunner, OnExit, OnTrouble, Runner, WorkerSpec
from pps.runners.local import LocalRunner
from pps.spec import Capabilities

log = logging.getLogger("pps.runners")

CHOICES = ("auto", "local", "docker", "kubernetes", "none")


class AutoRunner:
    """Routes each pipeline to the first of ``runners`` that owns its spec."""

    name = "auto"

    def __init__(self, runners: list[Runner]):
        if not runners:
            raise ValueError("AutoRunner needs at least one runner")
        self.runners = list(runners)
        self._lock = threading.Lock()
        self._where: dict[str, tuple[Runner, WorkerSpec]] = {}  # pipeline -> (runner, spec it was given)

    def pick(self, spec: WorkerSpec) -> Runner:
        for r in self.runners:
            if r.owns(spec):
                return r
        return self.runners[-1]  # the last is the catch-all (local), which owns everything

    def _of(self, pipeline: str) -> Runner | None:
        with self._lock:
            where = self._where.get(pipeline)
        return where[0] if where is not None else None

    def capabilities(self, spec: WorkerSpec) -> Capabilities:
        return self.pick(spec).capabilities(spec)

    def owns(self, spec: WorkerSpec) -> bool:
        return any(r.owns(spec) for r in self.runners)

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        runner = self.pick(spec)
        with self._lock:
            old = self._where.get(pipeline)
            self._where[pipeline] = (runner, spec)
        stopped: list[str] = []
        if old is not None and old[0] is not runner:
            # Moved (the spec now names an image, or no longer does): the old runner's workers
            # go first; their ids are returned so that their tasks go back to the queue.
            log.info("pipeline %s moves from the %s runner to the %s runner", pipeline, old[0].name, runner.name)
            stopped += old[0].ensure(pipeline, old[1], 0) or []
            old[0].stop(pipeline)
        return stopped + (runner.ensure(pipeline, spec, workers) or [])

    def stop(self, pipeline: str, timeout: float = 5.0) -> None:
        runner = self._of(pipeline)
        # Unknown (never ensured since this daemon started): ask every runner, stopping nothing is cheap.
        for r in [runner] if runner is not None else self.runners:
            r.stop(pipeline, timeout)

    def cancel(self, pipeline: str, worker_id: str) -> bool:
        runner = self._of(pipeline)
        return runner.cancel(pipeline, worker_id) if runner is not None else False

    def running(self, pipeline: str) -> int:
        runner = self._of(pipeline)
        return runner.running(pipeline) if runner is not None else 0

    def authenticate(self, credential: str) -> tuple[str, str] | None:
        for r in self.runners:
            found = r.authenticate(credential)
            if found is not None:
                return found
        return None

    def close(self, timeout: float = 5.0) -> None:
        # All at once: each runner's workers get the same grace, not one runner's after another's.
        threads = [threading.Thread(target=r.close, args=(timeout,), name=f"close-{r.name}", daemon=True)
                   for r in self.runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 10)


def _docker(address: str, home: str, token: str | None, on_exit: OnExit | None) -> Runner:
    """The Docker runner, or PfsError saying why there is none (not installed, no engine)."""
    try:
        module = importlib.import_module("pps.runners.docker")
    except ImportError as exc:
        raise PfsError(f"the docker runner is not available in this build ({exc}); "
                       "use --runner local (or auto)") from None
    try:
        return module.DockerRunner(address, home, token=token, on_exit=on_exit)
    except PfsError:
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's client raises many kinds; all mean "no Docker"
        raise PfsError(f"the docker runner cannot start: {exc}; or run pipelines on this host: --runner local") \
            from None


def _kubernetes(address: str, home: str, token: str | None, on_exit: OnExit | None,
                on_trouble: OnTrouble | None) -> Runner:
    """The Kubernetes runner (kube/runner.py), or PfsError saying why there is none. Loaded by
    name: kube/ builds on pps's specs and runner protocol, and pps never imports it statically."""
    try:
        module = importlib.import_module("kube.runner")
    except ImportError as exc:
        raise PfsError(f"the kubernetes runner is not available in this build ({exc}); "
                       "use --runner local, docker or auto") from None
    return module.KubernetesRunner.from_environment(address, home, token=token, on_exit=on_exit,
                                                    on_trouble=on_trouble)


def build_runner(choice: str, address: str, home: str, *, token: str | None = None,
                 on_exit: OnExit | None = None, on_trouble: OnTrouble | None = None) -> Runner:
    """The runner ``choice`` names (see CHOICES), talking to the daemon at ``address``."""
    choice = (choice or "auto").strip().lower()
    if choice not in CHOICES:
        raise InvalidArgument(f"unknown runner '{choice}' (expected one of {', '.join(CHOICES)})")
    if choice == "none":
        return NullRunner()
    if choice == "kubernetes":
        return _kubernetes(address, home, token, on_exit, on_trouble)
    if choice == "docker":
        return _docker(address, home, token, on_exit)
    local = LocalRunner(address, home, token=token, on_exit=on_exit)
    if choice == "local":
        return local
    try:
        docker = _docker(address, home, token, on_exit)
    except PfsError as exc:
        log.warning("runner auto: pipelines run locally, even those naming an image (%s)", exc.message)
        return local
    return AutoRunner([docker, local])
