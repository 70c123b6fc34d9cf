"""A content-addressed, copy-on-write B+tree: the file tree of every commit.

Every node is stored under ``blake3(serialized node)``, nodes are never
modified, and an update rewrites only the paths from the changed leaves up to
the root. Commits therefore share every subtree they have in common, and two
trees can be compared by hash, subtree by subtree, without reading the parts
they share.

Node format (msgpack, ``use_bin_type=True``; deterministic because it packs
only lists, ints and bytes)::

    leaf:     [0, keys, values]
    internal: [level, first_keys, child_hashes, child_counts]   (level >= 1)

``level`` is the node's height above the leaves, so every leaf is at level 0
and a child is always one level below its parent. Storing it lets ``diff``
line up subtrees of equal height without reading down to the leaves first.
``first_keys[i]`` is the exact smallest key under child ``i``; ``child_counts``
gives ``count()`` and range sizes without descending.

This module does no I/O of its own: nodes go to and come from a ``NodeStore``.
Callers serialize writers; readers may run concurrently (the cache is locked).
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import Protocol

import msgpack
from blake3 import blake3

EMPTY: bytes | None = None  # the root of the empty tree

# Upper bounds on msgpack overhead, so size estimates never undercount:
# fixarray + level + three array headers; a bin header is at most 5 bytes,
# an int at most 9, a child hash is 32 bytes plus a 2-byte header.
_HEADER = 17
_LEAF_OVERHEAD = 10
_INTERNAL_OVERHEAD = 5 + 34 + 9


class NodeStore(Protocol):
    def get_node(self, h: bytes) -> bytes: ...

    def put_node(self, h: bytes, data: bytes) -> None: ...


class MemoryNodeStore:
    """A dict-backed NodeStore that counts calls (tests assert on them)."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, bytes] = {}
        self.puts = 0
        self.gets = 0

    def get_node(self, h: bytes) -> bytes:
        self.gets += 1
        return self.nodes[h]

    def put_node(self, h: bytes, data: bytes) -> None:
        self.puts += 1
        self.nodes.setdefault(h, data)

    def __len__(self) -> int:
        return len(self.nodes)


class _Node:
    """A decoded node. Shared through the cache, so never mutated."""

    __slots__ = ("level", "keys", "vals", "counts", "total", "size")

    def __init__(
        self, level: int, keys: list[bytes], vals: list[bytes], counts: list[int] | None, size: int
    ) -> None:
        self.level = level
        self.keys = keys
        self.vals = vals  # values in a leaf, child hashes in an internal node
        self.counts = counts  # None in a leaf
        self.total = len(keys) if counts is None else sum(counts)
        self.size = size  # serialized bytes (estimated until stored)

    def encode(self) -> bytes:
        if self.level == 0:
            return msgpack.packb([0, self.keys, self.vals], use_bin_type=True)
        return msgpack.packb([self.level, self.keys, self.vals, self.counts], use_bin_type=True)

    @staticmethod
    def decode(data: bytes) -> _Node:
        try:
            obj = msgpack.unpackb(data)
            level, keys, vals = obj[0], obj[1], obj[2]
            counts = obj[3] if level > 0 else None
            ok = (
                isinstance(level, int)
                and len(obj) == (3 if level == 0 else 4)
                and 0 < len(keys) == len(vals)
                and (counts is None or len(counts) == len(keys))
            )
        except Exception as e:
            raise ValueError(f"corrupt B-tree node: {e}") from e
        if not ok:
            raise ValueError("corrupt B-tree node: bad shape")
        return _Node(level, keys, vals, counts, len(data))


class _NodeCache:
    """Bounded LRU of decoded nodes, so hot paths skip msgpack parsing."""

    def __init__(self, capacity: int) -> None:
        self._cap = capacity
        self._d: OrderedDict[bytes, _Node] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, h: bytes) -> _Node | None:
        if self._cap <= 0:
            return None
        with self._lock:
            node = self._d.get(h)
            if node is not None:
                self._d.move_to_end(h)
            return node

    def put(self, h: bytes, node: _Node) -> None:
        if self._cap <= 0:
            return
        with self._lock:
            self._d[h] = node
            self._d.move_to_end(h)
            while len(self._d) > self._cap:
                self._d.popitem(last=False)


class _Acc:
    """The one node per level that build() is still filling."""

    __slots__ = ("keys", "vals", "counts", "payload")

    def __init__(self, level: int) -> None:
        self.keys: list[bytes] = []
        self.vals: list[bytes] = []
        self.counts: list[int] | None = [] if level else None
        self.payload = 0


