"""`pachctl doctor`: is this machine ready for pachy, and if not, what fixes it.

Each check is a small function over ``Probes`` (where the file system root is,
which programs are on PATH, the environment, how to reach the daemon, the
free-space threshold), so tests make every check fail without breaking the
machine. A check says ok / fail / skip; a failing *optional* check (Docker,
Kubernetes, podman: only some pipelines need them) is a warning and does not
change the exit code. Every failure carries the exact command that fixes it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from mountd.models import errors
from pachctl import config
from pachctl.cli.common import add, json_flag
from pfsfuse import __version__

DEFAULT_MIN_FREE = 1 << 30  # below 1 GiB free in the home, commits start failing soon
TIMEOUT = 2.0  # seconds per network probe: doctor answers quickly even when all is down


@dataclass
class Check:
    group: str  # FUSE | daemon | Docker | Kubernetes | podman
    name: str
    status: str  # ok | fail | warn (a failed optional check) | skip
    detail: str
    fix: str | None = None
    optional: bool = False


@dataclass
class Probes:
    """Everything a check looks at; tests replace parts of it."""

    root: str = "/"  # /dev/fuse and /proc/filesystems are read below it
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    which: Callable[[str], str | None] = shutil.which
    min_free: int = DEFAULT_MIN_FREE
    timeout: float = TIMEOUT
    euid: int = field(default_factory=os.geteuid)

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))


def _ok(group: str, name: str, detail: str, optional: bool = False) -> Check:
    return Check(group, name, "ok", detail, optional=optional)


def _fail(group: str, name: str, detail: str, fix: str | None, optional: bool = False) -> Check:
    return Check(group, name, "warn" if optional else "fail", detail, fix, optional)


def _skip(group: str, name: str, detail: str, optional: bool = False) -> Check:
    return Check(group, name, "skip", detail, optional=optional)


# -- FUSE -----------------------------------------------------------------------


def check_fuse_device(p: Probes) -> Check:
    dev = p.path("/dev/fuse")
    try:
        st = os.stat(dev)
    except FileNotFoundError:
        return _fail("FUSE", "/dev/fuse", "missing", "modprobe fuse   (in a container: docker run --device /dev/fuse --cap-add SYS_ADMIN ...)")
    if not stat.S_ISCHR(st.st_mode):
        return _fail("FUSE", "/dev/fuse", "not a character device", f"rm {dev} && modprobe fuse")
    try:
        os.close(os.open(dev, os.O_RDWR | os.O_CLOEXEC))
    except PermissionError:
        return _fail("FUSE", "/dev/fuse", "present but not openable (permission denied)", f"chmod 0666 {dev}")
    except OSError as exc:
        return _fail("FUSE", "/dev/fuse", f"present but not openable ({exc.strerror})", "modprobe fuse")
    return _ok("FUSE", "/dev/fuse", "present, openable")


def check_fusermount(p: Probes) -> Check:
    found = p.which("fusermount3")
    if found is None:
        return _fail("FUSE", "fusermount3", "not on PATH", "apt-get install fuse3")
    return _ok("FUSE", "fusermount3", found)


def check_fuse_module(p: Probes) -> Check:
    """The kernel knows the fuse file system: loaded as a module or built in."""
    try:
        with open(p.path("/proc/filesystems")) as f:
            if any(line.split()[-1:] == ["fuse"] for line in f):
                return _ok("FUSE", "kernel fuse", "registered in /proc/filesystems")
    except OSError:
        return _skip("FUSE", "kernel fuse", "/proc/filesystems unreadable (no /proc?)")
    return _fail("FUSE", "kernel fuse", "not in /proc/filesystems", "modprobe fuse")


# -- the daemon -----------------------------------------------------------------


def check_daemon(p: Probes, settings: config.Settings) -> tuple[list[Check], Any]:
    """Reachable and the same version; returns the daemon's version answer (or None)."""
    from pachctl.client import Client  # the client pulls in httpx models: only when used

    remote = settings.address is not None and not settings.address.startswith("unix:")
    start = f"check that pachd runs at {settings.address} (ADDRESS)" if remote else "pachctl daemon &"
    c = Client(settings.address, token=settings.token, home=settings.home, autostart=False, timeout=p.timeout)
    try:
        v = c.version()
    except errors.PfsError as exc:
        why = exc.message.split(";")[0]
        why = why[why.find("(") + 1 : why.rfind(")")] if "(" in why else why  # "cannot reach ... (REASON)"
        return [_fail("daemon", "reachable", f"no answer at {c.where} ({why})", start)], None
    finally:
        c.close()
    out = [_ok("daemon", "reachable", c.where)]
    if v.version != __version__:
        out.append(_fail("daemon", "version", f"daemon {v.version}, pachctl {__version__}",
                         "pachctl daemon --stop && pachctl daemon &" if not remote else "upgrade pachd or pachctl to one version"))
    else:
        out.append(_ok("daemon", "version", v.version))
    return out, v


