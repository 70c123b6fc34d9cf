"""Spouts and services: a task the worker keeps while it is current
(pps/WORKERS.md, "Spouts and services: long-running tasks").

``LongRunning.run`` lays the task out once (a service's ``units[0]`` is its
inputs' heads, materialized as for a job; a spout has none), then keeps the
user's process running in a private ``/pfs`` exactly as a job unit's:

- it asks ``still`` about once a second and ends when the answer is no,
  or when the worker is told to stop; the process group then gets SIGTERM,
  and SIGKILL ``TERM_GRACE`` seconds later (below the local runner's 5 s,
  after which it kills the worker's whole session);
- a process that exits is restarted after a pause that doubles from
  ``RESTART_MIN`` to ``RESTART_MAX`` and drops back to ``RESTART_MIN`` once a
  start has run ``STEADY`` seconds; a task that cannot even be laid out
  is retried on the same schedule;
- while the daemon is unreachable the process keeps running; after the
  worker's give-up period the task ends with ``GiveUp``;
- its stdout/stderr go to the pipeline's logs with no job and no datum.

A spout's ``/pfs/out`` is a named pipe, read by a ``Spout`` thread: every
tar stream written into it becomes one commit on ``output.repo`` @
``output.branch`` through the ordinary client API (start, one streamed
``put_files``, finish; with ``spout.overwrite`` the same upload first
deletes every top-level path of the branch). The pipe is read as one byte
stream: successive archives are split at their end-of-archive blocks, so
a writer that opens the pipe again before the last stream was consumed
(``for i in 1 2 3; do tar -cf /pfs/out ...; done``) loses nothing, and one
open may carry many archives; the last writer closing the pipe (EOF) ends
the stream being written. The reader holds the pipe open at every moment,
so a writer never finds it without a reader (which would be SIGPIPE).
Member bytes stream from the pipe to the daemon in pieces of ``PIECE``.

A stream that is not a valid tar, or ends early (EOF inside it, or no
end-of-archive block), is logged, its commit deleted, and what follows
is discarded until no writer holds the pipe: there is no way to find the
next archive's start in garbage. Compressed streams (``r|*``) are read one
per open of the pipe: the rest of that open is discarded after the archive.
In a 1.x pipeline a file already in the branch is appended to (1.x
put-file); in 2.x it is replaced. Directories become directories;
symlinks, hard links and devices are skipped (and counted in the note).
An archive without members makes no commit: on a pipe it cannot be told
from the padding of the archive before it.
"""

from __future__ import annotations

import os
import select
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from mountd import wire
from pachctl.client import errors
from shim import execute, sandbox
from shim.execute import Log
from shim.link import GiveUp
from shim.materialize import MaterializeError, TaskDirs
from shim.task import Task, TaskError, clean_rel

RESTART_MIN = 1.0  # first pause before a restart
RESTART_MAX = 30.0  # longest pause
STEADY = 60.0  # a start that ran this long resets the pause
STILL_EVERY = 1.0  # how often the daemon is asked whether the task is current
TICK = 0.25  # how soon a stop of the worker is noticed
TERM_GRACE = 3.0  # SIGTERM -> SIGKILL (the local runner kills the worker's session after 5 s)
SPOUT_FINISH = 1.0  # on a stop, how long a stream in flight may still become a commit
PIECE = 1 << 20
IDLE_CHECK_MS = 1000
BLOCK = tarfile.BLOCKSIZE


class StillLink(Protocol):
    where: str

    def still_current(self, pipeline: str, task_id: str) -> bool: ...


class Committer(Protocol):
    """What a spout needs of ``pachctl.client.Client``."""

    def start_commit(self, repo: str, branch: str | None = ...) -> Any: ...
    def finish_commit(self, repo: str, commit: str) -> Any: ...
    def delete_commit(self, repo: str, commit: str) -> None: ...
    def list_file(self, repo: str, commit: str, path: str = ...) -> list[Any]: ...
    def put_files(self, repo: str, commit: str, records: Iterator[bytes]) -> Any: ...


# -- the task ----------------------------------------------------------------------


