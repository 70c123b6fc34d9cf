"""The TUI's log view against a 100,000-line log: memory of the TUI process
and the time a key press (a page down) takes to redraw, with its baseline in
the same run: the same log read whole into Textual's own ``Log`` widget (what
a TUI without paging would do).

    .venv/bin/python -m bench.tui_logs            # 100,000 lines, 40 key presses
    .venv/bin/python -m bench.tui_logs --lines 20000 --presses 20

A real daemon runs a pipeline whose one datum prints the lines; each
measurement is a fresh process (its own peak RSS) running the app headless
(``App.run_test``) at 120x36. Targets (issue 12): memory <= 150 MB with the
log open, a key press redraws <= 100 ms (p95). Prints a markdown table and
exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1e6
SIZE = (120, 36)


def rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out["VmRSS"], out["VmHWM"]


async def _until(pilot, cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the screen did not get ready")
        await pilot.pause(0.005)


def measure(kind: str, home: str, job: str, presses: int) -> dict:
    """In a child process: open the log, press page-down ``presses`` times."""
    import asyncio

    from pachctl.client import Client

    client = Client(home=home, autostart=False, timeout=120)
    before = rss()[0]
    if kind == "pachy":
        from tui.app import PachyApp
        from tui.screens.logs import LogsScreen

        app = PachyApp(client, start="logs", start_params={"job": job}, live=False)

        def view():
            return app.screen.view if isinstance(app.screen, LogsScreen) and app.screen.query("#log") else None

        def shown() -> bool:
            v = view()
            if v is None or not v.total:
                return False
            top = int(v.scroll_y)
            return all(v.line(i) is not None for i in range(top, min(v.total, top + v.size.height)))
    else:
        from textual.app import App
        from textual.widgets import Log

        class Whole(App):
            def compose(self):
                yield Log(id="log")

            def on_mount(self) -> None:
                log = self.query_one(Log)
                log.write_lines([line.message for line in client.get_logs(job=job)])
                log.focus()

        app = Whole()

        def shown() -> bool:
            return bool(app.query("#log")) and app.query_one("#log").line_count > 0

    times: list[float] = []
    pilot_times: list[float] = []
    noop_times: list[float] = []

    def target():
        return app.screen.view if kind == "pachy" else app.query_one("#log")

    def paint() -> None:
        """What a redraw costs: every visible row rendered, the screen composed and encoded
        as the terminal would receive it."""
        update = app.screen._compositor.render_full_update()
        sum(len(seg.text) for seg in app.console.render(update))

    async def run() -> dict:
        t0 = time.perf_counter()
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, shown)
            first = time.perf_counter() - t0
            for _ in range(presses):
                # The key's work: its action, the page it needs (fetched in a thread), one paint.
                t = time.perf_counter()
                target().action_page_down()
                while not shown():
                    await asyncio.sleep(0.001)
                target().refresh()
                await asyncio.sleep(0)
                paint()
                times.append(time.perf_counter() - t)
            for _ in range(5):
                # The same through Pilot (which adds its own idle detection, measured alone
                # with a key bound to nothing).
                t = time.perf_counter()
                await pilot.press("pageup")
                await _until(pilot, shown)
                pilot_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                await pilot.press("ctrl+backslash")
                noop_times.append(time.perf_counter() - t)
            await pilot.pause()
            now, peak = rss()
            return {"first_s": first, "rss": now, "peak": peak}

    out = asyncio.run(run())
    times.sort()
    out |= {"kind": kind, "before": before, "p50_ms": statistics.median(times) * 1000,
            "p95_ms": times[int(len(times) * 0.95) - 1] * 1000, "max_ms": times[-1] * 1000,
            "pilot_ms": statistics.median(pilot_times) * 1000, "noop_ms": statistics.median(noop_times) * 1000}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--presses", type=int, default=40)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "HOME", "JOB"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child, args.presses)))
        return 0

    from tests.ppshelp import commit_files, flush_ok, pachy_daemon, pfs, spec

    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp, pachy_daemon(Path(tmp)) as p:
        c = p.client
        c.create_repo("chatty")
        c.create_pipeline(spec("talk", pfs("chatty"), [f'seq 1 {args.lines} | sed "s/^/log line /"']))
        t = time.perf_counter()
        flush_ok(c, "chatty", commit_files(c, "chatty", {"x": "1"}), timeout=600)
        print(f"the {args.lines}-line log written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        job = c.list_job("talk")[0].id
        total, _ = c.log_page(job=job, offset=0, n=1)
        results = {}
        for kind in ("baseline", "pachy"):
            out = subprocess.run([sys.executable, "-m", "bench.tui_logs", "--presses", str(args.presses),
                                  "--child", kind, str(p.home), job], capture_output=True, text=True, check=False)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return 2
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    pachy, base = results["pachy"], results["baseline"]
    rows = [
        ("log lines", f"{total}", "", "info"),
        ("TUI peak RSS, log open (pachy LogView)", f"{pachy['peak'] / MB:.0f} MB", "<= 150 MB",
         "PASS" if pachy["peak"] <= 150 * MB else "FAIL"),
        ("  baseline: whole log in textual Log", f"{base['peak'] / MB:.0f} MB", "", "info"),
        ("page-down redraw p95 (pachy)", f"{pachy['p95_ms']:.1f} ms", "<= 100 ms",
         "PASS" if pachy["p95_ms"] <= 100 else "FAIL"),
        ("  p50 / max (pachy)", f"{pachy['p50_ms']:.1f} / {pachy['max_ms']:.1f} ms", "", "info"),
        ("  baseline p95 / p50", f"{base['p95_ms']:.1f} / {base['p50_ms']:.1f} ms", "", "info"),
        ("  through Pilot, p50 (pachy / baseline / a no-op key)",
         f"{pachy['pilot_ms']:.0f} / {base['pilot_ms']:.0f} / {pachy['noop_ms']:.0f} ms", "", "info"),
        ("first lines shown (pachy / baseline)", f"{pachy['first_s']:.2f} / {base['first_s']:.2f} s", "", "info"),
    ]
    print("| figure | value | target | |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 1 if any(r[3] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
