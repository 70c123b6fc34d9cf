"""Failures: no daemon, kill -9 mid-write, a full disk, a client whose source breaks."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pachctl.client import Client, errors
from tests.conftest import Daemon, free_port, stop_pid, tmpfs_at, wait_for

MiB = 1 << 20


def pack_count(home: Path) -> int:
    packs = home / "objects" / "packs"
    return (
        sum(1 for f in packs.rglob("*") if f.is_file() and not f.name.startswith(".tmp-"))
        if packs.exists()
        else 0
    )


def temporaries(home: Path) -> list[Path]:
    return [f for f in (home / "objects").rglob(".tmp-*")]


def random_pieces(seed: int, total: int, piece: int = MiB) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(total // piece):
        yield rng.randbytes(piece)


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def file_names(client: Client, repo: str, ref: str, path: str = "/") -> set[str]:
    return {f.path for f in client.list_file(repo, ref, path)}


class Runner(threading.Thread):
    """Run a call in a thread and keep what it returned or raised."""

    def __init__(self, fn: Callable[[], object]):
        super().__init__(daemon=True)
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc


# -- no daemon -------------------------------------------------------------------


def test_no_daemon_is_unreachable_naming_the_socket(tmp_path: Path) -> None:
    home = tmp_path / "nobody-home"
    home.mkdir()
    client = Client(home=str(home), autostart=False)
    with pytest.raises(errors.Unreachable) as info:
        client.list_repo()
    assert str(home / "mountd.sock") in str(info.value)
    assert info.value.exit_code == errors.EXIT_UNREACHABLE
    with pytest.raises(errors.Unreachable):
        list(client.get_file("r", "master", "f"))
    assert not (home / "mountd.sock").exists()  # and nothing was started


def test_unreachable_tcp_address_fails_fast() -> None:
    t0 = time.monotonic()
    with Client("127.0.0.1:1") as client, pytest.raises(errors.Unreachable) as info:
        client.list_repo()
    assert time.monotonic() - t0 < 5
    assert "127.0.0.1:1" in str(info.value)
    port = free_port()  # nothing listens there either
    with Client(f"127.0.0.1:{port}", token="t") as client, pytest.raises(errors.Unreachable):
        client.version()


# -- kill -9 -----------------------------------------------------------------------


def test_kill9_during_big_streaming_put(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    home = tmp_path / "home"
    d = start_daemon(home)
    c = d.client
    rng = random.Random(21)
    first, second = rng.randbytes(3 * MiB + 5), rng.randbytes(MiB)
    c.create_repo("r")
    with c.commit("r") as c0:
        c.put_file("r", c0.id, "first.bin", first)
        c.put_file("r", c0.id, "dir/small", b"small\n")
    with c.commit("r") as c1:
        c.put_file("r", c1.id, "second.bin", second)
    open_commit = c.start_commit("r")
    c.put_file("r", open_commit.id, "staged", b"staged before the crash")
    packs_before = pack_count(home)

    flowed = threading.Event()
    killed = threading.Event()

    def source() -> Iterator[bytes]:
        sent = 0
        for piece in random_pieces(22, 200 * MiB):
            yield piece
            sent += len(piece)
            if sent == 48 * MiB:
                flowed.set()
                killed.wait(60)  # never let the put finish before the kill

    put = Runner(lambda: c.put_file("r", open_commit.id, "huge", source()))
    put.start()
    try:
        assert flowed.wait(60), "the upload never got going"
        # some of it reached the store: at least one pack of the partial file is on disk
        wait_for(lambda: pack_count(home) > packs_before, 30, "a pack of the partial upload")
        d.kill9()
    finally:
        killed.set()
    put.join(60)
    assert not put.is_alive()
    assert isinstance(put.error, errors.PfsError), put.error

    d2 = start_daemon(home)
    c2 = d2.client
    assert temporaries(home) == []
    assert c2.read_file("r", "master/0", "first.bin") == first
    assert c2.read_file("r", "master/0", "dir/small") == b"small\n"
    assert c2.read_file("r", "master/1", "second.bin") == second
    assert c2.read_file("r", "master/1", "first.bin") == first
    fsck = c2.fsck()
    assert fsck.ok, fsck.problems
    info = c2.inspect_commit("r", open_commit.id)
    assert info.finished is None
    assert c2.inspect_commit("r", "master").id == open_commit.id
    assert file_names(c2, "r", open_commit.id) == {"/first.bin", "/second.bin", "/dir", "/staged"}
    with pytest.raises(errors.NotFound):
        c2.inspect_file("r", open_commit.id, "huge")
    # the partial upload's packs are garbage, and gc frees them
    gc = c2.gc()
    assert gc.packs_deleted >= 1
    assert c2.fsck().ok
    c2.put_file("r", open_commit.id, "after", b"after the restart")
    done = c2.finish_commit("r", open_commit.id)
    assert done.finished is not None
    assert file_names(c2, "r", "master") == {
        "/first.bin",
        "/second.bin",
        "/dir",
        "/staged",
        "/after",
    }
    assert c2.read_file("r", "master", "staged") == b"staged before the crash"
    assert c2.read_file("r", "master", "first.bin") == first
    assert c2.inspect_commit("r", "master").size == len(first) + 6 + len(second) + 23 + 17
    assert c2.fsck().ok


def test_kill9_between_small_puts(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    home = tmp_path / "home"
    d = start_daemon(home)
    c = d.client
    c.create_repo("r")
    with c.commit("r") as c0:
        c.put_file("r", c0.id, "base", b"base")
    open_commit = c.start_commit("r")
    landed: list[int] = []
    stop = threading.Event()

    def content(i: int) -> bytes:
        return b"file %d " % i * (1 + i % 50)

    def loop() -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            c.put_file("r", open_commit.id, f"many/f{i:05d}", content(i))
            landed.append(i)

    put = Runner(loop)
    put.start()
    try:
        wait_for(lambda: len(landed) >= 40 or not put.is_alive(), 60, "40 puts to land")
        assert put.is_alive(), put.error
        d.kill9()
    finally:
        stop.set()
    put.join(60)
    assert isinstance(put.error, errors.PfsError), put.error
    succeeded = list(landed)
    assert len(succeeded) >= 40

    # the killed daemon left its socket behind: nobody answers there
    assert (home / "mountd.sock").exists()
    with pytest.raises(errors.Unreachable, match="refused"):
        Client(home=str(home), autostart=False).list_repo()
    # this time the restart is an autostart, over the stale socket
    c2 = Client(home=str(home))
    pid = c2.version().pid
    try:
        assert pid != d.pid
        assert c2.inspect_commit("r", open_commit.id).finished is None
        names = file_names(c2, "r", open_commit.id, "many")
        expected = {f"/many/f{i:05d}" for i in succeeded}
        assert expected <= names
        assert len(names - expected) <= 1  # at most the put in flight at the kill
        for i in succeeded[:: max(1, len(succeeded) // 20)] + succeeded[-1:]:
            assert c2.read_file("r", open_commit.id, f"many/f{i:05d}") == content(i)
        assert c2.fsck().ok
        c2.finish_commit("r", open_commit.id)
        assert expected <= file_names(c2, "r", "master", "many")
        assert c2.read_file("r", "master", "base") == b"base"
        assert c2.fsck().ok
    finally:
        c2.close()
        stop_pid(pid)


# -- full disk -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs, unmounted at teardown (request it before ``start_daemon``,
    so the daemon stops first)."""
    with tmpfs_at(tmp_path / "disk", "40m") as disk:
        yield disk