def check_home(p: Probes, home: str) -> list[Check]:
    """The home is the user's and writable by nobody else; its socket is private.
    A home not made yet is no problem: the first pachctl command makes it, private."""
    try:
        st = os.stat(home)
    except FileNotFoundError:
        return [_skip("daemon", "home", f"{home} not created yet (the daemon makes it at its first start)")]
    if not stat.S_ISDIR(st.st_mode):
        return [_fail("daemon", "home", f"{home} is not a directory", f"mv {home} {home}.old")]
    out = []
    if st.st_uid != p.euid:
        out.append(_fail("daemon", "home owner", f"{home} belongs to uid {st.st_uid}, you are {p.euid}",
                         f"chown -R {p.euid} {home}"))
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        out.append(_fail("daemon", "home permissions", f"{home} is mode {mode:o}: others can write to it",
                         f"chmod 700 {home}"))
    else:
        out.append(_ok("daemon", "home permissions", f"{home} mode {mode:o}"))
    sock = os.path.join(home, "mountd.sock")
    try:
        sst = os.stat(sock)
    except FileNotFoundError:
        out.append(_skip("daemon", "socket", f"no {sock} (daemon not running here)"))
    else:
        smode = stat.S_IMODE(sst.st_mode)
        if smode & 0o077:
            out.append(_fail("daemon", "socket", f"{sock} is mode {smode:o}: others can talk to the daemon",
                             f"chmod 600 {sock}"))
        else:
            out.append(_ok("daemon", "socket", f"mode {smode:o}"))
    return out


def check_disk(p: Probes, home: str) -> Check:
    where = home
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)  # a home not made yet lives on its parent's disk
    free = shutil.disk_usage(where).free
    from pachctl.cli.output import human_size

    if free < p.min_free:
        return _fail("daemon", "disk space", f"{human_size(free)} free in {where}, want {human_size(p.min_free)}",
                     "pachctl gc   (then free space on that disk, or move PACHY_HOME)")
    return _ok("daemon", "disk space", f"{human_size(free)} free")


# -- Docker, Kubernetes, podman (optional) --------------------------------------


def _systemd_or(cmd: str, daemon_cmd: str, p: Probes) -> str:
    return f"systemctl start {cmd}" if os.path.isdir(p.path("/run/systemd/system")) else daemon_cmd


def check_docker(p: Probes) -> Check:
    host = p.env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if p.which("dockerd") is None and p.which("docker") is None and "DOCKER_HOST" not in p.env:
        return _fail("Docker", "engine", "not installed", "apt-get install docker.io", optional=True)
    try:
        if host.startswith("unix://"):
            transport = httpx.HTTPTransport(uds=host[len("unix://"):])
            base = "http://docker"
        elif host.startswith("tcp://"):
            transport, base = httpx.HTTPTransport(), "http://" + host[len("tcp://"):]
        else:
            return _fail("Docker", "engine", f"DOCKER_HOST={host}: only unix:// and tcp:// are probed",
                         "export DOCKER_HOST=unix:///var/run/docker.sock", optional=True)
        with httpx.Client(transport=transport, base_url=base, timeout=p.timeout) as h:
            info = h.get("/version").json()
    except (httpx.HTTPError, ValueError) as exc:
        fix = _systemd_or("docker", "dockerd > /var/log/dockerd.log 2>&1 &", p)
        if "DOCKER_HOST" in p.env:
            fix = f"start the engine at {host}, or: unset DOCKER_HOST && {fix}"
        return _fail("Docker", "engine", f"no answer at {host} ({type(exc).__name__})", fix, optional=True)
    return _ok("Docker", "engine", f"{info.get('Version', '?')} at {host}", optional=True)


def _kubeconfig(p: Probes) -> str:
    first = p.env.get("KUBECONFIG", "").split(os.pathsep)[0].strip()
    return first or os.path.join(p.env.get("HOME") or os.path.expanduser("~"), ".kube", "config")


