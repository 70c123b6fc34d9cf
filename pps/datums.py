"""Datums: glob matching, input trees, incremental planning, 1.x blocks and partitions.

Pure: no store, clock or filesystem; callers pass listings of paths and
content hashes in and get plain data back. Sources: seed pipeline-spec 2.x
("The Input Glob Pattern", pfs/cross/union/join) and the 1.x docs (9.1.5,
14, 15, 19.5). The seeds say nothing of group or outer_join: those follow
Pachyderm 2.x. Choices where the seeds are silent or ambiguous:

1. Globs are cleaned like Pachyderm's (``*.txt`` is ``/*.txt``; trailing ``/``
   dropped). ``**`` spans ``/``; ``*``, ``?``, ``[...]`` never match it.
2. Only the pattern ``/`` matches the root; ``/**`` is every entry below it.
   Matches may overlap (``/**`` gives ``/a`` and ``/a/b``): each is a datum.
3. An empty commit has no root: ``/`` gives no datum unless ``("/", True)``
   is listed. A matching (listed) empty directory is a datum with no files.
4. ``$N``/``${N}`` is capture group N, ``$0`` the matched path, ``$$`` a
   ``$``. Naming a missing group is an error (Go's Expand would give "").
5. A datum id hashes the salt, input names, repos, matched paths and every
   (file, content hash) -- not commit ids, so an unchanged datum keeps its
   id across commits. A file with no content hash is a KeyError.
6. An input without join_on (group_by) has key "" for every datum, so a
   join of such inputs is their cross (seed: "performs the cross input
   operation instead of join"); likewise group.
7. join crosses, per key, the datums of the inputs having that key. A key
   is kept if every input has it, or if an input having it is outer_join;
   then only the inputs having it are crossed (SQL left/right/full join).
   Keys and groups come out in order of first appearance.
8. Under a join/group, a nested input's datum has several entries: its key
   is their common value if they agree, else the tuple of values; it is
   outer if any of its entries is.
9. 1.x units go to ``min(parallelism, units)`` workers as contiguous runs
   balanced by bytes (parallelism is an upper bound, 9.1.3). REPO is one
   shard; when crossing inputs the scheduler gives it whole to every worker.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, chain
from typing import Any, NamedTuple

BLOCK_SIZE = 8 * 1024 * 1024  # 1.x docs 19.5.1: "a single Block consists of 8MBs worth of lines"

class GlobError(ValueError):
    """A glob pattern, or a join_on/group_by template, that cannot be used."""

def _clean_path(path: str) -> str:
    """``a/b/`` -> ``/a/b``; the root becomes ``""``."""
    return ("/" + path if not path.startswith("/") else path).rstrip("/")

_TOKEN = re.compile(r"\*\*+|\[[!^]?\]?[^\]]*\]|\\.|[*?()\[\\]|[^*?()\[\\]+", re.S)
_SIMPLE = {"*": "[^/]*", "?": "[^/]", "(": "(", ")": ")"}

@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str] | None:
    """Compile a glob (choice 1) to a regex over clean paths, None for the root ``/``;
    ``(...)`` are capture groups, numbered by their ``(`` (``regex.groups``)."""
    if not pattern:
        raise GlobError("empty glob pattern")
    clean = _clean_path(pattern)
    if not clean:
        return None
    out: list[str] = []
    for tok in _TOKEN.findall(clean):
        if tok in _SIMPLE:
            out.append(_SIMPLE[tok])
        elif tok[0] == "*":
            out.append(".*")
        elif tok in ("[", "\\"):
            raise GlobError(f"glob {pattern!r}: unterminated {tok!r}")
        elif tok[0] == "[":
            neg = tok[1] in "!^"
            body = "".join("-" if c == "-" else re.escape(c) for c in tok[1 + neg : -1] if c != "/")
            if not body and not neg:
                raise GlobError(f"glob {pattern!r}: empty class {tok!r}")
            out.append(f"[^{body}/]" if neg else f"[{body}]")
        else:
            out.append(re.escape(tok[-1] if tok[0] == "\\" else tok))
    try:
        return re.compile("".join(out), re.S)
    except re.error as e:
        raise GlobError(f"glob {pattern!r}: {e}") from None

_REF = re.compile(r"\$(?:\{(\d+)\}|(\d+)|(\$))")

def expand(template: str, path: str, groups: Sequence[str]) -> str:
    """Expand a join_on / group_by template against one match (choice 4)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        k = int(m.group(1) or m.group(2))
        if k > len(groups):
            raise GlobError(f"{template!r} refers to ${k} but the glob has {len(groups)} group(s)")
        return groups[k - 1] if k else path
    return _REF.sub(sub, template)

@dataclass(frozen=True, slots=True)
class Match:
    """One glob match: the datum root, every file at or below it, the capture groups."""
    path: str
    files: tuple[str, ...]
    groups: tuple[str, ...]
    is_dir: bool

Entry = tuple[str, bool] | str  # (path, is_dir), or a bare path meaning a file

class SortedTree(NamedTuple):
    """Entries as the matcher needs them: sorted (path, is_dir) below the root with every
    parent dir, the sorted files, and whether there is a root. A caller that lists a
    whole tree makes it once (``of``) and passes it as a listing's entries."""
    items: list[tuple[str, bool]]
    files: list[str]
    nonempty: bool

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> SortedTree:
        return cls(*_tree(entries))

def _tree(entries: Iterable[Entry]) -> tuple[list[tuple[str, bool]], list[str], bool]:
    """Sorted (path, is_dir) below the root with implied parent dirs, sorted files, any root."""
    if isinstance(entries, SortedTree):
        return entries
    kinds: dict[str, bool] = {}
    root = False
    for e in entries:
        path, is_dir = (e, False) if isinstance(e, str) else e
        if not (path := _clean_path(path)):
            root = True
            continue
        kinds[path] = kinds.get(path, False) or is_dir
        parent = path.rpartition("/")[0]
        while parent and not kinds.get(parent):
            kinds[parent] = True
            parent = parent.rpartition("/")[0]
    items = sorted(kinds.items())
    return items, [p for p, d in items if not d], root or bool(items)

def glob_match(pattern: str, paths: Iterable[Entry]) -> list[Match]:
    """The commit entries (path, is_dir) the glob matches, in path order (choices 1-3);
    a directory match covers every file below it. Unlisted parent dirs are implied."""
    return list(iter_glob_match(pattern, paths))

def iter_glob_match(pattern: str, paths: Iterable[Entry]) -> Iterator[Match]:
    """``glob_match`` one match at a time."""
    rx = compile_glob(pattern)
    items, files, nonempty = _tree(paths)
    if rx is None:
        if nonempty:
            yield Match("/", tuple(files), (), True)
        return
    for path, is_dir in items:
        if (m := rx.fullmatch(path)) is None:
            continue
        if is_dir:  # the files below path are the sorted range [path + "/", path + "0")
            under = tuple(files[bisect_left(files, path + "/") : bisect_left(files, path + "0")])
        else:
            under = (path,)
        yield Match(path, under, tuple(s or "" for s in m.groups()), is_dir)

@dataclass(frozen=True)
class PfsNode:
    """A ``pfs`` input (``name`` "": the repo's); cron and git inputs map onto it too."""
    name: str
    repo: str
    glob: str
    join_on: str | None = None
    group_by: str | None = None
    outer_join: bool = False
    empty_files: bool = False
    lazy: bool = False
    branch: str = "master"

    @property
    def input_name(self) -> str:
        return self.name or self.repo

@dataclass(frozen=True)
class _Combine:
    inputs: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))

