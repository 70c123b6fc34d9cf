"""Interrupted `put-file -c` (issue 9, item 8): all or nothing.

The daemon starts, writes and finishes the commit in one step once the whole
upload arrived, so a command stopped at any point (SIGINT, SIGTERM, SIGKILL,
a FIFO that never gets a writer, a full disk) leaves the branch as it was,
and the next `put-file -c` works. Nothing here sleeps blindly: each test
waits until the command is observably blocked (in open() of the FIFO, or
mid-upload with the pipe drained) before signalling it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pachctl.client import Client, errors
from tests.clihelp import PACHCTL, make_env, run, stop_daemon
from tests.conftest import Daemon, tmpfs_at, wait_for

MiB = 1 << 20


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("interrupt")
    e = make_env(root / "home", root / "config")
    e["TEST_ROOT"] = str(root)
    try:
        yield e
    finally:
        stop_daemon(e, root / "home")


def _commits(env: dict[str, str], repo: str) -> list[dict]:
    return run(env, "list-commit", repo, "--json").json()


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def _unread(fd: int) -> int:
    """Bytes written to a pipe that its reader has not read yet."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def _start_put(env: dict[str, str], repo: str, fifo: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*PACHCTL, "put-file", repo, "master", "big", "-c", "-f", str(fifo)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _after(proc: subprocess.Popen) -> tuple[int, str]:
    _out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err.decode(), err
    return proc.returncode, err.decode()


def _assert_unchanged_and_usable(env: dict[str, str], repo: str, before: list[dict]) -> None:
    after = _commits(env, repo)
    assert [c["id"] for c in after] == [c["id"] for c in before]
    assert all(c["finished"] is not None for c in after)  # no open commit left behind
    run(env, "put-file", repo, "master", "next", "-c", input=b"next\n")
    assert run(env, "get-file", repo, "master", "next").out == b"next\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_put_c_killed_mid_upload_leaves_branch_as_it_was(env: dict[str, str], sig: signal.Signals) -> None:
    repo = f"mid{sig.name.lower()}"
    run(env, "create-repo", repo)
    run(env, "put-file", repo, "master", "kept", "-c", input=b"kept\n")
    before = _commits(env, repo)
    fifo = Path(env["TEST_ROOT"]) / f"{repo}.fifo"
    os.mkfifo(fifo)
    proc = _start_put(env, repo, fifo)
    try:
        # Opening for writing blocks until the command opened the FIFO to read.
        fd = os.open(fifo, os.O_WRONLY)
        try:
            # More than the first piece the client reads before it sends the
            # request: once the pipe is drained, the upload is in flight and
            # the command blocks waiting for the rest.
            os.write(fd, os.urandom(MiB + 4096))
            wait_for(lambda: _unread(fd) == 0, 20, "the command to read what was written")
            wait_for(lambda: "pipe" in _wchan(proc.pid) or proc.poll() is not None, 20, "the command to block")
            assert proc.poll() is None
            proc.send_signal(sig)
            rc, err = _after(proc)
        finally:
            os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGINT:
        assert rc == 130 and "interrupted" in err
    else:
        assert rc == -sig
    _assert_unchanged_and_usable(env, repo, before)


def _daemon_has_open(env: dict[str, str], path: Path) -> bool:
    pid = int((Path(env["PACHY_HOME"]) / "mountd.lock").read_text().strip())
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == str(path):
                return True
    return False


