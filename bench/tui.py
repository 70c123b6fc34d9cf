"""`pachctl tui`'s figures (issue 12): first screen, key press redraw, memory,
on a store with 100 repos and 10,000 commits, each beside a baseline measured
in the same run (an empty Textual app; a plain DataTable of the same rows).

    .venv/bin/python -m bench.tui             # 100 repos, 10,000 commits (~1 min to build)
    .venv/bin/python -m bench.tui --quick     # 100 repos, 1,000 commits

The store: a real daemon (``python -m mountd``) holding 99 repos of one commit
each and the repo ``history`` with the rest (9,901 commits): the repos screen
is what ``pachctl tui`` opens on, ``history`` is the long list paged on demand.
The app runs headless through ``App.run_test()`` (Textual's own test driver:
every frame is composed as on a terminal, nothing is drawn).

- first screen: from building the app (and its client) to the repos table
  showing all 100 names; then to every LAST COMMIT filled (information).
- key press: ``down`` in the repos table and in ``history``'s commits with all
  9,901 rows loaded, from the key event posted to the app to the moved
  cursor's frame composed (see ``presses``); p50/p95/max of 50.
- memory: this process's RSS with the repos screen, then with all of
  ``history`` loaded (every page), against the empty app's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Static

from tests.ppshelp import pachy_daemon
from tests.tuihelp import bulk_commits
from tui.app import PachyApp
from tui.screens.commits import CommitsScreen
from tui.screens.repos import ReposScreen

SIZE = (120, 36)
PRESSES = 50


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def until(pilot, cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: bench timed out waiting for {cond}")
        await pilot.pause(0.001)


class Empty(App):
    def compose(self) -> ComposeResult:
        yield Static("hello")
        yield Footer()


class PlainTable(App):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def compose(self) -> ComposeResult:
        yield DataTable(cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("NAME", "SIZE", "BRANCHES", "LAST COMMIT")
        for i in range(self.n):
            t.add_row(f"repo{i:03}", "1 B", "master", "5 minutes ago master/0")
        t.focus()


async def presses(pilot, key: str = "down", n: int = PRESSES) -> list[float]:
    """ms from a key event posted to the app to the frame showing its effect:
    the focused table's cursor moved, then its refresh done (Pilot's own
    ``press`` waits ~60 ms for idleness on top, which is not the app's time)."""
    from textual import events

    app = pilot.app
    out = []
    for _ in range(n):
        table = app.focused
        before = table.cursor_row
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        app.post_message(events.Key(key, None))
        while table.cursor_row == before:
            await asyncio.sleep(0)
        drawn = loop.create_future()
        table.call_after_refresh(lambda f=drawn: f.done() or f.set_result(None))
        await drawn
        out.append((time.perf_counter() - t) * 1000)
    await pilot.pause()
    return out


def stats(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"p50 {statistics.median(ms):6.1f} ms  p95 {q[18]:6.1f} ms  max {max(ms):6.1f} ms"


async def measure(client) -> dict:
    out: dict = {}
    t = time.perf_counter()
    app = Empty()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query(Static))
        out["empty_start"] = time.perf_counter() - t
        out["empty_rss"] = rss_mib()
    table_app = PlainTable(100)
    async with table_app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: table_app.query_one(DataTable).row_count == 100)
        out["plain_keys"] = await presses(pilot)

    t = time.perf_counter()
    from pachctl.client import Client

    app = PachyApp(Client(client.settings.address, home=client.settings.home, autostart=False), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and app.screen.table.row_count == 100)
        out["first_screen"] = time.perf_counter() - t
        await until(pilot, lambda: all(app.screen.table.row_cells(k)[3] != "-" for k in ("history", "r000", "r098")))
        out["last_commits"] = time.perf_counter() - t
        out["repos_rss"] = rss_mib()
        out["repos_keys"] = await presses(pilot)
        t = time.perf_counter()
        await app.open("commits", repo="history")
        await until(pilot, lambda: isinstance(app.screen, CommitsScreen) and app.screen.commits_table.row_count > 0)
        out["commits_first_page"] = time.perf_counter() - t
        screen = app.screen
        t = time.perf_counter()
        while screen.more or screen.fetching:
            await pilot.press("end")
            await until(pilot, lambda: not screen.fetching)
        out["all_pages"] = time.perf_counter() - t
        out["rows"] = screen.commits_table.row_count
        await pilot.press("home")
        out["commits_keys"] = await presses(pilot)
        out["commits_rss"] = rss_mib()
    return out


def build(client, commits: int) -> None:
    small = [f"r{i:03}" for i in range(99)]
    t = time.perf_counter()
    chunks = [small[i::4] for i in range(4)]
    threads = [threading.Thread(target=lambda names: [bulk_commits(client, n, 1) for n in names], args=(c,))
               for c in chunks]
    for th in threads:
        th.start()
    bulk_commits(client, "history", commits - len(small))
    for th in threads:
        th.join()
    print(f"store: 100 repos, {commits} commits, built in {time.perf_counter() - t:.1f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 commits instead of 10,000")
    args = ap.parse_args()
    commits = 1000 if args.quick else 10_000
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as root, pachy_daemon(Path(root)) as px:
        build(px.client, commits)
        r = asyncio.run(measure(px.client))
    print(f"first screen (100 repos)       {r['first_screen'] * 1000:7.0f} ms   target <= 1000 ms;"
          f" baseline: empty Textual app {r['empty_start'] * 1000:.0f} ms")
    print(f"  every LAST COMMIT filled     {r['last_commits'] * 1000:7.0f} ms   (100 requests, after the first paint)")
    print(f"history: first page of commits {r['commits_first_page'] * 1000:7.0f} ms;"
          f" all {r['rows']} rows paged in {r['all_pages']:.1f} s")
    print(f"key press, plain DataTable     {stats(r['plain_keys'])}   (baseline)")
    print(f"key press, repos screen        {stats(r['repos_keys'])}   target <= 100 ms")
    print(f"key press, {r['rows']} commits      {stats(r['commits_keys'])}   target <= 100 ms")
    print(f"memory (RSS of this process)   empty app {r['empty_rss']:.0f} MiB, repos screen {r['repos_rss']:.0f} MiB,"
          f" {r['rows']} commits loaded {r['commits_rss']:.0f} MiB   target <= 150 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
