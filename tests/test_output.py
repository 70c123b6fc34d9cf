"""Porcelain helpers: sizes, times, tables, and the progress bar's terminal rule."""

from __future__ import annotations

import io

from pachctl.cli import output


def test_human_sizes_and_durations() -> None:
    assert output.human_size(874) == "874 B"
    assert output.human_size(1536) == "1.5 KiB"
    assert output.human_size(300 << 20) == "300 MiB"
    assert output.human_duration(0.2) == "Less than a second"
    assert output.human_duration(75) == "About a minute"
    assert output.human_duration(12 * 60) == "12 minutes"
    assert output.human_duration(3 * 3600) == "3 hours"
    assert output.ago(1000.0, now=1000.0 + 19 * 60) == "19 minutes ago"


def test_table_aligns_columns_under_uppercase_headers() -> None:
    out = io.StringIO()
    output.table(["NAME", "CREATED", "SIZE"], [("data", "12 minutes ago", "874 B"), ("sum", "2 minutes ago", "12 B")], out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "SIZE"]
    assert lines[1].index("12 minutes") == lines[0].index("CREATED") == lines[2].index("2 minutes")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal_and_for_big_transfers(monkeypatch) -> None:
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    bar = output.Progress(64 << 20, "big.bin")
    bar(32 << 20)
    bar.close()
    assert "big.bin" in tty.getvalue() and "%" in tty.getvalue()

    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    small = output.Progress(1000, "small")
    small(1000)
    small.close()
    assert tty.getvalue() == ""

    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    quiet = output.Progress(64 << 20, "piped")
    quiet(64 << 20)
    quiet.close()
    assert pipe.getvalue() == ""


def test_errors_are_red_only_on_a_terminal_without_no_color(monkeypatch) -> None:
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    output.error("repo 'foo' not found")
    assert "\033[31m" in tty.getvalue()
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    monkeypatch.setenv("NO_COLOR", "1")
    output.error("repo 'foo' not found")
    assert tty.getvalue() == "error: repo 'foo' not found\n"


HEADERS = ["NAME", "CREATED", "SIZE"]
ROWS = [("data", "12 minutes ago", "874 B"), ("日本", "2 minutes ago", "12 B"), ("a\x1bb", "x", "1 B")]


def _plain(text: str) -> list[str]:
    import re

    return [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in text.splitlines()]


def test_tables_are_plain_on_a_pipe_and_bold_headed_on_a_terminal(monkeypatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    pipe = io.StringIO()
    output.table(HEADERS, ROWS, pipe)
    lines = pipe.getvalue().splitlines()
    assert "\x1b" not in pipe.getvalue()  # no escape codes, and a name's ESC shown escaped
    assert lines[2].startswith("日本     2 minutes")  # a wide name takes two cells: columns stay aligned
    assert lines[3].startswith("a\\x1bb   x")
    assert lines[0] == "NAME     CREATED          SIZE"

    rich_tty = _Tty()  # a short table: rich's Table
    output.table(HEADERS, ROWS, rich_tty)
    assert "\x1b[1m" in rich_tty.getvalue()
    assert _plain(rich_tty.getvalue()) == lines

    monkeypatch.setattr(output, "RICH_TABLE_ROWS", 0)  # a long one: the direct renderer, same layout
    direct = _Tty()
    output.table(HEADERS, ROWS, direct)
    assert direct.getvalue().startswith("\x1b[1m")
    assert _plain(direct.getvalue()) == lines

    monkeypatch.setenv("NO_COLOR", "1")
    for rows_limit in (0, 100):
        monkeypatch.setattr(output, "RICH_TABLE_ROWS", rows_limit)
        bare = _Tty()
        output.table(HEADERS, ROWS, bare)
        assert "\x1b[" not in bare.getvalue() and _plain(bare.getvalue()) == lines
