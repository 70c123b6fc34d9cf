"""From a pipeline and its input commits to a job plan: datums, units, what to skip.

A *unit* is what one process start sees: one datum, or a ``chunk_spec``
batch of them (2.x), or one 1.x shard. 2.x units whose datums all still
exist are *intact*: they are skipped and their outputs stay in the output
commit (which starts from the previous one). Every other previous unit is
*dropped*: its outputs are deleted and its surviving datums run again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any, NamedTuple

from pfsfuse import names
from pfsfuse.entries import Entry
from pps import datums as dm
from pps import wire
from pps.spec import PipelineSpec
from pps.spec_inputs import (
    DEFAULT_METHOD,
    CronInput,
    CrossInput,
    GitInput,
    GroupInput,
    Input,
    JoinInput,
    PfsInput,
    UnionInput,
    walk,
)


@dataclass
class LeafCommit:
    """One leaf input of a job: which commit it reads."""

    name: str
    repo: str
    branch: str | None
    commit: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "repo": self.repo, "branch": self.branch, "commit": self.commit}


@dataclass(slots=True)
class Unit:
    unit_id: str
    datums: list[str]
    files: list[wire.FileSpec] = field(default_factory=list)
    dirs: list[wire.Dir] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    datum_files: dict[str, str] = field(default_factory=dict)  # per datum, its row's files as JSON

    def to_wire(self) -> wire.Unit:
        return wire.Unit(self.unit_id, self.datums, self.env, self.files, self.dirs)


class Skipped(NamedTuple):
    """A datum a past job did, carried forward: its row as list-datum shows it."""

    datum: str
    unit: str
    files: str  # JSON, as the datum row stores it: one skipped datum of a big input costs ~200 bytes


# Skipped rows past this many bytes go to a temporary file (a few thousand rows stay in memory).
SPILL = 1 << 20


class SkippedRows:
    """A plan's skipped datums, spilled to a temporary file as they are made: on a big
    input they are most of a plan (85,000 rows would be ~30 MB as Python objects) and
    they are read once, in order, when the job's datum rows are written."""

    def __init__(self, rows: Iterable[Skipped] = ()):
        self._file = tempfile.SpooledTemporaryFile(max_size=SPILL)  # noqa: SIM115 - closed by close()
        self._count = 0
        for row in rows:
            self.add(row)

    def add(self, row: Skipped) -> None:
        # A tab and a newline delimit safely: ids are hex and the files JSON escapes both.
        self._file.write(f"{row.datum}\t{row.unit}\t{row.files}\n".encode())
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Skipped]:
        self._file.seek(0)
        for line in self._file:
            datum, unit, files = line.decode().rstrip("\n").split("\t", 2)
            yield Skipped(datum, unit, files)

    def close(self) -> None:
        self._file.close()


@dataclass
class JobPlan:
    inputs: list[LeafCommit]
    to_run: list[Unit]
    skipped: SkippedRows
    kept: int  # how many previous units are kept whole (their datums skipped)
    dropped_units: list[str]
    total: int

    @property
    def env(self) -> dict[str, str]:
        return input_env(self.inputs)


def input_env(inputs: list[LeafCommit]) -> dict[str, str]:
    """PACH_<REPO>_COMMIT_ID for every input repo (1.x docs 9.3.3)."""
    out = {}
    for leaf in inputs:
        key = "".join(c if c.isalnum() else "_" for c in leaf.repo.upper())
        out[f"PACH_{key}_COMMIT_ID"] = leaf.commit
    return out


def leaves(spec: PipelineSpec) -> list[PfsInput | CronInput | GitInput]:
    return [leaf for leaf, _ in walk(spec.input)]


def leaf_repo(leaf: PfsInput | CronInput | GitInput) -> str:
    if isinstance(leaf, GitInput):
        return leaf.name
    return leaf.repo


def leaf_branch(leaf: PfsInput | CronInput | GitInput) -> str:
    """The branch whose commits feed the input: a trigger's branch when it has one
    (commits land there; the input's own branch is moved when the trigger fires)."""
    if isinstance(leaf, PfsInput) and leaf.trigger is not None and leaf.trigger.branch:
        return leaf.trigger.branch
    return leaf.branch if isinstance(leaf, PfsInput | GitInput) else "master"


def _h(parts: list[str]) -> str:
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def content_of(e: Entry) -> str:
    """A file's content identity from its chunk list (blind to mtime)."""
    if e.list_ref is not None:
        return e.list_ref.hex()
    return _h([r[0].hex() + ":" + str(r[1]) for r in (e.refs or [])])


