"""What the pipeline screens (pipelines, jobs, datums) share: a title, a
virtualized table (Textual's DataTable renders only visible rows) fed from a
thread worker, a ``/`` filter, a detail line, and actions hidden under
``--readonly``. Also the cells they show: ages and durations against the
app's clock (frozen in tests), job progress bars and state colours."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.widgets import DataTable, Static

from pachctl.cli.output import human_duration
from pachctl.client import errors
from tui.screens.base import PachyScreen
from tui.widgets.table import FilterTable

STATE_STYLES = {
    "success": "green", "running": "yellow", "starting": "yellow", "created": "yellow", "standby": "cyan",
    "paused": "magenta", "failure": "red", "failed": "red", "killed": "red", "crashing": "red",
    "skipped": "blue", "recovered": "cyan",
}
BAR_WIDTH = 12


def now(app: Any) -> float:
    """The app's clock: ``app.now`` (a number, or a callable) when the app was given one
    (tests freeze it so snapshots do not change), else the time."""
    n = getattr(app, "now", None)
    if callable(n):
        return float(n())
    if isinstance(n, int | float):
        return float(n)
    return time.time()


def state_text(state: str | None) -> Text:
    return Text(state or "-", style=STATE_STYLES.get(state or "", ""))


def ago(ts: float | None, at: float) -> str:
    return "-" if ts is None else human_duration(max(0.0, at - ts)) + " ago"


def duration(start: float | None, end: float | None, at: float) -> str:
    """A running job's duration so far; "-" before it started."""
    if start is None:
        return "-"
    return human_duration(max(0.0, (end if end is not None else at) - start))


def progress_bar(processed: int, skipped: int, total: int, failed: int = 0, width: int = BAR_WIDTH) -> Text:
    """``(processed + skipped) / total`` as a bar and the counts list-job prints."""
    done = processed + skipped
    frac = 1.0 if total == 0 else min(1.0, done / total)
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + ("" if part == 0 else " ▏▎▍▌▋▊▉"[part])
    colour = "red" if failed else "green" if frac >= 1.0 else "yellow"
    text = Text(bar, style=colour)
    text.append("░" * (width - len(bar)), style=Style(dim=True))
    text.append(f" {processed} + {skipped} / {total}")
    return text


class PpsTable(PachyScreen):
    """A table of rows with keys under the app's breadcrumb, filter and command log;
    subclasses say what to fetch (``fetch``, in a thread) and how a row looks (``row``);
    enter on a row calls ``open_row``."""

    DEFAULT_CSS = """
    PpsTable #detail { height: auto; max-height: 8; padding: 0 1; color: $text-muted; }
    """
    COLUMNS: Sequence[str] = ()

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.items: dict[str, Any] = {}  # row key -> the model it shows (newest data)
        self.order: list[str] = []

    def compose_body(self) -> ComposeResult:
        yield FilterTable(*self.COLUMNS, id="table")
        yield Static("", id="detail")

    def compose(self) -> ComposeResult:
        self.crumb = self.title_text()
        yield from super().compose()

    def title_text(self) -> str:
        return self.crumb

    def on_screen_suspend(self) -> None:
        self._behind = True

    def on_screen_resume(self) -> None:
        # Live events go to the screen in front only: one come back to missed those meanwhile.
        if getattr(self, "_behind", False):
            self._behind = False
            self.load()

    @property
    def table(self) -> FilterTable:
        return self.query_one("#table", FilterTable)

    # -- data ----------------------------------------------------------------------

    def fetch(self) -> list[Any]:
        """Runs in a thread: the models to show, in order (``self.app.client``)."""
        raise NotImplementedError

    def key(self, item: Any) -> str:
        return item.id

    def row(self, item: Any) -> Sequence[Any]:
        raise NotImplementedError

    def load(self) -> None:
        self.run_worker(self._fetch_thread, thread=True, group="fetch", exclusive=True)

    def reload(self) -> None:
        self.load()

    def _fetch_thread(self) -> None:
        try:
            items = self.fetch()
        except errors.PfsError as exc:
            self.app.call_from_thread(self.notify, f"error: {exc}", severity="error")
            return
        self.app.call_from_thread(self._show_if_shown, items)

    def _show_if_shown(self, items: list[Any]) -> None:
        # The screen may have been closed while the daemon answered.
        with contextlib.suppress(NoMatches):
            self.show(items)

    def show(self, items: list[Any]) -> None:
        """Show ``items`` (replacing the rows), keeping the cursor's row."""
        self.items = {self.key(it): it for it in items}
        self.order = list(self.items)
        if not self.table.columns:  # the answer can come before the table's own on_mount
            self.table.add_columns(*self.COLUMNS)
        self.table.set_rows((k, self.row(self.items[k])) for k in self.order)
        self.set_crumb(self.title_text())
        self.update_detail()

    def append(self, items: list[Any]) -> None:
        """More rows after the last (the next page)."""
        if not self.query("#table"):
            return
        fresh = [it for it in items if self.key(it) not in self.items]
        for it in fresh:
            self.items[self.key(it)] = it
            self.order.append(self.key(it))
        self.table.add_rows((self.key(it), self.row(it)) for it in fresh)

    def update_item(self, item: Any) -> None:
        """One row changed (a live event): its cells are redrawn in place."""
        k = self.key(item)
        self.items[k] = item
        self.table.update_row(k, self.row(item))
        if k == self.cursor_key():
            self.update_detail()

    def cursor_key(self) -> str | None:
        return self.table.current_key()

    def selected(self) -> Any | None:
        k = self.cursor_key()
        return self.items.get(k) if k is not None else None

    def detail(self, item: Any) -> str:
        return ""

    def update_detail(self) -> None:
        item = self.selected()
        self.query_one("#detail", Static).update(self.detail(item) if item is not None else "")

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.update_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        item = self.items.get(event.row_key.value)
        if item is not None:
            self.open_row(item)

    def open_row(self, item: Any) -> None:
        """Enter on a row."""

    def act(self, coro) -> None:
        """Run an action (tui.actions: confirm, record, call) as a worker: the confirm
        dialog is awaited, which a key handler must not do itself."""
        self.run_worker(coro, group="action")
