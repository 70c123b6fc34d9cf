"""The Docker runner when things die under it: ``dockerd`` restarted, and mountd
``kill -9``-ed, each with containers running (issue 10, item 6).

Both run against a private Docker engine this module starts (``private_engine``):
the shared one at /var/run/docker.sock serves other tests and must never be
stopped. The private one has its own socket, data root, exec root (so its own
containerd) and pidfile, a containerd namespace of its own, and a bridge of its own
with ``--iptables=false ...``: nothing that could clash with the shared engine's
bridge (``--bridge=none`` would delete ``docker0``) or iptables rules. mountd is
pointed at it with ``DOCKER_HOST`` (the runner connects with ``docker.from_env()``).

An engine that stays away (past ``PACHY_DOCKER_ENGINE_GRACE``) fails the job saying
to start it. What is checked after each: the job ends (finishes or fails with its reason), no
container of a dead worker is left labelled for the daemon, every commit of the
output repo is finished, and the output, when there is one, is complete (each datum
writes ``begin``, sleeps, then the rest: a half-written datum would show).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pachctl.client import Client
from tests.conftest import pid_gone, wait_for
from tests.images import BUSYBOX_IMAGE
from tests.ppshelp import (
    Pachy,
    commit_files,
    delete_all_pipelines,
    flush,
    jobs,
    outputs,
    pfs,
    processes,
)

pytestmark = pytest.mark.docker

ENGINE_START = 30.0  # a private dockerd answers in ~0.5 s here
ENGINE_STOP = 30.0
SLEEP = "2.31"  # each datum's sleep: distinctive, to find the unit's process in /proc
FILES = {"a": b"apple\n", "b": b"banana\n"}


class Engine:
    """A private ``dockerd`` under ``root``: started, stopped and started again."""

    def __init__(self, root: Path):
        self.root = root
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.log = root / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        # A bridge of its own: with --bridge=none dockerd deletes the host's docker0 at start,
        # which the shared engine's containers need (seen: "could not find bridge docker0").
        self.bridge = f"pachyt{os.getpid() % 100000}"

    def start(self):
        """Start dockerd and wait (with a deadline) until it answers; its client."""
        import docker

        dockerd = shutil.which("dockerd")
        assert dockerd, "no dockerd on this machine (installers/install.sh --test installs docker.io)"
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "10.203.7.1/24", "dev", self.bridge], check=True)
            subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        argv = [dockerd, "--host", self.url, "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
                "--containerd-namespace", "pachy-test", "--containerd-plugins-namespace", "pachy-test-plugins",
                f"--bridge={self.bridge}", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + ENGINE_START
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the private dockerd exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                client = docker.DockerClient(base_url=self.url, timeout=10)
                client.ping()
                return client
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the private dockerd did not answer within {ENGINE_START} s:\n{self.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (dockerd stops its containers and its containerd), SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(ENGINE_STOP)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def leftovers(self) -> list[int]:
        """Pids of processes still running from this engine's directories (its containerd,
        shims): started by the dockerd this module started."""
        mark = str(self.root).encode()
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        if mark in f.read() and not pid_gone(int(name)):
                            out.append(int(name))
                except OSError:
                    pass
        return out

    def clean(self) -> None:
        """Nothing left: processes, mounts (overlays of its containers, its netns), its bridge, files."""
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.leftovers(), 10, "the private engine's processes to end")
        for point in sorted(_mounts_under(self.root), key=len, reverse=True):  # deepest first
            subprocess.run(["umount", "-l", point], capture_output=True)
        assert not _mounts_under(self.root), _mounts_under(self.root)
        shutil.rmtree(self.root)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@pytest.fixture(scope="module")
def engine(docker_engine) -> Iterator[Engine]:
    """A private dockerd with the test images (``docker_engine``: there is Docker here at all)."""
    from tests.images import ensure_images

    # short: containerd's sockets live under the exec root (a unix socket path has 108 bytes)
    e = Engine(Path(tempfile.mkdtemp(prefix="pachy-test-dockerd-")))
    had_docker0 = Path("/sys/class/net/docker0").exists()
    try:
        client = e.start()
        ensure_images(client)
        client.close()
        yield e
    finally:
        e.stop()
        e.clean()
    # the shared engine's containers need its bridge: the private engine must not take it away
    assert Path("/sys/class/net/docker0").exists() or not had_docker0, "the private dockerd deleted docker0"


@dataclass(frozen=True)
class Box:
    id: str
    worker: str
    status: str


def _containers(e: Engine, p: Pachy) -> list[Box]:
    """The daemon's containers in the private engine, in one call (the SDK's
    ``containers.list`` inspects each one after listing: one the runner removes between
    the two is a NotFound)."""
    import docker

    from pps.runners.docker import daemon_label

    with contextlib.closing(docker.APIClient(base_url=e.url, timeout=10)) as api:
        found = api.containers(all=True, filters={"label": f"pachy.daemon={daemon_label(str(p.home))}"})
    return [Box(c["Id"], (c.get("Labels") or {}).get("pachy.worker", ""), c.get("State", "")) for c in found]


def _slow_pipeline(c: Client) -> str:
    """Two datums of ~2.3 s each on one container worker; the input's head."""
    c.create_repo("in")
    head = commit_files(c, "in", FILES)
    c.create_pipeline({
        "pipeline": {"name": "slow"}, "input": pfs("in"),
        "transform": {"image": BUSYBOX_IMAGE, "cmd": ["sh"], "stdin": [
            'n=$(basename "$in")', 'echo begin > "/pfs/out/$n"', f"sleep {SLEEP}",
            'cat "$in" >> "/pfs/out/$n"', 'echo end >> "/pfs/out/$n"']},
    })
    wait_for(lambda: processes("sleep", SLEEP), 30, "a unit to run in its container")
    return head


