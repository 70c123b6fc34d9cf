"""Pipeline benchmark (bench/README.md): commit-to-output latency of a one-datum cp pipeline,
datums/s with one process per datum, batched (chunk_spec) and on 2 workers, the incremental
second job, peak RSS; each against process spawns and plain commits measured in the same run.
Prints one markdown table (figure, value, target, PASS/FAIL/info); exits 1 on a missed target.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.ingest import BENCH, Daemon, Report, connect, in_child, in_scratch, log, peak_mb
from mountd import wire
from pachctl.client import Client

KiB = 1024
# cp itself, no shell: one exec per datum, as a user writing a cp pipeline would.
COPY_ALL = ["cp", "-r", "/pfs/in/.", "/pfs/out/"]  # every file of /pfs/in: one datum or a chunk


def ms(secs: float) -> str:
    return f"{secs * 1e3:.1f} ms"


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def body(i: int, size: int = KiB) -> bytes:
    return (b"%08d " % i * (size // 9 + 1))[:size]


def pipeline(name: str, cmd: list[str], glob: str = "/*", **extra) -> dict:
    """A 2.x spec reading repo `in`."""
    return {"pipeline": {"name": name}, "input": {"pfs": {"repo": "in", "glob": glob}},
            "transform": {"cmd": cmd}, **extra}  # fmt: skip


# -- worker processes -----------------------------------------------------------------


def shim_workers(daemon_pid: int) -> dict[str, int]:
    """The daemon's `python -m shim` children: worker id -> pid."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            argv = pathlib.Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == daemon_pid and b"shim" in argv and b"--worker" in argv:
            out[argv[argv.index(b"--worker") + 1].decode()] = int(p)
    return out


def wait_workers(home: pathlib.Path, daemon_pid: int, n: int, timeout: float = 60) -> None:
    """Until n workers run and each has said it serves (its first poll comes next)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws = shim_workers(daemon_pid)
        logs = [home / "logs" / "workers" / f"{w}.log" for w in ws]
        if len(ws) >= n and all(p.exists() and b"serving pipeline" in p.read_bytes() for p in logs):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{n} worker(s) did not come up in {timeout:g} s; see {home}/logs/workers/")


def cpu_now(daemon_pid: int) -> dict:
    """CPU seconds so far: the daemon's own, its workers' own (each also the system part), the
    user code's (the workers' reaped children: sh, cp), the whole machine's busy and total."""
    hz = os.sysconf("SC_CLK_TCK")

    def stat(pid: int) -> list[float]:  # utime, stime, cutime, cstime
        with open(f"/proc/{pid}/stat") as f:
            return [int(x) / hz for x in f.read().rpartition(")")[2].split()[11:15]]

    u, s, _, _ = stat(daemon_pid)
    out = {"daemon": u + s, "daemon_sys": s, "workers": 0.0, "workers_sys": 0.0, "user": 0.0}
    for pid in shim_workers(daemon_pid).values():
        u, s, cu, cs = stat(pid)
        out["workers"] += u + s
        out["workers_sys"] += s
        out["user"] += cu + cs
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    out["machine_busy"], out["machine_total"] = (sum(ticks) - idle) / hz, sum(ticks) / hz
    return out


def cpu_used(before: dict, after: dict) -> dict:
    d = {k: after[k] - before[k] for k in before}
    d["machine_busy_pct"] = 100 * d.pop("machine_busy") / d.pop("machine_total")
    return d


def worker_peaks(daemon_pid: int) -> dict[str, float]:
    peaks = {}
    for w, pid in shim_workers(daemon_pid).items():
        try:
            peaks[w] = peak_mb(pid)
        except OSError:
            pass
    return peaks


# -- daemons, optionally profiled -----------------------------------------------------------

PROFILE: pathlib.Path | None = None  # --profile DIR
PROFILED: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}  # (run, who) -> profile_stages


def start_daemon(work: pathlib.Path, name: str) -> Daemon:
    """A fresh home and daemon; with --profile, the daemon and its workers under cProfile
    (bench/cprofile/sitecustomize.py), dumped into PROFILE/name/ when they exit."""
    home, logfile = work / f"home-{name}", work / f"mountd-{name}.log"
    if PROFILE is None:
        return Daemon(home, logfile)
    out = PROFILE / name
    out.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("PACHY_BENCH_PROFILE", "PYTHONPATH")}
    os.environ["PACHY_BENCH_PROFILE"] = str(out)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH / "cprofile"), saved["PYTHONPATH"]]))
    try:
        return Daemon(home, logfile)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