# A diff cursor item: (first key, level or -1 for an entry, hash or value, decoded node or None)
_Item = tuple[bytes, int, bytes, "_Node | None"]


class BTree:
    def __init__(
        self,
        store: NodeStore,
        *,
        max_entries: int = 128,
        max_bytes: int = 32 * 1024,
        cache_nodes: int = 4096,
    ) -> None:
        if max_entries < 2:
            raise ValueError("max_entries must be at least 2")
        if max_bytes < 4 * (_HEADER + _INTERNAL_OVERHEAD):
            raise ValueError("max_bytes is too small")
        self.store = store
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # Below this fill a node written by update() is merged with a neighbour.
        self._min_entries = max(2, max_entries // 4)
        self._cache = _NodeCache(cache_nodes)

    # ---- node I/O --------------------------------------------------------

    def _load(self, h: bytes) -> _Node:
        node = self._cache.get(h)
        if node is None:
            node = _Node.decode(self.store.get_node(h))
            self._cache.put(h, node)
        return node

    def _store(self, node: _Node) -> bytes:
        data = node.encode()
        h = blake3(data).digest()
        self.store.put_node(h, data)
        node.size = len(data)
        self._cache.put(h, node)  # new nodes are the likeliest to be read next
        return h

    # ---- reads -----------------------------------------------------------

    def get(self, root: bytes | None, key: bytes) -> bytes | None:
        if root is None:
            return None
        node = self._load(root)
        while node.level:
            i = bisect_right(node.keys, key) - 1
            if i < 0:
                return None
            node = self._load(node.vals[i])
        i = bisect_left(node.keys, key)
        if i < len(node.keys) and node.keys[i] == key:
            return node.vals[i]
        return None

    def count(self, root: bytes | None) -> int:
        return 0 if root is None else self._load(root).total

    def height(self, root: bytes | None) -> int:
        """Number of levels (0 for the empty tree, 1 for a lone leaf)."""
        return 0 if root is None else self._load(root).level + 1

    def iter_range(
        self, root: bytes | None, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with start <= key < end, sorted; children are read only when reached."""
        if root is None or (end is not None and end <= start):
            return
        yield from self._iter(self._load(root), start, end)

    def _iter(self, node: _Node, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        keys, vals = node.keys, node.vals
        if node.level == 0:
            for i in range(bisect_left(keys, start), len(keys)):
                if end is not None and keys[i] >= end:
                    return
                yield keys[i], vals[i]
            return
        for i in range(max(bisect_right(keys, start) - 1, 0), len(keys)):
            if end is not None and keys[i] >= end:
                return
            yield from self._iter(self._load(vals[i]), start, end)

    def iter_prefix(self, root: bytes | None, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.iter_range(root, prefix, _prefix_end(prefix))

    def node_hashes(self, root: bytes | None) -> Iterator[bytes]:
        """Every node reachable from root, each once (keys are unique, so no subtree repeats).

        Leaves are yielded from their parent's child list without being read:
        they reference nothing, and they are most of the tree.
        """
        if root is None:
            return
        yield root
        stack = [root]
        while stack:
            node = self._load(stack.pop())
            if node.level == 0:
                continue
            yield from node.vals
            if node.level > 1:
                stack.extend(reversed(node.vals))

    # ---- writes ----------------------------------------------------------

    def build(self, items: Iterable[tuple[bytes, bytes]]) -> bytes | None:
        """Bulk-load sorted, unique items, streaming: one open node per level."""
        levels: list[_Acc] = []
        prev: bytes | None = None
        for k, v in items:
            if prev is not None and k <= prev:
                raise ValueError("build() needs items sorted by key, without duplicates")
            prev = k
            self._acc_add(levels, 0, k, v, 0, len(k) + len(v) + _LEAF_OVERHEAD)
        i = 0
        while i < len(levels):  # the list may grow while lower levels flush
            acc = levels[i]
            if i == len(levels) - 1:
                if i > 0 and len(acc.keys) == 1:
                    return acc.vals[0]  # a root with one child is that child
                return self._store(_Node(i, acc.keys, acc.vals, acc.counts, 0))
            if acc.keys:
                self._flush(levels, i)
            i += 1
        return None

    def _acc_add(
        self, levels: list[_Acc], level: int, k: bytes, v: bytes, count: int, size: int
    ) -> None:
        if level == len(levels):
            levels.append(_Acc(level))
        acc = levels[level]
        n = len(acc.keys)
        # Internal nodes keep at least two children so the height is logarithmic
        # even when huge keys would otherwise fill a node alone.
        if n >= (2 if level else 1) and (
            n >= self.max_entries or _HEADER + acc.payload + size > self.max_bytes
        ):
            self._flush(levels, level)
            acc = levels[level]
        acc.keys.append(k)
        acc.vals.append(v)
        if acc.counts is not None:
            acc.counts.append(count)
        acc.payload += size

    def _flush(self, levels: list[_Acc], level: int) -> None:
        acc = levels[level]
        node = _Node(level, acc.keys, acc.vals, acc.counts, 0)
        h = self._store(node)
        levels[level] = _Acc(level)
        k = node.keys[0]
        self._acc_add(levels, level + 1, k, h, node.total, len(k) + _INTERNAL_OVERHEAD)

    def update(
        self, root: bytes | None, changes: Iterable[tuple[bytes, bytes | None]]
    ) -> bytes | None:
        """Apply changes (value None deletes) and return the new root; root stays valid."""
        latest: dict[bytes, bytes | None] = {}
        for k, v in changes:
            latest[k] = v  # last one wins
        if not latest:
            return root
        ckeys = sorted(latest)
        cvals = [latest[k] for k in ckeys]
        if root is None:
            return self.build((k, v) for k, v in zip(ckeys, cvals, strict=True) if v is not None)
        parts = self._apply(self._load(root), ckeys, cvals)
        if parts is None:
            return root  # nothing actually changed: write nothing
        # The root level may have split: stack new levels until one node is left.
        while len(parts) > 1:
            hashes = [self._store(p) for p in parts]
            parts = self._split(
                parts[0].level + 1, [p.keys[0] for p in parts], hashes, [p.total for p in parts]
            )
        if not parts:
            return None
        top, h = parts[0], None
        while top.level and len(top.keys) == 1:  # collapse single-child roots
            h = top.vals[0]
            top = self._load(h)
        return h if h is not None else self._store(top)

    def _apply(
        self, node: _Node, ckeys: list[bytes], cvals: list[bytes | None]
    ) -> list[_Node] | None:
        """Nodes (unstored, same level) that replace node, or None if unchanged."""
        if node.level == 0:
            return self._apply_leaf(node, ckeys, cvals)
        keys = node.keys
        n, m = len(keys), len(ckeys)
        # slots: int = an unchanged child of node (by index); _Node = a new child
        slots: list[int | _Node] = []
        changed = False
        done = j = 0
        while j < m:
            ci = max(bisect_right(keys, ckeys[j]) - 1, 0)
            hi = bisect_left(ckeys, keys[ci + 1], j) if ci + 1 < n else m
            slots.extend(range(done, ci))
            res = self._apply(self._load(node.vals[ci]), ckeys[j:hi], cvals[j:hi])
            if res is None:
                slots.append(ci)
            else:
                slots.extend(res)
                changed = True
            done, j = ci + 1, hi
        if not changed:
            return None
        slots.extend(range(done, n))
        slots = self._rebalance(node, slots)
        out_k: list[bytes] = []
        out_h: list[bytes] = []
        out_c: list[int] = []
        for s in slots:
            if isinstance(s, int):
                out_k.append(keys[s])
                out_h.append(node.vals[s])
                out_c.append(node.counts[s])  # type: ignore[index]
            else:
                out_k.append(s.keys[0])
                out_h.append(self._store(s))
                out_c.append(s.total)
        return self._split(node.level, out_k, out_h, out_c)

    def _apply_leaf(
        self, node: _Node, ckeys: list[bytes], cvals: list[bytes | None]
    ) -> list[_Node] | None:
        ok, ov = node.keys, node.vals
        n = len(ok)
        nk: list[bytes] = []
        nv: list[bytes] = []
        changed = False
        i = 0
        for k, v in zip(ckeys, cvals, strict=True):
            j = bisect_left(ok, k, i)
            nk.extend(ok[i:j])
            nv.extend(ov[i:j])
            i = j
            present = j < n and ok[j] == k
            if present:
                i = j + 1
            if v is None:
                changed |= present
                continue
            changed |= not present or ov[j] != v
            nk.append(k)
            nv.append(v)
        if not changed:
            return None
        nk.extend(ok[i:])
        nv.extend(ov[i:])
        return self._split(0, nk, nv, None)

    def _underfull(self, node: _Node) -> bool:
        return len(node.keys) < self._min_entries and node.size * 4 < self.max_bytes

    def _rebalance(self, parent: _Node, slots: list[int | _Node]) -> list[int | _Node]:
        """Merge each new, under-full child into a neighbour (deletes leave these).

        Only new nodes trigger a merge, so this costs at most one extra read and
        write per node the update rewrote anyway; untouched siblings stay shared.
        """
        out: list[int | _Node] = []
        for s in slots:
            out.append(s)
            if len(out) < 2:
                continue
            x, y = out[-2], out[-1]
            if not (
                (isinstance(x, _Node) and self._underfull(x))
                or (isinstance(y, _Node) and self._underfull(y))
            ):
                continue
            a = x if isinstance(x, _Node) else self._load(parent.vals[x])
            b = y if isinstance(y, _Node) else self._load(parent.vals[y])
            counts = None if a.counts is None else a.counts + b.counts  # type: ignore[operator]
            out[-2:] = self._split(a.level, a.keys + b.keys, a.vals + b.vals, counts)
        return out

    def _split(
        self, level: int, keys: list[bytes], vals: list[bytes], counts: list[int] | None
    ) -> list[_Node]:
        """Cut entries into nodes within max_entries/max_bytes, evenly sized."""
        n = len(keys)
        if n == 0:
            return []
        if level == 0:
            sizes = [len(k) + len(v) + _LEAF_OVERHEAD for k, v in zip(keys, vals, strict=True)]
        else:
            sizes = [len(k) + _INTERNAL_OVERHEAD for k in keys]
        left_b = sum(sizes)
        max_e, max_b = self.max_entries, self.max_bytes - _HEADER
        if n <= max_e and left_b <= max_b:
            return [_Node(level, keys, vals, counts, left_b + _HEADER)]
        min_n = 2 if level else 1  # see _acc_add
        out: list[_Node] = []
        start = 0
        while start < n:
            # Re-plan the remaining chunks each time, so they come out even
            # instead of leaving a runt at the end.
            chunks = max(-(-(n - start) // max_e), -(-left_b // max_b), 1)
            target_n, target_b = -(-(n - start) // chunks), left_b / chunks
            i, cur = start, 0
            while i < n:
                c = i - start
                if c >= min_n and (c >= target_n or cur >= target_b or cur + sizes[i] > max_b):
                    break
                cur += sizes[i]
                i += 1
            cs = None if counts is None else counts[start:i]
            out.append(_Node(level, keys[start:i], vals[start:i], cs, cur + _HEADER))
            left_b -= cur
            start = i
        return out

    # ---- diff ------------------------------------------------------------

    def diff(
        self, old_root: bytes | None, new_root: bytes | None
    ) -> Iterator[tuple[bytes, bytes | None, bytes | None]]:
        """(key, old value, new value) for every key that differs, sorted by key.

        Two cursors walk the trees as stacks of pending subtrees and entries.
        When both next items are subtrees with one hash, they hold the same
        entries, so both are skipped unread; this is sound wherever the trees'
        node boundaries fall. Otherwise the item with the smaller first key is
        expanded (on a tie, the taller one, to bring both sides to the same
        level), which realigns the cursors right after a changed region.
        """
        if old_root == new_root:
            return
        a, b = self._cursor(old_root), self._cursor(new_root)
        while a and b:
            ka, la, ra, _ = a[-1]
            kb, lb, rb, _ = b[-1]
            if la >= 0 and lb >= 0 and ra == rb:
                a.pop()
                b.pop()
            elif ka < kb:
                if la >= 0:
                    self._expand(a)
                else:
                    a.pop()
                    yield ka, ra, None
            elif kb < ka:
                if lb >= 0:
                    self._expand(b)
                else:
                    b.pop()
                    yield kb, None, rb
            elif la < 0 and lb < 0:
                a.pop()
                b.pop()
                if ra != rb:
                    yield ka, ra, rb
            elif la >= lb:
                self._expand(a)
            else:
                self._expand(b)
        while a:
            k, lvl, r, _ = a[-1]
            if lvl >= 0:
                self._expand(a)
            else:
                a.pop()
                yield k, r, None
        while b:
            k, lvl, r, _ = b[-1]
            if lvl >= 0:
                self._expand(b)
            else:
                b.pop()
                yield k, None, r

    def _cursor(self, root: bytes | None) -> list[_Item]:
        if root is None:
            return []
        node = self._load(root)  # kept in the item so expanding it costs no second read
        return [(node.keys[0], node.level, root, node)]

    def _expand(self, stack: list[_Item]) -> None:
        _, _, h, node = stack.pop()
        if node is None:
            node = self._load(h)
        n = len(node.keys)
        level = node.level - 1  # -1: the children are entries
        stack.extend(
            zip(
                reversed(node.keys),
                repeat(level, n),
                reversed(node.vals),
                repeat(None, n),
                strict=True,
            )
        )


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with prefix (None: no bound)."""
    p = prefix.rstrip(b"\xff")
    if not p:
        return None
    return p[:-1] + bytes([p[-1] + 1])
