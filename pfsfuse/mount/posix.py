"""What a local disk keeps that PFS does not: the mount's own part of POSIX.

Mixed into ``PfsOperations`` in front of ``WriteOps``: its handlers run the
write side's, then record what PFS has no place for, for the life of the
mount. PFS versions a file's content and mtime; atime, a directory's times
(its entry keeps when it was made) and ctime are kept here, by inode number,
so they follow a rename; the inode numbers themselves follow renames and
removals in the inode table (inodes.py). mknod makes plain files and
refuses special ones.
"""

from __future__ import annotations

import errno
import os
import stat
import time

import pyfuse3

from pfsfuse.errors import NotFound
from pfsfuse.mount.common import check_name, errno_boundary, fuse_error
from pfsfuse.mount.inodes import BENTRY, BRANCH, COMMIT, ENTRY, ORPHAN, Node


class PosixOps:
    # -- times --------------------------------------------------------------------------

    def _apply_times(self, a: pyfuse3.EntryAttributes) -> None:
        t = self.times.get(a.st_ino)
        if t is None:
            return
        atime, mtime, ctime = t
        if mtime is not None:
            a.st_mtime_ns = mtime
        if atime is not None:
            a.st_atime_ns = atime
        # A write after the last change of times moves mtime past it: ctime follows.
        a.st_ctime_ns = max(a.st_mtime_ns, ctime or 0)

    def _set_times(self, ino: int, atime: int | None = None, mtime: int | None = None) -> None:
        """Record times set through the mount; ctime is now, as for any change."""
        now = time.time_ns()
        t = self.times.setdefault(ino, [None, None, None])
        if atime is not None:
            t[0] = atime
        if mtime is not None:
            t[1] = mtime
        t[2] = now

    def _forget_subdirs(self, *nodes: Node) -> None:
        """Directories made, removed or moved: the link counts kept for them and for
        their parents are stale (the rest stay: counting is a scan)."""
        for node in nodes:
            parent = node.path.rpartition("/")[0]
            self._open_subdirs.pop((node.repo, node.path), None)
            self._open_subdirs.pop((node.repo, parent), None)

    def _dir_changed(self, *inodes: int) -> None:
        """Names were added to or removed from these directories: mtime and ctime are now."""
        now = time.time_ns()
        for ino in inodes:
            self._set_times(ino, mtime=now)

    # -- handlers: writes.py's, plus what they change that PFS does not keep ------------

    @errno_boundary
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        times = fields.update_atime or fields.update_mtime
        if times and node.kind in (ENTRY, BENTRY, COMMIT, BRANCH):
            await self._target(node)  # EROFS where nothing may change (an atime alone too)
        await super().setattr(inode, attr, fields, fh, ctx)
        if node.kind == ORPHAN:
            # Unlinked while open: writes.py changed its bytes (and a written
            # file's mtime); atime, ctime and a read-only file's mtime are kept here.
            if times or fields.update_size or fields.update_mode or fields.update_uid or fields.update_gid:
                read_only = self._orphan_dirty(inode, fh) is None
                self._set_times(
                    inode,
                    attr.st_atime_ns if fields.update_atime else None,
                    attr.st_mtime_ns if fields.update_mtime and read_only else None,
                )
        elif times:
            st = await self._quick(self._stat_sync, node)
            # A file's mtime is versioned (landed with it); a directory's is kept here.
            mtime = attr.st_mtime_ns if fields.update_mtime and st.is_dir else None
            self._set_times(inode, attr.st_atime_ns if fields.update_atime else None, mtime)
        elif self.writable and (fields.update_size or fields.update_mode or fields.update_uid or fields.update_gid):
            # Accepted (modes and owners are ignored, not refused): the change
            # time moves, where anything can change.
            changeable = (await self._quick(self._stat_sync, node)).mutable
            if changeable:
                self._set_times(inode)
        return await self.getattr(inode, ctx)

    @errno_boundary
    async def create(self, parent_inode, name, mode, flags, ctx):
        created = await super().create(parent_inode, name, mode, flags, ctx)
        self._dir_changed(parent_inode)
        return created

    @errno_boundary
    async def mkdir(self, parent_inode, name, mode, ctx):
        attr = await super().mkdir(parent_inode, name, mode, ctx)
        self._forget_subdirs(self._named(parent_inode, name))
        self._dir_changed(parent_inode)
        return attr

    def _named(self, parent_inode: int, name: bytes) -> Node:
        """The node a handler of writes.py worked on (as its _child_node)."""
        return self._node(parent_inode).child(os.fsdecode(name))

    @errno_boundary
    async def unlink(self, parent_inode, name, ctx):
        await super().unlink(parent_inode, name, ctx)
        self.inodes.removed(self._named(parent_inode, name))
        self._dir_changed(parent_inode)

    @errno_boundary
    async def rmdir(self, parent_inode, name, ctx):
        await super().rmdir(parent_inode, name, ctx)
        self.inodes.removed(self._named(parent_inode, name))
        self._forget_subdirs(self._named(parent_inode, name))
        self._dir_changed(parent_inode)

    @errno_boundary
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        await super().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)
        src, dst = self._named(parent_inode_old, name_old), self._named(parent_inode_new, name_new)
        self._open_subdirs.clear()  # a moved tree's own directories change paths: rare, start over
        try:
            is_dir = (await self._quick(self._stat_sync, dst)).is_dir
        except NotFound:  # moved on already by another writer: it keeps no number
            is_dir = False
        self.inodes.renamed(src, dst, is_dir)
        self._dir_changed(parent_inode_old, parent_inode_new)
        self._set_times(self.inodes.number(dst))  # a rename changes the file's ctime

    # -- special files ---------------------------------------------------------------------

    @errno_boundary
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        check_name(name)
        if not self.writable:
            raise fuse_error(errno.EROFS)
        if stat.S_ISREG(mode):  # mknod(2) of a plain file: an empty file, as create makes
            info, attr = await self.create(parent_inode, name, mode, os.O_WRONLY | os.O_EXCL, ctx)
            await self.release(info.fh)
            return attr
        # Devices, FIFOs and sockets are not data: refused, like links.
        parent = self._node(parent_inode)
        if parent.kind in (COMMIT, ENTRY):
            row, _ = await self._quick(self._resolve, parent)
            if row is not None and row[6] is not None:
                raise fuse_error(errno.EROFS)
        raise fuse_error(errno.EPERM)

