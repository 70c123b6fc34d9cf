"""What each inode of the mount stands for, with stable numbers.

    /                      ROOT
    /<repo>                REPO
    /<repo>/<branch>       BRANCH   (its head, resolved on every lookup)
    /<repo>/<commit-id>    COMMIT   (also /<repo>/<branch>/<N> for branch/N)
    .../<path>             ENTRY    (a file or directory inside a commit)
    /<repo>/<branch>/<p>   BENTRY   (writable mounts: <p> in whatever commit is
                                      the branch head now, so writes can open one)
    (no path)              ORPHAN   (a file or directory unlinked, or replaced by
                                      a rename, that the kernel still holds:
                                      usable through its open handles only)

An inode number is a hash of what it stands for, so it is the same on every
lookup and across remounts (``st_ino`` stable), and a branch whose head moves
yields new inodes for its new contents: the kernel's cache of an old commit's
files stays valid because those files never change.

Two changes through a writable mount break the hash rule, for the life of
the mount (the table is in memory; a remount numbers by hash again):
rename(2) keeps the moved file's or directory's number, and the numbers of
what the kernel knows below a moved directory, as POSIX wants; and a
removed or moved-away path gets a fresh number, so a new file created
there is never mistaken by the kernel for the old one (which may still be
open). The kernel's inode of the removed or replaced file becomes an
ORPHAN: no path resolves to it any more, so an open descriptor on it never
sees (or truncates) the new file at its old name.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from hashlib import blake2b
from typing import NamedTuple

ROOT, REPO, BRANCH, COMMIT, ENTRY, BENTRY, ORPHAN = range(7)
ROOT_INODE = 1


class Node(NamedTuple):  # a tuple: made 10,000 times per listing, twice as fast as a dataclass
    kind: int
    repo: str = ""
    ref: str = ""  # branch name (BRANCH) or commit id (COMMIT, ENTRY)
    path: str = ""  # inside the commit (ENTRY)

    def child(self, name: str) -> Node:
        path = f"{self.path}/{name}" if self.path else name
        kind = BENTRY if self.kind in (BRANCH, BENTRY) else ENTRY
        return Node(kind, self.repo, self.ref, path)


def inode_of(node: Node) -> int:
    if node.kind == ROOT:
        return ROOT_INODE
    return _inode(blake2b(f"{node.kind}\0{node.repo}\0{node.ref}\0{node.path}".encode(), digest_size=8))


def inodes_in(kind: int, repo: str, ref: str, base: str) -> Callable[[bytes], int]:
    """inode_of for many children of one directory: ``base`` (the directory's
    path plus "/", or "") is hashed once, each child's name on top of it."""
    prefix = blake2b(f"{kind}\0{repo}\0{ref}\0{base}".encode(), digest_size=8)

    def of(name: bytes) -> int:
        h = prefix.copy()
        h.update(name)
        return _inode(h)

    return of


def _fresh() -> int:
    """A number no hash is expected to give (63 random bits: collisions are as
    unlikely as between two hashes)."""
    return _inode_of_int(random.getrandbits(63))


def _inode_of_int(n: int) -> int:
    return n if n > ROOT_INODE else n + 2


def _inode(h) -> int:
    return _inode_of_int(int.from_bytes(h.digest(), "little") >> 1)  # 63 bits


class InodeTable:
    """Inodes the kernel holds, with lookup counts, so forget() can drop them."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {ROOT_INODE: Node(ROOT)}
        self._counts: Counter[int] = Counter()
        self._numbered: dict[Node, int] = {}  # nodes whose number is not their hash (renames, removals)
        self._refs_numbered: set[tuple[str, str]] = set()  # (repo, ref) holding such nodes

    def number(self, node: Node) -> int:
        """The inode number of ``node``: its hash unless a rename or removal said otherwise."""
        if self._numbered:
            ino = self._numbered.get(node)
            if ino is not None:
                return ino
        return inode_of(node)

    def renumbered(self, repo: str, ref: str) -> dict[Node, int] | None:
        """The numbers that are not hashes, when some nodes under (repo, ref)
        have one (None otherwise: listings then hash without looking)."""
        return self._numbered if (repo, ref) in self._refs_numbered else None

    def renamed(self, src: Node, dst: Node, is_dir: bool) -> None:
        """``src`` is now at ``dst``: it keeps its number (and so does what the
        kernel knows below it, for a directory); ``src`` gets a fresh one."""
        if src == dst:
            return
        self._orphan(dst)  # the file it replaces, if any, lives on only through its handles
        moves = [(src, dst)]
        if is_dir:
            below = src.path + "/"
            known = set(self._nodes.values()) | set(self._numbered)
            moves += [
                (n, n._replace(path=dst.path + n.path[len(src.path) :]))
                for n in known
                if n.path.startswith(below) and n[:3] == src[:3]
            ]
        numbers = [(self.number(old), old, new) for old, new in moves]
        for ino, old, new in numbers:
            self._set_number(new, ino)
            self._set_number(old, _fresh())
            if self._nodes.get(ino) == old:  # the kernel's inode follows the move
                self._nodes[ino] = new

    def removed(self, node: Node) -> None:
        """``node``'s path no longer holds it: whatever is created there next is new."""
        self._orphan(node)
        self._set_number(node, _fresh())

    def _orphan(self, node: Node) -> None:
        """The kernel's inode for ``node``, if it holds one, stops standing for
        the path (which may soon name another file): it becomes an ORPHAN,
        answered from the handles still open on it (ops.py, writes.py)."""
        ino = self.number(node)
        if self._nodes.get(ino) == node:
            self._nodes[ino] = Node(ORPHAN, node.repo, node.ref, node.path)

    def _set_number(self, node: Node, ino: int) -> None:
        self._numbered[node] = ino
        self._refs_numbered.add((node.repo, node.ref))

    def remember(self, node: Node, ino: int | None = None) -> int:
        ino = self.number(node) if ino is None else ino
        self._nodes[ino] = node
        self._counts[ino] = self._counts.get(ino, 0) + 1
        return ino

    def remember_listed(self, listed: list) -> None:
        """Every (name, node, inode, attributes) a readdirplus answer carried:
        each counts as one lookup. In bulk: it is on the listing's critical path."""
        self._nodes.update((entry[2], entry[1]) for entry in listed)
        self._counts.update(entry[2] for entry in listed)

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def forget(self, ino: int, n: int) -> None:
        left = self._counts.get(ino, 0) - n
        if left > 0:
            self._counts[ino] = left
        elif ino != ROOT_INODE:
            self._counts.pop(ino, None)
            self._nodes.pop(ino, None)

    def __len__(self) -> int:
        return len(self._nodes)