class LongRunning:
    """One spout or service task, from its layout to its end."""

    restart_min = RESTART_MIN
    restart_max = RESTART_MAX
    steady = STEADY
    still_every = STILL_EVERY
    tick = TICK
    term_grace = TERM_GRACE

    def __init__(
        self,
        task: Task,
        lay_out: Callable[[], TaskDirs],
        link: StillLink,
        log: Log,
        *,
        should_stop: Callable[[], bool],
        give_up: float,
        client: Committer | None = None,
        after_exit: Callable[[], None] | None = None,
    ):
        """``lay_out()`` materializes the task (the worker's, with its retries);
        ``client`` makes a spout's commits; ``after_exit`` runs after each start
        ends (the worker reaps what the process orphaned)."""
        self.task = task
        self.lay_out = lay_out
        self.link = link
        self.log = log
        self.should_stop = should_stop
        self.give_up = give_up
        self.client = client
        self.after_exit = after_exit
        self.dirs: TaskDirs | None = None
        self.spout: Spout | None = None
        self.starts = 0
        self._away_since: float | None = None

    def run(self) -> str:
        """Keep the process running until the task is not current or the worker stops;
        why it ended. Raises ``GiveUp`` when the daemon stays away too long."""
        kind = self.task.kind
        pause = self.restart_min
        child: execute.Started | None = None
        now = time.monotonic()
        next_start = next_still = now
        try:
            while True:
                if self.should_stop():
                    return "the worker is stopping"
                if self.spout is not None and not self.spout.alive:
                    return "the spout's reader failed"  # the worker asks again: a fresh start
                now = time.monotonic()
                if now >= next_still:
                    next_still = now + self.still_every
                    if not self._current():
                        return "the task is no longer current"
                    now = time.monotonic()
                if child is None and now >= next_start:
                    child, why = self._start()
                    if child is None:
                        self.log(f"cannot start the {kind}: {why}; trying again in {pause:g} s", False)
                        next_start = time.monotonic() + pause
                        pause = min(pause * 2, self.restart_max)
                        continue
                wait = max(0.0, min(self.tick, next_still - now))
                if child is None:
                    time.sleep(max(0.0, min(wait, next_start - now)))
                    continue
                child.pump(wait)
                if child.exited_at is None:
                    continue
                ran = child.exited_at - child.started
                rc = self._finish(child)
                child = None
                if ran >= self.steady:
                    pause = self.restart_min
                how = f"exited with code {rc}" if rc >= 0 else f"was {execute.exit_reason(rc)}"
                self.log(f"the {kind} {how} after {ran:.1f} s; restarting it in {pause:g} s", False)
                next_start = time.monotonic() + pause
                pause = min(pause * 2, self.restart_max)
        finally:
            if child is not None:
                child.stop(self.term_grace)
                self._finish(child)
            if self.spout is not None:
                self.spout.stop(SPOUT_FINISH)

    def _current(self) -> bool:
        try:
            current = self.link.still_current(self.task.pipeline, self.task.task_id)
        except errors.Unreachable as exc:
            now = time.monotonic()
            if self._away_since is None:
                self._away_since = now
                self.log(f"daemon unreachable ({exc}); the {self.task.kind} keeps running meanwhile", False)
            if now - self._away_since > self.give_up:
                raise GiveUp(
                    f"gave up: the daemon at {self.link.where} was unreachable for {self.give_up:g} s; "
                    f"the runner starts workers again when it is back"
                ) from None
            return True
        except errors.NotFound:
            return False  # the pipeline is gone
        self._away_since = None
        return current

    def _start(self) -> tuple[execute.Started | None, str]:
        """Lay the task out (once) and start the process; (child, "") or (None, why not)."""
        task = self.task
        try:
            if self.dirs is None:
                if len(task.units) != 1:
                    raise TaskError(f"a {task.kind} task must have one unit, this one has {len(task.units)}")
                dirs = self.lay_out()
                if task.kind == "spout":
                    self._start_spout(dirs)
                self.dirs = dirs  # only now: a failure above lays the task out again next time
            unit, udir = task.units[0], self.dirs.units[0]
            ex = execute.executor()
            who = ex.resolve_user(task.transform.user, task.pipeline)
            env = execute.build_env(task, unit, who, ex.base_env())
            execute.hand_over(self.dirs.binds(udir), who)
        except (MaterializeError, TaskError, sandbox.SandboxError, OSError) as exc:
            return None, str(exc)
        except errors.Unauthorized:
            raise
        except errors.PfsError as exc:
            return None, f"cannot read its inputs: {exc}"
        t = task.transform
        run = execute.Run(t.cmd, execute.stdin_bytes(t.stdin), env, t.working_dir or ex.default_cwd, None,
                          frozenset(), who)
        try:
            child = ex.start(run, self.dirs.binds(udir), self.log)
        except (execute.StartError, sandbox.SandboxError) as exc:
            return None, str(exc)
        self.starts += 1
        self.log(f"started the {task.kind} (start {self.starts})", False)
        return child, ""

    def _finish(self, child: execute.Started) -> int:
        try:
            return child.finish()
        finally:
            if self.after_exit is not None:
                self.after_exit()

    def _start_spout(self, dirs: TaskDirs) -> None:
        out = dirs.units[0].out
        shutil.rmtree(out, ignore_errors=True)
        os.mkfifo(out, 0o600)
        assert self.task.output is not None and self.client is not None
        self.spout = Spout(
            out,
            self.client,
            self.task.output.repo,
            self.task.output.branch,
            overwrite=self.task.spout_overwrite,
            append=self.task.generation == 1,
            log=self.log,
        )
        self.spout.start()