class CrossNode(_Combine):
    """``cross``: the product of the inputs' datums; names must differ across inputs."""

class UnionNode(_Combine):
    """``union``: every datum of every input; names may repeat."""

class JoinNode(_Combine):
    """``join``: the inputs' datums with equal join_on values, crossed (choices 6-8)."""

class GroupNode(_Combine):
    """``group``: one datum per group_by value, holding every match with that value."""

Node = PfsNode | CrossNode | UnionNode | JoinNode | GroupNode

def validate(node: Node) -> set[str]:
    """Return the tree's input names. ValueError for a bad glob, a template naming
    a missing group, an empty combinator, or a name shared by crossed or joined
    inputs (seed: "Input names must be unique if the inputs are crossed")."""
    if isinstance(node, PfsNode):
        if not node.repo:
            raise ValueError("pfs input without a repo")
        rx = compile_glob(node.glob)
        for t in (node.join_on, node.group_by):
            if t:
                expand(t, "", [""] * (rx.groups if rx else 0))
        return {node.input_name}
    kind = type(node).__name__.removesuffix("Node").lower()
    if not node.inputs:
        raise ValueError(f"{kind} input needs at least one input")
    seen: set[str] = set()
    for child in node.inputs:
        names = validate(child)
        if isinstance(node, CrossNode | JoinNode) and names & seen:
            raise ValueError(f"input name {min(names & seen)!r} appears twice in a {kind}")
        seen |= names
    return seen

