"""Isolation of user code and secrets (issue 9, items 1-4).

An attacking pipeline's user code tries every way to another pipeline's
secret and tasks, and to the daemon, while the victim runs; the worker API
is checked for its scoping with credentials; ``transform.user``; the data
directory's modes and ownership; the TCP daemon refusing mounts and being
stopped by ``pachctl daemon --stop``.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from mountd.app import build_app
from pachctl.client import Client
from pfsfuse.objstore import LocalStore
from pfsfuse.pfs import PFS
from pps.queue import Task
from pps.scheduler import Scheduler
from tests.clihelp import make_env, run
from tests.conftest import free_port, pid_gone, spawn_daemon, wait_for, wait_until_answering
from tests.ppshelp import (
    Pachy,
    commit_files,
    delete_all_pipelines,
    flush_ok,
    outputs,
    pachy_daemon,
    pfs,
    spec,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox tests need root")


@pytest.fixture(scope="module")
def px(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pachy]:
    with pachy_daemon(tmp_path_factory.mktemp("isolation")) as p:
        yield p


@pytest.fixture
def c(px: Pachy) -> Iterator[Client]:
    assert px.client is not None
    yield px.client
    delete_all_pipelines(px.client)


def _pids_holding(text: str) -> list[int]:
    """Host pids whose environment holds ``text`` (the test runs as root)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


ATTACK = r"""
R=/pfs/out/report
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1=reached" >> $R; else echo "$1=refused" >> $R; fi; }
for p in $(cat /pfs/in/pids); do
  try "environ-$p" "grep -q hunter2 /proc/$p/environ"
  try "root-$p" "ls /proc/$p/root/"
  try "kill-$p" "kill -0 $p"
done
try any-environ "cat /proc/[0-9]*/environ | grep -q hunter2"
try meta "head -c 16 '$HOMEDIR/meta.sqlite'"
try home-listing "ls '$HOMEDIR' | grep -q ."
try scratch "ls '$HOMEDIR/scratch' | grep -q ."
try socket-file "test -e '$HOMEDIR/mountd.sock'"
try socket-connect "python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"$HOMEDIR/mountd.sock\")'"
try shm "ls /dev/shm | grep -q pachy"
try mount-disk "mount -t tmpfs none /mnt"
echo "procs=$(ls /proc | grep -c '^[0-9]')" >> $R
echo "uid=$(id -u)" >> $R
"""


def test_user_code_reaches_neither_other_pipelines_nor_the_daemon(px: Pachy, c: Client, tmp_path: Path) -> None:
    secret = f"hunter2-{uuid.uuid4().hex}"
    c.create_secret("victim-creds", {"pw": secret})
    go = tmp_path / "go"
    c.create_repo("victim-in")
    c.create_repo("attack-in")
    c.create_pipeline({"pipeline": {"name": "victim"}, "input": pfs("victim-in"),
                       "transform": {"cmd": ["sh"], "stdin": ['printf %s "$PW" > /pfs/out/pw',
                                                              f"while [ ! -e {go} ]; do sleep 0.02; done"],
                                     "secrets": [{"name": "victim-creds", "env_var": "PW", "key": "pw"}]}})
    (victim_worker,) = wait_for(lambda: list(px.worker_pids("victim").values()), 20, "the victim's worker")

    # Another worker's id, as ps shows it, does not get the victim's task: the credential is missing.
    sock = str(px.home / "mountd.sock")
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://mountd") as h:
        for headers in ({}, {"X-Pachy-Worker": "made-up"}):
            r = h.post("/v1/workers/victim/next", params={"worker": victim_worker, "wait": 0.2}, headers=headers)
            assert r.status_code == 401, r.text
            assert secret not in r.text

    victim_head = commit_files(c, "victim-in", {"x": b"1"})
    # The victim's user code runs, with the secret in its environment, while the attacker tries.
    holders = wait_for(lambda: _pids_holding(secret), 20, "the victim's user code to run")
    targets = sorted({*holders, *px.worker_pids("victim"), px.pid, 1})
    head = commit_files(c, "attack-in", {"pids": " ".join(map(str, targets)) + "\n"})
    c.create_pipeline({"pipeline": {"name": "attacker"}, "input": pfs("attack-in"),
                       "transform": {"cmd": ["sh"], "stdin": [ATTACK], "env": {"HOMEDIR": str(px.home)}}})
    flush_ok(c, "attack-in", head)
    report = dict(line.split("=", 1) for line in outputs(c, "attacker")["report"].decode().split())
    reached = sorted(k for k, v in report.items() if v == "reached")
    assert reached == [], report
    assert int(report["procs"]) <= 6, report  # its init, sh, ls, grep: nothing of anyone else
    assert report["uid"] != "0"

    # Even code run as root (it asked for it) finds the daemon's home empty and no one
    # else's processes: the layers below the uid hold too (root could undo them on purpose).
    c.create_repo("root-attack-in")
    head = commit_files(c, "root-attack-in", {"x": b"1"})
    c.create_pipeline({"pipeline": {"name": "root-attacker"}, "input": pfs("root-attack-in", "/"),
                       "transform": {"cmd": ["sh"], "user": "root", "env": {"HOMEDIR": str(px.home)}, "stdin": [
                           "R=/pfs/out/report",
                           'test -e "$HOMEDIR/meta.sqlite" && echo meta=reached >> $R',
                           'test -e "$HOMEDIR/mountd.sock" && echo socket=reached >> $R',
                           "cat /proc/[0-9]*/environ | grep -q hunter2 && echo any-environ=reached >> $R",
                           "ls /dev/shm | grep -q pachy && echo shm=reached >> $R",
                           "echo procs=$(ls /proc | grep -c '^[0-9]') >> $R"]}})
    flush_ok(c, "root-attack-in", head)
    report = dict(line.split("=", 1) for line in outputs(c, "root-attacker")["report"].decode().split())
    assert list(report) == ["procs"] and int(report["procs"]) <= 6, report

    go.touch()
    flush_ok(c, "victim-in", victim_head)
    assert outputs(c, "victim") == {"pw": secret.encode()}  # the victim got its task and its secret
    c.delete_secret("victim-creds")


