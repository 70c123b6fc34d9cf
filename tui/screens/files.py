"""``:files REPO COMMIT [PATH]`` — a commit's file tree, one directory at a
time (enter descends, backspace goes up), with a preview of the file under
the cursor (tui/widgets/preview.py: only its first 64 KiB are read)."""

from __future__ import annotations

import posixpath

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable

from tui import routes
from tui.fmt import human_size, safe, short_id
from tui.screens.base import PachyScreen
from tui.widgets.preview import Preview
from tui.widgets.table import FilterTable

UP = "\x00up"


class FilesScreen(PachyScreen):
    """A commit's files with a preview (:files images master)."""

    CSS_PATH = "files.tcss"
    BINDINGS = [
        Binding("backspace", "up", "Up"),
        Binding("d", "diff", "Diff with parent"),
    ]

    def __init__(self, repo: str, commit: str = "master", path: str = "/") -> None:
        super().__init__()
        self.repo = repo
        self.commit = commit
        self.path = "/" + path.strip("/")
        self.infos: dict[str, object] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            yield FilterTable("NAME", "TYPE", "SIZE", id="files")
            yield Preview(id="preview")

    @property
    def table(self) -> FilterTable:
        return self.query_one("#files", FilterTable)

    @property
    def preview(self) -> Preview:
        return self.query_one("#preview", Preview)

    def where(self, path: str | None = None) -> str:
        return f"{self.repo}@{self.commit}:{path or self.path}"

    def on_mount(self) -> None:
        super().on_mount()
        self.table.focus()

    def _crumb(self) -> None:
        self.set_crumb(f"repos › {self.repo} › {short_id(self.app.show_id(self.commit))} › {safe(self.path)}")

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        try:
            files = self.app.client.list_file(self.repo, self.commit, self.path)
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(getattr(exc, "message", exc)), severity="error")
            files = []
        self.app.call_from_thread(self._show, files)

    def _show(self, files: list) -> None:
        self.app.record_command(f"pachctl list file {self.where()}")
        self.infos = {f.path: f for f in files}
        rows = []
        if self.path != "/":
            rows.append((UP, [Text("..", style="bold"), "dir", ""]))
        for f in files:
            name = posixpath.basename(f.path.rstrip("/")) + ("/" if f.type == "dir" else "")
            rows.append((f.path, [Text(safe(name), style="bold blue" if f.type == "dir" else ""),
                                  f.type, human_size(f.size)]))
        self.table.set_rows(rows)
        self._crumb()
        if not files:
            self.preview.clear("(no files here)")
        else:
            self._preview(self.table.current_key())

    def _preview(self, key: str | None) -> None:
        info = self.infos.get(key) if key else None
        if info is None:
            self.preview.clear("")
        elif info.type == "dir":
            self.preview.clear(f"{safe(info.path)}/ — directory, {human_size(info.size)} (enter opens it)")
        else:
            self.preview.show(self.app.client, self.repo, self.commit, info.path, info.size)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table is self.table:
            self._preview(event.row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table is not self.table:
            return
        key = event.row_key.value
        if key == UP:
            self.action_up()
            return
        info = self.infos.get(key)
        if info is not None and info.type == "dir":
            self.path = "/" + info.path.strip("/")
            self.load()

    def action_up(self) -> None:
        if self.path != "/":
            self.path = posixpath.dirname(self.path.rstrip("/")) or "/"
            self.load()

    def action_diff(self) -> None:
        self.app.open("diff", repo=self.repo, commit=self.commit)


routes.ROUTES["files"] = FilesScreen
