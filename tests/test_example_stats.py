"""The Go-client walkthrough's `stats` example as a user runs it: examples/stats/build.sh
makes its image with no registry (a Debian rootfs by mmdebstrap, docker import, docker
build), then examples/stats/feed.py commits project names one per commit through the
Python client and the 1.x `stats` pipeline runs /stats.sh in that image (bash, which the
host's pachy side does not bring). Checked: every output line against the same counts
taken on the host from the Go sources the image carries, and the walkthrough's shape (one
job per input commit, each output commit's /results one line longer)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ppshelp import Pachy

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
STATS = ROOT / "examples" / "stats"
sys.path.insert(0, str(STATS))
import feed  # noqa: E402  (examples/stats/feed.py, as a user runs it)


@pytest.fixture(scope="module")
def stats_image(docker_engine) -> str:
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is missing: installers/install.sh --test installs it")
    done = subprocess.run(["bash", str(STATS / "build.sh")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def px(stats_image: str, tmp_path: Path) -> Iterator[Pachy]:
    p = Pachy(tmp_path)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _expected(engine, project: str) -> str:
    """The line stats.sh should print, counted by the test in a throwaway container of the
    same image (find + wc, not stats.sh)."""
    src = f"/usr/share/gocode/src/github.com/{project}"
    script = (f"find {src} -path '*/vendor' -prune -o -name '*.go' ! -name '*_test.go' -printf '%h\\n' "
              f"| sort -u | wc -l; find {src} -name '*.go' -print0 | xargs -0 cat | wc -l")
    out = engine.containers.run("pachy-example/stats", ["sh", "-c", script], remove=True).decode().split()
    return f"{project}, {out[0]}, {out[1]}"


def test_the_walkthrough_runs_in_its_image(px: Pachy, docker_engine) -> None:
    env = dict(os.environ) | px.env | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(STATS / "feed.py")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    want = [_expected(docker_engine, p) for p in feed.PROJECTS]
    assert done.stdout.splitlines() == want

    c = px.client
    jobs = c.list_job("stats")
    assert len(jobs) == len(feed.PROJECTS) and all(j.state == "success" for j in jobs), jobs
    # 1.x reduce: /pfs/out starts from the previous output, so each commit's results grow by a line
    outs = sorted(c.list_commit("stats"), key=lambda x: x.seq or 0)
    sizes = [len(c.read_file("stats", o.id, "/results").splitlines()) for o in outs]
    assert sizes == list(range(1, len(feed.PROJECTS) + 1))