def test_worker_api_answers_only_the_worker_it_was_issued_to(tmp_path: Path) -> None:
    pfs_ = PFS(str(tmp_path / "store"), LocalStore(str(tmp_path / "store" / "objects")))
    s = Scheduler(pfs_, str(tmp_path / "store"))

    class Runner:  # the two workers a runner started: pa-w (pipeline pa) and pb-w (pb)
        def authenticate(self, credential: str) -> tuple[str, str] | None:
            return {"cred-a": ("pa", "pa-w"), "cred-b": ("pb", "pb-w")}.get(credential)

        def running(self, pipeline: str) -> int:
            return 1

    s.runner = Runner()
    s.store.find_pipeline = lambda name: object() if name in ("pa", "pb") else None  # both exist
    pfs_.create_repo("r")
    info = pfs_.start_commit("r", "master")
    with pfs_.write_session("r", info.id) as ws:
        ws.put_bytes("f", b"inputs of pb", overwrite=True)
        ws.commit()
    pfs_.finish_commit("r", info.id)
    payload = {"task_id": "tb", "job_id": "jb", "pipeline": "pb", "secrets": [{"data": {"k": "pb-secret"}}],
               "units": [{"unit_id": "u", "files": [{"repo": "r", "commit": info.id}]}]}
    s.queue.put([Task("tb", "jb", "pb", ["u"], payload)])
    app = build_app(pfs_, None, None, s)
    item = {"items": [{"repo": "r", "commit": info.id, "path": "/f", "offset": 0, "length": -1}]}

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mountd") as h:
            def as_(cred: str) -> dict:
                return {"X-Pachy-Worker": cred}

            nxt = "/v1/workers/pb/next"
            assert (await h.post(nxt, params={"worker": "pb-w", "wait": 0})).status_code == 401
            r = await h.post(nxt, params={"worker": "pb-w", "wait": 0}, headers=as_("cred-a"))
            assert r.status_code == 403 and "pb-secret" not in r.text  # a worker of pa asks for pb's task
            r = await h.post("/v1/workers/pa/next", params={"worker": "pb-w", "wait": 0}, headers=as_("cred-a"))
            assert r.status_code == 403  # its own pipeline, another worker's id
            r = await h.post("/v1/workers/read", json=item, headers=as_("cred-b"))
            assert r.status_code == 403  # pb's worker before it holds the task
            r = await h.post(nxt, params={"worker": "pb-w", "wait": 0}, headers=as_("cred-b"))
            assert r.status_code == 200 and r.json()["task_id"] == "tb"
            r = await h.post("/v1/workers/read", json=item, headers=as_("cred-a"))
            assert r.status_code == 403 and b"inputs of pb" not in r.content
            r = await h.post("/v1/workers/read", json=item, headers=as_("cred-b"))
            assert r.status_code == 200 and r.content.endswith(b"inputs of pb")
            r = await h.post("/v1/workers/pb/still", params={"task": "tb"}, headers=as_("cred-a"))
            assert r.status_code == 403
            r = await h.post("/v1/workers/tasks/tb/result", params={"worker": "pb-w"}, content=b"",
                             headers=as_("cred-a"))
            assert r.status_code == 403
            assert s.queue.leased("pb-w") is not None  # pa's worker took nothing from pb's

    try:
        trio.run(main)
    finally:
        pfs_.close()