@dataclass(frozen=True, slots=True)
class DatumInput:
    """One input's share of a datum: what ``/pfs/<name>`` shows for it."""
    name: str
    repo: str
    branch: str
    commit: str
    path: str  # the matched path; the job's env var <name> is /pfs/<name><path>
    files: tuple[str, ...]
    is_dir: bool
    groups: tuple[str, ...]
    join_key: str | None
    group_key: str | None
    outer_join: bool
    empty_files: bool
    lazy: bool
    digest: str  # hash of salt, name, repo, path and every (file, content hash)

@dataclass(frozen=True, slots=True)
class Datum:
    """An immutable datum; ``datum_id`` hashes its entries' digests in order (choice 5)."""
    datum_id: str
    inputs: tuple[DatumInput, ...]

    def by_name(self) -> dict[str, list[DatumInput]]:
        out: dict[str, list[DatumInput]] = {}
        for e in self.inputs:
            out.setdefault(e.name, []).append(e)
        return out

def _h(parts: Iterable[str]) -> str:
    data = "\0".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).hexdigest()

def _datum(entries: tuple[DatumInput, ...]) -> Datum:
    return Datum(_h(e.digest for e in entries), entries)

Hashes = Mapping[tuple[str, str], str]  # (repo, path) -> content hash
Templates = Sequence[str | None] | None

@dataclass(frozen=True)
class Listing:
    """One input commit: its id and its (path, is_dir) entries."""
    commit: str
    entries: Sequence[Entry] | SortedTree

def pfs_datums(
    node: PfsNode, files: Listing, file_hashes: Hashes | None = None, *, salt: str = ""
) -> list[Datum]:
    """One datum per glob match; ``file_hashes[(repo, path)]`` is each file's content hash.
    ``salt`` (e.g. a hash of the spec) enters every id: changing it reprocesses all."""
    return list(iter_pfs_datums(node, files, file_hashes, salt=salt))

def iter_pfs_datums(
    node: PfsNode, files: Listing, file_hashes: Hashes | None = None, *, salt: str = ""
) -> Iterator[Datum]:
    """``pfs_datums`` one datum at a time."""
    validate(node)
    name, repo = node.input_name, node.repo
    hashes = file_hashes if file_hashes is not None else {}
    for m in iter_glob_match(node.glob, files.entries):
        parts = [salt, name, repo, m.path]
        for f in m.files:
            if (h := hashes.get((repo, f))) is None:
                raise KeyError(f"no content hash for {repo}:{f}")
            parts += (f, h)
        jk = expand(node.join_on, m.path, m.groups) if node.join_on else None
        gk = expand(node.group_by, m.path, m.groups) if node.group_by else None
        entry = DatumInput(
            name, repo, node.branch, files.commit, m.path, m.files, m.is_dir, m.groups,
            jk, gk, node.outer_join, node.empty_files, node.lazy, _h(parts),
        )
        yield _datum((entry,))

def cross(*lists: Sequence[Datum]) -> list[Datum]:
    """Cartesian product, the first input varying slowest; an empty input empties it."""
    if not lists:
        return []
    combos: list[tuple[DatumInput, ...]] = [()]
    for lst in lists:
        combos = [c + d.inputs for c in combos for d in lst]
    return [_datum(c) for c in combos]

def union(*lists: Sequence[Datum]) -> list[Datum]:
    """Concatenation: each datum of each input, in input order."""
    return [d for lst in lists for d in lst]

def _key(d: Datum, attr: str, template: str | None) -> Hashable:
    if template is not None:
        keys = [expand(template, e.path, e.groups) for e in d.inputs]
    else:
        keys = [getattr(e, attr) or "" for e in d.inputs]
    return keys[0] if len(set(keys)) == 1 else tuple(keys)

def join(
    lists: Sequence[Sequence[Datum]], join_on: Templates = None, outer: Sequence[bool] | None = None
) -> list[Datum]:
    """Join datums whose join_on values are equal (choices 6-8). ``join_on[i]``, if
    given, replaces input i's own templates; ``outer[i]`` defaults to whether input
    i's entries carry outer_join."""
    n = len(lists)
    tpl = list(join_on) if join_on is not None else [None] * n
    if outer is None:
        outer = [any(e.outer_join for d in lst for e in d.inputs) for lst in lists]
    table: dict[Hashable, list[list[Datum]]] = {}
    for i, lst in enumerate(lists):
        for d in lst:
            table.setdefault(_key(d, "join_key", tpl[i]), [[] for _ in range(n)])[i].append(d)
    out: list[Datum] = []
    for slots in table.values():
        present = [i for i, s in enumerate(slots) if s]
        if len(present) == n or any(outer[i] for i in present):
            out.extend(cross(*(slots[i] for i in present)))
    return out

