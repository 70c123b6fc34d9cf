"""Finished commits by their place on a branch: what a consumer of PFS (the
pipeline system's cursors, triggers and cron ticks) asks of the history,
without reading PFS's tables itself.

A commit's place is its ``seq`` on its branch (``branch/N``); only finished
commits have results to read, and archived ones (1.x update-pipeline) are
skipped unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class CommitMark(NamedTuple):
    """A finished commit and its place on its branch."""

    id: str
    seq: int
    size: int  # bytes of the commit's tree
    finished: float


_MARK = "id, seq, size, finished"


class History:
    """Mixed into PFS, whose ``q1`` reads its metadata database."""

    q1: Callable[..., tuple | None]

    def latest_finished(self, repo: str, branch: str, *, archived: bool = False) -> CommitMark | None:
        """The finished commit furthest along ``branch`` (archived ones too, if ``archived``)."""
        skip = "" if archived else " AND archived=0"
        row = self.q1(f"SELECT {_MARK} FROM commits WHERE repo=? AND branch=? AND finished IS NOT NULL{skip}"  # noqa: S608 - fixed text
                      " ORDER BY seq DESC LIMIT 1", (repo, branch))
        return CommitMark(*row) if row is not None else None

    def next_finished(self, repo: str, branch: str, after: int | None) -> CommitMark | None:
        """The first finished, unarchived commit of ``branch`` after place ``after`` (None: from the start)."""
        row = self.q1(f"SELECT {_MARK} FROM commits WHERE repo=? AND branch=? AND seq>? AND finished IS NOT NULL"  # noqa: S608 - fixed text
                      " AND archived=0 ORDER BY seq LIMIT 1", (repo, branch, -1 if after is None else after))
        return CommitMark(*row) if row is not None else None

    def finished_at(self, repo: str, branch: str, seq: int) -> CommitMark | None:
        """The commit at place ``seq`` of ``branch``, if it is finished."""
        row = self.q1(f"SELECT {_MARK} FROM commits WHERE repo=? AND branch=? AND seq=? AND finished IS NOT NULL",  # noqa: S608 - fixed text
                      (repo, branch, seq))
        return CommitMark(*row) if row is not None else None

    def place_of(self, commit_id: str) -> int | None:
        """The place of a commit on its branch (None: unknown, or on no branch)."""
        row = self.q1("SELECT seq FROM commits WHERE id=?", (commit_id,))
        return row[0] if row is not None else None

    def last_description(self, repo: str, branch: str) -> str | None:
        """The description of the finished commit furthest along ``branch``."""
        row = self.q1("SELECT description FROM commits WHERE repo=? AND branch=? AND finished IS NOT NULL"
                      " ORDER BY seq DESC LIMIT 1", (repo, branch))
        return row[0] if row is not None else None

    def is_current(self, commit_id: str) -> bool:
        """Whether the commit exists and is not archived."""
        return self.q1("SELECT 1 FROM commits WHERE id=? AND archived=0", (commit_id,)) is not None
