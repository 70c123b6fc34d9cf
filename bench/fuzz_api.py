"""Fuzz mountd's HTTP API with schemathesis, over TCP, against a throwaway home.

    .venv/bin/python -m bench.fuzz_api                  # all phases, 5 minutes
    .venv/bin/python -m bench.fuzz_api --max-time 60 --seed 1 -- --max-failures 5

Starts ``python -m mountd --listen 127.0.0.1:PORT --token T`` on a fresh home
in a temporary directory, runs ``st run`` on its /openapi.json with the token
(every phase; checks: no server error, every status code and content type
documented, answers match their schema), then stops the daemon, counts the
tracebacks in its log, and deletes the home (unless ``--keep``). Arguments
after ``--`` go to ``st run``. Exits with schemathesis's code, or 1 if the
daemon logged a traceback.

What is left out, and why:
- ``POST /v1/mounts``: a mount of a host path (TCP daemons refuse it; a fuzzed
  one would mount FUSE over whatever directory the fuzzer names).
- ``GET /v1/logs?follow=true``: a stream that ends when its pipeline is
  deleted, so only a client timeout would end it (bench/fuzz_hooks.py).
Everything else runs, the destructive routes too (delete-all, gc): the home
is a throwaway.

``--deep`` first fills the home (a repo with commits, branches and files, an
open commit, a secret, a pipeline with its jobs) and has schemathesis use
those names, refs, paths and ids for most path and query parameters
(dictionaries in a generated schemathesis.toml), so requests get past "not
found" to the code behind it. The deletes are left out then (SEED_KEEPING):
one delete-all early on would leave nothing to find for the rest of the run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pachctl.client import Client

ROOT = Path(__file__).resolve().parent.parent
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXCLUDED = ("mount_v1_mounts_post",)
# --deep: the deletes would take the seeded names away within seconds (the plain run covers them)
SEED_KEEPING = "^(delete_all|delete_repo|delete_pipeline|delete_all_pipelines|delete_branch|delete_commit|delete_secret)_"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(home: Path, address: str, token: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PACHY_HOME": str(home)}
    env.pop("PACHY_STORE", None)
    cmd = [sys.executable, "-m", "mountd", "--home", str(home), "--listen", address, f"--token={token}"]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the daemon exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://{address}/openapi.json", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"error: the daemon did not answer within 30 s; see {log}")


def stop_daemon(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def seed(address: str, token: str) -> dict[str, list[str]]:
    """Fill the home with one of everything; the names the fuzzer should use."""
    c = Client(address, token=token, timeout=60)
    c.create_repo("data", "fuzzing seed")
    ids = []
    with c.commit("data") as k:
        c.put_file("data", k.id, "/a.txt", b"alpha\n")
        c.put_file("data", k.id, "/dir/b.csv", b"x,y\n1,2\n")
    ids.append(k.id)
    with c.commit("data") as k:
        c.put_file("data", k.id, "/c.txt", b"gamma\n" * 1000)
    ids.append(k.id)
    c.create_branch("data", "tag", "master")
    opened = c.start_commit("data", "dev")
    ids.append(opened.id)
    c.create_secret("creds", {"key": "value"})
    spec = {
        "pipeline": {"name": "copy"},
        "input": {"pfs": {"repo": "data", "glob": "/*"}},
        "transform": {"cmd": ["sh", "-c", "cp -r /pfs/data/. /pfs/out/"]},
    }
    c.create_pipeline(spec)
    deadline = time.monotonic() + 60
    while not (jobs := c.list_job("copy")) and time.monotonic() < deadline:
        time.sleep(0.2)
    job_ids = [j.id for j in jobs]
    datums = [d.id for j in job_ids for d in c.list_datum(j)] if job_ids else []
    c.close()
    return {
        "repos": ["data", "copy"],
        "refs": ["master", "master^", "master~1", "dev", "tag", "master/0", "master/1", *ids],
        "paths": ["/", "/a.txt", "/dir", "/dir/b.csv", "/c.txt", "/*", "**"],
        "branches": ["master", "dev", "tag", "new"],
        "names": ["copy", "creds"],
        "jobs": job_ids or ["0" * 32],
        "datums": datums or ["0" * 64],
    }


def deep_config(names: dict[str, list[str]], path: Path) -> None:
    """A schemathesis.toml: these parameters take a seeded value most of the time."""
    bindings = {
        "path.repo": "repos", "query.ref": "refs", "query.old": "refs", "query.path": "paths",
        "query.pattern": "paths", "path.branch": "branches", "path.name": "names", "query.pipeline": "names",
        "path.pipeline": "names", "path.job_id": "jobs", "query.job": "jobs", "path.datum_id": "datums",
        "query.datum": "datums",
    }  # fmt: skip
    lines = []
    for name, values in names.items():
        lines += [f"[dictionaries.{name}]", "values = [" + ", ".join(f'"{v}"' for v in values) + "]", ""]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{d}", probability = 0.8 }}' for key, d in bindings.items()]
    path.write_text("\n".join(lines) + "\n")


def st_command(address: str, token: str, args: argparse.Namespace, report_dir: Path) -> list[str]:
    cmd = [
        str(Path(sys.executable).with_name("st")), "run", f"http://{address}/openapi.json",
        "-H", f"Authorization: Bearer {token}",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--checks", CHECKS,
        "--max-time", str(args.max_time),
        "--request-timeout", "60",
        "--workers", str(args.workers),
        "--report", "ndjson", "--report-dir", str(report_dir),
    ]  # fmt: skip
    for op in EXCLUDED:
        cmd += ["--exclude-operation-id", op]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    return cmd + args.st_args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.fuzz_api", description=__doc__.split("\n\n")[0])
    p.add_argument("--max-time", type=int, default=300, help="seconds for the whole run (default 300)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=1, help="1: hypothesis is not thread-safe here (SystemError in ast.parse)")
    p.add_argument("--dir", default=None, help="scratch directory (default: a new temporary one)")
    p.add_argument("--deep", action="store_true", help="seed the home and use its names (see above)")
    p.add_argument("--keep", action="store_true", help="keep the home, the daemon log and the report")
    p.add_argument("st_args", nargs="*", help="more arguments for `st run` (after --)")
    args = p.parse_args(argv)

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="pachy-fuzz-"))
    scratch.mkdir(parents=True, exist_ok=True)
    home, log, reports = scratch / "home", scratch / "mountd.log", scratch / "report"
    address, token = f"127.0.0.1:{free_port()}", secrets.token_urlsafe(16)
    proc = start_daemon(home, address, token, log)
    try:
        cmd = st_command(address, token, args, reports)
        if args.deep:
            deep_config(seed(address, token), scratch / "schemathesis.toml")
            cmd[1:1] = ["--config-file", str(scratch / "schemathesis.toml")]
            cmd += ["--exclude-operation-id-regex", SEED_KEEPING]
        shown = " ".join(c if c != f"Authorization: Bearer {token}" else "'Authorization: Bearer ***'" for c in cmd)
        print(f"fuzz_api: {shown}", file=sys.stderr, flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks"}
        code = subprocess.run(cmd, env=env, cwd=scratch).returncode
    finally:
        stop_daemon(proc)
    tracebacks = log.read_text(errors="replace").count("Traceback")
    print(f"fuzz_api: schemathesis exit code {code}; {tracebacks} traceback(s) in the daemon log {log}")
    if args.keep or code or tracebacks:
        print(f"fuzz_api: kept {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return code or (1 if tracebacks else 0)


if __name__ == "__main__":
    sys.exit(main())