class Tree:
    """One input commit's files: paths, dirs, sizes and content keys (one walk).
    ``entries`` is what the glob matcher works on (every path sorted, with its
    dirs), made once when first asked (1.x plans and services need only sizes)."""

    def __init__(self, pfs, repo: str, commit: str):
        row = pfs.resolve(repo, commit)
        self._items: list[tuple[str, bool]] = []
        self.sizes: dict[str, int] = {}
        self.keys: dict[str, str] = {}
        for path, e in pfs.walk_tree(pfs.root_of(row), ""):
            p = "/" + path
            self._items.append((p, e.is_dir))
            if not e.is_dir:
                self.sizes[p] = e.size
                self.keys[p] = content_of(e)

    @functools.cached_property
    def entries(self) -> dm.SortedTree:
        items, self._items = self._items, []
        return dm.SortedTree.of(items)


class _ByRepo(Mapping):
    """``(repo, path) -> value`` over the input trees' own dicts (``keys`` or ``sizes``),
    so a plan holds each file's facts once, not again in a table keyed by pairs.
    A repo read at two commits answers from the later leaf first, as one merged
    table would."""

    def __init__(self, trees: list[tuple[str, Tree]], attr: str):
        self._by_repo: dict[str, list[dict]] = {}
        for repo, tree in reversed(trees):
            self._by_repo.setdefault(repo, []).append(getattr(tree, attr))

    def __getitem__(self, key: tuple[str, str]):
        for table in self._by_repo.get(key[0], ()):
            if key[1] in table:
                return table[key[1]]
        raise KeyError(key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        for repo, tables in self._by_repo.items():
            for table in tables:
                for p in table:
                    if (repo, p) not in seen:
                        seen.add((repo, p))
                        yield repo, p

    def __len__(self) -> int:
        return sum(1 for _ in self)


def to_node(node: Input) -> dm.Node:
    if isinstance(node, PfsInput):
        return dm.PfsNode(node.name, node.repo, node.glob or "/*", node.join_on or None, node.group_by or None,
                          node.outer_join, node.empty_files, node.lazy, node.branch)
    if isinstance(node, CronInput):
        return dm.PfsNode(node.name, node.repo, "/*", branch="master")
    if isinstance(node, GitInput):
        return dm.PfsNode(node.name, node.name, "/", branch=node.branch)
    kids = tuple(to_node(c) for c in node.inputs)
    kind = {CrossInput: dm.CrossNode, UnionInput: dm.UnionNode, JoinInput: dm.JoinNode,
            GroupInput: dm.GroupNode}[type(node)]
    return kind(kids)


def _pfs_path(name: str, path: str) -> str:
    return f"/pfs/{name}" if path in ("", "/") else f"/pfs/{name}{path}"


def plan_v2(pfs, spec: PipelineSpec, salt: str, inputs: list[LeafCommit],
            previous: Mapping[str, list[str]] | Iterable[tuple[str, list[str]]], *,
            reprocess: bool = False) -> JobPlan:
    """One pass over the datums as they are generated: a datum a kept previous unit
    did becomes a ``Skipped`` row at once and is not held; only the datums to run
    are. ``previous`` is the last successful job's units (unit -> datums), or pairs
    of them as ``PpsStore.iter_units`` pages them."""
    trees: dict[tuple[str, str], Tree] = {}
    listing: dict[Any, dm.Listing] = {}
    order: list[tuple[str, Tree]] = []
    for leaf in inputs:
        key = (leaf.repo, leaf.commit)
        if key not in trees:
            trees[key] = Tree(pfs, leaf.repo, leaf.commit)
        t = trees[key]
        order.append((leaf.repo, t))
        listing[(leaf.repo, leaf.branch or "master")] = dm.Listing(leaf.commit, t.entries)
        listing.setdefault(leaf.repo, listing[(leaf.repo, leaf.branch or "master")])  # a trigger's branch
    hashes, sizes = _ByRepo(order, "keys"), _ByRepo(order, "sizes")
    # A unit of one datum is named by that datum (the usual case: chunk number 1); a bigger
    # unit is kept only if all of its datums are still there, so those are held until the end.
    unit_of: dict[str, str] = {}
    multi: dict[str, int] = {}  # unit of several datums -> how many
    items = previous.items() if isinstance(previous, Mapping) else previous
    dropped: list[str] = []
    for unit, ds in items:
        if reprocess:
            dropped.append(unit)
        elif ds == [unit]:
            unit_of[unit] = unit
        else:
            multi[unit] = len(ds)
            for d in ds:
                unit_of[d] = unit
    seen: set[str] = set()
    skipped = SkippedRows()
    todo: list[tuple[int, dm.Datum]] = []
    held: dict[str, list[tuple[int, dm.Datum]]] = {}
    for at, d in enumerate(dm.iter_datums(to_node(spec.input), listing, hashes, salt=salt)):
        if d.datum_id in seen:
            continue
        seen.add(d.datum_id)
        unit = unit_of.get(d.datum_id)
        if unit is None:
            todo.append((at, d))
        elif unit in multi:
            held.setdefault(unit, []).append((at, d))
        else:
            skipped.add(Skipped(d.datum_id, unit, json.dumps(_datum_files(d, sizes))))
    kept = len(skipped)
    for unit, ds in held.items():
        if len(ds) == multi[unit]:
            kept += 1
            for _at, d in ds:
                skipped.add(Skipped(d.datum_id, unit, json.dumps(_datum_files(d, sizes))))
        else:
            todo += ds
    dropped += [u for d, u in unit_of.items() if u == d and u not in multi and d not in seen]
    dropped += [u for u in multi if len(held.get(u, ())) != multi[u]]
    total = len(seen)
    # Units are built from sizes alone: what only matching and skipping needed goes now,
    # before the units are (this plan's peak is the larger of the two stages).
    if held:
        todo.sort(key=lambda pair: pair[0])
    del unit_of, seen, held, listing, hashes
    for t in trees.values():
        t.keys, t.entries = {}, dm.SortedTree([], [], False)
    chunk = spec.chunk_spec
    number = chunk.number if chunk and chunk.number > 0 else (0 if chunk and chunk.size_bytes else 1)
    size_limit = chunk.size_bytes if chunk else 0
    units: list[Unit] = []
    batch: list[dm.Datum] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch, batch_bytes
        if batch:
            units.append(_unit_v2(batch, sizes))
        batch, batch_bytes = [], 0

    for _at, d in todo:
        batch.append(d)
        batch_bytes += sum(sizes.get((e.repo, f), 0) for e in d.inputs for f in e.files)
        if (number and len(batch) >= number) or (size_limit and batch_bytes >= size_limit):
            flush()
    flush()
    return JobPlan(inputs, units, skipped, kept, dropped, total)


def _datum_files(d: dm.Datum, sizes: Mapping[tuple[str, str], int]) -> list[dict]:
    return [{"input": e.name, "repo": e.repo, "commit": e.commit, "path": f, "size": sizes.get((e.repo, f), 0)}
            for e in d.inputs for f in e.files]


def _unit_v2(batch: list[dm.Datum], sizes: Mapping[tuple[str, str], int]) -> Unit:
    ids = [d.datum_id for d in batch]
    unit = Unit(ids[0] if len(ids) == 1 else _h(ids), ids)
    for d in batch:
        unit.datum_files[d.datum_id] = json.dumps(_datum_files(d, sizes))
        for e in d.inputs:
            for f in e.files:
                unit.files.append(wire.FileSpec(e.name, f, e.repo, e.commit, f, size=sizes.get((e.repo, f), 0),
                                                empty=e.empty_files, lazy=e.lazy))
            if e.is_dir:
                unit.dirs.append(wire.Dir(e.name, e.path))
            if len(batch) == 1:
                unit.env[e.name] = _pfs_path(e.name, e.path)
                unit.env[f"{e.name}_COMMIT"] = e.commit
        if len(batch) > 1:
            for e in d.inputs:
                unit.env.setdefault(f"{e.name}_COMMIT", e.commit)
                unit.env.setdefault(e.name, f"/pfs/{e.name}")
    return unit


# -- 1.x: methods, diffs and shards ---------------------------------------------


def _pieces_v1(pfs, leaf: PfsInput, lc: LeafCommit, triggered: bool) -> list[dm.Piece]:
    """What a 1.x input shows for this job (docs 9.1.5, 15.1): everything, or
    only what the triggering commit added (DIFF) or the files it touched (FILE)."""
    method = leaf.method or DEFAULT_METHOD
    tree = Tree(pfs, lc.repo, lc.commit)
    whole = [dm.Piece(p, 0, s) for p, s in sorted(tree.sizes.items())]
    if method.incremental == "NONE" or not triggered:
        return whole
    parent = pfs.inspect_commit(lc.repo, lc.commit).parent
    if parent is None:
        return whole
    old = Tree(pfs, lc.repo, parent)
    if method.incremental == "FILE":
        changed_tops = {_top(p) for p in tree.sizes if old.keys.get(p) != tree.keys[p]}
        changed_tops |= {_top(p) for p in old.sizes if p not in tree.sizes}
        return [p for p in whole if _top(p.path) in changed_tops]
    out = []
    for p, size in sorted(tree.sizes.items()):
        key = tree.keys[p]
        if old.keys.get(p) == key:
            continue
        if p in old.sizes and _is_append(pfs, lc.repo, parent, lc.commit, p):
            if size > old.sizes[p]:
                out.append(dm.Piece(p, old.sizes[p], size - old.sizes[p]))
        else:
            out.append(dm.Piece(p, 0, size))
    return out


WINDOW = 64 * 1024


def split_blocks(pfs, lc: LeafCommit, pieces: list[dm.Piece], workers: int) -> list[dm.Piece]:
    """Cut pieces bigger than a worker's share at block boundaries (docs 19.5) so one
    big file spreads over the workers: lines by default (only a window around each
    cut is read), whole JSON values for ``.json`` (read through), ``.bin`` never
    (pachy does not record write boundaries, so a ``.bin`` piece stays whole)."""
    total = sum(p.length for p in pieces)
    share = max(1, -(-total // workers))
    out: list[dm.Piece] = []
    for p in pieces:
        kind = dm.block_kind(p.path)
        if p.length <= share or kind == "bin":
            out.append(p)
        elif kind == "json":
            _n, data = pfs.read_range(lc.repo, lc.commit, p.path, p.offset, p.length)
            at = p.offset
            for block in dm.blocks(data, "json", size=share):
                out.append(dm.Piece(p.path, at, len(block)))
                at += len(block)
        else:
            out.extend(_line_cuts(pfs, lc, p, share))
    return out


def _line_cuts(pfs, lc: LeafCommit, p: dm.Piece, share: int) -> list[dm.Piece]:
    end = p.offset + p.length
    cuts = [p.offset]
    target = p.offset + share
    while target < end:
        cut = _next_line_start(pfs, lc, p.path, target, end)
        if cut >= end:
            break
        if cut > cuts[-1]:
            cuts.append(cut)
        target = max(cut, cuts[-1]) + share
    cuts.append(end)
    return [dm.Piece(p.path, a, b - a) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _next_line_start(pfs, lc: LeafCommit, path: str, at: int, end: int) -> int:
    """The offset just after the first newline at or after ``at - 1`` (``end`` if none)."""
    pos = at - 1
    while pos < end:
        _n, data = pfs.read_range(lc.repo, lc.commit, path, pos, min(WINDOW, end - pos))
        buf = b"".join(data)
        i = buf.find(b"\n")
        if i >= 0:
            return pos + i + 1
        if not buf:
            break
        pos += len(buf)
    return end


def _top(path: str) -> str:
    return "/" + path.lstrip("/").split("/", 1)[0]


def _is_append(pfs, repo: str, old: str, new: str, path: str) -> bool:
    """Is the old file's chunk list a prefix of the new one's (put-file appends so)?"""
    p = names.clean_path(path)
    a = pfs.lookup_row(pfs.resolve(repo, old), p)
    b = pfs.lookup_row(pfs.resolve(repo, new), p)
    if a is None or b is None:
        return False
    ra, rb = pfs.load_refs(a), pfs.load_refs(b)
    return len(ra) <= len(rb) and rb[: len(ra)] == ra


def plan_v1(pfs, spec: PipelineSpec, inputs: list[LeafCommit], trigger: str | None) -> JobPlan | None:
    """1.x: the cross product of every input's shards; None when the triggering
    input shows nothing new and does not ``run_empty`` (docs 9.1.4)."""
    workers = max(1, spec.parallelism_spec.workers())
    per_input: list[list[tuple[LeafCommit, list[dm.Piece]]]] = []
    by_name = {lc.name: lc for lc in inputs}
    lazy = {leaf.name for leaf in leaves(spec) if isinstance(leaf, PfsInput) and leaf.lazy}
    for leaf in leaves(spec):
        if not isinstance(leaf, PfsInput):
            continue
        lc = by_name[leaf.name]
        pieces = _pieces_v1(pfs, leaf, lc, triggered=leaf.name == trigger)
        if not pieces:
            if leaf.name == trigger and not leaf.run_empty:
                return None
            per_input.append([(lc, [])])
            continue
        method = leaf.method or DEFAULT_METHOD
        if method.partition == "BLOCK" and workers > 1:
            pieces = split_blocks(pfs, lc, pieces, workers)
        shards = dm.partition_1x(pieces, method.partition, workers)
        per_input.append([(lc, s) for s in shards])
    units = []
    for combo in product(*per_input):
        files = []
        parts = []
        env: dict[str, str] = {}
        for lc, shard in combo:
            env[lc.name] = f"/pfs/{lc.name}"
            env[f"{lc.name}_COMMIT"] = lc.commit
            for p in shard:
                files.append(wire.FileSpec(lc.name, p.path, lc.repo, lc.commit, p.path, p.offset, p.length,
                                           size=p.length, lazy=lc.name in lazy))
                parts += [lc.name, lc.commit, p.path, str(p.offset), str(p.length)]
        did = _h(parts)
        dirs = [wire.Dir(lc.name, "/") for lc, _ in combo]
        datum_files = [{"input": f.input, "repo": f.repo, "commit": f.commit, "path": f.path, "size": f.size}
                       for f in files]
        units.append(Unit(did, [did], files, dirs, env, {did: json.dumps(datum_files)}))
    return JobPlan(inputs, units, SkippedRows(), 0, [], len(units))
