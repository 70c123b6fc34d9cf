"""The writable mount where POSIX says how a local disk behaves (what pjdfstest found).

Names longer than 255 bytes are ENAMETOOLONG for every call that takes a
name; utimensat keeps atime and mtime (UTIME_NOW, UTIME_OMIT) on files and
directories; rename keeps inode numbers; a directory's link count is 2 plus
its subdirectories; mknod makes plain files and refuses special ones; and
``--allow-other`` lets another user read (and only read) the mount.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pachctl.client import Client
from pfsfuse.mount import pachy_mounts
from tests.conftest import Daemon, spawn_daemon, wait_for, wait_until_answering
from tests.mounting import Mounts, detach, errno_of, mounted, pachctl, read, requires_fuse

# The shared fixtures, re-exported so that tests can ask for them by name.
from tests.mounting import mount as mount
from tests.mounting import no_mount_left_behind as no_mount_left_behind

pytestmark = requires_fuse

NOBODY = 65534


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    """One daemon and its writable mount for the tests that need nothing else
    (each works in its own repo): starting a daemon costs more than a test."""
    base = tmp_path_factory.mktemp("posix")
    home, log = base / "home", base / "mountd.log"
    proc = spawn_daemon(home, log=log)
    c = Client(home=str(home), autostart=False, timeout=60)
    mnt = base / "mnt"
    mnt.mkdir()
    try:
        wait_until_answering(proc, c, log)
        c.mount(str(mnt), write=True)
        yield c, mnt
    finally:
        detach(c, mnt)
        Daemon(home, proc, c, log).stop()


@pytest.fixture
def repo(shared: tuple[Client, Path], request: pytest.FixtureRequest) -> str:
    """A fresh repo name for this test in the shared daemon."""
    return "r" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=6).hexdigest()


@pytest.fixture
def client(shared: tuple[Client, Path]) -> Client:
    return shared[0]


@pytest.fixture
def wmount(shared: tuple[Client, Path]) -> Path:
    return shared[1]


def open_commit(c: Client, wmount: Path, repo: str) -> tuple[Path, str]:
    """A repo with an open commit, and its directory in the mount."""
    c.create_repo(repo)
    commit = c.start_commit(repo, "master")
    return wmount / repo / commit.id, commit.id


def committed(c: Client, repo: str, path: str, data: bytes) -> str:
    """A repo whose master holds one finished commit with one file; its id."""
    c.create_repo(repo)
    commit = c.start_commit(repo, "master")
    c.put_file(repo, commit.id, path, data)
    c.finish_commit(repo, commit.id)
    return commit.id


def touch(path: Path, data: bytes = b"") -> None:
    path.write_bytes(data)


# -- names longer than NAME_MAX -------------------------------------------------------


def test_names_longer_than_255_bytes_are_enametoolong(client: Client, wmount: Path, repo: str) -> None:
    root, _ = open_commit(client, wmount, repo)
    assert os.statvfs(root).f_namemax == 255
    ok, long = "o" * 255, "l" * 256
    touch(root / ok, b"fits")
    (root / "dir").mkdir()
    calls: dict[str, Callable[[], object]] = {
        "create": lambda: touch(root / long),
        "open O_EXCL": lambda: os.close(os.open(root / long, os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
        "mkdir": lambda: os.mkdir(root / long),
        "mkdir below": lambda: os.mkdir(root / "dir" / long),
        "mknod": lambda: os.mknod(root / long, 0o644 | stat.S_IFREG),
        "mkfifo": lambda: os.mkfifo(root / long),
        "symlink": lambda: os.symlink("target", root / long),  # refused anyway, but the name first
        "link": lambda: os.link(root / ok, root / long),
        "stat": lambda: os.stat(root / long),
        "unlink": lambda: os.unlink(root / long),
        "rmdir": lambda: os.rmdir(root / long),
        "truncate": lambda: os.truncate(root / long, 0),
        "utime": lambda: os.utime(root / long),
        "rename from": lambda: os.rename(root / long, root / "x"),
        "rename to": lambda: os.rename(root / ok, root / long),
        "rename dir to": lambda: os.rename(root / "dir", root / long),
        "a long name on the way": lambda: os.stat(root / long / "x"),
        # A multibyte name: the limit is in bytes (128 x 2 bytes).
        "utf-8 bytes": lambda: touch(root / ("é" * 128)),
    }
    for what, call in calls.items():
        assert errno_of(call) == errno.ENAMETOOLONG, what
    assert sorted(os.listdir(root)) == sorted([ok, "dir"])  # nothing made, nothing moved
    assert read(root / ok) == b"fits"
    assert errno_of(lambda: os.stat(wmount / long)) == errno.ENAMETOOLONG  # outside commits too


# -- times ------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
AT_FDCWD = -100


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: Path, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """utimensat(2) itself: os.utime cannot say UTIME_OMIT."""
    times = (Timespec * 2)(Timespec(*atime), Timespec(*mtime))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


A, M = 1_900_000_000, 1_950_000_000  # 2030, 2031


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_utimensat_keeps_atime_and_mtime(kind: str, client: Client, wmount: Path, repo: str) -> None:
    root, cid = open_commit(client, wmount, repo)
    p = root / "it"
    if kind == "file":
        touch(p, b"content")
    else:
        p.mkdir()
        (p / "sub").mkdir()
    utimensat(p, (A, 1), (M, 2))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (A * 10**9 + 1, M * 10**9 + 2)
    assert st.st_ctime_ns >= st.st_mtime_ns  # ctime: the change (now), never before mtime
    # UTIME_OMIT leaves a time alone; UTIME_NOW sets it to the current time.
    utimensat(p, (0, UTIME_OMIT), (M + 10, 0))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (A * 10**9 + 1, (M + 10) * 10**9)
    utimensat(p, (0, UTIME_NOW), (0, UTIME_OMIT))
    st = os.stat(p)
    assert abs(st.st_atime_ns - time.time_ns()) < 60 * 10**9
    assert st.st_mtime_ns == (M + 10) * 10**9
    # The times follow a rename, and survive the file landing in the commit.
    os.rename(p, root / "moved")
    client.finish_commit(repo, cid)
    st = os.stat(wmount / repo / cid / "moved")
    assert st.st_mtime_ns == (M + 10) * 10**9
    assert abs(st.st_atime_ns - time.time_ns()) < 60 * 10**9
    if kind == "file":  # a file's mtime is versioned: PFS has it too
        assert client.inspect_file(repo, cid, "moved").mtime == M + 10


def test_directory_times_follow_their_names(client: Client, wmount: Path, repo: str) -> None:
    root, _ = open_commit(client, wmount, repo)
    (root / "d").mkdir()
    utimensat(root / "d", (A, 0), (A, 0))
    for change in (
        lambda: touch(root / "d" / "f"),
        lambda: os.mkdir(root / "d" / "s"),
        lambda: os.rename(root / "d" / "f", root / "d" / "g"),
        lambda: os.unlink(root / "d" / "g"),
        lambda: os.rmdir(root / "d" / "s"),
    ):
        change()
        st = os.stat(root / "d")
        assert abs(st.st_mtime_ns - time.time_ns()) < 60 * 10**9 and st.st_ctime_ns >= st.st_mtime_ns
        assert st.st_atime_ns == A * 10**9  # reading and changing a directory keep its atime
        utimensat(root / "d", (0, UTIME_OMIT), (A, 0))


def test_ctime_moves_with_every_change(client: Client, wmount: Path, repo: str) -> None:
    root, _ = open_commit(client, wmount, repo)
    touch(root / "f", b"data")
    past = 1_000_000_000  # 2001: mtime set there, ctime stays the time of the change
    utimensat(root / "f", (past, 0), (past, 0))
    last = os.stat(root / "f").st_ctime_ns
    assert last > past * 10**9 and os.stat(root / "f").st_mtime_ns == past * 10**9
    for change in (
        lambda: os.chmod(root / "f", 0o600),  # accepted and ignored, but a change
        lambda: os.chown(root / "f", 0, 0),
        lambda: os.rename(root / "f", root / "g"),
        lambda: os.truncate(root / "g", 1),
    ):
        change()
        now = os.stat(root / "g" if (root / "g").exists() else root / "f").st_ctime_ns
        assert now > last
        last = now


def test_times_on_finished_commits_and_read_only_mounts_are_erofs(daemon: Daemon, mount: Mounts) -> None:
    client = daemon.client  # its own daemon: it needs a mount of its own
    committed(client, "data", "f", b"x")
    w = mount(client, write=True)
    finished = w / "data" / client.inspect_commit("data", "master").id
    for p in (finished / "f", finished):
        assert errno_of(lambda p=p: utimensat(p, (A, 0), (0, UTIME_OMIT))) == errno.EROFS
        assert errno_of(lambda p=p: utimensat(p, (0, UTIME_OMIT), (A, 0))) == errno.EROFS
    client.unmount(str(w))
    r = mount(client)
    assert errno_of(lambda: utimensat(r / "data" / "master" / "f", (A, 0), (A, 0))) == errno.EROFS


# -- inode numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("via", ["commit", "branch"])
def test_rename_keeps_inode_numbers(via: str, client: Client, wmount: Path, repo: str) -> None:
    root, cid = open_commit(client, wmount, repo)
    if via == "branch":  # MNT/<repo>/master/...: the same commit, named by its branch
        root = wmount / repo / "master"
    touch(root / "f", b"file")
    (root / "d" / "e").mkdir(parents=True)
    touch(root / "d" / "e" / "g", b"below")
    f, d, g = (os.stat(root / p).st_ino for p in ("f", "d", "d/e/g"))
    os.rename(root / "f", root / "f2")
    os.rename(root / "d", root / "d2")
    assert os.stat(root / "f2").st_ino == f
    assert os.stat(root / "d2").st_ino == d
    assert os.stat(root / "d2" / "e" / "g").st_ino == g  # what the kernel knew below moves too
    # Moved again, into another directory, and over an existing file.
    touch(root / "victim", b"replaced")
    os.rename(root / "f2", root / "victim")
    assert os.stat(root / "victim").st_ino == f
    assert read(root / "victim") == b"file"
    # A new file at an old name is a new file.
    touch(root / "f", b"new")
    assert os.stat(root / "f").st_ino not in (f, d, g)
    # The listing says the same as stat, before and after the commit finishes.
    listed = {e.name: e.inode() for e in os.scandir(root)}
    assert listed["victim"] == f and listed["d2"] == d
    client.finish_commit(repo, cid)
    assert os.stat(root / "victim").st_ino == f
    assert {e.name: e.inode() for e in os.scandir(root)}["d2"] == d


def test_unlink_gives_the_name_a_new_inode(client: Client, wmount: Path, repo: str) -> None:
    root, _ = open_commit(client, wmount, repo)
    touch(root / "f", b"one")
    first = os.stat(root / "f").st_ino
    os.unlink(root / "f")
    touch(root / "f", b"two")
    assert os.stat(root / "f").st_ino != first
    (root / "d").mkdir()
    first = os.stat(root / "d").st_ino
    os.rmdir(root / "d")
    (root / "d").mkdir()
    assert os.stat(root / "d").st_ino != first


def stored(c: Client, repo: str, path: str) -> bytes | None:
    """What the head of master holds at ``path`` (None: nothing landed there yet)."""
    try:
        return c.read_file(repo, "master", path)
    except Exception:
        return None


@pytest.mark.parametrize("via", ["commit", "branch"])
@pytest.mark.parametrize("opened", ["written", "read-only"])
def test_a_new_file_at_an_open_unlinked_files_name_is_another_file(
    via: str, opened: str, client: Client, wmount: Path, repo: str
) -> None:
    """The descriptor of a file unlinked (or replaced by a rename) while open
    keeps its own inode, size and bytes, and ftruncate/futimens through it
    change that file only, never the new file created at its old name."""
    root, _ = open_commit(client, wmount, repo)
    if via == "branch":
        root = wmount / repo / "master"
    touch(root / "f", b"old content")
    if opened == "read-only":  # a landed file, opened for reading only
        wait_for(lambda: stored(client, repo, "f") == b"old content", what="f landed")
    fd = os.open(root / "f", os.O_RDWR if opened == "written" else os.O_RDONLY)
    try:
        old = os.fstat(fd).st_ino
        os.unlink(root / "f")
        touch(root / "f", b"new!")
        st, new = os.fstat(fd), os.stat(root / "f")
        assert (st.st_ino, st.st_nlink, st.st_size) == (old, 0, 11)
        assert new.st_ino != old and (new.st_nlink, new.st_size) == (1, 4)
        assert os.pread(fd, 100, 0) == b"old content"
        os.utime(fd, ns=(1_000_000_000, 2_000_000_000))  # futimens
        assert (os.fstat(fd).st_atime_ns, os.fstat(fd).st_mtime_ns) == (1_000_000_000, 2_000_000_000)
        assert os.stat(root / "f").st_mtime_ns != 2_000_000_000
        if opened == "written":
            os.ftruncate(fd, 3)
            assert os.fstat(fd).st_size == 3 and os.pread(fd, 100, 0) == b"old"
        # Reopened through /proc (as a shell's <&3 would): the same file.
        with open(f"/proc/self/fd/{fd}", "rb") as again:
            assert again.read() == (b"old" if opened == "written" else b"old content")
    finally:
        os.close(fd)
    assert read(root / "f") == b"new!"
    assert os.stat(root / "f").st_ino == new.st_ino

    # Replaced by a rename: the descriptor keeps the replaced file.
    touch(root / "g", b"replaced")
    wait_for(lambda: stored(client, repo, "g") == b"replaced", what="g landed")
    fd = os.open(root / "g", os.O_RDWR if opened == "written" else os.O_RDONLY)
    try:
        old = os.fstat(fd).st_ino
        moved = os.stat(root / "f").st_ino
        os.rename(root / "f", root / "g")
        st = os.fstat(fd)
        assert (st.st_ino, st.st_nlink, st.st_size) == (old, 0, 8)
        assert os.pread(fd, 100, 0) == b"replaced"
        if opened == "written":
            os.ftruncate(fd, 1)
            assert os.fstat(fd).st_size == 1
    finally:
        os.close(fd)
    assert os.stat(root / "g").st_ino == moved
    assert read(root / "g") == b"new!"
    client.finish_commit(repo, client.inspect_commit(repo, "master").id)
    assert client.read_file(repo, "master", "g") == b"new!"
    assert {f.path for f in client.list_file(repo, "master", "/")} == {"/g"}


# -- link counts ---------------------------------------------------------------------------


def test_directory_link_count_is_two_plus_subdirectories(client: Client, wmount: Path, repo: str) -> None:
    root, cid = open_commit(client, wmount, repo)
    for p in ("a/x", "a/y", "a/y/z", "b"):
        (root / p).mkdir(parents=True, exist_ok=True)
    touch(root / "a" / "file")
    nlink = {p: os.stat(root / p).st_nlink for p in ("", "a", "a/x", "a/y", "b")}
    assert nlink == {"": 4, "a": 4, "a/x": 2, "a/y": 3, "b": 2}
    os.rename(root / "a" / "x", root / "b" / "x")  # rename/24.t: both parents change
    assert (os.stat(root / "a").st_nlink, os.stat(root / "b").st_nlink) == (3, 3)
    os.rmdir(root / "b" / "x")
    assert os.stat(root / "b").st_nlink == 2
    assert os.stat(root / "a" / "file").st_nlink == 1
    client.finish_commit(repo, cid)
    # A finished commit: by lookup, through the listing (readdirplus), under the branch.
    assert os.stat(root / "a").st_nlink == 3
    listed = {e.name: e.stat().st_nlink for e in os.scandir(root)}
    assert listed == {"a": 3, "b": 2}
    assert os.stat(wmount / repo / "master" / "a").st_nlink == 3
    assert os.stat(wmount / repo / "master").st_nlink == 4
    # The mount's own directories: the root holds repos, a repo its branches
    # and open commits (seen within a second, like any change of a branch).
    client.create_repo(repo + "other")
    wait_for(lambda: os.stat(wmount).st_nlink == 2 + len(os.listdir(wmount)), 5, "the root to count the repos")
    wait_for(lambda: os.stat(wmount / repo).st_nlink == 2 + 1, 5, "the repo to count only master")


# -- special files --------------------------------------------------------------------------


def test_mknod_makes_plain_files_and_refuses_special_ones(client: Client, wmount: Path, repo: str) -> None:
    root, cid = open_commit(client, wmount, repo)
    os.mknod(root / "plain", 0o644 | stat.S_IFREG)
    assert stat.S_ISREG(os.stat(root / "plain").st_mode) and read(root / "plain") == b""
    assert errno_of(lambda: os.mknod(root / "plain", 0o644 | stat.S_IFREG)) == errno.EEXIST
    assert errno_of(lambda: os.mkfifo(root / "fifo")) == errno.EPERM
    assert errno_of(lambda: os.mknod(root / "dev", 0o644 | stat.S_IFCHR, os.makedev(1, 3))) == errno.EPERM
    assert sorted(os.listdir(root)) == ["plain"]
    client.finish_commit(repo, cid)
    assert [f.path for f in client.list_file(repo, cid, "/")] == ["/plain"]
    assert errno_of(lambda: os.mkfifo(root / "fifo")) == errno.EROFS


# -- other users ----------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A mountpoint another user can reach (pytest's temporary directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pachy-shared-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        # Torn down before the test's mounts may be: take them down first.
        for p in pachy_mounts():
            if p.startswith(f"{path}/"):
                detach(None, p)
        shutil.rmtree(path)


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_allow_other_lets_another_user_read_only(
    daemon: Daemon, mount: Mounts, shared_dir: Path
) -> None:
    client = daemon.client  # its own daemon: it needs a mount of its own
    committed(client, "data", "f", b"shared\n")
    mnt = shared_dir / "mnt"
    mnt.mkdir()
    mnt.chmod(0o755)
    # Without --allow-other, FUSE keeps every other user out.
    mount(client, mnt, write=True)
    res = as_nobody("cat", str(mnt / "data" / "master" / "f"))
    assert res.returncode != 0 and "Permission denied" in res.stderr, res
    client.unmount(str(mnt))
    # With it (through the CLI), another user reads, lists and stats, and writes nothing.
    res = pachctl(daemon.home, "mount", "--write", "--allow-other", str(mnt))
    assert res.returncode == 0, res.stderr
    mount.track(client, mnt)
    assert mounted(mnt)
    assert [m.allow_other for m in client.list_mounts()] == [True]
    f = mnt / "data" / "master" / "f"
    res = as_nobody("cat", str(f))
    assert (res.returncode, res.stdout) == (0, "shared\n"), res.stderr
    assert as_nobody("ls", str(mnt / "data" / "master")).stdout.split() == ["f"]
    st = os.stat(f)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.getuid(), os.getgid(), 0o644)
    assert stat.S_IMODE(os.stat(mnt / "data" / "master").st_mode) == 0o755
    for argv in (["sh", "-c", f"echo x >> {f}"], ["touch", str(f.parent / "new")], ["rm", str(f)]):
        res = as_nobody(*argv)
        assert res.returncode != 0 and "Permission denied" in res.stderr, (argv, res)
    # The owner writes; a finished commit is still read-only for the owner too.
    with open(f, "ab") as fh:
        fh.write(b"more\n")
    cid = client.inspect_commit("data", "master").id
    client.finish_commit("data", cid)
    assert read(mnt / "data" / cid / "f") == b"shared\nmore\n"
    assert errno_of(lambda: os.open(mnt / "data" / cid / "f", os.O_WRONLY | os.O_APPEND)) == errno.EROFS
    assert as_nobody("cat", str(mnt / "data" / cid / "f")).stdout == "shared\nmore\n"
