"""The read-only FUSE mount, through a real kernel mount served by mountd.

Every test mounts through the daemon (``Client.mount`` or ``pachctl mount``)
and its fixture always takes the mount down again: first through the daemon,
then ``fusermount3 -u -z`` / ``umount -l`` for whatever the kernel still
holds; the module ends by checking /proc/self/mountinfo for leftovers.

Covered: the layout of the 1.x docs (3.1.8, 19.7) after the 19.6 session,
attributes (modes, sizes, mtimes, stable inode numbers), nested trees,
empty and multi-chunk files (sequential and random reads), new commits and
repos showing up while mounted, ``--repos``, EROFS for every kind of write,
mountpoint checks, concurrent readers, a daemon killed with -9 under its
mount, ``pachctl mount --foreground`` with Ctrl-C, and shell tools.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mountd import wire
from pachctl.client import Client, errors
from pfsfuse.mount import pachy_mounts
from tests.conftest import Daemon, spawn_daemon, wait_for, wait_until_answering
from tests.mounting import (
    PACHCTL,
    cli_env,
    detach,
    errno_of,
    mounted,
    pachctl,
    read,
    requires_fuse,
)

# The shared fixtures, by the names tests ask for (``as`` marks them re-exported,
# so ruff takes them as used and lets test arguments named after them be).
from tests.mounting import mount as mount
from tests.mounting import no_mount_left_behind as no_mount_left_behind

pytestmark = requires_fuse

DEADLINE = 3.0  # new commits and repos must show within this (MUTABLE_TIMEOUT is 1 s)
MiB = 1 << 20
BIG_SIZE = 20 * MiB  # ~20 chunks of ~1 MiB
SMALL = 8


def try_open(path: Path, mode: str = "rb") -> None:
    with open(path, mode):
        pass


def pread_all(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        got = os.pread(fd, length, offset)
        if not got:
            break
        parts.append(got)
        length -= len(got)
        offset += len(got)
    return b"".join(parts)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- fixtures -----------------------------------------------------------------------


@dataclass
class Seeded:
    """A module-wide daemon with the data the read tests look at."""

    daemon: Daemon
    t0: float
    foo: list[str]  # commit ids of master/0, master/1
    big: bytes
    small: dict[str, bytes]
    tree: dict[str, bytes]  # path inside repo 'data' -> content
    needles: set[str] = field(default_factory=set)

    @property
    def client(self) -> Client:
        return self.daemon.client

    @property
    def home(self) -> Path:
        return self.daemon.home


def run_19_6_session(c: Client) -> list[str]:
    """The docs' 19.6 example: foo gets 'hai' in master/0, 'bai' in master/1."""
    c.create_repo("foo")
    ids = []
    for word in (b"hai\n", b"bai\n"):
        commit = c.start_commit("foo", "master")
        c.put_file("foo", commit.id, "test.txt", word)
        c.finish_commit("foo", commit.id)
        ids.append(commit.id)
    return ids


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    root = tmp_path_factory.mktemp("mount-read")
    home = root / "home"
    log = root / "home-mountd.log"
    proc = spawn_daemon(home, log=log)
    d = Daemon(home, proc, Client(home=str(home), autostart=False, timeout=60), log)
    try:
        wait_until_answering(proc, d.client, log)
        c = d.client
        t0 = time.time()
        foo = run_19_6_session(c)

        rng = random.Random(1234)
        big = rng.randbytes(BIG_SIZE)
        small = {f"small/s{i}.bin": rng.randbytes(rng.randrange(1, 300_000)) for i in range(SMALL)}
        tree: dict[str, bytes] = {}
        needles: set[str] = set()
        for d_ in range(10):
            for s in range(4):
                for f in range(5):
                    path = f"tree/d{d_}/s{s}/f{f}.txt"
                    body = f"file {path}\n".encode()
                    if (d_ * 20 + s * 5 + f) % 23 == 0:
                        body += b"a needle in here\n"
                        needles.add(path)
                    tree[path] = body
        tree["nested/a/b/c/d/e/deep.txt"] = b"deep down\n"
        tree["empty.txt"] = b""
        c.create_repo("data")
        with c.commit("data") as commit:
            c.put_files(
                "data",
                commit.id,
                [wire.encode_small_put(p, b) for p, b in {**tree, **small}.items()],
            )
            c.put_file("data", commit.id, "big.bin", big)
        yield Seeded(d, t0, foo, big, small, tree, needles)
    finally:
        d.stop()


