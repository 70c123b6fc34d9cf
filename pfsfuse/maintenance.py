"""Checking and collecting: fsck, gc, and squash (which rewrites staging).

Mark phase for both: every tree node reachable from a finished commit's
root or an open commit's staged entries, and every chunk those file entries
name. Shared subtrees are visited once, so the walk is O(distinct nodes),
not O(commits × tree size).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from blake3 import blake3

from pfsfuse import entries, names
from pfsfuse.btree import BTree, _Node
from pfsfuse.chunks import ZERO_HASH, ChunkLocation, PackWriter, chunk_hash, read_chunks
from pfsfuse.errors import Conflict, Damaged, PfsError
from pfsfuse.files import _Stager
from pfsfuse.objstore import ObjectMissing

REPACK_DEAD_FRACTION = 0.5


def walk_tree_nodes(
    tree: BTree, root: bytes | None, seen: set[bytes], verify: bool
) -> Iterator[tuple[bytes, list[tuple[bytes, bytes]] | None]]:
    """Nodes under ``root`` not in ``seen`` (which it extends): (hash, leaf
    items), with [] for internal nodes and None for a missing or corrupt node."""
    stack = [root] if root is not None else []
    while stack:
        h = stack.pop()
        if h in seen:
            continue
        seen.add(h)
        try:
            if verify:
                raw = tree.store.get_node(h)
                if blake3(raw).digest() != h:
                    yield h, None
                    continue
                node = _Node.decode(raw)
            else:
                node = tree._load(h)
        except (KeyError, ValueError):
            yield h, None
            continue
        if node.level == 0:
            yield h, list(zip(node.keys, node.vals, strict=True))
        else:
            yield h, []
            stack.extend(c for c in node.vals if c not in seen)


class Maintenance:
    """Mixed into PFS."""

    def _init_maintenance(self) -> None:
        self._writers = 0
        self._gc_running = False
        self._gate = threading.Condition()

    # -- writers and gc exclude each other -----------------------------------

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        """Held by each write session from its first byte to its commit, so gc
        never frees a chunk a session has counted on as already stored."""
        with self._gate:
            while self._gc_running:
                self._gate.wait()
            self._writers += 1
        try:
            yield
        finally:
            with self._gate:
                self._writers -= 1
                self._gate.notify_all()

    @contextlib.contextmanager
    def _exclusive(self, timeout: float = 60.0) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        with self._gate:
            while self._writers or self._gc_running:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Conflict("writes are in progress; run gc again when they finish")
                self._gate.wait(left)
            self._gc_running = True
        try:
            yield
        finally:
            with self._gate:
                self._gc_running = False
                self._gate.notify_all()

    # -- marking --------------------------------------------------------------

    def _roots(self) -> tuple[list[tuple[str, bytes]], list[bytes]]:
        finished = [(r[0], r[1]) for r in self.q("SELECT id, root FROM commits WHERE root IS NOT NULL")]
        staged = [r[0] for r in self.q("SELECT value FROM staging WHERE value IS NOT NULL")]
        staged += [r[0] for r in self.q("SELECT value FROM pins WHERE value IS NOT NULL")]
        return finished, staged

    def _mark(self, problems: list[str] | None) -> tuple[set[bytes], dict[bytes, int], int]:
        """Reachable node hashes and chunk hashes (with sizes). With ``problems``,
        also verify every node's hash and record what is missing or wrong."""
        nodes: set[bytes] = set()
        chunks: dict[bytes, int] = {}

        def take_entry(raw: bytes, where: str) -> None:
            e = entries.decode(raw)
            if e.is_dir:
                return
            if e.list_ref is not None:
                nodes.add(e.list_ref)
                try:
                    blob = self.nodes.get_node(e.list_ref)
                except KeyError:
                    if problems is not None:
                        problems.append(f"chunk list {e.list_ref.hex()[:12]} of {where} is missing")
                    return
                if problems is not None and chunk_hash(blob) != e.list_ref:
                    problems.append(f"chunk list {e.list_ref.hex()[:12]} of {where} does not match its hash")
            for digest, size in self.load_refs(e):
                if digest != ZERO_HASH:  # a hole: no chunk behind it
                    chunks[digest] = size

        finished, staged = self._roots()
        for cid, root in finished:
            for h, leaf in walk_tree_nodes(self.tree, root, nodes, verify=problems is not None):
                if leaf is None and problems is not None:
                    problems.append(f"tree node {h.hex()[:12]} of commit {cid} is missing or corrupt")
                    continue
                for key, raw in leaf or ():
                    take_entry(raw, f"/{names.key_path(key)} in commit {cid}")
        for raw in staged:
            take_entry(raw, "an open commit")
        # Files being written through a mount are built on stored chunks that
        # no entry may name any more (the file was landed again, or unlinked
        # while open): kept until the mount lets go of them.
        for held in list(self.held_chunks.values()):
            for digest in held:
                chunks.setdefault(digest, 0)
        return nodes, chunks, len(finished)

    # -- fsck -----------------------------------------------------------------

    def fsck(self) -> dict:
        problems: list[str] = []
        with self._lock:
            nodes, chunks, ncommits = self._mark(problems)
            index = {
                r[0]: ChunkLocation(r[0], r[1], r[2], r[3], r[4], r[5])
                for r in self.db.execute("SELECT hash, pack, offset, stored, size, codec FROM chunks")
            }
        located = []
        for digest in chunks:
            loc = index.get(digest)
            if loc is None:
                problems.append(f"chunk {digest.hex()[:12]} is referenced but not in the chunk index")
            else:
                located.append(loc)
        located.sort(key=lambda c: (c.pack, c.offset))
        for loc in located:
            try:
                for _ in read_chunks(self.store, [loc], verify=True):
                    pass
            except ObjectMissing:
                problems.append(f"pack '{loc.pack}' holding chunk {loc.hash.hex()[:12]} is missing")
            except (Damaged, PfsError) as exc:
                problems.append(str(exc))
            except Exception as exc:  # a corrupt zstd frame, say
                problems.append(f"chunk {loc.hash.hex()[:12]} in pack '{loc.pack}' cannot be read: {exc}")
        return {
            "ok": not problems,
            "commits": ncommits,
            "nodes": len(nodes),
            "chunks": len(chunks),
            "problems": problems[:1000],
        }

    # -- gc -------------------------------------------------------------------

    def gc(self) -> dict:
        report = {"packs_deleted": 0, "packs_rewritten": 0, "bytes_freed": 0, "chunks_freed": 0, "nodes_freed": 0}
        with self._exclusive(), self._lock:
            live_nodes, live_chunks, _ = self._mark(None)
            dead_nodes = [r[0] for r in self.db.execute("SELECT hash FROM nodes") if r[0] not in live_nodes]
            by_pack: dict[str, list[tuple]] = defaultdict(list)
            for row in self.db.execute("SELECT hash, pack, offset, stored, size, codec FROM chunks"):
                by_pack[row[1]].append(row)
            doomed_rows: list[bytes] = []
            moves: list[tuple[ChunkLocation, str]] = []
            doomed_packs: list[str] = []
            writer = PackWriter(self.store)
            for key in list(self.store.list("packs/")):
                if key in self.inflight_packs:
                    continue
                rows = by_pack.get(key, [])
                live = [r for r in rows if r[0] in live_chunks]
                dead = [r for r in rows if r[0] not in live_chunks]
                doomed_rows.extend(r[0] for r in dead)
                if not live:
                    doomed_packs.append(key)
                    continue
                dead_bytes = sum(r[3] for r in dead)
                total = sum(r[3] for r in rows)
                if total and dead_bytes / total > REPACK_DEAD_FRACTION:
                    for r in live:
                        stored = self.store.get_range(key, r[2], r[3])
                        writer.add(r[0], r[5], stored, r[4])
                    doomed_packs.append(key)
                    report["packs_rewritten"] += 1
            writer.flush()  # new packs are whole before any row points at them
            moves = [(loc, loc.pack) for loc in writer.written]
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("DELETE FROM nodes WHERE hash=?", [(h,) for h in dead_nodes])
                self.db.executemany("DELETE FROM chunks WHERE hash=?", [(h,) for h in doomed_rows])
                self.db.executemany(
                    "UPDATE chunks SET pack=?, offset=?, stored=? WHERE hash=?",
                    [(loc.pack, loc.offset, loc.stored, loc.hash) for loc, _ in moves],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            # Only now, with no row naming them, do the old packs go.
            for key in doomed_packs:
                try:
                    report["bytes_freed"] += self.store.size(key)
                except ObjectMissing:
                    continue
                self.store.delete(key)
                report["packs_deleted"] += 1
            report["bytes_freed"] -= writer.bytes_written
            report["chunks_freed"] = len(doomed_rows)
            report["nodes_freed"] = len(dead_nodes)
        return report

    # -- squash ---------------------------------------------------------------

    def squash_commits(self, repo: str, sources: list[str], to: str):
        """Apply the changes each source commit made (relative to its parent),
        in order, to the open commit ``to``."""
        target = self.require_open(repo, to)
        rows = [self.resolve(repo, s) for s in sources]
        for s, row in zip(sources, rows, strict=True):
            if row[6] is None:
                raise Conflict(f"commit '{s}' in repo '{repo}' is still open; finish it before squashing it")
        with self.writer(), self.tx() as db:
            stager = _Stager(self, db, target[0], self.root_of(target))
            now = time.time_ns()
            for row in rows:
                parent_root = self._row(row[4])[7] if row[4] is not None else None
                for key, _old, new in self.tree.diff(parent_root, row[7]):
                    path = names.key_path(key)
                    if new is None:
                        if stager.current(path) is not None:
                            stager.delete(path)
                        continue
                    e = entries.decode(new)
                    cur = stager.current(path)
                    if cur is not None and cur.is_dir != e.is_dir:
                        stager.delete(path)  # the source replaced a file with a directory, or back
                    if e.is_dir:
                        stager.mkdir(path, now)
                    else:
                        stager.put_entry(path, e, now)
        return self.info_of(self._row(target[0]))

    def replay_commits(self, repo: str, sources: list[str], branch: str) -> list:
        """Make one new commit on ``branch`` per source commit, each carrying
        the changes its source made relative to its own parent (git's
        cherry-pick, in order)."""
        rows = [self.resolve(repo, s) for s in sources]  # every ref checked before anything changes
        for s, row in zip(sources, rows, strict=True):
            if row[6] is None:
                raise Conflict(f"commit '{s}' in repo '{repo}' is still open; finish it before replaying it")
        made = []
        for row in rows:
            target = self.start_commit(repo, branch)
            try:
                self.squash_commits(repo, [row[0]], target.id)
            except BaseException:
                self.delete_commit(repo, target.id)
                raise
            made.append(self.finish_commit(repo, target.id))
        return made
