"""The writable mount's copy-on-write overlay, through a real kernel mount.

Opening a stored file for writing reads nothing: the written ranges are kept
beside references to the stored chunks, and landing re-chunks only around
the edits (appending a line to a big file stores one chunk, at a cost that
does not grow with the file). Holes cost neither memory nor disk (a zero
reference when stored), files unlinked while open stay usable until closed
(and land nowhere), and opening a file being landed cannot meet a closed
overlay file. A randomized test compares edits of a multi-chunk stored file
with the same edits on tmpfs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pachctl.client import Client
from pfsfuse.chunks import ZERO_HASH
from pfsfuse.pfs import PFS
from tests.conftest import Daemon, tmpfs_at, wait_for
from tests.mounting import Mounts, errno_of, read, requires_fuse

# The shared fixtures, by the names tests ask for.
from tests.mounting import mount as mount
from tests.mounting import no_mount_left_behind as no_mount_left_behind

pytestmark = requires_fuse

MiB = 1 << 20
PB_HOLE = 999_999_999_999_999  # pjdfstest's truncate size


@pytest.fixture
def wmount(client: Client, mount: Mounts) -> Path:
    return mount(client, write=True, commit_idle=None)


def chunks_stored(daemon: Daemon) -> int:
    """Rows in the chunk index (read-only: the daemon owns the database)."""
    db = sqlite3.connect(f"file:{daemon.home / 'meta.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    finally:
        db.close()


def stored_file(client: Client, repo: str, path: str, data: bytes, **more: bytes) -> None:
    """``path`` holding ``data`` (and each of ``more``) in a finished commit on master."""
    with contextlib.suppress(Exception):
        client.create_repo(repo)
    c = client.start_commit(repo, "master")
    for name, content in {path: data, **more}.items():
        client.put_file(repo, c.id, name, content, overwrite=True)
    client.finish_commit(repo, c.id)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def no_traceback(daemon: Daemon) -> None:
    text = daemon.log_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 200 :][:3000]


# -- item 18: copy-on-write by chunk ---------------------------------------------------


def append_once(path: Path, line: bytes) -> float:
    """Seconds to open for append, write a line, fsync (it lands) and close."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def test_append_to_a_big_file_stores_one_chunk_and_does_not_scale(
    client: Client, daemon: Daemon, wmount: Path
) -> None:
    rnd = random.Random(18)
    big = rnd.randbytes(64 * MiB)
    small = rnd.randbytes(2 * MiB)  # above SMALL_BASE: copy-on-write too
    stored_file(client, "cow", "big", big)
    stored_file(client, "cow", "small", small)
    root = wmount / "cow" / "master"
    times: dict[str, list[float]] = {"big": [], "small": []}
    added = {"big": b"", "small": b""}
    for i in range(3):
        for name in ("small", "big"):
            line = f"line {i} of {name}\n".encode()
            before = chunks_stored(daemon)
            times[name].append(append_once(root / name, line))
            assert chunks_stored(daemon) - before <= 1, f"append {i} to {name} stored more than one chunk"
            added[name] += line
    # The cost does not grow with the file: 32x the bytes, about the same time.
    t_big, t_small = min(times["big"]), min(times["small"])
    assert t_big <= 3 * t_small + 0.05, (times, "appending to 64 MiB costs more than to 2 MiB")
    # The bytes are right, through the open commit and after finishing it.
    h = client.inspect_commit("cow", "master")
    client.finish_commit("cow", h.id)
    assert hashlib.sha256(read(root / "big")).digest() == hashlib.sha256(big + added["big"]).digest()
    assert client.read_file("cow", "master", "small") == small + added["small"]
    assert client.fsck().ok
    no_traceback(daemon)


def test_writes_in_the_middle_rechunk_only_around_them(client: Client, daemon: Daemon, wmount: Path) -> None:
    rnd = random.Random(7)
    data = bytearray(rnd.randbytes(32 * MiB))
    stored_file(client, "mid", "f", bytes(data))
    before = chunks_stored(daemon)
    path = wmount / "mid" / "master" / "f"
    with open(path, "r+b") as f:  # opening reads nothing
        for off in (5 * MiB, 5 * MiB + 100, 20 * MiB):
            f.seek(off)
            f.write(b"EDIT")
            data[off : off + 4] = b"EDIT"
        f.seek(16 * MiB)
        assert f.read(1 * MiB) == data[16 * MiB : 17 * MiB]  # unwritten ranges read from the stored chunks
        f.flush()
        os.fsync(f.fileno())
    # Two edited regions: each re-chunks the chunk(s) it touches (at most 4 MiB each).
    assert chunks_stored(daemon) - before <= 6
    client.finish_commit("mid", client.inspect_commit("mid", "master").id)
    assert read(path) == bytes(data)
    no_traceback(daemon)


# -- item 16: holes ---------------------------------------------------------------------


