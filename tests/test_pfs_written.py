"""What a commit wrote (``CommitInfo.written``, list-commit's SIZE): the rules
of pfsfuse/written.py on the engine, and the migration of a store made
before it was recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pfsfuse import entries
from pfsfuse.chunks import CHUNK_AVG
from pfsfuse.pfs import PFS
from tests.test_pfs_engine import commit, in_commit


def written(p: PFS, repo: str) -> list[int]:
    """Each commit's written bytes, oldest first."""
    return [c.written for c in reversed(p.list_commits(repo))]


def test_go_client_walkthrough_each_commit_counts_its_own_file(tmp_path: Path) -> None:
    p = PFS(str(tmp_path / "home"))
    p.create_repo("projects")
    for idx, project in enumerate(["docker/docker", "kubernetes/kubernetes", "hashicorp/consul"]):
        commit(p, "projects", {str(idx): project.encode()})
    assert written(p, "projects") == [13, 21, 16]
    assert [c.size for c in reversed(p.list_commits("projects"))] == [13, 34, 50]  # the tree's total
    assert p.inspect_repo("projects").size == 50
    p.close()


def test_appends_overwrites_deletes_renames_touches(tmp_path: Path) -> None:
    p = PFS(str(tmp_path / "home"))
    p.create_repo("r")
    commit(p, "r", {"a": b"x" * 13, "dir/b": b"y" * 5})  # 18: two new files
    commit(p, "r", {"a": b"z" * 8})  # 8: an append counts the appended bytes
    commit(p, "r", {"a": b"w" * 4}, overwrite=True)  # 4: an overwrite counts the new file
    commit(p, "r", deletes=("dir",))  # 0: deletes write nothing
    c = p.start_commit("r", "master")
    in_commit(p, "r", c.id, lambda s: s.move("a", "moved/a"))
    p.finish_commit("r", c.id)  # 0: a rename moves content, writes none
    c = p.start_commit("r", "master")
    in_commit(p, "r", c.id, lambda s: s.touch("moved/a", 12345))
    p.finish_commit("r", c.id)  # 0: a touch changes no byte
    commit(p, "r", {"moved/a": b"w" * 4}, overwrite=True)  # 0: the same bytes again
    open_commit = p.start_commit("r", "master")
    in_commit(p, "r", open_commit.id, lambda s: s.put_bytes("later", b"q" * 100))
    assert written(p, "r") == [18, 8, 4, 0, 0, 0, 0, 0]  # an open commit: 0 until it finishes
    assert p.finish_commit("r", open_commit.id).written == 100
    assert p.inspect_repo("r").size == 104
    p.close()


def test_an_append_to_a_big_file_counts_only_the_new_chunks(tmp_path: Path) -> None:
    """A file of more than entries.INLINE_REFS chunks keeps its chunk list
    behind list_ref; an append still shares every old chunk."""
    p = PFS(str(tmp_path / "home"))
    p.create_repo("big")
    n = entries.INLINE_REFS + 4
    body = b"".join(i.to_bytes(4, "big") * (CHUNK_AVG // 4) for i in range(n))
    first = commit(p, "big", {"f": body})
    assert first.written == len(body)
    assert commit(p, "big", {"f": b"tail" * 2}).written == 8
    p.close()


def test_an_old_store_gets_written_on_open(tmp_path: Path) -> None:
    """A store from schema 1 (no commits.written) is migrated when opened:
    the column is added and every finished commit's value comes from the
    diff of its tree against its parent's; open commits stay 0."""
    home = tmp_path / "home"
    p = PFS(str(home))
    p.create_repo("projects")
    for idx, project in enumerate(["docker/docker", "kubernetes/kubernetes", "hashicorp/consul"]):
        commit(p, "projects", {str(idx): project.encode()})
    commit(p, "projects", {"0": b"+more"})  # an append
    c = p.start_commit("projects", "master")
    in_commit(p, "projects", c.id, lambda s: s.move("1", "renamed"))
    p.finish_commit("projects", c.id)
    open_commit = p.start_commit("projects", "master")
    in_commit(p, "projects", open_commit.id, lambda s: s.put_bytes("pending", b"p" * 7))
    p.close()

    # Make it what pachy wrote before schema 2.
    db = sqlite3.connect(home / "meta.sqlite")
    db.execute("ALTER TABLE commits DROP COLUMN written")
    db.execute("UPDATE meta SET value='1' WHERE key='schema'")
    db.commit()
    db.close()

    p = PFS(str(home))
    assert written(p, "projects") == [13, 21, 16, 5, 0, 0]
    assert p.q1("SELECT value FROM meta WHERE key='schema'") == ("2",)
    assert p.q1("SELECT 1 FROM meta WHERE key='written_backfill'") is None
    assert p.finish_commit("projects", open_commit.id).written == 7
    p.close()
    p = PFS(str(home))  # opening again changes nothing
    assert written(p, "projects") == [13, 21, 16, 5, 0, 7]
    p.close()


def test_a_store_newer_than_this_pachy_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    PFS(str(home)).close()
    db = sqlite3.connect(home / "meta.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    try:
        PFS(str(home))
    except RuntimeError as exc:
        assert "upgrade pachy" in str(exc)
    else:
        raise AssertionError("a newer schema was opened")


def test_last_commit_that_modified_each_file(tmp_path: Path) -> None:
    """list-file's LAST_COMMIT_MODIFIED: found by the entries themselves, even
    where the entry's time is older than its commit (a replayed commit keeps
    its source's entries) or the listed commit is still open."""
    p = PFS(str(tmp_path / "home"))
    p.create_repo("r")
    commit(p, "r", {"a": b"1", "d/b": b"2"})  # master/0
    commit(p, "r", {"c": b"3"})  # master/1
    commit(p, "r", {"d/b": b"more"})  # master/2: an append under d
    commit(p, "r", deletes=("c",))  # master/3
    assert {f.path: f.last_commit for f in p.list_files("r", "master")} == {
        "/a": "master/0", "/d": "master/2"}
    assert [f.last_commit for f in p.list_files("r", "master", "d")] == ["master/2"]
    assert p.inspect_file("r", "master/1", "a").last_commit == "master/0"
    assert {f.path: f.last_commit for f in p.glob_files("r", "master", "**")} == {
        "/a": "master/0", "/d": "master/2", "/d/b": "master/2"}

    p.create_branch("r", "side", "master/0")
    p.replay_commits("r", ["master/1"], "side")  # side/0: master/1's entry for c, with its old time
    assert {f.path: f.last_commit for f in p.list_files("r", "side")}["/c"] == "side/0"

    c = p.start_commit("r", "master")
    in_commit(p, "r", c.id, lambda s: s.put_bytes("new", b"n"))
    assert {f.path: f.last_commit for f in p.list_files("r", "master")}["/new"] == "master/4"
    p.close()
