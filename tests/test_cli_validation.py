"""Input validation and messages (issue 9, items 9 and 10), through the CLI.

Each bad input gets the exit code from the README's table, one `error: ...`
line on stderr, no traceback, and changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pachctl.client import Client, errors
from pfsfuse import names
from pps.spec import parse_specs
from tests.clihelp import Result, make_env, run, run_many, stop_daemon

BIG = "99999999999999999999999"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("validation")
    e = make_env(root / "home", root / "config")
    e["TEST_ROOT"] = str(root)
    run(e, "create-repo", "data")
    run(e, "put-file", "data", "master", "a", "-c", input=b"a\n")
    run(e, "put-file", "data", "master", "b", "-c", input=b"b\n")
    try:
        yield e
    finally:
        stop_daemon(e, root / "home")


def _one_error(res: Result) -> str:
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    return lines[0]


def _state(env: dict[str, str]) -> tuple:
    """Everything a bad command could have changed (read through the client:
    a process per check would cost more than the checks)."""
    with Client(home=env["PACHY_HOME"], autostart=False) as c:
        return (
            [x.model_dump() for x in c.list_commit("data", all=True)],
            [b.model_dump() for b in c.list_branch("data")],
            [(r.name, r.branches) for r in c.list_repo()],
            c.list_secret(),
        )


# -- item 9 -----------------------------------------------------------------------


def test_branch_named_like_a_commit_id_is_refused(env: dict[str, str]) -> None:
    commit = run(env, "inspect-commit", "data", "master", "--json").json()
    before = _state(env)
    for args in (
        ("create-branch", "data", commit["id"], "--head", "master"),
        ("create-branch", "data", "0123456789abcdef0123456789abcdef"),
        ("start-commit", "data", "0123456789abcdef0123456789abcdef"),
        ("put-file", "data", "0123456789abcdef0123456789abcdef", "x", "-c"),
        ("create-branch", "data", commit["id"][:8]),  # the prefix of one of this repo's commits
    ):
        assert "reads as" in _one_error(run(env, *args, input=b"x", rc=2))
    assert _state(env) == before
    # the commit still resolves by its id, to itself
    assert run(env, "inspect-commit", "data", commit["id"], "--json").json()["id"] == commit["id"]


# -- item 10: refs ----------------------------------------------------------------


def test_out_of_range_numbers_are_invalid(env: dict[str, str]) -> None:
    before = _state(env)
    for res in run_many(
        env,
        ("inspect-commit", "data", f"master/{BIG}"),
        ("get-file", "data", f"master/{BIG}", "a"),
        ("delete-commit", "data", f"master/{BIG}"),
        ("create-branch", "data", "other", "--head", f"master/{BIG}"),
        ("flush-commit", f"data@master/{BIG}"),
        ("inspect-commit", "data", f"master~{BIG}"),
        ("list-commit", "data", "-n", "-1"),
        rc=2,
    ):
        msg = _one_error(res)
        assert "internal" not in msg and "500" not in msg
    assert _state(env) == before


def test_list_commit_n(env: dict[str, str]) -> None:
    assert len(run(env, "list-commit", "data", "-n", BIG, "--json").json()) == 2
    assert len(run(env, "list-commit", "data", "-n", "1", "--json").json()) == 1
    assert len(run(env, "list-commit", "data", "master", "-n", BIG, "--json").json()) == 2


# -- item 10: globs ---------------------------------------------------------------


def test_glob_file_with_an_invalid_glob(env: dict[str, str]) -> None:
    assert "glob" in _one_error(run(env, "glob-file", "data", "master", "/[a-", rc=2))
    assert [f["path"] for f in run(env, "glob-file", "data", "master", "/[a]", "--json").json()] == ["/a"]


def test_pipeline_with_an_invalid_glob_is_refused_at_create(env: dict[str, str]) -> None:
    spec = {
        "pipeline": {"name": "badglob"},
        "transform": {"cmd": ["sh", "-c", "true"]},
        "input": {"pfs": {"repo": "data", "glob": "/[a-"}},
    }
    path = Path(env["TEST_ROOT"]) / "badglob.json"
    path.write_text(json.dumps(spec))
    msg = _one_error(run(env, "create-pipeline", "-f", str(path), rc=2))
    assert "input.pfs.glob" in msg and "glob" in msg
    assert run(env, "list-pipeline", "--json").json() == []


def test_spec_glob_and_templates_checked() -> None:
    base = {"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}}
    with pytest.raises(errors.InvalidArgument, match=r"input\.cross\[1\]\.pfs\.glob"):
        parse_specs(json.dumps({**base, "input": {"cross": [
            {"pfs": {"repo": "a", "glob": "/*"}}, {"pfs": {"repo": "b", "glob": "/[x"}}]}}))
    with pytest.raises(errors.InvalidArgument, match=r"inputs\[0\]\.glob"):
        parse_specs(json.dumps({**base, "generation": 1, "inputs": [{"repo": {"name": "a"}, "glob": "/[", "method": "map"}]}))


# -- item 10: put-file sources and paths -------------------------------------------


def test_unreadable_local_file_is_a_source_error(env: dict[str, str]) -> None:
    before = _state(env)
    msg = _one_error(run(env, "put-file", "data", "master", "mem", "-c", "-f", "/proc/self/mem", rc=6))
    assert "internal" not in msg
    assert _state(env) == before


def test_unsupported_url_schemes(env: dict[str, str]) -> None:
    before = _state(env)
    urls = ["ftp://example.com/x", "gopher://example.com/x", "file://otherhost/etc/hostname"]
    for res in run_many(env, *[("put-file", "data", "master", "x", "-c", "-f", url) for url in urls], rc=2):
        assert "No such file" not in _one_error(res)
    assert _state(env) == before


def test_file_url_reads_the_local_file(env: dict[str, str]) -> None:
    local = Path(env["TEST_ROOT"]) / "local file.txt"
    local.write_bytes(b"from a file URL\n")
    run(env, "put-file", "data", "fileurl", "f", "-c", "-f", "file://" + str(local).replace(" ", "%20"))
    assert run(env, "get-file", "data", "fileurl", "f").out == b"from a file URL\n"


def test_path_ending_in_slash_is_refused(env: dict[str, str]) -> None:
    before = _state(env)
    assert "'/'" in _one_error(run(env, "put-file", "data", "master", "dir/", "-c", input=b"x", rc=2))
    local = Path(env["TEST_ROOT"]) / "s.txt"
    local.write_bytes(b"x")
    _one_error(run(env, "put-file", "data", "master", "dir/", "-c", "-f", str(local), rc=2))
    assert _state(env) == before


def test_names_longer_than_the_mount_serves_are_refused(env: dict[str, str]) -> None:
    """The mount answers ENAMETOOLONG past 255 bytes, so put-file must not store such a name."""
    before = _state(env)
    err = _one_error(run(env, "put-file", "data", "master", "d/" + "é" * 128, "-c", input=b"x", rc=2))
    assert "at most 255 bytes" in err
    assert _state(env) == before
    run(env, "put-file", "data", "master", "n" * 255, "-c", input=b"x")  # 255 bytes is a name


# -- item 10: control characters -----------------------------------------------------


@pytest.mark.parametrize("bad", ["x\x1b[31my\x7f", "x\ny\t"])
def test_control_characters_refused_and_escaped(env: dict[str, str], bad: str) -> None:
    before = _state(env)
    for res in run_many(
        env,
        ("create-repo", bad),
        ("create-branch", "data", bad),
        ("put-file", "data", "master", f"dir/{bad}", "-c", "-f", "/dev/null"),
        ("inspect-commit", "data", bad),
        ("glob-file", "data", "master", bad),
        rc=2,
    ):
        line = _one_error(res)
        assert "\x1b" not in res.err and "\x7f" not in res.err and "\t" not in res.err
        assert names.escape(bad) in line
    res = run(env, "inspect-repo", bad, rc=None)
    assert res.rc in (2, 3)
    _one_error(res)
    assert "\x1b" not in res.err
    assert _state(env) == before


def test_secret_names_and_keys_must_be_file_names(env: dict[str, str]) -> None:
    def secret(name: str, data: dict[str, str]) -> bytes:
        return json.dumps({"kind": "Secret", "metadata": {"name": name}, "stringData": data}).encode()

    for name, data in (
        ("ok", {"../../k": "v"}),
        ("ok", {"..": "v"}),
        ("ok", {"a/b": "v"}),
        ("ok", {"k\x1b": "v"}),
        ("bad\nname", {"k": "v"}),
        ("..", {"k": "v"}),
    ):
        res = run(env, "create-secret", input=secret(name, data), rc=2)
        _one_error(res)
        assert "\x1b" not in res.err
    assert run(env, "list-secret", "--json").json() == []
    run(env, "create-secret", input=secret("fine.name_1", {"user.name": "v", "-x_1": "w"}))
    assert run(env, "list-secret", "--json").json() == ["fine.name_1"]


def test_human_output_escapes_control_characters(tmp_path: Path) -> None:
    """Names written before these rules (or through the mount) are still shown
    escaped in tables and messages."""
    import io
    import sys

    from pachctl.cli import output

    buf = io.StringIO()
    output.table(["NAME"], [("a\x1b[2Jb\nc",)], out=buf)
    assert buf.getvalue() == "NAME\na\\x1b[2Jb\\nc\n"
    err = io.StringIO()
    old, sys.stderr = sys.stderr, err
    try:
        output.error("file '/x\ny\x1b' not found")
    finally:
        sys.stderr = old
    assert err.getvalue() == "error: file '/x\\ny\\x1b' not found\n"