# -- the docs' layout ---------------------------------------------------------------


def test_layout_of_the_docs(start_daemon, mount, tmp_path: Path) -> None:
    """19.6 then 19.7: repos, branches, branch/N and commit ids as directories."""
    d = start_daemon(tmp_path / "home")
    c = d.client
    first, second = run_19_6_session(c)
    mnt = mount(c)

    assert os.listdir(mnt) == ["foo"]
    assert "master" in os.listdir(mnt / "foo")
    assert read(mnt / "foo" / "master" / "test.txt") == b"hai\nbai\n"
    assert read(mnt / "foo" / "master" / "0" / "test.txt") == b"hai\n"
    assert read(mnt / "foo" / "master" / "1" / "test.txt") == b"hai\nbai\n"
    assert os.listdir(mnt / "foo" / "master" / "0") == ["test.txt"]
    assert os.listdir(mnt / "foo" / "master") == ["test.txt"]
    assert read(mnt / "foo" / first / "test.txt") == b"hai\n"
    assert read(mnt / "foo" / second / "test.txt") == b"hai\nbai\n"
    assert os.listdir(mnt / "foo" / first) == ["test.txt"]

    for missing in (
        "nope",
        "foo/nobranch",
        "foo/master/7",
        "foo/master/0/nofile",
        "foo/" + "0" * 32,
    ):
        assert errno_of(lambda m=missing: os.stat(mnt / m)) == errno.ENOENT, missing

    # An open commit is listed by id, and its files read.
    other = c.start_commit("foo", "dev")
    c.put_file("foo", other.id, "wip.txt", b"in progress\n")
    wait_for(lambda: other.id in os.listdir(mnt / "foo"), DEADLINE, "the open commit in ls foo")
    assert read(mnt / "foo" / other.id / "wip.txt") == b"in progress\n"
    assert sorted(os.listdir(mnt / "foo")) == sorted(["master", "dev", other.id])
    c.finish_commit("foo", other.id)
    wait_for(
        lambda: other.id not in os.listdir(mnt / "foo"),
        DEADLINE,
        "the finished commit to leave ls foo",
    )
    assert read(mnt / "foo" / other.id / "wip.txt") == b"in progress\n"  # still reachable by id
    assert read(mnt / "foo" / "dev" / "wip.txt") == b"in progress\n"


# -- attributes ---------------------------------------------------------------------


def test_modes_sizes_mtimes_and_stable_inodes(seeded: Seeded, mount) -> None:
    c = seeded.client
    mnt = mount(c)
    master = mnt / "data" / "master"
    dirs = [
        mnt,
        mnt / "data",
        master,
        mnt / "foo" / "master" / "1",
        master / "tree",
        master / "nested/a/b/c",
    ]
    for p in dirs:
        st = os.stat(p)
        assert st.st_mode == stat.S_IFDIR | 0o555, (p, oct(st.st_mode))
    files = {
        master / "big.bin": len(seeded.big),
        master / "empty.txt": 0,
        master / "nested/a/b/c/d/e/deep.txt": len(b"deep down\n"),
        mnt / "foo" / "master" / "test.txt": 8,
        mnt / "foo" / seeded.foo[0] / "test.txt": 4,
    }
    now = time.time()
    for p, size in files.items():
        st = os.stat(p)
        assert st.st_mode == stat.S_IFREG | 0o444, (p, oct(st.st_mode))
        assert st.st_size == size, p
        assert st.st_uid == os.getuid() and st.st_gid == os.getgid()
        assert seeded.t0 - 5 <= st.st_mtime <= now + 5, (p, st.st_mtime)
    assert not os.access(master / "big.bin", os.W_OK)

    info = c.inspect_file("data", "master", "big.bin")
    assert abs(os.stat(master / "big.bin").st_mtime - info.mtime) < 1e-3
    commit = c.inspect_commit("foo", "master/1")
    assert abs(os.stat(mnt / "foo" / commit.id).st_mtime - commit.finished) < 1e-3

    watched = [*dirs[1:], *files]
    inos = {p: os.stat(p).st_ino for p in watched}
    assert {p: os.stat(p).st_ino for p in watched} == inos
    assert len(set(inos.values())) == len(inos)
    # The same content through two names (master/1 and its commit id) is the same file.
    assert (
        os.stat(mnt / "foo" / "master" / "1" / "test.txt").st_ino
        == os.stat(mnt / "foo" / commit.id / "test.txt").st_ino
    )

    c.unmount(str(mnt))
    assert not mounted(mnt)
    assert os.listdir(mnt) == []
    c.mount(str(mnt))
    assert {p: os.stat(p).st_ino for p in watched} == inos


