"""Applying a wire stream (mountd/wire.py) as it arrives, in a worker thread.

Each file is held in memory while it is small and streamed through the
chunker once it is not, so any size goes through in bounded memory. What a
put lands in (a commit's write session, a job's pins) and what its mode
means (overwrite, or put/append) is the subclass's business.

Also what every upload route shares: the session it writes into
(``open_session``: an open commit, or a new commit made once the upload is
whole), and noticing a client that hung up while the daemon worked for it
(``run_until_disconnect``), so an interrupted ``put-file -c`` makes no commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import trio
from starlette.requests import Request

from mountd import wire
from pfsfuse.errors import InvalidArgument, PfsError
from pfsfuse.files import NewCommitSession, WriteSession
from pfsfuse.pfs import PFS

SMALL_FILE = 1 << 20
T = TypeVar("T")

NEW_COMMIT_DOC = (
    "ref names a branch: start a commit on it, write, finish it, all in one step; "
    "if the upload breaks off the branch is left as it was (put-file -c)"
)


class ClientGone(PfsError):
    """The client hung up (Ctrl-C, killed) while the daemon worked for it."""


class CancellableReader:
    """A file whose reads stop once ``cancelled`` is set: the daemon reading a
    client's local file gives up when that client goes away, so an
    interrupted ``put-file -c -f FILE`` makes no commit."""

    def __init__(self, f: BinaryIO, cancelled: threading.Event):
        self._f = f
        self._cancelled = cancelled

    def readinto(self, buf) -> int:
        if self._cancelled.is_set():
            raise ClientGone("the client went away; nothing was written")
        return self._f.readinto(buf)


async def run_until_disconnect(request: Request, fn: Callable[[threading.Event], T]) -> T:
    """``fn(cancelled)`` in a worker thread, with ``cancelled`` set if the
    client disconnects meanwhile. For work done once the request's body is
    read (or when it has none), where nothing else would notice."""
    cancelled = threading.Event()
    outcome: list[T] = []
    failure: list[Exception] = []

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancelled.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        try:
            outcome.append(await trio.to_thread.run_sync(fn, cancelled))
        except Exception as exc:  # re-raised below, outside the nursery (no exception group)
            failure.append(exc)
        nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0]


def commit_upload(session: WriteSession, cancelled: threading.Event | None) -> None:
    """Commit an upload's session; a new commit is not made if the client hung
    up meanwhile (checked inside the commit's transaction), so a command
    interrupted after its last byte was sent does not leave a commit behind."""
    if isinstance(session, NewCommitSession) and cancelled is not None:
        session.commit(wanted=lambda: not cancelled.is_set())
    else:
        session.commit()


def open_session(pfs: PFS, repo: str, ref: str, new_commit: bool) -> WriteSession:
    """The session an upload writes into: the open commit ``ref``, or with
    ``new_commit`` a commit made on branch ``ref`` once the upload is whole."""
    session = pfs.new_commit_session(repo, ref) if new_commit else pfs.write_session(repo, ref)
    session.strict_paths = True  # clients name new files: no control characters, no trailing '/'
    return session


class WireIngest:
    what = "upload stream"

    def __init__(self, tags: tuple[bytes, ...] = wire.UPLOAD_TAGS):
        self.decoder = wire.Decoder(self._start, self._data, self._end, tags=tags)
        self._target: Any = None
        self._path = ""
        self._mode: Any = None
        self._small: bytearray | None = None
        self._stream = None

    # -- for subclasses --------------------------------------------------------

    def put_target(self, header: dict) -> tuple[Any, Any]:
        """(session, mode) for a put: the session has put_stream, put_bytes and add."""
        raise NotImplementedError

    def other(self, tag: bytes, header: dict) -> None:
        """A record that is not a put (mkdir, delete, a unit header, ...)."""
        raise NotImplementedError

    # -- the stream ------------------------------------------------------------

    def _start(self, tag: bytes, header: dict) -> None:
        if tag != wire.PUT:
            self.other(tag, header)
            return
        self._path = header.get("path", "")
        self._target, self._mode = self.put_target(header)
        self._target.put_stream(self._path)  # validates the path before any bytes arrive
        self._small, self._stream = bytearray(), None

    def _data(self, data: memoryview) -> None:
        if self._stream is None and len(self._small) + len(data) <= SMALL_FILE:
            self._small += data
            return
        if self._stream is None:
            self._stream = self._target.put_stream(self._path)
            self._stream.write(self._small)
            self._small = None
        self._stream.write(data)

    def _end(self) -> None:
        if self._stream is None:
            self._target.put_bytes(self._path, bytes(self._small), self._mode)
        else:
            refs = self._stream.finish()
            self._target.add(self._path, refs, self._stream.size, self._mode)
        self._small = self._stream = None

    def feed(self, data: bytes) -> None:
        try:
            self.decoder.feed(data)
        except ValueError as exc:
            raise InvalidArgument(f"malformed {self.what}: {exc}") from None

    def end_of_stream(self) -> None:
        try:
            self.decoder.close()
        except ValueError as exc:
            raise InvalidArgument(f"malformed {self.what}: {exc}") from None
