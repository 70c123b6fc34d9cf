"""The copy-on-write B+tree (pfsfuse/btree.py): contents, sharing, diff cost, speed."""

from __future__ import annotations

import itertools
import random
import threading
import time

import msgpack
import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pfsfuse.btree import EMPTY, BTree, MemoryNodeStore

BIG_N = 200_000


def big_key(i: int) -> bytes:
    return b"data/dir%03d/file%07d" % (i % 997, i)


def model_diff(old: dict[bytes, bytes], new: dict[bytes, bytes]):
    return [
        (k, old.get(k), new.get(k))
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


def check_structure(tree: BTree, store: MemoryNodeStore, root: bytes | None) -> None:
    """Every B+tree invariant the module promises, read straight from the store."""
    if root is None:
        return

    def walk(h: bytes, lo: bytes | None) -> tuple[int, int, bytes, bytes]:
        data = store.nodes[h]
        assert blake3(data).digest() == h
        obj = msgpack.unpackb(data)
        level, keys = obj[0], obj[1]
        assert keys, "empty node"
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert len(keys) <= tree.max_entries
        if level == 0:
            assert len(obj) == 3 and len(obj[2]) == len(keys)
            if len(keys) > 1:
                assert len(data) <= tree.max_bytes
            return 0, len(keys), keys[0], keys[-1]
        assert len(obj) == 4
        if len(keys) > 2:  # internal nodes may keep two huge keys over the limit
            assert len(data) <= tree.max_bytes
        total, prev_last = 0, None
        for k, child, cnt in zip(keys, obj[2], obj[3], strict=True):
            clevel, ccount, cfirst, clast = walk(child, k)
            assert clevel == level - 1, "leaves must all be at the same depth"
            assert cfirst == k and ccount == cnt
            assert prev_last is None or prev_last < cfirst
            prev_last = clast
            total += cnt
        return level, total, keys[0], prev_last

    level, _, _, _ = walk(root, None)
    top = msgpack.unpackb(store.nodes[root])
    assert level == 0 or len(top[1]) > 1, "a single-child root must collapse"


# ---- property tests against a dict model ---------------------------------

KEYS = st.lists(st.sampled_from(b"ab\x00\xff"), max_size=4).map(bytes)
VALUES = st.one_of(st.binary(max_size=24), st.binary(min_size=100, max_size=300))
CHANGES = st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), max_size=25)


