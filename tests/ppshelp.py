"""A real daemon for the pipeline end-to-end tests (test_pps_e2e, _jobs, _faults), and helpers.

A module shares one daemon (``Pachy``, from a module-scoped fixture built on
``pachy_daemon``); its tests use distinct repo and pipeline names, and each
module's ``c`` fixture (the client) deletes every pipeline after each test,
so idle workers do not pile up on a small machine. ``px(*args)`` runs
pachctl against that daemon. Waiting is always on a condition with a
deadline: ``flush`` (the daemon's flush-commit, with its own timeout),
``wait_jobs``/``wait_job_running`` or ``wait_for``; never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mountd.pps_models import FlushResult, Job
from pachctl.client import Client, errors
from tests.clihelp import Result, make_env, run
from tests.conftest import open_to_user_code, pid_gone, wait_for, wait_until_answering

FLUSH_TIMEOUT = 60.0
_CLEARED = ("ADDRESS", "PACHD_ADDRESS", "PACHY_ADDRESS", "PACHY_TOKEN", "PACHY_STORE", "PACHY_NO_AUTOSTART",
            "PACHY_DEBUG", "PACHY_HOME")


class Pachy:
    """One daemon (``python -m mountd --home HOME``), pachctl and a client bound to it."""

    def __init__(self, root: Path, **extra_env: str):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        open_to_user_code(root)  # tests hand files to pipelines' user code through it
        self.home = root / "home"
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = root / "mountd.log"
        self.extra_env = extra_env
        self.env = make_env(self.home, root / "config", PACHY_NO_AUTOSTART="1", NO_COLOR="1", **extra_env)
        self.proc: subprocess.Popen | None = None
        self.client: Client | None = None

    # -- the daemon ------------------------------------------------------------

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED} | self.extra_env
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mountd", "--home", str(self.home)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            )
        self.client = Client(home=str(self.home), autostart=False, timeout=60)
        try:
            wait_until_answering(self.proc, self.client, self.log)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers), then end any worker it left behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.client is not None:
            self.client.close()
        self.kill_workers()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
        if self.client is not None:
            self.client.close()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # -- worker processes (started by this daemon's local runner) ---------------

    def worker_pids(self, pipeline: str | None = None) -> dict[int, str]:
        """pid -> worker id of every live ``python -m shim`` serving this daemon."""
        address = f"unix:{self.home}/mountd.sock"
        out = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "shim" not in argv or address not in argv or pid_gone(int(name)) or _in_child_pidns(int(name)):
                continue  # (a worker's sandbox init is a fork of it, pid 1 of a namespace of its own)
            opts = dict(zip(argv, argv[1:], strict=False))  # --pipeline NAME, --worker ID
            if pipeline is None or opts.get("--pipeline") == pipeline:
                out[int(name)] = opts.get("--worker", "?")
        return out

    def kill_workers(self) -> None:
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- pachctl ----------------------------------------------------------------

    def __call__(self, *args: str, input: bytes | None = None, rc: int | None = 0) -> Result:
        return run(self.env, *args, input=input, rc=rc)

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path


def _in_child_pidns(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("NSpid:") and len(line.split()) > 2 for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def pachy_daemon(root: Path, **extra_env: str) -> Iterator[Pachy]:
    p = Pachy(root, **extra_env)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def delete_all_pipelines(c: Client) -> None:
    with contextlib.suppress(errors.PfsError):
        c.delete_all_pipelines(force=True)


# -- data in, data out ------------------------------------------------------------


def commit_files(c: Client, repo: str, files: dict[str, bytes | str | None], branch: str = "master") -> str:
    """One finished commit on ``branch``: each file replaced by its bytes, or deleted (None)."""
    with c.commit(repo, branch) as commit:
        for path, data in files.items():
            if data is None:
                c.delete_file(repo, commit.id, path)
            else:
                c.put_file(repo, commit.id, path, data, overwrite=True)
    return commit.id


def outputs(c: Client, repo: str, ref: str = "master") -> dict[str, bytes]:
    """Every file of a commit: path (no leading /) -> content."""
    files = [f for f in c.glob_file(repo, ref, "/**") if f.type == "file"]
    return {f.path.lstrip("/"): c.read_file(repo, ref, f.path) for f in files}


def flush(c: Client, repo: str, commit: str, timeout: float = FLUSH_TIMEOUT) -> FlushResult:
    """The daemon's flush-commit, bounded by ``timeout`` (its own deadline)."""
    return c.flush_commit([(repo, commit)], timeout=timeout)


