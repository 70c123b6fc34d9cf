"""The README's first command: the demo runs end to end and its own checks pass."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_the_fruit_stand_and_reads_it_back_through_the_mount(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACHY_")}
    out = subprocess.run(
        ["bash", str(REPO / "installers" / "demo.sh"), "--home", str(tmp_path / "home")],
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for check in (
        "ok: sum after set1 = awk over set1.txt",
        "ok: sum after set2 = awk over set1.txt + set2.txt",
        "ok: the mount shows the same totals and 700 sales lines",
    ):
        assert check in out.stdout, out.stdout[-3000:]
    assert "FAILED" not in out.stdout + out.stderr
    assert not any(" fuse" in line and str(tmp_path) in line for line in Path("/proc/self/mounts").read_text().splitlines())
