"""Per-datum throughput of the Docker runner against the local runner, in the same run.

One daemon with ``PACHY_RUNNER=docker``: a pipeline without an image runs locally,
the same pipeline with ``pachy-test/busybox:1`` (tests/images.py) runs in a
container. Each, once its worker is warm, does one job of N one-file datums (one
process per datum, ``cp``, as bench/pps.py's b)); the figure is datums/s from the
job's start to its end.

    PYTHONPATH=. python -m bench.docker_units [-n 2000] [--chunk 0]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import tempfile
import time

from bench.ingest import Daemon, connect, log
from bench.pps import COPY_ALL, body, unit_breakdown
from mountd import wire
from tests.images import BUSYBOX_IMAGE, ensure_images


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=0, help="chunk_spec.number (0: one datum per task)")
    ap.add_argument("--latency", type=int, default=0, help="also: commit -> output p50 over this many commits, "
                    "and the daemon's RSS with 8 container workers")
    args = ap.parse_args()
    import docker

    ensure_images(docker.from_env())
    work = pathlib.Path(tempfile.mkdtemp(prefix="pachy-bench-docker-"))
    os.environ["PACHY_RUNNER"] = "docker"
    d = Daemon(work / "home", work / "mountd.log")
    rates = {}
    try:
        with connect(work / "home") as c:
            for name, image in (("local", ""), ("docker", BUSYBOX_IMAGE), ("local2", ""), ("docker2", BUSYBOX_IMAGE)):
                # A repo each, warmed by a one-file commit first: the figure is a warm worker's
                # (the container's and the shim's start are not in it).
                repo = f"in{name}"
                c.create_repo(repo)
                spec = {"pipeline": {"name": name}, "input": {"pfs": {"repo": repo, "glob": "/*", "name": "in"}},
                        "transform": {"cmd": COPY_ALL} | ({"image": image} if image else {})}
                if args.chunk:
                    spec["chunk_spec"] = {"number": args.chunk}
                c.create_pipeline(spec)
                warm = c.start_commit(repo, "master")
                c.put_file(repo, warm.id, "warm", b"w")
                c.finish_commit(repo, warm.id)
                assert not c.flush_commit([(repo, warm.id)], timeout=120).failed_jobs
                t0 = time.perf_counter()
                com = c.start_commit(repo, "master")
                c.put_files(repo, com.id, (wire.encode_small_put(f"f{i:05d}", body(i)) for i in range(args.n)))
                c.finish_commit(repo, com.id)
                res = c.flush_commit([(repo, com.id)], timeout=600)
                assert not res.failed_jobs, res.failed_jobs
                job = c.list_job(name, input=f"{repo}@{com.id}")[0]
                assert job.state == "success" and job.data_processed == args.n, job
                rates[name] = args.n / (job.finished - job.started)
                log(f"{name}: {rates[name]:,.0f} datums/s (job {job.finished - job.started:.2f} s, "
                    f"wall {time.perf_counter() - t0:.2f} s)")
                b = unit_breakdown(job.started, job.finished, c.list_datum(job.id))
                log(f"{name}: unit p50 {b['run_p50'] * 1e3:.2f} ms, {b['boundaries']} task boundaries of "
                    f"{b['boundary_mean'] * 1e3:.2f} ms, short gaps {b['gap_short_sum']:.2f} s")
                c.delete_pipeline(name)
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)
    local = max(rates["local"], rates["local2"])
    if args.latency:
        lat = latency(args.latency)
        print(f"| commit -> output p50, one datum, warm worker | local {lat['local'] * 1e3:.1f} ms | "
              f"docker {lat['docker'] * 1e3:.1f} ms | docker/local {lat['docker'] / lat['local']:.2f} |")
        print(f"| daemon RSS with 8 container workers | {lat['rss8']:.0f} MB |")
    dock = max(rates["docker"], rates["docker2"])
    print(f"| datums/s, {args.n} one-file datums, chunk {args.chunk or 'none'} | local {local:,.0f} | "
          f"docker {dock:,.0f} | docker/local {dock / local:.2f} |")
    return 0


def latency(n: int) -> dict[str, float]:
    """Commit -> output p50 of a one-datum cp pipeline (warm worker), local and docker;
    then the daemon's RSS with 8 container workers running."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="pachy-bench-docker-lat-"))
    os.environ["PACHY_MAX_WORKERS"] = "8"  # the default budget is 2 per core
    d = Daemon(work / "home", work / "mountd.log")
    out: dict[str, float] = {}
    try:
        with connect(work / "home") as c:
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
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