def flush_ok(c: Client, repo: str, commit: str, timeout: float = FLUSH_TIMEOUT) -> FlushResult:
    res = flush(c, repo, commit, timeout)
    assert not res.failed_jobs, [(j.pipeline, j.reason) for j in res.failed_jobs]
    return res


def jobs(c: Client, pipeline: str) -> list[Job]:
    """The pipeline's jobs, oldest first."""
    return sorted(c.list_job(pipeline), key=lambda j: j.created)


def wait_jobs(c: Client, pipeline: str, n: int, timeout: float = 60.0) -> list[Job]:
    """Wait until the pipeline has at least ``n`` jobs, all finished; oldest first."""

    def done() -> list[Job] | None:
        js = jobs(c, pipeline)
        return js if len(js) >= n and all(j.state not in ("created", "running") for j in js) else None

    return wait_for(done, timeout, f"{n} finished job(s) of pipeline {pipeline}")


def wait_job_running(c: Client, pipeline: str, n: int = 1, timeout: float = 30.0) -> Job:
    """The ``n``th job of the pipeline, once it exists and is running."""

    def running() -> Job | None:
        js = jobs(c, pipeline)
        return js[n - 1] if len(js) >= n and js[n - 1].state == "running" else None

    return wait_for(running, timeout, f"job {n} of {pipeline} to run")


def spec(name: str, input: dict, stdin: list[str] | str, **extra) -> dict:
    """A 2.x pipeline spec running ``sh`` with ``stdin``."""
    lines = [stdin] if isinstance(stdin, str) else stdin
    return {"pipeline": {"name": name}, "input": input, "transform": {"cmd": ["sh"], "stdin": lines}} | extra


def pfs(repo: str, glob: str = "/*", **extra) -> dict:
    return {"pfs": {"repo": repo, "glob": glob} | extra}


def http_get(port: int, path: str) -> bytes | None:
    """The body of GET http://127.0.0.1:port/path, or None while nothing (right) answers
    (a service's worker starting, or restarting on a new commit)."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=2) as resp:
            return resp.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, http.client.HTTPException):
        return None  # (IncompleteRead: the old service was stopped mid-answer by a restart)


def lazy_bytes(c: Client, pipeline: str) -> list[int]:
    """Per unit, the bytes its lazy inputs cost (the worker's log line "lazy inputs (...): N bytes read")."""
    lines = [line.message for line in c.get_logs(pipeline=pipeline) if not line.user]
    return [int(m.group(1)) for line in lines if (m := re.search(r"lazy inputs .*: (\d+) bytes read", line))]


def sparse_file(path: Path, size: int, offset: int, marker: bytes) -> Path:
    """``size`` bytes of zeros with ``marker`` written at ``offset`` (sparse: cheap to make)."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(offset)
        f.write(marker)
    return path


def table_rows(res: Result) -> list[list[str]]:
    """A table's rows split on runs of 2+ spaces (cells such as '1 second ago' hold single spaces)."""
    return [re.split(r" {2,}", line.strip()) for line in res.lines]


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def processes(*argv: str) -> list[int]:
    """Pids of live processes whose command line starts with ``argv`` (e.g. user code
    such as ``sleep 1000.25``: tests give their sleeps distinctive lengths)."""
    want = [a.encode() for a in argv]
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                got = f.read().split(b"\0")
        except OSError:
            continue
        if got[: len(want)] == want and not pid_gone(int(name)):
            out.append(int(name))
    return out


def pachy_fixtures(name: str):
    """A test module's fixtures: ``px``, one daemon for the module, and ``c``, its
    client, with every pipeline deleted after each test. Use as
    ``px, c = pachy_fixtures("pps-e2e")``."""

    @pytest.fixture(scope="module")
    def px(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pachy]:
        with pachy_daemon(tmp_path_factory.mktemp(name)) as p:
            yield p

    @pytest.fixture
    def c(px: Pachy) -> Iterator[Client]:
        yield px.client
        delete_all_pipelines(px.client)

    return px, c
