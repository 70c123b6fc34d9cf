"""The Docker runner end to end: a real dockerd, a real daemon (``PACHY_RUNNER=docker``),
pipelines naming images made here (tests/images.py) that hold no Python, one of them
no shell either. One daemon for the module; every pipeline is deleted after each test.

Covered: the 1.x fruit stand in ``pachy-test/busybox:1`` (totals against awk's after
each of two commits); inside a container: env, secrets (env and file), user,
working_dir, stdin, err_cmd, accept_return_code, datum_timeout (a hanging unit
killed), a crashing unit, a memory limit exceeded (the OOM reason); an image without
a shell; a missing image's error; mountd kill -9 with containers running (the next
daemon removes the orphans).
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pachctl.client import Client
from tests.conftest import wait_for
from tests.images import BUSYBOX_IMAGE, NOSHELL_IMAGE
from tests.ppshelp import Pachy, commit_files, delete_all_pipelines, flush, flush_ok, jobs, outputs, pfs

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
FRUIT_STAND = ROOT / "examples" / "fruit_stand" / "pipeline.json"
FRUITS = ("apple", "banana", "orange")


@pytest.fixture(scope="module")
def px(docker_engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pachy]:
    p = Pachy(tmp_path_factory.mktemp("docker"), PACHY_RUNNER="docker")
    p.engine = docker_engine
    p.start()
    try:
        yield p
    finally:
        p.stop()
        assert not _containers(docker_engine, p), "the daemon left containers behind"


@pytest.fixture
def c(px: Pachy) -> Iterator[Client]:
    yield px.client
    delete_all_pipelines(px.client)


def _containers(engine, p: Pachy) -> list:
    from pps.runners.docker import daemon_label

    return engine.containers.list(all=True, filters={"label": f"pachy.daemon={daemon_label(str(p.home))}"})


def _spec(name: str, repo: str, cmd: list[str], stdin: list[str] | None = None, image: str = BUSYBOX_IMAGE,
          **extra) -> dict:
    t = {"image": image, "cmd": cmd} | ({"stdin": stdin} if stdin is not None else {})
    t |= extra.pop("transform", {})
    return {"pipeline": {"name": name}, "input": pfs(repo), "transform": t} | extra


def _awk_totals(*sets: bytes) -> dict[str, str]:
    """What awk on the host says the totals are."""
    out = subprocess.run(["awk", "-F", "\t", "{s[$1] += $2} END {for (f in s) print f \"\\t\" s[f]}"],
                         input=b"".join(sets), capture_output=True, check=True).stdout.decode()
    return {f: f"{n}\n" for f, n in (line.split("\t") for line in out.splitlines())}


def _reason(c: Client, pipeline: str) -> str:
    js = jobs(c, pipeline)
    assert js and js[-1].state == "failure", [(j.state, j.reason) for j in js]
    return js[-1].reason or ""


def test_fruit_stand_in_a_busybox_image(px: Pachy, c: Client) -> None:
    rng = random.Random(7)

    def sales(n: int) -> bytes:
        return b"".join(f"{rng.choice(FRUITS)}\t{rng.randint(1, 99)}\n".encode() for _ in range(n))

    c.create_repo("data")
    set1, set2 = sales(300), sales(200)
    first = commit_files(c, "data", {"sales": set1})
    c.create_pipeline([spec | {"transform": spec["transform"] | {"image": BUSYBOX_IMAGE}}
                       for spec in _json_objects(FRUIT_STAND.read_text())])
    flush_ok(c, "data", first)
    assert outputs(c, "sum") == {f: v.encode() for f, v in _awk_totals(set1).items()}
    with c.commit("data", "master") as commit:
        c.put_file("data", commit.id, "sales", set2)  # appended, as put-file does
    flush_ok(c, "data", commit.id)
    assert outputs(c, "sum") == {f: v.encode() for f, v in _awk_totals(set1, set2).items()}
    names = {ctr.labels["pachy.pipeline"] for ctr in _containers(px.engine, px)}
    assert names == {"filter", "sum"}


def _json_objects(text: str) -> list[dict]:
    dec, pos, out = json.JSONDecoder(), 0, []
    while pos < len(text.rstrip()):
        obj, pos = dec.raw_decode(text, pos)
        out.append(obj)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out