# Stages read from the profiles, (label, file suffix, function): cumulative time per datum.
WORKER_STAGES = (
    ("poll next task (idle waits too)", "shim/link.py", "next_task"),
    ("materialize", "shim/materialize.py", "materialize"),
    ("  of which HTTP read + write files", "shim/materialize.py", "_fetch"),
    ("  of which mkdir", "shim/materialize.py", "mkdir"),
    ("unit run", "shim/execute.py", "run_unit"),
    ("  of which namespace + bind", "shim/sandbox.py", "enter"),
    ("  of which spawn (Popen)", "subprocess.py", "__init__"),
    ("  of which wait for exit, pump output", "shim/execute.py", "_pump"),
    ("  of which reap orphans", "shim/worker.py", "_reap_orphans"),
    ("collect /pfs/out", "shim/collect.py", "plan"),
    ("upload results", "shim/link.py", "upload_result"),
    ("ship logs", "shim/logs.py", "flush"),
    ("remove scratch", "shim/materialize.py", "remove"),
)
DAEMON_STAGES = (
    ("plan datums", "pps/jobs.py", "plan_v2"),
    ("start job", "pps/scheduler/running.py", "_start_job"),
    ("serve next task (idle waits too)", "pps/queue.py", "take"),
    ("serve reads (per piece)", "mountd/pps_api.py", "chunks"),
    ("ingest results", "mountd/pps_api.py", "feed"),
    ("  of which pin session commits", "pfsfuse/files.py", "commit"),
    ("record results", "pps/scheduler/running.py", "task_result"),
    ("merge + finish output", "pps/scheduler/merge.py", "_merge"),
    ("sqlite write transactions", "pfsfuse/pfs.py", "tx"),
)


def profile_stages(files: list[str], stages) -> dict[str, tuple[float, int]]:
    """label -> (cumulative seconds, calls), summed over the functions that match."""
    import pstats

    stats = pstats.Stats(*files).stats
    out = {}
    for label, suffix, func in stages:
        hits = [(v[3], v[1]) for (path, _line, fn), v in stats.items() if fn == func and path.endswith(suffix)]
        out[label] = (sum(h[0] for h in hits), sum(h[1] for h in hits))
    return out


def stop_daemon(d: Daemon, name: str) -> float:
    """Stop it (its workers first); with --profile, PROFILE/name/{mountd,workers}.txt: the
    merged profiles sorted by cumulative and by own time. Returns the daemon's peak RSS."""
    peak = d.stop()
    if PROFILE is not None:
        import io
        import pstats

        for who, pattern in (("mountd", "mountd-*.prof"), ("workers", "cp-*.prof")):
            files = sorted(str(f) for f in (PROFILE / name).glob(pattern))
            if not files:
                continue
            buf = io.StringIO()
            stats = pstats.Stats(*files, stream=buf)
            for key in ("cumulative", "tottime"):
                stats.sort_stats(key).print_stats(45)
            (PROFILE / name / f"{who}.txt").write_text(buf.getvalue())
            PROFILED[name, who] = profile_stages(files, WORKER_STAGES if who == "workers" else DAEMON_STAGES)
        log(f"profiles of {name}: {PROFILE / name}")
    return peak


# -- baselines ----------------------------------------------------------------------------


def spawn_times(work: pathlib.Path, n: int, prefix: tuple[str, ...] = ()) -> list[float]:
    """Seconds of each of n serial `[prefix] sh -c 'cp a b'` spawns (subprocess.run)."""
    src, dst = work / "spawn-a", work / "spawn-b"
    src.write_bytes(body(0))
    cmd = [*prefix, "sh", "-c", f"cp {src} {dst}"]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
        out.append(time.perf_counter() - t0)
    return out


