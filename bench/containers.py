"""Containers benchmark (issue 10), one run, one table of ratios:

a) per-datum throughput of the Docker runner against the local runner on the same
   N one-file datums (one process per datum, ``cp``, as bench/pps.py's b)), then
   batched (``chunk_spec``): one daemon, a pipeline without an image (local) and the
   same pipeline in ``pachy-test/busybox:1`` (tests/images.py), each warmed by a
   one-file commit first and run twice, alternating; the best of each;
b) commit -> output p50 of a one-datum pipeline, warm worker, Docker vs local;
c) the daemon's RSS with 8 container workers;
d) lazy inputs (bench/lazy.py): first byte and bytes read for a datum reading 1 MiB
   of a 1 GiB input, lazy vs copied.

    .venv/bin/python -m bench.containers                 # n=2000, chunk 100, 20 commits, 1 GiB
    .venv/bin/python -m bench.containers --quick         # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

from bench import lazy
from bench.ingest import BENCH, Daemon, Report, connect, in_scratch, log
from bench.pps import COPY_ALL, body, ms, unit_breakdown
from mountd import wire
from tests.images import BUSYBOX_IMAGE, ensure_images


def throughput(work: pathlib.Path, n: int, chunk: int) -> dict[str, float]:
    """Datums/s of a warm worker, local and docker (best of two runs each, alternating)."""
    home = work / f"home-units-{chunk}"
    d = Daemon(home, work / f"mountd-units-{chunk}.log")
    rates: dict[str, float] = {}
    try:
        with connect(home) as c:
            for name, image in (("local", ""), ("docker", BUSYBOX_IMAGE), ("local2", ""), ("docker2", BUSYBOX_IMAGE)):
                # A repo each, warmed by a one-file commit first: the figure is a warm worker's
                # (the container's and the shim's start are not in it).
                repo = f"in{name}"
                c.create_repo(repo)
                spec = {"pipeline": {"name": name}, "input": {"pfs": {"repo": repo, "glob": "/*", "name": "in"}},
                        "transform": {"cmd": COPY_ALL} | ({"image": image} if image else {})}
                if chunk:
                    spec["chunk_spec"] = {"number": chunk}
                c.create_pipeline(spec)
                warm = c.start_commit(repo, "master")
                c.put_file(repo, warm.id, "warm", b"w")
                c.finish_commit(repo, warm.id)
                assert not c.flush_commit([(repo, warm.id)], timeout=120).failed_jobs
                com = c.start_commit(repo, "master")
                c.put_files(repo, com.id, (wire.encode_small_put(f"f{i:05d}", body(i)) for i in range(n)))
                c.finish_commit(repo, com.id)
                res = c.flush_commit([(repo, com.id)], timeout=600)
                assert not res.failed_jobs, res.failed_jobs
                job = c.list_job(name, input=f"{repo}@{com.id}")[0]
                assert job.state == "success" and job.data_processed == n, job
                rates[name] = n / (job.finished - job.started)
                b = unit_breakdown(job.started, job.finished, c.list_datum(job.id))
                log(f"{name} (chunk {chunk or 'none'}): {rates[name]:,.0f} datums/s, unit p50 "
                    f"{b['run_p50'] * 1e3:.2f} ms")
                c.delete_pipeline(name)
    finally:
        d.stop()
    return {"local": max(rates["local"], rates["local2"]), "docker": max(rates["docker"], rates["docker2"])}


def latency(work: pathlib.Path, n: int) -> dict[str, float]:
    """Commit -> output p50 of a one-datum cp pipeline (warm worker), local and docker;
    then the daemon's RSS with 8 container workers running."""
    os.environ["PACHY_MAX_WORKERS"] = "8"  # the default budget is 2 per core
    d = Daemon(work / "home-latency", work / "mountd-latency.log")
    out: dict[str, float] = {}
    try:
        with connect(work / "home-latency") as c:
            for name, image in (("local", ""), ("docker", BUSYBOX_IMAGE)):
                repo = f"in{name}"
                c.create_repo(repo)
                c.create_pipeline({"pipeline": {"name": name}, "input": {"pfs": {"repo": repo, "glob": "/"}},
                                   "transform": {"cmd": ["cp", "-r", f"/pfs/{repo}/.", "/pfs/out/"]}
                                   | ({"image": image} if image else {})})
                times = []
                for i in range(n + 1):
                    t0 = time.perf_counter()
                    com = c.start_commit(repo, "master")
                    c.put_file(repo, com.id, "f", body(i), overwrite=True)
                    c.finish_commit(repo, com.id)
                    res = c.flush_commit([(repo, com.id)], timeout=60)
                    assert not res.failed_jobs, res.failed_jobs
                    if i:  # the first one starts the worker
                        times.append(time.perf_counter() - t0)
                out[name] = statistics.median(times)
                log(f"{name}: commit -> output p50 {out[name] * 1e3:.1f} ms")
                c.delete_pipeline(name)
            c.create_pipeline({"pipeline": {"name": "eight"}, "input": {"pfs": {"repo": "indocker", "glob": "/*"}},
                               "transform": {"cmd": ["true"], "image": BUSYBOX_IMAGE},
                               "parallelism_spec": {"constant": 8}})
            import docker

            engine = docker.from_env()
            deadline = time.monotonic() + 120
            while len(engine.containers.list(filters={"label": "pachy.pipeline=eight"})) < 8:
                assert time.monotonic() < deadline, "8 container workers did not start"
                time.sleep(0.2)
            with open(f"/proc/{d.proc.pid}/status") as f:
                out["rss8"] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
            c.delete_pipeline("eight")
    finally:
        d.stop()
    return out


