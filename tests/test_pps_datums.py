"""pps.datums: globs, datum trees, ids and planning, 1.x blocks and partitions, collisions."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pps.datums import (
    CrossNode,
    GlobError,
    GroupNode,
    JoinNode,
    Listing,
    OutputCollisionError,
    PfsNode,
    Piece,
    UnionNode,
    block_kind,
    blocks,
    check_output_collisions,
    compile_glob,
    cross,
    datums_for,
    expand,
    glob_match,
    group,
    join,
    partition_1x,
    pfs_datums,
    plan,
    union,
    validate,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The seed's example repo ("Input Glob Pattern"), plus a few files for the other forms.
TREE = [
    ("/", True),
    ("/a.txt", False),
    ("/b.txt", False),
    ("/bar", True),
    ("/bar/bar-1", False),
    ("/bar/bar-2", False),
    ("/bar/sub", True),
    ("/bar/sub/x.txt", False),
    ("/c.csv", False),
    ("/foo-1", False),
    ("/foo-2", False),
]
FILES = [p for p, d in TREE if not d]


def paths(pattern, entries=TREE):
    return [m.path for m in glob_match(pattern, entries)]


def listing(files, commit="c1"):
    return Listing(commit, [(f, False) for f in files])


def hashes_for(repo, files, salt=""):
    return {(repo, f): f"h({f}{salt})" for f in files}


def ids(datums):
    return [d.datum_id for d in datums]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# ----------------------------------------------------------------------------- glob


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/", ["/"]),
        ("/*", ["/a.txt", "/b.txt", "/bar", "/c.csv", "/foo-1", "/foo-2"]),
        ("/*/*", ["/bar/bar-1", "/bar/bar-2", "/bar/sub"]),
        ("/bar/*", ["/bar/bar-1", "/bar/bar-2", "/bar/sub"]),
        ("/foo*", ["/foo-1", "/foo-2"]),
        ("*.txt", ["/a.txt", "/b.txt"]),
        ("/**.txt", ["/a.txt", "/b.txt", "/bar/sub/x.txt"]),
        ("/**/*.txt", ["/bar/sub/x.txt"]),
        ("/foo-?", ["/foo-1", "/foo-2"]),
        ("/[ab].txt", ["/a.txt", "/b.txt"]),
        ("/[!a].txt", ["/b.txt"]),
        ("/[^a-b].???", ["/c.csv"]),
        ("/bar/", ["/bar"]),
        ("/nothing/*", []),
        ("/foo\\-1", ["/foo-1"]),
    ],
)
def test_glob_forms(pattern, expected):
    assert paths(pattern) == expected


def test_glob_datum_contents_follow_the_seed():
    by_path = {m.path: m for m in glob_match("/*", TREE)}
    assert by_path["/bar"].files == ("/bar/bar-1", "/bar/bar-2", "/bar/sub/x.txt")
    assert by_path["/bar"].is_dir and not by_path["/foo-1"].is_dir
    assert by_path["/foo-1"].files == ("/foo-1",)
    (root,) = glob_match("/", TREE)
    assert root.files == tuple(FILES)


def test_glob_double_star_is_every_entry_below_the_root():
    assert paths("/**") == [p for p, _ in TREE if p != "/"]
    sub = {m.path: m.files for m in glob_match("/**", TREE)}
    assert sub["/bar/sub"] == ("/bar/sub/x.txt",)


def test_glob_directories_are_implied_and_paths_cleaned():
    implied = ["a/x", "/a/y/z", "/b"]  # bare strings are files; no dir entries, no leading /
    assert paths("/*", implied) == ["/a", "/b"]
    assert glob_match("/a", implied)[0].files == ("/a/x", "/a/y/z")
    assert paths("/*/*", implied) == ["/a/x", "/a/y"]


def test_glob_root_of_empty_commit():
    assert glob_match("/", []) == []
    assert [m.files for m in glob_match("/", [("/", True)])] == [()]
    assert paths("/*", [("/empty", True)]) == ["/empty"]


def test_glob_capture_groups():
    ms = glob_match("/(*)-(*)", TREE)
    assert [(m.path, m.groups) for m in ms] == [("/foo-1", ("foo", "1")), ("/foo-2", ("foo", "2"))]
    (m,) = glob_match("/bar/(*)/(*).txt", TREE)
    assert m.groups == ("sub", "x")
    assert compile_glob("/((*)-(?))").groups == 3
    assert [m.groups for m in glob_match("/(**).txt", TREE)][-1] == ("bar/sub/x",)


def test_seed_join_example_second_character():
    files = [f"/file{n:03d}" for n in (0, 1, 12, 15, 123)]
    ms = glob_match("/file(?)(?)(?)", [(f, False) for f in files])
    keys = {m.path: expand("$2", m.path, m.groups) for m in ms}
    assert keys == {"/file000": "0", "/file001": "0", "/file012": "1", "/file015": "1", "/file123": "2"}


def test_expand_forms_and_errors():
    assert expand("$1-${2}x-$$-$0", "/p", ("a", "b")) == "a-bx-$-/p"
    with pytest.raises(GlobError, match=r"\$3"):
        expand("$3", "/p", ("a", "b"))


@pytest.mark.parametrize("bad", ["", "/[ab", "/(*", "/*)", "/[]", "/x\\"])
def test_bad_globs(bad):
    with pytest.raises(GlobError):
        compile_glob(bad)


SEG = st.text(alphabet="ab.", min_size=1, max_size=3)
PAT_SEG = st.lists(
    st.sampled_from(["a", "b", ".", "*", "?", "[ab]", "[!a]"]), min_size=1, max_size=3
).filter(lambda seg: "**" not in "".join(seg))  # ** spans "/": not a per-segment glob


@FAST
@given(
    files=st.lists(st.lists(SEG, min_size=1, max_size=3), min_size=1, max_size=12),
    pattern=st.lists(PAT_SEG, min_size=1, max_size=3),
)
def test_glob_matches_fnmatch_segment_by_segment(files, pattern):
    """Without ** a glob is fnmatch applied to each path segment, at one depth."""
    entries = ["/" + "/".join(f) for f in files]
    segs = ["".join(p) for p in pattern]
    # a path cannot be both a file and a directory: drop files that are someone's parent
    entries = [e for e in entries if not any(o.startswith(e + "/") for o in entries)]
    got = set(paths("/" + "/".join(segs), entries))
    every = {"/".join(e.split("/")[: i + 1]) for e in entries for i in range(1, e.count("/") + 1)}
    want = {
        p
        for p in every
        if p.count("/") == len(segs)
        and all(fnmatch.fnmatchcase(s, g) for s, g in zip(p.split("/")[1:], segs, strict=True))
    }
    assert got == want


@FAST
@given(st.lists(st.lists(SEG, min_size=1, max_size=3), min_size=1, max_size=20))
def test_glob_top_level_datums_partition_the_files(files):
    entries = sorted({"/" + "/".join(f) for f in files})
    entries = [e for e in entries if not any(o.startswith(e + "/") for o in entries)]
    ms = glob_match("/*", entries)
    assert sorted(f for m in ms for f in m.files) == sorted(entries)
    assert len(ms) == len({e.split("/")[1] for e in entries})
    assert all(f == m.path or f.startswith(m.path + "/") for m in ms for f in m.files)


# ----------------------------------------------------------------------------- datums


def repo_datums(repo, files, glob="/*", name="", commit="c1", **kw):
    node = PfsNode(name, repo, glob, **kw)
    return pfs_datums(node, listing(files, commit), hashes_for(repo, files))


def test_pfs_datum_records():
    (d,) = [d for d in repo_datums("data", FILES) if d.inputs[0].path == "/bar"]
    (e,) = d.inputs
    assert (e.name, e.repo, e.commit, e.path) == ("data", "data", "c1", "/bar")
    assert e.files == ("/bar/bar-1", "/bar/bar-2", "/bar/sub/x.txt")
    assert list(d.by_name()) == ["data"]
    named = repo_datums("data", FILES, name="in", empty_files=True, lazy=True)[0].inputs[0]
    assert (named.name, named.empty_files, named.lazy) == ("in", True, True)


def test_missing_content_hash_is_an_error():
    with pytest.raises(KeyError, match="data:/x"):
        pfs_datums(PfsNode("", "data", "/*"), listing(["/x"]), {})


def test_cross_and_union_counts_and_order():
    a = repo_datums("A", ["/a1", "/a2", "/a3"])
    b = repo_datums("B", ["/b1", "/b2"])
    c = cross(a, b)
    assert len(c) == 6
    assert [tuple(e.path for e in d.inputs) for d in c[:3]] == [
        ("/a1", "/b1"),
        ("/a1", "/b2"),
        ("/a2", "/b1"),
    ]
    assert len(set(ids(c))) == 6
    assert cross(a, []) == [] and cross() == []
    u = union(a, b)
    assert [d.inputs[0].path for d in u] == ["/a1", "/a2", "/a3", "/b1", "/b2"]
    assert ids(u) == ids(a) + ids(b)
    assert len(cross(a, b, repo_datums("C", ["/c1", "/c2"]))) == 12


KEYS = st.lists(st.sampled_from("pqrstu"), max_size=12)


def keyed(repo, keys, ext, **kw):
    files = [f"/{k}-{i}.{ext}" for i, k in enumerate(keys)]
    return repo_datums(repo, files, glob=f"/(*)-(*).{ext}", join_on="$1", group_by="$1", **kw)


@FAST
@given(ka=KEYS, kb=KEYS)
def test_join_counts(ka, kb):
    ca, cb = Counter(ka), Counter(kb)
    keys = set(ca) | set(cb)
    a, b = keyed("A", ka, "txt"), keyed("B", kb, "csv")
    inner = join([a, b])
    assert len(inner) == sum(ca[k] * cb[k] for k in keys)
    for d in inner:
        ea, eb = d.inputs
        assert (ea.repo, eb.repo) == ("A", "B") and ea.join_key == eb.join_key
    left = join([keyed("A", ka, "txt", outer_join=True), b])
    assert len(left) == sum(ca[k] * cb[k] if cb[k] else ca[k] for k in keys)
    full = join([a, b], outer=[True, True])
    assert len(full) == sum(ca[k] * cb[k] if ca[k] and cb[k] else ca[k] + cb[k] for k in keys)
    # the key can also be given per input to join()
    assert ids(join([a, b], join_on=["$1", "$1"])) == ids(inner)


@FAST
@given(ka=KEYS, kb=KEYS)
def test_group_counts_and_contents(ka, kb):
    ca, cb = Counter(ka), Counter(kb)
    g = group([keyed("A", ka, "txt"), keyed("B", kb, "csv")])
    assert len(g) == len(set(ka) | set(kb))
    for d in g:
        key = d.inputs[0].group_key
        assert {e.group_key for e in d.inputs} == {key}
        by = Counter(e.repo for e in d.inputs)
        assert (by["A"], by["B"]) == (ca[key], cb[key])


def test_join_without_join_on_is_a_cross():
    a, b = repo_datums("A", ["/1", "/2"]), repo_datums("B", ["/x", "/y", "/z"])
    assert ids(join([a, b])) == ids(cross(a, b))
    assert len(group([a, b])) == 1


def test_join_inner_example():
    a = keyed("A", ["p", "q", "q"], "txt")
    b = keyed("B", ["q", "r"], "csv")
    got = [tuple(e.path for e in d.inputs) for d in join([a, b])]
    assert got == [("/q-1.txt", "/q-0.csv"), ("/q-2.txt", "/q-0.csv")]
    outer = join([a, b], outer=[False, True])
    assert [tuple(e.path for e in d.inputs) for d in outer][-1] == ("/r-1.csv",)


def test_nested_trees():
    lst = {
        "A": listing(["/a1", "/a2"]),
        "B": listing(["/b1", "/b2", "/b3"]),
        "C": listing(["/c1"]),
        ("C", "dev"): listing(["/c1", "/c2"], commit="c9"),
    }
    h = {**hashes_for("A", ["/a1", "/a2"]), **hashes_for("B", ["/b1", "/b2", "/b3"])}
    h |= hashes_for("C", ["/c1", "/c2"])
    A, B, C = PfsNode("", "A", "/*"), PfsNode("", "B", "/*"), PfsNode("", "C", "/*")
    assert len(datums_for(CrossNode([UnionNode([A, B]), C]), lst, h)) == 5
    assert len(datums_for(UnionNode([CrossNode([A, B]), C]), lst, h)) == 7
    cu = datums_for(CrossNode([A, UnionNode([B, C])]), lst, h)
    assert [tuple(e.repo for e in d.inputs) for d in cu][:4] == [("A", "B")] * 3 + [("A", "C")]
    dev = PfsNode("cdev", "C", "/*", branch="dev")
    got = datums_for(CrossNode([A, dev]), lst, h)
    assert len(got) == 4 and got[0].inputs[1].commit == "c9"
    # a union of the same repo under one name: datums from both, one name
    u = datums_for(UnionNode([A, PfsNode("A", "B", "/*")]), lst, h)
    assert {n for d in u for n in d.by_name()} == {"A"}
    # join of a pfs input and a union: keys from whichever repo each datum came from
    files = {"X": ["/k1.x", "/k2.x"], "Y": ["/k1.y"], "Z": ["/k2.z", "/k3.z"]}
    lst2 = {r: listing(f) for r, f in files.items()}
    h2 = {k: v for r, f in files.items() for k, v in hashes_for(r, f).items()}
    X = PfsNode("", "X", "/(*).x", join_on="$1")
    Y = PfsNode("yz", "Y", "/(*).y", join_on="$1")
    Z = PfsNode("yz", "Z", "/(*).z", join_on="$1")
    j = datums_for(JoinNode([X, UnionNode([Y, Z])]), lst2, h2)
    assert [tuple(e.path for e in d.inputs) for d in j] == [("/k1.x", "/k1.y"), ("/k2.x", "/k2.z")]
    g = datums_for(
        GroupNode([PfsNode("", "X", "/(*).x", group_by="$1"), PfsNode("", "Z", "/(*).z", group_by="$1")]),
        lst2,
        h2,
    )
    assert [[e.path for e in d.inputs] for d in g] == [["/k1.x"], ["/k2.x", "/k2.z"], ["/k3.z"]]


def test_validation():
    A = PfsNode("", "A", "/*")
    with pytest.raises(ValueError, match="'A' appears twice in a cross"):
        validate(CrossNode([A, PfsNode("", "A", "/x")]))
    with pytest.raises(ValueError, match="twice in a join"):
        validate(JoinNode([A, UnionNode([PfsNode("A", "B", "/*")])]))
    assert validate(UnionNode([A, PfsNode("A", "B", "/*")])) == {"A"}
    with pytest.raises(GlobError, match=r"\$2"):
        validate(PfsNode("", "A", "/(*)", join_on="$2"))
    with pytest.raises(GlobError):
        validate(PfsNode("", "A", "/[x"))
    with pytest.raises(ValueError, match="at least one"):
        validate(CrossNode([]))
    with pytest.raises(KeyError, match="no listing"):
        datums_for(A, {})


# ----------------------------------------------------------------------------- ids and plan


def big_input(n):
    files = [f"/f{i:05d}" for i in range(n)]
    return files, hashes_for("data", files)


def test_datum_ids_stable_and_content_sensitive():
    node = PfsNode("", "data", "/*")
    files, h = big_input(5)
    first = ids(pfs_datums(node, listing(files, "c1"), h))
    assert ids(pfs_datums(node, listing(files, "c2"), h)) == first  # commit id is not in the id
    changed = dict(h) | {("data", "/f00003"): "other"}
    second = ids(pfs_datums(node, listing(files, "c2"), changed))
    assert [a == b for a, b in zip(first, second, strict=True)] == [True, True, True, False, True]
    assert set(ids(pfs_datums(node, listing(files), h, salt="v2"))).isdisjoint(first)
    renamed = ids(pfs_datums(PfsNode("other", "data", "/*"), listing(files), h))
    assert set(renamed).isdisjoint(first)
    # a file added below a directory datum changes that datum only
    d1 = repo_datums("data", FILES)
    d2 = repo_datums("data", [*FILES, "/bar/new"])
    assert sum(a != b for a, b in zip(ids(d1), ids(d2), strict=True)) == 1


def test_datum_ids_stable_across_processes():
    code = (
        "from pps.datums import PfsNode, Listing, pfs_datums\n"
        "d = pfs_datums(PfsNode('', 'r', '/*'), Listing('c', [('/a', False), ('/b/c', False)]),"
        " {('r', '/a'): 'x', ('r', '/b/c'): 'y'})\n"
        "print(','.join(x.datum_id for x in d))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env
    ).stdout.strip()
    here = pfs_datums(
        PfsNode("", "r", "/*"),
        Listing("other", [("/a", False), ("/b/c", False)]),
        {("r", "/a"): "x", ("r", "/b/c"): "y"},
    )
    assert out == ",".join(ids(here))


def test_plan_runs_only_the_new_datum_of_10000():
    node = PfsNode("", "data", "/*")
    files, h = big_input(10_000)
    t0 = time.perf_counter()
    first = datums_for(node, {"data": listing(files)}, h)
    elapsed = time.perf_counter() - t0
    assert len(first) == 10_000 and elapsed < 1.0
    run, skip = plan({}, first)
    assert len(run) == 10_000 and skip == []
    previous = {d.datum_id: [f"/out{d.inputs[0].path}"] for d in run}
    h2 = dict(h) | {("data", "/new"): "hnew"}
    second = datums_for(node, {"data": listing([*files, "/new"], "c2")}, h2)
    run, skip = plan(previous, second)
    assert [d.inputs[0].path for d in run] == ["/new"]
    assert len(skip) == 10_000 and skip[0][1] == ["/out/f00000"]
    # a changed file reruns its datum only; a failed (unrecorded) datum reruns
    h3 = dict(h) | {("data", "/f00042"): "changed"}
    third = datums_for(node, {"data": listing(files, "c3")}, h3)
    del previous[first[7].datum_id]
    run, _ = plan(previous, third)
    assert sorted(d.inputs[0].path for d in run) == ["/f00007", "/f00042"]


def test_plan_on_cross_reruns_the_row_of_a_changed_input():
    a_files, b_files = ["/a1", "/a2", "/a3"], ["/b1", "/b2"]
    lst = {"A": listing(a_files), "B": listing(b_files)}
    h = hashes_for("A", a_files) | hashes_for("B", b_files)
    tree = CrossNode([PfsNode("", "A", "/*"), PfsNode("", "B", "/*")])
    prev = {i: None for i in ids(datums_for(tree, lst, h))}
    run, skip = plan(prev, datums_for(tree, lst, h | {("B", "/b2"): "new"}))
    assert [tuple(e.path for e in d.inputs) for d in run] == [("/a1", "/b2"), ("/a2", "/b2"), ("/a3", "/b2")]
    assert len(skip) == 3


# ----------------------------------------------------------------------------- outputs


def test_collisions_2x_name_both_datums_and_the_path():
    check_output_collisions({"d1": ["/a", "/b/c"], "d2": ["/b/d"]})
    with pytest.raises(OutputCollisionError) as err:
        check_output_collisions({"d2": ["/x", "/shared"], "d1": ["shared"]})
    assert "d1" in str(err.value) and "d2" in str(err.value) and "/shared" in str(err.value)
    assert err.value.path == "/shared" and set(err.value.datums) == {"d1", "d2"}
    with pytest.raises(OutputCollisionError, match="d2 writes below /a, a file d1 wrote"):
        check_output_collisions({"d1": ["/a"], "d2": ["/a/b"]}, mode="1.x")
    with pytest.raises(OutputCollisionError, match="d2 writes below /a"):
        check_output_collisions({"d1": ["/a", "/a/b"], "d2": ["/a/b/c"]}, mode="1.x")


def test_collisions_1x_merge_order_is_stable():
    outputs = {"zz": ["/sum", "/z"], "aa": ["/sum"], "mm": ["/sum", "/m"]}
    order = check_output_collisions(outputs, mode="1.x")
    assert order == {"/m": ["mm"], "/sum": ["aa", "mm", "zz"], "/z": ["zz"]}
    shuffled = dict(reversed(list(outputs.items())))
    assert check_output_collisions(shuffled, mode="1.x") == order
    by_job = check_output_collisions(outputs, mode="1.x", order=["zz", "mm", "aa"])
    assert by_job["/sum"] == ["zz", "mm", "aa"]


# ----------------------------------------------------------------------------- 1.x blocks


def test_block_kind():
    assert [block_kind(p) for p in ("/a.json", "/b.bin", "/c.txt", "/d")] == [
        "json",
        "bin",
        "line",
        "line",
    ]


def test_line_blocks_examples():
    data = b"aaa\nbb\ncccc\nd"
    assert list(blocks(data, size=7)) == [b"aaa\nbb\n", b"cccc\nd"]
    assert list(blocks(b"x" * 20 + b"\nyy\n", size=8)) == [b"x" * 20 + b"\n", b"yy\n"]
    assert list(blocks(b"", size=8)) == []
    assert list(blocks([b"aa", b"a\nb", b"b\n"], size=4)) == [b"aaa\n", b"bb\n"]


LINES = st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=30)


@FAST
@given(lines=LINES, trailing=st.booleans(), size=st.integers(1, 40), cuts=st.lists(st.integers(0, 500)))
def test_line_blocks_never_split_a_line(lines, trailing, size, cuts):
    data = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    out = list(blocks(chunked(data, cuts), "line", size=size))
    assert b"".join(out) == data
    for i, blk in enumerate(out):
        assert blk
        if i < len(out) - 1:
            assert blk.endswith(b"\n")
        if len(blk) > size:  # only a single line may exceed the block size
            assert blk.find(b"\n") in (-1, len(blk) - 1)
        if i < len(out) - 1 and len(blk) <= size:  # greedy: the next line did not fit
            nxt = out[i + 1]
            assert len(blk) + nxt.find(b"\n") + 1 > size or b"\n" not in nxt


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def parse_all(blob: bytes) -> list:
    text, dec, pos, out = blob.decode(), json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            return out
        value, pos = dec.raw_decode(text, pos)
        out.append(value)


@FAST
@given(
    values=st.lists(JSON_VALUES, max_size=10),
    indent=st.sampled_from([None, 2]),
    sep=st.sampled_from(["\n", " ", "", "\n\n  "]),
    size=st.integers(1, 120),
    cuts=st.lists(st.integers(0, 2000)),
)
def test_json_blocks_hold_whole_values(values, indent, sep, size, cuts):
    texts = [json.dumps(v, indent=indent, ensure_ascii=False) for v in values]
    if sep == "":  # values may abut only where a tokenizer can tell them apart
        sep = "\n"
    data = (sep.join(texts) + "\n").encode()
    out = list(blocks(chunked(data, cuts), "json", size=size))
    assert b"".join(out) == data
    per_block = [parse_all(b) for b in out]  # every block parses on its own: nothing split
    assert [v for vs in per_block for v in vs] == values
    for blk, vs in zip(out, per_block, strict=True):
        assert len(blk) <= size or len(vs) == 1


def test_json_blocks_pretty_printed_seed_example():
    data = b'{\n  "foo": "bar",\n  "bax": "baz"\n}\n{\n  "foo": "cat",\n  "bax": "dog"\n}\n'
    out = list(blocks(data, block_kind("/x.json"), size=40))
    k = data.index(b"}\n") + 2  # the newline after a value stays with it
    assert out == [data[:k], data[k:]]
    assert [json.loads(b) for b in out] == [{"foo": "bar", "bax": "baz"}, {"foo": "cat", "bax": "dog"}]
    tricky = b'{"a": "} \\" {"} [1, "]"] 7 "s\\\\" true'
    assert [parse_all(b) for b in blocks(tricky, "json", size=1)] == [
        [{"a": '} " {'}],
        [[1, "]"]],
        [7],
        ["s\\"],
        [True],
    ]


@pytest.mark.parametrize("bad", [b'{"a": 1', b"[1, 2}", b"]", b'"open'])
def test_json_blocks_reject_broken_data(bad):
    with pytest.raises(ValueError):
        list(blocks(bad, "json", size=4))


@FAST
@given(writes=st.lists(st.integers(0, 50), max_size=20), cuts=st.lists(st.integers(0, 2000)))
def test_bin_blocks_follow_writes(writes, cuts):
    data = bytes(i % 251 for i in range(sum(writes)))
    out = list(blocks(chunked(data, cuts), "bin", writes=writes))
    assert [len(b) for b in out] == [w for w in writes if w]
    assert b"".join(out) == data


def test_bin_blocks_errors():
    with pytest.raises(ValueError, match="write sizes"):
        blocks(b"abc", "bin")
    with pytest.raises(ValueError, match="add up"):
        blocks(b"abc", "bin", writes=[1, 1])
    with pytest.raises(ValueError):
        list(blocks(iter([b"ab"]), "bin", writes=[1, 2]))
    with pytest.raises(ValueError):
        list(blocks(iter([b"abcd"]), "bin", writes=[1, 2]))
    with pytest.raises(ValueError):
        blocks(b"x", "csv")


def test_block_streaming_is_lazy():
    def endless():
        while True:
            yield b"line\n" * 100

    it = blocks(endless(), size=1000)
    assert len(next(it)) == 1000 and len(next(it)) == 1000


# ----------------------------------------------------------------------------- 1.x partitions

SEED_REPO = {"/foo": [10], "/bar": [10], "/buzz/a": [5], "/buzz/b": [5]}


def test_partition_file_keeps_top_level_objects_together():
    shards = partition_1x(SEED_REPO, "FILE", 3)
    assert [[p.path for p in s] for s in shards] == [["/bar"], ["/buzz/a", "/buzz/b"], ["/foo"]]
    assert len(partition_1x(SEED_REPO, "FILE", 10)) == 3  # parallelism is an upper bound
    assert partition_1x(SEED_REPO, "FILE", 1) == [
        [Piece("/bar", 0, 10), Piece("/buzz/a", 0, 5), Piece("/buzz/b", 0, 5), Piece("/foo", 0, 10)]
    ]


def test_partition_repo_is_one_unit():
    assert partition_1x(SEED_REPO, "REPO", 4) == partition_1x(SEED_REPO, "FILE", 1)
    assert partition_1x({}, "REPO", 4) == [] and partition_1x({}, "BLOCK", 4) == []


def test_partition_block_splits_one_file_across_workers():
    shards = partition_1x({"/big": [8] * 8}, "BLOCK", 4)
    assert shards == [[Piece("/big", 16 * i, 16)] for i in range(4)]
    diff_only = [Piece("/big", 64, 8), Piece("/big", 72, 8)]  # e.g. the blocks a commit appended
    assert partition_1x(diff_only, "BLOCK", 1) == [[Piece("/big", 64, 16)]]
    with pytest.raises(ValueError):
        partition_1x(SEED_REPO, "LINE", 2)


@FAST
@given(
    files=st.dictionaries(
        st.sampled_from(["/a", "/b", "/c/x", "/c/y", "/d/e/f", "/g", "/h"]),
        st.lists(st.integers(0, 100), min_size=1, max_size=5),
        min_size=1,
    ),
    partition=st.sampled_from(["BLOCK", "FILE", "REPO"]),
    parallelism=st.integers(1, 12),
)
def test_partition_properties(files, partition, parallelism):
    shards = partition_1x(files, partition, parallelism)
    tops = {"/" + p.split("/")[1] for p in files}
    units = {"BLOCK": sum(len(b) for b in files.values()), "FILE": len(tops), "REPO": 1}[partition]
    assert len(shards) == min(parallelism, units) and all(shards)
    covered = Counter()
    for s in shards:
        for p in s:
            for off in range(p.offset, p.offset + p.length):
                covered[(p.path, off)] += 1
    assert covered == Counter({(f, o): 1 for f, b in files.items() for o in range(sum(b))})
    if partition == "FILE":
        owner = {}
        for i, s in enumerate(shards):
            for p in s:
                assert owner.setdefault("/" + p.path.split("/")[1], i) == i