def check_kubernetes(p: Probes) -> list[Check]:
    import yaml

    path = _kubeconfig(p)
    g = "Kubernetes"
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        return [_fail(g, "kubeconfig", f"no {path}",
                      "mkdir -p ~/.kube && cp YOUR-CLUSTER-KUBECONFIG ~/.kube/config   (or: export KUBECONFIG=PATH)", optional=True)]
    except (OSError, yaml.YAMLError) as exc:
        return [_fail(g, "kubeconfig", f"{path} unreadable: {str(exc).splitlines()[0]}",
                      f"kubectl config view --kubeconfig {path}   (then fix what it reports)", optional=True)]
    if not isinstance(cfg, dict):
        return [_fail(g, "kubeconfig", f"{path} is not a kubeconfig", f"mv {path} {path}.bad", optional=True)]
    out = [_ok(g, "kubeconfig", path, optional=True)]
    name = cfg.get("current-context")
    ctx = next((c.get("context") or {} for c in cfg.get("contexts") or [] if c.get("name") == name), None)
    if not name or ctx is None:
        names = [c.get("name") for c in cfg.get("contexts") or []]
        fix = f"kubectl config use-context {names[0]}" if names else "kubectl config set-context NAME --cluster=CLUSTER"
        return out + [_fail(g, "context", "no current context" if not name else f"context '{name}' not defined",
                            fix, optional=True)]
    out.append(_ok(g, "context", name, optional=True))
    cluster = next((c.get("cluster") or {} for c in cfg.get("clusters") or [] if c.get("name") == ctx.get("cluster")), {})
    server = cluster.get("server")
    if not server:
        return out + [_fail(g, "API", f"context '{name}' names no cluster server",
                            f"kubectl config set-cluster {ctx.get('cluster') or 'CLUSTER'} --server=https://HOST:6443",
                            optional=True)]
    try:
        # Any HTTP answer (401/403 included) proves the API server is there.
        with httpx.Client(verify=False, timeout=p.timeout) as h:  # reachability only: no credentials are sent
            h.get(server.rstrip("/") + "/version")
    except httpx.HTTPError as exc:
        return out + [_fail(g, "API", f"{server} unreachable ({type(exc).__name__})",
                            "start the cluster, or pick a reachable one: kubectl config use-context NAME",
                            optional=True)]
    return out + [_ok(g, "API", server, optional=True)]


def check_podman(p: Probes) -> Check:
    found = p.which("podman")
    if found is None:
        return _skip("podman", "podman", "not installed (only the podman tests of `pachctl deploy` use it)", optional=True)
    return _ok("podman", "podman", found, optional=True)


# -- all of it --------------------------------------------------------------------


def run_checks(p: Probes, settings: config.Settings) -> list[Check]:
    checks = [check_fuse_device(p), check_fusermount(p), check_fuse_module(p)]
    daemon_checks, version = check_daemon(p, settings)
    checks += daemon_checks
    remote = settings.address is not None and not settings.address.startswith("unix:")
    if remote:
        checks.append(_skip("daemon", "home", "the daemon is remote: its home is on its machine"))
    else:
        home = version.home if version is not None and getattr(version, "home", None) else settings.home
        checks += check_home(p, home)
        checks.append(check_disk(p, home))
    checks.append(check_docker(p))
    checks += check_kubernetes(p)
    checks.append(check_podman(p))
    return checks


def healthy(checks: list[Check]) -> bool:
    return not any(c.status == "fail" for c in checks)


_MARKS = {"plain": {"ok": "OK", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"},
          "mark": {"ok": "✓", "fail": "✗", "warn": "!", "skip": "–"}}
_COLORS = {"ok": "32", "fail": "31", "warn": "33", "skip": "2"}


def render(checks: list[Check], tty: bool, color: bool) -> str:
    marks = _MARKS["mark" if tty else "plain"]
    rows = [(marks[c.status], f"{c.group}: {c.name}" + (" (optional)" if c.optional else ""), c.detail) for c in checks]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = []
    for c, (mark, name, detail) in zip(checks, rows, strict=True):
        cell = mark.ljust(w0)
        if color:
            cell = f"\033[{_COLORS[c.status]}m{cell}\033[0m"
        lines.append(f"{cell}  {name.ljust(w1)}  {detail}".rstrip())
    fixes = [c for c in checks if c.fix and c.status in ("fail", "warn")]
    if fixes:
        lines += ["", "To fix:"]
        lines += [f"  {c.group}: {c.name}{' (optional)' if c.optional else ''}:\n      {c.fix}" for c in fixes]
    bad = sum(c.status == "fail" for c in checks)
    warn = sum(c.status == "warn" for c in checks)
    summary = f"{bad} required check(s) failed" if bad else "all required checks passed"
    if warn:
        summary += f"; {warn} optional check(s) failed (Docker, Kubernetes and podman are optional)"
    lines += ["", summary]
    return "\n".join(lines) + "\n"


def doctor(args) -> int:
    settings = config.resolve()
    probes = Probes(min_free=args.min_free if args.min_free is not None else DEFAULT_MIN_FREE)
    checks = run_checks(probes, settings)
    if args.json:
        json.dump({"ok": healthy(checks), "checks": [asdict(c) for c in checks]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        tty = sys.stdout.isatty()
        sys.stdout.write(render(checks, tty, tty and not os.environ.get("NO_COLOR")))
    return 0 if healthy(checks) else 1


def size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        return int(float(num) * units[unit])
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 500M, 2G)") from None


def register(sub) -> None:
    p = add(sub, "doctor", "Check FUSE, the daemon, Docker and Kubernetes; print how to fix each problem.", doctor)
    json_flag(p)
    p.add_argument("--min-free", type=size, metavar="SIZE",
                   help="free space the home needs (default 1G; e.g. 500M)")

