"""Shared fixtures: an isolated environment for every test, PFS engines, and mountd daemons.

Every test runs with PACHY_HOME, XDG_CONFIG_HOME and XDG_DATA_HOME pointing
into its own tmp_path, and without any address or token in the environment,
so nothing ever touches (or autostarts a daemon in) the user's real
~/.local/share/pachy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pachctl.client import Client, errors
from pfsfuse.objstore import LocalStore, MemoryStore
from pfsfuse.pfs import PFS

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

_ENV_CLEARED = (
    "PACHY_ADDRESS",
    "ADDRESS",
    "PACHD_ADDRESS",
    "PACHY_TOKEN",
    "PACHY_STORE",
    "PACHY_NO_AUTOSTART",
    "PACHY_ZSTD_LEVEL",
    "PACHY_RUNNER",
)


def wait_for(
    condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaping it if it is our child)."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass  # not our child, or already reaped
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a process this test started, then SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not pid_gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: pid_gone(pid), 5.0, f"pid {pid} to die")
            return
        time.sleep(0.01)


def open_to_user_code(path: Path) -> None:
    """Let pipelines' user code (an unprivileged uid, shim/execute.py) use ``path``:
    tests hand files to it and get markers back through their tmp_path. Its
    parents (pytest makes them 0700) become traversable, it becomes writable
    by all (sticky, as /tmp); what the daemon keeps there stays private by its own modes."""
    if os.geteuid() != 0:
        return
    path.chmod(0o1777)
    for parent in path.parents:
        if parent == Path(tempfile.gettempdir()) or parent == parent.parent:
            break
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod((mode & 0o7777) | 0o011)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test away from the user's real config, data and daemon."""
    for name in _ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "pachy-home"
    open_to_user_code(tmp_path)
    monkeypatch.setenv("PACHY_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return home


@pytest.fixture
def pfs(tmp_path: Path) -> Iterator[PFS]:
    p = PFS(str(tmp_path / "store"), LocalStore(str(tmp_path / "store" / "objects")))
    yield p
    p.close()


@pytest.fixture
def mem_pfs(tmp_path: Path) -> Iterator[PFS]:
    p = PFS(str(tmp_path / "memstore"), MemoryStore())
    yield p
    p.close()


@dataclass
class Daemon:
    home: Path
    proc: subprocess.Popen
    client: Client
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait; SIGKILL if it does not stop. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.client.close()
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.client.close()


def spawn_daemon(home: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    """Start ``python -m mountd --home HOME ARGS`` with its output in a log file."""
    home.mkdir(parents=True, exist_ok=True)
    log = log or home.parent / f"{home.name}-mountd.log"
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mountd", "--home", str(home), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


def wait_until_answering(proc: subprocess.Popen, client: Client, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"mountd exited with {proc.returncode} during start-up:\n{log.read_text()}"
            )
        try:
            client.version()
            return
        except errors.Unreachable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"mountd did not answer within {START_TIMEOUT} s:\n{log.read_text()}"
            )
        time.sleep(0.01)


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., Daemon]]:
    """A factory: ``start_daemon(home, *extra_args, client=...)`` runs a daemon and
    waits until it answers; every daemon it started is stopped at teardown."""
    started: list[Daemon] = []

    def start(home: Path, *args: str, client: Client | None = None) -> Daemon:
        log = home.parent / f"{home.name}-mountd.log"
        proc = spawn_daemon(home, *args, log=log)
        c = client if client is not None else Client(home=str(home), autostart=False, timeout=60)
        d = Daemon(home, proc, c, log)
        started.append(d)
        try:
            wait_until_answering(proc, c, log)
        except BaseException:
            d.stop()
            raise
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def daemon(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> Daemon:
    return start_daemon(tmp_path / "home")


@pytest.fixture
def client(daemon: Daemon) -> Client:
    return daemon.client


@contextlib.contextmanager
def tmpfs_at(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made if missing) for the block's
    duration. The suite runs as root (FUSE mounts need it anyway): a failure to
    mount is a failure, not a skip."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


# -- a Docker engine for the docker-marked tests -----------------------------------------

DOCKERD_LOG = Path(tempfile.gettempdir()) / "pachy-test-dockerd.log"
DOCKERD_START = 60.0


def _docker_answers():
    import docker

    try:
        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:
        return None


def _no_docker(why: str) -> None:
    """No engine: a failure (the README's test command installs and starts one, so a missing
    engine is a broken set-up, not a reason to pass silently), unless PACHY_TEST_NO_DOCKER=1
    says the Docker tests are to be left out on this machine."""
    if os.environ.get("PACHY_TEST_NO_DOCKER") == "1":
        pytest.skip(f"{why} (PACHY_TEST_NO_DOCKER=1)")
    pytest.fail(f"{why}; set PACHY_TEST_NO_DOCKER=1 to leave the Docker tests out", pytrace=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[object]:
    """A docker client whose engine answers, with the test images made (tests/images.py).

    Uses the engine at /var/run/docker.sock (or DOCKER_HOST); if none answers, starts
    ``dockerd`` (logging to DOCKERD_LOG) and waits for it, as .ci/run's fresh machine
    needs, and stops it at the end. Fails when no engine can run here (``_no_docker``)."""
    import shutil as _shutil

    from tests.images import ensure_images

    started: subprocess.Popen | None = None
    client = _docker_answers()
    if client is None:
        dockerd = _shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            _no_docker("no Docker engine answers and none can be started here "
                        "(dockerd needs root; installers/install.sh --test installs docker.io)")
        if not any(os.path.ismount(f"/sys/fs/cgroup/{c}") for c in ("memory", "unified")) \
                and _shutil.which("cgroupfs-mount"):
            # a machine booted without cgroup hierarchies: mount them as Debian's init script
            # for docker does before it starts dockerd (runc needs them)
            subprocess.run(["cgroupfs-mount"], check=False, capture_output=True)
        with open(DOCKERD_LOG, "ab") as log:
            started = subprocess.Popen([dockerd], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        deadline = time.monotonic() + DOCKERD_START
        while (client := _docker_answers()) is None:
            if started.poll() is not None or time.monotonic() > deadline:
                if started.poll() is None:
                    started.terminate()
                    started.wait(15)
                tail = DOCKERD_LOG.read_text(errors="replace")[-2000:]
                _no_docker(f"dockerd could not start here (exit {started.returncode}); its log "
                            f"{DOCKERD_LOG} ends:\n{tail}")
            time.sleep(0.2)
    ensure_images(client)
    yield client
    client.close()
    if started is not None:
        started.terminate()
        try:
            started.wait(30)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait(5)
