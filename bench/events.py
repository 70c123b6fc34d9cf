"""Event stream benchmark: how soon a change reaches a client of ``GET /v1/events``
over the local socket (issue 12: p95 <= 50 ms), against a plain GET round trip.

    .venv/bin/python -m bench.events              # 500 changes idle, then during a 100,000-line log burst
    .venv/bin/python -m bench.events --quick      # 100 changes, a 10,000-line burst

One daemon (a fresh home). A subscriber in its own process (as the TUI is)
follows ``Client.events()`` and stamps each ``branch.moved`` it receives with
the wall clock. The bench process moves a branch (``create_branch``), waits
for that event, and moves it again: one change at a time, so the figure is
latency, not queueing of our own changes. Per change: publish -> received (the
event's ``ts``, stamped by the daemon when the change committed, to the
subscriber's clock) and request -> received (from before the ``create_branch``
call: the change itself plus its delivery). Baseline: ``GET /v1/version``
round trips in the same run (the cheapest thing the API answers).

Then the same while a pipeline's user code prints N lines (``seq``): the
subscriber takes every kind, so each branch event waits behind the log lines
published before it (the slow-client case); the row says how many log lines
it received and whether it was ever ``reset``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import statistics
import sys
import time

from bench.ingest import BENCH, Daemon, Report, connect, in_scratch, log

TARGET = 0.050  # seconds, p95 (issue 12)


def subscriber(home: str, conn, kinds: tuple[str, ...] = ()) -> None:
    """Follow the events (of ``kinds``, else all); report each branch move as (received, published, branch)."""
    logs = resets = 0
    with connect(pathlib.Path(home)) as c:
        for ev in c.events(kinds=kinds):
            now = time.time()
            if ev.kind == "log":
                logs += 1
            elif ev.kind == "reset":
                resets += 1
            elif ev.kind == "branch.moved":
                if ev.data["branch"] == "stop":
                    conn.send(("done", logs, resets))
                    return
                conn.send((now, ev.data["ts"], ev.data["branch"]))


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) >= 20 else max(xs)


def move_branches(c, conns: list, n: int, until=None) -> list[tuple[list[float], list[float]]]:
    """n branch moves, one at a time, each awaited by every subscriber; per subscriber
    (publish->received, request->received) in seconds."""
    head = c.inspect_commit("bench", "master").id
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in conns]
    for i in range(n):
        if until is not None and until():
            break
        name = f"b{i % 16}"
        t0 = time.time()
        c.create_branch("bench", name, head)
        for conn, (published, requested) in zip(conns, out, strict=True):
            while True:
                if not conn.poll(10):
                    raise RuntimeError(f"no event for branch {name} within 10 s")
                got, ts, branch = conn.recv()
                if branch == name:
                    break
            published.append(got - ts)
            requested.append(got - t0)
    return out


def measure(work: pathlib.Path, changes: int, burst: int) -> dict:
    home = work / "home"
    d = Daemon(home, work / "mountd.log")
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    sub = ctx.Process(target=subscriber, args=(str(home), theirs), daemon=True)
    # A second subscriber takes only branch events (as a TUI screen without logs would):
    # the log burst does not stand between it and them.
    ours2, theirs2 = ctx.Pipe()
    sub2 = ctx.Process(target=subscriber, args=(str(home), theirs2, ("branch",)), daemon=True)
    try:
        with connect(home) as c:
            c.create_repo("bench")
            c.put_file("bench", "master", "f", b"x\n", new_commit=True)
            sub.start()
            sub2.start()
            # A subscriber is live once it hears a move made after it started.
            head = c.inspect_commit("bench", "master").id
            deadline = time.monotonic() + 30
            while not (ours.poll(0.05) and ours2.poll(0.05)):
                if time.monotonic() > deadline:
                    raise RuntimeError("the subscribers did not connect within 30 s")
                c.create_branch("bench", "warmup", head)
            for conn in (ours, ours2):
                while conn.poll(0.2):
                    conn.recv()
            log(f"GET round trips and {changes} branch moves, idle")
            rtt = []
            for _ in range(max(200, changes)):
                t0 = time.perf_counter()
                c.version()
                rtt.append(time.perf_counter() - t0)
            [(idle_pub, idle_req)] = move_branches(c, [ours], changes)
            while ours2.poll(0.2):  # what the second subscriber heard meanwhile
                ours2.recv()

            log(f"a pipeline printing {burst:,} lines; branch moves meanwhile")
            c.create_repo("src")
            c.create_pipeline({"pipeline": {"name": "burst"}, "input": {"pfs": {"repo": "src", "glob": "/"}},
                               "transform": {"cmd": ["sh"], "stdin": [f"seq 1 {burst}", "touch /pfs/out/done"]}})
            commit = c.put_file("src", "master", "go", b"go\n", new_commit=True)
            t0 = time.monotonic()
            job_done = [False]

            def finished() -> bool:
                if not job_done[0]:
                    jobs = c.list_job("burst")
                    job_done[0] = bool(jobs) and all(j.state not in ("created", "running") for j in jobs)
                return job_done[0]

            (busy_pub, busy_req), (only_pub, only_req) = move_branches(c, [ours, ours2], 100_000, until=finished)
            c.flush_commit([("src", commit.commit.id if commit.commit else "master")], timeout=600)
            burst_secs = time.monotonic() - t0
            c.create_branch("bench", "stop", head)
            while True:
                if not ours.poll(120):
                    raise RuntimeError("the subscriber did not finish within 120 s")
                msg = ours.recv()
                if msg[0] == "done":
                    _, logs, resets = msg
                    break
    finally:
        for p in (sub, sub2):
            if p.is_alive():
                p.terminate()
        d.stop()
    return {"rtt": rtt, "idle_pub": idle_pub, "idle_req": idle_req, "busy_pub": busy_pub, "busy_req": busy_req,
            "only_pub": only_pub, "only_req": only_req,
            "logs": logs, "resets": resets, "burst": burst, "burst_secs": burst_secs}


def add_rows(rep: Report, f: dict) -> None:
    ms = 1000
    rtt95 = p95(f["rtt"])
    rep.add("a) baseline: GET /v1/version round trip, p50 / p95",
            f"{statistics.median(f['rtt']) * ms:.2f} / {rtt95 * ms:.2f} ms")
    burst = f"during a {f['burst']:,}-line log burst"
    for tag, label in (("idle", "idle"), ("busy", f"{burst}, all kinds"), ("only", f"{burst}, kinds=branch")):
        pub, req = f[f"{tag}_pub"], f[f"{tag}_req"]
        if not pub:
            rep.add(f"b) {label}", "no branch move finished during it")
            continue
        # A follower of every kind reads each log line published before a branch event first:
        # that row is the slow-client stress figure (info), not the latency target.
        target, judged = ("-", False) if tag == "busy" else ("p95 <= 50 ms", True)
        rep.add(f"b) {label}: publish -> received, p50 / p95 ({len(pub)} events)",
                f"{statistics.median(pub) * ms:.2f} / {p95(pub) * ms:.2f} ms", target,
                p95(pub) <= TARGET if judged else None)
        rep.add(f"b) {label}: request -> received, p50 / p95",
                f"{statistics.median(req) * ms:.2f} / {p95(req) * ms:.2f} ms", target,
                p95(req) <= TARGET if judged else None)
        rep.add(f"b) {label}: publish -> received p95 / GET p95", f"{p95(pub) / rtt95:.2f}x")
    rep.add("c) log lines the subscriber received / printed, resets",
            f"{f['logs']:,} / {f['burst']:,}, {f['resets']} (burst took {f['burst_secs']:.1f} s)",
            "all, 0", f["logs"] >= f["burst"] and f["resets"] == 0)
    rep.raw["events"] = {k: v for k, v in f.items() if not isinstance(v, list)} | {
        k: sorted(v) for k, v in f.items() if isinstance(v, list)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 changes, a 10,000-line burst")
    p.add_argument("--changes", type=int, default=None, help="branch moves while idle (default 500)")
    p.add_argument("--burst", type=int, default=None, help="log lines the pipeline prints (default 100,000)")
    p.add_argument("--json", metavar="OUT", help="the figures as JSON (default bench/out/events.json)")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    changes = args.changes or (100 if args.quick else 500)
    burst = args.burst or (10_000 if args.quick else 100_000)
    args.json = args.json or str(BENCH / "out" / "events.json")
    return in_scratch(args, "events-", lambda rep, work: add_rows(rep, measure(work, changes, burst)))


if __name__ == "__main__":
    sys.exit(main())
