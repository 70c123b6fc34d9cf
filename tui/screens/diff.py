"""``:diff REPO COMMIT [OLD]`` — what a commit changed against its parent (or
against OLD, another commit): added, deleted and modified files, and for the
file under the cursor a unified diff of their first 256 KiB."""

from __future__ import annotations

import difflib

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from tui import routes
from tui.fmt import human_size, safe, short_id
from tui.screens.base import PachyScreen
from tui.widgets.preview import THEME, decode_text, read_head
from tui.widgets.table import FilterTable

LIMIT = 256 * 1024  # bytes of each side compared
MAX_LINES = 5000  # diff lines shown
STATUS = {"added": ("A", "green"), "deleted": ("D", "red"), "modified": ("M", "yellow")}


def unified(path: str, old: bytes, new: bytes, old_total: int, new_total: int) -> tuple[str, object]:
    """(title, renderable) of the diff of two heads of a file."""
    a = decode_text(old, len(old) < old_total)
    b = decode_text(new, len(new) < new_total)
    if a is None or b is None:
        return (f"{safe(path)} — binary, {human_size(old_total)} → {human_size(new_total)}",
                Text("binary files differ", style="dim"))
    lines = list(difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                      fromfile=f"a{path}", tofile=f"b{path}"))
    title = f"{safe(path)} — {human_size(old_total)} → {human_size(new_total)}"
    if len(old) < old_total or len(new) < new_total:
        title += f" (diff of the first {human_size(LIMIT)})"
    if len(lines) > MAX_LINES:
        title += f", first {MAX_LINES} of {len(lines)} lines"
        lines = lines[:MAX_LINES]
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return title, Syntax(text or "(no difference in text)", "diff", theme=THEME, word_wrap=False)


class DiffScreen(PachyScreen):
    """What a commit changed (its parent, or another commit: :diff images master master^)."""

    CSS_PATH = "diff.tcss"

    def __init__(self, repo: str, commit: str, old: str | None = None) -> None:
        super().__init__()
        self.repo = repo
        self.commit = commit
        self.old = old
        self.old_ref: str | None = old  # the parent, once known
        self.changes: dict[str, object] = {}
        self.target: str | None = None
        self.patch: tuple[str, object] | None = None  # (title, renderable) shown

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            yield FilterTable("", "PATH", "OLD SIZE", "NEW SIZE", id="changes")
            with Vertical(id="patch"):
                yield Static("", id="patch-title")
                with VerticalScroll(id="patch-scroll"):
                    yield Static("", id="patch-body")

    @property
    def table(self) -> FilterTable:
        return self.query_one("#changes", FilterTable)

    def on_mount(self) -> None:
        super().on_mount()
        self.table.focus()
        cmd = f"pachctl diff file {self.repo}@{self.commit}"
        if self.old:
            cmd += f" --old {self.old}"
        self.app.record_command(cmd)

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        c = self.app.client
        try:
            old_ref = self.old or c.inspect_commit(self.repo, self.commit).parent
            changes = c.diff_file(self.repo, self.commit, self.old)
        except Exception as exc:
            self.app.call_from_thread(self.notify, str(getattr(exc, "message", exc)), severity="error")
            return
        self.app.call_from_thread(self._show, old_ref, changes)

    def _show(self, old_ref: str | None, changes: list) -> None:
        self.old_ref = old_ref
        self.changes = {d.path: d for d in changes}
        rows = []
        for d in changes:
            letter, colour = STATUS.get(d.status, ("?", "white"))
            rows.append((d.path, [Text(letter, style=f"bold {colour}"), Text(safe(d.path), style=colour),
                                  human_size(d.old_size) if d.old_size is not None else "-",
                                  human_size(d.new_size) if d.new_size is not None else "-"]))
        self.table.set_rows(rows)
        counts = {s: sum(1 for d in changes if d.status == s) for s in STATUS}
        against = short_id(self.app.show_id(old_ref)) if old_ref else "nothing (first commit)"
        self.set_crumb(f"repos › {self.repo} › diff {short_id(self.app.show_id(self.commit))} against {against}: "
                       f"{counts['added']} added, {counts['deleted']} deleted, {counts['modified']} modified")
        if changes:
            self._patch(self.table.current_key())
        else:
            self._put("no changes", Text(""))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table is self.table:
            self._patch(event.row_key.value)

    def _patch(self, path: str | None) -> None:
        d = self.changes.get(path) if path else None
        if d is None:
            return
        self.target = path
        self.query_one("#patch-title", Static).update(f"{safe(path)} — loading…")
        self._load_patch(d)

    @work(thread=True, exclusive=True, group="patch")
    def _load_patch(self, d) -> None:
        c = self.app.client
        try:
            old = read_head(c, self.repo, self.old_ref, d.path, LIMIT) if d.status != "added" and self.old_ref else b""
            new = read_head(c, self.repo, self.commit, d.path, LIMIT) if d.status != "deleted" else b""
            title, body = unified(d.path, old, new, d.old_size or 0, d.new_size or 0)
        except Exception as exc:
            title, body = f"{safe(d.path)} — cannot read it", Text(str(getattr(exc, "message", exc)), style="red")
        self.app.call_from_thread(self._arrived, d.path, title, body)

    def _arrived(self, path: str, title: str, body: object) -> None:
        if path == self.target:
            self._put(title, body)

    def _put(self, title: str, body: object) -> None:
        self.patch = (title, body)
        self.query_one("#patch-title", Static).update(title)
        self.query_one("#patch-body", Static).update(body)
        self.query_one("#patch-scroll", VerticalScroll).scroll_home(animate=False)


routes.ROUTES["diff"] = DiffScreen
