"""Ingest benchmark (bench/README.md): put-file MB/s, small files/s, DVC as the peer,
peak RSS, storage of appended versions, finishing a commit in a 1M-file repo. Prints
one markdown table (figure, value, target, PASS/FAIL); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import pathlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import blake3
import pyfastcdc
import zstandard

from mountd import wire
from pachctl.client import Client
from pfsfuse.pfs import PFS

MiB = 1 << 20
MB = 1e6  # throughput and RSS are in MB (10^6 bytes); sizes in MiB
BENCH = pathlib.Path(__file__).resolve().parent
DVC_VENV = BENCH / ".venv-dvc"
DVC_ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd: str | os.PathLike, **kw) -> str:
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, **kw).stdout


def timed(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


LEVELS = [b"INFO"] * 6 + [b"DEBUG"] * 3 + [b"WARN", b"ERROR"]
SERVICES = [b"payments", b"orders", b"auth", b"search", b"billing", b"gateway", b"users"]
VERBS = [b"GET", b"POST", b"PUT", b"DELETE"]
ROUTES = [b"/api/v1/orders", b"/api/v1/users", b"/api/v2/search", b"/healthz", b"/login"]
STATUS = [200, 200, 200, 201, 204, 404, 500]
LINE = b"%02d:%02d:%02d.%03d,%s,host-%03d,%s,%s %s/%d,%d,%.1fms,user=%d\n"


def text_lines(rng: random.Random, n: int) -> list[bytes]:
    """Log/CSV-like lines; text picked from them at random has a zstd-1 ratio of ~3.5."""
    r, c = rng.randrange, rng.choice
    return [
        LINE % (r(24), r(60), r(60), r(1000), c(LEVELS), r(64), c(SERVICES), c(VERBS), c(ROUTES),
                r(100000), c(STATUS), rng.random() * 300, r(50000))
        for _ in range(n)
    ]  # fmt: skip


def write_file(path: pathlib.Path, size: int, text: bool) -> None:
    """Text-like (4 MiB blocks of random picks from 65,536 lines) or random bytes."""
    rng = random.Random(1)
    lines = text_lines(rng, 1 << 16) if text else []
    with open(path, "wb") as f:
        while (left := size - f.tell()) > 0:
            f.write(b"".join(rng.choices(lines, k=4 * MiB // 80))[:left] if text
                    else os.urandom(min(64 * MiB, left)))  # fmt: skip


def write_small(root: pathlib.Path, n: int) -> None:
    """n distinct 1 KiB text files, 1,000 per directory."""
    rng = random.Random(2)
    lines = text_lines(rng, 4096)
    for i in range(n):
        d = root / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        body = b"%08d\n" % i + b"".join(rng.choices(lines, k=20))
        (d / f"f{i:07d}.csv").write_bytes(body[:1024])


def small_paths(root: pathlib.Path) -> list[pathlib.Path]:
    return [root / d / f for d in sorted(os.listdir(root)) for f in sorted(os.listdir(root / d))]


def warm(path: pathlib.Path) -> None:
    """Read a file (or every file of a write_small tree) so that it is in the page cache."""
    for p in small_paths(path) if path.is_dir() else [path]:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


def connect(home: pathlib.Path):
    # What Client(home=home) resolves to, pinned so that no ADDRESS or config file redirects it.
    return Client(f"unix:{home / 'mountd.sock'}", home=str(home), autostart=False)


def peak_mb(pid: int | str = "self") -> float:
    # VmHWM: getrusage's ru_maxrss is no good in a spawned child (Linux carries the
    # forking parent's peak over the exec).
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024 / MB


class Daemon:
    """A real `python -m mountd --home HOME` subprocess."""

    def __init__(self, home: pathlib.Path, logfile: pathlib.Path):
        home.mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as out:
            cmd = [sys.executable, "-m", "mountd", "--home", str(home)]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        with connect(home) as client:
            while True:
                try:
                    client.version()
                    return
                except Exception:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"mountd did not start; see {logfile}") from None
                    time.sleep(0.05)

    def stop(self) -> float:  # returns the daemon's peak RSS in MB
        peak = peak_mb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return peak


def in_child(fn, *args):
    """Run fn in a fresh interpreter, so that each measurement has its own peak RSS."""
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def child_put(home: pathlib.Path, repo: str, dest: str, src, overwrite: bool):
    """start-commit, put-file (src: a pathlib.Path or bytes), finish: (secs, client peak MB)."""
    with connect(home) as c:
        t0 = time.perf_counter()
        commit = c.start_commit(repo, "master")
        c.put_file(repo, commit.id, dest, src, overwrite=overwrite)
        c.finish_commit(repo, commit.id)
        return time.perf_counter() - t0, peak_mb()


def child_put_files(home: pathlib.Path, repo: str, root: pathlib.Path):
    """Every file under root (listed, read, sent) in one put_files request, then finish."""
    with connect(home) as c:
        t0 = time.perf_counter()
        commit = c.start_commit(repo, "master")
        paths = small_paths(root)
        records = (wire.encode_small_put(str(p.relative_to(root)), p.read_bytes()) for p in paths)
        assert c.put_files(repo, commit.id, records).files == len(paths)
        c.finish_commit(repo, commit.id)
        return time.perf_counter() - t0, peak_mb()


def child_versions(home: pathlib.Path, repo: str, work: pathlib.Path, base: int, n: int):
    """A random file of `base` bytes, then n versions each appending 1 MiB, each a new file
    put with overwrite=True in its own commit by its own client: (secs, largest peak MB)."""
    cur = work / "v00.bin"
    write_file(cur, base, text=False)
    t0, peaks = time.perf_counter(), []
    for k in range(n + 1):
        if k:
            nxt = work / f"v{k:02d}.bin"
            shutil.copyfile(cur, nxt)
            with open(nxt, "ab") as f:
                f.write(os.urandom(MiB))
            cur.unlink()
            cur = nxt
        peaks.append(in_child(child_put, home, repo, "data.bin", cur, True)[1])
    cur.unlink()
    return time.perf_counter() - t0, max(peaks)


def with_daemon(work: pathlib.Path, name: str, fn, *args) -> dict:
    """A fresh home and daemon, repo `name`, then fn(home, name, *args) in a client process."""
    home = work / f"home-{name}"
    d = Daemon(home, work / f"mountd-{name}.log")
    with connect(home) as c:
        c.create_repo(name)
    secs, client_mb = in_child(fn, home, name, *args)
    stored = int(sh("du", "-sb", home / "objects").split()[0])
    out = {"secs": secs, "stored": stored, "daemon_mb": d.stop(), "client_mb": client_mb}
    shutil.rmtree(home)
    return out


def cdc_limit(path: pathlib.Path, threads: int = 2) -> tuple[float, float]:
    """pyfastcdc + blake3 + zstd-1 over the file (read into memory first), chunks hashed
    and compressed on `threads` threads: (MB/s, zstd ratio)."""
    data = path.read_bytes()
    cdc = pyfastcdc.FastCDC(MiB, min_size=256 << 10, max_size=4 * MiB)
    local = threading.local()

    def work(chunk: memoryview) -> int:
        if not hasattr(local, "z"):
            local.z = zstandard.ZstdCompressor(level=1)
        blake3.blake3(chunk).digest()
        return len(local.z.compress(chunk))

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:  # chunks are views: no copies queue up
        stored = sum(pool.map(work, (c.data for c in cdc.cut_buf(data))))
    return len(data) / (time.perf_counter() - t0) / MB, len(data) / stored


def dvc_add(exe: pathlib.Path, work: pathlib.Path, src: pathlib.Path) -> float:
    """Seconds for `dvc add` of a copy of src inside a fresh git + dvc repo."""
    repo = work / "dvc-repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh(exe, "init", "-q", cwd=repo, env=DVC_ENV)
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, repo / src.name)
    warm(repo / src.name)
    sh("sync")
    secs = timed(sh, exe, "add", "-q", src.name, cwd=repo, env=DVC_ENV)
    shutil.rmtree(repo)
    return secs


def big_repo(work: pathlib.Path, n: int, per_commit: int = 100_000, tries: int = 5) -> dict:
    """A repo of n tiny files built with the engine, then one-file commits on top."""
    home = work / "home-big"
    pfs = PFS(str(home))
    pfs.create_repo("big")

    def commit(paths, ms: list | None = None) -> None:
        c = pfs.start_commit("big", "master")
        with pfs.write_session("big", c.id) as s:
            for path in paths:
                s.put_bytes(path, path.encode())
            s.commit()
        secs = timed(pfs.finish_commit, "big", c.id)
        if ms is not None:
            ms.append(secs * 1e3)

    t0 = time.perf_counter()
    for start in range(0, n, per_commit):
        commit(f"d{i // 1000:04d}/f{i:07d}" for i in range(start, min(n, start + per_commit)))
        log(f"  big repo: {min(n, start + per_commit):,} files")
    build, engine, wall = time.perf_counter() - t0, [], []
    for k in range(tries):
        commit([f"d0000/new-{k}"], engine)
    pfs.close()
    d = Daemon(home, work / "mountd-big.log")
    for k in range(tries):
        wall.append(in_child(child_put, home, "big", f"d0001/new-{k}", b"hello", False)[0] * 1e3)
    out = {"build_s": build, "finish_ms": statistics.median(engine), "engine_ms": engine,
           "daemon_ms": statistics.median(wall), "wall_ms": wall, "daemon_mb": d.stop()}  # fmt: skip
    shutil.rmtree(home)
    return out


class Report:
    def __init__(self, quick: bool):
        self.rows: list[tuple[str, str, str, str]] = []
        self.raw: dict = {"quick": quick, "cpus": os.cpu_count(), "load_before": os.getloadavg()}

    def add(self, figure: str, value: str, target: str = "-", ok: bool | None = None) -> None:
        verdict = "info" if ok is None else "PASS" if ok else "FAIL"
        self.rows.append((figure, value, target, verdict))

    def finish(self, json_out: str | None) -> int:
        for who in ("daemon", "client"):
            peaks = {k: r[f"{who}_mb"] for k, r in self.raw.items() if isinstance(r, dict) and f"{who}_mb" in r}
            if peaks:
                worst = max(peaks, key=peaks.get)
                each = ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
                self.add(f"d) {who} peak RSS (each run: {each})", f"{peaks[worst]:.0f} MB ({worst})",
                         "<= 300 MB", peaks[worst] <= 300)  # fmt: skip
        self.raw["load_after"] = os.getloadavg()
        load = f"{self.raw['load_before'][0]:.1f} / {self.raw['load_after'][0]:.1f}"
        self.add("load average (1 min) before / after", f"{load} on {os.cpu_count()} CPUs")
        self.rows.sort(key=lambda r: r[0][:2] if r[0][1:2] == ")" else "z")  # a) .. f)
        print("| figure | value | target | result |\n| --- | --- | --- | --- |")
        for row in self.rows:
            print("| " + " | ".join(row) + " |")
        if json_out:
            keys = ("figure", "value", "target", "result")
            rows = [dict(zip(keys, r, strict=True)) for r in self.rows]
            pathlib.Path(json_out).write_text(json.dumps({"rows": rows, "raw": self.raw}, indent=2))
        return 1 if any(r[3] == "FAIL" for r in self.rows) else 0


def run_dvc(rep: Report, work: pathlib.Path, files: dict, label: str, n_small: int) -> None:
    exe = DVC_VENV / "bin" / "dvc"  # from the bench's own venv, made on first use
    try:
        if not exe.exists():
            log(f"installing DVC into {DVC_VENV} ...")
            sh(shutil.which("python3") or sys.executable, "-m", "venv", DVC_VENV)
            sh(DVC_VENV / "bin" / "pip", "install", "-q", "-r", BENCH / "requirements-dvc.txt")
        version = sh(exe, "--version", env=DVC_ENV).strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        return rep.add("c) dvc add", f"DVC could not be installed ({exc}); skipped")
    for kind in ("text", "random"):
        log(f"dvc add {kind}")
        size = files[kind].stat().st_size
        rate = rep.raw[f"dvc_{kind}_mbps"] = size / dvc_add(exe, work, files[kind]) / MB
        ours = rep.raw[kind]["mbps"]
        rep.add(f"c) dvc {version} add {label} {kind}", f"{rate:.0f} MB/s")
        rep.add(f"c) pachy / dvc, {kind}", f"{ours / rate:.2f}x", ">= 2x", ours / rate >= 2)
    log("dvc add small files")
    rate = rep.raw["dvc_small_files_s"] = n_small / dvc_add(exe, work, files["small"])
    rep.add(f"c) dvc add {n_small:,} x 1 KiB (one directory)", f"{rate:,.0f} files/s")
    rep.add("c) pachy / dvc, small files", f"{rep.raw['small']['files_s'] / rate:.2f}x")


def run(rep: Report, work: pathlib.Path, quick: bool, dvc: bool) -> None:
    size, n_small, base, n_big = ((64 * MiB, 10_000, 32 * MiB, 100_000) if quick
                                  else (1 << 30, 100_000, 256 * MiB, 1_000_000))  # fmt: skip
    label = f"{size // MiB} MiB" if size < 1 << 30 else "1 GiB"
    files = {"text": work / "text.csv", "random": work / "random.bin", "small": work / "small"}
    log(f"generating {label} text-like and random files, {n_small:,} files of 1 KiB")
    write_file(files["text"], size, text=True)
    write_file(files["random"], size, text=False)
    write_small(files["small"], n_small)

    for kind, target in (("text", 400), ("random", 800)):
        f = files[kind]
        log(f"{kind}: hash+chunk+compress limit, cp, put-file")
        lim, ratio = cdc_limit(f)
        warm(f)
        sh("sync")
        cp = size / timed(lambda: (sh("cp", f, work / "copy"), sh("sync"))) / MB  # noqa: B023
        (work / "copy").unlink()
        r = rep.raw[kind] = with_daemon(work, kind, child_put, f.name, f, False)
        r.update(mbps=size / r["secs"] / MB, limit_mbps=lim, zstd1_ratio=ratio, cp_mbps=cp)
        what = f"zstd-1 ratio {ratio:.2f}" if kind == "text" else "incompressible"
        rep.add(f"a) put-file {label} {kind} ({what})", f"{r['mbps']:.0f} MB/s",
                f">= {target} MB/s", r["mbps"] >= target)  # fmt: skip
        rep.add(f"a) cp {kind} + sync, same disk", f"{cp:.0f} MB/s")
        rep.add(f"a) CDC+blake3+zstd-1 limit, 2 threads, {kind}", f"{lim:.0f} MB/s")
        rep.add(f"a) put-file / limit, {kind}", f"{r['mbps'] / lim:.2f}")
        rep.add(f"a) put-file / cp, {kind}", f"{r['mbps'] / cp:.2f}")
        # The path a remote client takes: every byte through the HTTP body.
        os.environ["PACHY_NO_LOCAL_READ"] = "1"
        try:
            rs = with_daemon(work, f"{kind}-streamed", child_put, f.name, f, False)
        finally:
            del os.environ["PACHY_NO_LOCAL_READ"]
        r["streamed_mbps"] = size / rs["secs"] / MB
        rep.add(f"a) put-file {kind}, streamed over HTTP (as remote clients)", f"{r['streamed_mbps']:.0f} MB/s")

    log(f"{n_small:,} files of 1 KiB: put_files")
    warm(files["small"])
    r = rep.raw["small"] = with_daemon(work, "small", child_put_files, files["small"])
    r["files_s"] = n_small / r["secs"]
    rep.add(f"b) put_files {n_small:,} x 1 KiB, one commit", f"{r['files_s']:,.0f} files/s",
            ">= 5,000 files/s", r["files_s"] >= 5000)  # fmt: skip
    if dvc:
        run_dvc(rep, work, files, label, n_small)
    else:
        rep.add("c) dvc add", "skipped (--quick or --no-dvc)")
    for f in files.values():
        shutil.rmtree(f) if f.is_dir() else f.unlink()

    log(f"versions: {base // MiB} MiB, then 10 versions each appending 1 MiB")
    r = rep.raw["versions"] = with_daemon(work, "versions", child_versions, work, base, 10)
    limit = 1.1 * base + 10 * MiB
    rep.add(f"e) objects/ after {base // MiB} MiB + 10 appended versions (du -sb)",
            f"{r['stored'] / MiB:.1f} MiB", f"<= {limit / MiB:.1f} MiB", r["stored"] <= limit)  # fmt: skip

    log(f"big repo: {n_big:,} files")
    r = rep.raw["big repo"] = big_repo(work, n_big)
    rep.add(f"f) finish_commit, 1 file on {n_big:,} files (engine, median of 5)",
            f"{r['finish_ms']:.1f} ms", "<= 50 ms", r["finish_ms"] <= 50)  # fmt: skip
    rep.add("f) start+put+finish via the daemon (median of 5)", f"{r['daemon_ms']:.1f} ms")
    rep.add(f"f) building the {n_big:,}-file repo (engine)", f"{r['build_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, no DVC: a smoke run < 60 s")
    p.add_argument("--no-dvc", action="store_true", help="skip the DVC peer")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent, on the disk to test")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    return in_scratch(args, "ingest-", lambda rep, work: run(rep, work, args.quick, not (args.quick or args.no_dvc)))


def in_scratch(args, prefix: str, body) -> int:
    """Run ``body(report, scratch_dir)`` in a fresh scratch directory under
    ``args.dir`` (removed afterwards unless ``--keep``); print the table."""
    os.makedirs(args.dir, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=os.path.abspath(args.dir)))
    log(f"scratch: {work}")
    rep = Report(args.quick)
    try:
        body(rep, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return rep.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
