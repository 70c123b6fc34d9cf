"""What a commit wrote: the bytes of file content it brought, as 1.x's
``list-commit`` SIZE shows them (each commit its own data, not the repo's).

Counted once per commit, when it finishes, from the staged changes it is
applying anyway (O(changes), never a walk of the tree or of the history):

- a new file (no file at that path in the parent) counts its whole size;
- a changed file counts its bytes past the longest chunk-list prefix it
  shares with the parent's version: an append of 8 B to a 13 B file counts
  8 B (appends keep the old chunks and add new ones), an overwrite counts
  the whole new file, a file left unchanged or only touched counts 0;
- deletes and truncations count 0 (they write nothing);
- a file whose content moved within the commit (a rename: the same chunk
  list deleted at one path and added at another) counts 0.

The same rules applied to a tree diff give the value for commits made before
it was recorded (``backfill``, the one-time schema migration).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable

from pfsfuse.entries import ChunkRef, Entry


def _identity(e: Entry) -> Hashable:
    return e.list_ref if e.list_ref is not None else tuple(e.refs or ())


class WrittenTally:
    """Adds up one commit's written bytes, one changed path at a time."""

    def __init__(self, load_refs: Callable[[Entry], list[ChunkRef]]):
        self._load_refs = load_refs
        self._changed = 0
        self._added: list[tuple[Hashable, int]] = []  # new paths: maybe renames
        self._deleted: collections.Counter[Hashable] = collections.Counter()

    def add(self, old: Entry | None, new: Entry | None) -> None:
        """One path's entry in the parent (``old``) and in the commit (``new``)."""
        old_file = old if old is not None and not old.is_dir else None
        if new is None or new.is_dir:
            if old_file is not None and old_file.size:
                self._deleted[_identity(old_file)] += 1
            return
        if old_file is None:
            self._added.append((_identity(new), new.size))
        else:
            self._changed += self._past_shared_prefix(old_file, new)

    def _past_shared_prefix(self, old: Entry, new: Entry) -> int:
        if old.list_ref is not None and old.list_ref == new.list_ref:
            return 0
        shared = 0
        for a, b in zip(self._load_refs(old), self._load_refs(new), strict=False):
            if a != b:
                break
            shared += b[1]
        return max(new.size - shared, 0)

    def total(self) -> int:
        moved = self._deleted.copy()
        out = self._changed
        for ident, size in self._added:
            if size and moved[ident] > 0:
                moved[ident] -= 1  # content that only changed path
            else:
                out += size
        return out


def backfill(pfs) -> int:
    """Set ``written`` for every finished commit from the diff of its tree
    against its parent's (equal subtrees skipped by hash: O(its changes)).
    Run once, in one transaction, when a store made before ``written`` was
    recorded is opened; returns how many commits it set."""
    from pfsfuse import entries

    done = 0
    with pfs.tx() as db:
        rows = db.execute(
            "SELECT c.id, c.root, p.root FROM commits c LEFT JOIN commits p ON p.id=c.parent"
            " WHERE c.finished IS NOT NULL"
        ).fetchall()
        for cid, root, parent_root in rows:
            tally = WrittenTally(pfs.load_refs)
            for _key, a, b in pfs.tree.diff(parent_root, root):
                tally.add(entries.decode(a) if a is not None else None, entries.decode(b) if b is not None else None)
            db.execute("UPDATE commits SET written=? WHERE id=?", (tally.total(), cid))
            done += 1
        db.execute("DELETE FROM meta WHERE key='written_backfill'")
    return done