def group(lists: Sequence[Sequence[Datum]], group_by: Templates = None) -> list[Datum]:
    """One datum per distinct group_by value across the inputs, holding every entry
    with that value (input order, then match order); ``group_by[i]`` overrides."""
    tpl = list(group_by) if group_by is not None else [None] * len(lists)
    table: dict[Hashable, list[DatumInput]] = {}
    for i, lst in enumerate(lists):
        for d in lst:
            table.setdefault(_key(d, "group_key", tpl[i]), []).extend(d.inputs)
    return [_datum(tuple(entries)) for entries in table.values()]

def _listing_of(listing: Mapping[Any, Listing], node: PfsNode) -> Listing:
    lst = listing.get((node.repo, node.branch)) or listing.get(node.repo)
    if lst is None:
        raise KeyError(f"no listing for repo {node.repo!r} (branch {node.branch!r})")
    return lst

def datums_for(
    input_tree: Node, listing: Mapping[Any, Listing], file_hashes: Hashes | None = None, *, salt=""
) -> list[Datum]:
    """Evaluate an input tree; ``listing`` maps ``(repo, branch)`` or ``repo`` to a Listing."""
    validate(input_tree)

    def ev(node: Node) -> list[Datum]:
        if isinstance(node, PfsNode):
            return pfs_datums(node, _listing_of(listing, node), file_hashes, salt=salt)
        kids = [ev(c) for c in node.inputs]
        if isinstance(node, CrossNode | UnionNode):
            return (cross if isinstance(node, CrossNode) else union)(*kids)
        return join(kids) if isinstance(node, JoinNode) else group(kids)

    return ev(input_tree)

def iter_datums(
    input_tree: Node, listing: Mapping[Any, Listing], file_hashes: Hashes | None = None, *, salt=""
) -> Iterator[Datum]:
    """``datums_for`` one datum at a time. A pfs input, or a union of them, streams: the
    common case, where a job's datums are as many as its input's files. Cross, join and
    group need their inputs' datums whole, so those are evaluated first."""
    validate(input_tree)

    def it(node: Node) -> Iterator[Datum]:
        if isinstance(node, PfsNode):
            yield from iter_pfs_datums(node, _listing_of(listing, node), file_hashes, salt=salt)
        elif isinstance(node, UnionNode):
            for child in node.inputs:
                yield from it(child)
        else:
            yield from datums_for(node, listing, file_hashes, salt=salt)

    return it(input_tree)

class Plan(NamedTuple):
    to_run: list[Datum]
    to_skip: list[tuple[Datum, Any]]  # (datum, outputs carried forward)

def plan(previous: Mapping[str, Any], current: Iterable[Datum]) -> Plan:
    """Skip each datum whose id is in ``previous`` (datum_id -> outputs of a successful
    run; the caller leaves failed datums out), carrying its outputs; run the rest."""
    out = Plan([], [])
    for d in current:
        if d.datum_id in previous:
            out.to_skip.append((d, previous[d.datum_id]))
        else:
            out.to_run.append(d)
    return out

class OutputCollisionError(ValueError):
    """Two datums wrote one output path, or one wrote below a file another wrote."""

    def __init__(self, path: str, first: str, second: str, below: bool = False):
        self.path, self.datums = path, (first, second)
        how = f"collide: {second} writes below {path}, a file {first} wrote" if below else ""
        super().__init__(f"datums {first} and {second} {how or f'both write {path}'}")

