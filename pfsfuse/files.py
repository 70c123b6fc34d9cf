"""Files in commits: writing through sessions, reading, listing, globbing, diffs.

A ``WriteSession`` gathers any number of puts and deletes for one open
commit. Bytes are chunked, compressed and written to pack objects as they
stream in, outside any lock; ``commit()`` then records the chunk index rows
and the staged entries in one transaction. An interrupted session therefore
changes nothing that a reader can see (its packs are garbage for ``gc``).
"""

from __future__ import annotations

import errno
import fnmatch
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pfsfuse import entries, names
from pfsfuse.chunks import (
    CODEC_ZERO,
    ZERO_HASH,
    ChunkLocation,
    ChunkSink,
    StreamChunker,
    chunk_hash,
    read_chunks,
    zero_location,
    zeros,
)
from pfsfuse.entries import DIR, FILE, ChunkRef, Entry
from pfsfuse.errors import Conflict, InvalidArgument, NotFound
from pfsfuse.lastmod import last_commits

ROOT = Entry(DIR, 0, 0)


@dataclass
class FileInfo:
    path: str  # with a leading '/'
    type: str  # "file" or "dir"
    size: int
    mtime: float
    chunks: int = 0
    last_commit: str | None = None  # the ref of the commit that last modified it (lastmod.py)

    def to_dict(self) -> dict:
        return {"path": self.path, "type": self.type, "size": self.size, "mtime": self.mtime, "chunks": self.chunks,
                "last_commit": self.last_commit}


def _info(path: str, e: Entry, chunks: int = 0) -> FileInfo:
    return FileInfo("/" + path, e.type_name, e.size, e.mtime_ns / 1e9, chunks)


_INFLIGHT = threading.Lock()  # guards every PFS's inflight_packs counts


