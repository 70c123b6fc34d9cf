"""Pipelines end to end, as a user runs them: a real daemon, real shim workers, pachctl
as a subprocess, the Python client, and the FUSE mount.

One daemon is shared by the module (each test its own repos and pipelines;
every pipeline is deleted after each test). Covered: the 1.x fruit stand
(docs ch. 3) through the CLI and then through the mount; every 2.x input type
(pfs globs, cross, union, join and outer join, group) and the environment user
code sees; incremental processing (skipped datums, modified and deleted
inputs, chunk_spec), 2.x output collisions, 1.x map with parallelism 2;
provenance along a chain of pipelines, flush-commit, and delete-repo rules;
commits queued behind a running job, history (2.x: the head, 1.x: every
commit), inputs on another branch, and the 1.x update-pipeline.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

from pachctl.client import Client
from tests.conftest import wait_for
from tests.mounting import detach, mounted, no_mount_left_behind, requires_fuse  # noqa: F401
from tests.ppshelp import (
    Pachy,
    commit_files,
    flush,
    flush_ok,
    jobs,
    outputs,
    pachy_fixtures,
    pfs,
    spec,
    table_rows,
    wait_jobs,
)

ROOT = Path(__file__).resolve().parent.parent
FRUIT_STAND = ROOT / "examples" / "fruit_stand" / "pipeline.json"
FRUITS = ("apple", "banana", "orange")


px, c = pachy_fixtures("pps-e2e")


# -- the fruit stand (1.x docs ch. 3) --------------------------------------------------


def _sales(rng: random.Random, n: int) -> bytes:
    return b"".join(f"{rng.choice(FRUITS)}\t{rng.randint(1, 99)}\n".encode() for _ in range(n))


def _totals(*sets: bytes) -> dict[str, int]:
    out: Counter[str] = Counter()
    for data in sets:
        for line in data.decode().splitlines():
            fruit, count = line.split("\t")
            out[fruit] += int(count)
    return dict(out)


def _row(res, first: str) -> list[str]:
    rows = [r for r in table_rows(res)[1:] if r[0] == first]
    assert len(rows) == 1, res.text
    return rows[0]


@requires_fuse
def test_fruit_stand_through_the_cli_and_the_mount(px: Pachy, c: Client, tmp_path: Path) -> None:
    rng = random.Random(20240601)
    set1, set2 = _sales(rng, 400), _sales(rng, 250)
    f1, f2 = px.write("fruit/set1.txt", set1), px.write("fruit/set2.txt", set2)

    px("create-repo", "data")
    px("put-file", "data", "master", "sales", "-c", "-f", str(f1))
    px("create-pipeline", "-f", str(FRUIT_STAND))
    flushed = px("flush-commit", "data/master")
    assert {r[1].split("/")[0] for r in table_rows(flushed)[1:]} == {"filter", "sum"}, flushed.text
    want = _totals(set1)
    for fruit in FRUITS:
        assert px("get-file", "sum", "master", fruit).text == f"{want[fruit]}\n"
        assert px("get-file", "filter", "master", fruit).out == b"".join(
            line + b"\n" for line in set1.splitlines() if line.startswith(fruit.encode()))

    px("put-file", "data", "master", "sales", "-c", "-f", str(f2))
    assert px("get-file", "data", "master", "sales").out == set1 + set2
    px("flush-commit", "data/master")
    want = _totals(set1, set2)
    for fruit in FRUITS:
        assert px("get-file", "sum", "master", fruit).text == f"{want[fruit]}\n"

    # list-job: two jobs per pipeline, all succeeded, each processed its one datum.
    listed = px("list-job")
    rows = table_rows(listed)
    assert rows[0] == ["ID", "OUTPUT", "STARTED", "DURATION", "STATE", "PROGRESS"]
    assert Counter(r[1].partition("@")[0] for r in rows[1:]) == {"filter": 2, "sum": 2}, listed.text
    assert {r[4] for r in rows[1:]} == {"success"}
    assert {r[5] for r in rows[1:]} == {"1 + 0 / 1"}

    # list-pipeline: NAME INPUT OUTPUT STATE CREATED; filter reads data with the map method.
    pipes = px("list-pipeline")
    assert table_rows(pipes)[0] == ["NAME", "INPUT", "OUTPUT", "STATE", "CREATED"]
    filt, sm = _row(pipes, "filter"), _row(pipes, "sum")
    assert filt[1:3] == ["data:map", "filter/master"]
    assert sm[1:3] == ["filter:FILE/DIFF", "sum/master"]
    assert filt[3].endswith("success") and sm[3].endswith("success")

    # inspect-commit: the sum commit's provenance names the data and filter commits.
    data_head = px("inspect-commit", "data", "master", "--json").json()["id"]
    filter_head = px("inspect-commit", "filter", "master", "--json").json()["id"]
    shown = px("inspect-commit", "sum", "master").text
    prov = next(line for line in shown.splitlines() if line.startswith("Provenance:"))
    assert f"data@{data_head}" in prov and f"filter@{filter_head}" in prov
    as_json = px("inspect-commit", "sum", "master", "--json").json()
    assert {p["commit"] for p in as_json["provenance"]} == {data_head, filter_head}

    # get-logs: the scheduler's lines for each job of filter.
    logs = px("get-logs", "-p", "filter").text
    filter_jobs = [r[0] for r in rows[1:] if r[1].startswith("filter@")]
    for job in filter_jobs:
        assert f"job {job} succeeded" in logs
    by_job = px("get-logs", "--job", filter_jobs[0]).text
    assert filter_jobs[0] in by_job and filter_jobs[1] not in by_job

    # The same results through the mount.
    mnt = tmp_path / "pfs"
    mnt.mkdir()
    px("mount", str(mnt))
    try:
        assert mounted(mnt)
        for fruit in FRUITS:
            assert (mnt / "sum" / "master" / fruit).read_text() == f"{want[fruit]}\n"
        assert (mnt / "data" / "master" / "sales").read_bytes() == set1 + set2
        assert sorted(p.name for p in (mnt / "sum" / "master").iterdir()) == sorted(FRUITS)
    finally:
        px("unmount", str(mnt), rc=None)
        detach(c, mnt)


# -- every 2.x input type ----------------------------------------------------------------


def test_pfs_globs(c: Client) -> None:
    c.create_repo("globs")
    files = {"d1/x": b"x\n", "d1/y": b"yy\n", "d2/z": b"zzz\n", "top": b"t\n"}
    head = commit_files(c, "globs", files)
    copy = 'for f in $(find "$globs" -type f); do cp "$f" /pfs/out/"$(echo "${f#/pfs/globs/}" | tr / _)"; done'
    c.create_pipeline([
        spec("glob-star", pfs("globs", "/*"), [copy, 'echo "$globs" > /pfs/out/"$(basename "$globs")".datum']),
        spec("glob-root", pfs("globs", "/"), ["find /pfs/globs -type f | sort > /pfs/out/listing",
                                              'echo "$globs" > /pfs/out/env']),
        spec("glob-deep", pfs("globs", "/*/*"), [copy]),
    ])
    flush_ok(c, "globs", head)

    star = outputs(c, "glob-star")
    assert {k: v for k, v in star.items() if not k.endswith(".datum")} == {
        "d1_x": b"x\n", "d1_y": b"yy\n", "d2_z": b"zzz\n", "top": b"t\n"}
    assert {k: v for k, v in star.items() if k.endswith(".datum")} == {
        "d1.datum": b"/pfs/globs/d1\n", "d2.datum": b"/pfs/globs/d2\n", "top.datum": b"/pfs/globs/top\n"}
    root = outputs(c, "glob-root")
    assert root["listing"] == b"/pfs/globs/d1/x\n/pfs/globs/d1/y\n/pfs/globs/d2/z\n/pfs/globs/top\n"
    assert os.path.normpath(root["env"].decode().strip()) == "/pfs/globs"
    assert outputs(c, "glob-deep") == {"d1_x": b"x\n", "d1_y": b"yy\n", "d2_z": b"zzz\n"}
    totals = {p: jobs(c, p)[-1].data_total for p in ("glob-star", "glob-root", "glob-deep")}
    assert totals == {"glob-star": 3, "glob-root": 1, "glob-deep": 3}


def test_cross_and_union(c: Client) -> None:
    c.create_repo("left")
    c.create_repo("right")
    lhead = commit_files(c, "left", {"a1": b"A1", "a2": b"A2"})
    rhead = commit_files(c, "right", {"b1": b"B1", "b2": b"B2", "b3": b"B3"})
    c.create_pipeline([
        spec("crossed", {"cross": [pfs("left"), pfs("right")]},
             'cat "$left" "$right" > /pfs/out/"$(basename "$left")-$(basename "$right")"'),
        spec("unioned", {"union": [pfs("left"), pfs("right")]},
             ['if [ -n "$left" ]; then cp "$left" /pfs/out/left_"$(basename "$left")"; fi',
              'if [ -n "$right" ]; then cp "$right" /pfs/out/right_"$(basename "$right")"; fi',
              'ls /pfs | grep -v out | tr "\\n" " " > /pfs/out/seen_"$(basename "$left$right")"']),
    ])
    flush_ok(c, "left", lhead)
    flush_ok(c, "right", rhead)

    crossed = outputs(c, "crossed")
    assert crossed == {f"a{i}-b{j}": f"A{i}B{j}".encode() for i in (1, 2) for j in (1, 2, 3)}
    unioned = outputs(c, "unioned")
    assert {k: v for k, v in unioned.items() if not k.startswith("seen_")} == {
        "left_a1": b"A1", "left_a2": b"A2", "right_b1": b"B1", "right_b2": b"B2", "right_b3": b"B3"}
    # A union datum shows only the input it came from.
    assert unioned["seen_a1"] == b"left " and unioned["seen_b2"] == b"right "
    assert jobs(c, "crossed")[-1].data_total == 6
    assert jobs(c, "unioned")[-1].data_total == 5


def test_join_inner_and_outer(c: Client) -> None:
    c.create_repo("jl")
    c.create_repo("jr")
    lhead = commit_files(c, "jl", {"1.txt": b"l1", "2.txt": b"l2", "3.txt": b"l3", "x_5.txt": b"l5"})
    rhead = commit_files(c, "jr", {"a_1.csv": b"r1", "b_2.csv": b"r2", "c_4.csv": b"r4"})
    both = 'cat "$jl" "$jr" 2>/dev/null > /pfs/out/"$(basename "$jl" .txt)+$(basename "$jr" .csv)"'
    left_only = '[ -n "$jl" ] && [ -z "$jr" ] && cp "$jl" /pfs/out/only_"$(basename "$jl")" || true'
    c.create_pipeline([
        spec("joined", {"join": [pfs("jl", "/(*).txt", join_on="$1"), pfs("jr", "/*_(*).csv", join_on="$1")]},
             both),
        spec("outer-left", {"join": [pfs("jl", "/(*).txt", join_on="$1", outer_join=True),
                                     pfs("jr", "/*_(*).csv", join_on="$1")]},
             ['if [ -n "$jr" ]; then ' + both + "; fi", left_only]),
        spec("outer-both", {"join": [pfs("jl", "/(*).txt", join_on="$1", outer_join=True),
                                     pfs("jr", "/*_(*).csv", join_on="$1", outer_join=True)]},
             'echo "${jl:-none} ${jr:-none}" > /pfs/out/"$(basename "${jl:-${jr}}")"'),
    ])
    flush_ok(c, "jl", lhead)
    flush_ok(c, "jr", rhead)

    assert outputs(c, "joined") == {"1+a_1": b"l1r1", "2+b_2": b"l2r2"}
    assert outputs(c, "outer-left") == {"1+a_1": b"l1r1", "2+b_2": b"l2r2", "only_3.txt": b"l3",
                                        "only_x_5.txt": b"l5"}
    assert outputs(c, "outer-both") == {
        "1.txt": b"/pfs/jl/1.txt /pfs/jr/a_1.csv\n", "2.txt": b"/pfs/jl/2.txt /pfs/jr/b_2.csv\n",
        "3.txt": b"/pfs/jl/3.txt none\n", "x_5.txt": b"/pfs/jl/x_5.txt none\n", "c_4.csv": b"none /pfs/jr/c_4.csv\n"}
    assert [jobs(c, p)[-1].data_total for p in ("joined", "outer-left", "outer-both")] == [2, 4, 5]


def test_group_by(c: Client) -> None:
    c.create_repo("grp")
    c.create_repo("grp2")
    head = commit_files(c, "grp", {"a_1.txt": b"1", "a_2.txt": b"2", "b_1.txt": b"3", "c_9.txt": b"4"})
    head2 = commit_files(c, "grp2", {"a.meta": b"ma", "b.meta": b"mb"})
    c.create_pipeline(spec(
        "grouped", {"group": [pfs("grp", "/(*)_*.txt", group_by="$1"), pfs("grp2", "/(*).meta", group_by="$1")]},
        ['files=$( (ls /pfs/grp; ls /pfs/grp2) 2>/dev/null | LC_ALL=C sort | tr "\\n" " ")',
         'printf "%s" "$files" > /pfs/out/"$(echo "$files" | cut -c1)"']))
    flush_ok(c, "grp", head)
    flush_ok(c, "grp2", head2)
    assert outputs(c, "grouped") == {"a": b"a.meta a_1.txt a_2.txt ", "b": b"b.meta b_1.txt ", "c": b"c_9.txt "}
    assert jobs(c, "grouped")[-1].data_total == 3


def test_environment_of_user_code(c: Client) -> None:
    c.create_repo("envin")
    head = commit_files(c, "envin", {"f1": b"1", "f2": b"2"})
    c.create_pipeline(spec(
        "envdump", pfs("envin"),
        'printf "%s\\n" "$envin" "$envin_COMMIT" "$PACH_JOB_ID" "$PACH_OUTPUT_COMMIT_ID" '
        '> /pfs/out/"$(basename "$envin")"'))
    res = flush_ok(c, "envin", head)
    (job,) = jobs(c, "envdump")
    assert job.state == "success"
    out_commit = res.commits[0]["id"]
    assert job.output_commit.commit == out_commit
    got = outputs(c, "envdump")
    for name in ("f1", "f2"):
        assert got[name].decode().splitlines() == [f"/pfs/envin/{name}", head, job.id, out_commit]


# -- incremental processing --------------------------------------------------------------


def test_incremental_skipping_modify_delete_and_chunks(px: Pachy, c: Client) -> None:
    c.create_repo("inc")
    files = {f"f{i:02d}": f"content {i}\n".encode() for i in range(20)}
    first = commit_files(c, "inc", files)
    c.create_pipeline(spec("inc-copy", pfs("inc"), 'cp "$inc" /pfs/out/'))
    # Code that copies whatever /pfs/inc shows works whether a process sees one datum or a chunk.
    c.create_pipeline(spec("inc-chunks", pfs("inc"), "cp -r /pfs/inc/. /pfs/out/", chunk_spec={"number": 5}))
    flush_ok(c, "inc", first)
    (j1,) = jobs(c, "inc-copy")
    assert (j1.data_processed, j1.data_skipped, j1.data_total) == (20, 0, 20)
    assert outputs(c, "inc-copy") == files
    assert outputs(c, "inc-chunks") == files

    # One more file: one datum processed, twenty skipped; all 21 outputs there.
    files["f20"] = b"content 20\n"
    second = commit_files(c, "inc", {"f20": files["f20"]})
    flush_ok(c, "inc", second)
    j2 = jobs(c, "inc-copy")[-1]
    assert (j2.data_processed, j2.data_skipped, j2.data_total) == (1, 20, 21)
    row = next(r for r in table_rows(px("list-job", "-p", "inc-copy"))[1:] if r[0] == j2.id)
    assert row[5] == "1 + 20 / 21"
    assert outputs(c, "inc-copy") == files
    assert outputs(c, "inc-chunks") == files

    # A modified file: one datum processed, its output replaced.
    files["f05"] = b"changed\n"
    third = commit_files(c, "inc", {"f05": files["f05"]})
    flush_ok(c, "inc", third)
    j3 = jobs(c, "inc-copy")[-1]
    assert (j3.data_processed, j3.data_skipped, j3.data_total) == (1, 20, 21)
    assert outputs(c, "inc-copy") == files
    assert outputs(c, "inc-chunks") == files

    # A deleted file: its output disappears, nothing else runs.
    del files["f07"]
    fourth = commit_files(c, "inc", {"f07": None})
    flush_ok(c, "inc", fourth)
    j4 = jobs(c, "inc-copy")[-1]
    assert (j4.data_processed, j4.data_skipped, j4.data_total) == (0, 20, 20)
    assert outputs(c, "inc-copy") == files
    assert outputs(c, "inc-chunks") == files
    assert [j.state for j in jobs(c, "inc-chunks")] == ["success"] * 4


def test_chunk_spec_runs_many_datums_per_process_start(c: Client) -> None:
    """pachy's chunk_spec: one process start sees the files of up to `number`
    datums under /pfs/<input> (DESIGN: "datums per process start", Pachyderm
    #1592/#1662); $<input> is then /pfs/<input> itself."""
    c.create_repo("chunked")
    files = {f"f{i:02d}": f"content {i}\n".encode() for i in range(12)}
    head = commit_files(c, "chunked", files)
    c.create_pipeline(spec("chunk-copy", pfs("chunked"),
                           'cp -r /pfs/chunked/. /pfs/out/ && ls /pfs/chunked > /pfs/out/"$(ls /pfs/chunked | head -1)".ls',
                           chunk_spec={"number": 5}))
    flush(c, "chunked", head)
    (job,) = jobs(c, "chunk-copy")
    assert job.state == "success", job.reason
    assert job.data_processed == 12
    out = outputs(c, "chunk-copy")
    assert {k: v for k, v in out.items() if not k.endswith(".ls")} == files
    listings = sorted(v.decode().split() for k, v in out.items() if k.endswith(".ls"))
    assert [len(x) for x in listings] == [2, 5, 5] or sorted(len(x) for x in listings) == [2, 5, 5]


def test_two_datums_writing_one_path_fail_the_job(c: Client) -> None:
    c.create_repo("clash")
    head = commit_files(c, "clash", {"a": b"1", "b": b"2", "c": b"3"})
    c.create_pipeline(spec("clasher", pfs("clash"),
                           'if [ "$(basename "$clash")" != c ]; then cat "$clash" > /pfs/out/same; fi; '
                           'cp "$clash" /pfs/out/own_"$(basename "$clash")"'))
    res = flush(c, "clash", head)
    assert [j.pipeline for j in res.failed_jobs] == ["clasher"]
    (job,) = jobs(c, "clasher")
    assert job.state == "failure"
    by_file = {d.files[0].path: d.id for d in c.list_datum(job.id)}
    assert by_file.keys() == {"/a", "/b", "/c"}
    assert by_file["/a"] in job.reason and by_file["/b"] in job.reason, job.reason
    assert by_file["/c"] not in job.reason
    assert "/same" in job.reason
    # No half-written output: the failed job's output commit is gone.
    assert c.list_commit("clasher") == []


def test_1x_map_with_parallelism_2_appends_in_a_stable_order(c: Client) -> None:
    c.create_repo("par")
    rng = random.Random(7)
    files = {f"part{i}": b"".join(f"{i}:{n}:{rng.random()}\n".encode() for n in range(rng.randint(5, 60)))
             for i in range(6)}
    first = commit_files(c, "par", files)
    c.create_pipeline({
        "pipeline": {"name": "par-cat"},
        "transform": {"cmd": ["sh"], "stdin": ["for f in $(ls /pfs/par | sort); do cat /pfs/par/$f >> /pfs/out/all; done"]},
        "parallelism": "2",
        "inputs": [{"repo": {"name": "par"}, "method": "map"}],
    })
    flush_ok(c, "par", first)
    (job,) = jobs(c, "par-cat")
    assert job.data_total == 2, job  # two shards, one per worker
    want = b"".join(files[k] for k in sorted(files))
    assert outputs(c, "par-cat") == {"all": want}
    assert c.inspect_pipeline("par-cat").workers == 2

    more = {"part6": b"6:a\n6:b\n", "part7": b"7:a\n"}
    second = commit_files(c, "par", more)
    flush_ok(c, "par", second)
    assert outputs(c, "par-cat") == {"all": want + more["part6"] + more["part7"]}
    assert [j.state for j in jobs(c, "par-cat")] == ["success", "success"]


# -- provenance, flush, delete-repo ---------------------------------------------------------


def test_chain_provenance_flush_and_delete_repo(px: Pachy, c: Client) -> None:
    px("create-repo", "chain")
    c.create_pipeline([
        spec("chain1", pfs("chain"), 'tr a-z A-Z < "$chain" > /pfs/out/"$(basename "$chain")"'),
        spec("chain2", pfs("chain1"), 'rev < "$chain1" > /pfs/out/"$(basename "$chain1")"'),
        spec("chain3", pfs("chain2", "/"), 'cat /pfs/chain2/* > /pfs/out/all'),
    ])
    head = commit_files(c, "chain", {"a": b"abc\n", "b": b"xyz\n"})
    res = px("flush-commit", f"chain@{head}", "--json").json()
    assert sorted(cm["repo"] for cm in res) == ["chain1", "chain2", "chain3"]
    assert all(cm["finished"] for cm in res)
    assert c.read_file("chain3", "master", "all") == b"CBA\nZYX\n"

    # The last commit's provenance holds every upstream commit.
    by_repo = {cm["repo"]: cm["id"] for cm in res}
    last = px("inspect-commit", "chain3", "master", "--json").json()
    assert last["id"] == by_repo["chain3"]
    prov = {p["repo"]: p["commit"] for p in last["provenance"]}
    assert prov == {"chain": head, "chain1": by_repo["chain1"], "chain2": by_repo["chain2"]}

    # wait-commit (2.x name) on a new commit returns its downstream commits too.
    head2 = commit_files(c, "chain", {"c": b"def\n"})
    waited = px("wait-commit", "chain", head2, "--json").json()
    assert {cm["repo"] for cm in waited} == {"chain1", "chain2", "chain3"}
    assert all(head2 in {p["commit"] for p in cm["provenance"]} for cm in waited)
    assert c.read_file("chain3", "master", "all") == b"CBA\nZYX\nFED\n"
    # Only some repos.
    only = px("flush-commit", "chain", head2, "-r", "chain2", "--json").json()
    assert [cm["repo"] for cm in only] == ["chain2"]

    # delete-repo is refused while a pipeline reads the repo.
    refused = px("delete-repo", "chain", rc=4)
    assert "chain1" in refused.err
    assert "chain" in [r["name"] for r in px("list-repo", "--json").json()]
    # ...and works once the pipelines are gone.
    for p in ("chain3", "chain2", "chain1"):
        px("delete-pipeline", p)
    px("delete-repo", "chain")
    names = [r["name"] for r in px("list-repo", "--json").json()]
    assert not {"chain", "chain1", "chain2", "chain3"} & set(names)

    # --force deletes a repo a pipeline still reads.
    px("create-repo", "forced")
    c.create_pipeline(spec("forced-reader", pfs("forced"), "true"))
    px("delete-repo", "forced", rc=4)
    px("delete-repo", "forced", "--force")
    assert "forced" not in [r["name"] for r in px("list-repo", "--json").json()]
    assert "forced-reader" in px("list-pipeline").text


def test_jobs_and_pipelines_listed_for_a_chain_through_the_cli(px: Pachy, c: Client) -> None:
    c.create_repo("lc")
    head = commit_files(c, "lc", {"x": b"1"})
    c.create_pipeline(spec("lc-copy", pfs("lc"), 'cp "$lc" /pfs/out/'))
    flush_ok(c, "lc", head)
    (job,) = wait_jobs(c, "lc-copy", 1)
    shown = px("inspect-job", job.id).text
    assert "State" in shown and "success" in shown and f"lc@{head}" in shown
    assert px("wait-job", job.id).rc == 0
    datums = table_rows(px("list-datum", job.id))
    assert datums[0] == ["ID", "STATE", "TIME", "FILES"]
    assert datums[1][1] == "success" and datums[1][3] == "lc:/x"
    assert px("list-job", "-i", f"lc@{head}", "--json").json()[0]["id"] == job.id
    assert px("list-job", "-o", f"lc-copy@{job.output_commit.commit}", "--json").json()[0]["id"] == job.id


# -- job order, history, branches, 1.x updates ------------------------------------------------


def test_commits_arriving_during_a_job_get_one_job_each_in_order(c: Client, tmp_path: Path) -> None:
    go = tmp_path / "go"
    c.create_repo("queued")
    h1 = commit_files(c, "queued", {"a": b"1"})
    c.create_pipeline(spec("queuer", pfs("queued"), [f"while [ ! -e {go} ]; do sleep 0.05; done",
                                                      'cp "$queued" /pfs/out/']))
    wait_for(lambda: [j.state for j in jobs(c, "queuer")] == ["running"], 30, "the first job to run")
    h2 = commit_files(c, "queued", {"b": b"2"})
    h3 = commit_files(c, "queued", {"a": None, "c": b"3"})
    go.touch()
    flush_ok(c, "queued", h3)
    js = wait_jobs(c, "queuer", 3)
    assert [j.input_commits[0].commit for j in js] == [h1, h2, h3]
    assert [(j.state, j.data_processed, j.data_skipped) for j in js] == [
        ("success", 1, 0), ("success", 1, 1), ("success", 1, 1)]
    assert [outputs(c, "queuer", j.output_commit.commit) for j in js] == [
        {"a": b"1"}, {"a": b"1", "b": b"2"}, {"b": b"2", "c": b"3"}]
    # Each input commit flushes to its own output commit.
    assert [flush_ok(c, "queued", h).commits[0]["id"] for h in (h1, h2, h3)] == [
        j.output_commit.commit for j in js]


def test_a_new_2x_pipeline_processes_the_head_a_1x_one_every_commit(c: Client) -> None:
    c.create_repo("hist")
    heads = [commit_files(c, "hist", {f"f{i}": f"{i}\n".encode()}) for i in range(3)]
    c.create_pipeline(spec("hist2", pfs("hist"), 'cp "$hist" /pfs/out/'))
    c.create_pipeline({"pipeline": {"name": "hist1"}, "inputs": [{"repo": {"name": "hist"}, "method": "map"}],
                       "transform": {"cmd": ["sh"], "stdin": ["cat /pfs/hist/* >> /pfs/out/all"]}})
    flush_ok(c, "hist", heads[-1])
    wait_jobs(c, "hist1", 3)
    assert [j.input_commits[0].commit for j in jobs(c, "hist2")] == [heads[-1]]
    assert [j.input_commits[0].commit for j in jobs(c, "hist1")] == heads
    assert outputs(c, "hist2") == {"f0": b"0\n", "f1": b"1\n", "f2": b"2\n"}
    assert outputs(c, "hist1") == {"all": b"0\n1\n2\n"}  # map: each job saw only what its commit added


def test_an_input_on_another_branch(c: Client) -> None:
    c.create_repo("br")
    commit_files(c, "br", {"m": b"on master"})
    dev = commit_files(c, "br", {"d": b"on dev"}, branch="dev")
    c.create_pipeline(spec("brp", pfs("br", branch="dev"), 'cp "$br" /pfs/out/'))
    flush_ok(c, "br", dev)
    assert c.inspect_pipeline("brp").input == "br@dev:/*"
    assert outputs(c, "brp") == {"d": b"on dev"}
    dev2 = commit_files(c, "br", {"d2": b"more"}, branch="dev")
    flush_ok(c, "br", dev2)
    assert outputs(c, "brp") == {"d": b"on dev", "d2": b"more"}
    assert [j.input_commits[0].commit for j in jobs(c, "brp")] == [dev, dev2]


def test_flush_of_a_commit_on_a_branch_no_pipeline_reads_returns_at_once(c: Client) -> None:
    c.create_repo("br2")
    dev = commit_files(c, "br2", {"d": b"on dev"}, branch="dev")
    c.create_pipeline(spec("br2p", pfs("br2", branch="dev"), 'cp "$br2" /pfs/out/'))
    flush_ok(c, "br2", dev)
    master = commit_files(c, "br2", {"m": b"on master"})
    res = flush(c, "br2", master, timeout=3)
    assert (res.commits, res.failed_jobs) == ([], [])


def _v1_spec(name: str, repo: str, tag: str) -> dict:
    return {"pipeline": {"name": name}, "inputs": [{"repo": {"name": repo}, "method": "map"}],
            "transform": {"cmd": ["sh"], "stdin": [f'for f in /pfs/{repo}/*; do echo "{tag} $(cat $f)"; done'
                                                   " >> /pfs/out/all"]}}


def test_1x_update_pipeline_archives_and_reprocesses(px: Pachy, c: Client) -> None:
    c.create_repo("up1")
    h1 = commit_files(c, "up1", {"a": b"1"})
    h2 = commit_files(c, "up1", {"b": b"2"})
    c.create_pipeline(_v1_spec("up1p", "up1", "v1"))
    flush_ok(c, "up1", h2)
    wait_jobs(c, "up1p", 2)
    before = [cm.id for cm in c.list_commit("up1p")]
    assert c.read_file("up1p", "master", "all") == b"v1 1\nv1 2\n"
    # 1.x update-pipeline: the old output is archived and every input commit runs again.
    px("update-pipeline", "-f", str(px.write("up1p.json", json.dumps(_v1_spec("up1p", "up1", "v2")))))
    js = wait_jobs(c, "up1p", 4)
    assert [j.state for j in js] == ["success"] * 4
    assert [j.input_commits[0].commit for j in js[2:]] == [h1, h2]
    assert c.read_file("up1p", "master", "all") == b"v2 1\nv2 2\n"
    shown = [cm.id for cm in c.list_commit("up1p")]
    assert not set(before) & set(shown) and len(shown) == 2
    archived = {cm.id for cm in c.list_commit("up1p", all=True) if cm.archived}
    assert archived == set(before)


def test_flush_after_a_1x_update_waits_for_the_reprocessed_output(px: Pachy, c: Client) -> None:
    c.create_repo("up2")
    head = commit_files(c, "up2", {"a": b"1"})
    c.create_pipeline(_v1_spec("up2p", "up2", "v1"))
    flush_ok(c, "up2", head)
    slow = _v1_spec("up2p", "up2", "v2")
    slow["transform"]["stdin"].insert(0, "sleep 0.5")
    px("update-pipeline", "-f", str(px.write("up2p.json", json.dumps(slow))))
    flushed = px("flush-commit", f"up2@{head}", "--json").json()
    assert [cm["archived"] for cm in flushed] == [False]
    assert px("get-file", "up2p", "master", "all").out == b"v2 1\n"


# -- bad input: clear errors, the right exit codes, nothing created ------------------------


def test_bad_specs_are_refused_with_their_json_path(px: Pachy, c: Client, tmp_path: Path) -> None:
    c.create_repo("bad-in")
    cases = [
        ('{"pipeline": {"name": "b1"}, "transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": "bad-in", '
         '"glob": 5}}}', 2, "input.pfs.glob"),
        ('{"pipeline": {"name": "b2"}, "transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": "bad-in", '
         '"glob": "/*"}}, "parallelism_spec": {"constant": -1}}', 2, "parallelism_spec.constant"),
        ('{"pipeline": {"name": "b3"}, "transform": {"cmd": ["true"]}, "inptu": {}}', 2, "inptu"),
        ('{"pipeline": {"name": "bad name!"}, "transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": '
         '"bad-in", "glob": "/*"}}}', 2, "pipeline.name"),
        ('{"pipeline": {"name": "b5"}, "transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": "nowhere", '
         '"glob": "/*"}}}', 3, "repo 'nowhere' not found"),
        ('{"pipeline": {"name": "b6"}, "transform": {"cmd": ["true"]},\n "input": {"pfs": {"repo": "bad-in",}}}',
         2, "line 2"),
    ]
    for text, rc, needle in cases:
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(text)
        res = px("create-pipeline", "-f", str(spec_file), rc=rc)
        assert res.err.startswith("error: ") and needle in res.err, (text, res.err)
    assert c.list_pipeline() == []
    left = {r.name for r in c.list_repo()} & {"b1", "b2", "b3", "b5", "b6"}
    assert not left  # no output repo was left behind
    px("create-pipeline", "-f", str(tmp_path / "missing.json"), rc=6)
    good = json.dumps(spec("good", pfs("bad-in"), "true"))
    px("create-pipeline", input=good.encode())
    assert "already exists" in px("create-pipeline", input=good.encode(), rc=4).err
    assert "not found" in px("inspect-job", "0123456789abcdef", rc=3).err
    assert "not found" in px("list-datum", "0123456789abcdef", rc=3).err


def test_delete_all_removes_pipelines_and_repos(px: Pachy, c: Client) -> None:
    c.create_repo("da-in")
    head = commit_files(c, "da-in", {"a": b"1"})
    c.create_pipeline(spec("da", pfs("da-in"), "cp /pfs/da-in/* /pfs/out/"))
    flush_ok(c, "da-in", head)
    px("delete-all")
    assert c.list_pipeline() == [] and c.list_repo() == []
    wait_for(lambda: not px.worker_pids("da"), 10, "the pipeline's workers to exit")
