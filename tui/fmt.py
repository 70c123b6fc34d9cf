"""Formatting shared by every screen: the CLI's own human sizes and relative
times (so a table in the TUI reads as ``pachctl list-repo`` does), names made
safe for a terminal, short ids."""

from __future__ import annotations

from pachctl.cli.output import ago as _ago
from pachctl.cli.output import human_size, safe

__all__ = ["ago", "human_size", "safe", "short_id"]


def ago(ts: float | None, now: float | None = None) -> str:
    """``5 minutes ago``, measured from ``now`` (the app's, frozen in tests)."""
    return _ago(ts, now) if ts is not None else "-"


def short_id(cid: str | None, width: int = 12) -> str:
    return "-" if not cid else cid[:width]
