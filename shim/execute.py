"""Run the transform for one unit: tries, timeout, err_cmd, logs (pps/WORKERS.md).

The user's process is spawned by the calling thread right after
``sandbox.enter`` put that thread into the unit's mount namespace, so it
sees the unit's directory at ``/pfs``. It runs in a process group of its
own (inside the worker's session): a timeout, or the end of the unit,
kills the whole group, so nothing a unit started outlives it.

Choices where Pachyderm is the reference:
- stdin is ``"\\n".join(stdin) + "\\n"``, as Pachyderm's worker writes it.
- The working directory is ``transform.working_dir``, else ``/``. In
  Pachyderm an empty working_dir means the image's WORKDIR, which is ``/``
  unless the image sets one; the local runner has no image, and the
  daemon's or the worker's own directory would make a pipeline behave
  differently depending on where the daemon was started.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shim import oom, sandbox
from shim.task import Task, TaskError, Unit

Log = Callable[[str, bool], None]  # (message, user): user code's line, or the shim's own note
LINE_MAX = 64 * 1024  # a longer line (or binary output) is logged in pieces of this size
EXIT_GRACE = 1.0  # after the process exits, how long stragglers may keep its pipes open
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Outcome:
    state: str  # "success" | "failed" | "recovered"
    reason: str
    tries: int
    started: float
    finished: float

    def header(self, unit_id: str) -> dict:
        return {
            "unit_id": unit_id,
            "state": self.state,
            "reason": self.reason,
            "tries": self.tries,
            "started": self.started,
            "finished": self.finished,
        }


@dataclass
class Identity:
    uid: int
    gid: int
    groups: list[int]
    home: str = "/"


# User code of a worker run as root, with no transform.user, runs as an
# unprivileged uid (and gid) of a range no distro allocates, that owns
# nothing on the host. It is derived from the pipeline's name and the
# daemon's home: a pipeline's workers (parallel, restarted) share it, and so
# find what an earlier try left in /tmp, while two pipelines differ, so one's
# code cannot touch the other's processes or private files. A clash is
# possible in principle: 1 in ~16 million per pair of pipelines.
ANON_BASE, ANON_SPAN = 0x60000000, 1 << 24
_anon_salt = ""


def set_anonymous_salt(salt: str) -> None:
    """What tells apart the pipelines of different daemons (the worker gives the home)."""
    global _anon_salt
    _anon_salt = salt


def anonymous_identity(pipeline: str) -> Identity | None:
    """The unprivileged identity for ``pipeline``'s user code when no ``transform.user``
    is given; None when the worker cannot switch users (it runs without root)."""
    if os.geteuid() != 0 or sandbox.in_user_namespace():
        return None
    digest = hashlib.sha256(f"{_anon_salt}\0{pipeline}".encode()).digest()
    n = ANON_BASE + int.from_bytes(digest[:4], "big") % ANON_SPAN
    return Identity(n, n, [], "/tmp")


@dataclass
class Run:
    """One process start."""

    cmd: list[str]
    stdin: bytes
    env: dict[str, str]
    cwd: str
    timeout: float | None
    accept: frozenset[int]
    who: Identity | None = None


def build_env(task: Task, unit: Unit, who: Identity | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Worker basics (``base``: the executor's, e.g. an image's env), then the job env,
    the unit env, transform.env, secrets.

    ``HOME`` is the user's own when user code runs as another user."""
    if base is None:
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env = dict(base)
    env.setdefault("PATH", DEFAULT_PATH)
    if who is not None:
        env["HOME"] = who.home
    env.update(task.env)
    env.update(unit.env)
    env.update(task.transform.env)
    for s in task.secrets:
        if not s.env_var:
            continue
        if s.key not in s.data:
            raise TaskError(
                f"secret '{s.name}' has no key '{s.key}' (wanted for ${s.env_var}); "
                f"add the key to the secret or fix secrets[].key in the pipeline spec"
            )
        env[s.env_var] = s.data[s.key]
    return env


