"""A short, seeded schemathesis pass over the HTTP API (issue 9, item 11).

The full run (every phase, 5 minutes) is ``python -m bench.fuzz_api``; this one
keeps 10 examples per operation (no --max-time: with one, fuzzing repeats
until the time is spent) so the suite stays fast, and still catches a
500 or a status code the OpenAPI does not list.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.fuzz_api import CHECKS, EXCLUDED, ROOT
from pachctl.client import Client
from tests.conftest import Daemon, free_port


def test_schemathesis_finds_no_server_error_or_undocumented_status(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    client = Client(address, token="fuzz", timeout=30)
    d = start_daemon(tmp_path / "home", "--listen", address, "--token=fuzz", client=client)
    cmd = [
        str(Path(sys.executable).with_name("st")), "run", f"http://{address}/openapi.json",
        "-H", "Authorization: Bearer fuzz",
        "--phases", "fuzzing", "--max-examples", "10", "--seed", "1", "--no-shrink",
        "--checks", CHECKS, "--workers", "1", "--request-timeout", "20",
    ]  # fmt: skip
    for op in EXCLUDED:
        cmd += ["--exclude-operation-id", op]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks"}
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "Traceback" not in d.log_text()