def shim_spawn_times(work: pathlib.Path, n: int) -> list[float]:
    """The shim's own per-process path, in a child process: `shim.execute.run_once` (fresh mount
    namespace with the directory bound at /pfs, spawn, pump stdout/stderr, kill the group)."""
    from shim import execute, sandbox

    pfs = work / "spawn-pfs"
    (pfs / "in").mkdir(parents=True)
    (pfs / "out").mkdir()
    (pfs / "in" / "a").write_bytes(body(0))
    sandbox.ensure_mountpoint()
    run = execute.Run(COPY_ALL, b"\n", {"PATH": execute.DEFAULT_PATH}, "/", None, frozenset([0]))
    binds = [sandbox.Bind(str(pfs), sandbox.PFS)]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        ok, why = execute.run_once(run, binds, lambda _m, _u: None)
        out.append(time.perf_counter() - t0)
        assert ok, why
    assert (pfs / "out" / "a").exists()
    return out


def files_ms(base: str | pathlib.Path, n: int = 1000) -> tuple[float, float]:
    """Create n files of 1 KiB in a new directory under base, then `cp -r` it to a sibling:
    (ms, ms). What materializing a chunk and the user's cp do, without pachy."""
    top = pathlib.Path(tempfile.mkdtemp(prefix="pachy-bench-files-", dir=base))
    try:
        (top / "in").mkdir()
        t0 = time.perf_counter()
        for i in range(n):
            (top / "in" / f"f{i:05d}").write_bytes(body(i))
        t1 = time.perf_counter()
        subprocess.run(["cp", "-r", f"{top}/in", f"{top}/out"], check=True)
        return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
    finally:
        shutil.rmtree(top)


# -- a) latency ----------------------------------------------------------------------------

STAGES = (  # (key, label): consecutive intervals from the finish_commit call to flush's return
    ("finish", "finish_commit call"),
    ("trigger", "commit finished -> job created (wake, plan)"),
    ("to_user", "job created -> unit started (output commit, queue, poll, materialize)"),
    ("user", "unit run (namespace, spawn, cp, wait)"),
    ("to_job_end", "unit finished -> job finished (collect, upload, ingest, merge, finish)"),
    ("to_flush", "job finished -> flush returns"),
)


def one_commit(c: Client, i: int) -> dict:
    """start-commit, overwrite `data`, then finish + flush timed: the stages of it."""
    com = c.start_commit("in", "master")
    c.put_file("in", com.id, "data", body(i), overwrite=True)
    w0, t0 = time.time(), time.perf_counter()
    c.finish_commit("in", com.id)
    res = c.flush_commit([("in", com.id)])
    t1, w1 = time.perf_counter(), time.time()
    assert len(res.commits) == 1 and not res.failed_jobs, res
    job = c.list_job("cp", input=f"in@{com.id}")[0]
    assert job.state == "success" and job.data_processed == 1, job
    (d,) = [d for d in c.list_datum(job.id) if d.state == "success"]
    finished = c.inspect_commit("in", com.id).finished
    marks = [w0, finished, job.created, d.started, d.finished, job.finished, w1]
    out = {k: b - a for (k, _), a, b in zip(STAGES, marks[:-1], marks[1:], strict=True)}
    out["total"] = t1 - t0
    return out