class _ChunkSession:
    """Bytes streamed into chunks and packs outside any lock, indexed at commit().

    Holds the writer gate from the first byte to commit() or close(), so gc
    never frees a chunk this session has counted on as already stored. A
    session closed without commit() deletes the packs it wrote at once (a
    full disk gets its space back now, not at the next gc), except any that
    another session also wrote (pack names are content hashes) or that the
    index uses."""

    def __init__(self, pfs):
        self.pfs = pfs
        self._gate = pfs.writer()
        self._gate.__enter__()
        self._open = True
        self._committed = False
        self.sink = ChunkSink(pfs.store, pfs.has_chunk, pfs.zstd_level)
        self._packs: set[str] = set()
        self.sink.packs.on_pack = self._on_pack
        self.files = 0
        self.bytes = 0

    def _on_pack(self, key: str) -> None:
        if key in self._packs:
            return
        self._packs.add(key)
        with _INFLIGHT:
            self.pfs.inflight_packs[key] += 1

    def close(self) -> None:
        """Release the session; without commit() what it wrote is deleted."""
        if not self._open:
            return
        self._open = False
        try:
            if not self._committed and self._packs:
                self._delete_packs()
        finally:
            with _INFLIGHT:
                for key in self._packs:
                    self.pfs.inflight_packs[key] -= 1
                    if self.pfs.inflight_packs[key] <= 0:
                        del self.pfs.inflight_packs[key]
            self._gate.__exit__(None, None, None)

    def _delete_packs(self) -> None:
        self.sink.packs.abandon()  # no write of ours may land after the delete
        for key in sorted(self._packs):
            with _INFLIGHT:
                shared = self.pfs.inflight_packs[key] > 1
            if shared or self.pfs.q1("SELECT 1 FROM chunks WHERE pack=? LIMIT 1", (key,)):
                continue
            self.pfs.store.delete(key)

    def _close_sink(self) -> list[ChunkLocation]:
        try:
            return self.sink.close()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _index(db, locations: list[ChunkLocation]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO chunks(hash, pack, offset, stored, size, codec) VALUES(?,?,?,?,?,?)",
            [(c.hash, c.pack, c.offset, c.stored, c.size, c.codec) for c in locations],
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WriteSession(_ChunkSession):
    """Puts and deletes for one open commit, landing all at once in ``commit()``."""

    def __init__(self, pfs, repo: str, ref: str):
        row = pfs.require_open(repo, ref)
        super().__init__(pfs)
        self.repo = repo
        self.ref = ref
        self.commit_id = row[0]
        self._ops: list[tuple[str, str, list[ChunkRef] | None, int, bool]] = []

    # Uploads through the API set this: a path a client names for a new file
    # must not hold control characters or end in '/' (names.check_new_path).
    # The mount and the pipelines keep POSIX's looser rule.
    strict_paths = False

    def _file_path(self, path: str) -> str:
        return names.check_new_path(path) if self.strict_paths else names.clean_path(path)

    def put_stream(self, path: str) -> StreamChunker:
        self._file_path(path)
        return self.sink.stream()

    def add(self, path: str, refs: list[ChunkRef], size: int, overwrite: bool = False) -> None:
        self._ops.append(("put", self._file_path(path), refs, size, overwrite))
        self.files += 1
        self.bytes += size

    def put_bytes(self, path: str, data: bytes, overwrite: bool = False) -> None:
        path = self._file_path(path)
        self.add(path, self.sink.add_bytes(data), len(data), overwrite)

    def mkdir(self, path: str) -> None:
        if self.strict_paths:  # a directory may be named with its trailing '/'
            names.check_new_path(path.rstrip("/") or path)
        self._ops.append(("mkdir", names.clean_path(path), None, 0, False))

    def delete(self, path: str) -> None:
        self._ops.append(("delete", names.clean_path(path), None, 0, False))

    def delete_if_present(self, path: str) -> None:
        self._ops.append(("discard", names.clean_path(path), None, 0, False))

    def move(self, src: str, dst: str, noreplace: bool = False) -> None:
        """rename(2): a file or a whole directory, replacing what POSIX allows."""
        self._ops.append(("move", names.clean_path(src), [names.clean_path(dst)], 0, noreplace))

    def touch(self, path: str, mtime_ns: int) -> None:
        self._ops.append(("touch", names.clean_path(path), None, mtime_ns, False))

    def commit(self) -> None:
        pfs = self.pfs
        locations = self._close_sink()
        try:
            with pfs.tx() as db:
                row = db.execute("SELECT finished, parent FROM commits WHERE id=?", (self.commit_id,)).fetchone()
                if row is None or row[0] is not None:
                    raise Conflict(f"commit '{self.ref}' in repo '{self.repo}' was finished or deleted meanwhile")
                self._index(db, locations)
                stager = _Stager(pfs, db, self.commit_id, pfs.root_of(pfs._row(self.commit_id)))
                now = time.time_ns()
                for op, path, refs, size, overwrite in self._ops:
                    if op == "put":
                        stager.put_file(path, refs or [], size, overwrite, now)
                    elif op == "mkdir":
                        stager.mkdir(path, now)
                    elif op == "move":
                        stager.move(path, refs[0], overwrite, now)
                    elif op == "touch":
                        stager.touch(path, size)
                    elif op == "discard":
                        if stager.current(path) is not None:
                            stager.delete(path)
                    else:
                        stager.delete(path)
            self._committed = True  # after the transaction: its rows now use our packs
        finally:
            self.close()


class NewCommitSession(WriteSession):
    """Puts and deletes for a commit that does not exist yet (``put-file -c``).

    The upload streams into packs first; ``commit()`` then starts a commit on
    the branch, stages everything and finishes it in one transaction
    (``PFS.commit_new``). Anything short of that -- the client going away
    mid-stream, a full disk, a bad path, the daemon killed -- leaves the
    branch as it was: no open commit blocks the next ``put-file -c``."""

    def __init__(self, pfs, repo: str, branch: str, description: str = ""):
        pfs.check_can_start(repo, branch)  # refuse before any byte is uploaded
        _ChunkSession.__init__(self, pfs)
        self.repo = repo
        self.ref = branch
        self.branch = branch
        self.description = description
        self.commit_id = ""
        self._ops = []
        self.finished = None  # the CommitInfo, once commit() succeeded

    def commit(self, wanted: Callable[[], bool] | None = None) -> None:
        """``wanted``: asked once more inside the transaction (the caller's
        client may have hung up meanwhile); False makes no commit."""
        try:
            self._close_sink()  # every pack durable before the database is locked

            def fill(commit_id: str) -> None:
                if wanted is not None and not wanted():
                    raise Conflict(f"the upload to {self.repo}@{self.branch} was abandoned; no commit was made")
                self.commit_id = self.ref = commit_id
                WriteSession.commit(self)

            self.finished = self.pfs.commit_new(self.repo, self.branch, fill, self.description)
        finally:
            self.close()


class PinSession(_ChunkSession):
    """Files stored but in no commit yet, pinned under an owner until unpinned.

    A job's unit outputs wait here until the job's output commit takes them:
    ``pinned(owner)`` gives the recorded operations back in order, gc keeps
    their chunks, and ``unpin`` drops them once a commit holds them (or the
    job failed). One session may record for several owners (set ``owner``
    between records); ``commit()`` lands everything in one transaction."""

    def __init__(self, pfs, owner: str = ""):
        super().__init__(pfs)
        self.owner = owner
        self._records: list[tuple[str, str, str, bytes | None]] = []

    def put_stream(self, path: str) -> StreamChunker:
        names.clean_path(path)
        return self.sink.stream()

    def add(self, path: str, refs: list[ChunkRef], size: int, op: str = "put") -> None:
        """``op`` "put" (the whole file) or "append" (bytes added to what it was)."""
        entry = Entry(FILE, size, time.time_ns(), list(refs))
        self._records.append((self.owner, op, names.clean_path(path), entries.encode(entry)))
        self.files += 1
        self.bytes += size

    def put_bytes(self, path: str, data: bytes, op: str = "put") -> None:
        self.add(path, self.sink.add_bytes(data), len(data), op)

    def mark(self, op: str, path: str) -> None:
        """A record with no content: "mkdir" or "delete"."""
        self._records.append((self.owner, op, names.clean_path(path), None))

    def commit(self) -> None:
        locations = self._close_sink()
        try:
            with self.pfs.tx() as db:
                self._index(db, locations)
                seqs: dict[str, int] = {}
                rows = []
                for owner, op, path, value in self._records:
                    if owner not in seqs:
                        q = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM pins WHERE owner=?", (owner,))
                        seqs[owner] = q.fetchone()[0]
                    rows.append((owner, seqs[owner], op, path, value))
                    seqs[owner] += 1
                db.executemany("INSERT INTO pins(owner, seq, op, path, value) VALUES(?,?,?,?,?)", rows)
            self._committed = True
        finally:
            self.close()


class _Stager:
    """Applies one session's operations to the staging table, inside its transaction."""

    def __init__(self, pfs, db, commit_id: str, base: bytes | None):
        self.pfs = pfs
        self.db = db
        self.cid = commit_id
        self.base = base
        self._dirs_ok: set[str] = set()

    def current(self, path: str) -> Entry | None:
        key = names.tree_key(path)
        row = self.db.execute("SELECT value FROM staging WHERE commit_id=? AND key=?", (self.cid, key)).fetchone()
        raw = row[0] if row is not None else self.pfs.tree.get(self.base, key)
        return entries.decode(raw) if raw is not None else None

    def _set(self, path: str, entry: Entry | None) -> None:
        self.db.execute(
            "INSERT INTO staging(commit_id, key, value) VALUES(?,?,?) "
            "ON CONFLICT(commit_id, key) DO UPDATE SET value=excluded.value",
            (self.cid, names.tree_key(path), entries.encode(entry) if entry is not None else None),
        )

    def _ensure_parents(self, path: str, now: int) -> None:
        for d in names.ancestors(path):
            if d in self._dirs_ok:
                continue
            e = self.current(d)
            if e is None:
                self._set(d, Entry(DIR, 0, now))
            elif not e.is_dir:
                raise Conflict(f"cannot create '/{path}': '/{d}' is a file")
            self._dirs_ok.add(d)

    def put_file(self, path: str, refs: list[ChunkRef], size: int, overwrite: bool, now: int) -> None:
        cur = self.current(path)
        if cur is not None and cur.is_dir:
            raise Conflict(f"cannot write '/{path}': it is a directory")
        self._ensure_parents(path, now)
        if cur is not None and not overwrite:
            refs = self.pfs.load_refs(cur) + refs
            size = cur.size + size
        entry = Entry(FILE, size, now)
        if len(refs) <= entries.INLINE_REFS:
            entry.refs = refs
        else:
            blob = entries.encode_ref_list(refs)
            h = chunk_hash(blob)
            self.pfs.nodes.put_node(h, blob)
            entry.list_ref = h
        self._set(path, entry)

    def put_entry(self, path: str, entry: Entry, now: int) -> None:
        """Set a file entry as it is (squash copies entries between commits)."""
        cur = self.current(path)
        if cur is not None and cur.is_dir:
            raise Conflict(f"cannot write '/{path}': it is a directory")
        self._ensure_parents(path, now)
        self._set(path, entry)

    def mkdir(self, path: str, now: int) -> None:
        cur = self.current(path)
        if cur is not None:
            if cur.is_dir:
                return
            raise Conflict(f"cannot create directory '/{path}': a file has that name")
        self._ensure_parents(path, now)
        self._set(path, Entry(DIR, 0, now))
        self._dirs_ok.add(path)

    def move(self, src: str, dst: str, noreplace: bool, now: int) -> None:
        cur = self.current(src)
        if cur is None:
            raise NotFound(f"file '/{src}' not found")
        if dst == src:
            return
        if dst.startswith(src + "/"):
            raise OSError(errno.EINVAL, f"cannot move '/{src}' into itself")
        staging = (self.db, self.cid)
        target = self.current(dst)
        if target is not None:
            if noreplace:
                raise OSError(errno.EEXIST, f"'/{dst}' exists")
            if cur.is_dir and not target.is_dir:
                raise OSError(errno.ENOTDIR, f"'/{dst}' is not a directory")
            if not cur.is_dir and target.is_dir:
                raise OSError(errno.EISDIR, f"'/{dst}' is a directory")
            if target.is_dir and next(iter(self.pfs._children(self.base, dst, staging)), None):
                raise OSError(errno.ENOTEMPTY, f"'/{dst}' is not empty")
            self.delete(dst)
        if cur.is_dir:
            subtree = list(self.pfs.walk_tree(self.base, src, staging))  # parents before children
            self.mkdir(dst, now)
            for sub, e in subtree:
                moved = dst + sub[len(src) :]
                if e.is_dir:
                    self.mkdir(moved, now)
                else:
                    self._set(moved, e)
        else:
            self.put_entry(dst, cur, now)
        self.delete(src)

    def touch(self, path: str, mtime_ns: int) -> None:
        cur = self.current(path)
        if cur is None:
            raise NotFound(f"file '/{path}' not found")
        if not cur.is_dir:  # directory times follow their contents
            cur.mtime_ns = mtime_ns
            self._set(path, cur)

    def delete(self, path: str) -> None:
        cur = self.current(path)
        if cur is None:
            raise NotFound(f"file '/{path}' not found")
        if cur.is_dir:
            for sub, _e in list(self.pfs.walk_tree(self.base, path, staging=(self.db, self.cid))):
                self._set(sub, None)
        self._set(path, None)
        self._dirs_ok.discard(path)


class FileOps:
    """Mixed into PFS: everything about files."""

    def has_chunk(self, digest: bytes) -> bool:
        return self.q1("SELECT 1 FROM chunks WHERE hash=?", (digest,)) is not None

    def load_refs(self, e: Entry) -> list[ChunkRef]:
        if e.refs is not None:
            return list(e.refs)
        if e.list_ref is None:
            return []
        return entries.decode_ref_list(self.nodes.get_node(e.list_ref))

    def locate(self, refs: Iterable[ChunkRef]) -> list[ChunkLocation]:
        out = []
        with self._lock:
            for digest, size in refs:
                if digest == ZERO_HASH:  # a hole: stored nowhere
                    out.append(zero_location(size))
                    continue
                row = self.db.execute(
                    "SELECT pack, offset, stored, size, codec FROM chunks WHERE hash=?", (digest,)
                ).fetchone()
                if row is None:
                    from pfsfuse.errors import Damaged

                    raise Damaged(f"chunk {digest.hex()[:12]} is missing from the chunk index; run 'pachctl fsck'")
                out.append(ChunkLocation(digest, *row))
        return out

    def write_session(self, repo: str, ref: str) -> WriteSession:
        return WriteSession(self, repo, ref)

    def new_commit_session(self, repo: str, branch: str, description: str = "") -> NewCommitSession:
        return NewCommitSession(self, repo, branch, description)

    def pin_session(self, owner: str = "") -> PinSession:
        return PinSession(self, owner)

    def pinned(self, owner: str) -> list[tuple[str, str, Entry | None]]:
        """(op, path, entry) records pinned under ``owner``, in the order written."""
        rows = self.q("SELECT op, path, value FROM pins WHERE owner=? ORDER BY seq", (owner,))
        return [(op, path, entries.decode(v) if v is not None else None) for op, path, v in rows]

    def unpin(self, owner_prefix: str, db=None) -> None:
        """Drop every pin whose owner starts with ``owner_prefix`` (in ``db``'s transaction if given)."""
        sql, args = "DELETE FROM pins WHERE owner>=? AND owner<?", (owner_prefix, owner_prefix + "\uffff")
        if db is not None:
            db.execute(sql, args)
        else:
            with self.tx() as tx:
                tx.execute(sql, args)

    # -- lookups ------------------------------------------------------------

    def _staged(self, cid: str, key: bytes) -> tuple[bool, bytes | None]:
        row = self.q1("SELECT value FROM staging WHERE commit_id=? AND key=?", (cid, key))
        return (row is not None, row[0] if row is not None else None)

    def lookup_row(self, row: tuple, path: str) -> Entry | None:
        if path == "":
            return Entry(DIR, row[8], int((row[6] or row[5]) * 1e9))
        key = names.tree_key(path)
        if row[6] is None:
            found, raw = self._staged(row[0], key)
            if found:
                return entries.decode(raw) if raw is not None else None
        raw = self.tree.get(self.root_of(row), key)
        return entries.decode(raw) if raw is not None else None

    def _require_entry(self, repo: str, row: tuple, path: str) -> Entry:
        e = self.lookup_row(row, path)
        if e is None:
            raise NotFound(f"file '/{path}' not found in {repo}@{_name(row)}")
        return e

    def inspect_file(self, repo: str, ref: str, path: str) -> FileInfo:
        path = names.clean_path(path, allow_root=True)
        row = self.resolve(repo, ref)
        e = self._require_entry(repo, row, path)
        info = _info(path, e, 0 if e.is_dir else len(self.load_refs(e)))
        info.last_commit = last_commits(self, row, [(path, e)])[0]
        return info

    def read_file(self, repo: str, ref: str, path: str) -> tuple[FileInfo, Iterator[bytes]]:
        """The file's info and a lazy iterator over its bytes, chunk by chunk."""
        path = names.clean_path(path)
        row = self.resolve(repo, ref)
        e = self._require_entry(repo, row, path)
        if e.is_dir:
            raise InvalidArgument(f"'/{path}' is a directory; use list-file")
        locations = self.locate(self.load_refs(e))
        return _info(path, e, len(locations)), read_chunks(self.store, locations)

    def read_range(
        self, repo: str, ref: str, path: str, offset: int = 0, length: int = -1, row: tuple | None = None
    ) -> tuple[int, Iterator[bytes]]:
        """Bytes [offset, offset+length) of a file (length -1: to the end) as a lazy
        iterator; chunks wholly before the range are skipped unread. ``row``: the
        commit's row, when the caller resolved ``ref`` already (many files of one commit)."""
        path = names.clean_path(path)
        row = row if row is not None else self.resolve(repo, ref)
        e = self._require_entry(repo, row, path)
        if e.is_dir:
            raise InvalidArgument(f"'/{path}' is a directory")
        offset = min(max(0, offset), e.size)
        end = e.size if length < 0 else min(e.size, offset + length)
        refs, pos, first = self.load_refs(e), 0, 0
        for i, (_h, size) in enumerate(refs):
            if pos + size > offset:
                first = i
                break
            pos += size
        else:
            first = len(refs)
        # Only the chunks the range covers are looked up: a worker reading 128 KiB
        # of a 1 GiB file must not pay an index lookup for every chunk after it.
        last, covered = first, pos
        while last < len(refs) and covered < end:
            covered += refs[last][1]
            last += 1

        def pieces() -> Iterator[bytes]:
            at = pos
            wanted = refs[first:last]
            for loc in self.locate(wanted):
                if loc.codec == CODEC_ZERO:  # only the zeros asked for, however long the hole
                    lo, hi = max(offset - at, 0), min(end - at, loc.size)
                    if hi > lo:
                        yield from zeros(hi - lo)
                    at += loc.size
                    if at >= end:
                        return
                    continue
                chunk = next(read_chunks(self.store, [loc]))
                lo, hi = max(offset - at, 0), min(end - at, len(chunk))
                if hi > lo:
                    yield chunk if (lo, hi) == (0, len(chunk)) else chunk[lo:hi]
                at += len(chunk)
                if at >= end:
                    return

        return end - offset, pieces()

    # -- listings -----------------------------------------------------------

    def _children(self, root: bytes | None, directory: str, staging=None) -> Iterator[tuple[str, Entry]]:
        """Immediate children of a directory, merging an open commit's staged rows."""
        prefix = names.dir_prefix(directory)
        base = self.tree.iter_prefix(root, prefix)
        if staging is None:
            for key, raw in base:
                yield names.key_path(key), entries.decode(raw)
            return
        db, cid = staging
        with self._lock:
            staged = db.execute(
                "SELECT key, value FROM staging WHERE commit_id=? AND key>=? AND key<? ORDER BY key",
                (cid, prefix, prefix + b"\xff"),
            ).fetchall()
        merged: dict[bytes, bytes | None] = dict(base)
        merged.update(staged)
        for key in sorted(merged):
            raw = merged[key]
            if raw is not None:
                yield names.key_path(key), entries.decode(raw)

    def walk_tree(self, root: bytes | None, directory: str, staging=None) -> Iterator[tuple[str, Entry]]:
        """Every entry below a directory, depth first, in name order."""
        for path, e in self._children(root, directory, staging):
            yield path, e
            if e.is_dir:
                yield from self.walk_tree(root, path, staging)

    def _staging_of(self, row: tuple):
        return (self.db, row[0]) if row[6] is None else None

    def list_files(self, repo: str, ref: str, path: str = "") -> list[FileInfo]:
        path = names.clean_path(path, allow_root=True)
        row = self.resolve(repo, ref)
        e = self._require_entry(repo, row, path)
        found = [(path, e)] if not e.is_dir else list(self._children(self.root_of(row), path, self._staging_of(row)))
        return self._with_last_commits(row, found)

    def _with_last_commits(self, row: tuple, found: list[tuple[str, Entry]]) -> list[FileInfo]:
        infos = [_info(p, e) for p, e in found]
        for info, ref in zip(infos, last_commits(self, row, found), strict=True):
            info.last_commit = ref
        return infos

    def glob_files(self, repo: str, ref: str, pattern: str) -> list[FileInfo]:
        names.check_glob(pattern)
        row = self.resolve(repo, ref)
        parts = [p for p in pattern.strip("/").split("/") if p] or [""]
        root, staging = self.root_of(row), self._staging_of(row)
        out: list[tuple[str, Entry]] = []

        def match(directory: str, i: int) -> None:
            if i == len(parts):
                return
            part = parts[i]
            if part == "**":
                match(directory, i + 1)  # zero directories
                for p, e in self._children(root, directory, staging):
                    if i + 1 == len(parts):
                        out.append((p, e))
                    if e.is_dir:
                        match(p, i)
                return
            rx = re.compile(fnmatch.translate(part))
            for p, e in self._children(root, directory, staging):
                name = p.rpartition("/")[2]
                if rx.match(name):
                    if i + 1 == len(parts):
                        out.append((p, e))
                    elif e.is_dir:
                        match(p, i + 1)

        if parts == [""]:
            return [FileInfo("/", "dir", row[8], 0)]
        match("", 0)
        seen: set[str] = set()
        return self._with_last_commits(row, [(p, e) for p, e in out if not (p in seen or seen.add(p))])

    def diff_files(self, repo: str, ref: str, old_ref: str | None = None) -> list[dict]:
        """What changed from ``old_ref`` (default: the parent) to ``ref``: files
        added, deleted or modified, in path order, without reading unchanged
        parts of either tree."""
        new = self.resolve(repo, ref)
        if new[6] is None:
            raise Conflict(f"commit '{ref}' in repo '{repo}' is still open; finish it to diff it")
        if old_ref is not None:
            old_root = self.resolve(repo, old_ref)[7]
        else:
            old_root = self._row(new[4])[7] if new[4] is not None else None
        out = []
        for key, a, b in self.tree.diff(old_root, new[7]):
            ea = entries.decode(a) if a is not None else None
            eb = entries.decode(b) if b is not None else None
            if (ea is None or ea.is_dir) and (eb is None or eb.is_dir):
                continue  # directories change with their files; report the files
            status = "added" if ea is None or ea.is_dir else "deleted" if eb is None or eb.is_dir else "modified"
            out.append(
                {
                    "path": "/" + names.key_path(key),
                    "status": status,
                    "old_size": ea.size if ea is not None and not ea.is_dir else None,
                    "new_size": eb.size if eb is not None and not eb.is_dir else None,
                }
            )
        return out

    def read_whole(self, repo: str, ref: str, path: str, limit: int) -> bytes | None:
        """Small files only: for text diffs. None when larger than ``limit``."""
        try:
            info, it = self.read_file(repo, ref, path)
        except NotFound:
            return b""
        if info.size > limit:
            return None
        return b"".join(it)


def _name(row: tuple) -> str:
    return f"{row[2]}/{row[3]}" if row[2] is not None else row[0]
