"""``input.pfs.lazy``: inputs served through the worker's FUSE view, end to end.

A real daemon, real shim workers with their real FUSE mount, real pipelines.
The bytes a unit read from the daemon come from the worker's own count,
which it writes into the job's logs ("lazy inputs (...): N bytes read from
the daemon ...").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pachctl.client import Client
from pfsfuse.mount import mount_device
from shim.lazyfs import MOUNT_DIR
from tests.conftest import wait_for
from tests.mounting import requires_fuse
from tests.ppshelp import (
    Pachy,
    commit_files,
    flush_ok,
    lazy_bytes,
    outputs,
    pachy_fixtures,
    pfs,
    processes,
    sparse_file,
    spec,
    wait_jobs,
)

pytestmark = [requires_fuse, pytest.mark.skipif(os.geteuid() != 0, reason="workers sandbox user code as root")]

px, c = pachy_fixtures("pps-lazy")

GIB = 1 << 30
MIB = 1 << 20
OFFSET = 600 * MIB + 12345  # not block aligned on purpose


def lazy_mounts(px: Pachy) -> list[str]:
    """The workers' FUSE views under the daemon's home (live or dead)."""
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "fuse.pachy-lazy" in line and str(px.home) in line]


def big_sparse_file(px: Pachy, marker: bytes) -> Path:
    """1 GiB of zeros with ``marker`` written at OFFSET."""
    return sparse_file(px.work / "big.bin", GIB, OFFSET, marker)


def test_a_datum_reading_1_mib_of_a_1_gib_lazy_input_reads_at_most_2_mib(px: Pachy, c: Client) -> None:
    marker = os.urandom(MIB)
    c.create_repo("big")
    c.put_file("big", "master", "/g/big.bin", big_sparse_file(px, marker), new_commit=True)
    script = (f"dd if=/pfs/big/g/big.bin of=/pfs/out/piece bs={MIB} iflag=skip_bytes,count_bytes "
              f"skip={OFFSET} count={MIB} && stat -c %s /pfs/big/g/big.bin > /pfs/out/size")
    (created,) = c.create_pipeline(spec("bigread", pfs("big", "/", lazy=True), script))
    assert "lazy" not in str(created.notes)  # live here: no "inert" note at create time
    flush_ok(c, "big", "master")
    out = outputs(c, "bigread")
    assert out["piece"] == marker
    assert out["size"] == f"{GIB}\n".encode()
    (got,) = lazy_bytes(c, "bigread")
    assert MIB <= got <= 2 * MIB, got


def test_lazy_listing_matches_the_copied_one_and_writes_are_refused(px: Pachy, c: Client) -> None:
    files = {"a/1.txt": "one\n", "a/b/2.txt": "two\n", "a/b/c/3.txt": "three\n", "top.txt": "top\n",
             "a/empty": ""}
    c.create_repo("tree")
    commit_files(c, "tree", files)
    listing = ("cd /pfs/tree && find . | sort > /pfs/out/find && find . -type f -printf '%p %s\\n' | sort > "
               "/pfs/out/sizes && ls -R . > /pfs/out/ls && cat a/b/c/3.txt > /pfs/out/cat; "
               "if { echo x > /pfs/tree/top.txt; } 2>/pfs/out/err1; then echo wrote >> /pfs/out/err1; fi; "
               "if mkdir /pfs/tree/new 2>/pfs/out/err2; then echo made >> /pfs/out/err2; fi; true")
    c.create_pipeline(spec("lazylist", pfs("tree", "/", lazy=True), listing))
    c.create_pipeline(spec("copylist", pfs("tree", "/"), listing))
    flush_ok(c, "tree", "master")
    lazy, copied = outputs(c, "lazylist"), outputs(c, "copylist")
    assert lazy["find"] == copied["find"]
    assert b"./a/b/c/3.txt" in lazy["find"]
    assert lazy["cat"] == b"three\n"
    assert lazy["sizes"] == copied["sizes"] and b"./a/b/c/3.txt 6\n" in lazy["sizes"]
    assert lazy["ls"] == copied["ls"]
    for err in ("err1", "err2"):
        assert b"Read-only file system" in lazy[err], lazy[err]


def test_glob_with_several_datums_reuses_one_mount_and_mixes_with_copied_inputs(px: Pachy, c: Client) -> None:
    c.create_repo("many")
    c.create_repo("side")
    commit_files(c, "many", {f"f{i}": f"datum {i}\n" for i in range(6)})
    commit_files(c, "side", {"conf": "k=v\n"})
    script = ("for f in /pfs/many/*; do cat $f /pfs/side/conf > /pfs/out/$(basename $f); done; "
              "grep ' /pfs/many ' /proc/self/mountinfo | awk '{print $3}' >> /pfs/out/$(basename /pfs/many/*).dev")
    inp = {"cross": [pfs("many", "/*", lazy=True), pfs("side", "/")]}
    c.create_pipeline(spec("manyread", inp, script))
    flush_ok(c, "many", "master")
    out = outputs(c, "manyread")
    for i in range(6):
        assert out[f"f{i}"] == f"datum {i}\nk=v\n".encode()
    devices = {v for k, v in out.items() if k.endswith(".dev")}
    assert len(devices) == 1, devices  # every datum's /pfs/many: the same FUSE connection
    assert len(lazy_bytes(c, "manyread")) == 6
    # The worker's mount is under its scratch, and only one.
    mounts = lazy_mounts(px)
    assert len(mounts) == 1 and mounts[0].endswith("/" + MOUNT_DIR), mounts
    assert mount_device(mounts[0]) == devices.pop().decode().strip()


def test_1x_lazy_input_shows_only_the_new_bytes_and_prev_is_unaffected(px: Pachy, c: Client) -> None:
    c.create_repo("sales")
    spec1x = {"pipeline": {"name": "tally"}, "parallelism": "1",
              "transform": {"cmd": ["sh"], "stdin": ["cat /pfs/sales/log >> /pfs/out/all",
                                                     "cat /pfs/prev/all 2>/dev/null | wc -l > /pfs/out/before"]},
              "inputs": [{"repo": {"name": "sales"}, "method": "map", "lazy": True}]}  # fmt: skip
    c.create_pipeline(spec1x)
    first = c.put_file("sales", "master", "/log", b"apple 1\nbanana 2\n", new_commit=True).commit.id
    flush_ok(c, "sales", first)
    second = c.put_file("sales", "master", "/log", b"orange 3\n", new_commit=True).commit.id  # appended
    flush_ok(c, "sales", second)
    out = outputs(c, "tally")
    assert out["all"] == b"apple 1\nbanana 2\norange 3\n"  # prev's copy plus only the new piece
    assert out["before"].strip() == b"2"
    assert len(lazy_bytes(c, "tally")) == 2


def test_a_worker_killed_with_its_view_up_leaves_no_dead_mount(px: Pachy, c: Client) -> None:
    c.create_repo("slow")
    commit_files(c, "slow", {"f": "x\n"})
    # The first try hangs (until its worker is killed); the retry on a new worker passes.
    c.create_pipeline(spec("slowread", pfs("slow", "/", lazy=True),
                           "cat /pfs/slow/f > /pfs/out/f; [ -e /tmp/pachy-lazy-test-retry ] || "
                           "{ touch /tmp/pachy-lazy-test-retry; sleep 1000.41; }"))
    try:
        (pid,) = wait_for(lambda: processes("sleep", "1000.41"), 30, "the first try to hang")
        (mount,) = wait_for(lambda: lazy_mounts(px), 10, "the worker's view")
        (worker,) = px.worker_pids("slowread")
        os.kill(worker, 9)
        wait_for(lambda: mount not in lazy_mounts(px), 30, "the dead view to be detached")
        (job,) = wait_jobs(c, "slowread", 1, timeout=60)
        assert job.state == "success", job.reason
        assert outputs(c, "slowread") == {"f": b"x\n"}
    finally:
        if os.path.exists("/tmp/pachy-lazy-test-retry"):
            os.unlink("/tmp/pachy-lazy-test-retry")