def _check_clean_end(p: Pachy, e: Engine, head: str) -> str:
    """The job of ``head`` has ended; nothing half-done is left. Its state."""
    c = p.client
    res = flush(c, "in", head, timeout=45)
    job = jobs(c, "slow")[-1]
    assert job.state in ("success", "failure"), job
    if res.failed_jobs:
        assert job.state == "failure" and job.reason, job
    else:
        assert outputs(c, "slow") == {n: b"begin\n" + v + b"end\n" for n, v in FILES.items()}
    open_commits = [x.id for x in c.list_commit("slow", all=True) if x.finished is None]
    assert not open_commits, f"open output commits left: {open_commits}"
    # one running container per live worker (a dead worker's may have the id of its successor)
    live = sorted(p.worker_pids().values())
    left = sorted((ctr.worker, ctr.status) for ctr in _containers(e, p))
    assert left == [(wid, "running") for wid in live], f"containers of dead workers left: {left} (live: {live})"
    return job.state


def test_dockerd_restarted_with_containers_running(engine: Engine, tmp_path: Path) -> None:
    p = Pachy(tmp_path / "dr", PACHY_RUNNER="docker", DOCKER_HOST=engine.url)
    p.start()
    try:
        head = _slow_pipeline(p.client)
        before = {ctr.id for ctr in _containers(engine, p)}
        assert before
        engine.stop()  # it kills its containers (their stop signal is SIGKILL) and stops
        # The runner has seen the worker's container end, stopped the worker, and found the
        # engine gone when asked for a new one: it waits for it instead of failing units.
        wait_for(lambda: "its container ended" in p.log_text() and "does not answer" in p.log_text(), 15,
                 "the runner to notice the engine is gone")
        engine.start().close()
        state = _check_clean_end(p, engine, head)
        assert state == "success", [(j.state, j.reason) for j in jobs(p.client, "slow")]
        assert not before & {ctr.id for ctr in _containers(engine, p)}
        delete_all_pipelines(p.client)
    finally:
        p.stop()
    assert not _containers(engine, p)


def test_dockerd_gone_for_good_fails_the_job_cleanly(engine: Engine, tmp_path: Path) -> None:
    p = Pachy(tmp_path / "gone", PACHY_RUNNER="docker", DOCKER_HOST=engine.url, PACHY_DOCKER_ENGINE_GRACE="1")
    p.start()
    try:
        head = _slow_pipeline(p.client)
        engine.stop()
        try:
            res = flush(p.client, "in", head, timeout=45)
            (job,) = res.failed_jobs
            assert "no Docker engine answers" in job.reason and "start it" in job.reason, job.reason
            assert not [x.id for x in p.client.list_commit("slow", all=True) if x.finished is None]
            assert "waiting up to 1 s" in p.log_text()
        finally:
            engine.start().close()
        # Back: the worker that could not get a container gets one (the dead one removed first).
        wait_for(lambda: sorted((ctr.worker, ctr.status) for ctr in _containers(engine, p))
                 == [(wid, "running") for wid in sorted(p.worker_pids().values())], 30,
                 "one running container per live worker")
        wait_for(lambda: "answers again" in p.log_text(), 15, "the runner to see the engine back")
        delete_all_pipelines(p.client)
    finally:
        p.stop()
    assert not _containers(engine, p)


def test_mountd_kill9_with_containers_running(engine: Engine, tmp_path: Path) -> None:
    p = Pachy(tmp_path / "k9", PACHY_RUNNER="docker", DOCKER_HOST=engine.url)
    p.start()
    try:
        head = _slow_pipeline(p.client)
        before = {ctr.id for ctr in _containers(engine, p)}
        assert before
        p.kill9()
        wait_for(lambda: not p.worker_pids(), 15, "the workers to follow their daemon")
        assert before <= {ctr.id for ctr in _containers(engine, p)}  # orphans, until the next daemon
        p.start()
        wait_for(lambda: not before & {ctr.id for ctr in _containers(engine, p)}, 30,
                 "the orphaned containers to be removed")
        assert "removed" in p.log_text()
        state = _check_clean_end(p, engine, head)
        assert state == "success", [(j.state, j.reason) for j in jobs(p.client, "slow")]
        delete_all_pipelines(p.client)
    finally:
        p.stop()
    assert not _containers(engine, p)
    assert not [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(p.home) in line]
