"""The local runner: a pipeline's workers as ``python -m shim`` processes here.

Each worker runs in a session of its own (so a signal to the daemon's
terminal does not reach it, and a stop reaches all of it); its stdout and
stderr are appended to ``<home>/logs/workers/<worker>.log``. The runner
never restarts a worker: when one exits unasked it calls
``on_exit(pipeline, worker_id, returncode)`` from a watcher thread, and the
scheduler calls ``ensure`` again if it still wants it.

Each worker gets a credential of its own: 32 random bytes written into a
pipe the worker inherits (``--credential-fd``), together with the daemon's
TCP token if any. Neither appears on a command line or in an environment,
where ``ps`` and ``/proc/<pid>/environ`` show them. The runner keeps only a
hash of each credential, and the daemon's worker endpoints answer a worker
only about its own pipeline and tasks (``authenticate``).

A worker whose spec has ``resource_limits.cpu/memory`` runs in a cgroup of
its own (``pps.runners.cgroups``), joined before it execs, removed once it
has exited; where cgroups cannot act, ``capabilities`` says why (a
create-time note).

Imports only the standard library and pps: pps must not depend on the daemon,
the client or the shim; the worker is reached as a command line.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

from pfsfuse.mount import detach_under, fuse_unavailable
from pps.runners import cgroups
from pps.runners.base import OnExit, WorkerSpec
from pps.spec import Capabilities

# The directory holding the pps package (and shim next to it): workers import
# shim from there whether or not the project is installed.
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Worker:
    def __init__(self, pipeline: str, worker_id: str, proc: subprocess.Popen, digest: bytes,
                 cgroup: cgroups.WorkerCgroup | None = None, extra: object = None):
        self.pipeline, self.id, self.proc = pipeline, worker_id, proc
        self.cgroup = cgroup  # its resource limits; removed when it has exited
        self.extra = extra  # what a subclass keeps of it (the Docker runner: its container)
        self.digest = digest  # sha256 of its credential
        self.stopping = False  # asked to stop: its exit is not news
        self.exited = threading.Event()

    def alive(self) -> bool:
        return not self.exited.is_set()


class LocalRunner:
    def __init__(
        self,
        address: str,
        home: str,
        *,
        token: str | None = None,
        on_exit: OnExit | None = None,
    ):
        self.address = address
        self.home = os.path.abspath(home)
        self.token = token
        self.on_exit = on_exit
        self._lock = threading.Lock()
        self._workers: dict[str, dict[str, _Worker]] = {}
        self._credentials: dict[bytes, _Worker] = {}  # sha256(credential) -> the worker it was issued to
        self._closed = False
        self._run_id = os.urandom(2).hex()
        if cgroups.available() is None:
            cgroups.sweep()  # the empty cgroups of a killed daemon's workers

    # -- the interface --------------------------------------------------------

    name = "local"

    def capabilities(self, spec: WorkerSpec) -> Capabilities:
        why = cgroups.available()
        fuse = fuse_unavailable()
        return Capabilities(runner="local", cpu_memory_limits=why is None, cpu_memory_why=why or "",
                            lazy_inputs=fuse is None, lazy_inputs_why=f"no FUSE on this machine ({fuse})" if fuse else "")

    def owns(self, spec: WorkerSpec) -> bool:
        return True

    def cancel(self, pipeline: str, worker_id: str) -> bool:
        with self._lock:
            w = self._workers.get(pipeline, {}).pop(worker_id, None)
        if w is None:
            return False
        _terminate([w], 5.0)
        return True

    def ensure(self, pipeline: str, spec: WorkerSpec, workers: int) -> list[str]:
        """Have exactly ``workers`` live workers ``<pipeline>-<run>-0`` .. ``-<workers-1>``;
        returns the ids of those it stopped (their tasks are for others to take).

        ``<run>`` differs per runner, so workers orphaned by a killed daemon (still
        retrying for a while) never share an id or scratch directory with new ones."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the local runner is closed")
            have = self._workers.setdefault(pipeline, {})
            for i in range(workers):
                wid = f"{pipeline}-{self._run_id}-{i}"
                w = have.get(wid)
                if w is not None and w.alive() and self._stale(w, spec):
                    have.pop(wid)
                    _terminate([w], 5.0)
                    w = None
                if w is None or not w.alive():
                    have[wid] = self._start(pipeline, wid, spec)
            extra = [have.pop(wid) for wid in list(have) if _index(wid) >= workers]
        _terminate(extra, 5.0)
        return [w.id for w in extra]

    def stop(self, pipeline: str, timeout: float = 5.0) -> None:
        """SIGTERM the pipeline's workers, SIGKILL what is left after ``timeout``; waits."""
        with self._lock:
            workers = list(self._workers.pop(pipeline, {}).values())
        _terminate(workers, timeout)

    def authenticate(self, credential: str) -> tuple[str, str] | None:
        """(pipeline, worker id) of the live worker ``credential`` was issued to, else None."""
        if not credential:
            return None
        digest = _digest(credential)
        with self._lock:
            w = self._credentials.get(digest)
        if w is None or not w.alive():
            return None
        return w.pipeline, w.id

    def running(self, pipeline: str) -> int:
        with self._lock:
            return sum(1 for w in self._workers.get(pipeline, {}).values() if w.alive())

    def close(self, timeout: float = 5.0) -> None:
        """Stop every worker (all at once, not one pipeline after another); SIGKILL
        what is left after ``timeout``."""
        with self._lock:
            self._closed = True
            workers = [w for ws in self._workers.values() for w in ws.values()]
            self._workers.clear()
        _terminate(workers, timeout)
        if cgroups.available() is None:
            cgroups.sweep()  # what a killed daemon left (ours are gone with their workers)

    # -- what a subclass may change (the Docker runner) ---------------------------

    def _stale(self, w: _Worker, spec: WorkerSpec) -> bool:
        """Whether live worker ``w`` must make way for one started from ``spec``: never
        here (a local worker takes the transform from each task)."""
        return False

    def _prepare(self, pipeline: str, wid: str, spec: WorkerSpec) -> tuple[list[str], object]:
        """Before the worker starts: (extra shim arguments, what to keep on the worker)."""
        return [], None

    def _limits_elsewhere(self, spec: WorkerSpec) -> bool:
        """Whether something else than a cgroup of ours applies ``spec``'s resource limits
        (the Docker runner: the container)."""
        return False

    def _exited(self, w: _Worker) -> None:
        """After the worker's process ended, before anyone waiting for it hears it."""

    def _discard(self, extra: object) -> None:
        """Undo what ``_prepare`` made (``extra``) for a worker that did not start."""

    # -- processes ------------------------------------------------------------

    def _start(self, pipeline: str, wid: str, spec: WorkerSpec) -> _Worker:
        logs = os.path.join(self.home, "logs", "workers")
        os.makedirs(logs, mode=0o700, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
        for name in ("PACHY_TOKEN", "PACHY_WORKER_CREDENTIAL"):
            env.pop(name, None)  # given through the pipe below, never by the environment
        env["PACHY_HOME"] = self.home  # the worker hides it from user code
        cgroup, join = self._cgroup(wid, spec, log_path := os.path.join(logs, f"{wid}.log"))
        if cgroup is not None and cgroup.memory:
            # The shim names it in an OOM-killed datum's reason, and makes its user code the
            # OOM killer's first choice in the cgroup they share (shim/oom.py).
            env["PACHY_MEMORY_LIMIT"] = str(cgroup.memory)
        credential = secrets.token_urlsafe(32)
        read_end, write_end = os.pipe()
        cmd = [
            sys.executable, "-m", "shim",
            "--pipeline", pipeline,
            "--worker", wid,
            "--address", self.address,
            "--scratch", os.path.join(self.home, "scratch", wid),
            "--credential-fd", str(read_end),
        ]  # fmt: skip
        extra: object = None
        try:
            try:
                args, extra = self._prepare(pipeline, wid, spec)
                cmd += args
                log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                try:
                    proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        env=env,
                        cwd="/",
                        start_new_session=True,
                        close_fds=True,
                        pass_fds=(read_end,),
                        preexec_fn=functools.partial(_before_exec, os.getpid(), join),
                    )
                finally:
                    os.close(log)
            except BaseException:
                # No worker: nothing else would remove its cgroup, or what _prepare made for it.
                if cgroup is not None:
                    cgroup.remove()
                self._discard(extra)
                raise
            finally:
                for fd in join:
                    os.close(fd)
            os.close(read_end)
            read_end = -1
            # A few hundred bytes: the pipe takes them whether or not the worker reads yet.
            os.write(write_end, json.dumps({"credential": credential, "token": self.token}).encode())
        finally:
            if read_end >= 0:
                os.close(read_end)
            os.close(write_end)
        w = _Worker(pipeline, wid, proc, _digest(credential), cgroup, extra)
        self._credentials[w.digest] = w  # under self._lock (ensure holds it)
        threading.Thread(target=self._watch, args=(w,), name=f"watch-{wid}", daemon=True).start()
        return w

    def _cgroup(self, wid: str, spec: WorkerSpec, log_path: str) -> tuple[cgroups.WorkerCgroup | None, list[int]]:
        """The worker's cgroup with ``spec``'s cpu/memory limits, and descriptors for joining it
        (none if no limits are asked, or they cannot act: the create-time note said why; nor
        for a worker whose user code runs in a container, which carries the limits itself)."""
        lim = None if self._limits_elsewhere(spec) else spec.limits
        if lim is None or not (lim.cpu or lim.memory) or cgroups.available() is not None:
            return None, []
        try:
            cgroup = cgroups.create(wid, cpu=lim.cpu, memory=lim.memory)
        except cgroups.CgroupError as exc:  # the worker still runs: say so where its owner looks
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, f"[{wid}] resource_limits do not act on this worker: {exc}\n".encode())
            finally:
                os.close(fd)
            print(f"local runner: {exc}", file=sys.stderr)
            return None, []
        try:
            return cgroup, cgroup.open_procs()
        except cgroups.CgroupError:
            cgroup.remove()
            raise

    def _watch(self, w: _Worker) -> None:
        rc = w.proc.wait()
        if w.cgroup is not None:
            try:
                w.cgroup.remove()  # kills what the worker left in it
            except cgroups.CgroupError as exc:
                print(f"local runner: {exc}", file=sys.stderr)
        if rc < 0:  # killed, so it could not take down its lazy inputs' FUSE view (shim.lazyfs)
            detach_under(os.path.join(self.home, "scratch", w.id))
        try:
            self._exited(w)
        except Exception as exc:  # a broken clean-up must not keep the worker from counting as gone
            print(f"{self.name} runner: cleaning up after {w.id} failed: {exc!r}", file=sys.stderr)
        w.exited.set()
        with self._lock:
            have = self._workers.get(w.pipeline, {})
            if have.get(w.id) is w:
                del have[w.id]
            if self._credentials.get(w.digest) is w:
                del self._credentials[w.digest]
        if w.stopping or self.on_exit is None:
            return
        try:
            self.on_exit(w.pipeline, w.id, rc)
        except Exception as exc:  # a broken callback must not kill the watcher silently
            print(f"{self.name} runner: on_exit({w.pipeline}, {w.id}, {rc}) failed: {exc!r}", file=sys.stderr)


