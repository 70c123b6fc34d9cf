"""meta.sqlite bytes per file in a big repo: today's per-node zstd against sqlite-zstd.

    python -m bench.meta_size                       # 100,000 and 1,000,000 files (~8 min on 2 cores)
    python -m bench.meta_size --files 10000         # smoke (< 30 s)
    python -m bench.meta_size --json out.json --keep --dir /data/scratch

The sqlite-zstd rows need the `sqlean.py` and `sqlite-zstd-build` wheels
importable (e.g. a throwaway venv's site-packages on PYTHONPATH; neither is
a dependency of pachy). Without them those rows are skipped with a message.
See STORAGE.md ("Why not sqlite-zstd") for the figures and the decision.

For each size, one repo of N tiny distinct files (1,000 per directory, 100,000
per commit, as bench/ingest.py builds its 1M-file repo) is built with the PFS
engine. Its meta.sqlite is copied into one home per variant, the nodes table
rewritten there, then checkpointed and VACUUMed:

  per-node zstd-3   today's database as built
  per-node zstd-19  the same nodes recompressed at level 19 in Python
  plain nodes       per-node zstd off (what the node compression buys)
  sqlite-zstd-L     plain nodes in a rowid table (sqlite-zstd's maintenance
                    addresses rows by rowid), zstd_enable_transparent with one
                    dictionary for the table at level L, then
                    zstd_incremental_maintenance until it reports no work left
  zstd-3 + sqlite-zstd-3   today's compressed nodes compressed again
  what-if: integer pack ids   today's nodes, but each chunk row names its pack
                    by an integer id (a packs table) instead of its key; size only

Sizes: the file after VACUUM, and per table group from dbstat (nodes with
sqlite-zstd's own tables and indexes, chunks with its index, the rest).
Speed, the engine opened over each variant (sqlean with the extension loaded
where needed), variants interleaved over rounds, best of the rounds, ratios to
today's in the same run: inspect_file of 2,000 random paths and list_files of 10
directories (fresh engine: cold node cache), a scan of every tree entry, and a
one-file commit on top (start, put, finish). The machine is shared: only the
ratios mean anything.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from unittest import mock

import zstandard

from pfsfuse import meta
from pfsfuse import pfs as pfs_module
from pfsfuse.pfs import PFS

BENCH = pathlib.Path(__file__).resolve().parent
PER_DIR = 1000
PER_COMMIT = 100_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def file_path(i: int) -> str:
    return f"d{i // PER_DIR:04d}/f{i:07d}"


# ---- sqlite-zstd, when installed ------------------------------------------


def zstd_extension() -> tuple[object, str] | None:
    """(the sqlean module, path of libsqlite_zstd) or None when either is missing.

    The sqlite_zstd package is located, not imported: importing it prints its
    version to stdout."""
    try:
        import sqlean
    except ImportError:
        return None
    spec = importlib.util.find_spec("sqlite_zstd")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = sorted(pathlib.Path(spec.submodule_search_locations[0]).glob("libsqlite_zstd*"))
    if not libs:
        return None
    os.environ.setdefault("SQLITE_ZSTD_LOG", "error")  # else its INFO and WARN lines go to stderr
    return sqlean, str(libs[0])


class _SqleanWithZstd:
    """Stands in for the sqlite3 module inside pfsfuse.meta: connections come
    from sqlean (extension loading) with sqlite-zstd loaded."""

    def __init__(self, ext: tuple[object, str]) -> None:
        self.mod, self.lib = ext

    def connect(self, path: str, **kw):
        conn = self.mod.connect(path, **kw)
        conn.enable_load_extension(True)
        conn.load_extension(self.lib)
        conn.enable_load_extension(False)
        return conn


class PlainNodeStore(meta.SqliteNodeStore):
    """Nodes stored as they are (SQLite, or sqlite-zstd's view, compresses)."""

    def get_node(self, h: bytes) -> bytes:
        with self._lock:
            row = self._conn.execute("SELECT data FROM nodes WHERE hash=?", (h,)).fetchone()
            if row is None:
                raise KeyError(h)
            return row[0]

    def put_node(self, h: bytes, data: bytes) -> None:
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO nodes(hash, data) VALUES(?, ?)", (h, data))


# ---- variants ----------------------------------------------------------------


class Variant:
    def __init__(
        self, name: str, prepare: Callable[[pathlib.Path], None], plain: bool, zstd_ext: bool
    ) -> None:
        self.name = name
        self.prepare = prepare  # rewrites the nodes table of the copied meta.sqlite
        self.plain = plain  # the engine stores nodes without its own zstd
        self.zstd_ext = zstd_ext  # needs sqlean + sqlite-zstd to open
        self.speed = True  # False: a layout the engine cannot open (size only)
        self.home: pathlib.Path | None = None
        self.sizes: dict = {}
        self.times: dict[str, list[float]] = {}


def rewrite_nodes(db: pathlib.Path, fn: Callable[[bytes], bytes]) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    dec = zstandard.ZstdDecompressor()
    conn.execute("BEGIN")
    rows = conn.execute("SELECT hash, data FROM nodes").fetchall()
    conn.executemany(
        "UPDATE nodes SET data=? WHERE hash=?", [(fn(dec.decompress(d)), h) for h, d in rows]
    )
    conn.execute("COMMIT")
    conn.close()


def to_level(level: int) -> Callable[[pathlib.Path], None]:
    comp = zstandard.ZstdCompressor(level=level)
    return lambda db: rewrite_nodes(db, comp.compress)


def decompress_all(db: pathlib.Path) -> None:
    rewrite_nodes(db, lambda d: d)


def sqlite_zstd(ext, level: int, plain: bool) -> Callable[[pathlib.Path], None]:
    def prepare(db: pathlib.Path) -> None:
        if plain:
            decompress_all(db)
        conn = _SqleanWithZstd(ext).connect(str(db), isolation_level=None)
        conn.executescript(
            """
            BEGIN;
            CREATE TABLE nodes_rowid(hash BLOB PRIMARY KEY, data BLOB NOT NULL);
            INSERT INTO nodes_rowid SELECT hash, data FROM nodes;
            DROP TABLE nodes;
            ALTER TABLE nodes_rowid RENAME TO nodes;
            COMMIT;
            """
        )
        config = {"table": "nodes", "column": "data", "compression_level": level,
                  "dict_chooser": "'nodes'"}  # fmt: skip
        conn.execute("SELECT zstd_enable_transparent(?)", (json.dumps(config),))
        while conn.execute("SELECT zstd_incremental_maintenance(60, 1)").fetchone()[0]:
            pass
        # Below min_dict_size_bytes_for_training (5,000 bytes = 1% of the table)
        # sqlite-zstd trains no dictionary and leaves the rows as they are.
        left = conn.execute("SELECT count(*) FROM _nodes_zstd WHERE _data_dict IS NULL").fetchone()
        if left[0]:
            log(f"  sqlite-zstd left {left[0]:,} nodes uncompressed (too little data for a dictionary)")
        conn.close()

    return prepare


def pack_ids(db: pathlib.Path) -> None:
    """What-if, size only: chunk rows name their pack by an integer id instead of
    its 73-character key (held twice per chunk: in the row and in chunks_by_pack)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(
        """
        BEGIN;
        CREATE TABLE packs(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
        INSERT INTO packs(key) SELECT DISTINCT pack FROM chunks;
        CREATE TABLE chunks_by_id(hash BLOB PRIMARY KEY, pack INTEGER NOT NULL,
            offset INTEGER NOT NULL, stored INTEGER NOT NULL, size INTEGER NOT NULL,
            codec INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO chunks_by_id SELECT c.hash, p.id, c.offset, c.stored, c.size, c.codec
            FROM chunks c JOIN packs p ON p.key = c.pack;
        DROP TABLE chunks;
        ALTER TABLE chunks_by_id RENAME TO chunks;
        CREATE INDEX chunks_by_pack ON chunks(pack);
        COMMIT;
        """
    )
    conn.close()


def variants(ext) -> list[Variant]:
    out = [
        Variant("per-node zstd-3 (today)", lambda db: None, False, False),
        Variant("per-node zstd-19", to_level(19), False, False),
        Variant("plain nodes (no zstd)", decompress_all, True, False),
    ]
    if ext is not None:
        out += [
            Variant("sqlite-zstd-3, dictionary", sqlite_zstd(ext, 3, True), True, True),
            Variant("sqlite-zstd-19, dictionary", sqlite_zstd(ext, 19, True), True, True),
            Variant("per-node zstd-3 + sqlite-zstd-3", sqlite_zstd(ext, 3, False), False, True),
        ]
    what_if = Variant("what-if: integer pack ids in chunks", pack_ids, False, False)
    what_if.speed = False
    return [*out, what_if]


@contextlib.contextmanager
def open_engine(v: Variant, ext) -> Iterator[PFS]:
    with contextlib.ExitStack() as stack:
        if v.zstd_ext:
            stack.enter_context(mock.patch.object(meta, "sqlite3", _SqleanWithZstd(ext)))
        if v.plain:
            stack.enter_context(mock.patch.object(pfs_module, "SqliteNodeStore", PlainNodeStore))
        pfs = PFS(str(v.home))
        try:
            yield pfs
        finally:
            pfs.close()


def vacuum(db: pathlib.Path, ext, zstd_ext: bool) -> None:
    conn = (_SqleanWithZstd(ext) if zstd_ext else sqlite3).connect(str(db), isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()


def table_sizes(db: pathlib.Path) -> dict[str, int]:
    """Bytes of pages per group: nodes (with sqlite-zstd's tables), chunks, other."""
    conn = sqlite3.connect(db)
    groups = {"nodes": 0, "chunks": 0, "other": 0}
    rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    groups["by_name"] = dict(rows)
    for name, size in rows:
        if "nodes" in name or "zstd" in name:
            groups["nodes"] += size
        elif "chunks" in name or "packs" in name:
            groups["chunks"] += size
        else:
            groups["other"] += size
    conn.close()
    return groups


# ---- measurements -----------------------------------------------------------


def build(home: pathlib.Path, n: int) -> float:
    t0 = time.perf_counter()
    pfs = PFS(str(home))
    pfs.create_repo("big")
    for start in range(0, n, PER_COMMIT):
        c = pfs.start_commit("big", "master")
        with pfs.write_session("big", c.id) as s:
            for i in range(start, min(n, start + PER_COMMIT)):
                p = file_path(i)
                s.put_bytes(p, p.encode())  # tiny, distinct: one chunk each
            s.commit()
        pfs.finish_commit("big", c.id)
        log(f"  built {min(n, start + PER_COMMIT):,} files")
    pfs.close()
    return time.perf_counter() - t0


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_round(v: Variant, ext, n: int, rnd: int) -> None:
    rng = random.Random(rnd)
    paths = [file_path(rng.randrange(n)) for _ in range(2000)]
    dirs = [f"d{rng.randrange(max(1, n // PER_DIR)):04d}" for _ in range(10)]
    rec = v.times
    with open_engine(v, ext) as pfs:
        rec.setdefault("lookup", []).append(
            timed(lambda: [pfs.inspect_file("big", "master", p) for p in paths])
        )
    with open_engine(v, ext) as pfs:
        rec.setdefault("list", []).append(
            timed(lambda: [pfs.list_files("big", "master", d) for d in dirs])
        )
    with open_engine(v, ext) as pfs:
        root = pfs.root_of(pfs.resolve("big", "master"))

        def scan() -> None:
            if sum(1 for _ in pfs.tree.iter_range(root)) < n:
                raise RuntimeError(f"{v.name}: scan found fewer than {n} entries")

        rec.setdefault("scan", []).append(timed(scan))

        def small_commit() -> None:
            c = pfs.start_commit("big", "master")
            with pfs.write_session("big", c.id) as s:
                s.put_bytes(f"d0000/new-{rnd}-{time.time_ns()}", b"hello")
                s.commit()
            pfs.finish_commit("big", c.id)

        rec.setdefault("commit", []).extend(timed(small_commit) for _ in range(3))


def run_size(work: pathlib.Path, n: int, ext, rounds: int) -> dict:
    base = work / f"build-{n}"
    log(f"{n:,} files: building")
    build_s = build(base, n)
    vacuum(base / "meta.sqlite", ext, False)
    vs = variants(ext)
    for i, v in enumerate(vs):
        v.home = work / f"{n}-{i}"
        v.home.mkdir()
        os.symlink(base / "objects", v.home / "objects")
        db = v.home / "meta.sqlite"
        shutil.copyfile(base / "meta.sqlite", db)
        secs = timed(lambda v=v, db=db: v.prepare(db))
        vacuum(db, ext, v.zstd_ext)
        v.sizes = {"file": db.stat().st_size, **table_sizes(db), "prepare_s": secs}
        log(f"  {v.name}: {v.sizes['file'] / n:.1f} bytes/file (prepared in {secs:.1f} s)")
    for rnd in range(rounds):
        for v in vs:
            if v.speed:
                measure_round(v, ext, n, rnd)
        log(f"  speed round {rnd + 1}/{rounds} done")
    return {"files": n, "build_s": build_s, "variants": vs}


def report(results: list[dict], ext) -> str:
    lines = []
    for r in results:
        n, vs = r["files"], r["variants"]
        base = {k: min(t) for k, t in vs[0].times.items()}
        lines += [
            f"\n### {n:,} files ({n // PER_DIR:,} directories, {-(-n // PER_COMMIT)} commits; "
            f"built in {r['build_s']:.0f} s)\n",
            "| variant | meta.sqlite | bytes/file | nodes B/file | chunks B/file | other B/file "
            "| lookup | list | scan | 1-file commit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for v in vs:
            s = v.sizes
            med = {k: min(t) for k, t in v.times.items()}
            speed = " | ".join(
                "size only" if not v.speed
                else f"{med[k] * 1e3:.0f} ms" + ("" if v is vs[0] else f" ({med[k] / base[k]:.2f}x)")
                for k in ("lookup", "list", "scan", "commit")
            )  # fmt: skip
            lines.append(
                f"| {v.name} | {s['file'] / 1e6:.1f} MB | {s['file'] / n:.1f} | "
                f"{s['nodes'] / n:.1f} | {s['chunks'] / n:.1f} | {s['other'] / n:.1f} | {speed} |"
            )
    lines.append(
        "\nlookup: inspect_file x 2,000 random paths; list: list_files x 10 directories of "
        f"{PER_DIR:,}; scan: every tree entry; best of the rounds (the figure least disturbed "
        "by other load), (x): against today's in the same run."
    )
    if ext is None:
        lines.append(
            "\nsqlite-zstd rows skipped: `sqlean` and `sqlite_zstd` are not importable "
            "(pip install sqlean.py sqlite-zstd-build into a throwaway venv and put its "
            "site-packages on PYTHONPATH)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.meta_size", description=__doc__.splitlines()[0])
    p.add_argument("--files", default="100000,1000000", help="comma-separated repo sizes")
    p.add_argument("--rounds", type=int, default=3, help="speed rounds per variant")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--dir", default=str(BENCH / "out"), help="scratch parent")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    ext = zstd_extension()
    if ext is None:
        log("sqlean.py / sqlite-zstd-build not importable: measuring today's scheme only")
    os.makedirs(args.dir, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="meta-size-", dir=os.path.abspath(args.dir)))
    log(f"scratch: {work}")
    try:
        results = [run_size(work, int(n), ext, args.rounds) for n in args.files.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(report(results, ext))
    if args.json:
        raw = [{"files": r["files"], "build_s": r["build_s"],
                "variants": [{"name": v.name, "sizes": v.sizes, "times": v.times}
                             for v in r["variants"]]} for r in results]  # fmt: skip
        pathlib.Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