def test_huge_truncate_is_a_hole_in_memory_and_when_stored(client: Client, daemon: Daemon, wmount: Path) -> None:
    client.create_repo("h")
    client.create_branch("h", "master")
    path = wmount / "h" / "master" / "sparse"
    path.write_bytes(b"head")
    rss0 = rss_kib(daemon.pid)
    os.truncate(path, PB_HOLE)
    assert path.stat().st_size == PB_HOLE
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pread(fd, 8, 0) == b"head" + b"\0" * 4
        assert os.pread(fd, 1 * MiB, PB_HOLE - 1000) == b"\0" * 1000
        os.pwrite(fd, b"far", 10 * (1 << 30))  # 10 GiB out, before the end
        os.fsync(fd)  # lands: the hole is a zero reference, not bytes
        assert os.pread(fd, 5, 10 * (1 << 30) - 2) == b"\0\0far"
    finally:
        os.close(fd)
    assert rss_kib(daemon.pid) - rss0 < 100 * 1024, "the hole cost memory"
    # Beyond the largest file accepted: EFBIG, and nothing changed.
    assert errno_of(lambda: os.truncate(path, 1 << 51)) == errno.EFBIG
    assert path.stat().st_size == PB_HOLE
    objects = sum(f.stat().st_size for f in (daemon.home / "objects").rglob("*") if f.is_file())
    client.finish_commit("h", client.inspect_commit("h", "master").id)
    objects_after = sum(f.stat().st_size for f in (daemon.home / "objects").rglob("*") if f.is_file())
    assert objects_after - objects < MiB, "the hole cost disk"
    info = client.inspect_file("h", "master", "sparse")
    assert info.size == PB_HOLE
    # Read back from the finished commit: streams zeros, wherever asked.
    with open(path, "rb") as f:
        f.seek(10 * (1 << 30) - 1)
        assert f.read(4) == b"\0far"
        f.seek(PB_HOLE - 10)
        assert f.read(100) == b"\0" * 10
    assert client.fsck().ok
    no_traceback(daemon)


def test_zero_runs_in_the_engine(pfs: PFS) -> None:
    """A zero reference reads back as zeros (whole, by range, however long),
    and fsck and gc take it for what it is: no chunk behind it."""
    pfs.create_repo("z")
    c = pfs.start_commit("z", "master")
    with pfs.write_session("z", c.id) as s:
        head = s.sink.add_bytes(b"head")
        s.add("f", head + [(ZERO_HASH, 5 * MiB)] + s.sink.add_bytes(b"tail"), 5 * MiB + 8)
        s.add("huge", [(ZERO_HASH, PB_HOLE)], PB_HOLE)
        s.commit()
    pfs.finish_commit("z", c.id)
    info, pieces = pfs.read_file("z", "master", "f")
    assert b"".join(pieces) == b"head" + bytes(5 * MiB) + b"tail"
    assert info.size == 5 * MiB + 8
    n, pieces = pfs.read_range("z", "master", "f", 2, 10)
    assert (n, b"".join(pieces)) == (10, b"ad" + bytes(8))
    n, pieces = pfs.read_range("z", "master", "huge", PB_HOLE - 5, 100)
    assert (n, b"".join(pieces)) == (5, bytes(5))
    assert pfs.fsck()["ok"]
    pfs.gc()
    assert pfs.fsck()["ok"]
    n, pieces = pfs.read_range("z", "master", "f", 5 * MiB, 100)
    assert b"".join(pieces) == bytes(4) + b"tail"


# -- item 14: unlinked while open -------------------------------------------------------


def test_unlinked_while_open_stays_usable_and_lands_nowhere(client: Client, daemon: Daemon, wmount: Path) -> None:
    rnd = random.Random(14)
    big = rnd.randbytes(3 * MiB)
    stored_file(client, "u", "stored", big, ro=b"read only\n")
    root = wmount / "u" / "master"
    (root / "new").write_bytes(b"hello")

    # A file being written, and a stored one opened for writing (copy-on-write).
    for name, content in (("new", b"hello"), ("stored", big)):
        fd = os.open(root / name, os.O_RDWR)
        try:
            os.unlink(root / name)
            assert not (root / name).exists()
            st = os.fstat(fd)
            assert (st.st_size, st.st_nlink) == (len(content), 0)
            assert os.pread(fd, 5, 0) == content[:5]
            os.pwrite(fd, b"AFTER", len(content))
            os.fsync(fd)  # lands nothing: the name is gone
            assert os.fstat(fd).st_size == len(content) + 5
            assert os.pread(fd, 10, len(content) - 5) == content[-5:] + b"AFTER"
        finally:
            os.close(fd)
        assert not (root / name).exists()

    # Read-only: a stored file opened for reading, then unlinked.
    fd = os.open(root / "ro", os.O_RDONLY)
    try:
        os.unlink(root / "ro")
        assert os.fstat(fd).st_size == 10
        assert os.pread(fd, 100, 0) == b"read only\n"
    finally:
        os.close(fd)

    # The unlinked data went nowhere, and gc kept what open files used.
    h = client.inspect_commit("u", "master")
    client.finish_commit("u", h.id)
    names = {f.path for f in client.list_file("u", "master", "/")}
    assert names == set(), names
    assert client.fsck().ok
    no_traceback(daemon)