def run_latency(rep: Report, work: pathlib.Path, name: str, n: int) -> None:
    d = start_daemon(work, name)
    home = work / f"home-{name}"
    r = {"n": n, "wait": "Client.flush_commit on the input commit"}
    try:
        with connect(home) as c:
            log(f"latency baselines: {n} x start+put+finish without a pipeline, {n} x sh -c cp")
            c.create_repo("plain")
            rt, fin = [], []
            for i in range(n):
                t0 = time.perf_counter()
                com = c.start_commit("plain", "master")
                c.put_file("plain", com.id, "data", body(i), overwrite=True)
                t1 = time.perf_counter()
                c.finish_commit("plain", com.id)
                rt.append(time.perf_counter() - t0)
                fin.append(time.perf_counter() - t1)
            spawn = spawn_times(work, n)
            c.create_repo("in")
            c.create_pipeline(pipeline("cp", COPY_ALL))
            wait_workers(home, d.proc.pid, 1)
            log(f"latency: {n} x commit -> flushed output (+1 first, untimed)")
            first = one_commit(c, 0)
            runs = [one_commit(c, i + 1) for i in range(n)]
            r["worker_mb"] = worker_peaks(d.proc.pid)
    finally:
        r["daemon_mb"] = stop_daemon(d, name)
    rep.raw[name] = r
    lat = [x["total"] for x in runs]
    r.update(latency_s=lat, first_s=first["total"], commit_rt_s=rt, finish_s=fin, spawn_s=spawn,
             stages={k: [x[k] for x in runs] for k, _ in STAGES})  # fmt: skip
    p50 = statistics.median(lat)
    rep.add(f"a) commit -> flushed output, cp pipeline, p50 of {n}", ms(p50), "<= 150 ms", p50 <= 0.150)
    rep.add(f"a) commit -> flushed output, p95 of {n}", ms(p95(lat)))
    rep.add("a) the same, first job of the pipeline (worker already up)", ms(first["total"]))
    rep.add("a) baseline: start+put+finish commit, no pipeline (p50)", ms(statistics.median(rt)))
    rep.add("a) baseline: finish_commit alone, no pipeline (p50)", ms(statistics.median(fin)))
    rep.add("a) baseline: sh -c 'cp a b' via subprocess.run (p50)", ms(statistics.median(spawn)))
    added = p50 - statistics.median(fin)
    rep.add("a) what the pipeline adds: p50 latency - p50 finish_commit alone", ms(added))
    for k, label in STAGES:
        rep.add(f"a) stage p50: {label}", ms(statistics.median(r["stages"][k])))


# -- b) throughput, c) incremental ---------------------------------------------------------


BOUNDARY = 0.010  # a gap between units longer than this is a task boundary, not the next unit


def unit_breakdown(started: float, finished: float, datums) -> dict:
    """From the datums' own timestamps: unit run times; the time no unit ran at all (with 2
    workers: neither) split into head (job start -> first unit), tail (last unit -> job end)
    and gaps between units, those over BOUNDARY (task boundaries: upload, next task,
    materialize, cleanup) apart from the short ones (collect the unit, start the next)."""
    units = sorted({(d.started, d.finished) for d in datums if d.state == "success"})
    run = [f - s for s, f in units]
    busy: list[list[float]] = []  # union of the units' intervals
    for s, f in units:
        if busy and s <= busy[-1][1]:
            busy[-1][1] = max(busy[-1][1], f)
        else:
            busy.append([s, f])
    gaps = [b[0] - a[1] for a, b in zip(busy, busy[1:], strict=False)]
    big = [g for g in gaps if g > BOUNDARY]
    return {
        "units": len(units), "run_p50": statistics.median(run), "run_sum": sum(run),
        "gap_short_sum": sum(g for g in gaps if g <= BOUNDARY), "gap_short_n": len(gaps) - len(big),
        "boundaries": len(big), "boundary_mean": statistics.fmean(big) if big else 0.0, "boundary_sum": sum(big),
        "head": busy[0][0] - started, "tail": finished - busy[-1][1],
        "idle": (finished - started) - sum(f - s for s, f in busy),
    }  # fmt: skip


def run_job(c: Client, daemon_pid: int, records, n_expect: int) -> dict:
    """One input commit of `records`, then finish + flush timed; the job's figures and the
    CPU time each party used meanwhile."""
    com = c.start_commit("in", "master")
    c.put_files("in", com.id, records)
    cpu0 = cpu_now(daemon_pid)
    w0, t0 = time.time(), time.perf_counter()
    c.finish_commit("in", com.id)
    res = c.flush_commit([("in", com.id)])
    wall = time.perf_counter() - t0
    cpu = cpu_used(cpu0, cpu_now(daemon_pid))
    assert len(res.commits) == 1 and not res.failed_jobs, res
    job = c.list_job("cp", input=f"in@{com.id}")[0]
    assert job.state == "success", job
    out = job.model_dump() | {"wall_s": wall, "job_s": job.finished - job.started,
                              "trigger_s": job.created - w0, "cpu": cpu}  # fmt: skip
    out["out_files"] = len(c.list_file("cp", res.commits[0]["id"], "/"))
    assert out["out_files"] == n_expect, f"{out['out_files']} files in the output, expected {n_expect}"
    return out


