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

import grp
import os
import pwd
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shim import sandbox
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


def build_env(task: Task, unit: Unit) -> dict[str, str]:
    """Worker basics, then the job env, the unit env, transform.env, secrets."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
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


def resolve_user(spec: str) -> Identity | None:
    """``transform.user``: ``name``, ``uid``, ``name:group`` or ``uid:gid``; "" = the worker's."""
    if not spec:
        return None
    name, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid, login = pw.pw_uid, pw.pw_gid, pw.pw_name
    except KeyError:
        if not name.isdigit():
            raise TaskError(
                f"transform.user '{spec}': no user '{name}' on the worker; create it or give a numeric uid"
            ) from None
        uid, gid, login = int(name), int(name), None  # a bare uid with no passwd entry, as in images
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
    groups = os.getgrouplist(login, gid) if login else [gid]
    return Identity(uid, gid, groups)


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
    try:
        env = build_env(task, unit)
        who = resolve_user(t.user)
        cwd = t.working_dir or "/"
        accept = frozenset([0, *t.accept_return_code])
        main = Run(t.cmd, stdin_bytes(t.stdin), env, cwd, task.datum_timeout, accept, who)
        reason = ""
        for i in range(task.datum_tries):
            if prepare_try:
                prepare_try(i)
            tries += 1
            ok, reason = run_once(main, binds, log)
            if ok:
                return Outcome("success", "", tries, started, time.time())
            log(f"try {tries} of {task.datum_tries} failed: {reason}", False)
        if t.err_cmd:
            if prepare_try:
                prepare_try(tries)
            err = Run(t.err_cmd, stdin_bytes(t.err_stdin), env, cwd, task.datum_timeout, accept, who)
            ok, why = run_once(err, binds, log)
            if ok:
                return Outcome("recovered", reason, tries, started, time.time())
            reason = f"{reason}; err_cmd failed too: {why}"
        return Outcome("failed", reason, tries, started, time.time())
    except (TaskError, sandbox.SandboxError) as exc:
        return Outcome("failed", str(exc), tries, started, time.time())


def stdin_bytes(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def run_once(run: Run, binds: Sequence[sandbox.Bind], log: Log) -> tuple[bool, str]:
    """One process start in a fresh namespace with ``binds``; (success, reason)."""
    sandbox.enter(binds)
    try:
        try:
            proc = spawn(run)
        except OSError as exc:
            return False, spawn_error(run, exc)
        try:
            timed_out, last = _pump(proc, run.stdin, run.timeout, log)
        finally:
            _kill_group(proc.pid)  # on a timeout, or a stop of the worker mid-unit
            proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
    finally:
        sandbox.release()
    rc = proc.returncode
    if timed_out:
        return False, f"timed out after {run.timeout:g} s (datum_timeout); its process group was killed"
    if rc in run.accept:
        return True, ""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        why = f"killed by {name}"
    else:
        why = f"exit code {rc}"
    return False, f"{why}: {last}" if last else why


def spawn(run: Run) -> subprocess.Popen:
    """Start ``run`` with piped stdio in a process group of its own, in the calling
    thread's mount namespace (``sandbox.enter`` first); OSError if it cannot start."""
    return subprocess.Popen(
        run.cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=run.env,
        cwd=run.cwd,
        process_group=0,  # its own group, so a kill reaches its children too
        user=run.who.uid if run.who else None,
        group=run.who.gid if run.who else None,
        extra_groups=run.who.groups if run.who else None,
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


def _pump(proc: subprocess.Popen, stdin: bytes, timeout: float | None, log: Log) -> tuple[bool, str]:
    """Feed stdin, log stdout/stderr, enforce the timeout; (timed out, last line)."""
    sel = selectors.DefaultSelector()
    now = time.monotonic()
    deadline = now + timeout if timeout else None
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ, None)
    out, err = Lines(log), Lines(log)
    for f, lines in ((proc.stdout, out), (proc.stderr, err)):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ, lines)
    pending = memoryview(stdin)
    in_fd = proc.stdin.fileno()
    os.set_blocking(in_fd, False)
    sel.register(in_fd, selectors.EVENT_WRITE, "stdin")
    timed_out = exited = False
    try:
        while len(sel.get_map()) > 0:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = sel.select(wait)
            if not events and deadline is not None and time.monotonic() >= deadline:
                if exited:
                    break  # stragglers that left the group still hold its pipes: stop listening
                timed_out = True
                _kill_group(proc.pid)
                deadline = None
                continue
            for key, _ in events:
                if key.data is None:  # the process exited (pidfd readable)
                    exited = True
                    sel.unregister(pidfd)
                    _kill_group(proc.pid)  # what it left behind; its pid is not reaped yet, so not reused
                    deadline = time.monotonic() + EXIT_GRACE
                elif key.data == "stdin":
                    try:
                        n = os.write(in_fd, pending[:65536])
                        pending = pending[n:]
                    except BrokenPipeError:
                        pending = pending[:0]  # it does not read stdin: fine
                    if not pending:
                        sel.unregister(in_fd)
                        proc.stdin.close()
                else:
                    try:
                        data = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if data:
                        key.data.feed(data)
                    else:
                        key.data.close()
                        sel.unregister(key.fd)
    finally:
        sel.close()
        os.close(pidfd)
    out.close()
    err.close()
    return timed_out, err.last or out.last  # the reason quotes stderr's last words first