def check_output_collisions(
    outputs: Mapping[str, Iterable[str]], *, mode: str = "2.x", order: Sequence[str] | None = None
) -> dict[str, list[str]] | None:
    """Check the paths each datum wrote (datum_id -> paths). ``2.x``: a path written by
    two datums raises OutputCollisionError naming both and the path. ``1.x``: returns
    path -> datum ids in the stable order their outputs are appended (``order``, by
    default sorted ids). Both refuse a datum writing below another's file."""
    if mode not in ("1.x", "2.x"):
        raise ValueError(f"mode must be '1.x' or '2.x', not {mode!r}")
    ids = list(order) if order is not None else []
    ids += sorted(set(outputs) - set(ids))
    writers: dict[str, list[str]] = {}
    for d in ids:
        for p in dict.fromkeys(_clean_path(p) or "/" for p in outputs.get(d, ())):
            writers.setdefault(p, []).append(d)
    for p in sorted(writers):
        ws, parent = writers[p], p.rpartition("/")[0]
        while parent:
            if (other := writers.get(parent)) and len({*other, *ws}) > 1:
                a, b = next((a, b) for a in other for b in ws if a != b)
                raise OutputCollisionError(parent, a, b, below=True)
            parent = parent.rpartition("/")[0]
        if mode == "2.x" and len(ws) > 1:
            raise OutputCollisionError(p, ws[0], ws[1])
    return None if mode == "2.x" else dict(sorted(writers.items()))

def block_kind(path: str) -> str:
    """1.x docs 19.5: ``.json`` splits at whole JSON values, ``.bin`` at writes, else lines."""
    return "json" if path.endswith(".json") else "bin" if path.endswith(".bin") else "line"

class _Lines:
    """A block may end after any newline."""

    def __init__(self, size: int):
        self.size, self.seen = size, 0

    def feed(self, buf: bytearray) -> None:
        pass

    def cut(self, buf: bytearray, final: bool) -> int | None:
        if len(buf) <= self.size:
            return len(buf) if final and buf else None
        i = buf.rfind(b"\n", 0, self.size)
        if i < 0:  # the first line is longer than a block: it is a block of its own
            i = buf.find(b"\n", max(self.size, self.seen))
            self.seen = len(buf)
        return i + 1 if i >= 0 else len(buf) if final else None

    def shift(self, n: int) -> None:
        self.seen = 0