def test_nested_tree_walk_matches_the_repo(seeded: Seeded, mount) -> None:
    c = seeded.client
    mnt = mount(c)
    master = mnt / "data" / "master"
    walked_files, walked_dirs = set(), set()
    for top, dirs, files in os.walk(master):
        rel = os.path.relpath(top, master)
        for name in dirs:
            walked_dirs.add(os.path.normpath(os.path.join(rel, name)))
        for name in files:
            walked_files.add(os.path.normpath(os.path.join(rel, name)))
    listed = c.glob_file("data", "master", "**")
    assert walked_files == {f.path.lstrip("/") for f in listed if f.type == "file"}
    assert walked_dirs == {f.path.lstrip("/") for f in listed if f.type == "dir"}
    assert len([p for p in walked_files if p.startswith("tree/")]) == 200

    for top in ("tree/d3", "tree/d3/s2", "nested/a/b"):
        assert sorted(os.listdir(master / top)) == sorted(
            f.path.rpartition("/")[2] for f in c.list_file("data", "master", top)
        )
    for path, body in seeded.tree.items():
        assert read(master / path) == body, path
    assert read(master / "empty.txt") == b""
    assert errno_of(lambda: try_open(master / "tree")) == errno.EISDIR
    assert errno_of(lambda: os.listdir(master / "empty.txt")) == errno.ENOTDIR


def test_a_big_directory_lists_whole_in_order_with_sizes(start_daemon, mount, tmp_path: Path) -> None:
    """6,000 entries: more than one readdir answer, listed while still being
    built; several listers at once; then again from the kept listing."""
    c = start_daemon(tmp_path / "home").client
    c.create_repo("wide")
    bodies = {f"dir/f{i:05d}.txt": b"x" * (i % 97) for i in range(6000)}
    with c.commit("wide") as commit:
        c.put_files("wide", commit.id, [wire.encode_small_put(p, b) for p, b in bodies.items()])
    mnt = mount(c)
    want = sorted(p.rpartition("/")[2] for p in bodies)

    def listing(_: int) -> list[tuple[str, int]]:
        with os.scandir(mnt / "wide" / "master" / "dir") as it:
            return [(e.name, e.stat().st_size) for e in it]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(listing, range(4)))
    results.append(listing(0))  # again, from the kept listing
    for got in results:
        assert [name for name, _ in got] == want
        assert all(size == len(bodies[f"dir/{name}"]) for name, size in got)
    out = subprocess.run(["ls", "-l", mnt / "wide" / "master" / "dir"], capture_output=True, text=True, check=True)
    assert len(out.stdout.splitlines()) == 6001


def test_a_damaged_chunk_reads_as_eio_and_the_rest_still_reads(start_daemon, mount, tmp_path: Path) -> None:
    c = start_daemon(tmp_path / "home").client
    c.create_repo("rot")
    body = random.Random(7).randbytes(6 * MiB)
    with c.commit("rot") as commit:
        c.put_file("rot", commit.id, "bad.bin", body)
    with c.commit("rot") as commit:
        c.put_file("rot", commit.id, "good.txt", b"still fine\n")
    packs = sorted((tmp_path / "home" / "objects" / "packs").rglob("*"), key=lambda p: p.stat().st_mtime_ns)
    packs = [p for p in packs if p.is_file()]
    victim = max(packs, key=lambda p: p.stat().st_size)  # the big file's pack
    with open(victim, "r+b") as f:
        f.seek(victim.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x55]))
    mnt = mount(c)
    master = mnt / "rot" / "master"
    assert errno_of(lambda: read(master / "bad.bin")) == errno.EIO
    assert read(master / "good.txt") == b"still fine\n"
    fd = os.open(master / "bad.bin", os.O_RDONLY)
    try:  # the damage is 3 MiB in: the first chunk is intact and reads
        assert os.pread(fd, 4096, 0) == body[:4096]
    finally:
        os.close(fd)


