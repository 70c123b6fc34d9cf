"""pachctl as a subprocess, for the end-to-end tests (test_cli, test_pps_*).

``run(env, *args)`` runs the real command and checks that it never prints a
traceback (and its exit code, if given); ``make_env`` gives it a private
PACHY_HOME and config directory; ``stop_daemon`` stops the daemon that
pachctl autostarted for such a home.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_CLEARED = (
    "ADDRESS",
    "PACHD_ADDRESS",
    "PACHY_ADDRESS",
    "PACHY_TOKEN",
    "PACHY_DEBUG",
    "PACHY_NO_AUTOSTART",
    "PACHY_STORE",
)


def _pachctl_argv() -> list[str]:
    script = shutil.which("pachctl", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "pachctl.cli.main"]


PACHCTL = _pachctl_argv()


def make_env(home: Path, config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["PACHY_HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(config)
    env.update(extra)
    return env


@dataclass
class Result:
    rc: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def json(self):
        return json.loads(self.out)


def _result(args: tuple[str, ...], rc_got: int, out: bytes, err: bytes, rc: int | None) -> Result:
    res = Result(rc_got, out, err.decode(errors="replace"))
    assert "Traceback" not in res.err, res.err
    if rc is not None:
        assert res.rc == rc, f"pachctl {shlex.join(args)}: exit {res.rc}, want {rc}\nstderr: {res.err}"
    return res


def run(env: dict[str, str], *args: str, input: bytes | None = None, rc: int | None = 0) -> Result:
    """Run pachctl; check there is never a traceback, and the exit code if given."""
    proc = subprocess.run(
        [*PACHCTL, *args],
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    return _result(args, proc.returncode, proc.stdout, proc.stderr, rc)


def run_many(env: dict[str, str], *argvs: tuple[str, ...], rc: int | None = 0) -> list[Result]:
    """Run independent pachctl commands at once (they only read, or touch
    different repos); each is checked as by ``run``."""
    procs = [
        subprocess.Popen(
            [*PACHCTL, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for args in argvs
    ]
    try:
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [_result(a, p.returncode, o, e, rc) for a, p, (o, e) in zip(argvs, procs, outs, strict=True)]


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_daemon(env: dict[str, str], home: Path) -> None:
    """`pachctl daemon --stop`; SIGKILL the daemon we started if it lingers."""
    try:
        pid = int((home / "mountd.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    subprocess.run([*PACHCTL, "daemon", "--stop"], env=env, capture_output=True, timeout=60)
    if pid:
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


__all__ = ["PACHCTL", "Result", "make_env", "run", "run_many", "stop_daemon"]
