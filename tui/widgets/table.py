"""A DataTable over rows kept in memory, with a text filter (``/``).

Screens hand it whole rows (``set_rows``) or more rows (``add_rows``, for
pages fetched on demand); the filter keeps the rows any of whose cells
contains the text (case-insensitive), without another round trip to the
daemon. Row keys stay stable so the cursor survives a refresh."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

Cells = Sequence[str | Text]


class FilterTable(DataTable):
    DEFAULT_CSS = "FilterTable { height: 1fr; }"
    BINDINGS = [
        Binding("enter", "select_cursor", "Open"),
        # Rows, not columns: end/G go to the last row, home/g to the first (as in k9s, less).
        Binding("end,G", "scroll_bottom", "Last row", show=False),
        Binding("home,g", "scroll_top", "First row", show=False),
    ]

    def __init__(self, *columns: str, **kw) -> None:
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", True)
        super().__init__(**kw)
        self._columns = columns
        self._rows: list[tuple[str, Cells]] = []
        self._index: dict[str, int] = {}
        self.filter_text = ""

    def on_mount(self) -> None:
        if not self.columns:
            self.add_columns(*self._columns)

    @staticmethod
    def _plain(cells: Cells) -> str:
        return "\x00".join(c.plain if isinstance(c, Text) else str(c) for c in cells).lower()

    def _matches(self, cells: Cells) -> bool:
        return not self.filter_text or self.filter_text in self._plain(cells)

    def set_rows(self, rows: Iterable[tuple[str, Cells]]) -> None:
        """Replace every row: ``(key, cells)`` pairs, in display order."""
        keep = self.current_key()
        self._rows = list(rows)
        self._index = {k: i for i, (k, _) in enumerate(self._rows)}
        self._redraw(keep)

    def add_rows(self, rows: Iterable[tuple[str, Cells]]) -> None:
        """Append rows (the next page); rows already shown are skipped."""
        for key, cells in rows:
            if key in self._index:
                continue
            self._index[key] = len(self._rows)
            self._rows.append((key, cells))
            if self._matches(cells):
                self.add_row(*cells, key=key)

    def update_row(self, key: str, cells: Cells) -> None:
        """Change one row in place, or append it if it is new."""
        if key not in self._index:
            self.add_rows([(key, cells)])
            return
        self._rows[self._index[key]] = (key, cells)
        if key in self.rows:
            for col, value in zip(self.columns, cells, strict=False):
                self.update_cell(key, col, value, update_width=True)

    def row_cells(self, key: str) -> Cells | None:
        i = self._index.get(key)
        return None if i is None else self._rows[i][1]

    @property
    def total(self) -> int:
        return len(self._rows)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._redraw(self.current_key())

    def current_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # the cursor sits past the rows (a shrinking table)
            return None

    def _redraw(self, keep: str | None) -> None:
        self.clear()
        for key, cells in self._rows:
            if self._matches(cells):
                self.add_row(*cells, key=key)
        if keep is not None and keep in self.rows:
            self.move_cursor(row=self.get_row_index(keep), animate=False)