class TreeMachine(RuleBasedStateMachine):
    @initialize(
        max_entries=st.sampled_from([2, 3, 4, 8]),
        max_bytes=st.sampled_from([512, 1024, 32 * 1024]),
        cache=st.sampled_from([0, 3, 4096]),
    )
    def setup(self, max_entries: int, max_bytes: int, cache: int) -> None:
        self.store = MemoryNodeStore()
        self.tree = BTree(
            self.store, max_entries=max_entries, max_bytes=max_bytes, cache_nodes=cache
        )
        self.root: bytes | None = EMPTY
        self.model: dict[bytes, bytes] = {}
        self.history: list[tuple[bytes | None, dict[bytes, bytes]]] = [(EMPTY, {})]

    def _commit(self, root: bytes | None) -> None:
        self.root = root
        self.history.append((root, dict(self.model)))

    @rule(changes=CHANGES)
    def update(self, changes) -> None:
        for k, v in changes:
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v
        self._commit(self.tree.update(self.root, changes))

    @rule(n=st.integers(0, 120), seed=st.integers(0, 2**16), delete=st.booleans())
    def many(self, n: int, seed: int, delete: bool) -> None:
        # Bigger batches of longer keys, to grow a few levels.
        rng = random.Random(seed)
        changes = []
        for _ in range(n):
            k = b"k%03d" % rng.randrange(300)
            v = None if delete and rng.random() < 0.5 else b"v%d" % rng.randrange(10)
            changes.append((k, v))
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v
        self._commit(self.tree.update(self.root, changes))

    @rule()
    def delete_everything(self) -> None:
        changes = [(k, None) for k in self.model]
        self.model.clear()
        root = self.tree.update(self.root, changes)
        assert root is None
        self._commit(root)

    @rule()
    def rebuild(self) -> None:
        self._commit(self.tree.build(sorted(self.model.items())))

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        assert self.tree.get(self.root, key) == self.model.get(key)

    @rule(start=KEYS, end=st.one_of(st.none(), KEYS))
    def range(self, start: bytes, end: bytes | None) -> None:
        want = sorted(
            (k, v) for k, v in self.model.items() if k >= start and (end is None or k < end)
        )
        assert list(self.tree.iter_range(self.root, start, end)) == want

    @rule(prefix=KEYS)
    def prefix(self, prefix: bytes) -> None:
        want = sorted((k, v) for k, v in self.model.items() if k.startswith(prefix))
        assert list(self.tree.iter_prefix(self.root, prefix)) == want

    @rule(data=st.data())
    def diff(self, data) -> None:
        old_root, old = data.draw(st.sampled_from(self.history))
        new_root, new = data.draw(st.sampled_from(self.history))
        assert list(self.tree.diff(old_root, new_root)) == model_diff(old, new)

    @precondition(lambda self: len(self.history) > 1)
    @rule(data=st.data())
    def old_roots_unchanged(self, data) -> None:
        root, snapshot = data.draw(st.sampled_from(self.history))
        assert list(self.tree.iter_range(root)) == sorted(snapshot.items())
        assert self.tree.count(root) == len(snapshot)
        assert all(h in self.store.nodes for h in self.tree.node_hashes(root))

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "tree"):
            return
        assert self.tree.count(self.root) == len(self.model)
        assert list(self.tree.iter_range(self.root)) == sorted(self.model.items())
        check_structure(self.tree, self.store, self.root)


TreeMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_tree_machine = TreeMachine.TestCase


@settings(max_examples=150, deadline=None)
@given(
    items=st.dictionaries(KEYS | st.binary(max_size=6), VALUES, max_size=120),
    max_entries=st.sampled_from([2, 3, 5, 16]),
)
def test_build_matches_update_from_empty(items: dict[bytes, bytes], max_entries: int) -> None:
    store = MemoryNodeStore()
    tree = BTree(store, max_entries=max_entries, max_bytes=1024)
    built = tree.build(sorted(items.items()))
    shuffled = list(items.items())
    random.Random(len(items)).shuffle(shuffled)
    updated = EMPTY
    for i in range(0, len(shuffled), 7):
        updated = tree.update(updated, shuffled[i : i + 7])
    want = sorted(items.items())
    assert list(tree.iter_range(built)) == want == list(tree.iter_range(updated))
    assert tree.count(built) == tree.count(updated) == len(items)
    assert list(tree.diff(built, updated)) == []
    check_structure(tree, store, built)
    check_structure(tree, store, updated)


def test_build_rejects_unsorted_or_duplicate_keys() -> None:
    tree = BTree(MemoryNodeStore())
    with pytest.raises(ValueError):
        tree.build([(b"b", b""), (b"a", b"")])
    with pytest.raises(ValueError):
        tree.build([(b"a", b""), (b"a", b"")])
    assert tree.build([]) is None


def test_update_edge_cases() -> None:
    store = MemoryNodeStore()
    tree = BTree(store, max_entries=4)
    assert tree.update(EMPTY, []) is None
    assert tree.update(EMPTY, [(b"x", None)]) is None
    root = tree.update(EMPTY, [(b"b", b"1"), (b"a", b"0"), (b"b", b"2"), (b"c", None)])
    assert list(tree.iter_range(root)) == [(b"a", b"0"), (b"b", b"2")]
    puts = store.puts
    # No-op changes (same value, deleting a missing key) write nothing.
    assert tree.update(root, [(b"a", b"0"), (b"zz", None)]) == root
    assert store.puts == puts
    assert tree.update(root, [(b"a", None), (b"b", None)]) is None
    assert tree.get(root, b"a") == b"0"  # the old root is untouched