# -- a spout's named pipe ----------------------------------------------------------


class Stopped(Exception):
    """The spout is being stopped: abandon what is being read."""


class Invalid(Exception):
    """The stream is not a (complete) tar archive."""


class PipeStream:
    """The named pipe as one byte stream: exact reads, EOF when every writer closed.

    The descriptor is non-blocking and waited on with poll (which reports
    nothing until a writer has come), together with a wake-up pipe that
    ``Spout.stop`` writes to.
    """

    def __init__(self, path: str, wake: int):
        self.path = path
        self.wake = wake
        self.fd = self._open()
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)
        self.poll.register(wake, select.POLLIN)
        self.buf = b""
        self.pos = 0
        self.eof = False

    def _open(self) -> int:
        return os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def next_open(self) -> None:
        """After EOF: wait for the next writer. The new descriptor is opened before the
        old one is closed, so the pipe never lacks a reader."""
        new = self._open()
        self.poll.unregister(self.fd)
        os.close(self.fd)
        self.fd = new
        self.poll.register(new, select.POLLIN)
        self.buf, self.pos, self.eof = b"", 0, False

    def close(self) -> None:
        """Not the pipe's: tarfile's close of its stream must leave it open."""

    def shut(self) -> None:
        os.close(self.fd)

    def _fill(self) -> bytes:
        """More bytes from the pipe; b"" at EOF. Raises ``Stopped``."""
        if self.eof:
            return b""
        while True:
            # poll reports the hang-up only of writers that came after this descriptor
            # was opened; every second a read tells "no writer left" (0) from "wait" (EAGAIN).
            events = self.poll.poll(IDLE_CHECK_MS)
            if any(fd == self.wake for fd, _ in events):
                raise Stopped()
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                self.eof = True
            return data

    def _ensure(self, n: int) -> int:
        """At least ``n`` bytes buffered unless EOF comes first; how many there are."""
        have = len(self.buf) - self.pos
        while have < n:
            data = self._fill()
            if not data:
                break
            self.buf = self.buf[self.pos :] + data
            self.pos = 0
            have = len(self.buf)
        return have

    def read(self, n: int = -1) -> bytes:
        """Exactly ``n`` bytes, fewer only at EOF (what tarfile's stream reader expects)."""
        if n < 0:
            raise ValueError("a spout stream is read in pieces")
        parts = []
        while n > 0:
            if self.pos >= len(self.buf):
                data = self._fill()
                if not data:
                    break
                self.buf, self.pos = data, 0
            part = self.buf[self.pos : self.pos + n]
            self.pos += len(part)
            n -= len(part)
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip_padding(self) -> None:
        """Skip zero blocks (the end of an archive, tar's record padding) up to the next
        archive or EOF."""
        while self._ensure(BLOCK):
            block = self.buf[self.pos : self.pos + BLOCK]
            if block.count(0) != len(block):
                return  # an archive (a compressed one may be shorter than a block)
            self.pos += len(block)

    def at_eof(self) -> bool:
        return self._ensure(1) == 0

    def drain(self) -> int:
        """Discard everything up to EOF (resynchronize after a bad stream); bytes dropped."""
        n = len(self.buf) - self.pos
        self.buf, self.pos = b"", 0
        while data := self._fill():
            n += len(data)
        return n


