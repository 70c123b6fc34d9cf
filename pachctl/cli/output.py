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
from typing import Any

from pfsfuse.names import CONTROL, escape


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


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    out = out or sys.stdout
    cells = [[str(c) for c in headers]] + [[safe(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = "   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip()
        out.write(line + "\n")


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
    """A one-line progress bar on stderr, only when it is a terminal and the
    transfer is big enough to be worth watching."""

    MIN_BYTES = 4 << 20

    def __init__(self, total: int | None, label: str):
        self.total = total
        self.label = label
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        self.enabled = sys.stderr.isatty() and (total is None or total >= self.MIN_BYTES)

    def __call__(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {human_size(self.done)} {human_size(int(rate))}/s"
        else:
            text = f"\r{self.label} {human_size(self.done)} {human_size(int(rate))}/s"
        sys.stderr.write(text[:200])
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()
