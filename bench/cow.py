"""Copy-on-write benchmark (bench/README.md): appending one line to a 1 GiB stored file
through a writable mount. Prints one markdown table; exits 1 on a missed target.
"""

import argparse
import os
import pathlib
import sqlite3
import statistics
import sys
import time

from bench.ingest import BENCH, MiB, Report, in_scratch, log, write_file
from bench.mount import Pachy

REPEATS = 5


def chunk_rows(home: pathlib.Path) -> int:
    db = sqlite3.connect(f"file:{home / 'meta.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    finally:
        db.close()


def append(path: pathlib.Path, line: bytes, land: bool) -> float:
    """open(O_APPEND), write a line, (fsync: it lands,) close: seconds."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
        if land:
            os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def measure(p: Pachy, name: str) -> dict:
    """REPEATS appends landed by fsync (chunks counted after each), then REPEATS
    plain appends (close returns before landing) landed by finish-commit."""
    path = p.mnt / p.name / "master" / name
    landed, new_chunks = [], []
    for i in range(REPEATS):
        before = chunk_rows(p.home)
        landed.append(append(path, f"landed line {i}\n".encode(), land=True))
        new_chunks.append(chunk_rows(p.home) - before)
    before = chunk_rows(p.home)
    closed = [append(path, f"plain line {i}\n".encode(), land=False) for i in range(REPEATS)]
    p.client.finish_commit(p.name, p.client.inspect_commit(p.name, "master").id)
    return {
        "landed_ms": statistics.median(landed) * 1e3,
        "closed_ms": statistics.median(closed) * 1e3,
        "new_chunks": max(new_chunks),
        "new_chunks_plain": chunk_rows(p.home) - before,  # REPEATS appends, landed together
    }


def run(rep: Report, work: pathlib.Path, quick: bool) -> None:
    size = 64 * MiB if quick else 1 << 30
    big, small = work / "big.bin", work / "small.bin"
    write_file(big, size, text=False)
    write_file(small, 4 * MiB, text=False)

    def fill(client, repo: str) -> None:
        c = client.start_commit(repo, "master")
        client.put_file(repo, c.id, "big", big)
        client.put_file(repo, c.id, "small", small)
        client.finish_commit(repo, c.id)

    with Pachy(work, "cow", fill, write=True) as p:
        log(f"appending to {size // MiB} MiB and 4 MiB files")
        b = measure(p, "big")
        s = measure(p, "small")
        with open(p.mnt / "cow" / "master" / "big", "rb") as f:
            f.seek(size)
            tail = f.read()
        assert tail.count(b"\n") == 2 * REPEATS, tail
    label = f"{size // MiB} MiB" if quick else "1 GiB"
    rep.add(f"a) append 1 line to {label}, fsync, close (median of {REPEATS})", f"{b['landed_ms']:.1f} ms",
            "<= 100 ms", b["landed_ms"] <= 100)  # fmt: skip
    rep.add(f"a) new chunks stored per landed append to {label} (max)", str(b["new_chunks"]), "<= 1",
            b["new_chunks"] <= 1)  # fmt: skip
    rep.add(f"a) append 1 line to {label} and close (lands ~0.2 s later)", f"{b['closed_ms']:.1f} ms", "<= 100 ms",
            b["closed_ms"] <= 100)  # fmt: skip
    rep.add(f"a) new chunks for {REPEATS} plain appends (landed in one or a few batches)", str(b["new_chunks_plain"]))
    rep.add("a) same, 4 MiB file: landed / closed", f"{s['landed_ms']:.1f} / {s['closed_ms']:.1f} ms")
    rep.add(f"a) {label} / 4 MiB (landed append)", f"{b['landed_ms'] / s['landed_ms']:.2f}x", "<= 3x",
            b["landed_ms"] <= 3 * s["landed_ms"] + 20)  # fmt: skip
    rep.raw.update(big=b, small=s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cow", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 64 MiB file instead of 1 GiB")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent, on the disk to test")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    return in_scratch(args, "cow-", lambda rep, work: run(rep, work, args.quick))


if __name__ == "__main__":
    sys.exit(main())
