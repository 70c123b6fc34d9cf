"""The Docker runner: a pipeline's user code in containers of its own image.

The user's image needs nothing of pachy: no Python, no shim, not even a
shell. Per worker it runs one long-lived container from ``transform.image``
whose entrypoint is pachy's agent (``shim/agent/agent.sh``, run by the
host's static busybox; both bind-mounted read-only at ``/.pachy/bin``),
and, on the host, the worker's shim exactly as the local runner starts it
(same process handling, credential pipe, logs), told to run units through
the agent (``--executor container --ctl DIR``). ``shim/container.py`` is the
other half.

Each container carries labels: ``pachy.daemon`` (a hash of the daemon's
home), ``pachy.pipeline``, ``pachy.worker``, ``pachy.spec`` (the worker
spec's digest: a worker whose spec changed is replaced). A daemon removes
every container labelled with its home that it did not start (left by a
killed predecessor) when it starts and when it closes.

The worker's lifetime is its shim's: the shim ends, its container is
removed; the container ends (OOM-killed agent, ``docker rm -f``), its shim
is stopped and the scheduler hears of it through ``on_exit``.

A pipeline without an image runs as the local runner runs it (this runner
is a local runner that knows containers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace

from pfsfuse.mount import detach_under, make_shared
from pps.runners.base import OnExit, WorkerSpec
from pps.runners.local import LocalRunner, _terminate, _Worker
from pps.spec import Capabilities

AGENT_BIN = "/.pachy/bin"
AGENT_CTL = "/.pachy/ctl"
_AGENT_SH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "shim", "agent", "agent.sh")
BUSYBOX_PATHS = ("/usr/bin/busybox", "/bin/busybox")
RECHECK = 5.0  # a worker that could not get its container tries again after this long
ENGINE_GRACE = 30.0  # an engine gone this long is dead, not restarting: workers start (and fail units saying so)
ENGINE_GRACE_ENV = "PACHY_DOCKER_ENGINE_GRACE"  # seconds, instead of ENGINE_GRACE (tests use 1)
PING_TIMEOUT = 2.0
NO_PROPAGATION = ("the FUSE view cannot reach the container: the worker's scratch is no shared mount "
                  "(the daemon must run as root for that)")
START_DOCKERD = ("start it: systemctl start docker (or run dockerd & as root), then check with docker info")


class DockerUnavailable(RuntimeError):
    """No Docker engine answers; the message says how to start one."""


def find_busybox() -> str:
    """The host's static busybox (the agent's shell and tools in every container)."""
    for path in BUSYBOX_PATHS:
        if os.path.isfile(path) and _is_static(path):
            return path
    raise DockerUnavailable(
        "no static busybox on this host (the Docker runner's agent runs it in every container); "
        "install it: apt-get install busybox-static"
    )


def _is_static(path: str) -> bool:
    """An ELF file without a PT_INTERP header (no dynamic loader needed in the image)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return head[:4] == b"\x7fELF" and b"/ld-linux" not in head and b"ld-musl" not in head


def connect(base_url: str | None = None):
    """A docker client whose engine answers, else DockerUnavailable saying how to start it."""
    import docker

    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # docker.errors.DockerException, requests' connection errors
        where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise DockerUnavailable(f"no Docker engine answers at {where} ({_why_unanswered(exc)}); {START_DOCKERD}") \
            from None


def _why_unanswered(exc: BaseException) -> str:
    """The engine's client wraps the cause in layers of requests/urllib3 text: name it plainly."""
    text = str(exc)
    if "FileNotFoundError" in text or "No such file" in text:
        return "no socket there"
    if "Permission denied" in text or "PermissionError" in text:
        return "permission denied: run the daemon as root, or as a member of the docker group"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    return _short(exc)


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        print(f"docker runner: {ENGINE_GRACE_ENV}={text!r} is not a number of seconds; using {default:g}",
              file=sys.stderr, flush=True)
        return default
    return max(0.0, value)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def daemon_label(home: str) -> str:
    """What tells this daemon's containers from others' (two homes, one engine)."""
    return hashlib.sha256(os.path.abspath(home).encode()).hexdigest()[:16]


