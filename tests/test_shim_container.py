"""shim/container.py's run.sh without Docker: the script a unit gets, run by the host's
static busybox as the agent runs it (an empty environment), for what must hold in any
image: values quoted whatever they hold, the image's program before busybox's applet
of the same name, argv[0] kept, a missing command named. The Docker runner's own
tests (tests/test_docker_runner.py) run it in containers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shim.container import ContainerExecutor, quote
from shim.execute import Run

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (apt-get install busybox-static)")


@pytest.fixture
def ex(tmp_path: Path) -> ContainerExecutor:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (ctl / "links").mkdir()
    for name in ("cmd", "events"):
        os.mkfifo(ctl / name)
    (ctl / "image.json").write_text(json.dumps({"image": "pachy-test/x:1", "env": ["PATH=/usr/bin:/bin"]}))
    return ContainerExecutor(str(ctl))


def _run(ex: ContainerExecutor, tmp_path: Path, cmd: list[str], env: dict[str, str] | None = None,
         cwd: str = "/") -> subprocess.CompletedProcess:
    run = Run(cmd, b"", {"PATH": "/usr/bin:/bin"} | (env or {}), cwd, None, frozenset([0]))
    script = tmp_path / "run.sh"
    script.write_text(ex._script(run, []))
    return subprocess.run([BUSYBOX, "env", "-i", BUSYBOX, "sh", str(script)], capture_output=True, text=True,
                          timeout=30)


def test_quote_survives_every_character() -> None:
    for s in ["", "plain", "it's", "'", "a\nb", "$HOME `id` \\ \"q\" ; | &", "'\"'\"'"]:
        out = subprocess.run([BUSYBOX, "sh", "-c", f"printf %s {quote(s)}"], capture_output=True, text=True)
        assert out.stdout == s


def test_the_environment_is_exactly_the_units(ex: ContainerExecutor, tmp_path: Path) -> None:
    value = "it's \"quoted\" $HOME `id` ; a\nsecond line"
    res = _run(ex, tmp_path, ["env"], {"TRICKY": value, "BAD.NAME": "x"}, cwd="/tmp")
    assert res.returncode == 0, res.stderr
    assert f"TRICKY={value}\n" in res.stdout
    names = {line.partition("=")[0] for line in res.stdout.splitlines() if "=" in line and line[0].isupper()}
    assert names == {"PATH", "TRICKY"}  # no SHLVL, PWD or OLDPWD of the shell's, no BAD.NAME


def test_the_images_program_runs_not_busyboxs_applet(ex: ContainerExecutor, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "awk").write_text("#!/bin/sh\necho \"mine: $0 $*\"\n")
    (bindir / "awk").chmod(0o755)
    res = _run(ex, tmp_path, ["awk", "an arg"], {"PATH": f"{bindir}:/usr/bin:/bin"})
    assert res.stdout == f"mine: {bindir}/awk an arg\n", res.stderr


def test_argv0_is_kept(ex: ContainerExecutor, tmp_path: Path) -> None:
    res = _run(ex, tmp_path, ["sh", "-c", "tr '\\0' ' ' </proc/$$/cmdline"])
    assert res.stdout.split()[0] == "sh", res.stdout


def test_a_missing_command_and_working_dir_are_named(ex: ContainerExecutor, tmp_path: Path) -> None:
    res = _run(ex, tmp_path, ["no-such-program"])
    assert res.returncode == 127
    assert res.stderr.strip() == ("pachy-agent: cannot run 'no-such-program' in image 'pachy-test/x:1': not found; "
                                  "install it in the image or give its full path in transform.cmd")
    res = _run(ex, tmp_path, ["true"], cwd="/no/such/dir")
    assert res.returncode == 125
    assert "working_dir '/no/such/dir' cannot be entered in image 'pachy-test/x:1'" in res.stderr
