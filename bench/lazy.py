"""Lazy inputs benchmark: a datum that reads 1 MiB of a 1 GiB input, served through the
worker's FUSE view (``input.pfs.lazy: true``) vs copied into /pfs first (the default).

One run, one daemon, warm workers for both pipelines (a first small commit
starts them and makes the lazy worker's mount). The same file is then put
into the lazy pipeline's repo and, once that job is done, into the copying
one's, so the two never share the machine. User code
stamps the wall clock when it starts, when it has its first byte (4 KiB at
the offset), and when it has the 1 MiB; the client stamps the commit. Bytes
read from the daemon: the lazy worker's own count (its log line per unit);
the copy reads the whole file by construction (``shim.materialize``).

    .venv/bin/python -m bench.lazy              # 1 GiB input
    .venv/bin/python -m bench.lazy --size 256   # a smaller one (MiB), for a smoke run

``measure(work, size_mib)`` is what a wider bench (bench/containers) calls;
``add_rows(report, figures)`` puts its rows in that bench's table.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import statistics
import sys

from bench.ingest import BENCH, Daemon, Report, connect, in_scratch, log

MiB = 1 << 20
READ = MiB
TARGET_FIRST_BYTE = 0.050  # seconds (issue 10)
TARGET_BYTES = 2 * MiB


def script(offset: int) -> list[str]:
    """sh stdin: stamp start, first byte, 1 MiB read; write the piece."""
    dd = "dd if=/pfs/in/big.bin iflag=skip_bytes,count_bytes status=none"
    return [
        "s=$(date +%s.%N)",
        f"{dd} of=/pfs/out/first bs=4096 skip={offset} count=4096",
        "f=$(date +%s.%N)",
        f"{dd} of=/pfs/out/piece bs={MiB} skip={offset} count={READ}",
        "e=$(date +%s.%N)",
        'echo "$s $f $e" > /pfs/out/times',
    ]


def spec(name: str, repo: str, lazy: bool, offset: int) -> dict:
    return {"pipeline": {"name": name},
            "input": {"pfs": {"name": "in", "repo": repo, "glob": "/", "lazy": lazy}},
            "transform": {"cmd": ["sh"], "stdin": script(offset)}}  # fmt: skip


def big_file(path: pathlib.Path, size: int) -> None:
    """Random bytes (no zero runs the store could skip, nothing compressible)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def _outcome(c, pipeline: str, t_commit: float) -> dict:
    times = c.read_file(pipeline, "master", "/times").decode().split()
    start, first, done = (float(x) for x in times)
    lines = [line.message for line in c.get_logs(pipeline=pipeline) if not line.user]
    counted = [int(m.group(1)) for line in lines if (m := re.search(r"lazy inputs .*: (\d+) bytes read", line))]
    return {"commit_to_first_byte": first - t_commit, "commit_to_start": start - t_commit,
            "start_to_first_byte": first - start, "read_1mib": done - first,
            "lazy_bytes": counted[-1] if counted else None}  # fmt: skip


def _median(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    return out


def measure(work: pathlib.Path, size_mib: int = 1024, rounds: int = 3) -> dict:
    """Both pipelines against one daemon under ``work``; the figures (medians of
    ``rounds`` jobs each) as a dict."""
    size = size_mib * MiB
    offset = size // 2 + 12345  # in the middle, not block aligned
    src = work / "big.bin"
    log(f"writing {size_mib} MiB of random bytes")
    big_file(src, size)
    home = work / "home"
    daemon = Daemon(home, work / "mountd.log")
    try:
        with connect(home) as c:
            runs = (("lazy", "lazyin", True), ("copy", "copyin", False))
            for name, repo, lazy in runs:
                c.create_repo(repo)
                warm = c.put_file(repo, "master", "/big.bin", os.urandom(2 * MiB), new_commit=True).commit.id
                c.create_pipeline(spec(name, repo, lazy, offset))
                res = c.flush_commit([(repo, warm)], timeout=120)
                assert not res.failed_jobs, res.failed_jobs
            figures: dict[str, list[dict]] = {"lazy": [], "copy": []}
            with open(src, "rb") as f:
                f.seek(offset)
                data = f.read(READ)
            for name, repo, _ in runs:
                log(f"the big file to {repo} (pipeline {name})")
                c.put_file(repo, "master", "/big.bin", src, overwrite=True, new_commit=True)
                for n in range(rounds):
                    # A new file in the datum (glob /) makes it a new datum: it runs again.
                    commit = c.put_file(repo, "master", "/round", str(n), overwrite=True, new_commit=True).commit.id
                    t_commit = c.inspect_commit(repo, commit).finished  # the daemon's clock: this machine's
                    res = c.flush_commit([(repo, commit)], timeout=300)
                    assert not res.failed_jobs, res.failed_jobs
                    figures[name].append(_outcome(c, name, t_commit))
                    assert c.read_file(name, "master", "/piece") == data, f"{name}: wrong bytes"
            lazy, copy = (_median(figures[k]) for k in ("lazy", "copy"))
            copy["lazy_bytes"] = None
            copy["copied_bytes"] = size
            return {"size": size, "rounds": rounds, "lazy": lazy, "copy": copy, "each": figures}
    finally:
        daemon.stop()


def add_rows(rep: Report, f: dict) -> None:
    lazy, copy = f["lazy"], f["copy"]
    size = f["size"] // MiB

    def ms(x: float) -> str:
        return f"{x * 1e3:.1f} ms"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3g}x" if b else "-"

    first = lazy["commit_to_first_byte"]
    rep.add(f"lazy: commit -> first byte ({size} MiB input; medians of {f['rounds']} jobs)", ms(first))
    rep.add(f"copied: commit -> first byte ({size} MiB input)", ms(copy["commit_to_first_byte"]))
    rep.add("first byte, copied / lazy", ratio(copy["commit_to_first_byte"], first))
    start = lazy["start_to_first_byte"]
    rep.add("lazy: unit start -> first byte", ms(start), f"<= {TARGET_FIRST_BYTE * 1e3:.0f} ms",
            start <= TARGET_FIRST_BYTE)
    rep.add("copied: unit start -> first byte", ms(copy["start_to_first_byte"]))
    rep.add("lazy: commit -> unit start", ms(lazy["commit_to_start"]))
    rep.add("copied: commit -> unit start (the copy)", ms(copy["commit_to_start"]))
    rep.add("lazy: 1 MiB read after the first byte", ms(lazy["read_1mib"]))
    rep.add("copied: 1 MiB read after the first byte", ms(copy["read_1mib"]))
    got = lazy["lazy_bytes"]
    rep.add("lazy: bytes read from the daemon", f"{got / MiB:.2f} MiB" if got is not None else "?",
            f"<= {TARGET_BYTES // MiB} MiB", got is not None and got <= TARGET_BYTES)
    rep.add("copied: bytes read from the daemon", f"{copy['copied_bytes'] / MiB:.0f} MiB")
    if got:
        rep.add("bytes read, copied / lazy", ratio(copy["copied_bytes"], got))
    rep.raw["lazy"] = f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lazy", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1024, help="the input's size in MiB (default 1024)")
    p.add_argument("--rounds", type=int, default=3, help="jobs per pipeline; medians are shown (default 3)")
    p.add_argument("--json", metavar="OUT", help="the figures as JSON (default bench/out/lazy.json)")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent, on the disk to test")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    args.quick = args.size < 1024
    args.json = args.json or str(BENCH / "out" / "lazy.json")
    return in_scratch(args, "lazy-", lambda rep, work: add_rows(rep, measure(work, args.size, args.rounds)))


if __name__ == "__main__":
    sys.exit(main())