class _Info(tarfile.TarInfo):
    """Notes on the TarFile whether its members ended with an end-of-archive block
    (tarfile itself stops quietly on EOF or garbage after the first member)."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:
            tf._pachy_clean_end = True  # type: ignore[attr-defined]
            raise


def _open_tar(stream: PipeStream) -> tarfile.TarFile:
    """The archive starting here, read in blocks (tarfile never reads past the block
    it is at, so the next archive's first bytes stay in ``stream``)."""
    try:
        return tarfile.open(fileobj=stream, mode="r|*", bufsize=BLOCK, tarinfo=_Info)  # type: ignore[arg-type]
    except tarfile.TarError as exc:
        raise Invalid(f"not a tar stream ({exc})") from None


class Spout:
    """Turns the tar streams written to a spout's ``/pfs/out`` into commits."""

    def __init__(
        self,
        fifo: str,
        client: Committer,
        repo: str,
        branch: str,
        *,
        overwrite: bool,
        append: bool,
        log: Log,
    ):
        """``overwrite``: a stream first deletes every file of the branch (spout.overwrite);
        ``append`` (1.x): a file already in the branch is appended to, as 1.x put-file
        does; otherwise (2.x) replaced."""
        self.fifo = fifo
        self.client = client
        self.repo, self.branch = repo, branch
        self.overwrite, self.append = overwrite, append
        self.log = log
        self.commits: list[str] = []  # made so far (tests, notes)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._busy = threading.Event()
        self._stream: PipeStream | None = None

    def start(self) -> None:
        self._stream = PipeStream(self.fifo, self._wake_r)  # opened here: a writer never blocks on a missing reader
        self._thread = threading.Thread(target=self._run, name="shim-spout", daemon=True)
        self._thread.start()

    def stop(self, finish: float = SPOUT_FINISH) -> None:
        """Let a stream being read become its commit for up to ``finish`` s, then abandon it."""
        if self._thread is not None:
            if self._busy.is_set():
                self._thread.join(finish)
            os.write(self._wake_w, b"x")
            self._thread.join(10.0)
            if self._thread.is_alive():
                return  # stuck in a call to the daemon: leave it its descriptors (a daemon thread)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        stream = self._stream
        assert stream is not None
        try:
            while True:
                self._one_open(stream)
                stream.next_open()
        except Stopped:
            pass
        except Exception as exc:  # a bug: say so in the pipeline's logs rather than die silently
            self.log(f"the spout's reader failed: {exc!r}; restart the pipeline", False)
            raise
        finally:
            stream.shut()

    def _one_open(self, stream: PipeStream) -> None:
        """The archives written between a writer's open and the last writer's close."""
        while True:
            # An archive with no member is nothing but zero blocks, the same as the
            # padding after the archive before it: it makes no commit.
            stream.skip_padding()
            if stream.at_eof():
                return
            self._busy.set()
            try:
                with _open_tar(stream) as tf:
                    self._commit(tf)
                    compressed = getattr(tf.fileobj, "comptype", "tar") != "tar"
            except Invalid as exc:
                dropped = stream.drain()
                more = f"; {dropped} more bytes up to the writer's close were dropped" if dropped else ""
                self.log(f"spout: a stream written to /pfs/out was dropped: {exc}{more}", False)
                return
            finally:
                self._busy.clear()
            if compressed:
                stream.drain()  # its trailer and anything after: one compressed stream per open
                return

    def _commit(self, tf: tarfile.TarFile) -> None:
        """One commit from one archive. Raises ``Invalid``
        after deleting the commit when the archive is bad or the daemon refuses it."""
        c = self.client
        try:
            commit = c.start_commit(self.repo, self.branch).id
        except errors.PfsError as exc:
            raise Invalid(f"cannot start a commit on {self.repo}@{self.branch}: {exc}") from None
        counts = {"files": 0, "bytes": 0, "skipped": 0}
        try:
            deletes = [f.path for f in c.list_file(self.repo, commit, "/")] if self.overwrite else []
            c.put_files(self.repo, commit, self._records(tf, deletes, counts))
            c.finish_commit(self.repo, commit)
        except BaseException as exc:
            try:
                c.delete_commit(self.repo, commit)
                gone = f"commit {commit} deleted"
            except errors.PfsError as err:
                gone = f"commit {commit} could not be deleted ({err})"
            if isinstance(exc, Stopped):
                self.log(f"spout: the pipeline stopped while a stream was being read; {gone}", False)
                raise
            if isinstance(exc, Invalid):
                why = str(exc)
            elif isinstance(exc, tarfile.TarError):
                why = f"not a valid tar stream ({exc})"
            elif isinstance(exc, errors.PfsError | OSError):
                why = f"the commit failed: {exc}"
            else:
                raise  # a bug
            raise Invalid(f"{why}; {gone}") from None
        self.commits.append(commit)
        skipped = f", {counts['skipped']} entries that are not files or directories skipped" if counts["skipped"] else ""
        self.log(
            f"spout: commit {commit} on {self.repo}@{self.branch}: {counts['files']} file(s), "
            f"{counts['bytes']} bytes{skipped}",
            False,
        )

    def _records(self, tf: tarfile.TarFile, deletes: list[str], counts: dict[str, int]) -> Iterator[bytes]:
        """The upload: deletes first (overwrite), then each member, its bytes streamed."""
        for path in deletes:
            yield wire.encode_header(wire.DELETE, {"path": path})
        while (member := tf.next()) is not None:
            tf.members.clear()  # a stream's member list would otherwise grow without bound
            try:
                rel = clean_rel(member.name, "path in the tar stream")
            except TaskError as exc:
                raise Invalid(str(exc)) from None
            if not rel:
                continue
            if member.isdir():
                yield wire.encode_header(wire.MKDIR, {"path": "/" + rel})
            elif member.isreg():
                f = tf.extractfile(member)
                assert f is not None
                counts["files"] += 1
                counts["bytes"] += member.size
                yield from wire.encode_put("/" + rel, iter(lambda f=f: f.read(PIECE), b""), overwrite=not self.append)
            else:
                counts["skipped"] += 1
        if not getattr(tf, "_pachy_clean_end", False):
            raise Invalid("the tar stream ended early (no end-of-archive blocks): truncated, or garbage after a member")