class _Json(_Lines):
    """A block may end where a top-level JSON value starts (the whitespace before it
    stays with the previous value). Tracks strings, escapes and brackets only."""

    _PAT = dict(out=re.compile(rb"[^ \t\r\n]"), str=re.compile(rb'["\\]'),
                scalar=re.compile(rb'[ \t\r\n\[\]{}"]'))
    # inside brackets, one match skips all but brackets and a string not yet closed
    _SKIP = re.compile(rb'(?:[^\[\]{}"]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.S)
    _OPEN = {ord("]"): ord("["), ord("}"): ord("{")}

    def __init__(self, size: int):
        self.size, self.pos, self.state = size, 0, "start"
        self.stack: list[int] = []
        self.cuts: list[int] = []

    def feed(self, buf: bytearray) -> None:
        pos, n = self.pos, len(buf)
        while pos < n:
            st = self.state
            if st == "obj":
                if (pos := self._SKIP.match(buf, pos).end()) >= n:  # type: ignore[union-attr]
                    break
            elif (m := self._PAT["out" if st == "start" else st].search(buf, pos)) is None:
                pos = n
                break
            else:
                pos = m.start()
            c = buf[pos]
            if st == "scalar":  # a bare number/true/null ends before this byte
                self.state = "out"
                continue
            if st == "str":
                if c == 0x5C:  # backslash: skip the escaped byte (wait for it if absent)
                    if pos + 1 >= n:
                        break
                    pos += 2
                    continue
                self.state = "obj" if self.stack else "out"
            elif c in b"]}":
                if st != "obj" or self.stack.pop() != self._OPEN[c]:
                    raise ValueError(f"unexpected {chr(c)!r} in JSON data")
                if not self.stack:
                    self.state = "out"
            else:
                if st != "obj":  # a top-level value starts here
                    self.cuts += [pos] if st == "out" else []
                    self.state = "scalar"
                if c in b"[{":
                    self.stack.append(c)
                    self.state = "obj"
                elif c == 0x22:
                    self.state = "str"
            pos += 1
        self.pos = pos

    def cut(self, buf: bytearray, final: bool) -> int | None:
        if final and self.state in ("obj", "str"):
            raise ValueError("JSON data ends inside a value")
        if len(buf) <= self.size:
            return len(buf) if final and buf else None
        if k := bisect_right(self.cuts, self.size):
            return self.cuts[k - 1]
        if self.cuts:  # one value longer than a block: it is a block of its own
            return self.cuts[0]
        return len(buf) if final else None

    def shift(self, n: int) -> None:
        self.pos -= n
        self.cuts = [c - n for c in self.cuts if c > n]

def _drive(chunks: Iterable[bytes], sc: _Lines) -> Iterator[bytes]:
    buf, final = bytearray(), False
    for chunk in chain(chunks, [None]):
        if chunk is None:
            final = True
        else:
            buf += chunk
            sc.feed(buf)
        while n := sc.cut(buf, final):
            yield bytes(buf[:n])
            del buf[:n]
            sc.shift(n)

def _writes(chunks: Iterable[bytes], writes: Sequence[int]) -> Iterator[bytes]:
    it, buf = iter(chunks), bytearray()
    for w in writes:
        while len(buf) < w:
            if (nxt := next(it, None)) is None:
                raise ValueError("the writes add up to more than the data")
            buf += nxt
        if w:
            yield bytes(buf[:w])
            del buf[:w]
    if buf or any(it):
        raise ValueError("the data is longer than the writes")

def blocks(
    data: bytes | Iterable[bytes], kind="line", *, size=BLOCK_SIZE, writes: Sequence[int] | None = None
) -> Iterator[bytes]:
    """Split a file (bytes, or chunks cut anywhere) into 1.x blocks (docs 19.5).

    ``line``: whole lines packed greedily up to ``size`` bytes; ``json``: whole
    top-level JSON values (concatenated, pretty-printed or not), packed alike;
    ``bin``: one block per write of ``writes`` (empty writes make none). A
    longer line or value is a block of its own: nothing is split, and blocks
    concatenate back to the data. Lazy (memory: ``size`` plus one unit); bad
    JSON or writes not adding up raise ValueError while iterating."""
    if size < 1:
        raise ValueError("block size must be positive")
    whole = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else None
    chunks: Iterable[bytes] = [whole] if whole is not None else data
    if kind == "bin":
        if writes is None or any(w < 0 for w in writes):
            raise ValueError("bin blocks need the list of write sizes")
        if whole is not None and sum(writes) != len(whole):
            raise ValueError(f"the writes add up to {sum(writes)} bytes, the data is {len(whole)}")
        return _writes(chunks, writes)
    if kind not in ("line", "json"):
        raise ValueError(f"block kind must be line, json or bin, not {kind!r}")
    return _drive(chunks, _Lines(size) if kind == "line" else _Json(size))

@dataclass(frozen=True)
class Piece:
    """A byte range of one file that a 1.x worker sees."""
    path: str
    offset: int
    length: int

def _top(path: str) -> str:
    return "/" + _clean_path(path)[1:].split("/", 1)[0]

def _merge(pieces: Iterable[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for p in pieces:
        if out and out[-1].path == p.path and out[-1].offset + out[-1].length == p.offset:
            out[-1] = Piece(p.path, out[-1].offset, out[-1].length + p.length)
        else:
            out.append(p)
    return out

def partition_1x(
    files: Mapping[str, Sequence[int]] | Sequence[Piece], partition="BLOCK", parallelism=1
) -> list[list[Piece]]:
    """Per-worker shards of an input by 1.x partition unit (docs 9.1.5; choice 9).

    ``BLOCK``: each block is a unit (one file's blocks may go to different
    workers); ``FILE``: each top-level file or directory is a unit, never split;
    ``REPO``: one unit. ``files`` maps each file to its block sizes, or lists
    pieces (e.g. only a commit's new blocks for a DIFF input). Adjacent pieces
    of one file are merged."""
    if partition not in ("BLOCK", "FILE", "REPO"):
        raise ValueError(f"partition must be BLOCK, FILE or REPO, not {partition!r}")
    if isinstance(files, Mapping):
        pieces = [Piece(f, off, n) for f in sorted(files)
                  for off, n in zip(accumulate(files[f], initial=0), files[f], strict=False)]
    else:
        pieces = sorted(files, key=lambda p: (p.path, p.offset))
    if not pieces or partition == "REPO":
        return [_merge(pieces)] if pieces else []
    units: list[list[Piece]] = []
    for p in pieces:
        if partition == "FILE" and units and _top(units[-1][-1].path) == _top(p.path):
            units[-1].append(p)
        else:
            units.append([p])
    n = max(1, min(parallelism, len(units)))
    weights = [sum(p.length for p in u) + 1 for u in units]  # +1: empty files count too
    total, shards, i, cum = sum(weights), [], 0, 0
    for k in range(n):
        end = i + 1 if k < n - 1 else len(units)
        cum += sum(weights[i:end])
        # grow while the next unit's midpoint is within this shard's share,
        # leaving at least one unit for each later shard
        while end <= len(units) - (n - k) and cum + weights[end] / 2 <= total * (k + 1) / n:
            cum += weights[end]
            end += 1
        shards.append(_merge(p for u in units[i:end] for p in u))
        i = end
    return shards
