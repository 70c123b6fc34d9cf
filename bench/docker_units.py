"""Per-datum throughput of the Docker runner against the local runner, in the same run.

One daemon with ``PACHY_RUNNER=docker``: a pipeline without an image runs locally,
the same pipeline with ``pachy-test/busybox:1`` (tests/images.py) runs in a
container. Each does one job of N one-file datums (one process per datum, ``cp``,
as bench/pps.py's b)); the figure is datums/s from the job's start to its end.

    PYTHONPATH=. python -m bench.docker_units [-n 2000] [--chunk 0]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
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
    args = ap.parse_args()
    import docker

    ensure_images(docker.from_env())
    work = pathlib.Path(tempfile.mkdtemp(prefix="pachy-bench-docker-"))
    os.environ["PACHY_RUNNER"] = "docker"
    d = Daemon(work / "home", work / "mountd.log")
    rates = {}
    try:
        with connect(work / "home") as c:
            c.create_repo("in")
            com = c.start_commit("in", "master")
            c.put_files("in", com.id, (wire.encode_small_put(f"f{i:05d}", body(i)) for i in range(args.n)))
            c.finish_commit("in", com.id)
            for name, image in (("local", ""), ("docker", BUSYBOX_IMAGE), ("local2", ""), ("docker2", BUSYBOX_IMAGE)):
                spec = {"pipeline": {"name": name}, "input": {"pfs": {"repo": "in", "glob": "/*"}},
                        "transform": {"cmd": COPY_ALL} | ({"image": image} if image else {})}
                if args.chunk:
                    spec["chunk_spec"] = {"number": args.chunk}
                t0 = time.perf_counter()
                c.create_pipeline(spec)
                res = c.flush_commit([("in", com.id)], timeout=600)
                assert not res.failed_jobs, res.failed_jobs
                job = c.list_job(name)[0]
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
    dock = max(rates["docker"], rates["docker2"])
    print(f"| datums/s, {args.n} one-file datums, chunk {args.chunk or 'none'} | local {local:,.0f} | "
          f"docker {dock:,.0f} | docker/local {dock / local:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
