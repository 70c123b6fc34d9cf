"""The write side of the mount (``--write``): opening commits, the overlay of
files being written, and landing them in batches.

Mixed into ``PfsOperations``. Metadata changes (mkdir, unlink, rename, ...)
apply to the open commit at once, in a write session each; file contents
collect in the overlay and land when the last handle closes (~0.2 s later,
with the other files closed meanwhile), on fsync, on finish-commit, on
unmount, or when the commit has been idle for ``--commit-idle`` seconds.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

import pyfuse3
import trio

from pfsfuse.errors import Conflict
from pfsfuse.mount.common import (
    FLUSH_DELAY,
    FLUSH_FILES,
    MUTABLE_TIMEOUT,
    SMALL_FILE,
    Stat,
    errno_boundary,
    fuse_error,
    join,
    log,
)
from pfsfuse.mount.inodes import BENTRY, BRANCH, COMMIT, ENTRY, Node
from pfsfuse.mount.overlay import DirtyFile
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

    def _content_sync(self, cid: str, path: str) -> tuple[bool, list]:
        """(is it a directory, chunk locations) of what ``path`` holds in the commit now."""
        e = self.pfs.lookup_row(self.pfs._row(cid), path)
        if e is None:
            return False, []
        return e.is_dir, ([] if e.is_dir else self.pfs.locate(self.pfs.load_refs(e)))

    async def _dirty_for_write(self, repo: str, cid: str, path: str, truncate: bool) -> DirtyFile:
        dirty = self.overlay.get(cid, path)
        if dirty is None and truncate:
            dirty = self.overlay.create(cid, path)  # the old content does not matter
        if dirty is None:
            is_dir, locations = await self._quick(self._content_sync, cid, path)
            if is_dir:
                raise fuse_error(errno.EISDIR)
            dirty = self.overlay.get(cid, path) or self.overlay.create(cid, path)
            if not truncate and locations and dirty.size == 0:
                # Writing into an existing file: start from its content.
                reader = FileReader(self.cache, locations, self._spawn)
                pos = 0
                while pos < reader.size:
                    piece = await reader.read(pos, 4 << 20)
                    dirty.write(pos, piece)
                    pos += len(piece)
        if truncate:
            dirty.truncate(0)
        return dirty

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
        self.inodes.remember(node)
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
            is_dir, _ = await self._quick(self._content_sync, cid, path)
            if is_dir:
                raise fuse_error(errno.EISDIR)
            in_pfs = await self._run(self.pfs.lookup_row, self.pfs._row(cid), path) is not None
            if dirty is None and not in_pfs:
                raise fuse_error(errno.ENOENT)
            self.overlay.drop(cid, path)
            if in_pfs:
                await self._session(cid, lambda s: s.delete(path))

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
        await self._session(cid, lambda s: s.move(src, dst, noreplace))

    @errno_boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
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
                    dirty.truncate(attr.st_size)
                    if dirty.opens == 0:
                        self._schedule_flush(cid)
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
            seen = [(f, f.version) for f in files]

            def ingest() -> None:
                with self.pfs.write_session(repo, cid) as session:
                    for f, _ in seen:
                        if f.size <= SMALL_FILE:  # most files: no chunker windows to set up
                            session.put_bytes(f.path, f.read(0, f.size), overwrite=True)
                        else:
                            stream = session.put_stream(f.path)
                            stream.write_from(f.reader())
                            session.add(f.path, stream.finish(), stream.size, overwrite=True)
                        session.touch(f.path, f.mtime_ns)
                    session.commit()

            try:
                await self._run(ingest)
            finally:
                self._changed(cid)  # before the overlay lets go of the files
            for f, version in seen:
                if f.version == version and f.opens == 0 and self.overlay.get(cid, f.path) is f:
                    self.overlay.drop(cid, f.path)
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