def test_full_disk(small_disk: Path, start_daemon: Callable[..., Daemon]) -> None:
    home = small_disk / "home"
    d = start_daemon(home)
    c = d.client
    c.create_repo("r")
    with c.commit("r") as c0:
        c.put_file("r", c0.id, "kept", b"finished before the disk filled")
    open_commit = c.start_commit("r")
    c.put_file("r", open_commit.id, "early", b"small and early")
    before = c.list_file("r", open_commit.id)

    t0 = time.monotonic()
    with pytest.raises(errors.NoSpace) as info:
        c.put_file("r", open_commit.id, "huge", random_pieces(31, 100 * MiB))
    assert info.value.exit_code == errors.EXIT_NO_SPACE
    assert time.monotonic() - t0 < 60
    assert d.proc.poll() is None  # still alive
    assert c.version().pid == d.proc.pid
    assert c.list_file("r", open_commit.id) == before
    assert c.read_file("r", open_commit.id, "early") == b"small and early"
    with pytest.raises(errors.NotFound):
        c.inspect_file("r", open_commit.id, "huge")
    assert c.inspect_commit("r", open_commit.id).finished is None
    assert temporaries(home) == []

    # without freeing anything, a small put works or is refused cleanly
    try:
        c.put_file("r", open_commit.id, "tiny", b"tiny")
    except errors.NoSpace:
        pass
    assert file_names(c, "r", open_commit.id) <= {"/kept", "/early", "/tiny"}
    fsck = c.fsck()
    assert fsck.ok, fsck.problems

    # the failed upload's packs are garbage: gc frees them, then writes work again
    c.gc()
    # (how many packs had landed before the disk filled varies; after gc none is left)
    assert _free_bytes(small_disk) >= 24 * MiB
    later = random.Random(32).randbytes(16 * MiB)
    c.put_file("r", open_commit.id, "later", later)
    c.finish_commit("r", open_commit.id)
    assert {"/kept", "/early", "/later"} <= file_names(c, "r", "master")
    assert c.read_file("r", "master", "kept") == b"finished before the disk filled"
    assert c.read_file("r", "master", "later") == later
    assert c.fsck().ok
    assert d.stop() == 0