def run(rep: Report, work: pathlib.Path, args: argparse.Namespace) -> None:
    import docker

    ensure_images(docker.from_env())
    os.environ["PACHY_RUNNER"] = "auto"
    one = throughput(work, args.n, 0)
    r = one["docker"] / one["local"]
    rep.add(f"a) datums/s, {args.n:,} one-file datums, one process each: local", f"{one['local']:,.0f}")
    rep.add("a) the same in a container (docker)", f"{one['docker']:,.0f}", ">= 250", one["docker"] >= 250)
    rep.add("a) docker / local, one process per datum", f"{r:.2f}", ">= 0.50", r >= 0.5)
    batched = throughput(work, args.n, args.chunk)
    r = batched["docker"] / batched["local"]
    rep.add(f"a) datums/s, chunk_spec {args.chunk}: local / docker",
            f"{batched['local']:,.0f} / {batched['docker']:,.0f}")
    rep.add(f"a) docker / local, chunk_spec {args.chunk}", f"{r:.2f}", ">= 0.80", r >= 0.8)
    lat = latency(work, args.commits)
    r = lat["docker"] / lat["local"]
    rep.add(f"b) commit -> output p50 of {args.commits}, one datum, warm worker: local / docker",
            f"{ms(lat['local'])} / {ms(lat['docker'])}")
    rep.add("b) docker / local, commit -> output p50", f"{r:.2f}x", "<= 2x", r <= 2)
    rep.add("c) daemon RSS with 8 container workers", f"{lat['rss8']:.0f} MB", "<= 300 MB", lat["rss8"] <= 300)
    rep.raw.update(throughput=one, batched=batched, latency=lat)
    (work / "lazy").mkdir()
    figures = lazy.measure(work / "lazy", args.size, args.rounds)
    before = len(rep.rows)
    lazy.add_rows(rep, figures)
    rep.rows[before:] = [(f"d) {f}", *rest) for f, *rest in rep.rows[before:]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.containers", description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000, help="one-file datums per job (default 2000)")
    p.add_argument("--chunk", type=int, default=100, help="chunk_spec.number of the batched run (default 100)")
    p.add_argument("--commits", type=int, default=20, help="commits for the latency p50 (default 20)")
    p.add_argument("--size", type=int, default=1024, help="the lazy input's size in MiB (default 1024)")
    p.add_argument("--rounds", type=int, default=3, help="lazy jobs per pipeline (default 3)")
    p.add_argument("--quick", action="store_true", help="n=300, 5 commits, a 128 MiB lazy input")
    p.add_argument("--json", metavar="OUT", help="the figures as JSON (default bench/out/containers.json)")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.commits, args.size, args.rounds = 300, 5, 128, 1
    args.json = args.json or str(BENCH / "out" / "containers.json")
    return in_scratch(args, "containers-", lambda rep, work: run(rep, work, args))


if __name__ == "__main__":
    sys.exit(main())
