"""What the pipeline screens (pipelines, jobs, datums) share: a title, a
virtualized table (Textual's DataTable renders only visible rows) fed from a
thread worker, a ``/`` filter, a detail line, and actions hidden under
``--readonly``. Also the cells they show: ages and durations against the
app's clock (frozen in tests), job progress bars and state colours."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from pachctl.cli.output import human_duration
from pachctl.client import errors

# Actions a screen offers; hidden (and refused) with --readonly.
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


class PpsTable(Screen):
    """A titled table of rows with keys; subclasses say what to fetch (``fetch``, in a
    thread) and how a row looks (``row``)."""

    DEFAULT_CSS = """
    PpsTable #title { height: 1; background: $boost; text-style: bold; padding: 0 1; }
    PpsTable DataTable { height: 1fr; }
    PpsTable #detail { height: auto; max-height: 8; padding: 0 1; color: $text-muted; }
    PpsTable #filter { display: none; }
    PpsTable #filter.shown { display: block; }
    """
    BINDINGS = [Binding("slash", "filter", "filter"), Binding("ctrl+r", "reload", "reload", show=False)]
    COLUMNS: Sequence[str] = ()
    TITLE_TEXT = ""
    ACTIONS: frozenset[str] = frozenset()  # action names refused with --readonly

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.items: dict[str, Any] = {}  # row key -> the model it shows (newest data)
        self.order: list[str] = []
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text(), id="title")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="table")
            yield Static("", id="detail")
            yield Input(placeholder="filter (esc: clear)", id="filter")
        yield Footer()

    def title_text(self) -> str:
        return self.TITLE_TEXT

    @property
    def table(self) -> DataTable:
        return self.query_one("#table", DataTable)

    def on_mount(self) -> None:
        for col in self.COLUMNS:
            self.table.add_column(col, key=col)
        self.reload()

    # -- data ----------------------------------------------------------------------

    def fetch(self) -> list[Any]:
        """Runs in a thread: the models to show, in order (``self.app.client``)."""
        raise NotImplementedError

    def key(self, item: Any) -> str:
        return item.id

    def row(self, item: Any) -> Sequence[Any]:
        raise NotImplementedError

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.run_worker(self._fetch_thread, thread=True, group="fetch", exclusive=True)

    def _fetch_thread(self) -> None:
        try:
            items = self.fetch()
        except errors.PfsError as exc:
            self.app.call_from_thread(self.notify, f"error: {exc}", severity="error")
            return
        self.app.call_from_thread(self.show, items)

    def show(self, items: list[Any], append: bool = False) -> None:
        """Show ``items`` (replacing the rows, or after them), keeping the cursor's row."""
        keep = self.cursor_key()
        if not append:
            self.items, self.order = {}, []
        for it in items:
            k = self.key(it)
            if k not in self.items:
                self.order.append(k)
            self.items[k] = it
        self._fill(keep)

    def _fill(self, keep: str | None) -> None:
        table = self.table
        table.clear()
        for k in self.order:
            cells = self.row(self.items[k])
            if self.filter_text and not any(self.filter_text.lower() in str(c).lower() for c in cells):
                continue
            table.add_row(*cells, key=k)
        if keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep), animate=False)
        self.update_detail()

    def update_item(self, item: Any) -> None:
        """One row changed (a live event): its cells are redrawn in place."""
        k = self.key(item)
        self.items[k] = item
        if k in self.table.rows:
            for col, value in zip(self.COLUMNS, self.row(item), strict=True):
                self.table.update_cell(k, col, value)
        if k == self.cursor_key():
            self.update_detail()

    def cursor_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no row under the cursor
            return None

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

    # -- filter, readonly ------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._fill(self.cursor_key())

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.table.focus()

    def on_key(self, event) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            box.value = ""
            box.remove_class("shown")
            self.table.focus()
            event.stop()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Hidden from the footer, and the key does nothing.
        return not (action in self.ACTIONS and getattr(self.app, "readonly", False))

    def act(self, coro) -> None:
        """Run an action (tui.actions: confirm, record, call) as a worker: the confirm
        dialog is awaited, which only a worker may do."""
        self.run_worker(coro, group="action")
