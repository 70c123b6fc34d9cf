"""Which commit last modified each file of a listing (list-file's
LAST_COMMIT_MODIFIED, as the 1.x seeds show it).

Trees do not record the commit that wrote an entry, so it is found on the
listed commit's first-parent history: the newest ancestor ``C`` whose entry
for the path is the listed one while its parent's is not. An entry's mtime
is set while its commit is open, so the walk jumps straight to the commit
that was open at that time (files in mtime order share one walk back), then
checks the entries themselves (O(log n) each) and steps forward or back
where the times mislead (a touched file, a pipeline's output staged before
its commit started). Cost: the commits walked back to the oldest mtime in
the listing, plus a few lookups per file; never a tree walk.
"""

from __future__ import annotations

from pfsfuse import entries, names
from pfsfuse.entries import Entry


def _ref(row: tuple) -> str:
    return f"{row[2]}/{row[3]}" if row[2] is not None else row[0]


def last_commits(pfs, row: tuple, found: list[tuple[str, Entry]]) -> list[str | None]:
    """For each ``(path, entry)`` of commit ``row`` (path without a leading
    '/'), the ref of the commit that last modified it (None for the root)."""
    walked: list[tuple] = [row]  # row, then its parent, grandparent, ...

    def at(i: int) -> tuple | None:
        while len(walked) <= i:
            parent = walked[-1][4]
            if parent is None:
                return None
            walked.append(pfs._row(parent))
        return walked[i]

    def same_at(i: int, path: str, raw: bytes) -> bool:
        """Whether commit ``i`` of the walk holds this very entry (i > 0: finished commits)."""
        r = at(i)
        return r is not None and pfs.tree.get(r[7], names.tree_key(path)) == raw

    out: list[str | None] = [None] * len(found)
    order = sorted(range(len(found)), key=lambda k: -found[k][1].mtime_ns)
    guess = 0
    for k in order:
        path, entry = found[k]
        if path == "":
            continue
        mtime = entry.mtime_ns / 1e9
        while at(guess + 1) is not None and walked[guess][5] > mtime:
            guess += 1  # back to the commit open when the entry was written
        raw = entries.encode(entry)  # compared as stored: no decoding per lookup
        i = guess
        while i > 0 and not same_at(i, path, raw):
            i -= 1  # the times misled: the entry is newer than that commit
        while same_at(i + 1, path, raw):
            i += 1  # the parent has it too: modified earlier
        out[k] = _ref(walked[i])
    return out
