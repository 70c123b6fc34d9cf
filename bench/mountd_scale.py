"""mountd's worker endpoints under many simulated workers (issue 11, the figure
that bounds a cluster's scale): task+result round trips/s, latency, daemon RSS.

    .venv/bin/python -m bench.mountd_scale               # 1, 10, 50, 100 workers (~1 min)
    .venv/bin/python -m bench.mountd_scale --quick       # smaller jobs, for a smoke run
    .venv/bin/python -m bench.mountd_scale --workers 50 -n 20000 --py-spy bench/out/scale.txt

The daemon is a real mountd process serving TCP with a token, as in a cluster
(``--listen 127.0.0.1:PORT``). It is started as ``python -m bench.mountd_scale
serve CREDENTIALS -- MOUNTD ARGS``, which runs ``mountd.server.main`` itself
(the same home, store, scheduler, app and hypercorn settings) with one name
swapped: ``mountd.server.build_runner`` returns a ``BenchRunner`` that vouches
for the credentials the bench minted (sha256-hashed, as the local runner keeps
them) and starts no process. Everything else is the real code path; no product
code knows of the bench.

A simulated worker speaks the worker protocol of pps/WORKERS.md over HTTP/1.1
on a keep-alive TCP connection of its own (written out by hand on asyncio
streams: httpx costs ~10x the CPU per request, and the clients share the
2 cores with the daemon): ``POST /v1/workers/{pipeline}/next?worker=W&wait=S``,
then ``POST /v1/workers/tasks/{id}/result?worker=W`` with one ``U`` record per
unit (success; ``--output`` adds a tiny ``P`` file per unit, pinned by the
daemon as a real output). One round trip = one task taken + its result
accepted. It does not read the inputs (``/v1/workers/read``) nor run anything:
the figure is the daemon's side of handing out work. Workers run in
``--procs`` client processes (asyncio, one task per worker).

Each measurement is one job of the pipeline ``scale`` (input ``in``, glob
``/*``, ``datum_set_spec: {number: 1}``): N new one-byte files committed at
once, so N new datums, one unit each, one unit per task: every round trip is
one datum. The rate counts round trips from the first request to the last
accepted result; each task id must come back exactly once with
``accepted: 1`` and the job must end with ``data_processed == N``. The
pipeline ``batched`` (the scheduler's own task sizing, up to 64 units a task)
gives datums/s when tasks are big, for information. CPU: the daemon's
(utime+stime of its process), the client processes', and the rest of the
machine's (``/proc/stat``), in cores over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import pathlib
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from mountd import wire
from pachctl.client import Client
from pps.runners.base import NullRunner

BENCH = pathlib.Path(__file__).resolve().parent
PIPELINE, BATCHED = "scale", "batched"
REPOS = {PIPELINE: "in", BATCHED: "inb"}
TICKS = os.sysconf("SC_CLK_TCK")


# ---- the daemon side: a runner that vouches for minted credentials -----------


@dataclass
class BenchRunner(NullRunner):
    """Simulated workers' runner: credentials minted by the bench (only their sha256
    kept), no processes. ``running`` reports them all, so list-pipeline shows them."""

    workers: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # sha256(credential) -> (pipeline, worker)
    name: str = "bench"

    def running(self, pipeline: str) -> int:
        return sum(1 for p, _ in self.workers.values() if p == pipeline)

    def authenticate(self, credential: str) -> tuple[str, str] | None:
        return self.workers.get(hashlib.sha256(credential.encode()).digest())


def serve(credentials_file: str, mountd_args: list[str]) -> int:
    """``python -m bench.mountd_scale serve FILE -- ARGS``: mountd with a BenchRunner."""
    import mountd.server as server

    with open(credentials_file) as f:
        minted = json.load(f)  # [[pipeline, worker id, credential], ...]
    runner = BenchRunner(workers={hashlib.sha256(c.encode()).digest(): (p, w) for p, w, c in minted})
    server.build_runner = lambda *_a, **_kw: runner
    out = os.environ.get("PACHY_BENCH_TRACEMALLOC") or os.environ.get("PACHY_BENCH_MEMSTAT")
    if out:  # SIGUSR1: RSS, SQLite's heap and (TRACEMALLOC) the top allocation sites into that file
        import tracemalloc

        if os.environ.get("PACHY_BENCH_TRACEMALLOC"):
            tracemalloc.start(8)

        def dump(_sig, _frame) -> None:
            stats = tracemalloc.take_snapshot().statistics("traceback") if tracemalloc.is_tracing() else []
            with open("/proc/self/status") as st_file:
                vm = {k: v.strip() for k, _, v in (ln.partition(":") for ln in st_file) if k.startswith(("Rss", "VmHWM"))}
            with open(out, "a") as f:
                f.write(f"--- {time.strftime('%H:%M:%S')} traced {sum(st.size for st in stats) / 1e6:.1f} MB; "
                        f"SQLite heap {_sqlite_heap() / 1e6:.1f} MB; {vm}\n")
                if not stats:  # MEMSTAT: how full pymalloc's arenas are, and what objects there are most of
                    f.write(_pymalloc_summary() + "\n")
                    f.write(_census() + "\n")
                for st in stats[:12]:
                    f.write(f"{st.size / 1e6:8.1f} MB {st.count:9,d} blocks\n")
                    for line in st.traceback.format()[-8:]:
                        f.write(f"    {line}\n")

        signal.signal(signal.SIGUSR1, dump)
    return server.main(mountd_args)


def _pymalloc_summary() -> str:
    """pymalloc's own figures (sys._debugmallocstats, which writes to fd 2): arenas held
    and bytes in live blocks; the difference is RSS that no object uses (fragmentation)."""
    import tempfile

    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    keep = ("arenas allocated current", "bytes in allocated blocks", "bytes in available blocks")
    return "pymalloc: " + "; ".join(" ".join(ln.split()) for ln in text.splitlines() if any(k in ln for k in keep))


def _census(top: int = 12) -> str:
    """The commonest object types the garbage collector tracks, and their shallow bytes."""
    import gc
    from collections import Counter

    count, size = Counter(), Counter()
    for o in gc.get_objects():
        name = type(o).__name__
        count[name] += 1
        size[name] += sys.getsizeof(o)
    return "objects: " + ", ".join(f"{n} {c:,} ({size[n] / 1e6:.1f} MB)" for n, c in count.most_common(top))


def _sqlite_heap() -> int:
    """Bytes SQLite has allocated in this process (its page caches, mostly)."""
    import ctypes
    import sqlite3  # noqa: F401 -- loads the library the lookup below finds

    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        return lib.sqlite3_memory_used()
    except OSError:
        return -1


def serve_bare(listen: str) -> int:
    """``python -m bench.mountd_scale bare HOST:PORT``: hypercorn on trio with mountd's
    settings (mountd.server) and an ASGI app that answers every request with a fixed
    JSON body: what the HTTP server alone costs per request, the ceiling for mountd."""
    import hypercorn.trio.tcp_server
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"14")]})
        await send({"type": "http.response.body", "body": b'{"accepted":1}'})

    hypercorn.trio.tcp_server.MAX_RECV = 1 << 20  # as mountd.server.main
    config = Config()
    config.accesslog, config.errorlog, config.bind = None, "-", [listen]
    config.keep_alive_timeout, config.graceful_timeout, config.h11_max_incomplete_size = 60, 1.0, 64 * 1024
    trio.run(hypercorn_serve, app, config)
    return 0


class Daemon:
    """The bench's mountd: TCP on loopback with a token, a BenchRunner for ``creds``."""

    def __init__(self, work: pathlib.Path, creds: list[tuple[str, str, str]], profile: str | None = None,
                 fastlane: bool = True):
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(24)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        cred_file = work / "credentials.json"
        fd = os.open(cred_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        self.log = work / "mountd.log"
        cmd = [sys.executable, "-m", "bench.mountd_scale", "serve", str(cred_file), "--",
               "--home", str(self.home), "--listen", self.address, f"--token={self.token}"]  # a token may begin with "-"
        env = {**os.environ, "PACHY_MAX_WORKERS": "4"}  # the batched pipeline's task sizing: as on 2 cores
        env["PACHY_WORKER_FASTLANE"] = "1" if fastlane else "0"  # 0: the worker routes through hypercorn+FastAPI
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                         cwd=BENCH.parent)
        self.spy = None
        deadline = time.monotonic() + 30
        with self.client() as c:
            while True:
                try:
                    c.version()
                    break
                except Exception:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"mountd did not start; see {self.log}") from None
                    time.sleep(0.05)
        if profile:
            spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
            self.spy = subprocess.Popen([spy, "record", "-p", str(self.proc.pid), "-o", profile, "--format", "raw",
                                         "--rate", "200", "--nonblocking", "--gil"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> Client:
        return Client(self.address, token=self.token, autostart=False)

    def status(self, key: str) -> float:
        """A /proc/PID/status figure in MB (VmHWM, VmRSS)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) * 1024 / 1e6

    def cpu(self) -> float:
        """The daemon's CPU seconds so far (utime + stime)."""
        return _proc_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            try:
                self.spy.wait(60)
            except subprocess.TimeoutExpired:
                self.spy.kill()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def mint(pipelines: list[str], n: int) -> list[tuple[str, str, str]]:
    return [(p, f"{p}-w{i}", secrets.token_urlsafe(32)) for p in pipelines for i in range(n)]


# ---- the client side: simulated workers over raw HTTP/1.1 ---------------------


class Conn:
    """One worker's keep-alive HTTP/1.1 connection (requests with a body of known length)."""

    def __init__(self, host: str, port: int, token: str, credential: str):
        self.host, self.port = host, port
        self.fixed = (f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                      f"X-Pachy-Worker: {credential}\r\nContent-Type: application/octet-stream\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, target: str, body: bytes = b"") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"POST " + target.encode() + b" HTTP/1.1\r\n" + self.fixed
                          + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True  # hypercorn ends a connection after keep_alive_max_requests (1,000)
        if not chunked:
            body = await self.reader.readexactly(length) if length else b""
        else:
            parts = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            body = b"".join(parts)
        if close:  # as an HTTP client library does: a new connection for the next request
            self.close()
            await self.open()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def result_body(task: dict, output: int) -> bytes:
    """Every unit of the task succeeded (with ``output`` bytes in one file, if asked)."""
    now = time.time()
    records = []
    for u in task["units"]:
        records.append(wire.encode_header(wire.UNIT, {"unit_id": u["unit_id"], "state": "success", "reason": "",
                                                      "tries": 1, "started": now, "finished": now}))
        if output:
            records.append(wire.encode_header(wire.PUT, {"path": f"/{u['unit_id']}", "append": False})
                           + output.to_bytes(4, "big") + b"o" * output + b"\0\0\0\0")
    return b"".join(records)


async def one_worker(conn: Conn, pipeline: str, worker: str, wait: float, output: int, out: dict,
                     piggyback: bool = False) -> None:
    """Take tasks and post results until a poll comes back empty (the job's queue is drained);
    ``piggyback``: each result asks for the next task in its answer (``next=true``, as the shim)."""
    nxt = f"/v1/workers/{pipeline}/next?worker={worker}&wait={wait:g}"
    then = "&next=true" if piggyback else ""
    task = None
    while True:
        t0 = time.monotonic()
        if task is None:  # piggyback: only when the last result's answer brought none
            status, body = await conn.post(nxt)
            if status == 204:
                return
            if status != 200:
                raise RuntimeError(f"{worker}: next answered {status}: {body[:200]!r}")
            task = json.loads(body)
        status, answer = await conn.post(f"/v1/workers/tasks/{task['task_id']}/result?worker={worker}{then}",
                                         result_body(task, output))
        t1 = time.monotonic()
        if status != 200:
            raise RuntimeError(f"{worker}: result answered {status}: {answer[:200]!r}")
        done, answer = task, json.loads(answer)
        task = answer.get("next")
        out["first"] = min(out["first"], t0)
        out["last"] = max(out["last"], t1)
        out["latency"].append(t1 - t0)
        out["tasks"].append(done["task_id"])
        out["units"] += len(done["units"])
        out["accepted"] += answer["accepted"]


async def bare_worker(conn: Conn, count: int, out: dict) -> None:
    """``count`` empty POSTs, each answered by the bare server: the HTTP layer alone."""
    for _ in range(count):
        t0 = time.monotonic()
        status, _body = await conn.post("/v1/workers/bare/next?worker=w&wait=1")
        t1 = time.monotonic()
        if status != 200:
            raise RuntimeError(f"the bare server answered {status}")
        out["first"] = min(out["first"], t0)
        out["last"] = max(out["last"], t1)
        out["latency"].append(t1 - t0)
        out["tasks"].append("")


def client_process(address: str, token: str, creds: list[tuple[str, str, str]], wait: float, output: int,
                   pipe, bare: int = 0, piggyback: bool = False) -> None:
    """One client process: its share of the workers, started when the parent says go
    (``bare``: that many requests per worker to the bare server instead)."""

    async def main() -> dict:
        host, port = address.rsplit(":", 1)
        conns = [Conn(host, int(port), token, c) for _p, _w, c in creds]
        for conn in conns:
            await conn.open()
        pipe.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        out = {"first": float("inf"), "last": 0.0, "latency": [], "tasks": [], "units": 0, "accepted": 0}
        cpu0 = os.times()
        try:
            if bare:
                await asyncio.gather(*(bare_worker(conn, bare, out) for conn in conns))
            else:
                await asyncio.gather(*(one_worker(conn, p, w, wait, output, out, piggyback)
                                       for conn, (p, w, _c) in zip(conns, creds, strict=True)))
        finally:
            for conn in conns:
                conn.close()
        cpu1 = os.times()
        out["cpu"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        return out

    try:
        pipe.send(asyncio.run(main()))
    except Exception as exc:  # reported to the parent, which fails the run
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})


# ---- one measurement --------------------------------------------------------


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v) - idle) / TICKS, sum(v) / TICKS