class _Box:
    """A worker's container, as the worker keeps it (``_Worker.extra``)."""

    def __init__(self, digest: str, ctl: str, shared: list[str]):
        self.digest = digest
        self.ctl = ctl
        self.shared = shared  # scratch directories this runner made shared mounts of
        self.container = None
        self.error = ""  # the worker could not get its container: its units fail with this
        self.made = time.monotonic()


class DockerRunner(LocalRunner):
    name = "docker"

    def __init__(self, address: str, home: str, *, token: str | None = None, on_exit: OnExit | None = None,
                 base_url: str | None = None):
        super().__init__(address, home, token=token, on_exit=on_exit)
        self.busybox = find_busybox()
        self.docker = connect(base_url)
        self.label = daemon_label(self.home)
        self.root = os.path.join(self.home, "containers")
        self.agent_dir = os.path.join(self.root, "agent")
        self._ready: dict[str, tuple[list[str], _Box]] = {}  # containers made for workers ensure starts next
        self._down_since: float | None = None  # when the engine was first found not answering (a restart?)
        self._sweep = False  # a container could not be removed (engine away): remove_orphans when it is back
        self.engine_grace = _seconds(os.environ.get(ENGINE_GRACE_ENV), ENGINE_GRACE)
        self._install_agent()
        self.remove_orphans()

    # -- the interface --------------------------------------------------------

    def capabilities(self, spec: WorkerSpec) -> Capabilities:
        caps = super().capabilities(spec)
        if not spec.image:
            return caps  # such a pipeline runs as under the local runner
        # The container carries the limits and the port mapping; lazy inputs need FUSE here,
        # and root to share the worker's scratch (where the view is mounted) with the container.
        lazy_why = caps.lazy_inputs_why or ("" if os.geteuid() == 0 else NO_PROPAGATION)
        return replace(caps, runner="docker", cpu_memory_limits=True, cpu_memory_why="", port_mapping=True,
                       lazy_inputs=not lazy_why, lazy_inputs_why=lazy_why)

    def owns(self, spec: WorkerSpec) -> bool:
        return bool(spec.image)

    def _limits_elsewhere(self, spec: WorkerSpec) -> bool:
        return bool(spec.image)  # the container's own limits

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        """As the local runner's, with the containers of missing workers made first, outside
        the runner's lock: a container takes ~0.2 s to start, and every worker request
        (``authenticate``) waits on that lock."""
        made: list[str] = []
        if spec.image:
            with self._lock:
                have = self._workers.get(pipeline, {})
                missing = [f"{pipeline}-{self._run_id}-{i}" for i in range(workers)]
                missing = [wid for wid in missing if wid not in have or not have[wid].alive()]
            if missing or self._down_since is not None or self._sweep:
                # (asked while it is or was away, too: to see it back, and sweep, before it goes again)
                ready = self._engine_ready()
                if missing and not ready:
                    return []  # wait for it: the scheduler asks again next tick (no unit fails meanwhile)
            for wid in missing:
                if wid not in self._ready:
                    self._ready[wid] = self._prepare(pipeline, wid, spec)
                    made.append(wid)
        try:
            return super().ensure(pipeline, spec, workers)
        finally:
            for wid in made:
                ready = self._ready.pop(wid, None)  # made but not used (the worker was alive after all)
                if ready is not None:
                    self._discard(ready[1])

    def _engine_ready(self) -> bool:
        """Whether to make containers now. An engine that does not answer is given
        ``engine_grace`` seconds to come back (``dockerd`` restarted: its containers ended, and their
        workers with them): workers are not started meanwhile, so their units do not fail
        for want of it. After that they start, and their units fail saying to start it.
        Back, it first has the containers it could not remove then removed."""
        try:
            self.docker.api.get(f"{self.docker.api.base_url}/_ping", timeout=PING_TIMEOUT).raise_for_status()
        except Exception as exc:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                print(f"docker runner: the Docker engine does not answer ({_short(exc)}); waiting up to "
                      f"{self.engine_grace:g} s for it before starting workers", file=sys.stderr, flush=True)
            return now - self._down_since > self.engine_grace
        if self._down_since is not None:
            print("docker runner: the Docker engine answers again", file=sys.stderr, flush=True)
            self._down_since = None
        if self._sweep:
            self._sweep = False
            self.remove_orphans()
        return True

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        self.remove_orphans()

    def remove_orphans(self) -> int:
        """Remove this daemon's containers that no live worker of this runner owns."""
        with self._lock:
            mine = {w.extra.container.id for ws in self._workers.values() for w in ws.values()
                    if isinstance(w.extra, _Box) and w.extra.container is not None and w.alive()}
            # and those made for workers about to start (a sweep runs from ensure)
            mine |= {box.container.id for _args, box in self._ready.values()
                     if isinstance(box, _Box) and box.container is not None}
        n = 0
        try:
            found = self.docker.containers.list(all=True, filters={"label": f"pachy.daemon={self.label}"})
        except Exception as exc:  # (the engine away, or a container gone between listing and inspecting)
            self._sweep = True  # try again from the next ensure
            print(f"docker runner: cannot list containers to remove orphans: {_short(exc)}", file=sys.stderr)
            return 0
        for c in found:
            if c.id in mine:
                continue
            try:
                c.remove(force=True)
                n += 1
            except Exception as exc:
                self._sweep = True
                print(f"docker runner: cannot remove orphaned container {c.name}: {_short(exc)}", file=sys.stderr)
            wid = (c.labels or {}).get("pachy.worker", "")
            if wid and "/" not in wid and not wid.startswith("."):
                # and what its worker left on the host: the shared scratch mounts, its control directory
                for d in self._scratch_dirs(wid):
                    if d is not None:
                        detach_under(d)
                        shutil.rmtree(d, ignore_errors=True)
                shutil.rmtree(os.path.join(self.root, wid), ignore_errors=True)
        if n:
            print(f"docker runner: removed {n} container(s) of no live worker (left by a killed daemon "
                  "or an engine restart)", file=sys.stderr, flush=True)
        return n

    # -- containers -------------------------------------------------------------

    def _install_agent(self) -> None:
        """busybox and agent.sh in a directory of this daemon's, mounted read-only everywhere."""
        os.makedirs(self.agent_dir, mode=0o755, exist_ok=True)
        os.chmod(self.root, 0o711)
        os.chmod(self.agent_dir, 0o755)  # the daemon's umask is 077: user code must run busybox too
        for src, name in ((self.busybox, "busybox"), (_AGENT_SH, "agent.sh")):
            dst = os.path.join(self.agent_dir, name)
            tmp = dst + ".tmp"
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dst)

    def _stale(self, w: _Worker, spec: WorkerSpec) -> bool:
        box = w.extra
        if not isinstance(box, _Box):
            return bool(spec.image)
        if box.digest != spec.digest:
            return True
        return bool(box.error) and time.monotonic() - box.made > RECHECK

    def _scratch_dirs(self, wid: str) -> tuple[str, str | None]:
        """(scratch, fast scratch or None) of worker ``wid``, both bound into its container."""
        fast = os.path.join("/dev/shm", f"pachy-docker-{self.label[:8]}-{wid}") if os.path.isdir("/dev/shm") \
            else None
        return os.path.join(self.home, "scratch", wid), fast

    def _prepare(self, pipeline: str, wid: str, spec: WorkerSpec) -> tuple[list[str], object]:
        if not spec.image:
            return [], None
        ready = self._ready.pop(wid, None)
        if ready is not None:
            if isinstance(ready[1], _Box) and ready[1].digest == spec.digest:
                return ready
            self._discard(ready[1])
        scratch, fast = self._scratch_dirs(wid)
        ctl = os.path.join(self.root, wid)
        shutil.rmtree(ctl, ignore_errors=True)
        os.makedirs(os.path.join(ctl, "links"), mode=0o700)
        os.chmod(ctl, 0o711)  # user code follows symlinks through ctl/links (not listed)
        os.chmod(os.path.join(ctl, "links"), 0o711)
        for name in ("cmd", "events"):
            os.mkfifo(os.path.join(ctl, name), 0o600)
        box = _Box(spec.digest, ctl, [])
        args = ["--executor", "container", "--ctl", ctl, "--fast-scratch", fast or "none"]
        info: dict[str, object] = {"image": spec.image, "memory": spec.limits.memory if spec.limits else 0}
        try:
            dirs = [d for d in (scratch, fast) if d]
            for d in dirs:
                _reset_dir(d)
                if _share(d):
                    box.shared.append(d)
            if scratch not in box.shared:
                # The worker's FUSE view is mounted under its scratch after the container started:
                # without a shared mount the container would see an empty directory there.
                args += ["--no-lazy", NO_PROPAGATION]
            box.container = self._create(pipeline, wid, spec, ctl, dirs, box.shared)
            image = box.container.image
            cfg = image.attrs.get("Config") or {}
            info |= {"env": cfg.get("Env") or [], "user": cfg.get("User") or "",
                     "working_dir": cfg.get("WorkingDir") or "",
                     "container": box.container.id, "pid": self._pid(box.container)}
        except Exception as exc:
            box.error = self._explain(spec, exc)
            print(f"docker runner: {wid}: {box.error}", file=sys.stderr, flush=True)
            if box.container is not None:
                _remove(box.container)
                box.container = None
        info["error"] = box.error
        with open(os.path.join(ctl, "image.json"), "w") as f:
            json.dump(info, f)
        return args, box

    def _create(self, pipeline: str, wid: str, spec: WorkerSpec, ctl: str, dirs: list[str], shared: list[str]):
        from docker.types import DeviceRequest, Mount

        mounts = [Mount(AGENT_BIN, self.agent_dir, type="bind", read_only=True),
                  Mount(AGENT_CTL, ctl, type="bind")]
        # rslave where the host side is a shared mount: what is mounted under it later shows inside
        mounts += [Mount(d, d, type="bind", propagation="rslave" if d in shared else None) for d in dirs]
        kwargs: dict[str, object] = {}
        if spec.limits is not None:
            if spec.limits.cpu:
                kwargs["nano_cpus"] = int(spec.limits.cpu * 1e9)
            if spec.limits.memory:
                kwargs["mem_limit"] = spec.limits.memory
                kwargs["memswap_limit"] = spec.limits.memory  # no swap: over the limit is an OOM kill
        if spec.ports:
            kwargs["ports"] = {f"{p.internal}/tcp": p.external or p.internal for p in spec.ports}
        gpu = spec.limits.gpu if spec.limits and spec.limits.gpu else (spec.requests.gpu if spec.requests else 0)
        name = f"pachy-{self.label[:8]}-{wid}"
        labels = {"pachy.daemon": self.label, "pachy.pipeline": pipeline, "pachy.worker": wid,
                  "pachy.spec": spec.digest}
        self.docker.images.get(spec.image)  # ImageNotFound before anything is made
        # A container of this name is the one an earlier worker of this id left when the engine
        # could not be asked to remove it (it was restarting): ours, dead, in the way.
        _remove_named(self.docker, name)

        def run(**extra: object):
            return self.docker.containers.run(
                spec.image,
                entrypoint=[f"{AGENT_BIN}/busybox", "env", "-i", f"{AGENT_BIN}/busybox", "sh", f"{AGENT_BIN}/agent.sh",
                            AGENT_CTL],
                user="0:0",  # the agent; user code runs as transform.user or the image's USER
                name=name, labels=labels, mounts=mounts, detach=True, stdin_open=False,
                # The agent (pid 1, no handler) ignores SIGTERM: `docker stop`, and dockerd's own
                # shutdown, would wait 10 s for nothing before killing it. It has nothing to save.
                stop_signal="SIGKILL",
                environment={}, **kwargs, **extra,
            )

        if gpu:
            try:
                return run(device_requests=[DeviceRequest(count=gpu, capabilities=[["gpu"]])])
            except Exception as exc:  # no GPU (driver) on this host: the request is inert here
                print(f"docker runner: {wid}: no GPU for its device request ({_short(exc)}); running without",
                      file=sys.stderr, flush=True)
                _remove_named(self.docker, name)
        try:
            return run()
        except Exception:
            _remove_named(self.docker, name)  # created, but it would not start (a port taken, ...)
            raise

    @staticmethod
    def _pid(container) -> int:
        """The container's first process on the host (the shim finds its memory cgroup
        from it, for OOM reasons: shim/oom.py), or 0."""
        try:
            container.reload()
            return int(container.attrs["State"]["Pid"] or 0)
        except Exception:  # the engine's errors, an odd answer: no OOM reasons for this worker, nothing worse
            return 0

    def _explain(self, spec: WorkerSpec, exc: BaseException) -> str:
        import docker.errors
        import requests.exceptions

        if isinstance(exc, docker.errors.ImageNotFound) or (
            isinstance(exc, docker.errors.NotFound) and "image" in str(exc).lower()
        ):
            return (f"image '{spec.image}' not found: build or load it (docker images lists what this engine "
                    f"has; no registry is reachable here)")
        if isinstance(exc, (requests.exceptions.ConnectionError, docker.errors.DockerException)) and \
                "connection" in str(exc).lower():
            return f"no Docker engine answers ({_short(exc)}); {START_DOCKERD}"
        return f"cannot start a container of image '{spec.image}': {_short(exc)}"

    def _start(self, pipeline: str, wid: str, spec: WorkerSpec) -> _Worker:
        w = super()._start(pipeline, wid, spec)
        box = w.extra
        if isinstance(box, _Box) and box.container is not None:
            threading.Thread(target=self._watch_container, args=(w, box), name=f"box-{wid}", daemon=True).start()
        return w

    def _watch_container(self, w: _Worker, box: _Box) -> None:
        """The container ended: so does its worker (the scheduler hears it through on_exit)."""
        while w.alive():
            try:
                box.container.wait()
                break
            except Exception:
                # the engine's answer was cut (a restart?): ended only if it says so
                try:
                    box.container.reload()
                    if box.container.status == "running":
                        time.sleep(1.0)
                        continue
                except Exception:
                    pass
                break
        if w.alive() and not w.stopping:
            print(f"docker runner: {w.id}: its container ended; stopping the worker", file=sys.stderr, flush=True)
            try:
                os.killpg(w.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            if not w.exited.wait(5.0):
                _terminate([w], 0.0)

    def _exited(self, w: _Worker) -> None:
        if isinstance(w.extra, _Box):
            self._discard(w.extra)

    def _discard(self, box: object) -> None:
        """Remove a worker's container, its scratch mounts and its control directory."""
        if not isinstance(box, _Box):
            return
        if box.container is not None and not _remove(box.container):
            self._sweep = True  # the engine is away (restarting?): remove it when it answers again
        for d in box.shared:
            detach_under(d)
        for d in box.shared:
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(box.ctl, ignore_errors=True)


def _reset_dir(d: str) -> None:
    """An empty directory ``d`` (0700), made before the container binds it."""
    detach_under(d)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d, mode=0o700)


def _share(d: str) -> bool:
    """Make ``d`` a shared mount of its own, so mounts made under it on the host later
    (lazy inputs' FUSE views) propagate into the container (which binds it rslave)."""
    if os.geteuid() != 0:
        return False
    try:
        make_shared(d)
    except OSError as exc:
        print(f"docker runner: lazy inputs cannot reach the container: {exc}", file=sys.stderr)
        return False
    return True


def _remove(container) -> bool:
    """Remove ``container``; False if it may still be there."""
    try:
        container.remove(force=True)
    except Exception as exc:
        if "No such container" not in str(exc) and "is already in progress" not in str(exc):
            print(f"docker runner: cannot remove container {container.name}: {_short(exc)}", file=sys.stderr)
            return False
    return True


def _remove_named(client, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True)
    except Exception:
        pass
