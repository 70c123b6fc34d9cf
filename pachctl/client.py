"""The Python client: the seeds' Go client, in Python.

    from pachctl import Client
    c = Client()                      # the embedded default, started on demand
    c.create_repo("data")
    with c.commit("data", "master") as commit:
        c.put_file("data", commit.id, "sales", b"orange 4\\n")
    print(b"".join(c.get_file("data", "master", "sales")))

``Client("127.0.0.1:30650")`` (or ``ADDRESS``) talks to a remote daemon.
Errors are the same classes the daemon raised (``errors.NotFound``, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import httpx

from mountd import wire
from mountd.models import (
    Branch,
    Commit,
    DiffEntry,
    Event,
    FileInfo,
    FsckReport,
    GcReport,
    MountInfo,
    PutResult,
    Repo,
    Version,
    errors,
)
from mountd.pps_models import (
    CreatePipelines,
    Datum,
    Flush,
    FlushResult,
    InputCommit,
    Job,
    LogLine,
    OutputCommit,
    Pipeline,
    RestartedDatum,
    RunPipeline,
    Secret,
)
from pachctl import config

PIECE = 1 << 20
Source = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO | Iterable[bytes]
Progress = Callable[[int], None]


def _pieces(source: Source, progress: Progress | None = None) -> Iterator[bytes]:
    """Any source as a stream of pieces, never the whole thing at once."""
    if isinstance(source, str):
        source = source.encode()
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for i in range(0, len(view), PIECE):
            piece = bytes(view[i : i + PIECE])
            if progress:
                progress(len(piece))
            yield piece
        return
    if isinstance(source, os.PathLike):
        try:
            f = open(source, "rb")  # noqa: SIM115 - closed below, generator-scoped
        except OSError as exc:
            raise errors.SourceError(f"cannot read '{os.fspath(source)}': {exc.strerror}") from None
        with f:
            try:
                yield from _pieces(f, progress)
            except OSError as exc:  # EIO from /proc/self/mem, a device that fails, ...
                raise errors.SourceError(f"cannot read '{os.fspath(source)}': {exc.strerror or exc}") from None
        return
    if hasattr(source, "read"):
        while True:
            piece = source.read(PIECE)
            if not piece:
                return
            if progress:
                progress(len(piece))
            yield piece
    for piece in source:
        if progress:
            progress(len(piece))
        yield piece


_I64_MAX = (1 << 63) - 1  # the largest count the API takes (SQLite integers)

class Client:
    """A connection to a mountd; cheap to create, safe to reuse."""

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        home: str | None = None,
        autostart: bool | None = None,
        timeout: float = 300.0,
    ):
        self.settings = config.resolve(address, token, home)
        if autostart is None:
            autostart = os.environ.get("PACHY_NO_AUTOSTART", "") in ("", "0")
        self.autostart = autostart and self.settings.address is None
        headers = {"authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
        addr = self.settings.address
        if addr is None or addr.startswith("unix:"):
            self.socket = addr[5:] if addr else os.path.join(self.settings.home, "mountd.sock")
            transport = httpx.HTTPTransport(uds=self.socket, verify=False)  # no TLS on a socket
            base = "http://mountd"
            self.where = self.socket
        else:
            self.socket = None
            base = addr if "://" in addr else f"http://{addr}"
            transport = httpx.HTTPTransport()
            self.where = addr
        # A short call (shell completion: 1 s) also gives up connecting that soon.
        connect = min(10.0, timeout)
        self._http = httpx.Client(
            transport=transport, base_url=base, headers=headers, timeout=httpx.Timeout(timeout, connect=connect)
        )
        self._checked = False

    @classmethod
    def new_from_address(cls, address: str, **kw: Any) -> Client:
        """As the Go client's ``NewFromAddress``."""
        return cls(address, **kw)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------

    def _ensure_daemon(self) -> None:
        """Start the embedded daemon if nothing listens on its socket. A bare
        connect answers that in microseconds; an HTTP round trip per command
        would double every call. Remote daemons (and wrong tokens) answer on
        the first real request."""
        if self._checked:
            return
        if self.socket is not None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(self.socket)
            except OSError as exc:
                if not self.autostart:
                    raise httpx.ConnectError(str(exc)) from None
                self._start_daemon()
        self._checked = True

    def _start_daemon(self) -> None:
        """Start the embedded default's daemon and wait until it answers."""
        from mountd.home import open_private, secure_home  # stdlib only: cheap

        home = secure_home(self.settings.home)  # a home of another user is refused, not written to
        log_path = os.path.join(home, "mountd.log")
        with os.fdopen(open_private(os.path.join(home, "autostart.lock"), os.O_WRONLY | os.O_CREAT), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time
            try:
                self._http.get("/v1/version").raise_for_status()
                return  # someone else started it meanwhile
            except httpx.TransportError:
                pass
            with os.fdopen(open_private(log_path), "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mountd", "--home", home],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=True,
                )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    failed = errors.Unreachable(f"the daemon for {home} exited during start-up; see {log_path}")
                    failed.detail = _tail(log_path)  # the CLI prints it below the one-line error
                    raise failed
                try:
                    self._http.get("/v1/version", timeout=2).raise_for_status()
                    return
                except httpx.TransportError:
                    time.sleep(0.02)
            raise errors.Unreachable(f"the daemon for {home} did not answer within 30 s; see {log_path}")

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        self._ensure_daemon_or_raise()
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return self._check(resp)

    def _ensure_daemon_or_raise(self) -> None:
        try:
            self._ensure_daemon()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> errors.PfsError:
        hint = (
            "is the daemon running? start it with 'pachctl daemon'"
            if self.settings.address is None
            else f"is pachd running at {self.where}? check ADDRESS"
        )
        return errors.Unreachable(f"cannot reach the daemon at {self.where} ({_reason(exc)}); {hint}")

    @staticmethod
    def _check(resp: httpx.Response) -> httpx.Response:
        if resp.status_code < 400:
            return resp
        try:
            resp.read()
            body = resp.json()
        except ValueError:
            raise errors.PfsError(f"daemon answered {resp.status_code}: {resp.text[:200]}") from None
        if isinstance(body, dict) and "kind" in body:
            raise errors.from_kind(body["kind"], body.get("error", resp.text))
        # FastAPI's own answers (no route, a parameter it could not parse).
        kind = {401: "unauthorized", 404: "not_found", 422: "invalid_argument"}.get(resp.status_code, "error")
        detail = body.get("detail") if isinstance(body, dict) else body
        raise errors.from_kind(kind, f"daemon answered {resp.status_code}: {detail}")

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        return self._request(method, url, **kw).json()

    # -- general --------------------------------------------------------------

    def version(self) -> Version:
        return Version(**self._json("GET", "/v1/version"))

    def delete_all(self) -> None:
        self._request("POST", "/v1/delete-all")

    def archive_all(self) -> int:
        return self._json("POST", "/v1/archive-all")["archived"]

    def fsck(self) -> FsckReport:
        return FsckReport(**self._json("POST", "/v1/fsck"))

    def gc(self) -> GcReport:
        return GcReport(**self._json("POST", "/v1/gc"))

    # -- the mount --------------------------------------------------------------

    def mount(
        self,
        path: str,
        write: bool = False,
        repos: list[str] | None = None,
        commit_idle: float | None = None,
        allow_other: bool = False,
    ) -> MountInfo:
        """Mount PFS at ``path`` (served by the daemon); returns once it is ready.
        ``allow_other``: other users may read it too (modes checked by the kernel)."""
        body = {
            "path": os.path.abspath(os.path.expanduser(path)), "write": write, "repos": repos,
            "commit_idle": commit_idle, "allow_other": allow_other,
        }  # fmt: skip
        return MountInfo(**self._json("POST", "/v1/mounts", json=body))

    def unmount(self, path: str | None = None) -> list[str]:
        params = {"path": os.path.abspath(os.path.expanduser(path))} if path else {}
        return self._json("DELETE", "/v1/mounts", params=params)["unmounted"]

    def list_mounts(self) -> list[MountInfo]:
        return [MountInfo(**m) for m in self._json("GET", "/v1/mounts")]

    # -- repos ------------------------------------------------------------------

    def create_repo(self, name: str, description: str = "") -> Repo:
        return Repo(**self._json("POST", "/v1/repos", json={"name": name, "description": description}))

    def list_repo(self) -> list[Repo]:
        return [Repo(**r) for r in self._json("GET", "/v1/repos")]

    def inspect_repo(self, name: str) -> Repo:
        return Repo(**self._json("GET", f"/v1/repos/{_seg(name)}"))

    def delete_repo(self, name: str, force: bool = False) -> None:
        self._request("DELETE", f"/v1/repos/{_seg(name)}", params={"force": force})

    # -- commits ----------------------------------------------------------------

    def start_commit(
        self, repo: str, branch: str | None = "master", parent: str | None = None, description: str = ""
    ) -> Commit:
        body = {"branch": branch, "parent": parent, "description": description}
        return Commit(**self._json("POST", f"/v1/repos/{_seg(repo)}/commits", json=body))

    def finish_commit(self, repo: str, commit: str, description: str | None = None) -> Commit:
        params = {"ref": commit}
        if description is not None:
            params["description"] = description
        return Commit(**self._json("POST", f"/v1/repos/{_seg(repo)}/commit/finish", params=params))

    @contextlib.contextmanager
    def commit(self, repo: str, branch: str | None = "master", parent: str | None = None) -> Iterator[Commit]:
        """Start a commit, yield it, finish it; on an exception, delete it instead."""
        c = self.start_commit(repo, branch, parent)
        try:
            yield c
        except BaseException:
            with contextlib.suppress(errors.PfsError):
                self.delete_commit(repo, c.id)
            raise
        self.finish_commit(repo, c.id)

    def inspect_commit(self, repo: str, commit: str) -> Commit:
        return Commit(**self._json("GET", f"/v1/repos/{_seg(repo)}/commit", params={"ref": commit}))

    def list_commit(
        self,
        repo: str,
        branch: str | None = None,
        n: int | None = None,
        all: bool = False,
        before: str | None = None,
    ) -> list[Commit]:
        """Newest first; ``before`` (a commit id) pages: only commits older than it."""
        params: dict[str, Any] = {"all": all}
        if branch is not None:
            params["branch"] = branch
        if before is not None:
            params["before"] = before
        if n is not None:
            params["n"] = min(n, _I64_MAX) if n >= 0 else n  # more than can exist: all (a negative n is refused)
        return [Commit(**c) for c in self._json("GET", f"/v1/repos/{_seg(repo)}/commits", params=params)]

    def delete_commit(self, repo: str, commit: str) -> None:
        self._request("DELETE", f"/v1/repos/{_seg(repo)}/commit", params={"ref": commit})

    def archive_commit(self, repo: str, commit: str) -> None:
        self._request("POST", f"/v1/repos/{_seg(repo)}/commit/archive", params={"ref": commit})

    def fork_commit(self, repo: str, parent: str, branch: str) -> Commit:
        body = {"parent": parent, "branch": branch}
        return Commit(**self._json("POST", f"/v1/repos/{_seg(repo)}/fork", json=body))

    def squash_commit(self, repo: str, sources: list[str], to: str) -> Commit:
        body = {"from": sources, "to": to}
        return Commit(**self._json("POST", f"/v1/repos/{_seg(repo)}/squash", json=body))

    def replay_commit(self, repo: str, sources: list[str], branch: str) -> list[Commit]:
        """One new commit on ``branch`` per source commit, with the same changes."""
        body = {"from": sources, "branch": branch}
        return [Commit(**c) for c in self._json("POST", f"/v1/repos/{_seg(repo)}/replay", json=body)]

    # -- branches ---------------------------------------------------------------

    def list_branch(self, repo: str) -> list[Branch]:
        return [Branch(**b) for b in self._json("GET", f"/v1/repos/{_seg(repo)}/branches")]

    def create_branch(self, repo: str, branch: str, head: str | None = None) -> Branch:
        url = f"/v1/repos/{_seg(repo)}/branches/{_seg(branch)}"
        return Branch(**self._json("PUT", url, json={"head": head}))

    def delete_branch(self, repo: str, branch: str) -> None:
        self._request("DELETE", f"/v1/repos/{_seg(repo)}/branches/{_seg(branch)}")

    # -- files ------------------------------------------------------------------

    def put_file(
        self,
        repo: str,
        commit: str,
        path: str,
        source: Source,
        overwrite: bool = False,
        progress: Progress | None = None,
        new_commit: bool = False,
    ) -> PutResult:
        """Append ``source`` to ``path`` (or replace it with ``overwrite``), streamed.

        ``source``: bytes or str (the content), a ``pathlib.Path`` (a local
        file), a binary file object, or an iterable of byte pieces.
        ``new_commit``: ``commit`` is a branch; the daemon starts a commit on
        it, writes and finishes it in one step (``result.commit``), or, if the
        upload breaks off (the source fails, this process dies), leaves the
        branch as it was.
        """
        if self.socket is not None and isinstance(source, os.PathLike) and not os.environ.get("PACHY_NO_LOCAL_READ"):
            result = self._put_local(repo, commit, path, source, overwrite, new_commit)
            if result is not None:
                if progress:
                    progress(result.bytes)
                return result
        pieces = _pieces(source, progress)
        first = next(pieces, b"")  # read errors surface before the request
        body = _chain(first, pieces)
        params = {"ref": commit, "path": path, "overwrite": overwrite, "new_commit": new_commit}
        return PutResult(**self._json("PUT", f"/v1/repos/{_seg(repo)}/file", params=params, content=body))

    def _put_local(
        self, repo: str, commit: str, path: str, source: os.PathLike, overwrite: bool, new_commit: bool = False
    ) -> PutResult | None:
        """Same machine: let the daemon read the file itself (no copy through
        HTTP). None when it cannot see the same file; the caller streams."""
        try:
            st = os.stat(source)
        except OSError as exc:
            raise errors.SourceError(f"cannot read '{os.fspath(source)}': {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            return None  # a FIFO, a device: read here, so only this process ever waits on it
        params = {
            "ref": commit, "path": path, "overwrite": overwrite,
            "local": os.path.abspath(source), "dev": st.st_dev, "ino": st.st_ino, "new_commit": new_commit,
        }
        self._ensure_daemon_or_raise()
        try:
            resp = self._http.put(f"/v1/repos/{_seg(repo)}/file", params=params)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if resp.status_code == 412:
            return None
        return PutResult(**self._check(resp).json())

    def put_files(self, repo: str, commit: str, records: Iterable[bytes], new_commit: bool = False) -> PutResult:
        """Many files in one request; ``records`` come from ``mountd.wire``
        (``encode_small_put``, ``encode_put``): all land together or none do.
        ``new_commit`` as for ``put_file``."""
        url = f"/v1/repos/{_seg(repo)}/files"
        params = {"ref": commit, "new_commit": new_commit}
        return PutResult(**self._json("POST", url, params=params, content=_batched(records)))

    def get_file(self, repo: str, commit: str, path: str) -> Iterator[bytes]:
        """The file's bytes as a stream of pieces."""
        self._ensure_daemon_or_raise()
        params = {"ref": commit, "path": path}
        got = 0
        expected = None
        try:
            with self._http.stream("GET", f"/v1/repos/{_seg(repo)}/file", params=params) as resp:
                self._check(resp)
                expected = resp.headers.get("x-pachy-size")
                for piece in resp.iter_bytes(PIECE):
                    got += len(piece)
                    yield piece
        except httpx.TransportError as exc:
            if expected is None:
                raise self._unreachable(exc) from None
        # The daemon can only report a chunk it fails to read mid-file by stopping.
        if expected is not None and got != int(expected):
            try:
                self._http.get("/v1/version", timeout=5).raise_for_status()
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            raise errors.Damaged(
                f"'{path}' in {repo}@{commit} broke off after {got} of {expected} bytes: "
                "the daemon could not read the rest (see its log, and run 'pachctl fsck')"
            )

    def read_file(self, repo: str, commit: str, path: str) -> bytes:
        """A whole (small) file at once."""
        return b"".join(self.get_file(repo, commit, path))

    def inspect_file(self, repo: str, commit: str, path: str) -> FileInfo:
        params = {"ref": commit, "path": path}
        return FileInfo(**self._json("GET", f"/v1/repos/{_seg(repo)}/file/info", params=params))

    def list_file(self, repo: str, commit: str, path: str = "/") -> list[FileInfo]:
        params = {"ref": commit, "path": path}
        return [FileInfo(**f) for f in self._json("GET", f"/v1/repos/{_seg(repo)}/files", params=params)]

    def glob_file(self, repo: str, commit: str, pattern: str) -> list[FileInfo]:
        params = {"ref": commit, "pattern": pattern}
        return [FileInfo(**f) for f in self._json("GET", f"/v1/repos/{_seg(repo)}/glob", params=params)]

    def delete_file(self, repo: str, commit: str, path: str, new_commit: bool = False) -> PutResult | None:
        """Delete a file or directory; ``new_commit`` as for ``put_file``."""
        if new_commit:
            return self.put_files(repo, commit, [wire.encode_header(wire.DELETE, {"path": path})], new_commit=True)
        self._request("DELETE", f"/v1/repos/{_seg(repo)}/file", params={"ref": commit, "path": path})
        return None

    def diff_file(self, repo: str, commit: str, old: str | None = None) -> list[DiffEntry]:
        params = {"ref": commit}
        if old is not None:
            params["old"] = old
        return [DiffEntry(**d) for d in self._json("GET", f"/v1/repos/{_seg(repo)}/diff", params=params)]

    # =========================================================================
    # -- pipelines (PPS): pipelines, jobs, datums, logs, flush, secrets --------
    # =========================================================================
    #
    # Calls that wait for work to happen (a job to finish, a flush, followed
    # logs) have no read timeout: they may legitimately block for hours.

    def create_pipeline(
        self, spec: str | dict | list[dict], update: bool = False, reprocess: bool = False
    ) -> list[Pipeline]:
        """Create (or, with ``update``, replace) pipelines from a spec: its text
        as written (one or several JSON objects, 1.x or 2.x), a dict, or a list
        of dicts. The daemon parses it; returns the pipelines, each with
        ``notes`` on the fields it accepted but cannot act on."""
        body = CreatePipelines(text=_spec_text(spec), update=update, reprocess=reprocess)
        return [Pipeline(**p) for p in self._json("POST", "/v1/pipelines", json=body.model_dump())]

    def update_pipeline(self, spec: str | dict | list[dict], reprocess: bool = False) -> list[Pipeline]:
        return self.create_pipeline(spec, update=True, reprocess=reprocess)

    def list_pipeline(self) -> list[Pipeline]:
        return [Pipeline(**p) for p in self._json("GET", "/v1/pipelines")]

    def inspect_pipeline(self, name: str) -> Pipeline:
        return Pipeline(**self._json("GET", f"/v1/pipelines/{_seg(name)}"))

    def delete_pipeline(self, name: str, force: bool = False, keep_repo: bool = False) -> None:
        params = {"force": force, "keep_repo": keep_repo}
        self._request("DELETE", f"/v1/pipelines/{_seg(name)}", params=params)

    def delete_all_pipelines(self, force: bool = False, keep_repo: bool = False) -> None:
        params = {"all": True, "force": force, "keep_repo": keep_repo}
        self._request("DELETE", "/v1/pipelines", params=params)

    def stop_pipeline(self, name: str) -> Pipeline:
        return Pipeline(**self._json("POST", f"/v1/pipelines/{_seg(name)}/stop"))

    def start_pipeline(self, name: str) -> Pipeline:
        return Pipeline(**self._json("POST", f"/v1/pipelines/{_seg(name)}/start"))

    def run_pipeline(self, name: str, commits: Iterable[InputCommit | tuple[str, str]] = ()) -> Job:
        """A job now, on the inputs' heads, or on the given (repo, commit)s."""
        body = RunPipeline(commits=[_input_commit(c) for c in commits])
        return Job(**self._json("POST", f"/v1/pipelines/{_seg(name)}/run", json=body.model_dump()))

    def create_job(self, spec: str | dict) -> Job:
        """A one-off job from a pipeline spec (1.x ``create-job``)."""
        body = CreatePipelines(text=_spec_text(spec))
        return Job(**self._json("POST", "/v1/jobs", json=body.model_dump()))

    def list_job(
        self, pipeline: str | None = None, input: str | None = None, output: str | None = None,
        n: int | None = None, before: str | None = None,
    ) -> list[Job]:
        """Newest first; ``input``/``output`` as ``repo@commit``; a page of ``n`` jobs,
        older than job ``before`` (the last of the previous page) if given."""
        params: dict[str, Any] = {k: v for k, v in (("pipeline", pipeline), ("input", input), ("output", output),
                                                    ("n", n), ("before", before)) if v}
        return [Job(**j) for j in self._json("GET", "/v1/jobs", params=params)]

    def inspect_job(self, job: str, wait: bool = False) -> Job:
        """A job by ID (or a unique prefix); ``wait``: once it has finished."""
        kw: dict[str, Any] = {"timeout": _NO_READ_TIMEOUT} if wait else {}
        return Job(**self._json("GET", f"/v1/jobs/{_seg(job)}", params={"wait": wait}, **kw))

    def wait_job(self, job: str) -> Job:
        return self.inspect_job(job, wait=True)

    def stop_job(self, job: str) -> None:
        self._request("DELETE", f"/v1/jobs/{_seg(job)}")

    def list_datum(self, job: str) -> list[Datum]:
        return [Datum(**d) for d in self._json("GET", f"/v1/jobs/{_seg(job)}/datums")]

    def inspect_datum(self, job: str, datum: str) -> Datum:
        return Datum(**self._json("GET", f"/v1/jobs/{_seg(job)}/datums/{_seg(datum)}"))

    def restart_datum(self, job: str, datum: str) -> RestartedDatum:
        """Cut a running datum of a running job short and run it again (restart-datum)."""
        return RestartedDatum(**self._json("POST", f"/v1/jobs/{_seg(job)}/datums/{_seg(datum)}/restart"))

    def log_page(
        self,
        pipeline: str | None = None,
        job: str | None = None,
        datum: str | None = None,
        offset: int = 0,
        n: int = 1000,
    ) -> tuple[int, list[LogLine]]:
        """Lines ``offset`` .. ``offset + n`` of a log (negative ``offset``: from the end) and
        how many lines it has in all: a 100,000-line log read a page at a time."""
        params: dict[str, Any] = {k: v for k, v in (("pipeline", pipeline), ("job", job), ("datum", datum)) if v}
        params |= {"offset": offset, "n": n}
        resp = self._request("GET", "/v1/logs", params=params)
        lines = [LogLine.model_validate_json(text) for text in resp.content.splitlines() if text.strip()]
        return int(resp.headers.get("X-Pachy-Lines", len(lines))), lines

    def get_logs(
        self,
        pipeline: str | None = None,
        job: str | None = None,
        datum: str | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """Log lines as they arrive; with ``follow``, until the caller stops."""
        self._ensure_daemon_or_raise()
        params: dict[str, Any] = {k: v for k, v in (("pipeline", pipeline), ("job", job), ("datum", datum)) if v}
        params["follow"] = follow
        kw: dict[str, Any] = {"timeout": _NO_READ_TIMEOUT} if follow else {}
        try:
            with self._http.stream("GET", "/v1/logs", params=params, **kw) as resp:
                self._check(resp)
                for line in resp.iter_lines():
                    if line.strip():
                        yield LogLine.model_validate_json(line)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def events(
        self,
        since: str | None = None,
        kinds: Iterable[str] = (),
        *,
        pipeline: str | None = None,
        job: str | None = None,
        repo: str | None = None,
        follow: bool = True,
        reconnect_for: float = 30.0,
    ) -> Iterator[Event]:
        """The daemon's live events (``GET /v1/events``) after the cursor ``since``
        (None: from now on), filtered by kind prefixes and pipeline/job/repo. With
        ``follow``, never ends by itself: a dropped connection is made again with the
        last cursor (every event comes once, in order; a restarted daemon sends a
        ``reset``: refetch your state), for up to ``reconnect_for`` seconds of trying."""
        self._ensure_daemon_or_raise()
        params: dict[str, Any] = {k: v for k, v in (("pipeline", pipeline), ("job", job), ("repo", repo)) if v}
        if kinds:
            params["kinds"] = ",".join(kinds)
        params["follow"] = follow
        cursor = since
        failing_since: float | None = None
        while True:
            try:
                with self._http.stream("GET", "/v1/events", params=params | ({"since": cursor} if cursor else {}),
                                       timeout=_NO_READ_TIMEOUT) as resp:
                    self._check(resp)
                    failing_since = None
                    for ev in _sse(resp.iter_lines()):
                        if isinstance(ev, str):  # where the stream starts: resume there if no event came
                            cursor = ev
                            continue
                        cursor = ev.cursor
                        yield ev
                if not follow:
                    return
            except httpx.TransportError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_for:
                    raise self._unreachable(exc) from None
                time.sleep(min(1.0, 0.02 + (now - failing_since) / 4))  # back off while the daemon is away

    def flush_commit(
        self,
        commits: Iterable[OutputCommit | tuple[str, str]],
        repos: Iterable[str] = (),
        timeout: float | None = None,
    ) -> FlushResult:
        """Wait until everything downstream of ``commits`` ((repo, commit)
        pairs; branch names allowed) is finished; ``repos``: only these
        downstream repos. ``timeout`` is the daemon's (seconds); the call
        itself waits as long as that takes."""
        oc = [c if isinstance(c, OutputCommit) else OutputCommit(repo=c[0], commit=c[1]) for c in commits]
        body = Flush(commits=oc, repos=list(repos), timeout=timeout)
        return FlushResult(**self._json("POST", "/v1/flush", json=body.model_dump(), timeout=_NO_READ_TIMEOUT))

    def flush_commits(self, commits: Iterable[OutputCommit | tuple[str, str]], repos: Iterable[str] = ()) -> list[Commit]:
        """The downstream commits of a flush as ``Commit``s (failed jobs ignored)."""
        return [Commit(**c) for c in self.flush_commit(commits, repos).commits]

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        """Create or replace a secret; ``data`` maps keys to (plain-text) values."""
        body = Secret(name=name, data=data)
        self._request("PUT", f"/v1/secrets/{_seg(name)}", json=body.model_dump())

    def list_secret(self) -> list[str]:
        """Secret names only: values never come back."""
        return [s if isinstance(s, str) else s["name"] for s in self._json("GET", "/v1/secrets")]

    def inspect_secret(self, name: str) -> dict[str, str]:
        """A secret's keys and plain-text values (``debug datum --show-secrets``)."""
        return dict(self._json("GET", f"/v1/secrets/{_seg(name)}")["data"])

    def delete_secret(self, name: str) -> None:
        self._request("DELETE", f"/v1/secrets/{_seg(name)}")


def _sse(lines: Iterable[str]) -> Iterator[Event | str]:
    """Server-Sent Events as ``Event``s; the stream's ``: cursor C`` comment as ``C``."""
    ev_id = kind = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                body = json.loads("\n".join(data))
                # Built without validation: the daemon's JSON is the model's, and a follower of a
                # 100,000-line log burst must keep up (validation was most of its time per event).
                yield Event.model_construct(cursor=ev_id or body.get("cursor", ""), kind=kind or body.get("kind", ""),
                                            data=body)
            ev_id = kind = None
            data = []
        elif line.startswith(":"):
            if line.startswith(": cursor "):
                yield line[len(": cursor "):].strip()
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                ev_id = value
            elif field == "event":
                kind = value
            elif field == "data":
                data.append(value)


def _seg(name: str) -> str:
    """A path segment; names are validated server-side, but never let one
    smuggle a '/' or '..' into the URL."""
    from urllib.parse import quote

    if "/" in name or name in ("", ".", ".."):
        raise errors.InvalidArgument(f"invalid name '{name}': names use letters, digits, '_' and '-'")
    return quote(name, safe="")


_NO_READ_TIMEOUT = httpx.Timeout(None, connect=10.0)


def _spec_text(spec: str | dict | list[dict]) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return json.dumps(spec, indent=2)
    return "\n".join(json.dumps(s, indent=2) for s in spec)


def _input_commit(c: InputCommit | tuple[str, str]) -> InputCommit:
    if isinstance(c, InputCommit):
        return c
    repo, commit = c
    return InputCommit(name=repo, repo=repo, commit=commit)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _batched(records: Iterable[bytes], target: int = 1 << 20) -> Iterator[bytes]:
    """Join small records so the socket sees few large writes."""
    buf = bytearray()
    for rec in records:
        buf += rec
        if len(buf) >= target:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "No such file" in text or "Errno 2" in text:
        return "no socket"
    if "refused" in text.lower():
        return "connection refused"
    return text


def _tail(path: str, lines: int = 10) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


__all__ = ["Client", "errors", "wire"]
