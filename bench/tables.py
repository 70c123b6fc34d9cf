"""Table rendering: pachctl/cli/output.table (rich, issue 12) against the
hand-written renderer it replaced, in the same run, 10,000 list-commit rows.

    PYTHONPATH=. .venv/bin/python -m bench.tables

Prints seconds per render (best of 5) for: a pipe (plain text), a terminal
(bold header; more than RICH_TABLE_ROWS rows, so the direct renderer), and a
terminal table small enough for rich's Table (100 rows), with each ratio to
the old code on the same rows.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pachctl.cli import output

HEADERS = ["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"]


def rows(n: int) -> list[tuple[str, ...]]:
    return [("master", f"projects/master/{i}", f"master/{i - 1}" if i else "<none>", "6 minutes ago",
             "6 minutes ago", output.human_size(i * 37 % 5000)) for i in range(n)]


def old_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: io.StringIO) -> None:
    """The renderer before rich (pachctl/cli/output.py at ed7854b), verbatim in behaviour."""
    cells = [[str(c) for c in headers]] + [[output.safe(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = "   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip()
        out.write(line + "\n")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def best(fn: Callable[[], None], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    os.environ.pop("NO_COLOR", None)
    os.environ.setdefault("TERM", "xterm")
    for label, n, sink in (("pipe", 10_000, io.StringIO), ("terminal", 10_000, Tty), ("terminal", 100, Tty)):
        r = rows(n)
        old = best(lambda r=r: old_table(HEADERS, r, io.StringIO()))
        new = best(lambda r=r, sink=sink: output.table(HEADERS, r, sink()))
        print(f"{label:9} {n:6} rows: old {old * 1000:8.2f} ms   new {new * 1000:8.2f} ms   ratio {new / old:5.2f}x")


if __name__ == "__main__":
    main()