def test_big_file_reads_back_byte_identical(seeded: Seeded, mount) -> None:
    mnt = mount(seeded.client)
    path = mnt / "data" / "master" / "big.bin"
    big = seeded.big
    assert seeded.client.inspect_file("data", "master", "big.bin").chunks > 5

    out = io.BytesIO()
    with open(path, "rb") as f:
        shutil.copyfileobj(f, out, 256 * 1024)
    assert out.getvalue() == big

    rng = random.Random(99)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(100):
            off = rng.randrange(len(big))
            length = rng.choice([1, rng.randrange(1, 4096), rng.randrange(1, 3 * MiB)])
            assert pread_all(fd, length, off) == big[off : off + length], (off, length)
        assert os.pread(fd, 100, len(big)) == b""
        assert os.pread(fd, 100, len(big) + 12345) == b""
        assert pread_all(fd, 100, len(big) - 10) == big[-10:]
    finally:
        os.close(fd)


def test_big_file_random_reads_on_a_cold_mount(seeded: Seeded, mount) -> None:
    """Random reads first, before anything is cached: every read finds its chunk."""
    mnt = mount(seeded.client)
    big = seeded.big
    rng = random.Random(5)
    with open(mnt / "data" / "master" / "big.bin", "rb", buffering=0) as f:
        for _ in range(50):
            off = rng.randrange(len(big))
            f.seek(off)
            want = big[off : off + rng.randrange(1, 2 * MiB)]
            got = f.read(len(want))
            assert got == want[: len(got)] and got, off
            assert pread_all(f.fileno(), len(want), off) == want


# -- changes while mounted --------------------------------------------------------------


def test_new_commits_and_repos_show_up(seeded: Seeded, mount) -> None:
    c = seeded.client
    c.create_repo("live")
    with c.commit("live") as commit:
        c.put_file("live", commit.id, "test.txt", b"v1\n")
    mnt = mount(c)
    target = mnt / "live" / "master" / "test.txt"
    assert read(target) == b"v1\n"
    assert os.stat(target).st_size == 3

    with c.commit("live") as commit:
        c.put_file("live", commit.id, "test.txt", b"version two\n", overwrite=True)
        c.put_file("live", commit.id, "added.txt", b"new\n")
    wait_for(lambda: read(target) == b"version two\n", DEADLINE, "the new head's content")
    assert os.stat(target).st_size == len(b"version two\n")
    assert read(mnt / "live" / "master" / "added.txt") == b"new\n"
    assert sorted(os.listdir(mnt / "live" / "master")) == ["added.txt", "test.txt"]
    assert read(mnt / "live" / "master" / "0" / "test.txt") == b"v1\n"

    c.create_repo("fresh")
    wait_for(lambda: "fresh" in os.listdir(mnt), DEADLINE, "the new repo in ls")
    assert os.listdir(mnt / "fresh") == []
    with c.commit("fresh") as commit:
        c.put_file("fresh", commit.id, "x", b"x")
    wait_for(lambda: "master" in os.listdir(mnt / "fresh"), DEADLINE, "the new branch")
    assert read(mnt / "fresh" / "master" / "x") == b"x"

    c.delete_repo("fresh")
    wait_for(lambda: "fresh" not in os.listdir(mnt), DEADLINE, "the deleted repo to go")
    wait_for(lambda: errno_of(lambda: os.stat(mnt / "fresh")) == errno.ENOENT, DEADLINE, "ENOENT")


def test_repos_filter(seeded: Seeded, mount) -> None:
    mnt = mount(seeded.client, repos=["foo"])
    assert os.listdir(mnt) == ["foo"]
    assert read(mnt / "foo" / "master" / "test.txt") == b"hai\nbai\n"
    for hidden in ("data", "data/master", "data/master/big.bin"):
        assert errno_of(lambda h=hidden: os.stat(mnt / h)) == errno.ENOENT, hidden
    assert errno_of(lambda: try_open(mnt / "data" / "master" / "empty.txt", "rb")) == errno.ENOENT


