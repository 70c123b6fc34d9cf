"""The writable FUSE mount, through a real kernel mount served by mountd.

``client.mount(path, write=True)``: writing under MNT/<repo>/<branch>/ opens a
commit on the branch when its head is finished; writing under
MNT/<repo>/<open-commit-id>/ writes into that commit; finished commits and
read-only mounts answer EROFS. Written files wait in an overlay until their
last close, then land in batches; ``finish_commit`` lands what is pending
first, unmount lands and finishes what the mount opened, ``commit_idle``
finishes idle commits.

The core is a randomized differential test: the same few hundred operations
applied to a tmpfs directory and to the mount, compared op by op (bytes or
errno), and the whole trees (and the client's view) compared after each
finish. Two tests aim at the landing itself: unlink/truncate/utime of files
a batch is landing, and reads of files being landed. Then EROFS, many
processes at once, 1,000 small files, unmount and --commit-idle finishing
commits, O_DIRECT and odd flags, and kill -9 of the daemon while writing.

The mount writes under branches that exist (it does not create branches), so
repos get an empty ``master`` first. Every mount is taken down at teardown;
no test sleeps to wait.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import mmap
import os
import random
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pachctl.client import Client, errors
from tests.conftest import tmpfs_at, wait_for
from tests.mounting import Mounts, errno_of, mounted, pachctl, read, requires_fuse

# The shared fixtures, by the names tests ask for (``as`` marks them re-exported,
# so ruff takes them as used and lets test arguments named after them be).
from tests.mounting import mount as mount
from tests.mounting import no_mount_left_behind as no_mount_left_behind

pytestmark = requires_fuse

KiB = 1 << 10
MiB = 1 << 20


# -- helpers ------------------------------------------------------------------------


def write(path: Path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)


def head(c: Client, repo: str, branch: str = "master"):
    return c.inspect_commit(repo, branch)


def new_repo(c: Client, repo: str) -> None:
    """A repo with an empty branch master (no commits yet): the mount writes under branches."""
    c.create_repo(repo)
    c.create_branch(repo, "master")


def finish_head(c: Client, repo: str, branch: str = "master") -> str:
    """Finish the branch's open head through the API (lands pending files first)."""
    h = head(c, repo, branch)
    assert h.finished is None, f"head of {repo}@{branch} is not open"
    c.finish_commit(repo, h.id)
    return h.id


_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1


def rename_noreplace(src: str, dst: str) -> None:
    if (
        _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE)
        != 0
    ):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), src, None, dst)


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def wmount(client: Client, mount: Mounts) -> Path:
    """A writable mount of the test's daemon."""
    return mount(client, write=True, commit_idle=None)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """The reference directory the mount is compared with: a tmpfs, like a local disk."""
    with tmpfs_at(tmp_path / "ref", "512m") as ref:
        yield ref


# -- 7.1 and opening commits ----------------------------------------------------------


def test_seed_7_1_write_into_open_commit_by_id(client: Client, wmount: Path) -> None:
    client.create_repo("data")
    commit = client.start_commit("data", "master")
    root = wmount / "data" / commit.id
    assert root.is_dir()
    write(root / "file", b"hello from the mount\n")
    os.makedirs(root / "a" / "b")
    write(root / "a" / "b" / "deep.txt", b"deep\n")
    with open(root / "file", "ab") as f:
        f.write(b"appended\n")
    client.finish_commit("data", commit.id)

    assert client.inspect_commit("data", commit.id).finished is not None
    assert client.read_file("data", commit.id, "file") == b"hello from the mount\nappended\n"
    assert client.read_file("data", "master", "a/b/deep.txt") == b"deep\n"
    assert len(client.list_commit("data")) == 1  # no commit besides the one we opened
    # The finished commit reads back through the mount too.
    assert read(wmount / "data" / commit.id / "file") == b"hello from the mount\nappended\n"