def test_put_c_of_a_local_file_interrupted_while_the_daemon_reads_it(env: dict[str, str]) -> None:
    """On this machine the daemon reads `-f FILE` itself: Ctrl-C of the command
    must stop that read and make no commit (not finish it while exiting 130)."""
    repo = "localread"
    run(env, "create-repo", repo)
    run(env, "put-file", repo, "master", "kept", "-c", input=b"kept\n")
    before = _commits(env, repo)
    big = Path(env["TEST_ROOT"]) / "sparse.bin"
    with open(big, "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of holes: minutes to read, no disk used
    proc = subprocess.Popen(
        [*PACHCTL, "put-file", repo, "master", "big", "-c", "-f", str(big)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _daemon_has_open(env, big) or proc.poll() is not None, 20, "the daemon to read the file")
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        rc, err = _after(proc)
        assert rc == 130 and "interrupted" in err
        wait_for(lambda: not _daemon_has_open(env, big), 20, "the daemon to stop reading")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        big.unlink()
    _assert_unchanged_and_usable(env, repo, before)


def test_put_c_fifo_without_writer_interrupted(env: dict[str, str]) -> None:
    repo = "nowriter"
    run(env, "create-repo", repo)
    run(env, "put-file", repo, "master", "kept", "-c", input=b"kept\n")
    before = _commits(env, repo)
    fifo = Path(env["TEST_ROOT"]) / "nowriter.fifo"
    os.mkfifo(fifo)
    proc = _start_put(env, repo, fifo)
    try:
        # The command (not the daemon: it never opens a FIFO) waits in open().
        wait_for(lambda: _wchan(proc.pid) == "wait_for_partner" or proc.poll() is not None, 20, "open() to block")
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        rc, err = _after(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130 and "interrupted" in err
    _assert_unchanged_and_usable(env, repo, before)


def test_put_c_twice_quickly_no_still_open(env: dict[str, str]) -> None:
    """Two -c puts on one branch at once both land (each its own commit):
    neither sees the other's commit open."""
    repo = "both"
    run(env, "create-repo", repo)
    procs = [
        subprocess.Popen([*PACHCTL, "put-file", repo, "master", f"f{i}", "-c"], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for i, p in enumerate(procs):
        _out, err = p.communicate(f"{i}\n".encode(), timeout=60)
        assert p.returncode == 0, err
    assert len(_commits(env, repo)) == 2
    assert {f["path"] for f in run(env, "list-file", repo, "master", "--json").json()} == {"/f0", "/f1"}


# -- a full disk ------------------------------------------------------------------


def _pack_files(home: Path) -> set[str]:
    packs = home / "objects" / "packs"
    return {str(f) for f in packs.rglob("*") if f.is_file()} if packs.exists() else set()


def _random(total: int) -> Iterator[bytes]:
    for _ in range(total // MiB):
        yield os.urandom(MiB)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs_at(tmp_path / "disk", "40m") as disk:
        yield disk


def test_put_c_on_full_disk_removes_its_packs_at_once(
    small_disk: Path, tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    home = small_disk / "home"
    d = start_daemon(home)
    c: Client = d.client
    c.create_repo("r")
    c.put_file("r", "master", "kept", b"kept", new_commit=True)
    before_commits = [x.id for x in c.list_commit("r")]
    before_packs = _pack_files(home)
    free_before = os.statvfs(small_disk).f_bavail

    with pytest.raises(errors.NoSpace):
        c.put_file("r", "master", "huge", _random(100 * MiB), new_commit=True)
    # No gc: the packs the failed upload wrote are gone already.
    assert _pack_files(home) == before_packs
    assert os.statvfs(small_disk).f_bavail >= free_before - 64  # within a few blocks (the log grows)
    assert [x.id for x in c.list_commit("r")] == before_commits
    assert c.inspect_commit("r", "master").finished is not None
    # The same through the CLI (the daemon reads the local file itself): exit 7.
    big = tmp_path / "big.bin"  # not on the small disk
    with open(big, "wb") as f:
        for piece in _random(60 * MiB):
            f.write(piece)
    res = run(make_env(home, tmp_path / "config"), "put-file", "r", "master", "huge", "-c", "-f", str(big), rc=7)
    assert len(res.err.splitlines()) == 1 and res.err.startswith("error: ")
    assert _pack_files(home) == before_packs
    assert [x.id for x in c.list_commit("r")] == before_commits
    # ...and the next -c put works.
    res = c.put_file("r", "master", "after", os.urandom(8 * MiB), new_commit=True)
    assert res.commit is not None and res.commit.finished is not None
    assert c.fsck().ok


def test_abandoned_session_keeps_a_pack_another_session_shares(pfs) -> None:
    """Pack names are content hashes: a session that fails must not delete a
    pack another session wrote with the same bytes and still needs."""
    pfs.create_repo("r")
    for name in ("a", "b"):
        pfs.start_commit("r", name)
    a = pfs.write_session("r", "a")
    b = pfs.write_session("r", "b")
    a.put_bytes("x", b"same bytes")
    b.put_bytes("x", b"same bytes")
    threads = [threading.Thread(target=s.sink.close) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with contextlib.suppress(Exception):
        a.close()  # abandoned
    b.commit()
    pfs.finish_commit("r", "b")
    assert pfs.read_file("r", "b", "x")[1] is not None
    assert b"".join(pfs.read_file("r", "b", "x")[1]) == b"same bytes"
    assert pfs.fsck()["ok"]


def test_new_commit_not_made_once_unwanted(pfs) -> None:
    """The daemon asks once more, inside the commit's transaction, whether the
    client is still there: a client gone after its last byte gets no commit."""
    pfs.create_repo("r")
    def files() -> set[Path]:
        return {p for p in Path(pfs.store.root).rglob("*") if p.is_file()}

    packs = files()
    s = pfs.new_commit_session("r", "master")
    s.put_bytes("f", os.urandom(4096))
    with pytest.raises(errors.Conflict, match="abandoned"):
        s.commit(wanted=lambda: False)
    assert pfs.list_commits("r") == [] and pfs.list_branches("r") == []
    assert files() == packs
    s = pfs.new_commit_session("r", "master")
    s.put_bytes("f", b"kept")
    s.commit(wanted=lambda: True)
    assert s.finished is not None and s.finished.finished is not None
    assert b"".join(pfs.read_file("r", "master", "f")[1]) == b"kept"