def run_throughput(rep: Report, work: pathlib.Path, name: str, n: int, workers: int = 1,
                   chunk: int | None = None, incremental: bool = False, tmpfs: bool = False) -> dict:  # fmt: skip
    """A fresh daemon, pipeline `cp` over repo `in`, one job of n one-file datums (and with
    `incremental` a second job with one more file). `tmpfs`: the workers' scratch directories
    (HOME/scratch, where units' /pfs trees are laid out) on a tmpfs mounted there (not a
    symlink: the daemon refuses symlinked entries in its home, mountd/home.py)."""
    home = work / f"home-{name}"
    shm = None
    if tmpfs:
        shm = home / "scratch"
        shm.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "pachy-bench-scratch", str(shm)], check=True)
    r = {"n": n, "workers": workers, "chunk": chunk, "scratch_tmpfs": tmpfs}
    extra = {"parallelism_spec": {"constant": workers}} | ({"chunk_spec": {"number": chunk}} if chunk else {})
    try:
        d = start_daemon(work, name)
    except BaseException:
        if shm is not None:
            subprocess.run(["umount", "-l", str(shm)], check=False)
        raise
    try:
        with connect(home) as c:
            c.create_repo("in")
            c.create_pipeline(pipeline("cp", COPY_ALL, **extra))
            wait_workers(home, d.proc.pid, workers)
            log(f"{name}: {n:,} datums of 1 KiB, {workers} worker(s), chunk {chunk or 'none'}")
            r["first"] = run_job(c, d.proc.pid, (wire.encode_small_put(f"f{i:05d}", body(i)) for i in range(n)), n)
            assert r["first"]["data_processed"] == n, r["first"]
            f = r["first"]
            r["breakdown"] = unit_breakdown(f["started"], f["finished"], c.list_datum(f["id"]))
            if incremental:
                log(f"{name}: one more file, incremental job")
                r["second"] = run_job(c, d.proc.pid, [wire.encode_small_put(f"f{n:05d}", body(n))], n + 1)
            r["worker_mb"] = worker_peaks(d.proc.pid)
    finally:
        r["daemon_mb"] = stop_daemon(d, name)
        if shm is not None:
            subprocess.run(["umount", "-l", str(shm)], check=False)
    first = r["first"]
    r["datums_s"] = n / first["job_s"]
    r["wall_datums_s"] = n / first["wall_s"]
    rep.raw[name] = r
    return r


def attempt(rep: Report, work: pathlib.Path, section: str, name: str, fn, *args, **kw):
    """fn(rep, work, name, ...); on an error, once more in a fresh home; if that fails too,
    a FAIL row saying what broke (the daemon's log stays in the scratch directory)."""
    for k in (1, 2):
        try:
            return fn(rep, work, name, *args, **kw)
        except Exception as exc:  # the system is worked on concurrently: report, go on
            why = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            log(f"{name} failed (try {k} of 2): {why}")
            for leftover in (work / f"home-{name}", work / f"mountd-{name}.log"):
                if leftover.exists():
                    leftover.rename(leftover.with_name(f"{leftover.name}.failed{k}"))
    rep.add(f"{section}) {name}", f"failed twice: {why}", "runs", False)
    return None


