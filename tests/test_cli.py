"""End-to-end tests of the `pachctl` CLI: the real command as a subprocess.

One daemon (autostarted by the first `pachctl` call for a private PACHY_HOME)
is shared by the whole module; each test uses its own repo names. Covered:
the 1.x tutorial (3.1.2-3.1.3) and PFS I/O (19.6) sessions from the seed docs,
the 2.x ``repo@branch:/path`` forms, put-file sources (stdin, -f, -r, -i, URLs),
exit codes and error messages, --json output, and the commit/file operations.
"""

from __future__ import annotations

import functools
import http.server
import os
import shlex
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clihelp import PACHCTL, Result, make_env, run, run_many, stop_daemon

SET1 = b"orange\t4\nbanana\t2\nbanana\t9\norange\t9\napple\t3\n"  # 44 bytes
SET2 = b"apple\t5\nbanana\t7\n"


class Pach:
    """pachctl bound to one PACHY_HOME, plus a scratch directory for local files."""

    def __init__(self, root: Path, name: str = "home"):
        self.home = root / name
        self.env = make_env(self.home, root / "config")
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str, input: bytes | None = None, rc: int | None = 0) -> Result:
        return run(self.env, *args, input=input, rc=rc)

    def many(self, *argvs: tuple[str, ...], rc: int | None = 0) -> list[Result]:
        return run_many(self.env, *argvs, rc=rc)

    def write(self, name: str, data: bytes) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def commits(self, repo: str, *extra: str) -> list[dict]:
        return self("list-commit", repo, *extra, "--json").json()

    def stop(self) -> None:
        stop_daemon(self.env, self.home)