def test_renamed_while_open_keeps_being_written_under_the_new_name(
    client: Client, daemon: Daemon, wmount: Path
) -> None:
    client.create_repo("m")
    client.create_branch("m", "master")
    root = wmount / "m" / "master"
    (root / "d").mkdir()
    fd = os.open(root / "d" / "a", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before ")
        os.rename(root / "d", root / "e")  # the open file's directory moves
        os.write(fd, b"after")
    finally:
        os.close(fd)
    client.finish_commit("m", client.inspect_commit("m", "master").id)
    assert sorted(f.path for f in client.list_file("m", "master", "/")) == ["/e"]
    assert client.read_file("m", "master", "e/a") == b"before after"
    no_traceback(daemon)


def test_unlinked_while_open_survives_gc(client: Client, daemon: Daemon, wmount: Path) -> None:
    """The chunks an open file is built on are kept by gc even when no entry names them any more."""
    client.create_repo("g")
    client.create_branch("g", "master")
    root = wmount / "g" / "master"
    data = random.Random(3).randbytes(3 * MiB)
    (root / "f").write_bytes(data)  # lands in the open commit (staged)
    fd = os.open(root / "f", os.O_RDWR)  # copy-on-write on the staged chunks
    try:
        os.pwrite(fd, b"X", 0)
        os.unlink(root / "f")  # no entry names the chunks now
        client.gc()
        assert os.pread(fd, 3 * MiB, 0) == b"X" + data[1:]
    finally:
        os.close(fd)
    # Opened for reading only, once landed: the handle reads the stored chunks.
    other = random.Random(4).randbytes(3 * MiB)
    (root / "r").write_bytes(other)
    wait_for(lambda: landed(client, "g", "r") == other, what="r landed")
    fd = os.open(root / "r", os.O_RDONLY)
    try:
        os.unlink(root / "r")
        client.gc()
        assert os.pread(fd, 3 * MiB, 0) == other
    finally:
        os.close(fd)
    no_traceback(daemon)


def landed(client: Client, repo: str, path: str) -> bytes | None:
    """What the head of master holds at ``path`` (None: nothing landed there yet)."""
    try:
        return client.read_file(repo, "master", path)
    except Exception:
        return None


# -- item 18: the closed-file race ------------------------------------------------------


def test_opens_racing_landings_meet_no_closed_file(client: Client, daemon: Daemon, wmount: Path) -> None:
    """Many opens of files that are being landed (fsstress's pattern): every
    append arrives, and mountd logs no traceback."""
    client.create_repo("r")
    client.create_branch("r", "master")
    root = wmount / "r" / "master"
    names = [f"f{i}" for i in range(4)]
    for n in names:
        (root / n).write_bytes(b"")
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(60):
                name = names[(k + i) % len(names)]
                with open(root / name, "ab") as f:
                    f.write(f"{k}:{i}\n".encode())
                    if i % 7 == 0:
                        f.flush()
                        os.fsync(f.fileno())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    lines = sorted(line for n in names for line in read(root / n).decode().splitlines())
    assert lines == sorted(f"{k}:{i}" for k in range(4) for i in range(60))
    no_traceback(daemon)


# -- randomized: copy-on-write edits against tmpfs ---------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_cow_edits_match_tmpfs(seed: int, client: Client, daemon: Daemon, wmount: Path, tmp_path: Path) -> None:
    rnd = random.Random(seed)
    base = rnd.randbytes(9 * MiB) + b"\0" * MiB + rnd.randbytes(MiB // 3)  # several chunks
    stored_file(client, "d", "f", base)
    with tmpfs_at(tmp_path / "ref", "64m") as ref:
        (ref / "f").write_bytes(base)
        paths = [wmount / "d" / "master" / "f", ref / "f"]
        fds = [os.open(p, os.O_RDWR) for p in paths]
        try:
            for _step in range(120):
                size = os.fstat(fds[1]).st_size
                op = rnd.choice(["write", "write", "write", "read", "truncate", "fsync", "reopen"])
                if op == "write":
                    off = rnd.randrange(0, size + 2 * MiB)
                    buf = rnd.randbytes(rnd.choice([1, 100, 5000, 300_000]))
                    for fd in fds:
                        assert os.pwrite(fd, buf, off) == len(buf)
                elif op == "truncate":
                    n = rnd.randrange(0, size + 3 * MiB)
                    for fd in fds:
                        os.ftruncate(fd, n)
                elif op == "fsync":
                    os.fsync(fds[0])
                elif op == "reopen":
                    os.close(fds[0])
                    fds[0] = os.open(paths[0], os.O_RDWR)
                off = rnd.randrange(0, size + 1)
                n = rnd.choice([10, 4096, 1 * MiB])
                got = [os.pread(fd, n, off) for fd in fds]
                assert got[0] == got[1], (seed, _step, op, off, n)
                assert os.fstat(fds[0]).st_size == os.fstat(fds[1]).st_size
        finally:
            for fd in fds:
                os.close(fd)
        client.finish_commit("d", client.inspect_commit("d", "master").id)
        expected = (ref / "f").read_bytes()
    assert client.read_file("d", "master", "f") == expected
    assert read(wmount / "d" / "master" / "f") == expected
    no_traceback(daemon)