def test_transform_user_reads_pfs_and_writes_out(c: Client) -> None:
    c.create_repo("tu-in")
    head = commit_files(c, "tu-in", {"a": b"alpha\n", "sub/b": b"beta\n"})
    c.create_pipeline({"pipeline": {"name": "tu"}, "input": pfs("tu-in", "/"),
                       "transform": {"cmd": ["sh"], "user": "nobody",
                                     "stdin": ["id -un > /pfs/out/who", "cat /pfs/tu-in/a /pfs/tu-in/sub/b > "
                                               "/pfs/out/both", "mkdir -p /pfs/out/d && echo x > /pfs/out/d/x"]}})
    flush_ok(c, "tu-in", head)
    assert outputs(c, "tu") == {"who": b"nobody\n", "both": b"alpha\nbeta\n", "d/x": b"x\n"}


# -- the data directory --------------------------------------------------------------


def _start(home: Path, *args: str) -> subprocess.Popen:
    proc = spawn_daemon(home, *args)
    client = Client(home=str(home), autostart=False, timeout=30)
    try:
        wait_until_answering(proc, client, home.parent / f"{home.name}-mountd.log")
        if not args:
            client.create_secret("s", {"k": "plaintext"})
    finally:
        client.close()
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def test_a_0755_home_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "token").write_text("old\n")
    (home / "token").chmod(0o644)
    proc = _start(home)
    try:
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("meta.sqlite", "token", "mountd.lock", "mountd.sock"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
        for name in ("objects", "logs"):
            if (home / name).exists():
                assert stat.S_IMODE((home / name).stat().st_mode) == 0o700, name
    finally:
        _stop(proc)
    wal = [p for p in home.iterdir() if p.name.startswith("meta.sqlite")]
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in wal)


@pytest.mark.parametrize("plant", ["owner", "log-symlink", "socket"])
def test_a_home_of_another_user_or_with_planted_entries_is_refused(tmp_path: Path, plant: str) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    victim = tmp_path / "victim-file"
    victim.write_text("keep\n")
    if plant == "owner":
        os.chown(home, 65534, 65534)
        want = "belongs to uid 65534"
    elif plant == "log-symlink":
        (home / "mountd.log").symlink_to(victim)
        want = "mountd.log is a symlink"
    else:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(home / "mountd.sock"))
        os.chown(home / "mountd.sock", 65534, 65534, follow_symlinks=False)
        want = "mountd.sock belongs to uid 65534"
    proc = subprocess.run([sys.executable, "-m", "mountd", "--home", str(home)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and want in proc.stderr and "Traceback" not in proc.stderr
    assert victim.read_text() == "keep\n"
    # pachctl, which would start the daemon, refuses it the same way and writes nothing there.
    env = make_env(home, tmp_path / "config")
    res = run(env, "list-repo", rc=1)
    assert want in res.err and "Traceback" not in res.err
    assert victim.read_text() == "keep\n"


# -- TCP -------------------------------------------------------------------------------


def test_tcp_refuses_mounts_and_daemon_stop_stops_it(tmp_path: Path) -> None:
    home = tmp_path / "tcp-home"
    address = f"127.0.0.1:{free_port()}"
    proc = spawn_daemon(home, "--listen", address, "--token", "tok")
    good = Client(address, token="tok", autostart=False, timeout=30)
    try:
        wait_until_answering(proc, good, home.parent / f"{home.name}-mountd.log")
        r = httpx.post(f"http://{address}/v1/mounts", json={"path": str(tmp_path / "mnt")},
                       headers={"authorization": "Bearer tok"})
        assert r.status_code == 403 and r.json()["kind"] == "forbidden", r.text
        assert "refused over TCP" in r.json()["error"]
        assert not (tmp_path / "mnt").exists() or not os.path.ismount(tmp_path / "mnt")
        env = make_env(home, tmp_path / "config")
        res = run(env, "daemon", "--stop", "--home", str(home), rc=0)
        assert "no daemon runs" not in res.err
        wait_for(lambda: pid_gone(proc.pid) or proc.poll() is not None, 10, "the TCP daemon to stop")
        res = run(env, "daemon", "--stop", "--home", str(home), rc=0)
        assert "no daemon runs" in res.err
    finally:
        good.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_worker_credentials_are_in_no_environment_or_command_line(px: Pachy, c: Client) -> None:
    c.create_repo("cred-in")
    c.create_pipeline(spec("cred", pfs("cred-in"), "true"))
    pids = wait_for(lambda: px.worker_pids("cred"), 20, "the pipeline's worker")
    for pid in pids:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read()
        assert b"PACHY_WORKER_CREDENTIAL" not in env and b"PACHY_TOKEN" not in env
        assert b"credential-fd" in argv  # the credential came through a pipe
