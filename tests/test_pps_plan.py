"""Job planning against a real store, without workers: datums, units, skips, 1.x pieces."""

from __future__ import annotations

import json

from pps import datums as dm
from pps import jobs as jp
from pps.spec import parse_spec


def _commit(pfs, repo: str, files: dict[str, bytes], deletes: tuple[str, ...] = ()) -> str:
    info = pfs.start_commit(repo, "master")
    with pfs.write_session(repo, info.id) as ws:
        for path, data in files.items():
            ws.put_bytes(path, data)
        for path in deletes:
            ws.delete(path)
        ws.commit()
    pfs.finish_commit(repo, info.id)
    return info.id


def _v2(glob: str = "/*", **extra) -> object:
    return parse_spec({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                       "input": {"pfs": {"repo": "d", "glob": glob}}, **extra})


def test_v2_skips_unchanged_datums_and_drops_changed_units(pfs) -> None:
    pfs.create_repo("d")
    c1 = _commit(pfs, "d", {"a": b"1", "b": b"2", "c": b"3"})
    spec = _v2()
    lc = [jp.LeafCommit("d", "d", "master", c1)]
    first = jp.plan_v2(pfs, spec, "salt", lc, {})
    assert len(first.to_run) == 3 and not first.skipped and first.total == 3
    units = {u.unit_id: u.datums for u in first.to_run}
    c2 = _commit(pfs, "d", {"b": b"more", "e": b"5"}, deletes=("c",))
    second = jp.plan_v2(pfs, spec, "salt", [jp.LeafCommit("d", "d", "master", c2)], units)
    (skipped,) = second.skipped  # a
    assert [f["path"] for f in json.loads(skipped.files)] == ["/a"] and skipped.unit == skipped.datum
    assert {f.path for u in second.to_run for f in u.files} == {"/b", "/e"}
    assert len(second.dropped_units) == 2  # b (changed) and c (deleted)
    assert len(jp.plan_v2(pfs, spec, "other salt", lc, units).skipped) == 0


def test_skipped_rows_spill_to_disk_and_come_back_as_made() -> None:
    """A big plan's skipped rows leave memory past SPILL bytes; paths with tabs,
    newlines and non-ASCII come back exactly (their JSON escapes them)."""
    rows = [jp.Skipped(f"{i:032x}", f"{i // 3:032x}", json.dumps([{"path": f"/t\tab\nl-é-{i}"}]))
            for i in range(30_000)]
    spool = jp.SkippedRows(rows)
    assert spool._file._rolled  # on disk, not in memory
    assert len(spool) == 30_000 and list(spool) == rows and list(spool) == rows  # read twice
    spool.close()


def test_v2_chunk_spec_groups_datums_and_env(pfs) -> None:
    pfs.create_repo("d")
    c1 = _commit(pfs, "d", {f"f{i}": b"x" for i in range(7)})
    plan = jp.plan_v2(pfs, _v2(chunk_spec={"number": 3}), "s", [jp.LeafCommit("d", "d", "master", c1)], {})
    assert [len(u.datums) for u in plan.to_run] == [3, 3, 1]
    single = jp.plan_v2(pfs, _v2(), "s", [jp.LeafCommit("d", "d", "master", c1)], {}).to_run[0]
    assert single.env == {"d": "/pfs/d/f0", "d_COMMIT": c1}


def test_v1_diff_shows_appended_bytes_only(pfs) -> None:
    pfs.create_repo("d")
    _commit(pfs, "d", {"sales": b"apple\t1\n"})
    c2 = _commit(pfs, "d", {"sales": b"pear\t2\n"})  # put-file appends
    spec = parse_spec({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                       "inputs": [{"repo": {"name": "d"}, "method": "map"}]})
    plan = jp.plan_v1(pfs, spec, [jp.LeafCommit("d", "d", "master", c2)], trigger="d")
    (unit,) = plan.to_run
    assert [(f.path, f.offset, f.length) for f in unit.files] == [("/sales", 8, 7)]
    reduce = parse_spec({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                         "inputs": [{"repo": {"name": "d"}, "method": "reduce"}]})
    (unit,) = jp.plan_v1(pfs, reduce, [jp.LeafCommit("d", "d", "master", c2)], trigger="d").to_run
    assert [(f.offset, f.length) for f in unit.files] == [(0, 15)]


def test_v1_empty_diff_gives_no_job_unless_run_empty(pfs) -> None:
    pfs.create_repo("d")
    _commit(pfs, "d", {"a": b"1"})
    c2 = _commit(pfs, "d", {})
    spec = parse_spec({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                       "inputs": [{"repo": {"name": "d"}, "method": "map"}]})
    assert jp.plan_v1(pfs, spec, [jp.LeafCommit("d", "d", "master", c2)], trigger="d") is None


def test_block_partition_splits_big_files_at_line_boundaries(pfs) -> None:
    pfs.create_repo("d")
    lines = b"".join(f"line {i}\n".encode() for i in range(2000))
    c1 = _commit(pfs, "d", {"big.txt": lines, "w.bin": b"\x00" * 3000})
    lc = jp.LeafCommit("d", "d", "master", c1)
    pieces = [dm.Piece("/big.txt", 0, len(lines)), dm.Piece("/w.bin", 0, 3000)]
    out = jp.split_blocks(pfs, lc, pieces, 4)
    text = [p for p in out if p.path == "/big.txt"]
    assert len(text) >= 3 and sum(p.length for p in text) == len(lines)
    for p in text:
        _n, data = pfs.read_range("d", c1, p.path, p.offset, p.length)
        block = b"".join(data)
        assert block.endswith(b"\n") and block.startswith(b"line ")
    assert [p for p in out if p.path == "/w.bin"] == [dm.Piece("/w.bin", 0, 3000)]