def test_repos_filter_from_the_cli(seeded: Seeded, mount, tmp_path: Path) -> None:
    mnt = tmp_path / "cli-mnt"
    mnt.mkdir()
    mount.track(seeded.client, mnt)
    res = pachctl(seeded.home, "mount", str(mnt), "--repos", "foo,data")
    assert res.returncode == 0, res.stderr
    assert mounted(mnt)
    assert sorted(os.listdir(mnt)) == ["data", "foo"]
    assert errno_of(lambda: os.stat(mnt / "live")) == errno.ENOENT
    assert read(mnt / "data" / "master" / "empty.txt") == b""
    assert [m.path for m in seeded.client.list_mounts()] == [str(mnt)]
    assert seeded.client.list_mounts()[0].repos == ["foo", "data"]
    res = pachctl(seeded.home, "unmount", str(mnt))
    assert res.returncode == 0, res.stderr
    assert not mounted(mnt)
    assert seeded.client.list_mounts() == []


# -- read-only ----------------------------------------------------------------------


def test_read_only_mount_refuses_every_write(seeded: Seeded, mount) -> None:
    c = seeded.client
    mnt = mount(c)
    master = mnt / "data" / "master"
    existing = master / "nested/a/b/c/d/e/deep.txt"
    before = sorted(f.path for f in c.glob_file("data", "master", "**"))
    repos = sorted(r.name for r in c.list_repo())

    attempts: dict[str, Callable[[], object]] = {
        "open w": lambda: try_open(existing, "wb"),
        "open a": lambda: try_open(existing, "ab"),
        "open r+": lambda: try_open(existing, "r+b"),
        "create": lambda: try_open(master / "new.txt", "xb"),
        "create in root": lambda: try_open(mnt / "new.txt", "xb"),
        "mkdir": lambda: os.mkdir(master / "newdir"),
        "mkdir repo": lambda: os.mkdir(mnt / "newrepo"),
        "mkdir commit": lambda: os.mkdir(mnt / "foo" / "newbranch"),
        "unlink": lambda: os.unlink(existing),
        "rmdir": lambda: os.rmdir(master / "nested/a/b/c/d/e"),
        "rename": lambda: os.rename(existing, master / "moved.txt"),
        "rename dir": lambda: os.rename(master / "tree", master / "tree2"),
        "symlink": lambda: os.symlink("deep.txt", master / "link"),
        "link": lambda: os.link(existing, master / "hard"),
        "truncate": lambda: os.truncate(existing, 0),
        "chmod": lambda: os.chmod(existing, 0o644),
        "utime": lambda: os.utime(existing, (0, 0)),
    }
    got = {name: errno_of(fn) for name, fn in attempts.items()}
    assert got == dict.fromkeys(attempts, errno.EROFS)

    assert read(existing) == b"deep down\n"
    assert sorted(f.path for f in c.glob_file("data", "master", "**")) == before
    assert sorted(r.name for r in c.list_repo()) == repos
    assert os.statvfs(mnt).f_flag & os.ST_RDONLY


# -- mountpoints -------------------------------------------------------------------


def test_mountpoint_checks(start_daemon, mount, tmp_path: Path) -> None:
    d = start_daemon(tmp_path / "home")
    c = d.client
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")

    with pytest.raises(errors.InvalidArgument, match="does not exist"):
        c.mount(str(tmp_path / "missing"))
    with pytest.raises(errors.InvalidArgument, match="not a directory"):
        c.mount(str(a_file))
    with pytest.raises(errors.InvalidArgument, match="not empty"):
        c.mount(str(full))
    assert c.list_mounts() == []
    assert not any(p.startswith(str(tmp_path)) for p in pachy_mounts())

    res = pachctl(d.home, "mount", str(full))
    assert res.returncode != 0
    assert res.stderr.startswith("error:") and "not empty" in res.stderr, res.stderr
    res = pachctl(d.home, "mount", str(tmp_path / "missing"))
    assert res.returncode != 0 and "error:" in res.stderr and "does not exist" in res.stderr, (
        res.stderr
    )
    assert (full / "something").read_text() == "x"

    mnt = mount(c)
    with pytest.raises(errors.Conflict):
        c.mount(str(mnt))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(errors.Conflict, match="one per daemon"):
        c.mount(str(other))
    # Another daemon cannot mount over a live mount either.
    d2 = start_daemon(tmp_path / "home2")
    with pytest.raises(errors.Conflict, match="already a mountpoint"):
        d2.client.mount(str(mnt))
    res = pachctl(d.home, "mount", str(mnt))
    assert res.returncode != 0 and res.stderr.startswith("error:"), res.stderr
    assert [m.path for m in c.list_mounts()] == [str(mnt)]
    assert os.listdir(mnt) == []  # the mount still serves (an empty home)


