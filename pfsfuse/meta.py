"""The metadata database: one SQLite file in WAL mode, owned by mountd alone.

Tables:
  repos     name, created, description
  branches  (repo, name) -> head commit id
  commits   id, repo, branch, seq (the N of branch/N), parent, started,
            finished (NULL while open), root (tree root hash, set at finish),
            size (bytes of the commit's whole tree), archived, description,
            provenance (JSON), written (bytes of file content this commit
            wrote: see written.py; 0 while open)
  staging   (commit, tree key) -> new entry value, or NULL for a deletion:
            what an open commit changed on top of its parent's tree
  chunks    chunk hash -> (pack, offset, stored, size, codec)
  nodes     hash -> zstd(node bytes): tree nodes and large chunk lists,
            content-addressed and shared between commits
  pins      (owner, seq) -> (op, path, entry value): files stored but in no
            commit yet (a job's outputs waiting for its output commit);
            gc keeps their chunks
"""

from __future__ import annotations

import sqlite3
import threading

import zstandard

SCHEMA_VERSION = 2  # 2: commits.written

# Schema history (connect() brings an older store up to date when it opens it):
#   1  the first schema
#   2  commits.written; the commits already there get it from a tree diff,
#      once, when PFS opens the store (meta key 'written_backfill' marks that
#      as pending, so a crash mid-way redoes it on the next open)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS repos(
    name TEXT PRIMARY KEY,
    created REAL NOT NULL,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS branches(
    repo TEXT NOT NULL,
    name TEXT NOT NULL,
    head TEXT,
    PRIMARY KEY(repo, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits(
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    branch TEXT,
    seq INTEGER,
    parent TEXT,
    started REAL NOT NULL,
    finished REAL,
    root BLOB,
    size INTEGER NOT NULL DEFAULT 0,
    archived INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    provenance TEXT NOT NULL DEFAULT '[]',
    written INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS commits_by_branch ON commits(repo, branch, seq);
CREATE INDEX IF NOT EXISTS commits_by_parent ON commits(parent);
CREATE INDEX IF NOT EXISTS commits_by_repo ON commits(repo, started);
CREATE TABLE IF NOT EXISTS staging(
    commit_id TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB,
    PRIMARY KEY(commit_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks(
    hash BLOB PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    size INTEGER NOT NULL,
    codec INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS nodes(
    hash BLOB PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins(
    owner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    op TEXT NOT NULL,
    path TEXT NOT NULL,
    value BLOB,
    PRIMARY KEY(owner, seq)
) WITHOUT ROWID;
"""


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a finished commit survives power loss, not just a killed process.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    # 16 MiB page cache: the OS caches the file too; 64 MiB cost RSS and measured no faster
    # (bench/mountd_scale.py: 3,734 vs 3,571 round trips/s at 100 workers).
    conn.execute("PRAGMA cache_size=-16384")
    conn.executescript(_SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES('schema', ?)", (str(SCHEMA_VERSION),)
    )
    _migrate(conn)
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older pachy up to SCHEMA_VERSION, in one
    transaction per step (a crash leaves the old schema or the new one)."""
    version = int(conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"this store has schema {version}, newer than this pachy knows ({SCHEMA_VERSION}); "
            "upgrade pachy to open it"
        )
    if version < 2:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cols = {r[1] for r in conn.execute("PRAGMA table_info(commits)")}
            if "written" not in cols:
                conn.execute("ALTER TABLE commits ADD COLUMN written INTEGER NOT NULL DEFAULT 0")
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('written_backfill', 'pending')")
            conn.execute("UPDATE meta SET value='2' WHERE key='schema'")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def written_backfill_pending(conn: sqlite3.Connection) -> bool:
    """Whether the commits of an upgraded store still need their ``written`` (written.backfill)."""
    return conn.execute("SELECT 1 FROM meta WHERE key='written_backfill'").fetchone() is not None


class SqliteNodeStore:
    """Tree nodes in the `nodes` table, zstd-compressed.

    Nodes put during a write transaction become visible to readers only when
    that transaction commits, together with the commit that references them.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock):
        self._conn = conn
        self._lock = lock
        self._comp = zstandard.ZstdCompressor(level=3)
        self._dec = zstandard.ZstdDecompressor()

    def get_node(self, h: bytes) -> bytes:
        with self._lock:  # the decompressor is not thread-safe either
            row = self._conn.execute("SELECT data FROM nodes WHERE hash=?", (h,)).fetchone()
            if row is None:
                raise KeyError(h)
            return self._dec.decompress(row[0])

    def put_node(self, h: bytes, data: bytes) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO nodes(hash, data) VALUES(?, ?)", (h, self._comp.compress(data))
            )