@pytest.fixture(scope="module")
def pach(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pach]:
    p = Pach(tmp_path_factory.mktemp("cli"))
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def http_root(pach: Pach) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1 (a free port), for put-file -f URL."""
    root = pach.work / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _row(lines: list[str], first: str) -> list[str]:
    rows = [line.split() for line in lines[1:] if line.split()[:1] == [first]]
    assert len(rows) == 1, lines
    return rows[0]


# -- the seed docs' sessions -----------------------------------------------------


def test_tutorial_create_repo_and_add_data(pach: Pach) -> None:
    set1 = pach.write("tutorial/set1.txt", SET1)
    set2 = pach.write("tutorial/set2.txt", SET2)
    pach("create-repo", "data")
    pach("put-file", "data", "master", "sales", "-c", "-f", str(set1))

    repos, commits, sales = pach.many(("list-repo",), ("list-commit", "data"), ("get-file", "data", "master", "sales"))
    assert repos.lines[0].split() == ["NAME", "CREATED", "SIZE"]
    assert _row(repos.lines, "data")[-2:] == ["44", "B"]
    out = commits.lines
    assert out[0].split() == ["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"]
    assert len(out) == 2
    assert out[1].split()[:3] == ["master", "data/master/0", "<none>"]
    assert out[1].split()[-2:] == ["44", "B"]
    assert sales.out == SET1

    # A second put-file -c appends to the file in a new commit.
    pach("put-file", "data", "master", "sales", "-c", "-f", str(set2))
    head, first, commits = pach.many(
        ("get-file", "data", "master", "sales"),
        ("get-file", "data", "master/0", "sales"),
        ("list-commit", "data"),
    )
    assert head.out == SET1 + SET2
    assert first.out == SET1
    out = commits.lines
    assert len(out) == 3
    assert out[2].split()[:3] == ["master", "data/master/1", "master/0"]
    # SIZE is what each commit wrote (the seed: data/master/1 shows set2's
    # bytes, not the file's total); list-repo keeps the repo's total.
    assert out[2].split()[-2:] == [str(len(SET2)), "B"]
    assert _row(pach("list-repo").lines, "data")[-2:] == [str(len(SET1 + SET2)), "B"]


def test_go_client_walkthrough_commit_sizes_and_file_table(pach: Pach) -> None:
    """The Go-client blog's feed.go: one commit per project, each writing its
    own file; list-commit's SIZE is each commit's file (13, 21, 16 B), as the
    seed prints it, list-repo's the total; list-file names the commit that
    last modified each file."""
    pach("create-repo", "projects")
    for idx, project in enumerate(["docker/docker", "kubernetes/kubernetes", "hashicorp/consul"]):
        ref = pach("start-commit", "projects", "master").text.strip()
        pach("put-file", "projects", ref, str(idx), input=project.encode())
        pach("finish-commit", "projects", ref)
    commits, repos, inspect = pach.many(
        ("list-commit", "projects"), ("list-repo",), ("inspect-commit", "projects", "master/1")
    )
    rows = [line.split() for line in commits.lines]
    assert rows[0] == ["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"]
    assert [r[:3] + r[-2:] for r in rows[1:]] == [
        ["master", "projects/master/0", "<none>", "13", "B"],
        ["master", "projects/master/1", "master/0", "21", "B"],
        ["master", "projects/master/2", "master/1", "16", "B"],
    ]
    # The columns line up under their headers, as in the seed.
    for line in commits.lines[1:]:
        assert line.index("projects/") == commits.lines[0].index("REPO/ID")
        assert line.rstrip().endswith(" B") and line.index(" B") - 2 <= commits.lines[0].index("SIZE") + 2
    assert _row(repos.lines, "projects")[-2:] == ["50", "B"]
    assert "Size: 21 B" in inspect.lines and "Total size: 34 B" in inspect.lines

    pach("put-file", "projects", "master", "0", "-c", input=b"+more")  # an append: 5 B written
    commits, files, one = pach.many(
        ("list-commit", "projects"), ("list-file", "projects", "master"), ("inspect-file", "projects", "master", "1")
    )
    assert commits.lines[-1].split()[-2:] == ["5", "B"]
    rows = [line.split() for line in files.lines]
    assert rows[0] == ["NAME", "TYPE", "MODIFIED", "LAST_COMMIT_MODIFIED", "SIZE"]
    assert [[r[0], r[1], r[-3], r[-2], r[-1]] for r in rows[1:]] == [
        ["/0", "file", "master/3", "18", "B"],
        ["/1", "file", "master/1", "21", "B"],
        ["/2", "file", "master/2", "16", "B"],
    ]
    assert " ".join(rows[1][2:-3]).endswith(" ago")
    assert "Last commit modified: master/1" in one.lines


def test_seed_pfs_io_writing_and_reading(pach: Pach) -> None:
    pach("create-repo", "foo")
    assert pach("start-commit", "foo", "master").text == "master/0\n"
    pach("put-file", "foo", "master/0", "test.txt", input=b"hai\n")
    pach("finish-commit", "foo", "master/0")
    assert pach("start-commit", "foo", "master").text == "master/1\n"
    pach("put-file", "foo", "master/1", "test.txt", input=b"bai\n")
    pach("finish-commit", "foo", "master/1")
    assert pach("get-file", "foo", "master/1", "test.txt").out == b"hai\nbai\n"

    # Writing requires an open commit: a finished one is read-only (exit 4, with a hint).
    res = pach("put-file", "foo", "master/0", "x", input=b"x\n", rc=4)
    assert res.err.startswith("error: ")
    assert "finished" in res.err and "start-commit" in res.err


# -- the 2.x command forms ---------------------------------------------------------


def test_2x_forms(pach: Pach) -> None:
    pach("create", "repo", "two")
    # Putting into a branch whose head is finished (or absent) makes a commit.
    pach("put", "file", "two@master:/a.txt", input=b"hello\n")
    pach("put", "file", "two@master:/a.txt", input=b"more\n")
    pach("create", "branch", "two@dev", "--head", "master")

    repos, content, files, commits, inspected, branches = pach.many(
        ("list", "repo"),
        ("get", "file", "two@dev:/a.txt"),
        ("list", "file", "two@master"),
        ("list", "commit", "two@master"),
        ("inspect", "commit", "two@master"),
        ("list", "branch", "two"),
    )
    assert repos.lines[0].split() == ["NAME", "CREATED", "SIZE"]
    assert _row(repos.lines, "two")[-2:] == ["11", "B"]
    assert content.out == b"hello\nmore\n"
    assert files.lines[0].split() == ["NAME", "TYPE", "MODIFIED", "LAST_COMMIT_MODIFIED", "SIZE"]
    row = files.lines[1].split()
    assert row[:2] == ["/a.txt", "file"] and row[-3:] == ["master/1", "11", "B"]
    rows = [line.split() for line in commits.lines[1:]]
    assert [r[1:3] for r in rows] == [["two/master/0", "<none>"], ["two/master/1", "master/0"]]
    assert "Commit: two/master/1" in inspected.text
    assert "Parent: master/0" in inspected.text
    assert "Finished: (open)" not in inspected.text  # the auto-commit was finished
    assert branches.lines[0].split() == ["BRANCH", "HEAD"]
    assert _row(branches.lines, "dev") == ["dev", "master/1"]
    assert _row(branches.lines, "master") == ["master", "master/1"]


# -- put-file ----------------------------------------------------------------------------


def test_put_file_appends_by_default_and_overwrite_replaces(pach: Pach) -> None:
    pach("create-repo", "ow")
    pach("put-file", "ow", "master", "f", "-c", input=b"one\n")
    pach("put-file", "ow", "master", "f", "-c", input=b"two\n")
    pach("put-file", "ow", "master", "f", "-c", "-o", input=b"three\n")
    appended, replaced = pach.many(("get-file", "ow", "master/1", "f"), ("get-file", "ow", "master", "f"))
    assert appended.out == b"one\ntwo\n"
    assert replaced.out == b"three\n"


def test_put_file_recursive_list_and_glob(pach: Pach) -> None:
    tree = pach.work / "tree"
    for i in range(100):
        pach.write(f"tree/a/f{i:03}.txt", f"f{i}\n".encode())
        pach.write(f"tree/a/b/g{i:03}.dat", f"g{i}\n".encode())
        pach.write(f"tree/c/h{i:03}.txt", f"h{i}\n".encode())
    pach.write("tree/top.txt", b"top\n")

    pach("create-repo", "rec")
    pach("put-file", "rec", "master", "imported", "-c", "-r", "-f", str(tree))
    top, sub, content, txt, some, everything = pach.many(
        ("list-file", "rec", "master", "imported"),
        ("list-file", "rec", "master", "imported/a/b", "--json"),
        ("get-file", "rec", "master", "imported/a/b/g042.dat"),
        ("glob-file", "rec", "master", "imported/a/*.txt", "--json"),
        ("glob-file", "rec", "master", "imported/c/h00*.txt"),
        ("glob-file", "rec", "master", "**", "--json"),
    )
    assert [line.split()[:2] for line in top.lines[1:]] == [
        ["/imported/a", "dir"],
        ["/imported/c", "dir"],
        ["/imported/top.txt", "file"],
    ]
    files = sub.json()
    assert sorted(f["path"] for f in files) == [f"/imported/a/b/g{i:03}.dat" for i in range(100)]
    assert all(f["type"] == "file" for f in files)
    assert content.out == b"g42\n"
    assert sorted(f["path"] for f in txt.json()) == [f"/imported/a/f{i:03}.txt" for i in range(100)]
    assert some.lines[0].split() == ["NAME", "TYPE", "MODIFIED", "LAST_COMMIT_MODIFIED", "SIZE"]
    assert len(some.lines) == 1 + 10
    found = everything.json()
    assert len([f for f in found if f["type"] == "file"]) == 301
    assert {"/imported", "/imported/a", "/imported/a/b", "/imported/c"} <= {f["path"] for f in found}


def test_put_file_input_lists(pach: Pach) -> None:
    pach.write("lists/one.txt", b"one\n")
    pach.write("lists/sub/two.txt", b"two\n")
    listing = pach.write("lists/list.txt", b"one.txt\nsub/two.txt\n\n")
    pach("create-repo", "inp")

    # Paths in the list are relative to the current directory, and land as such.
    proc = subprocess.run(
        [*PACHCTL, "put-file", "inp", "master", "-c", "-i", str(listing)],
        env=pach.env, cwd=listing.parent, capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    assert b"Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr

    # -i - reads the list from stdin; with a PATH the files land under it.
    names = f"{pach.work / 'lists/one.txt'}\n{pach.work / 'lists/sub/two.txt'}\n".encode()
    pach("put-file", "inp", "master", "fromstdin", "-c", "-i", "-", input=names)
    root, under, two = pach.many(
        ("list-file", "inp", "master"),
        ("list-file", "inp", "master", "fromstdin"),
        ("get-file", "inp", "master", "sub/two.txt"),
    )
    assert [line.split()[:2] for line in root.lines[1:]] == [
        ["/fromstdin", "dir"],
        ["/one.txt", "file"],
        ["/sub", "dir"],
    ]
    assert [line.split()[0] for line in under.lines[1:]] == ["/fromstdin/one.txt", "/fromstdin/two.txt"]
    assert two.out == b"two\n"


def test_put_file_from_url(pach: Pach, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    (root / "set1.txt").write_bytes(SET1)
    pach("create-repo", "web")
    pach("put-file", "web", "master", "sales", "-c", "-f", f"{base}/set1.txt")
    # An HTTP error is a source error too; nothing lands.
    res = pach("put-file", "web", "master", "missing", "-c", "-f", f"{base}/nope.txt", rc=6)
    assert res.err.startswith("error: ") and "404" in res.err

    content, commits = pach.many(("get-file", "web", "master", "sales"), ("list-commit", "web", "--json"))
    assert content.out == SET1
    assert [c["ref"] for c in commits.json()] == ["master/0"]


def test_put_file_unreachable_url_or_missing_file_lands_nothing(pach: Pach) -> None:
    pach("create-repo", "bad")
    pach("put-file", "bad", "master", "keep", "-c", input=b"keep\n")

    url, missing = pach.many(
        ("put-file", "bad", "master", "x", "-c", "-f", "http://127.0.0.1:1/x"),
        ("put-file", "bad", "master", "y", "-c", "-f", str(pach.work / "no-such-file.txt")),
        rc=6,
    )
    assert url.err.startswith("error: ") and "127.0.0.1:1" in url.err
    assert missing.err.startswith("error: ") and "no-such-file.txt" in missing.err
    assert [c["ref"] for c in pach.commits("bad")] == ["master/0"]

    # Into an open commit: a failed put (even of many files) leaves it as it was.
    assert pach("start-commit", "bad", "master").text == "master/1\n"
    good = pach.write("bad/good.txt", b"good\n")
    pach("put-file", "bad", "master/1", "many", "-i", "-", input=f"{good}\nhttp://127.0.0.1:1/x\n".encode(), rc=6)
    out = pach("list-file", "bad", "master/1").lines
    assert [line.split()[0] for line in out[1:]] == ["/keep"]


# -- get-file ----------------------------------------------------------------------------


def test_get_file_output_and_missing(pach: Pach) -> None:
    pach("create-repo", "getf")
    pach("put-file", "getf", "master", "dir/data.txt", "-c", input=SET1)
    dest = pach.work / "got.txt"
    missing_dest = pach.work / "never.txt"
    written, missing, no_commit = pach.many(
        ("get-file", "getf", "master", "dir/data.txt", "-o", str(dest)),
        ("get-file", "getf", "master", "nope.txt", "-o", str(missing_dest)),
        ("get-file", "getf", "master/7", "dir/data.txt"),
        rc=None,
    )
    assert written.rc == 0 and written.out == b""
    assert dest.read_bytes() == SET1
    assert missing.rc == 3
    assert missing.err.startswith("error: ") and "nope.txt" in missing.err
    assert list(pach.work.glob("never.txt*")) == []
    assert no_commit.rc == 3 and no_commit.err.startswith("error: ")


def test_get_file_into_closed_pipe(pach: Pach) -> None:
    big = pach.write("big.bin", os.urandom(4 << 20) + b"tail")
    pach("create-repo", "pipe")
    pach("put-file", "pipe", "master", "big.bin", "-c", "-f", str(big))
    cmd = "set -o pipefail; " + shlex.join([*PACHCTL, "get-file", "pipe", "master", "big.bin"]) + " | head -c 10"
    proc = subprocess.run(["bash", "-c", cmd], env=pach.env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.stdout == big.read_bytes()[:10]
    assert b"Traceback" not in proc.stderr
    assert b"BrokenPipe" not in proc.stderr
    assert proc.returncode == 0, proc.stderr


# -- errors and exit codes -----------------------------------------------------------


def test_exit_codes(pach: Pach) -> None:
    pach("create-repo", "dup")
    bad_name, missing, exists, dotdot, unknown = pach.many(
        ("create-repo", "bad name!"),
        ("list-commit", "no-such-repo"),
        ("create-repo", "dup"),
        ("put-file", "dup", "master", "a/../../x", "-c", "-f", str(pach.write("dotdot.txt", b"x\n"))),
        ("frobnicate",),
        rc=None,
    )
    assert bad_name.rc == 2
    assert bad_name.err.startswith("error: ") and "invalid repo name" in bad_name.err
    assert missing.rc == 3
    assert missing.err.startswith("error: ") and "no-such-repo" in missing.err
    assert exists.rc == 4
    assert exists.err.startswith("error: ") and "exists" in exists.err
    assert dotdot.rc == 2
    assert dotdot.err.startswith("error: ") and ".." in dotdot.err
    assert unknown.rc == 2 and "invalid choice" in unknown.err
    assert pach.commits("dup") == []  # the failed put -c left no commit


# -- --json ------------------------------------------------------------------------------


def test_json_outputs(pach: Pach) -> None:
    pach("create-repo", "js")
    pach("put-file", "js", "master", "a.txt", "-c", input=b"abc\n")
    repos, commits, info, files, branches, version, report = (
        r.json()
        for r in pach.many(
            ("list-repo", "--json"),
            ("list-commit", "js", "--json"),
            ("inspect-commit", "js", "master/0", "--json"),
            ("list-file", "js", "master", "--json"),
            ("list-branch", "js", "--json"),
            ("version", "--json"),
            ("fsck", "--json"),
        )
    )
    js = next(r for r in repos if r["name"] == "js")
    assert js["size"] == 4
    assert [(c["ref"], c["parent_ref"]) for c in commits] == [("master/0", None)]
    assert info["id"] == commits[0]["id"] and info["finished"] is not None
    assert [(f["path"], f["type"], f["size"]) for f in files] == [("/a.txt", "file", 4)]
    assert [(b["name"], b["head_ref"]) for b in branches] == [("master", "master/0")]
    assert version["pachctl"] and version["pachd"] == version["pachctl"]
    assert report["ok"] is True and report["problems"] == []


# -- commits, files, repos -----------------------------------------------------------


def test_delete_file_and_diff(pach: Pach) -> None:
    pach("create-repo", "dif")
    pach("put-file", "dif", "master", "a.txt", "-c", input=b"one\ntwo\n")
    pach("put-file", "dif", "master", "b.txt", "-c", input=b"bee\n")
    assert pach("start-commit", "dif", "master").text == "master/2\n"
    pach("put-file", "dif", "master/2", "a.txt", input=b"three\n")
    pach("delete-file", "dif", "master/2", "b.txt")
    pach("put-file", "dif", "master/2", "c.txt", input=b"new\n")
    pach("finish-commit", "dif", "master/2")
    # The 2.x form of delete-file on a branch makes a commit of its own.
    pach("delete", "file", "dif@master:/a.txt")

    gone, diff, patch, diff3 = pach.many(
        ("get-file", "dif", "master/2", "b.txt"),
        ("diff-file", "dif", "master/2"),
        ("diff-file", "dif", "master/2", "a.txt", "-p"),
        ("diff-file", "dif", "master/3"),
        rc=None,
    )
    assert gone.rc == 3
    assert diff.rc == 0 and sorted(diff.lines) == ["A  /c.txt", "D  /b.txt", "M  /a.txt"]
    assert patch.rc == 0
    assert "--- a/a.txt\n+++ b/a.txt\n" in patch.text
    assert " one\n two\n+three\n" in patch.text
    assert "c.txt" not in patch.text
    assert diff3.rc == 0 and diff3.lines == ["D  /a.txt"]


def test_commit_operations(pach: Pach) -> None:
    pach("create-repo", "cops")
    pach("put-file", "cops", "master", "a.txt", "-c", input=b"one\n")
    pach("put-file", "cops", "master", "a.txt", "-c", input=b"two\n")
    pach("put-file", "cops", "master", "b.txt", "-c", input=b"bee\n")

    # delete-commit removes an open commit; one with children stays (exit 4).
    assert pach("start-commit", "cops", "master").text == "master/3\n"
    pach("delete-commit", "cops", "master/3")
    has_child, commits = pach.many(("delete-commit", "cops", "master/1"), ("list-commit", "cops", "--json"), rc=None)
    assert has_child.rc == 4 and has_child.err.startswith("error: ")
    assert [c["ref"] for c in commits.json()] == ["master/2", "master/1", "master/0"]

    # fork-commit: a new open commit on a new branch; squash the others into it.
    # archive-commit hides a commit from list-commit unless -a.
    fork, _ = pach.many(("fork-commit", "cops", "master/0", "side"), ("archive-commit", "cops", "master/0"))
    assert fork.text == "side/0\n"
    pach("squash-commit", "cops", "master/1", "master/2", "side/0")
    pach("finish-commit", "cops", "side/0")
    a, b, side, shown, shown_all = pach.many(
        ("get-file", "cops", "side", "a.txt"),
        ("get-file", "cops", "side", "b.txt"),
        ("inspect-commit", "cops", "side/0", "--json"),
        ("list-commit", "cops", "master"),
        ("list-commit", "cops", "master", "-a"),
    )
    assert a.out == b"one\ntwo\n"
    assert b.out == b"bee\n"
    info = side.json()
    assert info["parent_ref"] == "master/0" and info["branch"] == "side" and info["finished"] is not None
    assert [line.split()[1] for line in shown.lines[1:]] == ["cops/master/1", "cops/master/2"]
    assert [line.split()[1] for line in shown_all.lines[1:]] == ["cops/master/0", "cops/master/1", "cops/master/2"]

    # replay-commit: master/2's change (b.txt) lands on "side" as a new commit.
    replayed = pach("replay-commit", "cops", "master/2", "side")
    assert replayed.text == "side/1\n"
    files = pach("list-file", "cops", "side", "--json").json()
    assert [f["path"] for f in files] == ["/a.txt", "/b.txt"]
    pach("replay-commit", "cops", "side", rc=2)  # no target branch

    pach("delete-repo", "cops")
    pach("inspect-repo", "cops", rc=3)


# -- admin -------------------------------------------------------------------------------


def test_version_fsck_gc(pach: Pach) -> None:
    version, fsck, gc = pach.many(("version",), ("fsck",), ("gc",))
    out = version.lines
    assert out[0].split() == ["COMPONENT", "VERSION"]
    assert [line.split()[0] for line in out[1:]] == ["pachctl", "pachd"]
    assert out[2].split()[1] == out[1].split()[1]
    assert fsck.text.rstrip().endswith("ok")
    assert "problem" not in fsck.text
    assert gc.text.startswith("freed ")


def test_delete_all(tmp_path: Path) -> None:
    p = Pach(tmp_path, "delete-all-home")
    try:
        p("create-repo", "one")
        p("put-file", "one", "master", "f", "-c", input=b"x\n")
        p("create-repo", "two")
        assert {r["name"] for r in p("list-repo", "--json").json()} == {"one", "two"}
        p("delete-all")
        assert p("list-repo", "--json").json() == []
    finally:
        p.stop()


def test_no_daemon_reachable(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    no_autostart = make_env(home, tmp_path / "config", PACHY_NO_AUTOSTART="1")
    bad_address = make_env(tmp_path / "fresh2", tmp_path / "config", ADDRESS="127.0.0.1:1")
    res = run(no_autostart, "list-repo", rc=5)
    assert res.err.startswith("error: ")
    assert str(home / "mountd.sock") in res.err
    assert not home.exists()  # nothing was started
    res = run(bad_address, "list-repo", rc=5)
    assert res.err.startswith("error: ")
    assert "127.0.0.1:1" in res.err
