"""What each inode of the mount stands for, with stable numbers.

    /                      ROOT
    /<repo>                REPO
    /<repo>/<branch>       BRANCH   (its head, resolved on every lookup)
    /<repo>/<commit-id>    COMMIT   (also /<repo>/<branch>/<N> for branch/N)
    .../<path>             ENTRY    (a file or directory inside a commit)
    /<repo>/<branch>/<p>   BENTRY   (writable mounts: <p> in whatever commit is
                                      the branch head now, so writes can open one)

An inode number is a hash of what it stands for, so it is the same on every
lookup and across remounts (``st_ino`` stable), and a branch whose head moves
yields new inodes for its new contents: the kernel's cache of an old commit's
files stays valid because those files never change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from hashlib import blake2b
from typing import NamedTuple

ROOT, REPO, BRANCH, COMMIT, ENTRY, BENTRY = range(6)
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


def _inode(h) -> int:
    n = int.from_bytes(h.digest(), "little") >> 1  # 63 bits
    return n if n > ROOT_INODE else n + 2


class InodeTable:
    """Inodes the kernel holds, with lookup counts, so forget() can drop them."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {ROOT_INODE: Node(ROOT)}
        self._counts: Counter[int] = Counter()

    def remember(self, node: Node, ino: int | None = None) -> int:
        ino = inode_of(node) if ino is None else ino
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