def test_write_under_branch_opens_a_commit(client: Client, wmount: Path) -> None:
    client.create_repo("data")
    with client.commit("data") as c0:
        client.put_file("data", c0.id, "old.txt", b"old\n")
    assert len(client.list_commit("data")) == 1

    write(wmount / "data" / "master" / "new.txt", b"new content\n")
    commits = client.list_commit("data")
    assert len(commits) == 2
    h = head(client, "data")
    assert h.finished is None and h.id != c0.id and h.parent == c0.id
    # Readable through the mount right after close, before landing or finishing.
    assert read(wmount / "data" / "master" / "new.txt") == b"new content\n"
    assert read(wmount / "data" / h.id / "new.txt") == b"new content\n"
    assert read(wmount / "data" / "master" / "old.txt") == b"old\n"
    assert h.id in os.listdir(wmount / "data")
    assert sorted(os.listdir(wmount / "data" / "master")) == ["new.txt", "old.txt"]

    # A second write goes into the same open commit.
    write(wmount / "data" / "master" / "second.txt", b"2\n")
    assert len(client.list_commit("data")) == 2

    client.finish_commit("data", h.id)
    assert head(client, "data").finished is not None
    assert client.read_file("data", "master", "new.txt") == b"new content\n"
    assert client.read_file("data", "master", "second.txt") == b"2\n"
    assert client.read_file("data", "master", "old.txt") == b"old\n"
    assert h.id not in os.listdir(wmount / "data")  # no longer open
    assert read(wmount / "data" / "master" / "new.txt") == b"new content\n"