def test_delete_down_to_one_keeps_tree_shallow() -> None:
    store = MemoryNodeStore()
    tree = BTree(store, max_entries=4)
    root = tree.build((b"%05d" % i, b"v") for i in range(2000))
    assert tree.height(root) >= 5
    for i in range(0, 1999, 50):  # delete in chunks, leaving only the last key
        root = tree.update(root, [(b"%05d" % j, None) for j in range(i, min(i + 50, 1999))])
        check_structure(tree, store, root)
    assert list(tree.iter_range(root)) == [(b"01999", b"v")]
    assert tree.height(root) == 1


def test_big_values_split_by_bytes() -> None:
    store = MemoryNodeStore()
    tree = BTree(store, max_entries=128, max_bytes=4096)
    items = [(b"k%04d" % i, bytes([i % 256]) * 700) for i in range(100)]
    root = tree.update(EMPTY, items[::-1])
    check_structure(tree, store, root)
    assert list(tree.iter_range(root)) == items
    root = tree.update(root, [(b"k0050", b"x" * 10_000)])  # a value bigger than a node
    check_structure(tree, store, root)
    assert tree.get(root, b"k0050") == b"x" * 10_000


def test_prefix_edges() -> None:
    tree = BTree(MemoryNodeStore(), max_entries=3)
    keys = [b"", b"a", b"a\xff", b"a\xff\xff", b"b", b"\xff", b"\xff\xff\x00"]
    root = tree.build((k, k) for k in sorted(keys))
    assert [k for k, _ in tree.iter_prefix(root, b"a")] == [b"a", b"a\xff", b"a\xff\xff"]
    assert [k for k, _ in tree.iter_prefix(root, b"a\xff")] == [b"a\xff", b"a\xff\xff"]
    assert [k for k, _ in tree.iter_prefix(root, b"\xff")] == [b"\xff", b"\xff\xff\x00"]
    assert [k for k, _ in tree.iter_prefix(root, b"")] == sorted(keys)
    assert list(tree.iter_range(root, b"b", b"b")) == []


# ---- a 200,000-entry tree: sharing, diff cost, speed --------------------


@pytest.fixture(scope="module")
def big():
    store = MemoryNodeStore()
    tree = BTree(store)
    items = sorted((big_key(i), blake3(b"%d" % i).digest()) for i in range(BIG_N))
    root = tree.build(iter(items))
    return store, tree, root, items


def test_big_build(big) -> None:
    store, tree, root, items = big
    assert tree.count(root) == BIG_N
    assert tree.height(root) == 3
    # build() wrote each node once and nothing else.
    assert set(tree.node_hashes(root)) == set(store.nodes)
    assert store.puts == len(store.nodes)


