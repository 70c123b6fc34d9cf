"""The write side of the mount (``--write``): opening commits, the overlay of
files being written, and landing them in batches.

Mixed into ``PfsOperations``. Metadata changes (mkdir, unlink, rename, ...)
apply to the open commit at once, in a write session each; file contents
collect in the overlay (copy-on-write by chunk: overlay.py) and land when
the last handle closes (~0.2 s later, with the other files closed
meanwhile), on fsync, on finish-commit, on unmount, or when the commit has
been idle for ``--commit-idle`` seconds. Landing re-chunks only around the
edits (landing.py).
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Callable

import pyfuse3
import trio

from pfsfuse.chunks import read_chunks
from pfsfuse.entries import ChunkRef
from pfsfuse.errors import Conflict
from pfsfuse.mount.common import (
    FLUSH_DELAY,
    FLUSH_FILES,
    MUTABLE_TIMEOUT,
    Stat,
    errno_boundary,
    fuse_error,
    join,
    log,
)
from pfsfuse.mount.inodes import BENTRY, BRANCH, COMMIT, ENTRY, ORPHAN, Node
from pfsfuse.mount.landing import land
from pfsfuse.mount.overlay import SMALL_BASE, DirtyFile
from pfsfuse.mount.reader import FileReader


class WriteOps:
    # -- writes ---------------------------------------------------------------------

    def _ensure_open_sync(self, node: Node) -> str:
        """The open commit that writes under ``node`` go to; writing under a
        branch whose head is finished starts a commit on it."""
        if node.kind in (BRANCH, BENTRY):
            cached = self._open_heads.get((node.repo, node.ref))
            if cached is not None:
                return cached
            for _ in range(3):
                head = self._head(node.repo, node.ref)
                if head is not None and self._commit_row(head)[6] is None:
                    self._open_heads[(node.repo, node.ref)] = head
                    return head
                try:
                    c = self.pfs.start_commit(node.repo, node.ref)
                except Conflict:
                    continue  # someone opened one meanwhile: use it
                self.opened[c.id] = node.repo
                self._open_heads[(node.repo, node.ref)] = c.id
                return c.id
            raise Conflict(f"cannot open a commit on branch '{node.ref}'")
        if node.kind in (COMMIT, ENTRY):
            row = self._commit_row(node.ref)
            if row[6] is not None:
                raise OSError(errno.EROFS, "commit is finished")
            return row[0]
        if node.kind == ORPHAN:  # unlinked: nothing can be made in or under it
            raise OSError(errno.ENOENT, "removed")
        raise OSError(errno.EPERM, "only commits hold files")

    def forget_commit(self, cid: str) -> None:
        """A commit finished or went away: writes on its branch open a new one."""
        for key, head in list(self._open_heads.items()):
            if head == cid:
                del self._open_heads[key]
        self._changed(cid)

    async def _target(self, node: Node) -> tuple[str, str]:
        if not self.writable:
            raise fuse_error(errno.EROFS)
        async with self._open_lock:
            cid = await self._quick(self._ensure_open_sync, node)
        self.repo_of[cid] = node.repo
        self.last_write[cid] = time.monotonic()
        return cid, node.path

    def _lookup_cid(self, cid: str, path: str) -> Stat | None:
        return self._lookup_entry(self.pfs._row(cid), path)

    def _content_sync(self, cid: str, path: str) -> tuple[bool, list[ChunkRef]]:
        """(is it a directory, chunk list) of what ``path`` holds in the commit now."""
        e = self.pfs.lookup_row(self.pfs._row(cid), path)
        if e is None:
            return False, []
        return e.is_dir, ([] if e.is_dir else self.pfs.load_refs(e))

    async def _dirty_for_write(self, repo: str, cid: str, path: str, truncate: bool) -> DirtyFile:
        """The overlay file of ``path``, claimed for the caller (``opens`` + 1)
        before any await, so a landing that ends meanwhile cannot drop and
        close it under the caller (that was a ``ValueError: I/O operation on
        closed file``). The caller hands the claim to a handle or gives it
        back with ``_unclaim``. An existing file is not read: its stored
        chunk list becomes the dirty file's base (copy-on-write)."""
        dirty = self.overlay.get(cid, path)
        if dirty is None and not truncate:
            is_dir, refs = await self._quick(self._content_sync, cid, path)
            if is_dir:
                raise fuse_error(errno.EISDIR)
            dirty = self.overlay.get(cid, path) or self.overlay.create(cid, path, refs)
            dirty.opens += 1
            try:
                await self._absorb_small(dirty)
            except BaseException:
                self._unclaim(dirty)
                raise
            return dirty
        if dirty is None:
            dirty = self.overlay.create(cid, path)  # the old content does not matter
        dirty.opens += 1
        if truncate:
            try:
                dirty.truncate(0)
            except BaseException:
                self._unclaim(dirty)
                raise
        return dirty

    async def _absorb_small(self, dirty: DirtyFile) -> None:
        """A small stored file is read into the dirty file's memory at once (see SMALL_BASE)."""
        base, version = dirty.base, dirty.version
        if not base.refs or base.size > SMALL_BASE or len(dirty.written):
            return
        locations = await self._run(self.pfs.locate, base.refs)
        reader = FileReader(self.cache, locations, self._spawn)
        data = bytearray()
        while len(data) < base.size:
            piece = await reader.read(len(data), base.size - len(data))
            if not piece:
                break
            data += piece
        if dirty.absorb(base, bytes(data), version):
            self.overlay.rebased(dirty, frozenset())

    def _unclaim(self, dirty: DirtyFile) -> None:
        """A handle (or a claim) on a dirty file is gone."""
        dirty.opens -= 1
        if dirty.opens:
            return
        if not self.overlay.owns(dirty):
            self.overlay.close(dirty)  # unlinked or replaced while open: its bytes go nowhere
        elif dirty.commit_id in self.repo_of:
            self._schedule_flush(dirty.commit_id)

    async def _read_dirty(self, dirty: DirtyFile, offset: int, length: int) -> bytes:
        return await dirty.read(offset, length, functools.partial(self._read_stored, dirty))

    async def _read_stored(self, dirty: DirtyFile, offset: int, length: int) -> bytes:
        """Bytes of the stored file a dirty file is based on (located on first use)."""
        if dirty.reader is None:
            base = dirty.base
            locations = await self._run(self.pfs.locate, base.refs)
            if dirty.base is base and dirty.reader is None:
                dirty.reader = FileReader(self.cache, locations, self._spawn)
            else:  # rebased meanwhile: the caller's layout is stale anyway
                return await FileReader(self.cache, locations, self._spawn).read(offset, length)
        return bytes(await dirty.reader.read(offset, length))

    def _stored_chunk(self, ref: ChunkRef) -> bytes | memoryview:
        """One stored chunk's plain bytes, from a worker thread (landing)."""
        return next(read_chunks(self.pfs.store, self.pfs.locate([ref])))

    # -- files unlinked while open ---------------------------------------------------

    def _track(self, fh: int, inode: int) -> None:
        """Remember which inode an open handle is on, so that the handle can
        still be fstat'ed once its name is gone (unlinked while open)."""
        handle = self._handles.get(fh)
        if handle is not None:
            handle.inode = inode
            handle.opened_ns = time.time_ns()

    def _handles_on(self, inode: int) -> list:
        """The open handles on ``inode`` (what answers for a file whose name is gone)."""
        return [h for h in self._handles.values() if getattr(h, "inode", None) == inode]

    def _orphan_stat(self, inode: int) -> Stat | None:
        """What an open handle on ``inode`` shows when the name is gone."""
        for handle in self._handles_on(inode):
            dirty = getattr(handle, "dirty", None)
            if dirty is not None:
                return Stat(False, dirty.size, dirty.mtime_ns, True)
            return Stat(False, handle.reader.size, handle.opened_ns, True)
        return None

    def _orphan_dirty(self, inode: int, fh: int | None) -> DirtyFile | None:
        """The overlay file behind a handle open for writing on an unlinked ``inode``."""
        handle = self._handles.get(fh) if fh is not None else None
        if getattr(handle, "inode", None) == inode and getattr(handle, "writing", False):
            return handle.dirty
        for handle in self._handles_on(inode):
            if getattr(handle, "dirty", None) is not None:
                return handle.dirty
        return None

    def _setattr_orphan(self, inode: int, attr, fields, fh: int | None) -> None:
        """ftruncate/futimens on a file unlinked while open: its own bytes
        change (never the path's new file); they land nowhere."""
        if self._orphan_stat(inode) is None:
            raise fuse_error(errno.ENOENT)
        dirty = self._orphan_dirty(inode, fh)
        if fields.update_size:
            if dirty is None:  # open for reading only
                raise fuse_error(errno.EBADF)
            dirty.truncate(attr.st_size)
        if fields.update_mtime and dirty is not None:
            dirty.mtime_ns = attr.st_mtime_ns

    def _child_node(self, parent: Node, cid: str, path: str) -> Node:
        if parent.kind in (BRANCH, BENTRY):
            return Node(BENTRY, parent.repo, parent.ref, path)
        return Node(ENTRY, parent.repo, cid, path)

    @errno_boundary
    async def create(self, parent_inode, name, mode, flags, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = join(ppath, name)
        if flags & os.O_EXCL:
            st = await self._quick(self._lookup_cid, cid, path)
            if st is not None:
                raise fuse_error(errno.EEXIST)
        dirty = await self._dirty_for_write(parent.repo, cid, path, truncate=True)
        info = self._dirty_handle(dirty, True, bool(flags & os.O_APPEND))
        node = self._child_node(parent, cid, path)
        self._track(info.fh, self.inodes.remember(node))
        return info, self._attr(node, Stat(False, dirty.size, dirty.mtime_ns, True), MUTABLE_TIMEOUT)

    async def _session(self, cid: str, apply: Callable) -> None:
        """Run metadata changes in one write session on the commit (in a thread)."""
        repo = self.repo_of[cid]

        def run() -> None:
            with self.pfs.write_session(repo, cid) as session:
                apply(session)
                session.commit()

        try:
            await self._run(run)
        finally:
            self._changed(cid)

    @errno_boundary
    async def mkdir(self, parent_inode, name, mode, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = join(ppath, name)
        if self.overlay.get(cid, path) or await self._quick(self._lookup_cid, cid, path):
            raise fuse_error(errno.EEXIST)
        await self._session(cid, lambda s: s.mkdir(path))
        node = self._child_node(parent, cid, path)
        st = await self._quick(self._stat_sync, node)
        self.inodes.remember(node)
        return self._attr(node, st, MUTABLE_TIMEOUT)

    @errno_boundary
    async def unlink(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = join(ppath, name)
        # Not while a flush is landing this file: it would come back after the delete.
        async with self._flush_locks.setdefault(cid, trio.Lock()):
            dirty = self.overlay.get(cid, path)
            is_dir = await self._quick(self._is_dir_sync, cid, path)
            if is_dir:
                raise fuse_error(errno.EISDIR)
            in_pfs = await self._run(self.pfs.lookup_row, self.pfs._row(cid), path) is not None
            if dirty is None and not in_pfs:
                raise fuse_error(errno.ENOENT)
            self.overlay.drop(cid, path)
            if in_pfs:
                await self._session(cid, lambda s: s.delete(path))

    def _is_dir_sync(self, cid: str, path: str) -> bool:
        e = self.pfs.lookup_row(self.pfs._row(cid), path)
        return e is not None and e.is_dir

    @errno_boundary
    async def rmdir(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        cid, ppath = await self._target(parent)
        path = join(ppath, name)
        st = await self._quick(self._lookup_cid, cid, path)
        if st is None:
            raise fuse_error(errno.ENOENT)
        if not st.is_dir:
            raise fuse_error(errno.ENOTDIR)
        row = self.pfs._row(cid)
        children = await self._run(lambda: next(iter(self.pfs._children(self.pfs.root_of(row), path, (self.pfs.db, cid))), None))
        if children is not None or self.overlay.names_in(cid, path):
            raise fuse_error(errno.ENOTEMPTY)
        await self._session(cid, lambda s: s.delete(path))

    @errno_boundary
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise fuse_error(errno.EINVAL)
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        cid, old_dir = await self._target(old_parent)
        cid2, new_dir = await self._target(new_parent)
        if cid != cid2:
            raise fuse_error(errno.EXDEV)
        src = join(old_dir, name_old)
        dst = join(new_dir, name_new)
        # Moves work on commit content: land written files first.
        await self.flush_commit(cid, include_open=True)
        noreplace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        # Not while a landing runs: it would land a file at the old name, or
        # land the replaced file over the moved one.
        async with self._flush_locks.setdefault(cid, trio.Lock()):
            await self._session(cid, lambda s: s.move(src, dst, noreplace))
            # Files still open (landed above, kept for their handles) follow the move.
            self.overlay.move(cid, src, dst)

    @errno_boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        if node.kind == ORPHAN:
            self._setattr_orphan(inode, attr, fields, fh)
            return await self.getattr(inode, ctx)
        if node.kind not in (ENTRY, BENTRY, COMMIT, BRANCH):
            raise fuse_error(errno.EROFS if not self.writable else errno.EPERM)
        if fields.update_size or fields.update_mtime:
            cid, path = await self._target(node)
            # Not while a flush is landing this file: it would land the old size or mtime.
            async with self._flush_locks.setdefault(cid, trio.Lock()):
                st = await self._quick(self._lookup_cid, cid, path)
                if st is None and self.overlay.get(cid, path) is None:
                    raise fuse_error(errno.ENOENT)
                if fields.update_size:
                    dirty = await self._dirty_for_write(node.repo, cid, path, truncate=False)
                    try:
                        dirty.truncate(attr.st_size)
                    finally:
                        self._unclaim(dirty)
                if fields.update_mtime:
                    dirty = self.overlay.get(cid, path)
                    if dirty is not None:
                        dirty.mtime_ns = attr.st_mtime_ns
                    elif st is not None and not st.is_dir:
                        await self._session(cid, lambda s: s.touch(path, attr.st_mtime_ns))
        # Modes and owners are not versioned: accepted and ignored, as on vfat.
        return await self.getattr(inode, ctx)

    # -- landing written files ----------------------------------------------------------

    def _schedule_flush(self, cid: str) -> None:
        waiting = [f for f in self.overlay.of_commit(cid) if f.opens == 0]
        if len(waiting) >= FLUSH_FILES:
            self._spawn(self.flush_commit, cid)
            return
        if self._flush_due.get(cid):
            return
        self._flush_due[cid] = True

        async def later() -> None:
            await trio.sleep(FLUSH_DELAY)
            self._flush_due[cid] = False
            try:
                await self.flush_commit(cid)
            except Exception:
                log.exception("mount: landing written files in commit %s failed", cid)

        self._spawn(later)

    async def flush_commit(self, cid: str, include_open: bool = False) -> int:
        """Ingest the overlay's files of one commit in one write session."""
        lock = self._flush_locks.setdefault(cid, trio.Lock())
        async with lock:
            files = [f for f in self.overlay.of_commit(cid) if include_open or f.opens == 0]
            repo = self.repo_of.get(cid)
            if not files or repo is None:
                return 0
            for f in files:
                if f.version == f.landed_version and f.opens == 0:
                    self.overlay.drop(cid, f.path)  # landed while open, unchanged since
            # An unchanged file landed already (an fsync after an fsync): nothing to do.
            seen = [(f, f.version) for f in files if f.version != f.landed_version]
            if not seen:
                return 0

            landed: list[tuple[DirtyFile, int, list[ChunkRef]]] = []

            def ingest() -> None:
                with self.pfs.write_session(repo, cid) as session:
                    for f, _ in seen:
                        snap = f.snapshot()
                        refs = land(f, snap, session.sink, self._stored_chunk)
                        session.add(f.path, refs, snap.size, overwrite=True)
                        session.touch(f.path, f.mtime_ns)
                        landed.append((f, snap.version, refs))
                    session.commit()

            try:
                await self._run(ingest)
            finally:
                self._changed(cid)  # before the overlay lets go of the files
            for f, version, refs in landed:
                if not self.overlay.owns(f) or f.version != version:
                    continue  # changed meanwhile: lands again later, on its old base
                f.landed_version = version
                if f.opens == 0:
                    self.overlay.drop(cid, f.path)
                elif f.spilled:
                    # Still open, and big: from now on built on what just landed,
                    # so the next landing re-chunks only what is written after it.
                    digests = f.rebase(refs, version)
                    if digests is not None:
                        self.overlay.rebased(f, digests)
            return len(seen)

    async def flush_all(self, finish: bool) -> list[str]:
        """Land everything written; with ``finish``, finish the commits this mount opened."""
        for cid in list(self.overlay.commits()):
            await self.flush_commit(cid, include_open=True)
        finished = []
        if finish:
            for cid, repo in list(self.opened.items()):
                row = await self._run(self.pfs._row, cid)
                if row[6] is None:
                    await self._run(self.pfs.finish_commit, repo, cid)
                    finished.append(cid)
                self.opened.pop(cid, None)
                self.forget_commit(cid)
        return finished

    async def watch_idle(self) -> None:
        """Finish commits nobody has written to for ``commit_idle`` seconds."""
        if not self.commit_idle:
            return
        while True:
            await trio.sleep(min(self.commit_idle / 4, 1.0))
            now = time.monotonic()
            for cid, when in list(self.last_write.items()):
                busy = any(f.opens for f in self.overlay.of_commit(cid))
                if now - when >= self.commit_idle and not busy:
                    self.last_write.pop(cid, None)
                    await self.flush_commit(cid, include_open=True)
                    row = await self._run(self.pfs._row, cid)
                    if row[6] is None:
                        await self._run(self.pfs.finish_commit, self.repo_of[cid], cid)
                    self.opened.pop(cid, None)
                    self.forget_commit(cid)
