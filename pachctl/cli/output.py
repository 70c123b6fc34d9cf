"""Porcelain: tables with UPPERCASE headers, human sizes and times, progress.

Plumbing (``--json``) goes through ``emit_json``; data on stdout, progress
and errors on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import rich.progress
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pfsfuse.names import CONTROL, escape

HEADER_STYLE = "bold"


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if n < 10 else f"{n:.0f} {unit}"
    raise AssertionError


def human_duration(seconds: float) -> str:
    """As Docker/Pachyderm print durations: 'About a minute', '3 hours'."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return ""
    return human_duration((now or time.time()) - ts) + " ago"


def safe(value: Any) -> str:
    """A value as text fit for a terminal: control characters (ESC, newlines,
    ...) in names and paths are shown as escapes (``\\x1b``, ``\\n``), never
    acted on. Human output only; ``--json`` keeps the exact strings."""
    text = "" if value is None else str(value)
    return escape(text) if CONTROL.search(text) else text


# Tables up to this many rows go through rich's Table on a terminal (header
# style, columns fitted to the terminal's width); rich lays out ~0.4 ms per
# row, so longer tables, and every table written to a pipe or a file, use
# the plain renderer below: the same layout, measured and padded directly.
RICH_TABLE_ROWS = 100
SEPARATOR = 3  # spaces between columns, as the seeds' tables


def _width(text: str) -> int:
    # Terminal cells, not characters: a CJK or emoji name takes two.
    return len(text) if text.isascii() else cell_len(text)


def _console(out: TextIO) -> Console:
    """A rich console on ``out``: colour only on a terminal without NO_COLOR."""
    # No colour system at all without colour: rich's own NO_COLOR handling drops
    # colours but keeps bold and the like.
    color = use_color(out)
    return Console(file=out, highlight=False, soft_wrap=False, color_system="auto" if color else None,
                   no_color=not color, emoji=False, markup=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Whitespace-aligned columns under UPPERCASE headers, no borders (as the
    seeds print them); cells pass through ``safe``. On a terminal the header
    is bold (unless NO_COLOR); elsewhere the text is plain, with no escape codes."""
    out = out or sys.stdout
    cells = [[safe(c) for c in r] for r in rows]
    tty = out.isatty()
    if tty and len(cells) <= RICH_TABLE_ROWS:
        console = _console(out)
        t = Table(box=None, show_edge=False, pad_edge=False, padding=(0, SEPARATOR, 0, 0),
                  header_style=HEADER_STYLE, collapse_padding=True)
        for h in headers:
            t.add_column(str(h), no_wrap=True, overflow="fold")
        for r in cells:
            t.add_row(*(Text(c) for c in r))
        console.print(t)
        return
    _plain_table([str(h) for h in headers], cells, out, styled=tty and use_color(out))


def _plain_table(headers: list[str], cells: list[list[str]], out: TextIO, styled: bool) -> None:
    widths = [_width(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            w = _width(c)
            if w > widths[i]:
                widths[i] = w
    gap = " " * SEPARATOR

    def line(r: Sequence[str]) -> str:
        return gap.join(c + " " * (widths[i] - _width(c)) for i, c in enumerate(r)).rstrip()

    head = line(headers)
    if styled:
        head = _styled(_console(out), head)
    out.write(head + "\n")
    out.write("".join(line(r) + "\n" for r in cells))


def _styled(console: Console, text: str) -> str:
    """``text`` in the header style, as the escape codes rich would write for it."""
    with console.capture() as cap:
        console.print(Text(text, style=HEADER_STYLE), end="")
    return cap.get()


def kv(pairs: Sequence[tuple[str, Any]], out=None) -> None:
    out = out or sys.stdout
    for k, v in pairs:
        out.write(f"{k}: {safe(v)}\n")


def emit_json(value: Any) -> None:
    def plain(v: Any) -> Any:
        if hasattr(v, "model_dump"):
            return v.model_dump(by_alias=True)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    json.dump(plain(value), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def use_color(stream=None) -> bool:
    stream = stream or sys.stderr
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def error(message: str) -> None:
    """One line on stderr, whatever the message quotes (a name with a newline
    or an escape sequence in it is shown escaped)."""
    prefix = "\033[31merror:\033[0m" if use_color() else "error:"
    sys.stderr.write(f"{prefix} {safe(message)}\n")


class Progress:
    """A progress bar (rich) on stderr, only when it is a terminal and the
    transfer is big enough to be worth watching; called with each piece's
    byte count, closed at the end. Nothing is drawn on stdout, which may be
    the data itself (get-file)."""

    MIN_BYTES = 4 << 20

    def __init__(self, total: int | None, label: str):
        self.total = total
        self.label = label
        self.done = 0
        self.enabled = sys.stderr.isatty() and (total is None or total >= self.MIN_BYTES)
        self._bar: rich.progress.Progress | None = None
        if self.enabled:
            console = _console(sys.stderr)
            self._bar = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}", markup=False),
                rich.progress.BarColumn(),
                rich.progress.TaskProgressColumn(),
                rich.progress.DownloadColumn(binary_units=True),
                rich.progress.TransferSpeedColumn(),
                rich.progress.TimeRemainingColumn(),
                console=console,
                transient=False,
                refresh_per_second=10,
            )
            self._task = self._bar.add_task(safe(label), total=total)
            self._bar.start()

    def __call__(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()  # draws the last state and leaves it on its own line
            self._bar = None
