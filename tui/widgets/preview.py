"""A file's preview: text with syntax highlighting (by extension), CSV/TSV as
a table, JSON pretty-printed, anything else as a hex dump with its size.

Only the head of a file is ever read (``LIMIT``, 64 KiB): the client's
``get_file`` stream is closed after it, so a 3 GiB file costs what a 64 KiB
one does, and the title says "first 64 KiB of 3.0 GiB"."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from dataclasses import dataclass

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from tui.fmt import human_size, safe

LIMIT = 64 * 1024  # bytes read for a preview
HEX_LIMIT = 4 * 1024  # bytes shown as a hex dump
TABLE_ROWS = 1000  # rows of a CSV/TSV shown
SNIFF = 8 * 1024  # bytes looked at to tell text from binary
THEME = "monokai"


@dataclass
class Rendered:
    kind: str  # text, json, csv, tsv, binary, empty, directory
    title: str
    body: object = None  # a rich renderable (text kinds) or None
    rows: list[list[str]] | None = None  # csv/tsv: header first


def read_head(client, repo: str, commit: str, path: str, limit: int = LIMIT) -> bytes:
    """At most ``limit`` bytes from the start of a file; the rest is never read."""
    buf = bytearray()
    stream = client.get_file(repo, commit, path)
    try:
        for piece in stream:
            buf += piece
            if len(buf) >= limit:
                break
    finally:
        stream.close()  # ends the HTTP stream: the daemon stops sending
    return bytes(buf[:limit])


def decode_text(head: bytes, truncated: bool) -> str | None:
    """The head as text, or None if it looks binary (a NUL, or not UTF-8 —
    a character cut at the end of a truncated head does not count)."""
    if b"\x00" in head[:SNIFF]:
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(head, final=not truncated)
    except UnicodeDecodeError:
        return None


def hexdump(data: bytes) -> str:
    lines = []
    for off in range(0, len(data), 16):
        row = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{off:08x}  {hexes[:23]:<23}  {hexes[24:]:<23}  |{text}|")
    return "\n".join(lines)


def _title(path: str, kind: str, got: int, total: int) -> str:
    what = f"{safe(path)} — {kind}, {human_size(total)}"
    if got < total:
        what += f" (first {human_size(got)} of {human_size(total)})"
    return what


def render(path: str, head: bytes, total: int) -> Rendered:
    """What the preview shows for a file whose first bytes are ``head``."""
    truncated = len(head) < total
    if total == 0:
        return Rendered("empty", f"{safe(path)} — empty file", Text("(empty)", style="dim"))
    ext = os.path.splitext(path)[1].lower()
    text = decode_text(head, truncated)
    if text is None:
        shown = head[:HEX_LIMIT]
        title = f"{safe(path)} — binary, {human_size(total)} (first {human_size(len(shown))} as hex)"
        return Rendered("binary", title, Text(hexdump(shown)))
    if ext in (".csv", ".tsv"):
        lines = text.splitlines()
        if truncated and lines:
            lines = lines[:-1]  # the last line was cut short
        reader = csv.reader(io.StringIO("\n".join(lines[:TABLE_ROWS + 1])), delimiter="\t" if ext == ".tsv" else ",")
        rows = [[safe(c) for c in r] for r in reader]
        kind = ext[1:]
        title = _title(path, kind.upper(), len(head), total)
        if len(lines) > TABLE_ROWS + 1:
            title += f", first {TABLE_ROWS} rows"
        return Rendered(kind, title, rows=rows)
    if ext == ".json" and not truncated:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass  # not valid JSON after all: shown as it is
    lexer = Syntax.guess_lexer(path, code=text[:SNIFF]) if ext else "text"
    kind = "JSON" if ext == ".json" else "text"
    syntax = Syntax(text, lexer, theme=THEME, line_numbers=True, word_wrap=False)
    return Rendered("json" if ext == ".json" else "text", _title(path, kind, len(head), total), syntax)


class Preview(Vertical):
    DEFAULT_CSS = """
    Preview #preview-title { height: 1; background: $boost; padding: 0 1; text-style: bold; }
    Preview #preview-scroll { height: 1fr; }
    Preview #preview-table { height: 1fr; display: none; }
    Preview.-table #preview-table { display: block; }
    Preview.-table #preview-scroll { display: none; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.shown: Rendered | None = None
        self.target: tuple[str, str, str] | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="preview-title")
        with VerticalScroll(id="preview-scroll"):
            yield Static("", id="preview-body")
        yield DataTable(id="preview-table", zebra_stripes=True, cursor_type="row")

    def clear(self, message: str = "") -> None:
        self.target = None
        self.workers.cancel_group(self, "preview")
        self._put(Rendered("none", message, Text("")))

    def show(self, client, repo: str, commit: str, path: str, size: int) -> None:
        """Preview ``path`` (read in a thread; a newer call wins)."""
        self.target = (repo, commit, path)
        self.query_one("#preview-title", Static).update(f"{safe(path)} — loading…")
        self._load(client, repo, commit, path, size)

    @work(thread=True, exclusive=True, group="preview")
    def _load(self, client, repo: str, commit: str, path: str, size: int) -> None:
        try:
            head = read_head(client, repo, commit, path)
            shown = render(path, head, max(size, len(head)))
        except Exception as exc:
            shown = Rendered("error", f"{safe(path)} — cannot read it", Text(str(getattr(exc, "message", exc)), style="red"))
        self.app.call_from_thread(self._arrived, (repo, commit, path), shown)

    def _arrived(self, target: tuple[str, str, str], shown: Rendered) -> None:
        if target == self.target:  # the cursor has not moved on meanwhile
            self._put(shown)

    def _put(self, shown: Rendered) -> None:
        self.shown = shown
        self.query_one("#preview-title", Static).update(shown.title)
        self.set_class(shown.rows is not None, "-table")
        if shown.rows is not None:
            table = self.query_one("#preview-table", DataTable)
            table.clear(columns=True)
            if shown.rows:
                width = max(len(r) for r in shown.rows)
                header = shown.rows[0] + [""] * (width - len(shown.rows[0]))
                table.add_columns(*header)
                for r in shown.rows[1:]:
                    table.add_row(*(r + [""] * (width - len(r))))
        else:
            self.query_one("#preview-body", Static).update(shown.body or "")
            self.query_one("#preview-scroll", VerticalScroll).scroll_home(animate=False)