def resolve_user(spec: str, pipeline: str = "") -> Identity | None:
    """``transform.user``: ``name``, ``uid``, ``name:group`` or ``uid:gid``, resolved with the
    worker's passwd and group files; "" = an unprivileged uid of the worker's
    (``anonymous_identity``), or the worker's own user if it cannot switch."""
    if not spec:
        return anonymous_identity(pipeline)
    name, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid, login, home = pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir or "/"
    except KeyError:
        if not name.isdigit():
            raise TaskError(
                f"transform.user '{spec}': no user '{name}' on the worker; create it or give a numeric uid"
            ) from None
        uid, gid, login, home = int(name), int(name), None, "/"  # a bare uid with no passwd entry, as in images
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise TaskError(f"transform.user '{spec}': no group '{group}' on the worker") from None
    if sandbox.in_user_namespace() and uid != 0:
        raise TaskError(
            f"transform.user '{spec}' needs a worker run as root; this one runs without root "
            f"(in a user namespace) and can only run user code as itself"
        )
    if uid == os.geteuid() and not group:
        return None  # the worker's own user ("root" for a root worker): nothing to switch
    groups = os.getgrouplist(login, gid) if login else [gid]
    return Identity(uid, gid, groups, home)


def hand_over(binds: Sequence[sandbox.Bind], who: Identity | None) -> None:
    """Give user code what its sandbox shows it: what is under the binds it owns
    becomes ``who``'s: under /pfs every directory and all of /pfs/out (input files
    stay the worker's, world-readable); secrets whole. Read-only shared trees
    (1.x /pfs/prev) stay the worker's, world-readable."""
    if who is None:
        return

    def give(path: str) -> None:
        st = os.lstat(path)
        if (st.st_uid, st.st_gid) != (who.uid, who.gid):  # a chown changes ctime: only when needed
            os.chown(path, who.uid, who.gid, follow_symlinks=False)

    for b in binds:
        if not b.owned:
            continue
        give(b.source)
        # Under /pfs only directories and /pfs/out change hands: input files are
        # world-readable already, and a chown per input file cost ~10 us each
        # (~10 ms per unit of 1,000 datums). Owning the directories still lets the
        # code move or remove inputs, as it could as root.
        out = os.path.join(b.source, "out") if b.target == sandbox.PFS else None
        for base, subdirs, files in os.walk(b.source):
            for name in subdirs:
                give(os.path.join(base, name))
            for name in files:
                path = os.path.join(base, name)
                # /pfs/out itself may be a file: a spout's named pipe
                if out is None or path == out or base == out or base.startswith(out + os.sep):
                    give(path)


def run_unit(
    task: Task,
    unit: Unit,
    binds: Sequence[sandbox.Bind],
    log: Log,
    prepare_try: Callable[[int], None] | None = None,
) -> Outcome:
    """Run ``unit`` up to ``task.datum_tries`` times, then err_cmd; never raises for user errors.

    ``prepare_try(i)`` runs before try ``i`` (0-based; and before err_cmd,
    with ``i == tries``): the worker resets ``/pfs/out`` there, so every try
    starts from the same state.
    """
    started = time.time()
    t = task.transform
    tries = 0
    ex = executor()
    try:
        who = ex.resolve_user(t.user, task.pipeline)
        env = build_env(task, unit, who, ex.base_env())
        cwd = t.working_dir or ex.default_cwd
        accept = frozenset([0, *t.accept_return_code])
        main = Run(t.cmd, stdin_bytes(t.stdin), env, cwd, task.datum_timeout, accept, who)
        reason = ""
        for i in range(task.datum_tries):
            if prepare_try:
                prepare_try(i)
            hand_over(binds, who)
            tries += 1
            ok, reason = run_once(main, binds, log)
            if ok:
                return Outcome("success", "", tries, started, time.time())
            log(f"try {tries} of {task.datum_tries} failed: {reason}", False)
        if t.err_cmd:
            if prepare_try:
                prepare_try(tries)
            hand_over(binds, who)
            err = Run(t.err_cmd, stdin_bytes(t.err_stdin), env, cwd, task.datum_timeout, accept, who)
            ok, why = run_once(err, binds, log)
            if ok:
                return Outcome("recovered", reason, tries, started, time.time())
            reason = f"{reason}; err_cmd failed too: {why}"
        return Outcome("failed", reason, tries, started, time.time())
    except (TaskError, sandbox.SandboxError) as exc:
        return Outcome("failed", str(exc), tries, started, time.time())
    except OSError as exc:  # handing /pfs over to the user failed
        return Outcome("failed", f"cannot prepare /pfs for user code: {exc}", tries, started, time.time())