def report_throughput(rep: Report, n: int, chunk: int, spawn: dict) -> None:
    one, batched = rep.raw.get("per-datum"), rep.raw.get("chunked")
    two, shm = rep.raw.get("per-datum-2w"), rep.raw.get("per-datum-tmpfs")
    variants = ((one, "one process per datum, 1 worker", 500),
                (batched, f"chunk_spec number {chunk}, 1 worker", 5000),
                (two, "one process per datum, 2 workers", None),
                (shm, "one process per datum, 1 worker, scratch on tmpfs", None))  # fmt: skip
    for r, what, target in variants:
        if r is None:
            continue
        f = r["first"]
        rep.add(f"b) {n:,} datums, {what}: job started -> finished", f"{r['datums_s']:,.0f} datums/s",
                f">= {target:,} datums/s" if target else "-", r["datums_s"] >= target if target else None)  # fmt: skip
        rep.add(f"b) {what}: finish_commit -> flush returns",
                f"{f['wall_s']:.2f} s = {r['wall_datums_s']:,.0f} datums/s (job {f['job_s']:.2f} s, "
                f"commit -> job created {ms(f['trigger_s'])})")  # fmt: skip
    if one and two:
        rep.add("b) 2 workers / 1 worker, one process per datum", f"{two['datums_s'] / one['datums_s']:.2f}x")
    if one and shm:
        rep.add("b) scratch on tmpfs / on the disk, one process per datum", f"{shm['datums_s'] / one['datums_s']:.2f}x")
    for k, where in (("disk", "the bench disk"), ("tmpfs", "tmpfs (/dev/shm)")):
        create, cp = rep.raw["files_ms"][k]
        rep.add(f"b) baseline: create 1,000 files of 1 KiB / cp -r them, {where}", f"{create:.0f} / {cp:.0f} ms")
    for k, label in (("plain", "sh -c cp, subprocess.run"), ("unshare", "unshare --mount sh -c cp"),
                     ("shim", "the shim's run_once (namespace + bind /pfs + spawn + pump)")):  # fmt: skip
        secs = spawn[k]
        rep.add(f"b) baseline: {len(secs):,} x {label}, serial",
                f"{len(secs) / sum(secs):,.0f} processes/s (p50 {ms(statistics.median(secs))})")  # fmt: skip
    rate = len(spawn["shim"]) / sum(spawn["shim"])
    if one:
        rep.add("b) per-datum datums/s / shim run_once processes/s", f"{one['datums_s'] / rate:.2f}")
    for r, what, _ in variants:
        if r is None:
            continue
        b, f = r["breakdown"], r["first"]
        cpu = f["cpu"]
        rep.add(f"b) {what}: time per datum {ms(f['job_s'] / n)}, of which",
                f"units running {ms(b['run_sum'] / n)} (p50 {ms(b['run_p50'])} per unit of "
                f"{n // b['units']:,}); no unit running {ms(b['idle'] / n)}: {b['boundaries']} gaps > "
                f"{BOUNDARY * 1e3:.0f} ms {ms(b['boundary_sum'] / n)} ({ms(b['boundary_mean'])} each), "
                f"{b['gap_short_n']:,} short gaps {ms(b['gap_short_sum'] / n)}, head {ms(b['head'])}, "
                f"tail {ms(b['tail'])}")  # fmt: skip
        ours = (cpu["daemon"] + cpu["workers"] + cpu["user"]) / f["wall_s"]
        rest = cpu["machine_busy_pct"] / 100 * (os.cpu_count() or 1) - ours
        rep.add(f"b) {what}: CPU per datum",
                f"daemon {ms(cpu['daemon'] / n)} ({ms(cpu['daemon_sys'] / n)} sys), workers "
                f"{ms(cpu['workers'] / n)} ({ms(cpu['workers_sys'] / n)} sys), user code "
                f"{ms(cpu['user'] / n)}; {ours:.2f} cores, the rest of the machine "
                f"{rest:.2f}")  # fmt: skip


def report_profiles(rep: Report) -> None:
    """With --profile: per run, the stages' cumulative time per datum of the first job (the
    profiles cover the whole run: the incremental job and idle polls are in them too)."""
    for (name, who), stages in PROFILED.items():
        r = rep.raw.get(name)
        n = r["n"] if r else 1
        text = ", ".join(f"{label.strip()} {ms(secs / n)} ({calls:,}x)" for label, (secs, calls) in stages.items())
        rep.raw.setdefault("profile", {})[f"{name}/{who}"] = {k: v[0] / n for k, v in stages.items()}
        rep.add(f"e) cProfile, {name}, {who}: per datum", text)


def report_incremental(rep: Report, n: int) -> None:
    r = rep.raw.get("per-datum")
    if r is None:
        return
    first, second = r["first"], r["second"]
    ok = second["data_processed"] == 1 and second["data_skipped"] == n
    rep.add("c) second job, one file added: datums processed / skipped",
            f"{second['data_processed']} / {second['data_skipped']:,}", f"1 / {n:,}", ok)  # fmt: skip
    ratio = second["job_s"] / first["job_s"]
    rep.add("c) second job's time / first job's (job started -> finished)",
            f"{ratio * 100:.2f}% ({ms(second['job_s'])})", "<= 2%", ratio <= 0.02)  # fmt: skip
    rep.add("c) the same, finish_commit -> flush returns",
            f"{second['wall_s'] / first['wall_s'] * 100:.2f}% ({ms(second['wall_s'])}; "
            f"commit -> job created {ms(second['trigger_s'])})")  # fmt: skip


