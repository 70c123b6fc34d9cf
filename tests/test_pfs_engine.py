"""The PFS engine used directly (no daemon): repos, commits, refs, files, dedup, fsck, gc."""

from __future__ import annotations

import os
import random
import statistics
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import pfsfuse.pfs as pfs_module
from pfsfuse import entries, names
from pfsfuse.chunks import CHUNK_AVG
from pfsfuse.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from pfsfuse.files import WriteSession
from pfsfuse.objstore import LocalStore
from pfsfuse.pfs import PFS

MiB = 1 << 20


# -- helpers -------------------------------------------------------------------


def in_commit(p: PFS, repo: str, ref: str, fn: Callable[[WriteSession], None]) -> None:
    """Run ``fn`` in one write session on an open commit and land it."""
    with p.write_session(repo, ref) as s:
        fn(s)
        s.commit()


def put(p: PFS, repo: str, ref: str, path: str, data: bytes, overwrite: bool = False) -> None:
    in_commit(p, repo, ref, lambda s: s.put_bytes(path, data, overwrite))


def commit(
    p: PFS,
    repo: str,
    files: dict[str, bytes] | None = None,
    branch: str = "master",
    deletes: tuple[str, ...] = (),
    overwrite: bool = False,
):
    """Start a commit on ``branch``, put/delete, finish it; return its CommitInfo."""
    c = p.start_commit(repo, branch)

    def work(s: WriteSession) -> None:
        for path in deletes:
            s.delete(path)
        for path, data in (files or {}).items():
            s.put_bytes(path, data, overwrite)

    in_commit(p, repo, c.id, work)
    return p.finish_commit(repo, c.id)


def read(p: PFS, repo: str, ref: str, path: str) -> bytes:
    _info, it = p.read_file(repo, ref, path)
    return b"".join(it)


def listing(p: PFS, repo: str, ref: str, path: str = "") -> dict[str, tuple[str, int]]:
    return {f.path: (f.type, f.size) for f in p.list_files(repo, ref, path)}


def store_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def pack_files(p: PFS) -> list[Path]:
    assert isinstance(p.store, LocalStore)
    return sorted(f for f in (Path(p.store.root) / "packs").rglob("*") if f.is_file())


# -- repos ---------------------------------------------------------------------


def test_repo_create_list_inspect_delete(mem_pfs: PFS) -> None:
    p = mem_pfs
    info = p.create_repo("images", description="cat pictures")
    assert (info.name, info.description, info.size, info.branches) == (
        "images",
        "cat pictures",
        0,
        [],
    )
    p.create_repo("labels")
    assert {r.name for r in p.list_repos()} == {"images", "labels"}
    commit(p, "images", {"a.png": b"12345"})
    got = p.inspect_repo("images")
    assert got.size == 5 and got.branches == ["master"]
    p.delete_repo("images")
    assert [r.name for r in p.list_repos()] == ["labels"]
    with pytest.raises(NotFound):
        p.inspect_repo("images")
    with pytest.raises(NotFound):
        p.delete_repo("images")
    with pytest.raises(NotFound):
        p.start_commit("images")


def test_duplicate_repo_is_already_exists(mem_pfs: PFS) -> None:
    mem_pfs.create_repo("data", description="first")
    with pytest.raises(AlreadyExists):
        mem_pfs.create_repo("data", description="second")
    assert mem_pfs.inspect_repo("data").description == "first"


@pytest.mark.parametrize("name", ["", "a b", "-x", "x-", "a" * 51, "a/b", "_x", "x.y", "é"])
def test_bad_repo_names_are_invalid(mem_pfs: PFS, name: str) -> None:
    with pytest.raises(InvalidArgument):
        mem_pfs.create_repo(name)
    assert mem_pfs.list_repos() == []


@pytest.mark.parametrize("name", ["a" * 50, "a", "A-b_9", "x-y", "9"])
def test_good_repo_names(mem_pfs: PFS, name: str) -> None:
    assert mem_pfs.create_repo(name).name == name
    assert mem_pfs.inspect_repo(name).name == name


def test_bad_branch_name_is_invalid(mem_pfs: PFS) -> None:
    mem_pfs.create_repo("r")
    for bad in ("a b", "-x", "b" * 51):
        with pytest.raises(InvalidArgument):
            mem_pfs.start_commit("r", bad)
        with pytest.raises(InvalidArgument):
            mem_pfs.create_branch("r", bad)
    assert mem_pfs.list_branches("r") == []


# -- commits and references ----------------------------------------------------