def stdin_bytes(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def run_once(run: Run, binds: Sequence[sandbox.Bind], log: Log) -> tuple[bool, str]:
    """One process start by the worker's executor (a fresh namespace with ``binds``
    here, the agent in a container under Docker); (success, reason)."""
    try:
        child = executor().start(run, binds, log)
    except StartError as exc:
        return False, str(exc)
    timed_out = False
    try:
        if run.timeout:
            child.pump(run.timeout)
            if child.exited_at is None:
                timed_out = True
                child.kill()
        while child.exited_at is None:
            child.pump(3600.0)
    finally:
        rc = child.finish()  # kills what is left of its group, on a timeout or a worker stop too
    if timed_out:
        return False, f"timed out after {run.timeout:g} s (datum_timeout); its process group was killed"
    if rc in run.accept:
        return True, ""
    return False, child.failure(rc)


class StartError(Exception):
    """User code could not be started; the message says why and what to fix."""


class Started(Protocol):
    """A running start of user code, as ``run_once`` and ``shim.longrun`` drive it."""

    started: float
    exited_at: float | None

    def pump(self, timeout: float) -> None: ...
    def kill(self) -> None: ...
    def stop(self, grace: float) -> None: ...
    def finish(self) -> int: ...
    def failure(self, rc: int) -> str: ...


class Executor(Protocol):
    """Where user code runs: this host in a sandbox (``LocalExecutor``), or a
    container through its agent (``shim.container.ContainerExecutor``)."""

    default_cwd: str

    def resolve_user(self, spec: str, pipeline: str = "") -> Identity | None: ...
    def base_env(self) -> dict[str, str] | None: ...
    def start(self, run: Run, binds: Sequence[sandbox.Bind], log: Log) -> Started: ...


class LocalExecutor:
    """User code on this host, in a mount namespace made for the unit (shim.sandbox)."""

    default_cwd = "/"

    def resolve_user(self, spec: str, pipeline: str = "") -> Identity | None:
        return resolve_user(spec, pipeline)

    def base_env(self) -> dict[str, str] | None:
        return None  # the worker's own PATH, HOME, LANG

    def start(self, run: Run, binds: Sequence[sandbox.Bind], log: Log) -> Child:
        sandbox.enter(binds)
        oom_before = oom.mark()  # the worker's cgroup's OOM kills so far: did one end this unit?
        try:
            proc = spawn(run)
            return Child(proc, run.stdin, log, after=_leave_sandbox, oom_before=oom_before)
        except OSError as exc:
            sandbox.release()
            raise StartError(spawn_error(run, exc)) from None
        except BaseException:
            sandbox.release()
            raise


def _leave_sandbox() -> None:
    sandbox.kill_strays()  # what left the group, in its PID namespace
    sandbox.release()


_executor: Executor = LocalExecutor()


def executor() -> Executor:
    return _executor


def use_executor(ex: Executor) -> None:
    """Set where this worker process runs user code (once, at start-up)."""
    global _executor
    _executor = ex


def exit_reason(rc: int) -> str:
    """``exit code N`` or ``killed by SIGNAME``."""
    if rc >= 0:
        return f"exit code {rc}"
    try:
        return f"killed by {signal.Signals(-rc).name}"
    except ValueError:
        return f"killed by signal {-rc}"


def spawn(run: Run) -> subprocess.Popen:
    """Start ``run`` with piped stdio in a process group of its own, in the calling
    thread's namespaces (``sandbox.enter`` first), as ``run.who``; OSError if it cannot start."""
    who = run.who
    with oom.user_code_adj(), \
            sandbox.acting_as(who.uid, who.gid, who.groups) if who is not None else contextlib.nullcontext():
        return subprocess.Popen(
            run.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=run.env,
            cwd=run.cwd,
            process_group=0,  # its own group, so a kill reaches its children too
        )


def spawn_error(run: Run, exc: OSError) -> str:
    if exc.filename == run.cwd and run.cwd != run.cmd[0]:
        return f"working_dir '{run.cwd}' cannot be entered ({exc.strerror}); fix transform.working_dir"
    return (
        f"cannot run '{run.cmd[0]}': {exc.strerror}; install it on the worker "
        f"or give its full path in transform.cmd"
    )


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Lines:
    """Splits one output stream into log lines without holding more than a line."""

    def __init__(self, log: Log):
        self.buf = bytearray()
        self.log = log
        self.last = ""

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) >= LINE_MAX:
                    self._emit(bytes(self.buf[:LINE_MAX]))
                    del self.buf[:LINE_MAX]
                    continue
                return
            self._emit(bytes(self.buf[:nl]))
            del self.buf[: nl + 1]

    def close(self) -> None:
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf.clear()

    def _emit(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            self.last = text[:200]
        self.log(text, True)


class Child:
    """A running start of the transform: its output pumped into the log."""

    def __init__(self, proc: subprocess.Popen, stdin: bytes, log: Log, after: Callable[[], None] | None = None,
                 oom_before: int | None = None):
        self.proc = proc
        self.oom_before = oom_before  # oom.mark() before it started: was it OOM-killed?
        self.after = after  # run once it is reaped (the sandbox's cleanup)
        self.started = time.monotonic()
        self.exited_at: float | None = None
        self.sel = selectors.DefaultSelector()
        self.pidfd = os.pidfd_open(proc.pid)
        self.sel.register(self.pidfd, selectors.EVENT_READ, None)
        self.out, self.err = Lines(log), Lines(log)
        for f, lines in ((proc.stdout, self.out), (proc.stderr, self.err)):
            os.set_blocking(f.fileno(), False)
            self.sel.register(f.fileno(), selectors.EVENT_READ, lines)
        self.pending = memoryview(stdin)
        os.set_blocking(proc.stdin.fileno(), False)
        self.sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pump(self, timeout: float) -> None:
        """Move output to the log for up to ``timeout`` s; returns at once when the process exits."""
        deadline = time.monotonic() + timeout
        while self.sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.sel.select(left):
                if key.data is None:
                    self.exited_at = time.monotonic()
                    self.sel.unregister(self.pidfd)
                elif key.data == "stdin":
                    self._feed_stdin()
                else:
                    self._read(key)
            if self.exited_at is not None:
                return

    def _feed_stdin(self) -> None:
        fd = self.proc.stdin.fileno()
        try:
            n = os.write(fd, self.pending[:65536])
            self.pending = self.pending[n:]
        except BrokenPipeError:
            self.pending = self.pending[:0]  # it does not read stdin: fine
        if not self.pending:
            self.sel.unregister(fd)
            self.proc.stdin.close()

    def _read(self, key: selectors.SelectorKey) -> None:
        try:
            data = os.read(key.fd, 65536)
        except BlockingIOError:
            return
        if data:
            key.data.feed(data)
        else:
            key.data.close()
            self.sel.unregister(key.fd)

    @property
    def last(self) -> str:
        """Its last words: stderr's if any, else stdout's (for a failure's reason)."""
        return self.err.last or self.out.last

    def kill(self) -> None:
        """SIGKILL to its whole group (a timeout)."""
        _kill_group(self.pid)

    def failure(self, rc: int) -> str:
        """Why an exit status ``rc`` it was not accepted: the status and its last words."""
        why = oom.explain(self.oom_before, rc, exit_reason(rc))
        return f"{why}: {self.last}" if self.last else why

    def stop(self, grace: float) -> None:
        """SIGTERM to the whole group, SIGKILL after ``grace`` s."""
        if self.exited_at is None:
            _kill_group(self.pid, signal.SIGTERM)
            self.pump(grace)
        if self.exited_at is None:
            _kill_group(self.pid)
            self.pump(5.0)

    def finish(self) -> int:
        """After the exit: kill what it left in its group, log the rest of its output, reap it."""
        _kill_group(self.pid)  # its pid is not reaped yet, so not reused
        end = (self.exited_at or time.monotonic()) + EXIT_GRACE
        try:
            while any(k.data is not None and k.data != "stdin" for k in self.sel.get_map().values()):
                left = end - time.monotonic()
                if left <= 0:
                    break  # stragglers that left the group still hold its pipes: stop listening
                for key, _ in self.sel.select(left):
                    if key.data == "stdin":
                        self._feed_stdin()
                    elif key.data is not None:
                        self._read(key)
        finally:
            self.sel.close()
            os.close(self.pidfd)
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()
            self.out.close()
            self.err.close()
            if self.after is not None:
                self.after()
        return self.proc.returncode
