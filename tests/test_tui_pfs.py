"""`pachctl tui`, the data side: the app shell (keys, command mode, filter,
help, confirm, --readonly, the command log, live events) and the repos,
commits, files (+ preview) and diff screens, through Textual's Pilot against
a real daemon (tests/tuihelp.py); SVG snapshots of each screen at 120x36."""

from __future__ import annotations

import pytest

from tests.tuihelp import SIZE, anyio_backend, make_app, tui_px, until  # noqa: F401 (fixtures)
from tui.screens.commits import CommitsScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.diff import DiffScreen
from tui.screens.files import FilesScreen
from tui.screens.help import HelpScreen
from tui.screens.repos import ReposScreen
from tui.widgets.preview import Preview
from tui.widgets.table import FilterTable

pytestmark = pytest.mark.anyio


def rows(table: FilterTable) -> list[str]:
    return [str(k.value) for k in table.rows]


async def test_navigate_repos_commits_files_preview(tui_px):
    app = make_app(tui_px)
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
        assert app.command_history[:2] == ["pachctl list commit images", f"pachctl list file images@{commits.commits[0].id}:/"]