def test_posix_corners(client: Client, wmount: Path) -> None:
    new_repo(client, "p")
    root = wmount / "p" / "master"
    # holes read as zeros
    fd = os.open(root / "holes", os.O_WRONLY | os.O_CREAT, 0o644)
    os.pwrite(fd, b"end", 10_000)
    os.close(fd)
    assert read(root / "holes") == b"\0" * 10_000 + b"end"
    # truncate grow and shrink
    os.truncate(root / "holes", 20_000)
    assert os.stat(root / "holes").st_size == 20_000
    os.truncate(root / "holes", 5)
    assert read(root / "holes") == b"\0" * 5
    # symlink/link: EPERM
    assert errno_of(lambda: os.symlink("holes", root / "sym")) == errno.EPERM
    assert errno_of(lambda: os.link(root / "holes", root / "hard")) == errno.EPERM
    # chmod / chown accepted and ignored
    os.chmod(root / "holes", 0o600)
    os.chown(root / "holes", os.getuid(), os.getgid())
    # utimens sets a file's mtime, which survives landing and finishing
    os.utime(root / "holes", ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    assert os.stat(root / "holes").st_mtime_ns == 1_500_000_000_123_456_789
    # RENAME_NOREPLACE
    write(root / "other", b"other")
    assert (
        errno_of(lambda: rename_noreplace(str(root / "holes"), str(root / "other"))) == errno.EEXIST
    )
    rename_noreplace(str(root / "other"), str(root / "moved"))
    assert read(root / "moved") == b"other"
    # rmdir of a non-empty directory
    os.makedirs(root / "d" / "sub")
    assert errno_of(lambda: os.rmdir(root / "d")) == errno.ENOTEMPTY
    os.rmdir(root / "d" / "sub")
    os.rmdir(root / "d")
    # fsync lands the file while it is open
    with open(root / "synced", "wb") as f:
        f.write(b"synced")
        f.flush()
        os.fsync(f.fileno())
        h = head(client, "p")
        assert client.read_file("p", h.id, "synced") == b"synced"
    finish_head(client, "p")
    assert client.read_file("p", "master", "moved") == b"other"
    assert client.read_file("p", "master", "holes") == b"\0" * 5
    assert client.inspect_file("p", "master", "holes").mtime == pytest.approx(
        1_500_000_000.123456789, abs=1e-6
    )
    assert os.stat(root / "holes").st_mtime_ns == 1_500_000_000_123_456_789
    assert sorted(os.listdir(root)) == ["holes", "moved", "synced"]


# -- the randomized differential test ---------------------------------------------------

FILE_DIRS = ["", "d0", "d1", "d0/e", "d1/e"]
FILE_NAMES = ["f0", "f1", "f2"]
FILES = [f"{d}/{n}" if d else n for d in FILE_DIRS for n in FILE_NAMES]  # 15 names
DIRS = ["d0", "d1", "d2", "d0/e", "d1/e", "d2/e"]
N_OPS = 300


class Blob(bytes):
    def __repr__(self) -> str:
        return f"<{len(self)} bytes {hashlib.sha256(self).hexdigest()[:8]}>"


def _show(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return repr(Blob(value))
    if isinstance(value, list | tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return repr(value)


class Ops:
    """Each operation, on paths relative to a root; returns something comparable."""

    @staticmethod
    def write(root, p, off, data):
        fd = os.open(os.path.join(root, p), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            return os.pwrite(fd, data, off)
        finally:
            os.close(fd)

    @staticmethod
    def overwrite(root, p, data):
        fd = os.open(os.path.join(root, p), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    @staticmethod
    def create_excl(root, p, data):
        fd = os.open(os.path.join(root, p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    @staticmethod
    def append(root, p, data):
        fd = os.open(os.path.join(root, p), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    @staticmethod
    def session(root, p, steps):
        """Several writes, truncates and reads through one O_RDWR handle."""
        fd = os.open(os.path.join(root, p), os.O_RDWR | os.O_CREAT, 0o644)
        out = []
        try:
            for step in steps:
                if step[0] == "w":
                    out.append(os.pwrite(fd, step[2], step[1]))
                elif step[0] == "t":
                    os.ftruncate(fd, step[1])
                    out.append(os.fstat(fd).st_size)
                else:
                    out.append(os.pread(fd, step[2], step[1]))
        finally:
            os.close(fd)
        return out

    @staticmethod
    def truncate(root, p, size):
        os.truncate(os.path.join(root, p), size)

    @staticmethod
    def rename(root, src, dst):
        os.rename(os.path.join(root, src), os.path.join(root, dst))

    @staticmethod
    def rename_noreplace(root, src, dst):
        rename_noreplace(os.path.join(root, src), os.path.join(root, dst))

    @staticmethod
    def unlink(root, p):
        os.unlink(os.path.join(root, p))

    @staticmethod
    def mkdir(root, p):
        os.mkdir(os.path.join(root, p))

    @staticmethod
    def rmdir(root, p):
        os.rmdir(os.path.join(root, p))

    @staticmethod
    def read(root, p):
        with open(os.path.join(root, p), "rb") as f:
            return f.read()

    @staticmethod
    def pread(root, p, off, n):
        fd = os.open(os.path.join(root, p), os.O_RDONLY)
        try:
            return os.pread(fd, n, off)
        finally:
            os.close(fd)

    @staticmethod
    def listdir(root, p):
        return sorted(os.listdir(os.path.join(root, p)))

    @staticmethod
    def stat(root, p):
        st = os.stat(os.path.join(root, p))
        return ("dir", None) if stat.S_ISDIR(st.st_mode) else ("file", st.st_size)

    @staticmethod
    def utime(root, p, ns):
        full = os.path.join(root, p)
        os.utime(full, ns=(ns, ns))
        st = os.stat(full)
        return "dir" if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns

    @staticmethod
    def chmod(root, p):
        os.chmod(os.path.join(root, p), 0o640)

    @staticmethod
    def fsync(root, p):
        fd = os.open(os.path.join(root, p), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def apply(root: str, op: tuple) -> tuple:
    try:
        return ("ok", getattr(Ops, op[0])(root, *op[1:]))
    except OSError as exc:
        return ("err", errno.errorcode.get(exc.errno, exc.errno))


def snapshot(root: str) -> dict[str, object]:
    """Every path below ``root``: 'dir' or the file's bytes."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.normpath(os.path.join(rel, f))] = fh.read()
    return out


class OpGen:
    """Random operations, biased by the reference tree's current state."""

    def __init__(self, rng: random.Random, ref: str):
        self.rng, self.ref = rng, ref

    def _tree(self) -> dict[str, object]:
        return snapshot(self.ref)

    def _size(self, p: str) -> int:
        try:
            return os.stat(os.path.join(self.ref, p)).st_size
        except OSError:
            return 0

    def _creatable(self, candidates: list[str]) -> list[str]:
        """Candidates whose parent directory exists now."""
        dirs = {p for p, v in self._tree().items() if v == "dir"} | {""}
        return [p for p in candidates if p.rpartition("/")[0] in dirs]

    def _file(self) -> str:
        """Mostly an existing file, else a name that can be created, rarely anything."""
        rng = self.rng
        existing = [p for p, v in self._tree().items() if v != "dir"]
        r = rng.random()
        if existing and r < 0.6:
            return rng.choice(existing)
        if r < 0.95:
            return rng.choice(self._creatable(FILES))
        if r < 0.97:
            return rng.choice(DIRS)  # a directory where a file is expected
        return rng.choice(FILES)

    def _dir(self, new: bool = False) -> str:
        """An existing directory (or, with ``new``, one that can be made), rarely anything."""
        rng = self.rng
        existing = [p for p, v in self._tree().items() if v == "dir"]
        r = rng.random()
        if existing and not new and r < 0.6:
            return rng.choice(existing)
        if r < 0.9:
            return rng.choice(self._creatable(DIRS) or DIRS)
        if r < 0.95:
            return rng.choice(FILES)  # a file where a directory is expected
        return rng.choice(DIRS)

    def _data(self) -> Blob:
        rng = self.rng
        r = rng.random()
        n = (
            rng.randrange(0, 64)
            if r < 0.3
            else rng.randrange(64, 8 * KiB)
            if r < 0.97
            else rng.randrange(MiB, 3 * MiB)
        )
        return Blob(rng.randbytes(n))

    def _off(self, p: str) -> int:
        size = self._size(p)
        return (
            self.rng.randrange(0, size + 3 * KiB)
            if self.rng.random() < 0.8
            else size + self.rng.randrange(0, 300 * KiB)
        )

    def next(self) -> tuple:
        rng = self.rng
        kind = rng.choices(
            [
                "write",
                "overwrite",
                "create_excl",
                "append",
                "session",
                "truncate",
                "rename_file",
                "rename_dir",
                "rename_noreplace",
                "unlink",
                "mkdir",
                "rmdir",
                "read",
                "pread",
                "listdir",
                "stat",
                "utime",
                "chmod",
                "fsync",
            ],
            weights=[12, 5, 2, 6, 4, 5, 5, 3, 2, 5, 5, 4, 8, 6, 5, 3, 2, 1, 2],
        )[0]
        if kind in ("write",):
            p = self._file()
            return ("write", p, self._off(p), self._data())
        if kind in ("overwrite", "create_excl", "append"):
            return (kind, self._file(), self._data())
        if kind == "session":
            p = self._file()
            steps = []
            size = self._size(p)
            for _ in range(rng.randrange(1, 6)):
                r = rng.random()
                if r < 0.5:
                    off = rng.randrange(0, size + 2 * KiB)
                    data = Blob(rng.randbytes(rng.randrange(0, 4 * KiB)))
                    steps.append(("w", off, data))
                    size = max(size, off + len(data)) if data else size
                elif r < 0.75:
                    size = rng.randrange(0, size + 2 * KiB)
                    steps.append(("t", size))
                else:
                    steps.append(("r", rng.randrange(0, size + 100), rng.randrange(0, 6 * KiB)))
            return ("session", p, steps)
        if kind == "truncate":
            p = self._file()
            size = self._size(p)
            return (
                "truncate",
                p,
                rng.choice([0, rng.randrange(0, size + 1), rng.randrange(size, size + 20 * KiB)]),
            )
        if kind == "rename_file":
            return ("rename", self._file(), self._file() if rng.random() < 0.9 else self._dir())
        if kind == "rename_dir":
            return (
                "rename",
                self._dir(),
                self._dir(new=rng.random() < 0.7) if rng.random() < 0.9 else self._file(),
            )
        if kind == "rename_noreplace":
            if rng.random() < 0.7:
                return ("rename_noreplace", self._file(), self._file())
            return ("rename_noreplace", self._dir(), self._dir(new=rng.random() < 0.5))
        if kind == "unlink":
            return ("unlink", self._file())
        if kind == "mkdir":
            return ("mkdir", self._dir(new=True))
        if kind == "rmdir":
            return ("rmdir", self._dir())
        if kind == "read":
            return ("read", self._file())
        if kind == "pread":
            p = self._file()
            return ("pread", p, rng.randrange(0, self._size(p) + 200), rng.randrange(0, 16 * KiB))
        if kind == "listdir":
            return ("listdir", "" if rng.random() < 0.2 else self._dir())
        if kind == "stat":
            return ("stat", self._file() if rng.random() < 0.6 else self._dir())
        if kind == "utime":
            return ("utime", self._file(), rng.randrange(10**18, 2 * 10**18))
        return (kind, self._file())


def _describe(v: object) -> str:
    return "missing" if v is None else "dir" if v == "dir" else repr(Blob(v))


def tree_differences(c: Client, repo: str, ref: str, mnt: str) -> list[str]:
    """How the mount, and the client's view of the branch, differ from the reference."""
    want = snapshot(ref)
    got = snapshot(mnt)
    out = [
        f"{p}: reference {_describe(want.get(p))}, mount {_describe(got.get(p))}"
        for p in sorted(set(want) | set(got))
        if want.get(p) != got.get(p)
    ]
    infos = {f.path.lstrip("/"): f for f in c.glob_file(repo, "master", "**")} if want else {}
    client_view = {p: ("dir" if f.type == "dir" else f.size) for p, f in infos.items()}
    want_view = {p: ("dir" if v == "dir" else len(v)) for p, v in want.items()}
    out += [
        f"{p}: reference {want_view.get(p)}, client {client_view.get(p)}"
        for p in sorted(set(want_view) | set(client_view))
        if want_view.get(p) != client_view.get(p)
    ]
    for p, v in want.items():
        if v != "dir" and client_view.get(p) == len(v) and c.read_file(repo, "master", p) != v:
            out.append(f"{p}: client.read_file differs from the reference")
    return out


def _mentions(op: tuple, paths: list[str]) -> bool:
    return any(
        isinstance(a, str) and any(a == p or p.startswith(a + "/") for p in paths) for a in op[1:]
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_against_tmpfs(seed: int, client: Client, wmount: Path, tmpfs: Path) -> None:
    repo = f"diff{seed}"
    new_repo(client, repo)
    ref = str(tmpfs)
    mnt = str(wmount / repo / "master")
    rng = random.Random(seed)
    gen = OpGen(rng, ref)
    history: list[tuple] = []
    outcomes: dict[str, int] = {}
    t0 = time.monotonic()
    for i in range(N_OPS):
        op = gen.next()
        history.append(op)
        want = apply(ref, op)
        got = apply(mnt, op)
        if got != want:
            recent = "\n".join(f"  {j}: {_show(o)}" for j, o in enumerate(history) if j >= i - 12)
            print(f"seed {seed}: op {i} {_show(op)} differs")
            pytest.fail(
                f"seed {seed}, op {i}: {_show(op)}\n  reference: {_show(want)}\n  mount:     {_show(got)}\n"
                f"recent ops:\n{recent}"
            )
        key = f"{op[0]}:{want[1] if want[0] == 'err' else 'ok'}"
        outcomes[key] = outcomes.get(key, 0) + 1
        if i == N_OPS // 2 or i == N_OPS - 1:
            finish_head(client, repo)
            diffs = tree_differences(client, repo, ref, mnt)
            if diffs:
                paths = [d.split(":")[0] for d in diffs]
                related = "\n".join(
                    f"  {j}: {_show(o)}" for j, o in enumerate(history) if _mentions(o, paths)
                )
                pytest.fail(
                    f"seed {seed}, after op {i}:\n  "
                    + "\n  ".join(diffs)
                    + f"\nops on those paths:\n{related}"
                )
    print(f"seed {seed}: {N_OPS} ops in {time.monotonic() - t0:.2f} s: {sorted(outcomes.items())}")
    assert len(client.list_commit(repo)) == 2
    assert client.fsck().ok


def test_unlink_truncate_utime_race_the_landing(client: Client, wmount: Path) -> None:
    """Files closed a moment ago are being landed (in a batch, ~0.2 s after
    close) while they are unlinked, truncated or touched: none of those may
    be undone by the landing."""
    new_repo(client, "race")
    root = wmount / "race" / "master"
    rng = random.Random(7)
    body = rng.randbytes(48 * KiB)
    n, lag = 400, 60
    state: dict[str, bytes] = {}  # what each file holds now
    touched: set[str] = set()
    for i in range(n + lag):
        if i < n:
            write(root / f"f{i:03d}", body)
            state[f"f{i:03d}"] = body
        name = f"f{i - lag + rng.randrange(-20, 20):03d}"
        if name in state:
            r = rng.random()
            if r < 0.6:
                os.unlink(root / name)
                del state[name]
                touched.discard(name)
            elif r < 0.8:
                os.truncate(root / name, 100)
                state[name] = state[name][:100]
                touched.discard(name)  # truncating sets the mtime again
            else:
                os.utime(root / name, ns=(1_000_000_000, 1_000_000_000))
                touched.add(name)
    assert sorted(os.listdir(root)) == sorted(state)
    for name, want in state.items():
        assert read(root / name) == want, name
    finish_head(client, "race")
    sizes = {f.path.lstrip("/"): f.size for f in client.glob_file("race", "master", "*")}
    assert sizes == {name: len(want) for name, want in state.items()}
    for name in touched:
        assert client.inspect_file("race", "master", name).mtime == 1.0, name
    assert sorted(os.listdir(root)) == sorted(state)


def test_reads_while_the_file_is_landing(client: Client, wmount: Path) -> None:
    """Reading a closed file through the mount while it is being landed gives
    its bytes, and what lands is those bytes too."""
    new_repo(client, "landing")
    root = wmount / "landing" / "master"
    rng = random.Random(11)
    # beyond the chunker's 16 MiB window, so landing reads each file in several pieces
    bodies = {f"big{k}.bin": rng.randbytes(17 * MiB + rng.randrange(MiB)) for k in range(2)}
    for name, body in bodies.items():
        write(root / name, body)
        cid = head(client, "landing").id
        deadline = time.monotonic() + 20
        reads = 0
        while True:
            # (an open handle holds the file back from landing: open and close each time)
            fd = os.open(root / name, os.O_RDONLY)
            try:
                for _ in range(4):
                    off = rng.randrange(len(body))
                    assert os.pread(fd, 64 * KiB, off) == body[off : off + 64 * KiB], (name, off)
                    reads += 1
            finally:
                os.close(fd)
            with contextlib.suppress(errors.NotFound):
                client.inspect_file("landing", cid, name)
                break  # landed
            assert time.monotonic() < deadline, f"{name} did not land"
        assert reads >= 4
        assert read(root / name) == body
    finish_head(client, "landing")
    for name, body in bodies.items():
        assert client.read_file("landing", "master", name) == body, name


# -- EROFS ----------------------------------------------------------------------------


def _writes_fail_with(root: Path, existing: str, code: int, links_eperm_ok: bool = False) -> None:
    """Every kind of write under ``root`` fails with ``code``; ``existing`` is a file there."""
    f = root / existing
    attempts: dict[str, Callable[[], object]] = {
        "create": lambda: write(root / "new.txt", b"x"),
        "open-w": lambda: write(f, b"x"),
        "open-a": lambda: write(f, b"x", "ab"),
        "open-rw": lambda: os.close(os.open(f, os.O_RDWR)),
        "truncate": lambda: os.truncate(f, 0),
        "unlink": lambda: os.unlink(f),
        "mkdir": lambda: os.mkdir(root / "newdir"),
        "rmdir": lambda: os.rmdir(root / "dir"),
        "rename": lambda: os.rename(f, root / "renamed"),
        "utime": lambda: os.utime(f, ns=(1, 1)),
        "symlink": lambda: os.symlink("x", root / "sym"),
        "link": lambda: os.link(f, root / "hard"),
    }
    got = {name: errno_of(fn) for name, fn in attempts.items()}
    want = dict.fromkeys(attempts, code)
    if links_eperm_ok:
        for name in ("symlink", "link"):
            if got[name] == errno.EPERM:
                want[name] = errno.EPERM  # a writable mount refuses links everywhere with EPERM
    assert got == want
    assert read(f) == b"content\n"


def test_erofs_for_finished_commits_and_read_only_mounts(client: Client, mount: Mounts) -> None:
    client.create_repo("data")
    with client.commit("data") as c0:
        client.put_file("data", c0.id, "f.txt", b"content\n")
        client.put_file("data", c0.id, "dir/inner.txt", b"inner\n")
    rw = mount(client, write=True)
    _writes_fail_with(rw / "data" / c0.id, "f.txt", errno.EROFS, links_eperm_ok=True)
    assert len(client.list_commit("data")) == 1  # nothing opened a commit
    # Writing under the branch still works (it opens a commit)...
    write(rw / "data" / "master" / "ok.txt", b"ok")
    h = head(client, "data")
    assert h.finished is None
    # ...but the finished commit stays read-only.
    assert errno_of(lambda: write(rw / "data" / c0.id / "f.txt", b"x")) == errno.EROFS
    client.finish_commit("data", h.id)
    client.unmount(str(rw))

    ro = mount(client, write=False)
    _writes_fail_with(ro / "data" / "master", "f.txt", errno.EROFS)
    _writes_fail_with(ro / "data" / c0.id, "f.txt", errno.EROFS)
    assert errno_of(lambda: os.mkdir(ro / "data" / "newbranch")) == errno.EROFS
    assert errno_of(lambda: os.chmod(ro / "data" / "master" / "f.txt", 0o600)) == errno.EROFS
    assert read(ro / "data" / "master" / "ok.txt") == b"ok"
    assert len(client.list_commit("data")) == 2


# -- many processes at once --------------------------------------------------------------

WRITER = r"""
import os, sys
root, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = os.path.join(root, f"w{k}")
os.mkdir(d)
for i in range(n):
    with open(os.path.join(d, f"f{i:03d}.txt"), "wb") as f:
        f.write(f"writer {k} file {i}\n".encode() * (i % 7 + 1))
"""

READER = r"""
import os, sys, time
root, stop = sys.argv[1], sys.argv[2]
reads = 0
deadline = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < deadline:
    for d in sorted(n for n in os.listdir(root) if n.startswith("w")):
        try:
            names = os.listdir(os.path.join(root, d))
        except FileNotFoundError:
            continue
        k = int(d[1:])
        for name in names:
            i = int(name[1:4])
            want = f"writer {k} file {i}\n".encode() * (i % 7 + 1)
            with open(os.path.join(root, d, name), "rb") as f:
                got = f.read()
            if not want.startswith(got):
                print(f"BAD {d}/{name}: {got!r}")
                sys.exit(1)
            reads += 1
print(reads)
"""


def test_many_processes_write_and_read(client: Client, wmount: Path, tmp_path: Path) -> None:
    client.create_repo("many")
    with client.commit("many") as c0:
        client.put_file("many", c0.id, "seed.txt", b"seed\n")
    root = wmount / "many" / "master"
    stop = tmp_path / "stop"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(k), "100"]) for k in range(8)
    ]
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(root), str(stop)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        for w in writers:
            assert w.wait(60) == 0
    finally:
        stop.touch()
        outs = [r.communicate(timeout=60)[0] for r in readers]
    assert [r.returncode for r in readers] == [0] * 4, outs
    h = head(client, "many")
    assert h.finished is None
    assert len(client.list_commit("many")) == 2  # eight writers, one commit
    client.finish_commit("many", h.id)

    infos = {f.path: f for f in client.glob_file("many", "master", "**") if f.type == "file"}
    assert len(infos) == 801
    for k in range(8):
        for i in range(100):
            want = f"writer {k} file {i}\n".encode() * (i % 7 + 1)
            p = f"w{k}/f{i:03d}.txt"
            assert infos["/" + p].size == len(want)
            assert client.read_file("many", "master", p) == want
            assert read(root / p) == want


# -- throughput -------------------------------------------------------------------------


def test_thousand_small_files(client: Client, wmount: Path) -> None:
    new_repo(client, "small")
    root = wmount / "small" / "master"
    os.mkdir(root / "files")
    bodies = [hashlib.sha256(str(i).encode()).digest() * 32 for i in range(1000)]  # 1 KiB each
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        with open(root / "files" / f"{i:04d}.bin", "wb") as f:
            f.write(body)
    t1 = time.perf_counter()
    cid = finish_head(client, "small")
    t2 = time.perf_counter()
    rate = 1000 / (t1 - t0)
    print(
        f"\n1000 x 1 KiB through the mount: {rate:.0f} files/s; finish_commit {1000 * (t2 - t1):.0f} ms"
    )
    infos = {f.path: f.size for f in client.glob_file("small", cid, "files/*")}
    assert infos == {f"/files/{i:04d}.bin": 1024 for i in range(1000)}
    for i in (0, 1, 499, 998, 999):
        assert client.read_file("small", cid, f"files/{i:04d}.bin") == bodies[i]
    assert rate > 300, f"only {rate:.0f} files/s"


# -- commits finishing by themselves ---------------------------------------------------


def test_unmount_lands_and_finishes(client: Client, mount: Mounts) -> None:
    new_repo(client, "u")
    mnt = mount(client, write=True)
    write(mnt / "u" / "master" / "a.txt", b"written just before unmount\n")
    os.mkdir(mnt / "u" / "master" / "emptydir")
    client.unmount(str(mnt))
    assert not mounted(mnt)
    h = head(client, "u")
    assert h.finished is not None
    assert client.read_file("u", "master", "a.txt") == b"written just before unmount\n"
    assert {f.path for f in client.list_file("u", "master")} == {"/a.txt", "/emptydir"}


def test_commit_idle_finishes_the_commit(client: Client, mount: Mounts) -> None:
    new_repo(client, "idle")
    mnt = mount(client, write=True, commit_idle=1)
    write(mnt / "idle" / "master" / "a.txt", b"idle\n")
    h = head(client, "idle")
    assert h.finished is None
    wait_for(
        lambda: client.inspect_commit("idle", h.id).finished is not None,
        10,
        "the idle commit to finish",
    )
    assert client.read_file("idle", h.id, "a.txt") == b"idle\n"
    # The next write opens a new commit, which finishes as well.
    write(mnt / "idle" / "master" / "b.txt", b"again\n")
    h2 = head(client, "idle")
    assert h2.id != h.id and h2.finished is None
    wait_for(
        lambda: client.inspect_commit("idle", h2.id).finished is not None,
        10,
        "the second commit to finish",
    )
    assert client.read_file("idle", "master", "b.txt") == b"again\n"
    assert client.read_file("idle", "master", "a.txt") == b"idle\n"


# -- odd open flags -------------------------------------------------------------------


def _direct_read(path: Path, want: bytes) -> None:
    """O_DIRECT reading gives the right bytes or a clean errno."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        assert exc.errno in (errno.EINVAL, errno.EOPNOTSUPP), exc
        return
    try:
        size = (len(want) + 4095) // 4096 * 4096 + 4096
        buf = mmap.mmap(-1, size)  # page aligned
        try:
            n = os.readv(fd, [buf])
        except OSError as exc:
            assert exc.errno in (errno.EINVAL, errno.EOPNOTSUPP), exc
            return
        assert buf[:n] == want
        # an aligned read at an offset
        if len(want) > 4096:
            small = mmap.mmap(-1, 4096)
            n = os.preadv(fd, [small], 4096)
            assert small[:n] == want[4096:8192]
    finally:
        os.close(fd)


def test_o_direct_and_odd_flags(client: Client, wmount: Path) -> None:
    client.create_repo("odd")
    content = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes: not a multiple of 4 KiB
    with client.commit("odd") as c0:
        client.put_file("odd", c0.id, "f.bin", content)
    _direct_read(wmount / "odd" / c0.id / "f.bin", content)
    _direct_read(wmount / "odd" / "master" / "f.bin", content)
    # a file still in the overlay (an open commit, not yet landed or finished)
    write(wmount / "odd" / "master" / "dirty.bin", content[::-1])
    _direct_read(wmount / "odd" / "master" / "dirty.bin", content[::-1])
    # The mount still answers.
    assert read(wmount / "odd" / c0.id / "f.bin") == content
    assert sorted(os.listdir(wmount / "odd" / "master")) == ["dirty.bin", "f.bin"]

    # O_NOATIME reading
    fd = os.open(wmount / "odd" / "master" / "f.bin", os.O_RDONLY | os.O_NOATIME)
    try:
        assert os.pread(fd, 100, 256) == content[256:356]
    finally:
        os.close(fd)
    # O_SYNC and O_DSYNC writes
    for flag, name in ((os.O_SYNC, "sync.bin"), (os.O_DSYNC, "dsync.bin")):
        path = wmount / "odd" / "master" / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o644)
        try:
            assert os.write(fd, b"first ") == 6
            assert os.write(fd, b"second") == 6
        finally:
            os.close(fd)
        assert read(path) == b"first second"
    cid = finish_head(client, "odd")
    assert client.read_file("odd", cid, "sync.bin") == b"first second"
    assert client.read_file("odd", cid, "dsync.bin") == b"first second"
    assert client.read_file("odd", cid, "dirty.bin") == content[::-1]


# -- the daemon dies while writing -------------------------------------------------------

LIVE_WRITER = r"""
import errno, os, sys
root, progress = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(root, "live"), exist_ok=True)
i = 0
try:
    while True:
        with open(os.path.join(root, "live", f"{i:05d}.txt"), "wb") as f:
            f.write(b"live %d\n" % i * 50)
        i += 1
        if i % 10 == 0:
            with open(progress, "w") as p:
                p.write(str(i))
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno))
"""


def test_kill9_during_writes(start_daemon, mount: Mounts, tmp_path: Path) -> None:
    home = tmp_path / "home"
    d = start_daemon(home)
    c = d.client
    new_repo(c, "k")
    mnt = mount(c, write=True)
    root = mnt / "k" / "master"
    finished: dict[str, dict[str, bytes]] = {}
    for n in range(3):
        body = f"commit {n}\n".encode() * (n + 1)
        write(root / f"c{n}.txt", body)
        cid = finish_head(c, "k")
        finished[cid] = {f"c{m}.txt": f"commit {m}\n".encode() * (m + 1) for m in range(n + 1)}

    progress = tmp_path / "progress"
    writer = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(root), str(progress)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: progress.exists() and int(progress.read_text() or 0) >= 30,
            20,
            "the writer to get going",
        )
        d.kill9()
        mount.track(None, mnt)
        out, _ = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert out.strip() in ("ENOTCONN", "ECONNABORTED", "EIO"), out
    assert errno_of(lambda: os.listdir(mnt)) == errno.ENOTCONN
    assert errno_of(lambda: read(root / "c0.txt")) == errno.ENOTCONN
    assert mounted(mnt)

    res = pachctl(home, "unmount", str(mnt))
    assert res.returncode == 0, res.stderr
    assert not mounted(mnt)
    assert os.listdir(mnt) == []

    d2 = start_daemon(home)
    c2 = d2.client
    for cid, files in finished.items():
        info = c2.inspect_commit("k", cid)
        assert info.finished is not None
        assert {f.path for f in c2.list_file("k", cid)} == {"/" + p for p in files}
        for p, body in files.items():
            assert c2.read_file("k", cid, p) == body
    report = c2.fsck()
    assert report.ok, report.problems