def commit_files(c: Client, repo: str, n: int, tag: str) -> str:
    """N new one-byte files at the root of ``repo``, one commit: N new datums."""
    com = c.start_commit(repo, "master")
    c.put_files(repo, com.id, (wire.encode_small_put(f"{tag}-{i:06d}", b"x") for i in range(n)))
    c.finish_commit(repo, com.id)
    return com.id


def wait_job(c: Client, pipeline: str, commit: str, timeout: float = 120.0):
    """The job of ``pipeline`` on input ``commit``, once it exists (its tasks are then queued)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = c.list_job(pipeline, input=f"{REPOS[pipeline]}@{commit}")
        if jobs:
            return jobs[0]
        time.sleep(0.02)
    raise RuntimeError(f"no job of {pipeline} on {REPOS[pipeline]}@{commit} within {timeout:g} s")


def setup(d: Daemon) -> None:
    """``scale``: one datum per task; ``batched``: the scheduler's own task sizing (as
    for 50 workers on a machine whose worker budget is 4), on a repo of its own."""
    with d.client() as c:
        for name, extra in ((PIPELINE, {"datum_set_spec": {"number": 1}}),
                            (BATCHED, {"parallelism_spec": {"constant": 50}})):
            c.create_repo(REPOS[name])
            c.create_pipeline({"pipeline": {"name": name}, "input": {"pfs": {"repo": REPOS[name], "glob": "/*"}},
                               "transform": {"cmd": ["true"]}} | extra)


def measure(d: Daemon, pipeline: str, creds: list[tuple[str, str, str]], n: int, procs: int, *,
            output: int = 0, tag: str = "", piggyback: bool = False) -> dict:
    """One job of ``n`` datums served by the simulated workers ``creds``; its figures."""
    ctx = multiprocessing.get_context("spawn")
    procs = max(1, min(procs, len(creds)))
    shares = [creds[i::procs] for i in range(procs)]
    pipes, children = [], []
    for share in shares:
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=client_process, args=(d.address, d.token, share, 1.0, output, theirs, 0, piggyback),
                        daemon=True)
        p.start()
        pipes.append(mine)
        children.append(p)
    try:
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a client process did not connect")
        with d.client() as c:
            commit = commit_files(c, REPOS[pipeline], n, tag or f"{pipeline}-{len(creds)}")
            job = wait_job(c, pipeline, commit)
        rss0, cpu0, (busy0, all0) = d.status("VmRSS"), d.cpu(), machine_busy()
        t0 = time.monotonic()
        for pipe in pipes:
            pipe.send("go")
        outs = [pipe.recv() for pipe in pipes]
        wall = time.monotonic() - t0
        cpu1, (busy1, all1) = d.cpu(), machine_busy()
    finally:
        for p in children:
            p.join(10)
            if p.is_alive():
                p.kill()
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        raise RuntimeError("; ".join(errors))
    with d.client() as c:
        done = c.inspect_job(job.id, wait=True)
    tasks = [t for o in outs for t in o["tasks"]]
    lat = sorted(x for o in outs for x in o["latency"])
    first, last = min(o["first"] for o in outs), max(o["last"] for o in outs)
    span = last - first
    clients_cpu = sum(o["cpu"] for o in outs)
    daemon_cpu = cpu1 - cpu0
    units = sum(o["units"] for o in outs)
    res = {
        "workers": len(creds), "procs": procs, "datums": n, "round_trips": len(tasks), "span": span, "wall": wall,
        "rate": len(tasks) / span, "datums_s": units / span,
        "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "mean": statistics.fmean(lat),
        "daemon_cores": daemon_cpu / wall, "clients_cores": clients_cpu / wall,
        "other_cores": max(0.0, (busy1 - busy0) - daemon_cpu - clients_cpu) / wall,
        "machine_cores": (all1 - all0) / wall,
        "rss_before": rss0, "rss_after": d.status("VmRSS"),
        "duplicates": len(tasks) - len(set(tasks)), "accepted": sum(o["accepted"] for o in outs), "units": units,
        "job_state": done.state, "processed": done.data_processed, "job_total": done.data_total,
        "job_skipped": done.data_skipped,
    }
    res["exactly_once"] = (res["duplicates"] == 0 and res["accepted"] == units == n == done.data_processed
                           and done.state == "success")
    log(f"{pipeline}, {len(creds)} workers{' (piggyback)' * piggyback}: {res['rate']:,.0f} round trips/s, {res['datums_s']:,.0f} datums/s, "
        f"p50 {res['p50'] * 1e3:.1f} ms, p99 {res['p99'] * 1e3:.1f} ms; daemon {res['daemon_cores']:.2f} cores, "
        f"clients {res['clients_cores']:.2f}, rest {res['other_cores']:.2f}; exactly once: {res['exactly_once']}")
    return res


def measure_bare(work: pathlib.Path, workers: int, requests: int) -> dict:
    """The bare server (``serve_bare``) under ``workers`` connections of ``requests`` each:
    requests/s and its CPU per request."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    with open(work / "bare.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.mountd_scale", "bare", address],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=BENCH.parent)
    ctx = multiprocessing.get_context("spawn")
    try:
        deadline = time.monotonic() + 30
        while True:  # up when it accepts a connection
            try:
                socket.create_connection((address.split(":")[0], int(address.split(":")[1])), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the bare server did not start; see {work / 'bare.log'}") from None
                time.sleep(0.05)
        mine, theirs = ctx.Pipe()
        creds = [("bare", f"w{i}", "-") for i in range(workers)]
        child = ctx.Process(target=client_process, args=(address, "-", creds, 1.0, 0, theirs, requests), daemon=True)
        child.start()
        assert mine.recv() == "ready"
        cpu0 = _proc_cpu(proc.pid)
        t0 = time.monotonic()
        mine.send("go")
        res = mine.recv()
        wall = time.monotonic() - t0
        cpu = _proc_cpu(proc.pid) - cpu0
        child.join(10)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if "error" in res:
        raise RuntimeError(res["error"])
    n = len(res["tasks"])
    lat = sorted(res["latency"])
    out = {"requests": n, "rate": n / (res["last"] - res["first"]), "cpu_per_request": cpu / n,
           "server_cores": cpu / wall, "clients_cores": res["cpu"] / wall,
           "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}
    log(f"bare hypercorn, {workers} connections: {out['rate']:,.0f} requests/s, "
        f"{out['cpu_per_request'] * 1e6:.0f} us CPU per request")
    return out


def metadata_figures(home: pathlib.Path) -> dict:
    """What the jobs left in meta.sqlite: rows and bytes (dbstat) of the datum table."""
    import sqlite3

    db = sqlite3.connect(f"file:{home / 'meta.sqlite'}?mode=ro", uri=True)
    try:
        sizes = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        datums = db.execute("SELECT COUNT(*) FROM pps_datums").fetchone()[0]
        jobs = db.execute("SELECT COUNT(*) FROM pps_jobs").fetchone()[0]
    finally:
        db.close()
    datum_bytes = sizes.get("pps_datums", 0) + sizes.get("pps_datums_by_unit", 0)
    return {"datum_rows": datums, "jobs": jobs, "datum_bytes": datum_bytes, "total_bytes": sum(sizes.values()),
            "bytes_per_datum_row": datum_bytes / max(1, datums)}


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# ---- the table ----------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms"


HEADER = ("setting", "round trips/s", "vs 1 worker", "latency p50 / p99", "daemon CPU per round trip",
          "CPU cores: daemon / clients / rest", "daemon RSS after", "exactly once")


def row(label: str, r: dict, base: dict | None, rate: str | None = None) -> tuple[str, ...]:
    return (label, rate or f"{r['rate']:,.0f}/s", f"{r['rate'] / base['rate']:.2f}x" if base else "-",
            f"{ms(r['p50'])} / {ms(r['p99'])}", f"{r['daemon_cores'] * r['wall'] / r['round_trips'] * 1e6:,.0f} us",
            f"{r['daemon_cores']:.2f} / {r['clients_cores']:.2f} / {r['other_cores']:.2f}",
            f"{r['rss_after']:.0f} MB", "yes" if r["exactly_once"] else "NO")


def run(work: pathlib.Path, args: argparse.Namespace) -> tuple[list[tuple[str, ...]], dict]:
    most = max(args.workers)
    creds = mint([PIPELINE, BATCHED], most)
    mine = [c for c in creds if c[0] == PIPELINE]
    batched = [c for c in creds if c[0] == BATCHED]
    raw: dict = {"load_before": os.getloadavg()}
    rows: list[tuple[str, ...]] = []
    d = Daemon(work, creds, profile=args.py_spy)
    try:
        setup(d)
        # A small untimed job first: imports, caches and the first plan are not in any figure.
        measure(d, PIPELINE, mine[:2], 200, 1, tag="warm")
        results = {}
        for w in args.workers:
            n = args.n if w > 1 else max(200, args.n // 4)
            results[w] = measure(d, PIPELINE, mine[:w], n, args.procs if w >= 10 else 1)
        raw["runs"] = results
        base = results[min(args.workers)]
        for w, r in results.items():
            rows.append(row(f"{w} worker{'s' * (w > 1)}, {r['datums']:,} tasks of 1 datum", r, base))
        fig = max(results, key=lambda w: results[w]["rate"] if w >= 50 else -1)
        if args.output:
            r = raw["output"] = measure(d, PIPELINE, mine[:fig], args.n, args.procs, output=args.output,
                                        tag=f"out-{fig}")
            rows.append(row(f"{fig} workers, a {args.output}-byte output file per datum", r, base))
        r = raw["piggyback"] = measure(d, PIPELINE, mine[:fig], args.n, args.procs, tag=f"then-{fig}", piggyback=True)
        rows.append(row(f"{fig} workers, each result answered with the next task (next=true, as the shim)", r, base))
        r = raw["batched"] = measure(d, BATCHED, batched[:fig], args.n * 2, args.procs, tag=f"batched-{fig}")
        per = r["units"] / max(1, r["round_trips"])
        rows.append(row(f"{fig} workers, the scheduler's own task sizing ({per:.0f} datums a task)", r, None,
                        rate=f"{r['rate']:,.0f}/s = {r['datums_s']:,.0f} datums/s"))
        raw["peak_rss"] = d.status("VmHWM")
        m = raw["metadata"] = metadata_figures(d.home)
        rows.append((f"metadata after {m['jobs']} jobs: {m['datum_rows']:,} datum rows (a job writes one per "
                     f"datum of its input, skipped ones too)",
                     f"{m['bytes_per_datum_row']:.0f} bytes a datum row (with its index)", "-", "-", "-", "-",
                     f"meta.sqlite {m['total_bytes'] / 1e6:.0f} MB", "-"))
    finally:
        d.stop()
    if args.baseline:  # the same workload with every worker request through hypercorn + FastAPI
        d = Daemon(work / "baseline", mine[:fig], fastlane=False)
        try:
            setup(d)
            measure(d, PIPELINE, mine[:2], 200, 1, tag="warm")
            r = raw["baseline"] = measure(d, PIPELINE, mine[:fig], args.n, args.procs, tag=f"base-{fig}")
            rows.append(row(f"{fig} workers, fast lane off (PACHY_WORKER_FASTLANE=0: hypercorn + FastAPI)", r, base))
        finally:
            d.stop()
    # The ceiling: the same HTTP server with an app that does nothing, the same clients.
    b = raw["bare"] = measure_bare(work, fig, max(200, args.n // fig))
    rows.append(("HTTP server alone (hypercorn on trio, empty app), " f"{fig} connections",
                 f"{b['rate'] / 2:,.0f}/s ({b['rate']:,.0f} requests/s)", "-", f"{ms(b['p50'])} / {ms(b['p99'])}",
                 f"{b['cpu_per_request'] * 2e6:,.0f} us", f"{b['server_cores']:.2f} / {b['clients_cores']:.2f} / -",
                 "-", "-"))
    raw["load_after"] = os.getloadavg()
    best = results[fig]
    raw["figure"] = {"workers": fig, "rate": best["rate"], "rss": raw["peak_rss"],
                     "pass": best["rate"] >= 2000 and raw["peak_rss"] <= 300 and fig >= 50}
    return rows, raw


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bare"]:
        return serve_bare(argv[1])
    if argv[:1] == ["serve"]:
        rest = argv[2:]
        return serve(argv[1], rest[1:] if rest[:1] == ["--"] else rest)
    p = argparse.ArgumentParser(prog="python -m bench.mountd_scale", description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20000, help="datums per measured job (default 20000; 1 worker: n/4)")
    p.add_argument("--workers", type=lambda s: sorted(int(x) for x in s.split(",")), default=[1, 10, 50, 100],
                   help="simulated workers per run, comma-separated (default 1,10,50,100)")
    p.add_argument("--procs", type=int, default=1, help="client processes for 10 or more workers (default 1)")
    p.add_argument("--output", type=int, default=16, help="bytes of output per datum in the extra run (0: none)")
    p.add_argument("--quick", action="store_true", help="n=3000")
    p.add_argument("--baseline", action="store_true",
                   help="also measure the most workers with the worker fast lane off (a second daemon)")
    p.add_argument("--py-spy", metavar="OUT",
                   help="record the daemon with py-spy (collapsed stacks of the thread holding the GIL; slows it)")
    p.add_argument("--json", metavar="OUT", help="the figures as JSON (default bench/out/mountd_scale.json)")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    if args.quick:
        args.n = 3000
    import tempfile

    os.makedirs(args.dir, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="mountd-scale-", dir=os.path.abspath(args.dir)))
    log(f"scratch: {work}")
    try:
        rows, raw = run(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    f = raw["figure"]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + " --- |" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    verdict = "PASS" if f["pass"] else "FAIL"
    print(f"\nfigure (>= 2,000 round trips/s from >= 50 workers, daemon peak RSS <= 300 MB): "
          f"{f['rate']:,.0f}/s at {f['workers']} workers, peak RSS {f['rss']:.0f} MB: {verdict}")
    print(f"load average (1 min) before / after: {raw['load_before'][0]:.1f} / {raw['load_after'][0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    out = args.json or str(BENCH / "out" / "mountd_scale.json")
    pathlib.Path(out).write_text(json.dumps({"rows": rows, "raw": raw}, indent=2, default=str))
    return 0 if f["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