def test_start_and_finish_commit(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c = p.start_commit("r", "master", description="first")
    assert (c.ref, c.branch, c.seq, c.parent, c.finished, c.description) == (
        "master/0",
        "master",
        0,
        None,
        None,
        "first",
    )
    assert p.inspect_commit("r", "master").id == c.id
    done = p.finish_commit("r", "master/0", description="changed")
    assert done.finished is not None and done.description == "changed"
    with pytest.raises(Conflict):
        p.finish_commit("r", c.id)
    c1 = p.start_commit("r", "master")
    assert (c1.ref, c1.parent, c1.parent_ref) == ("master/1", c.id, "master/0")
    assert p.inspect_commit("r", "master/0").children == [c1.id]


def test_refs(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    cs = [commit(p, "r", {"f": str(i).encode()}, overwrite=True) for i in range(4)]
    ids = [c.id for c in cs]
    assert [c.ref for c in cs] == ["master/0", "master/1", "master/2", "master/3"]
    expect = {
        "master": 3,
        "master/0": 0,
        "master/1": 1,
        "master/3": 3,
        "master^": 2,
        "master^^": 1,
        "master~2": 1,
        "master~3": 0,
        "master~": 2,
        "master/3^": 2,
        "master/2~2": 0,
        "master^~1": 1,
    }
    for ref, i in expect.items():
        assert p.inspect_commit("r", ref).id == ids[i], ref
    for i, cid in enumerate(ids):
        assert p.inspect_commit("r", cid).id == cid
        if i:
            assert p.inspect_commit("r", cid + "^").id == ids[i - 1]
    # a unique prefix of an id
    prefix = next(
        cid[:n]
        for n in range(4, 33)
        for cid in [ids[2]]
        if sum(x.startswith(cid[:n]) for x in ids) == 1
    )
    assert p.inspect_commit("r", prefix).id == ids[2]
    assert read(p, "r", "master~2", "f") == b"1"
    for missing in ("master~4", "master/4", "master/0^", "nobranch", "abcd1234", "nobranch/0"):
        with pytest.raises(NotFound):
            p.inspect_commit("r", missing)
    for bad in ("", "^", "master/x", "~2"):
        with pytest.raises(InvalidArgument):
            p.inspect_commit("r", bad)
    with pytest.raises(NotFound):
        p.inspect_commit("nope", "master")


def test_ambiguous_id_prefix(mem_pfs: PFS, monkeypatch: pytest.MonkeyPatch) -> None:
    p = mem_pfs
    p.create_repo("r")
    fixed = iter(["abcd0000" + "0" * 24, "abcd1111" + "1" * 24, "abce2222" + "2" * 24])
    fake_uuid = types.SimpleNamespace(uuid4=lambda: types.SimpleNamespace(hex=next(fixed)))
    monkeypatch.setattr(pfs_module, "uuid", fake_uuid)
    for _ in range(3):
        commit(p, "r", {"f": b"x"}, overwrite=True)
    monkeypatch.setattr(pfs_module, "uuid", uuid)
    with pytest.raises(InvalidArgument, match="ambiguous"):
        p.inspect_commit("r", "abcd")
    assert p.inspect_commit("r", "abcd0").id.startswith("abcd0000")
    assert p.inspect_commit("r", "abce").id.startswith("abce2222")
    assert p.inspect_commit("r", "abcd1^").id.startswith("abcd0000")
    with pytest.raises(NotFound):
        p.inspect_commit("r", "abcf")


def test_branch_without_commits_is_not_found(mem_pfs: PFS) -> None:
    mem_pfs.create_repo("r")
    mem_pfs.create_branch("r", "empty")
    with pytest.raises(NotFound):
        mem_pfs.inspect_commit("r", "empty")


def test_seed_19_6_example(pfs: PFS) -> None:
    """The 1.x docs' PFS I/O example: two commits append to one file."""
    pfs.create_repo("foo")
    assert pfs.start_commit("foo", "master").ref == "master/0"
    put(pfs, "foo", "master/0", "test.txt", b"hai\n")
    pfs.finish_commit("foo", "master/0")
    assert pfs.start_commit("foo", "master").ref == "master/1"
    put(pfs, "foo", "master/1", "test.txt", b"bai\n")
    pfs.finish_commit("foo", "master/1")
    assert read(pfs, "foo", "master/1", "test.txt") == b"hai\nbai\n"
    assert read(pfs, "foo", "master/0", "test.txt") == b"hai\n"
    assert read(pfs, "foo", "master", "test.txt") == b"hai\nbai\n"
    assert pfs.inspect_file("foo", "master/1", "/test.txt").size == 8


def test_append_within_one_commit_and_overwrite(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c = p.start_commit("r")
    put(p, "r", c.id, "log", b"one\n")
    put(p, "r", c.id, "log", b"two\n")
    in_commit(
        p, "r", c.id, lambda s: (s.put_bytes("log", b"three\n"), s.put_bytes("log", b"four\n"))
    )
    assert read(p, "r", c.id, "log") == b"one\ntwo\nthree\nfour\n"  # readable while open
    p.finish_commit("r", c.id)
    assert read(p, "r", "master", "log") == b"one\ntwo\nthree\nfour\n"
    commit(p, "r", {"log": b"fresh\n"}, overwrite=True)
    assert read(p, "r", "master", "log") == b"fresh\n"
    assert read(p, "r", "master^", "log") == b"one\ntwo\nthree\nfour\n"
    assert p.inspect_commit("r", "master").size == 6


def test_put_into_finished_commit_is_conflict_and_changes_nothing(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c = commit(p, "r", {"a": b"1"})
    before = listing(p, "r", c.id)
    with pytest.raises(Conflict):
        put(p, "r", c.id, "b", b"2")
    with pytest.raises(Conflict):
        put(p, "r", "master", "a", b"more")
    assert listing(p, "r", c.id) == before
    assert read(p, "r", c.id, "a") == b"1"
    assert p.inspect_commit("r", c.id).size == 1


def test_commit_on_branch_with_open_head_is_conflict(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    open_commit = p.start_commit("r", "master")
    with pytest.raises(Conflict):
        p.start_commit("r", "master")
    assert [c.id for c in p.list_commits("r")] == [open_commit.id]
    assert p.inspect_commit("r", "master").id == open_commit.id


def test_session_closed_without_commit_lands_nothing(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c = p.start_commit("r")
    with p.write_session("r", c.id) as s:
        s.put_bytes("ghost", b"boo")
    assert listing(p, "r", c.id) == {}
    p.finish_commit("r", c.id)
    assert listing(p, "r", "master") == {}


# -- files and directories -----------------------------------------------------


def test_nested_dirs_and_sizes(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    commit(
        p,
        "r",
        {"a/b/c/one": b"1" * 10, "a/b/two": b"2" * 20, "a/three": b"3" * 30, "top": b"4" * 40},
    )
    assert listing(p, "r", "master") == {"/a": ("dir", 60), "/top": ("file", 40)}
    assert listing(p, "r", "master", "a") == {"/a/b": ("dir", 30), "/a/three": ("file", 30)}
    assert listing(p, "r", "master", "/a/b/") == {"/a/b/c": ("dir", 10), "/a/b/two": ("file", 20)}
    assert listing(p, "r", "master", "a/b/c") == {"/a/b/c/one": ("file", 10)}
    assert p.inspect_file("r", "master", "/").size == 100
    assert p.inspect_commit("r", "master").size == 100
    # a file path lists as itself
    assert listing(p, "r", "master", "a/three") == {"/a/three": ("file", 30)}
    with pytest.raises(NotFound):
        p.list_files("r", "master", "a/nope")
    with pytest.raises(InvalidArgument):
        p.read_file("r", "master", "a")  # a directory

    # deleting a file updates every size up the chain
    commit(p, "r", deletes=("a/b/c/one",))
    assert listing(p, "r", "master") == {"/a": ("dir", 50), "/top": ("file", 40)}
    assert listing(p, "r", "master", "a/b") == {"/a/b/c": ("dir", 0), "/a/b/two": ("file", 20)}
    assert p.inspect_commit("r", "master").size == 90
    # growing a deep file does too
    commit(p, "r", {"a/b/two": b"2" * 5})
    assert listing(p, "r", "master") == {"/a": ("dir", 55), "/top": ("file", 40)}
    assert p.inspect_file("r", "master", "a/b").size == 25
    assert p.inspect_commit("r", "master").size == 95
    # older commits keep their sizes
    assert p.inspect_file("r", "master~2", "a").size == 60


def test_mkdir_and_paths(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c = p.start_commit("r")
    in_commit(p, "r", c.id, lambda s: s.mkdir("empty/dir"))
    put(p, "r", c.id, "/lead/slash/", b"x")
    p.finish_commit("r", c.id)
    assert listing(p, "r", "master") == {"/empty": ("dir", 0), "/lead": ("dir", 1)}
    assert listing(p, "r", "master", "empty") == {"/empty/dir": ("dir", 0)}
    assert read(p, "r", "master", "lead/slash") == b"x"
    c = p.start_commit("r")
    for bad in ("a/../b", "./a", "a//b", "/", "", "a\x00b"):
        with pytest.raises(InvalidArgument):
            put(p, "r", c.id, bad, b"x")
    assert listing(p, "r", c.id) == {"/empty": ("dir", 0), "/lead": ("dir", 1)}


def test_empty_file(pfs: PFS) -> None:
    pfs.create_repo("r")
    commit(pfs, "r", {"empty": b""})
    assert read(pfs, "r", "master", "empty") == b""
    info = pfs.inspect_file("r", "master", "empty")
    assert (info.type, info.size, info.chunks) == ("file", 0, 0)
    assert pfs.fsck()["ok"]


def test_file_vs_dir_conflicts(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c = p.start_commit("r")
    put(p, "r", c.id, "a", b"file")
    with pytest.raises(Conflict):
        put(p, "r", c.id, "a/b", b"under a file")
    put(p, "r", c.id, "d/e", b"x")
    with pytest.raises(Conflict):
        put(p, "r", c.id, "d", b"over a dir")
    with pytest.raises(Conflict):
        in_commit(p, "r", c.id, lambda s: s.mkdir("a"))
    # within one session: the conflict rolls back the whole session
    with pytest.raises(Conflict):
        in_commit(
            p,
            "r",
            c.id,
            lambda s: (s.put_bytes("ok", b"1"), s.put_bytes("x", b"1"), s.put_bytes("x/y", b"2")),
        )
    assert listing(p, "r", c.id) == {"/a": ("file", 4), "/d": ("dir", 0)}
    p.finish_commit("r", c.id)
    assert listing(p, "r", "master") == {"/a": ("file", 4), "/d": ("dir", 1)}
    # and across commits
    c = p.start_commit("r")
    with pytest.raises(Conflict):
        put(p, "r", c.id, "a/b", b"x")
    with pytest.raises(Conflict):
        put(p, "r", c.id, "d", b"x")
    p.finish_commit("r", c.id)
    assert listing(p, "r", "master") == {"/a": ("file", 4), "/d": ("dir", 1)}


def test_replace_file_with_dir_and_back_in_one_commit(mem_pfs: PFS) -> None:
    """Delete a path then re-create it as the other type, in one commit: the
    tree and every size must follow (a file of 100 bytes becomes a directory
    holding 5, and back)."""
    p = mem_pfs
    p.create_repo("r")
    commit(p, "r", {"x/a": b"f" * 100, "x/keep": b"k"})
    c = commit(p, "r", {"x/a/b": b"12345"}, deletes=("x/a",))
    assert listing(p, "r", "master", "x") == {"/x/a": ("dir", 5), "/x/keep": ("file", 1)}
    assert listing(p, "r", "master") == {"/x": ("dir", 6)}
    assert c.size == 6
    c = commit(p, "r", {"x/a": b"g" * 100}, deletes=("x/a",))
    assert listing(p, "r", "master", "x") == {"/x/a": ("file", 100), "/x/keep": ("file", 1)}
    assert read(p, "r", "master", "x/a") == b"g" * 100
    assert listing(p, "r", "master") == {"/x": ("dir", 101)}
    assert c.size == 101
    diff = {d["path"]: d["status"] for d in p.diff_files("r", "master")}
    assert diff == {"/x/a": "added", "/x/a/b": "deleted"}


def test_delete_dir_removes_subtree(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    commit(p, "r", {"d/x": b"1", "d/sub/y": b"22", "d/sub/deep/z": b"333", "other": b"4444"})
    c = p.start_commit("r")
    in_commit(p, "r", c.id, lambda s: s.delete("/d"))
    assert listing(p, "r", c.id) == {"/other": ("file", 4)}
    with pytest.raises(NotFound):
        in_commit(p, "r", c.id, lambda s: s.delete("d"))
    p.finish_commit("r", c.id)
    assert listing(p, "r", "master") == {"/other": ("file", 4)}
    assert p.inspect_commit("r", "master").size == 4
    for gone in ("d", "d/x", "d/sub", "d/sub/deep/z"):
        with pytest.raises(NotFound):
            p.inspect_file("r", "master", gone)
    assert read(p, "r", "master^", "d/sub/deep/z") == b"333"
    assert {d["path"] for d in p.diff_files("r", "master")} == {"/d/x", "/d/sub/y", "/d/sub/deep/z"}


def test_list_and_glob(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    commit(
        p,
        "r",
        {
            "a": b"1",
            "bb": b"2",
            "c.txt": b"3",
            "dir/x.txt": b"4",
            "dir/y.csv": b"5",
            "dir/sub/z.txt": b"6",
        },
    )

    def glob(pattern: str) -> set[str]:
        return {f.path for f in p.glob_files("r", "master", pattern)}

    assert glob("*") == {"/a", "/bb", "/c.txt", "/dir"}
    assert glob("?") == {"/a"}
    assert glob("??") == {"/bb"}
    assert glob("*.txt") == {"/c.txt"}
    assert glob("dir/*") == {"/dir/x.txt", "/dir/y.csv", "/dir/sub"}
    assert glob("dir/*.txt") == {"/dir/x.txt"}
    assert glob("**") == {
        "/a",
        "/bb",
        "/c.txt",
        "/dir",
        "/dir/x.txt",
        "/dir/y.csv",
        "/dir/sub",
        "/dir/sub/z.txt",
    }
    assert glob("**/*.txt") == {"/c.txt", "/dir/x.txt", "/dir/sub/z.txt"}
    assert glob("dir/**") == {"/dir/x.txt", "/dir/y.csv", "/dir/sub", "/dir/sub/z.txt"}
    assert glob("nomatch*") == set()
    assert glob("/") == {"/"}
    assert [f.path for f in p.list_files("r", "master", "dir")] == [
        "/dir/sub",
        "/dir/x.txt",
        "/dir/y.csv",
    ]
    # an open commit's listing and globs include what it staged
    c = p.start_commit("r")
    put(p, "r", c.id, "dir/new.txt", b"7")
    in_commit(p, "r", c.id, lambda s: s.delete("a"))
    assert {f.path for f in p.glob_files("r", c.id, "dir/*.txt")} == {"/dir/x.txt", "/dir/new.txt"}
    assert "/a" not in {f.path for f in p.list_files("r", c.id)}


def test_diff_files(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    commit(p, "r", {"keep": b"k", "mod": b"m", "gone": b"g", "d/deep": b"d"})
    commit(
        p, "r", {"mod": b"mm", "new": b"n", "d/e/newer": b"x"}, deletes=("gone",), overwrite=True
    )
    diff = {d["path"]: d for d in p.diff_files("r", "master")}
    assert {k: v["status"] for k, v in diff.items()} == {
        "/mod": "modified",
        "/new": "added",
        "/gone": "deleted",
        "/d/e/newer": "added",
    }
    assert (diff["/mod"]["old_size"], diff["/mod"]["new_size"]) == (1, 2)
    assert (diff["/new"]["old_size"], diff["/new"]["new_size"]) == (None, 1)
    assert (diff["/gone"]["old_size"], diff["/gone"]["new_size"]) == (1, None)
    commit(p, "r", {"later": b"l"})
    # against an explicit older commit
    assert {d["path"]: d["status"] for d in p.diff_files("r", "master", "master/0")} == {
        "/mod": "modified",
        "/new": "added",
        "/gone": "deleted",
        "/d/e/newer": "added",
        "/later": "added",
    }
    assert p.diff_files("r", "master", "master") == []
    # the first commit diffs against nothing
    assert {d["status"] for d in p.diff_files("r", "master/0")} == {"added"}
    c = p.start_commit("r")
    with pytest.raises(Conflict):
        p.diff_files("r", c.id)


# -- commit graph operations ---------------------------------------------------


def test_fork_commit(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    base = commit(p, "r", {"a": b"1"})
    commit(p, "r", {"b": b"2"})
    fork = p.fork_commit("r", "master/0", "dev")
    assert (fork.branch, fork.ref, fork.parent, fork.finished) == ("dev", "dev/0", base.id, None)
    assert listing(p, "r", "dev") == {"/a": ("file", 1)}
    put(p, "r", "dev", "c", b"3")
    p.finish_commit("r", "dev")
    assert set(listing(p, "r", "dev")) == {"/a", "/c"}
    assert set(listing(p, "r", "master")) == {"/a", "/b"}
    for existing in ("dev", "master"):
        with pytest.raises(AlreadyExists):
            p.fork_commit("r", "master/0", existing)
    with pytest.raises(NotFound):
        p.fork_commit("r", "master/9", "other")
    assert {b.name for b in p.list_branches("r")} == {"master", "dev"}


def test_squash_commits(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    commit(p, "r", {"base": b"b", "old": b"o"})
    c1 = commit(p, "r", {"one": b"1", "sub/x": b"x"})
    c2 = commit(p, "r", {"two": b"22"}, deletes=("old",))
    target = p.fork_commit("r", "master/0", "squashed")
    put(p, "r", target.id, "mine", b"m")
    p.squash_commits("r", [c1.id, c2.id], target.id)
    assert set(listing(p, "r", target.id)) == {"/base", "/one", "/sub", "/two", "/mine"}
    done = p.finish_commit("r", target.id)
    assert listing(p, "r", "squashed") == {
        "/base": ("file", 1),
        "/one": ("file", 1),
        "/sub": ("dir", 1),
        "/two": ("file", 2),
        "/mine": ("file", 1),
    }
    assert done.size == 6
    assert read(p, "r", "squashed", "sub/x") == b"x"
    # into a finished commit, or from an open one: Conflict
    with pytest.raises(Conflict):
        p.squash_commits("r", [c1.id], "master")
    o = p.start_commit("r", "master")
    t = p.fork_commit("r", "master/0", "t2")
    with pytest.raises(Conflict):
        p.squash_commits("r", [o.id], t.id)


def test_archive(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    cs = [commit(p, "r", {f"f{i}": b"x"}) for i in range(3)]
    p.archive_commit("r", "master/1")
    assert [c.id for c in p.list_commits("r")] == [cs[2].id, cs[0].id]
    assert [c.id for c in p.list_commits("r", include_archived=True)] == [
        c.id for c in reversed(cs)
    ]
    assert [c.id for c in p.list_commits("r", "master")] == [cs[2].id, cs[0].id]
    assert p.inspect_commit("r", "master/1").archived
    assert read(p, "r", "master/1", "f1") == b"x"  # archived commits still read
    p.create_repo("s")
    commit(p, "s", {"a": b"1"})
    assert p.archive_all() == 3
    assert p.list_commits("r") == [] and p.list_commits("s") == []
    assert len(p.list_commits("r", include_archived=True)) == 3


def test_list_commits_order_and_limit(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    cs = [commit(p, "r", {"f": b"x"}) for _ in range(4)]
    assert [c.id for c in p.list_commits("r")] == [c.id for c in reversed(cs)]
    assert [c.id for c in p.list_commits("r", n=2)] == [cs[3].id, cs[2].id]
    assert [c.id for c in p.list_commits("r", "master", n=3)] == [cs[3].id, cs[2].id, cs[1].id]
    with pytest.raises(NotFound):
        p.list_commits("r", "nobranch")


def test_delete_commit(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c0 = commit(p, "r", {"a": b"1"})
    c1 = commit(p, "r", {"b": b"2"})
    with pytest.raises(Conflict):
        p.delete_commit("r", "master/0")  # has a child
    o = p.start_commit("r")
    put(p, "r", o.id, "c", b"3")
    p.delete_commit("r", o.id)  # an open commit: the head moves back to its parent
    assert p.inspect_commit("r", "master").id == c1.id
    with pytest.raises(NotFound):
        p.inspect_commit("r", o.id)
    assert p.q1("SELECT COUNT(*) FROM staging")[0] == 0
    p.delete_commit("r", "master")  # a finished head without children
    assert p.inspect_commit("r", "master").id == c0.id
    assert set(listing(p, "r", "master")) == {"/a"}
    # the branch can go on from there
    assert commit(p, "r", {"d": b"4"}).parent == c0.id
    with pytest.raises(NotFound):
        p.delete_commit("r", "nope")


def test_delete_all(pfs: PFS) -> None:
    pfs.create_repo("r")
    pfs.create_repo("s")
    commit(pfs, "r", {"a": b"1"})
    pfs.start_commit("s")
    pfs.delete_all()
    assert pfs.list_repos() == []
    pfs.create_repo("r")  # the name is free again
    assert pfs.list_commits("r") == []
    assert pfs.fsck()["ok"]


def test_branches(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    c0 = commit(p, "r", {"a": b"1"})
    c1 = commit(p, "r", {"b": b"2"})
    b = p.create_branch("r", "stable", "master/0")
    assert (b.name, b.head, b.head_ref) == ("stable", c0.id, "master/0")
    assert p.create_branch("r", "empty").head is None
    assert [(x.name, x.head) for x in p.list_branches("r")] == [
        ("empty", None),
        ("master", c1.id),
        ("stable", c0.id),
    ]
    assert set(listing(p, "r", "stable")) == {"/a"}
    assert p.create_branch("r", "stable", "master").head == c1.id  # moves the branch
    # a commit on a branch pointing at another branch's commit continues from it
    s = commit(p, "r", {"s": b"3"}, branch="stable")
    assert s.parent == c1.id and s.ref == "stable/0"
    p.delete_branch("r", "stable")
    assert {x.name for x in p.list_branches("r")} == {"empty", "master"}
    assert p.inspect_commit("r", s.id).id == s.id  # commits outlive the branch
    with pytest.raises(NotFound):
        p.delete_branch("r", "stable")
    with pytest.raises(NotFound):
        p.create_branch("r", "x", "nosuchcommit")
    with pytest.raises(NotFound):
        p.list_branches("nope")


# -- storage: dedup, big files, fsck, gc ---------------------------------------


def test_dedup_across_files_and_repos(pfs: PFS) -> None:
    data = random.Random(1).randbytes(5 * MiB)
    objects = Path(pfs.store.root)
    pfs.create_repo("one")
    pfs.create_repo("two")
    commit(pfs, "one", {"x": data})
    stored_once = store_bytes(objects)
    chunks_once = pfs.q1("SELECT COUNT(*) FROM chunks")[0]
    assert stored_once >= 5 * MiB and chunks_once >= 2
    commit(pfs, "one", {"copy": data})
    commit(pfs, "two", {"y": data, "z": data})
    assert pfs.q1("SELECT COUNT(*) FROM chunks")[0] == chunks_once
    assert store_bytes(objects) < stored_once + 64 * 1024  # no second copy of the bytes
    for repo, path in (("one", "x"), ("one", "copy"), ("two", "y"), ("two", "z")):
        assert read(pfs, repo, "master", path) == data
    assert pfs.fsck()["ok"]


def test_big_file_uses_out_of_line_chunk_list(pfs: PFS) -> None:
    rng = random.Random(2)
    size = 40 * MiB
    pfs.create_repo("r")
    c = pfs.start_commit("r")
    parts = []
    with pfs.write_session("r", c.id) as s:
        stream = s.put_stream("big")
        for _ in range(size // MiB):
            piece = rng.randbytes(MiB)
            parts.append(piece)
            stream.write(piece)
        s.add("big", stream.finish(), stream.size)
        s.commit()
    pfs.finish_commit("r", c.id)
    info = pfs.inspect_file("r", "master", "big")
    assert info.size == size
    assert info.chunks > entries.INLINE_REFS
    assert info.chunks >= size // (4 * CHUNK_AVG)
    raw = pfs.tree.get(pfs.resolve("r", "master")[7], names.tree_key("big"))
    e = entries.decode(raw)
    assert e.refs is None and e.list_ref is not None
    expected = b"".join(parts)
    _info, it = pfs.read_file("r", "master", "big")
    offset = 0
    for piece in it:  # chunk by chunk, in order
        assert piece == expected[offset : offset + len(piece)]
        offset += len(piece)
    assert offset == size
    # appending to it keeps all of it
    commit(pfs, "r", {"big": b"tail"})
    assert pfs.inspect_file("r", "master", "big").size == size + 4
    _info, it = pfs.read_file("r", "master", "big")
    whole = b"".join(it)
    assert whole[:size] == expected and whole[size:] == b"tail"
    assert pfs.fsck()["ok"]


def test_fsck_ok_on_healthy_store(pfs: PFS) -> None:
    pfs.create_repo("r")
    commit(pfs, "r", {"a": b"hello" * 1000, "b/c": os.urandom(300_000)})
    commit(pfs, "r", {"d": b""})
    pfs.start_commit("r")
    report = pfs.fsck()
    assert report["ok"], report["problems"]
    assert report["problems"] == [] and report["commits"] == 2 and report["chunks"] >= 2


def test_fsck_reports_corrupt_pack(pfs: PFS) -> None:
    pfs.create_repo("r")
    data = random.Random(3).randbytes(2 * MiB)
    commit(pfs, "r", {"a": data})
    [pack] = pack_files(pfs)
    with open(pack, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    report = pfs.fsck()
    assert not report["ok"]
    assert any(pack.name in problem for problem in report["problems"]), report["problems"]


def test_fsck_reports_missing_pack(pfs: PFS) -> None:
    pfs.create_repo("r")
    commit(pfs, "r", {"a": b"x" * 100_000})
    commit(pfs, "r", {"b": b"y" * 100_000})
    packs = pack_files(pfs)
    assert len(packs) == 2
    packs[0].unlink()
    report = pfs.fsck()
    assert not report["ok"]
    assert any("missing" in problem and packs[0].name in problem for problem in report["problems"])


def test_gc_after_delete_repo(pfs: PFS) -> None:
    rng = random.Random(4)
    keep_data, doomed_data, shared = rng.randbytes(MiB), rng.randbytes(3 * MiB), rng.randbytes(MiB)
    pfs.create_repo("keep")
    pfs.create_repo("doomed")
    commit(pfs, "keep", {"k": keep_data, "shared": shared})
    commit(pfs, "doomed", {"d": doomed_data, "shared": shared})
    commit(pfs, "doomed", {"d2": rng.randbytes(MiB)})
    objects = Path(pfs.store.root)
    before = store_bytes(objects)
    pfs.delete_repo("doomed")
    report = pfs.gc()
    assert report["packs_deleted"] >= 1 and report["bytes_freed"] >= 3 * MiB
    assert store_bytes(objects) <= before - 3 * MiB
    assert read(pfs, "keep", "master", "k") == keep_data
    assert read(pfs, "keep", "master", "shared") == shared
    fsck = pfs.fsck()
    assert fsck["ok"], fsck["problems"]
    assert pfs.gc()["packs_deleted"] == 0  # nothing more to free
    assert pfs.fsck()["ok"]


def test_gc_keeps_open_commits_staged_files(pfs: PFS) -> None:
    rng = random.Random(5)
    staged, big = rng.randbytes(2 * MiB), rng.randbytes(40 * MiB)
    pfs.create_repo("r")
    pfs.create_repo("junk")
    commit(pfs, "junk", {"j": rng.randbytes(MiB)})
    c = pfs.start_commit("r")
    put(pfs, "r", c.id, "staged", staged)
    in_commit(
        pfs, "r", c.id, lambda s: s.add("big", s.sink.add_bytes(big), len(big))
    )  # out-of-line list
    pfs.delete_repo("junk")
    report = pfs.gc()
    assert report["packs_deleted"] >= 1  # junk went
    assert read(pfs, "r", c.id, "staged") == staged
    assert pfs.fsck()["ok"]
    pfs.finish_commit("r", c.id)
    assert read(pfs, "r", "master", "staged") == staged
    assert read(pfs, "r", "master", "big") == big
    assert pfs.fsck()["ok"]


def test_gc_after_delete_commit_and_interrupted_session(pfs: PFS) -> None:
    rng = random.Random(6)
    pfs.create_repo("r")
    commit(pfs, "r", {"a": b"keep me"})
    c = pfs.start_commit("r")
    put(pfs, "r", c.id, "dropped", rng.randbytes(MiB))
    packs = set(pack_files(pfs))
    with pfs.write_session("r", c.id) as s:  # never committed: its pack is deleted at close
        s.put_bytes("abandoned", rng.randbytes(MiB))
        s.sink.close()
        assert len(set(pack_files(pfs)) - packs) == 1
    assert set(pack_files(pfs)) == packs
    pfs.delete_commit("r", c.id)
    report = pfs.gc()
    assert report["packs_deleted"] == 1  # the deleted commit's
    assert pack_files(pfs) and read(pfs, "r", "master", "a") == b"keep me"
    assert pfs.fsck()["ok"]


def test_reopen_store(tmp_path: Path) -> None:
    home = tmp_path / "reopen"
    p = PFS(str(home))
    p.create_repo("r")
    commit(p, "r", {"a": b"persisted"})
    o = p.start_commit("r")
    put(p, "r", o.id, "staged", b"s")
    p.close()
    p = PFS(str(home))
    try:
        assert read(p, "r", "master^", "a") == b"persisted"
        assert p.inspect_commit("r", "master").finished is None
        assert read(p, "r", o.id, "staged") == b"s"
        p.finish_commit("r", o.id)
        assert p.fsck()["ok"]
    finally:
        p.close()


# -- performance contracts -----------------------------------------------------


@pytest.mark.slow
def test_finish_is_fast_on_a_big_tree(pfs: PFS) -> None:
    """Finishing a one-file commit costs O(changes), not O(tree): < 50 ms with
    200,000 files already in the tree; its diff reads only what changed."""
    n = 200_000
    pfs.create_repo("big")
    c = pfs.start_commit("big")
    with pfs.write_session("big", c.id) as s:
        for i in range(n):
            s.put_bytes(f"d{i % 100:02d}/f{i:06d}", b"x")
        s.commit()
    pfs.finish_commit("big", c.id)
    assert pfs.tree.count(pfs.resolve("big", "master")[7]) == n + 100

    times = []
    for k in range(5):
        c = pfs.start_commit("big")
        put(pfs, "big", c.id, f"d{k * 7:02d}/new{k}", b"hello")
        t0 = time.perf_counter()
        pfs.finish_commit("big", c.id)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.050, times

    diff = pfs.diff_files("big", "master")
    assert diff == [{"path": "/d28/new4", "status": "added", "old_size": None, "new_size": 5}]
    assert pfs.inspect_file("big", "master", "d28").size == n // 100 + 5
    assert pfs.inspect_commit("big", "master").size == n + 25


def test_gc_rewrites_mostly_dead_packs(pfs: PFS) -> None:
    """A pack whose chunks are mostly garbage is rewritten with just the live ones."""
    rng = random.Random(7)
    dead, live = rng.randbytes(3 * MiB), rng.randbytes(MiB)
    pfs.create_repo("tmp")
    pfs.create_repo("keep")
    commit(pfs, "tmp", {"dead": dead, "live": live})  # one pack holds both
    commit(pfs, "keep", {"live": live})  # dedup: keep's file lives in tmp's pack
    assert len(pack_files(pfs)) == 1
    pfs.delete_repo("tmp")
    report = pfs.gc()
    assert report["packs_rewritten"] == 1 and report["packs_deleted"] == 1
    assert report["bytes_freed"] >= 3 * MiB - 64 * 1024
    assert len(pack_files(pfs)) == 1
    assert store_bytes(Path(pfs.store.root)) < 2 * MiB
    assert read(pfs, "keep", "master", "live") == live
    assert pfs.fsck()["ok"]


def test_squash_a_commit_that_swapped_file_and_dir(mem_pfs: PFS) -> None:
    p = mem_pfs
    p.create_repo("r")
    commit(p, "r", {"a/b": b"12345"})
    to_file = commit(p, "r", {"a": b"now a file"}, deletes=("a",))
    to_dir = commit(p, "r", {"a/b/c": b"dir again"}, deletes=("a",))
    t = p.fork_commit("r", "master/0", "t")
    p.squash_commits("r", [to_file.id], t.id)
    assert p.finish_commit("r", t.id).size == 10
    assert listing(p, "r", "t") == {"/a": ("file", 10)}
    assert read(p, "r", "t", "a") == b"now a file"
    t2 = p.fork_commit("r", "master/1", "t2")
    p.squash_commits("r", [to_dir.id], t2.id)
    assert p.finish_commit("r", t2.id).size == 9
    assert listing(p, "r", "t2") == {"/a": ("dir", 9)}
    assert read(p, "r", "t2", "a/b/c") == b"dir again"
    # both in one squash, onto the original tree
    t3 = p.fork_commit("r", "master/0", "t3")
    p.squash_commits("r", [to_file.id, to_dir.id], t3.id)
    p.finish_commit("r", t3.id)
    assert listing(p, "r", "t3", "a/b") == {"/a/b/c": ("file", 9)}


def test_move_and_touch_in_an_open_commit(pfs) -> None:
    """rename(2) semantics for the mount's write path: files, whole directories,
    refusals that name the POSIX error, and mtimes set by touch."""
    import errno as e

    pfs.create_repo("mv")
    c = pfs.start_commit("mv")
    with pfs.write_session("mv", c.id) as s:
        s.put_bytes("d/a.txt", b"aaa")
        s.put_bytes("d/sub/b.txt", b"bb")
        s.put_bytes("f.txt", b"f")
        s.mkdir("empty")
        s.commit()
    pfs.finish_commit("mv", c.id)
    c = pfs.start_commit("mv")
    with pfs.write_session("mv", c.id) as s:
        s.move("d", "e/d2")
        s.move("f.txt", "g.txt")
        s.touch("g.txt", 123_000_000_000)
        s.commit()
    for src, dst, code in (("g.txt", "e", e.EISDIR), ("e", "g.txt", e.ENOTDIR), ("e", "e/x", e.EINVAL)):
        with pytest.raises(OSError) as info, pfs.write_session("mv", c.id) as s:
            s.move(src, dst)
            s.commit()
        assert info.value.errno == code
    info = pfs.finish_commit("mv", c.id)
    files = {f.path: f.size for f in pfs.glob_files("mv", "master", "**")}
    assert files == {"/e": 5, "/e/d2": 5, "/e/d2/a.txt": 3, "/e/d2/sub": 2, "/e/d2/sub/b.txt": 2, "/empty": 0, "/g.txt": 1}
    assert info.size == 6
    assert pfs.inspect_file("mv", "master", "g.txt").mtime == 123.0
    assert b"".join(pfs.read_file("mv", "master", "e/d2/sub/b.txt")[1]) == b"bb"


def test_replay_commits_onto_another_branch(pfs) -> None:
    """replay-commit: each source commit's changes become a new commit on the
    target branch, in order, on top of what that branch already has."""
    pfs.create_repo("rp")
    for name, data in (("a", b"1"), ("b", b"2")):
        commit(pfs, "rp", {name: data})
    commit(pfs, "rp", {"base": b"x"}, branch="dev")
    made = pfs.replay_commits("rp", ["master/0", "master/1"], "dev")
    assert [m.ref for m in made] == ["dev/1", "dev/2"]
    assert sorted(f.path for f in pfs.list_files("rp", "dev")) == ["/a", "/b", "/base"]
    assert sorted(f.path for f in pfs.list_files("rp", "dev/1")) == ["/a", "/base"]
    assert [d["path"] for d in pfs.diff_files("rp", "dev/2")] == ["/b"]
    with pytest.raises(NotFound):
        pfs.replay_commits("rp", ["master/0", "nope"], "dev")
    assert pfs.inspect_commit("rp", "dev").ref == "dev/2"  # nothing made when a ref is bad