def test_single_key_update_writes_one_path(big) -> None:
    store, tree, root, items = big
    height = tree.height(root)
    key = items[BIG_N // 3][0]
    puts = store.puts
    new = tree.update(root, [(key, b"changed")])
    assert store.puts - puts <= height + 1
    # An insert into a full leaf splits it; still one path's worth of nodes.
    puts = store.puts
    tree.update(root, [(key + b"-new", b"inserted")])
    assert store.puts - puts <= 2 * height + 1

    cold = BTree(store, cache_nodes=0)  # every node read is a store get
    gets = store.gets
    assert cold.count(root) == BIG_N
    assert store.gets - gets == 1
    gets = store.gets
    assert list(cold.diff(root, new)) == [(key, items[BIG_N // 3][1], b"changed")]
    assert store.gets - gets <= 2 * height
    assert cold.get(root, key) == items[BIG_N // 3][1] and cold.get(new, key) == b"changed"


def test_diff_of_scattered_changes_reads_few_nodes(big) -> None:
    store, tree, root, items = big
    first, last = items[0], items[-1]
    changes = [
        (first[0], None),  # the smallest key goes: first keys change all the way up
        (b"\x00first", b"new min"),
        (last[0], b"new last"),
        (items[1000][0] + b"x", b"inserted"),
    ]
    new = tree.update(root, changes)
    cold = BTree(store, cache_nodes=0)
    gets = store.gets
    got = list(cold.diff(root, new))
    assert store.gets - gets <= 2 * len(changes) * tree.height(root)
    old = dict(items)
    want = model_diff(old, {k: v for k, v in (old | dict(changes)).items() if v is not None})
    assert got == want and len(got) == 4
    assert list(cold.diff(new, root)) == [(k, n, o) for k, o, n in got]


def test_iter_range_is_lazy(big) -> None:
    store, tree, root, items = big
    cold = BTree(store, cache_nodes=0)
    gets = store.gets
    start = items[BIG_N // 2][0]
    got = list(itertools.islice(cold.iter_range(root, start), 3))
    assert got == items[BIG_N // 2 : BIG_N // 2 + 3]
    assert store.gets - gets <= tree.height(root) + 1
    prefix = b"data/dir123/"
    want = [kv for kv in items if kv[0].startswith(prefix)]
    assert list(tree.iter_prefix(root, prefix)) == want


def test_get_is_fast(big) -> None:
    store, tree, root, items = big
    rng = random.Random(7)
    probes = [items[rng.randrange(BIG_N)] for _ in range(20_000)]
    t0 = time.perf_counter()
    for k, v in probes:
        assert tree.get(root, k) == v
    per_get = (time.perf_counter() - t0) / len(probes)
    assert per_get < 200e-6, f"get() took {per_get * 1e6:.1f} µs on average"


def test_concurrent_readers_with_a_tiny_cache(big) -> None:
    store, _, root, items = big
    tree = BTree(store, cache_nodes=8)  # constant eviction
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                k, v = items[rng.randrange(BIG_N)]
                assert tree.get(root, k) == v
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ---- diff across trees whose node boundaries do not line up --------------


def test_diff_with_misaligned_boundaries() -> None:
    store = MemoryNodeStore()
    tree = BTree(store, max_entries=16)
    rng = random.Random(3)
    base = {b"f/%05d" % i: b"v%d" % i for i in range(0, 10_000, 2)}
    built = tree.build(sorted(base.items()))

    final = dict(base)
    keys = list(base)
    for k in rng.sample(keys, 5):
        final[k] = b"modified"
    for k in rng.sample(keys, 5):
        final.pop(k, None)
    for i in rng.sample(range(1, 10_000, 2), 5):
        final[b"f/%05d" % i] = b"added"
    final[b"\x00"] = b"before everything"
    final[b"\xff"] = b"after everything"

    # Same content reached by many small, unsorted batches: different node boundaries.
    shuffled = list(final.items())
    rng.shuffle(shuffled)
    grown = EMPTY
    for i in range(0, len(shuffled), 37):
        grown = tree.update(grown, shuffled[i : i + 37])
    built_nodes, grown_nodes = set(tree.node_hashes(built)), set(tree.node_hashes(grown))
    assert len(built_nodes & grown_nodes) < len(built_nodes) // 4  # mostly misaligned
    assert tree.count(grown) == len(final)

    want = model_diff(base, final)
    assert len(want) == 17
    assert list(tree.diff(built, grown)) == want
    assert list(tree.diff(grown, built)) == model_diff(final, base)
    assert list(tree.diff(EMPTY, grown)) == model_diff({}, final)
    assert list(tree.diff(built, EMPTY)) == model_diff(base, {})

    # After a misaligned region, equal subtrees are skipped once the cursors meet again.
    later = tree.update(grown, [(b"f/05000", b"one more")])
    cold = BTree(store, max_entries=16, cache_nodes=0)
    gets = store.gets
    assert list(cold.diff(grown, later)) == [(b"f/05000", final[b"f/05000"], b"one more")]
    assert store.gets - gets <= 2 * tree.height(grown)