def report_workers(rep: Report) -> None:
    peaks = {f"{k}/{w}": mb for k, r in rep.raw.items() if isinstance(r, dict)
             for w, mb in r.get("worker_mb", {}).items()}  # fmt: skip
    if peaks:
        worst = max(peaks, key=peaks.get)
        rep.add("d) worker (shim) peak RSS, worst", f"{peaks[worst]:.0f} MB ({worst})")


SOURCES = ("mountd", "pps", "shim", "pfsfuse", "pachctl")


def source_digest() -> dict:
    """What code ran: sha256 over the product's .py files (paths and bytes), and the newest
    one. Each daemon and worker imports the code as it is when it starts."""
    import hashlib

    h, newest = hashlib.sha256(), (0.0, "")
    root = BENCH.parent
    for f in sorted(p for d in SOURCES for p in (root / d).rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
        newest = max(newest, (f.stat().st_mtime, str(f.relative_to(root))))
    return {"sha256": h.hexdigest()[:16], "newest": newest[1],
            "newest_mtime": time.strftime("%H:%M:%S", time.localtime(newest[0]))}  # fmt: skip


def run(rep: Report, work: pathlib.Path, quick: bool, sections: str) -> None:
    rep.raw["source_start"] = source_digest()
    try:
        measure(rep, work, quick, sections)
    finally:
        end = rep.raw["source_end"] = source_digest()
        start = rep.raw["source_start"]
        same = start["sha256"] == end["sha256"]
        rep.add(f"source ({', '.join(SOURCES)}) sha256 at start / end",
                f"{start['sha256']} / {end['sha256']}: " + ("unchanged" if same else
                f"CHANGED during the run (newest: {end['newest']} at {end['newest_mtime']}); "
                "runs started after that ran other code"))  # fmt: skip


def measure(rep: Report, work: pathlib.Path, quick: bool, sections: str) -> None:
    n_lat, n_tp, n_spawn, chunk = (15, 2000, 200, 1000) if quick else (50, 10_000, 1000, 1000)
    if "a" in sections:
        attempt(rep, work, "a", "latency", run_latency, n_lat)
    if "b" not in sections:
        return

    log(f"spawn baselines: {n_spawn:,} x sh -c cp, plain / unshare --mount / shim run_once")
    rep.raw["files_ms"] = {"disk": files_ms(work), "tmpfs": files_ms("/dev/shm")}
    spawn = rep.raw["spawn"] = {"plain": spawn_times(work, n_spawn),
                                "unshare": spawn_times(work, n_spawn, ("unshare", "--mount")),
                                "shim": in_child(shim_spawn_times, work, n_spawn)}  # fmt: skip
    attempt(rep, work, "b", "per-datum", run_throughput, n_tp, incremental=True)
    attempt(rep, work, "b", "chunked", run_throughput, n_tp, chunk=chunk)
    attempt(rep, work, "b", "per-datum-2w", run_throughput, n_tp, workers=2)
    attempt(rep, work, "b", "per-datum-tmpfs", run_throughput, n_tp, tmpfs=True)
    report_throughput(rep, n_tp, chunk, spawn)
    report_incremental(rep, n_tp)
    report_workers(rep)
    report_profiles(rep)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pps", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="15 latency runs, 2,000 datums: a smoke run")
    p.add_argument("--json", metavar="OUT", help="where the figures go as JSON (default bench/out/pps[-quick].json)")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent, on the disk to test")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--sections", default="ab", help="a: latency; b: throughput and incremental (default ab)")
    p.add_argument("--profile", metavar="DIR", help="run daemons and workers under cProfile, profiles in DIR")
    args = p.parse_args(argv)
    global PROFILE
    PROFILE = pathlib.Path(args.profile).resolve() if args.profile else None
    if args.json is None:
        args.json = str(BENCH / "out" / ("pps-quick.json" if args.quick else "pps.json"))
    return in_scratch(args, "pps-", lambda rep, work: run(rep, work, args.quick, args.sections))


if __name__ == "__main__":
    sys.exit(main())