# -- concurrency ------------------------------------------------------------------


def test_concurrent_readers_get_correct_bytes(seeded: Seeded, mount) -> None:
    mnt = mount(seeded.client)
    master = mnt / "data" / "master"
    want_big = sha(seeded.big)
    names = sorted(seeded.small)
    start = threading.Barrier(8)

    def reader(i: int) -> tuple[str, list[bool]]:
        rng = random.Random(i)
        small_path = master / names[i % len(names)]
        small_want = seeded.small[names[i % len(names)]]
        small_ok = []
        h = hashlib.sha256()
        start.wait(10)
        with open(master / "big.bin", "rb", buffering=0) as f:
            while True:
                piece = f.read(rng.choice([4096, 65536, 300_000, MiB]))
                if not piece:
                    break
                h.update(piece)
                if rng.random() < 0.2:
                    small_ok.append(read(small_path) == small_want)
                    tree_path = rng.choice(sorted(seeded.tree))
                    small_ok.append(read(master / tree_path) == seeded.tree[tree_path])
        return h.hexdigest(), small_ok

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(reader, range(8)))
    for digest, small_ok in results:
        assert digest == want_big
        assert small_ok and all(small_ok)


# -- the daemon dies under its mount ----------------------------------------------


def test_kill9_leaves_enotconn_and_pachctl_unmount_cleans_up(
    start_daemon, mount, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    d = start_daemon(home)
    d.client.create_repo("k")
    with d.client.commit("k") as commit:
        d.client.put_file("k", commit.id, "f.txt", b"still here\n")
    mnt = mount(d.client)
    target = mnt / "k" / "master" / "f.txt"
    assert read(target) == b"still here\n"

    d.kill9()
    mount.track(None, mnt)
    wait_for(lambda: errno_of(lambda: read(target)) == errno.ENOTCONN, 10, "ENOTCONN")
    assert errno_of(lambda: os.listdir(mnt)) == errno.ENOTCONN
    assert mounted(mnt)  # the kernel still holds it
    res = pachctl(home, "mount", str(mnt))  # no daemon, and a dead mount there
    assert res.returncode != 0 and res.stderr.startswith("error:"), res.stderr
    assert mounted(mnt)

    res = pachctl(home, "unmount", str(mnt))
    assert res.returncode == 0, res.stderr
    assert not mounted(mnt)
    assert os.listdir(mnt) == []

    d2 = start_daemon(home)
    mount(d2.client, mnt)
    assert read(target) == b"still here\n"
    res = pachctl(home, "unmount", str(mnt))
    assert res.returncode == 0, res.stderr
    assert not mounted(mnt)


def test_api_mount_on_a_dead_mount_names_it(start_daemon, mount, tmp_path: Path) -> None:
    d = start_daemon(tmp_path / "home")
    mnt = mount(d.client)
    d.kill9()
    mount.track(None, mnt)
    wait_for(lambda: errno_of(lambda: os.listdir(mnt)) == errno.ENOTCONN, 10, "ENOTCONN")
    # Once the kernel's cached attributes of the mount's root expire, stat()
    # fails with ENOTCONN too (before that, it still answers from the cache).
    wait_for(lambda: errno_of(lambda: os.stat(mnt)) == errno.ENOTCONN, 10, "stat to fail")
    d2 = start_daemon(tmp_path / "home2")
    with pytest.raises(errors.Conflict, match="pachctl unmount"):
        d2.client.mount(str(mnt))


def test_unmount_of_something_not_mounted_fails(start_daemon, tmp_path: Path) -> None:
    d = start_daemon(tmp_path / "home")
    empty = tmp_path / "never"
    empty.mkdir()
    res = pachctl(d.home, "unmount", str(empty))
    assert res.returncode != 0 and res.stderr.startswith("error:"), res.stderr
    with pytest.raises(errors.NotFound):
        d.client.unmount(str(empty))


# -- pachctl mount --foreground -------------------------------------------------------


def _waiting_for_a_signal(pid: int) -> bool:
    """pachctl sits in sigwait() (rt_sigtimedwait) once it is ready for Ctrl-C."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "sigtimedwait" in f.read()
    except OSError:
        return False


def _start_foreground(home: Path, mnt: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*PACHCTL, "mount", "--foreground", str(mnt)],
        env=cli_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_foreground_mount_stops_on_ctrl_c(start_daemon, mount, tmp_path: Path) -> None:
    d = start_daemon(tmp_path / "home")
    run_19_6_session(d.client)
    mnt = tmp_path / "fg"
    mnt.mkdir()
    mount.track(d.client, mnt)
    proc = _start_foreground(d.home, mnt)
    try:
        wait_for(lambda: mounted(mnt) or proc.poll() is not None, 15, "the foreground mount")
        assert proc.poll() is None, proc.communicate()
        # Ctrl-C is only handled cleanly once pachctl waits for it: see
        # test_ctrl_c_right_after_the_mount_appears for the window before that.
        wait_for(lambda: _waiting_for_a_signal(proc.pid), 10, "pachctl to wait for Ctrl-C")
        assert read(mnt / "foo" / "master" / "test.txt") == b"hai\nbai\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "unmounted" in err
    assert not mounted(mnt)
    assert d.client.list_mounts() == []


def test_ctrl_c_right_after_the_mount_appears(start_daemon, mount, tmp_path: Path) -> None:
    d = start_daemon(tmp_path / "home")
    mnt = tmp_path / "fg"
    mnt.mkdir()
    mount.track(d.client, mnt)
    for _attempt in range(5):  # the window is a few ms wide: each try usually hits it
        proc = _start_foreground(d.home, mnt)
        try:
            deadline = time.monotonic() + 15
            while not mounted(mnt) and proc.poll() is None:  # no sleep: the window is short
                assert time.monotonic() < deadline, "the foreground mount did not appear"
            # Freeze pachctl where it is (its mount request is usually still in
            # flight) so the Ctrl-C lands before it starts waiting for one.
            proc.send_signal(signal.SIGSTOP)
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGCONT)
            _out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert "Traceback" not in err
        left = mounted(mnt)
        detach(d.client, mnt)
        assert not left, f"exit {proc.returncode}, {err.strip()!r}, and the mount was left behind"
        assert proc.returncode == 0, err


# -- shell tools ------------------------------------------------------------------------


def test_shell_tools_work_on_the_mount(seeded: Seeded, mount, tmp_path: Path) -> None:
    mnt = mount(seeded.client)
    master = mnt / "data" / "master"

    def sh(*argv: str) -> subprocess.CompletedProcess:
        res = subprocess.run(argv, capture_output=True, timeout=30)
        assert res.returncode == 0, (argv, res.stderr)
        return res

    assert sh("cat", str(mnt / "foo" / "master" / "test.txt")).stdout == b"hai\nbai\n"
    assert sh("cat", str(mnt / "foo" / "master" / "0" / "test.txt")).stdout == b"hai\n"
    assert sh("ls", str(mnt)).stdout.decode().split() == sorted(os.listdir(mnt))

    found = sh("grep", "-rl", "needle", str(master / "tree")).stdout.decode().split()
    assert {os.path.relpath(p, master) for p in found} == seeded.needles

    found = sh("find", str(master), "-type", "f").stdout.decode().split()
    assert {os.path.relpath(p, master) for p in found} == {*seeded.tree, *seeded.small, "big.bin"}
    found = sh("find", str(master / "nested"), "-type", "d").stdout.decode().split()
    assert len(found) == 6

    dest = tmp_path / "copy"
    dest.mkdir()
    sh(
        "cp",
        "-r",
        str(master / "tree"),
        str(master / "nested"),
        str(master / "small"),
        str(dest) + "/",
    )
    for path, body in {**seeded.tree, **seeded.small}.items():
        if path != "empty.txt":
            assert (dest / path).read_bytes() == body, path
    sh("cp", str(master / "big.bin"), str(dest / "big.bin"))
    assert (dest / "big.bin").read_bytes() == seeded.big
    digest = sh("sha256sum", str(master / "big.bin")).stdout.split()[0].decode()
    assert digest == sha(seeded.big)
    assert sh("wc", "-c", str(master / "empty.txt")).stdout.split()[0] == b"0"
    assert sh("stat", "-c", "%s %a %F", str(master / "big.bin")).stdout.decode().strip() == (
        f"{BIG_SIZE} 444 regular file"
    )
