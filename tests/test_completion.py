"""`pachctl completion`: the generated scripts run in the real shells against a
real daemon. bash: `complete -p` and the completion function called with
COMP_WORDS/COMP_CWORD; zsh: the function called with stand-ins for compadd and
friends (they are zsh's C builtins, available only inside a live completion);
fish: `complete -C`, fish's own way to ask for completions from a script."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pachctl.cli import cmd_completion
from tests.clihelp import PACHCTL, make_env, run
from tests.ppshelp import Pachy, commit_files, flush, jobs, pachy_fixtures

px, c = pachy_fixtures("completion")


@pytest.fixture(scope="module")
def world(px: Pachy, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Repos, branches, a pipeline and its job; a `pachctl` on PATH for the shells;
    the three scripts, written by `pachctl completion SHELL`."""
    cl = px.client
    cl.create_repo("images")
    cl.create_repo("imgtest")
    head = commit_files(cl, "images", {"a.png": "x", "dir/b.png": "y"})
    cl.create_branch("images", "dev", head)
    cl.create_pipeline({"pipeline": {"name": "edges"}, "input": {"pfs": {"repo": "images", "glob": "/"}},
                        "transform": {"cmd": ["sh"], "stdin": ["true"]}})
    assert not flush(cl, "images", head).failed_jobs
    base = tmp_path_factory.mktemp("completion")
    bindir = base / "bin"
    bindir.mkdir()
    wrapper = bindir / "pachctl"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.join(PACHCTL)} \"$@\"\n")
    wrapper.chmod(0o755)
    env = px.env | {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    scripts = {}
    for shell, name in (("bash", "pachctl.bash"), ("zsh", "_pachctl"), ("fish", "pachctl.fish")):
        scripts[shell] = base / name
        scripts[shell].write_bytes(run(env, "completion", shell).out)
    work = base / "work"
    work.mkdir()
    (work / "spec.json").write_text("{}")
    return {"env": env, "scripts": scripts, "job": jobs(cl, "edges")[0].id, "work": work}


def bash(world: dict, *words: str) -> list[str]:
    """What bash offers for the last word, through the generated function."""
    script = world["scripts"]["bash"]
    prog = (f"source {shlex.quote(str(script))}; COMP_WORDS=(pachctl {shlex.join(words)}); "
            f"COMP_CWORD={len(words)}; _pachctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], env=world["env"], cwd=world["work"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return sorted(line for line in out.stdout.splitlines() if line)


def test_bash_registers_the_function(world: dict) -> None:
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c",
                          f"source {world['scripts']['bash']}; complete -p pachctl"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "complete -F _pachctl pachctl"


def test_bash_commands_both_forms(world: dict) -> None:
    assert bash(world, "list-r") == ["list-repo"]
    assert {"list", "list-repo", "list-job", "logs"} <= set(bash(world, "l"))
    assert bash(world, "create", "") == ["branch", "job", "pipeline", "repo", "secret"]
    assert bash(world, "debug", "") == ["datum"]
    assert "doctor" in bash(world, "d") and "completion" in bash(world, "c")
    assert "__complete" not in bash(world, "_")  # hidden


def test_bash_flags(world: dict) -> None:
    assert bash(world, "list-repo", "--") == ["--help", "--json"]
    assert bash(world, "create", "repo", "--d") == ["--description"]
    assert bash(world, "--d") == ["--debug"]
    assert bash(world, "daemon", "--runner", "") == ["auto", "docker", "kubernetes", "local", "none"]
    assert bash(world, "completion", "") == ["bash", "fish", "zsh"]


def test_bash_repos_branches_pipelines_jobs(world: dict) -> None:
    assert bash(world, "inspect-repo", "") == ["edges", "images", "imgtest"]  # edges: the pipeline's output
    assert bash(world, "inspect", "repo", "img") == ["imgtest"]
    assert bash(world, "list-commit", "images", "") == ["dev", "master"]
    assert bash(world, "list", "commit", "images@") == ["images@dev", "images@master"]
    assert bash(world, "flush-commit", "ima") == ["images@"]  # goes on with a branch
    assert bash(world, "stop-pipeline", "") == ["edges"]
    assert bash(world, "list-job", "--pipeline", "e") == ["edges"]
    assert bash(world, "inspect-job", "") == [world["job"]]
    assert bash(world, "inspect", "job", world["job"][:4]) == [world["job"]]


def test_bash_paths_and_local_files(world: dict) -> None:
    assert bash(world, "get-file", "images", "master", "/") == ["/a.png", "/dir/"]
    assert bash(world, "get-file", "images", "master", "/dir/") == ["/dir/b.png"]
    # 2.x: bash splits repo@branch:/path at the colon; the answer is what follows it.
    assert bash(world, "get", "file", "images@master", ":", "/d") == ["/dir/"]
    assert bash(world, "create-pipeline", "-f", "sp") == ["spec.json"]


def test_datums_of_a_job(world: dict, px: Pachy) -> None:
    (datum,) = px.client.list_datum(world["job"])
    assert bash(world, "debug", "datum", world["job"], "") == [datum.id]
    assert bash(world, "inspect-datum", world["job"], "") == [datum.id]


def test_complete_is_silent_and_quick_without_a_daemon(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home", tmp_path / "cfg", PACHY_NO_AUTOSTART="")  # autostart on: still not started
    res = run(env, "__complete", "--", "inspect-repo", "", rc=0)
    assert (res.out, res.err) == (b"", "")
    assert not (tmp_path / "home").exists()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env["ADDRESS"] = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        res = run(env, "__complete", "--", "inspect-repo", "", rc=0)
        took = time.monotonic() - t0
    assert (res.out, res.err) == (b"", "")
    assert took < cmd_completion.TIMEOUT + 3, took


def test_install_writes_where_each_shell_looks(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home", tmp_path / "cfg", HOME=str(tmp_path / "user"),
                   XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    want = {"bash": tmp_path / "data" / "bash-completion" / "completions" / "pachctl",
            "zsh": tmp_path / "user" / ".zfunc" / "_pachctl",
            "fish": tmp_path / "config" / "fish" / "completions" / "pachctl.fish"}
    for shell, path in want.items():
        res = run(env, "completion", shell, "--install", rc=0)
        assert res.lines[0] == f"wrote {path}"
        assert path.read_bytes() == run(env, "completion", shell).out
    assert "fpath=(~/.zfunc $fpath)" in run(env, "completion", "zsh", "--install").text


def _need(shell: str) -> str:
    found = shutil.which(shell)
    if found is None:
        pytest.fail(f"{shell} is not installed; installers/install.sh --test installs it", pytrace=False)
    return found


# zsh's completion builtins exist only inside a live completion: stand-ins print what
# they are given, filtered by the current word as zsh would.
_ZSH_HARNESS = """
compdef() { }
_pick() { local x; for x in "$@"; do [[ $x == ${words[CURRENT]}* ]] && print -r -- $x; done; }
compadd() { while [[ $# -gt 0 && $1 != -- ]]; do shift; done; shift; _pick "$@"; }
_describe() { local a; _pick "${(@)${(@P)4}%%:*}"; }
_files() { print -- ':files'; }
_directories() { print -- ':dirs'; }
source "$1"; shift
words=("$@"); CURRENT=$#
_pachctl
true
"""


def zsh(world: dict, *words: str) -> list[str]:
    out = subprocess.run([_need("zsh"), "-f", "-c", _ZSH_HARNESS, "zsh", str(world["scripts"]["zsh"]), "pachctl", *words],
                         env=world["env"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return sorted(line for line in out.stdout.splitlines() if line)


def test_zsh_script(world: dict) -> None:
    subprocess.run([_need("zsh"), "-n", str(world["scripts"]["zsh"])], check=True, timeout=30)
    assert zsh(world, "list-r") == ["list-repo"]
    assert zsh(world, "create", "") == ["branch", "job", "pipeline", "repo", "secret"]
    assert zsh(world, "create", "repo", "--d") == ["--description"]
    assert zsh(world, "inspect", "repo", "i") == ["images", "imgtest"]
    assert zsh(world, "list", "commit", "images@") == ["images@dev", "images@master"]
    assert zsh(world, "get", "file", "images@master:/d") == ["images@master:/dir/"]
    assert zsh(world, "create-pipeline", "-f", "") == [":files"]


def fish(world: dict, line: str) -> list[str]:
    prog = f"source {shlex.quote(str(world['scripts']['fish']))}; complete -C {shlex.quote(line)}"
    out = subprocess.run([_need("fish"), "--no-config", "-c", prog], env=world["env"], cwd=world["work"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return sorted({ln.split("\t")[0] for ln in out.stdout.splitlines() if ln})


def test_fish_script(world: dict) -> None:
    subprocess.run([_need("fish"), "--no-config", "-n", str(world["scripts"]["fish"])], check=True, timeout=30)
    assert fish(world, "pachctl list-r") == ["list-repo"]
    assert fish(world, "pachctl list-repo --") == ["--help", "--json"]
    assert fish(world, "pachctl create ") == ["branch", "job", "pipeline", "repo", "secret"]
    assert fish(world, "pachctl inspect repo ") == ["edges", "images", "imgtest"]
    assert fish(world, "pachctl list commit images@") == ["images@dev", "images@master"]
    assert fish(world, "pachctl stop-pipeline ") == ["edges"]
    assert "spec.json" in fish(world, "pachctl create-pipeline -f sp")