# -- a client that breaks off ----------------------------------------------------------


def test_source_failing_midway_lands_nothing(client: Client, daemon: Daemon) -> None:
    client.create_repo("r")
    c = client.start_commit("r")
    client.put_file("r", c.id, "existing", b"e")
    before = client.list_file("r", c.id)
    packs_before = pack_count(daemon.home)

    def broken(total: int) -> Iterator[bytes]:
        yield from random_pieces(41, total)
        raise OSError("the source went away")

    for total in (0, 3 * MiB, 40 * MiB):
        with pytest.raises(OSError, match="went away"):
            client.put_file("r", c.id, "partial", broken(total))
        assert client.list_file("r", c.id) == before
    # a broken batch lands none of its files
    from mountd import wire

    def broken_batch() -> Iterator[bytes]:
        for i in range(100):
            yield wire.encode_small_put(f"b{i}", b"x" * 1000)
        raise OSError("the batch source went away")

    with pytest.raises(OSError, match="went away"):
        client.put_files("r", c.id, broken_batch())
    assert client.list_file("r", c.id) == before
    # the daemon and the client carry on
    assert daemon.proc.poll() is None
    client.put_file("r", c.id, "partial", b"whole this time")
    client.finish_commit("r", c.id)
    assert client.read_file("r", "master", "partial") == b"whole this time"
    # the abandoned uploads deleted their packs when the daemon gave up on
    # them, without a gc (the last may still be being closed)
    wait_for(lambda: pack_count(daemon.home) == packs_before + 1, 20, "the abandoned packs to go")
    assert client.gc().packs_deleted == 0
    assert client.fsck().ok


def test_sigterm_during_upload(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    """A clean stop with an upload in flight: exit 0 within the grace period,
    the upload fails on the client, and nothing of it lands."""
    home = tmp_path / "home"
    d = start_daemon(home)
    c = d.client
    c.create_repo("r")
    open_commit = c.start_commit("r")
    c.put_file("r", open_commit.id, "before", b"b")
    flowed, release = threading.Event(), threading.Event()

    def source() -> Iterator[bytes]:
        for i, piece in enumerate(random_pieces(51, 100 * MiB)):
            yield piece
            if i == 20:
                flowed.set()
                release.wait(60)

    put = Runner(lambda: c.put_file("r", open_commit.id, "huge", source()))
    put.start()
    try:
        assert flowed.wait(60)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0
    finally:
        release.set()
    put.join(60)
    assert isinstance(put.error, errors.PfsError), put.error
    assert not (home / "mountd.sock").exists()
    c2 = start_daemon(home).client
    assert file_names(c2, "r", open_commit.id) == {"/before"}
    assert c2.inspect_commit("r", open_commit.id).finished is None
    assert c2.fsck().ok