_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _before_exec(daemon_pid: int, join: list[int]) -> None:
    """In the worker between fork and exec: into its cgroup first (no instruction of
    the worker runs outside its limits), then ``_die_with_daemon``."""
    cgroups.join(join)
    _die_with_daemon(daemon_pid)


def _die_with_daemon(daemon_pid: int) -> None:
    """In the worker before exec: SIGTERM it when the daemon dies, a kill -9 included,
    so that no worker of a dead daemon goes on running user code (the shim kills its
    unit on SIGTERM). Linux sends it when the *thread* that started the worker ends:
    workers are started by the scheduler's thread, which lives as long as the daemon."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != daemon_pid:  # the daemon died before the line above
        os._exit(1)


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode()).digest()


def _index(wid: str) -> int:
    try:
        return int(wid.rpartition("-")[2])
    except ValueError:
        return 1 << 30


def _terminate(workers: list[_Worker], timeout: float) -> None:
    for w in workers:
        w.stopping = True
        _signal_group(w.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in workers:
        if not w.exited.wait(max(0.0, deadline - time.monotonic())):
            _kill_session(w.proc.pid)
    for w in workers:
        w.exited.wait(5.0)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_session(sid: int) -> None:
    """SIGKILL the worker and everything in its session (user code runs in its own
    process group there, so the worker's group alone would miss it)."""
    _signal_group(sid, signal.SIGKILL)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and int(fields[3]) == sid:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
