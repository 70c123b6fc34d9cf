"""`pachctl tui`, the data side: the app shell (keys, command mode, filter,
help, confirm, --readonly, the command log, live events) and the repos,
commits, files (+ preview) and diff screens, through Textual's Pilot against
a real daemon (tests/tuihelp.py); SVG snapshots of each screen at 120x36."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import time

import pytest

from tests.clihelp import PACHCTL, run
from tests.tuihelp import SIZE, anyio_backend, bulk_commits, make_app, tui_store_fixture, until  # noqa: F401 (fixtures)
from tui.app import PachyApp
from tui.screens.commits import PAGE, CommitsScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.diff import DiffScreen
from tui.screens.files import FilesScreen
from tui.screens.help import HelpScreen
from tui.screens.repos import ReposScreen
from tui.widgets.preview import LIMIT, Preview, read_head, render
from tui.widgets.table import FilterTable

pytestmark = pytest.mark.anyio


def rows(table: FilterTable) -> list[str]:
    return [str(k.value) for k in table.rows]


async def test_navigate_repos_commits_files_preview(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and app.screen.table.row_count == 3)
        table = app.screen.table
        assert rows(table) == ["empty", "labels", "images"] or sorted(rows(table)) == ["empty", "images", "labels"]
        table.move_cursor(row=rows(table).index("images"))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, CommitsScreen) and app.screen.commits_table.row_count == 3)
        commits = app.screen
        assert [c.ref for c in commits.commits] == ["master/2", "master/1", "master/0"]
        await pilot.press("enter")  # the newest commit's files
        await until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.table.row_count == 3)
        files = app.screen
        assert rows(files.table) == ["/README.md", "/data", "/meta"]
        preview = files.query_one(Preview)
        await until(pilot, lambda: preview.shown and preview.shown.kind == "text")
        assert "README.md" in preview.shown.title
        await pilot.press("down", "enter")  # into /data
        await until(pilot, lambda: files.path == "/data" and "/data/sales.csv" in rows(files.table))
        await pilot.press("down")  # past ".."
        await until(pilot, lambda: preview.shown and preview.shown.kind == "csv")
        assert preview.shown.rows[0] == ["fruit", "count", "price"]
        await pilot.press("backspace")
        await until(pilot, lambda: files.path == "/")
        await pilot.press("escape")
        assert app.screen is commits
        await pilot.press("escape")
        assert isinstance(app.screen, ReposScreen)
        await pilot.press("escape")  # the first screen stays
        assert isinstance(app.screen, ReposScreen)
        assert app.command_history[:3] == ["pachctl list repo", "pachctl list commit images", f"pachctl list file images@{commits.commits[0].id}:/"]


async def test_filter_keeps_matching_rows_and_esc_clears(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and app.screen.table.row_count == 3)
        table = app.screen.table
        await pilot.press("slash", "l", "a", "b")
        await until(pilot, lambda: rows(table) == ["labels"])
        await pilot.press("enter")  # keep the filter, back to the table
        assert table.has_focus and rows(table) == ["labels"]
        await pilot.press("escape")  # clears the filter first
        await until(pilot, lambda: table.row_count == 3)
        assert isinstance(app.screen, ReposScreen)


async def test_command_mode_opens_views_by_alias(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen))
        await pilot.press("colon", *"commits images", "enter")
        await until(pilot, lambda: isinstance(app.screen, CommitsScreen) and app.screen.repo == "images")
        await pilot.press("colon", *"files labels master", "enter")
        await until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.table.row_count == 3)
        assert rows(app.screen.table) == ["/blob.bin", "/code", "/labels.tsv"]
        await pilot.press("colon", *"nosuchview", "enter")
        await pilot.pause()
        assert isinstance(app.screen, FilesScreen)  # an unknown alias says so and stays
        await pilot.press("colon", *"repos", "enter")
        await until(pilot, lambda: isinstance(app.screen, ReposScreen))
        await pilot.press("escape")  # command mode pushed: esc goes back
        assert isinstance(app.screen, FilesScreen)
        await pilot.press("colon", "q", "enter")
        await until(pilot, lambda: not app.is_running)


async def test_help_lists_keys_and_aliases(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        entries = dict(app.screen.entries)
        assert entries["/"] == "Filter" and entries[":"] == "Command" and entries["esc"] == "Back"
        assert {":repos", ":commits", ":files", ":diff"} <= set(entries)
        await pilot.press("escape")
        assert isinstance(app.screen, ReposScreen)


async def test_confirm_no_keeps_yes_deletes_and_logs_the_command(tui_store):
    c = tui_store.client
    c.create_repo("doomed")
    app = make_app(tui_store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and "doomed" in rows(app.screen.table))
        table = app.screen.table
        table.move_cursor(row=rows(table).index("doomed"))
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, ReposScreen))
        assert "doomed" in {r.name for r in c.list_repo()}
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#yes")  # the mouse works too
        await until(pilot, lambda: "doomed" not in {r.name for r in c.list_repo()})
        await until(pilot, lambda: "doomed" not in rows(table))
        assert app.command_history[-1] == "pachctl delete repo doomed"


async def test_confirm_contract_answers_from_a_worker(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen))
        worker = app.run_worker(app.confirm("Stop pipeline 'edges'?"))
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: worker.is_finished)
        assert worker.result is True
        worker = app.run_worker(app.confirm("again?"))
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await until(pilot, lambda: worker.is_finished)
        assert worker.result is False


async def test_readonly_hides_and_refuses_actions(tui_store):
    app = make_app(tui_store, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and app.screen.table.row_count == 3)
        assert "delete_repo" not in {b.binding.action for b in app.screen.active_bindings.values()}
        await pilot.press("D")
        await pilot.pause()
        assert isinstance(app.screen, ReposScreen)
        worker = app.run_worker(app.confirm("Delete?"))
        await until(pilot, lambda: worker.is_finished)
        assert worker.result is False and isinstance(app.screen, ReposScreen)
        assert {r.name for r in tui_store.client.list_repo()} >= {"images", "labels", "empty"}


async def test_command_log_pane_shows_and_toggles(tui_store):
    from tui.widgets.command_log import CommandLog

    app = make_app(tui_store, start="commits", start_params={"repo": "labels"})
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CommitsScreen) and app.screen.commits_table.row_count == 2)
        pane = app.screen.query_one(CommandLog)
        assert app.command_history == ["pachctl list commit labels"]
        assert any("pachctl list commit labels" in line.text for line in pane.lines)
        assert pane.display
        await pilot.press("at")
        assert not pane.display
        await pilot.press("at")
        assert pane.display


async def test_marks_and_diff(tui_store):
    app = make_app(tui_store, start="commits", start_params={"repo": "images"})
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CommitsScreen) and app.screen.commits_table.row_count == 3)
        commits = app.screen
        ids = [c.id for c in commits.commits]  # master/2, /1, /0
        await pilot.press("d")  # no mark: the cursor's commit and its parent
        await until(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.table.row_count == 2)
        assert app.screen.old is None and app.screen.old_ref == ids[1]
        assert rows(app.screen.table) == ["/README.md", "/meta/info.json"]
        await until(pilot, lambda: "+Pictures of the fruit stand, and their sales." in
                    (app.screen.patch and getattr(app.screen.patch[1], "code", "")))
        await pilot.press("escape")
        await pilot.press("space", "down", "down", "space")  # mark master/2 and master/0
        assert commits.marks == [ids[0], ids[2]]
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.table.row_count == 3)
        assert (app.screen.commit, app.screen.old) == (ids[0], ids[2])
        assert rows(app.screen.table) == ["/README.md", "/data/sales.csv", "/meta/info.json"]
        assert app.command_history[-1] == f"pachctl diff file images@{ids[0]} --old {ids[2]}"


def test_list_commit_before_pages_through_the_whole_history(client):
    bulk_commits(client, "hist", 450)
    for branch in (None, "master"):
        seen: list = []
        page = client.list_commit("hist", branch, n=200)
        while page:
            seen += page
            page = client.list_commit("hist", branch, n=200, before=page[-1].id)
        assert [c.ref for c in seen] == [f"master/{i}" for i in range(449, -1, -1)]
    assert [c.ref for c in client.list_commit("hist", n=5, before="master/3")] == ["master/2", "master/1", "master/0"]
    assert client.list_commit("hist", n=5, before="master/0") == []


async def test_long_history_fetches_pages_as_the_cursor_nears_the_end(daemon):
    bulk_commits(daemon.client, "long", 2500)
    app = PachyApp(daemon.client, start="commits", start_params={"repo": "long"}, live=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, CommitsScreen) and app.screen.commits_table.row_count == PAGE)
        screen = app.screen
        assert screen.more and screen.pages == 1
        await pilot.press("end")  # the cursor at the last row fetches the next page
        await until(pilot, lambda: screen.commits_table.row_count == 2 * PAGE)
        screen.commits_table.scroll_end(animate=False)  # so does scrolling there (mouse wheel, page down)
        await until(pilot, lambda: screen.commits_table.row_count == 3 * PAGE)
        while screen.more:
            await pilot.press("end")
            await until(pilot, lambda: not screen.fetching)
        assert screen.commits_table.row_count == 2500
        assert screen.commits[-1].ref == "master/0" and len({c.id for c in screen.commits}) == 2500


async def test_a_commit_made_while_the_app_runs_appears_without_a_key(tui_store):
    c = tui_store.client
    c.create_repo("live")
    try:
        bulk_commits(c, "live", 1)
        app = make_app(tui_store, live=True, start="commits", start_params={"repo": "live"})
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, CommitsScreen) and app.screen.commits_table.row_count == 1)
            table = app.screen.commits_table
            # The stream may still be connecting: a commit it missed is followed by
            # another, at most three; the screen must catch up with no key pressed.
            for _ in range(3):
                await asyncio.to_thread(bulk_commits, c, "live", 1)
                want = len(c.list_commit("live"))
                try:
                    await until(pilot, lambda want=want: table.row_count == want, timeout=5)
                    break
                except AssertionError:
                    continue
            assert table.row_count == len(c.list_commit("live"))
            assert app.events_connected
    finally:
        c.delete_repo("live", force=True)


def test_preview_renders_each_kind():
    r = render("/a/x.json", b'{"b": [1, 2]}', 13)
    assert r.kind == "json" and r.body.code == '{\n  "b": [\n    1,\n    2\n  ]\n}'
    r = render("/t.tsv", b"a\tb\n1\t2\n", 8)
    assert r.kind == "tsv" and r.rows == [["a", "b"], ["1", "2"]]
    r = render("/c.csv", b"a,b\n1,2\n3,", 1 << 20)  # cut short: the partial last line is dropped
    assert r.rows == [["a", "b"], ["1", "2"]] and "first 10 B of 1.0 MiB" in r.title
    r = render("/b.bin", bytes(range(32)), 3 * 1024**3)
    assert r.kind == "binary" and "3.0 GiB" in r.title
    assert str(r.body).splitlines()[0].startswith("00000000  00 01 02 03 04 05 06 07  08 09 0a 0b")
    r = render("/big.py", b"print(1)\n" * 100, 3 * 1024**3)
    assert r.kind == "text" and r.title.endswith("(first 900 B of 3.0 GiB)")
    assert render("/e.txt", b"", 0).kind == "empty"
    assert render("/u.txt", "é".encode()[:1], 2).kind == "text"  # a character cut at the end is not binary


def test_preview_reads_only_the_head_of_a_big_file(client):
    client.create_repo("big")
    with client.commit("big", "master") as commit:
        client.put_file("big", commit.id, "/huge.txt", b"0123456789abcdef\n" * (8 << 20 >> 4))  # 8.5 MiB
    got = []

    class Counting:
        def get_file(self, *a):
            for piece in client.get_file(*a):
                got.append(len(piece))
                yield piece

    head = read_head(Counting(), "big", "master", "/huge.txt")
    assert len(head) == LIMIT
    assert sum(got) < LIMIT + (1 << 20)  # one piece past the limit at most, never the whole file


# -- SVG snapshots (tests/__snapshots__/test_tui_pfs/; update with --snapshot-update) --------


def _loaded(app, screen_type, ready) -> object:
    async def run_before(pilot) -> None:
        await until(pilot, lambda: isinstance(app.screen, screen_type) and ready(app.screen))
        await pilot.pause()

    return run_before


def test_snapshot_repos(snap_compare, tui_store):
    app = make_app(tui_store)
    ready = _loaded(app, ReposScreen, lambda s: s.table.row_count == 3 and all(
        s.table.row_cells(k)[3] != "-" for k in ("images", "labels")))
    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_commits(snap_compare, tui_store):
    app = make_app(tui_store, start="commits", start_params={"repo": "images"})
    ready = _loaded(app, CommitsScreen, lambda s: s.commits_table.row_count == 3 and s.branches_table.row_count == 3)
    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_files_text_preview(snap_compare, tui_store):
    app = make_app(tui_store, start="files", start_params={"repo": "images", "commit": "master"})
    pv = lambda s: s.preview.shown is not None and s.preview.shown.kind == "text"  # noqa: E731
    assert snap_compare(app, terminal_size=SIZE, run_before=_loaded(app, FilesScreen, pv))


def test_snapshot_files_csv_preview(snap_compare, tui_store):
    app = make_app(tui_store, start="files", start_params={"repo": "images", "commit": "master", "path": "/data"})
    pv = lambda s: s.preview.shown is not None and s.preview.shown.kind == "csv"  # noqa: E731

    async def run_before(pilot) -> None:
        await until(pilot, lambda: isinstance(app.screen, FilesScreen) and app.screen.table.row_count == 2)
        await pilot.press("down")
        await until(pilot, lambda: pv(app.screen))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_files_binary_preview(snap_compare, tui_store):
    app = make_app(tui_store, start="files", start_params={"repo": "labels", "commit": "master"})
    pv = lambda s: s.preview.shown is not None and s.preview.shown.kind == "binary"  # noqa: E731
    assert snap_compare(app, terminal_size=SIZE, run_before=_loaded(app, FilesScreen, pv))


def test_snapshot_diff(snap_compare, tui_store):
    app = make_app(tui_store, start="diff", start_params={"repo": "images", "commit": "master"})
    ready = lambda s: s.patch is not None and "loading" not in s.patch[0]  # noqa: E731
    assert snap_compare(app, terminal_size=SIZE, run_before=_loaded(app, DiffScreen, ready))


def test_snapshot_help(snap_compare, tui_store):
    app = make_app(tui_store)

    async def run_before(pilot) -> None:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and app.screen.table.row_count == 3)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_confirm(snap_compare, tui_store):
    app = make_app(tui_store)

    async def run_before(pilot) -> None:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and app.screen.table.row_count == 3)
        app.run_worker(app.confirm("Delete repo 'images' and all its commits?"))
        # Mounted and settled (the safe answer focused), not merely pushed: under load the
        # first frame of the dialog can come before its focus does.
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.focused is not None
                    and app.focused.id == "no")
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# -- the entry point: `pachctl tui` ------------------------------------------------------------


def test_pachctl_tui_needs_a_terminal(tui_store):
    res = run(tui_store.pachy.env, "tui", rc=None)
    assert res.rc != 0 and res.err.startswith("error: pachctl tui needs a terminal")


def test_pachctl_tui_runs_in_a_terminal_against_the_cli_daemon_and_quits(tui_store):
    """A real pty: ADDRESS (as the CLI reads it) names the daemon's socket; q quits."""
    env = dict(tui_store.pachy.env, ADDRESS=f"unix:{tui_store.pachy.home}/mountd.sock", TERM="xterm-256color",
               COLUMNS="120", LINES="36")
    env.pop("PACHY_HOME")  # the address alone must find it
    pid, fd = pty.fork()
    if pid == 0:  # the child: pachctl tui --readonly on the pty
        os.execvpe(PACHCTL[0], [*PACHCTL, "tui", "--readonly"], env)
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while b"labels" not in seen:  # a repo name: the first screen is up
            assert time.monotonic() < deadline, seen[-2000:]
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                seen += os.read(fd, 65536)
        os.write(fd, b"q")
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "pachctl tui did not quit on q"
            if select.select([fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    os.read(fd, 65536)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


async def test_command_palette_offers_our_commands(tui_store):
    from textual.command import CommandList, CommandPalette

    app = make_app(tui_store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ReposScreen) and app.screen.table.row_count == 3)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"toggle command log")
        hits = app.screen.query_one(CommandList)
        await until(pilot, lambda: hits.option_count and "Toggle command log" in str(hits.get_option_at_index(0).prompt))
        await pilot.press("enter")
        await until(pilot, lambda: not app.show_log)
