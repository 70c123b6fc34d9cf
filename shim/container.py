"""Run user code in the worker's container, through pachy's agent (pps/WORKERS.md, "Docker").

The shim runs on the host; the user's image needs nothing of pachy. The
Docker runner started one long-lived container per worker with:

- the host's static busybox and ``shim/agent/agent.sh`` read-only at
  ``/.pachy/bin``, the agent as the container's entrypoint;
- this worker's control directory at ``/.pachy/ctl`` (the FIFOs ``cmd`` and
  ``events``, and ``image.json``: what the runner knows of the image);
- the worker's scratch directories at the same paths as on the host, so the
  paths of a unit's files need no translation.

Per unit the shim writes ``ctl/ID/run.sh`` (links, working directory, user,
a clean environment, then the command), ``ctl/ID/stdin``, and two FIFOs for
stdout and stderr that it holds open read-write (no early EOF; it drains them
until empty once the unit is done), then tells the agent ``run ID``. No
``docker exec`` per unit: that costs ~60 ms here, a unit ~3 ms.

``/pfs`` in the container is a symlink to the unit's directory (binds become
symlinks: ``/pfs``, ``/pfs/prev`` inside it, secrets' ``mount_path``); the
container sees nothing of the host but its bind mounts, so nothing needs
hiding. Nothing of pachy's own secrets is in the control directory: only
this pipeline's task data (its env and secrets, which its code sees anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import selectors
import shutil
import signal
import time
from collections.abc import Sequence

from shim import oom, sandbox
from shim.execute import EXIT_GRACE, Identity, Lines, Log, Run, StartError, exit_reason
from shim.task import TaskError

AGENT_BIN = "/.pachy/bin"  # busybox and agent.sh, read-only
AGENT_CTL = "/.pachy/ctl"  # the control directory, as the container sees it
BUSYBOX = AGENT_BIN + "/busybox"
START_WAIT = 10.0  # how long a unit may take to be started by the agent (it forks once)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_FOUND = re.compile(r"(/[^:]*): not found$")  # busybox sh's exec: "...run.sh: exec: line 8: /bin/x: not found"
AGENT_SAYS = "pachy-agent: "
_SHELL_VARS = {"PWD", "OLDPWD", "SHLVL", "_"}  # the recording shell's own, not the image's  # a line of run.sh's own on stderr: the reason for its exit


def quote(s: str) -> str:
    """``s`` as one word of sh: single quotes, each ' written as '\\''."""
    return "'" + s.replace("'", "'\\''") + "'"


def _key(target: str) -> str:
    """The name under ctl/links of a bind's target (/pfs is the agent's own)."""
    return "pfs" if target == sandbox.PFS else "t-" + hashlib.sha256(target.encode()).hexdigest()[:16]


def _repoint(link: str, to: str) -> None:
    """``link`` -> ``to``, replaced atomically (the container may be resolving it)."""
    tmp = f"{link}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(to, tmp)
    os.replace(tmp, link)


def _image_config(ctl: str, env_file: str, cwd_file: str) -> dict[str, object]:
    """What the container itself recorded of its image at start (Kubernetes: no API tells
    an image's config): its environment (NUL-separated) and working directory. Waits for
    them, without a deadline: the image may still be being pulled (the runner reports
    trouble meanwhile). The image's USER is not known this way: transform.user, else root."""
    path, pause, waited = os.path.join(ctl, env_file), 0.05, 0.0
    while not os.path.exists(path):
        if waited >= 30.0 and waited - pause < 30.0:
            print(f"waiting for the user container to start (no {path} yet)", flush=True)
        time.sleep(pause)
        waited += pause
        pause = min(1.0, pause * 2)
    with open(path, "rb") as f:
        env = [kv for kv in f.read().decode(errors="replace").split("\0")
               if kv and kv.partition("=")[0] not in _SHELL_VARS]
    cwd = "/"
    if cwd_file:
        try:
            with open(os.path.join(ctl, cwd_file)) as f:
                cwd = f.read().strip() or "/"
        except OSError:
            pass
    return {"env": env, "working_dir": cwd}


class ContainerExecutor:
    """``shim.execute.Executor`` for a worker whose user code runs in a container."""

    def __init__(self, ctl: str, roots: Sequence[str] = ()):
        self.ctl = ctl
        with open(os.path.join(ctl, "image.json")) as f:
            info = json.load(f)
        self.image: str = info.get("image", "")
        if info.get("env_file"):
            info |= _image_config(ctl, info["env_file"], info.get("cwd_file") or "")
        self.image_env = dict(kv.partition("=")[::2] for kv in info.get("env") or [])
        self.image_user: str = info.get("user") or ""
        self.default_cwd: str = info.get("working_dir") or "/"
        self.memory: int = int(info.get("memory") or 0)
        # The container's memory cgroup, found from its first process: did the kernel's
        # OOM killer end a unit? (None where the kernel does not say.)
        cgroup = oom.own_memory_cgroup(str(info["pid"])) if info.get("pid") else None
        self.oom = oom.OomWatch(cgroup, self.memory or None) if cgroup else None
        self.roots = [os.path.abspath(r) for r in roots]
        self.error: str = info.get("error") or ""  # the runner could not start the container: say why per unit
        self.cmd = os.open(os.path.join(ctl, "cmd"), os.O_RDWR | os.O_CLOEXEC)
        self.events = os.open(os.path.join(ctl, "events"), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._buf = b""
        self._seen: dict[str, list[str]] = {}  # unit id -> what the agent said of it
        self._n = 0
        self._known_ids: set[tuple[int, int]] = set()  # uid/gid pairs made known to the image's passwd

    # -- who and what -----------------------------------------------------------

    def _table(self, name: str) -> list[list[str]]:
        # The agent copies them first thing; the shim may ask before the container got there.
        path, deadline = os.path.join(self.ctl, "passwd"), time.monotonic() + START_WAIT
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            with open(os.path.join(self.ctl, name)) as f:
                return [line.rstrip("\n").split(":") for line in f if line.count(":") >= 2]
        except OSError:
            return []

    def resolve_user(self, spec: str, pipeline: str = "") -> Identity | None:
        """``transform.user`` (else the image's USER) resolved with the image's own
        /etc/passwd and /etc/group (the agent copied them); None: root, as the agent."""
        spec = spec or self.image_user
        if not spec:
            return None
        name, _, group = spec.partition(":")
        passwd = self._table("passwd")
        entry = next((e for e in passwd if len(e) >= 6 and (e[2] == name if name.isdigit() else e[0] == name)), None)
        if entry is not None:
            uid, gid, home = int(entry[2]), int(entry[3]), entry[5] or "/"
        elif name.isdigit():
            uid, gid, home = int(name), int(name), "/"
        else:
            raise TaskError(f"transform.user '{spec}': no user '{name}' in image '{self.image}'; "
                            f"add it to the image or give a numeric uid")
        if group:
            if group.isdigit():
                gid = int(group)
            else:
                g = next((e for e in self._table("group") if e[0] == group), None)
                if g is None:
                    raise TaskError(f"transform.user '{spec}': no group '{group}' in image '{self.image}'")
                gid = int(g[2])
        if uid == 0 and not group:
            return None
        return Identity(uid, gid, [gid], home)

    def base_env(self) -> dict[str, str]:
        """The image's env (its PATH first of all), as ``docker run`` would give it."""
        env = dict(self.image_env)
        env.setdefault("HOME", "/root")
        return env

    # -- starting a unit ------------------------------------------------------------

    def start(self, run: Run, binds: Sequence[sandbox.Bind], log: Log) -> ContainerChild:
        if self.error:
            raise StartError(self.error)
        self._n += 1
        uid = f"u{self._n}"
        d = os.path.join(self.ctl, uid)
        shutil.rmtree(d, ignore_errors=True)
        fds: list[int] = []
        try:
            os.mkdir(d, 0o700)
            with open(os.path.join(d, "stdin"), "wb") as f:
                f.write(run.stdin)
            with open(os.path.join(d, "run.sh"), "w") as f:
                f.write(self._script(run, binds))
            for name in ("out", "err"):
                os.mkfifo(os.path.join(d, name), 0o600)
                fds.append(os.open(os.path.join(d, name), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
            if run.who is not None:
                self._traversable(binds)
            os.write(self.cmd, f"run {uid}\n".encode())
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(d, ignore_errors=True)
            raise StartError(f"cannot hand the unit to the container's agent: {exc}") from None
        return ContainerChild(self, uid, d, fds[0], fds[1], log)

    def _link(self, binds: Sequence[sandbox.Bind]) -> list[str]:
        """Binds as symlinks (pps/WORKERS.md, "Docker"): ``/pfs`` and each target outside it
        through ``ctl/links`` (re-pointed here, on the host, per unit: nothing to do in the
        container after its first unit), targets under ``/pfs`` as symlinks in the unit's
        directory. Returns the targets outside /pfs the container must link once."""
        links = os.path.join(self.ctl, "links")
        pfs = next((b.source for b in binds if b.target == sandbox.PFS), None)
        outside = []
        for b in binds:
            if b.target == sandbox.PFS:
                _repoint(os.path.join(links, "pfs"), b.source)
            elif b.target.startswith(sandbox.PFS + "/") and pfs is not None:
                at = os.path.join(pfs, b.target[len(sandbox.PFS) + 1:])
                if os.path.isdir(at) and not os.path.islink(at):
                    os.rmdir(at)  # an empty mount point the layout made
                os.makedirs(os.path.dirname(at), exist_ok=True)
                _repoint(at, b.source)
            else:
                _repoint(os.path.join(links, _key(b.target)), b.source)
                outside.append(b.target)
        return outside

    def _traversable(self, binds: Sequence[sandbox.Bind]) -> None:
        """User code reaches its files through symlinks: it needs to traverse the
        (0700) directories above them, from the scratch root down (not to list them).
        That is the binds' sources, and where the unit's /pfs links lead (a lazy input:
        the worker's FUSE view under its scratch, while the unit's directory may be on
        the fast scratch)."""
        sources = [b.source for b in binds]
        pfs = next((b.source for b in binds if b.target == sandbox.PFS), None)
        if pfs is not None:
            sources += [os.readlink(e.path) for e in os.scandir(pfs) if e.is_symlink()]
        for source in sources:
            for root in self.roots:
                if not source.startswith(root + os.sep):
                    continue
                # root itself and each directory below it, down to the source's parent
                path = root
                for part in ["", *os.path.relpath(source, root).split(os.sep)[:-1]]:
                    path = os.path.join(path, part) if part else path
                    st = os.stat(path)
                    if st.st_mode & 0o011 != 0o011:
                        os.chmod(path, (st.st_mode & 0o7777) | 0o011)

    def _script(self, run: Run, binds: Sequence[sandbox.Bind]) -> str:
        """The unit's run.sh, for busybox sh as root in the container."""
        say = f"echo {quote(AGENT_SAYS)}"
        lines = [
            # the unit, not the agent, is what the kernel's OOM killer should pick
            "echo 1000 >/proc/self/oom_score_adj 2>/dev/null",
        ]
        for target in self._link(binds):
            # made once per container: the shim re-points ctl/links/* on the host for each unit
            link = f"{AGENT_CTL}/links/{_key(target)}"
            # (a target the pod mounted itself, a Kubernetes Secret volume, is left as it is)
            lines.append(f"[ -L {quote(target)} ] || {BUSYBOX} grep -qF {quote(f' {target} ')} /proc/self/mountinfo || "
                         f"{{ {{ [ -d {quote(target)} ] && rmdir {quote(target)}; "
                         f"mkdir -p {quote(posixpath.dirname(target))}; ln -sfn {quote(link)} {quote(target)}; }} || "
                         f"{{ {say}{quote(f'cannot make {target} in the container')} >&2; exit 125; }}; }}")
        lines.append(
            f"cd {quote(run.cwd)} 2>/dev/null || {{ {say}{quote(f'working_dir {run.cwd!r} cannot be entered in image')}"
            f"{quote(f' {self.image!r}; fix transform.working_dir')} >&2; exit 125; }}"
        )
        # The command is looked up in the image's PATH here, by the shell's builtins: busybox's
        # env and sh would run an applet of the same name (their own sh, awk, ...) before the
        # image's program, and a name with a slash is exec'd as it is.
        cmd0 = run.cmd[0] if run.cmd else ""
        not_found = f"cannot run {cmd0!r} in image {self.image!r}: not found; install it in the image or give " \
                    f"its full path in transform.cmd"
        lines.append(f"P={quote(cmd0)}")
        if "/" not in cmd0:
            lines.append(
                f"S={quote(run.env.get('PATH', ''))}; IFS=:; for d in $S; do "
                f'[ -n "$d" ] && [ -f "$d/$P" ] && [ -x "$d/$P" ] && {{ P=$d/$P; break; }}; done; unset IFS S d'
            )
        lines.append(f'[ -f "$P" ] && [ -x "$P" ] || {{ {say}{quote(not_found)} >&2; exit 127; }}')
        # The agent started this script with an empty environment: the unit's is exported here
        # (a name the shell cannot export is left out), the shell's own variables dropped.
        lines.append("unset SHLVL OLDPWD PWD")
        exports = [f"{k}={v}" for k, v in run.env.items() if _NAME.match(k)]
        if exports:
            lines.append("export " + " ".join(quote(kv) for kv in exports))
        args = " ".join(quote(a) for a in run.cmd[1:])
        who = run.who
        if who is None:
            lines.append(f'exec -a {quote(cmd0)} "$P" {args}')
            return "\n".join(lines) + "\n"
        if (who.uid, who.gid) not in self._known_ids:
            # busybox's start-stop-daemon switches only to users the image's files name
            lines.append(f"grep -q '^[^:]*:[^:]*:{who.uid}:' /etc/passwd 2>/dev/null || "
                         f"echo 'pachy-{who.uid}:x:{who.uid}:{who.gid}::/:/bin/false' >>/etc/passwd")
            lines.append(f"grep -q '^[^:]*:[^:]*:{who.gid}:' /etc/group 2>/dev/null || "
                         f"echo 'pachy-{who.gid}:x:{who.gid}:' >>/etc/group")
            self._known_ids.add((who.uid, who.gid))
        inner = 'unset SHLVL OLDPWD PWD; exec -a "$0" "$@"'
        lines.append(f"exec {BUSYBOX} start-stop-daemon -S -q -n pachy-nomatch -c {who.uid}:{who.gid} -x {BUSYBOX} "
                     f'-- sh -c {quote(inner)} {quote(cmd0)} "$P" {args}')
        return "\n".join(lines) + "\n"

    # -- what the agent says ----------------------------------------------------------

    def read_events(self) -> None:
        while True:
            try:
                data = os.read(self.events, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            words = raw.decode(errors="replace").split()
            if len(words) == 3 and words[0] in ("started", "done"):
                self._seen.setdefault(words[1], []).append(f"{words[0]} {words[2]}")

    def said(self, uid: str, what: str) -> str | None:
        for s in self._seen.get(uid, ()):
            verb, _, value = s.partition(" ")
            if verb == what:
                return value
        return None

    def forget(self, uid: str) -> None:
        self._seen.pop(uid, None)

    def signal(self, pgid: int, sig: int) -> None:
        os.write(self.cmd, f"kill {sig} {pgid}\n".encode())


class ContainerChild:
    """One unit running in the container: its output pumped into the log."""

    def __init__(self, ex: ContainerExecutor, uid: str, d: str, out: int, err: int, log: Log):
        self.ex, self.uid, self.dir = ex, uid, d
        self.started = time.monotonic()
        self.exited_at: float | None = None
        self.rc: int | None = None
        self.pgid: int | None = None
        self.oom_before = ex.oom.count() if ex.oom is not None else None
        self.fds = (out, err)
        self.out, self.err = Lines(log), Lines(log)
        self.sel = selectors.DefaultSelector()
        self.sel.register(ex.events, selectors.EVENT_READ, None)
        self.sel.register(out, selectors.EVENT_READ, self.out)
        self.sel.register(err, selectors.EVENT_READ, self.err)

    def _heard(self) -> None:
        self.ex.read_events()
        if self.pgid is None and (pid := self.ex.said(self.uid, "started")) is not None:
            self.pgid = int(pid)
        if self.exited_at is None and (rc := self.ex.said(self.uid, "done")) is not None:
            status = int(rc)
            # busybox's wait reports a death by signal N as 128+N, as every shell does
            self.rc = -(status - 128) if 128 < status < 128 + 65 else status
            self.exited_at = time.monotonic()

    def pump(self, timeout: float) -> None:
        """Move output to the log for up to ``timeout`` s; returns at once when the unit is done."""
        deadline = time.monotonic() + timeout
        while self.exited_at is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self.sel.select(left):
                if key.data is None:
                    self._heard()
                else:
                    self._read(key.fd, key.data)

    def _read(self, fd: int, lines: Lines) -> bool:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if data:
            lines.feed(data)
        return bool(data)

    @property
    def last(self) -> str:
        return self.err.last or self.out.last

    def _signal(self, sig: int) -> None:
        end = time.monotonic() + START_WAIT
        while self.pgid is None and self.exited_at is None and time.monotonic() < end:
            self.pump(0.05)  # the agent says "started PID" right after its fork
        if self.pgid is not None and self.exited_at is None:
            self.ex.signal(self.pgid, sig)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop(self, grace: float) -> None:
        """SIGTERM to the unit's group, SIGKILL after ``grace`` s."""
        if self.exited_at is None:
            self._signal(signal.SIGTERM)
            self.pump(grace)
        if self.exited_at is None:
            self.kill()
            self.pump(5.0)

    def finish(self) -> int:
        """After the exit (or to end it): its group killed, the rest of its output logged."""
        try:
            if self.exited_at is None:
                self.kill()
                self.pump(5.0 + EXIT_GRACE)
            for fd, lines in zip(self.fds, (self.out, self.err), strict=True):
                while self._read(fd, lines):
                    pass  # the agent killed its writers before saying "done": what is left is buffered
            self.out.close()
            self.err.close()
        finally:
            self.sel.close()
            for fd in self.fds:
                os.close(fd)
            self.ex.forget(self.uid)
            shutil.rmtree(self.dir, ignore_errors=True)
        return self.rc if self.rc is not None else -signal.SIGKILL

    def failure(self, rc: int) -> str:
        """Why a status ``rc`` failed the unit, in the terms of the image and the spec."""
        why = exit_reason(rc)
        if self.ex.oom is not None and (said := self.ex.oom.explain(self.oom_before, rc, why)) != why:
            return said  # out of memory: that is the reason, whatever it printed
        err = self.err.last
        if err.startswith(AGENT_SAYS):
            return err[len(AGENT_SAYS):]
        m = _NOT_FOUND.search(err)
        if rc == 127 and m:
            # it is there (run.sh checked) yet exec says "not found": its ELF interpreter is missing
            return (f"cannot run '{m.group(1)}' in image '{self.ex.image}': the file is there but cannot be "
                    f"executed (is its dynamic loader or a library missing from the image?)")
        return f"{why}: {self.last}" if self.last else why
