"""Spouts and services in the shim without a daemon (shim/longrun.py): the
supervisor loop (still, restarts and their pauses, SIGTERM then SIGKILL, an
absent daemon), the spout's named pipe and tar streams against a fake client,
and the worker loop around a long-running task.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import subprocess
import tarfile
import threading
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mountd import wire
from pachctl.client import errors
from shim import longrun, materialize
from shim.link import GiveUp
from shim.materialize import MaterializeError
from shim.task import Task, TaskError
from shim.worker import EXIT_OK, Worker
from tests.test_shim import (
    FakeReader,
    Logs,
    host_pid,
    in_thread,
    pid_alive,
    running_with,
    task_dict,
    unit_dict,
    wait_for,
)
from tests.test_shim_worker import FakeLink, mock_link

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the shim tests need root (mount namespaces)")
REPOS = {("r", "c"): {"/f": b"input bytes\n"}}


# -- fakes -------------------------------------------------------------------------


class FakeClient:
    """The commit calls a spout makes, over one in-memory branch (``keep=False``: sizes only)."""

    def __init__(self, head: dict[str, bytes] | None = None, keep: bool = True):
        self.head: dict[str, bytes] = dict(head or {})
        self.dirs: set[str] = set()
        self.open: dict[str, dict[str, bytes]] = {}
        self.finished: list[str] = []
        self.deleted: list[str] = []
        self.heads: list[dict[str, bytes]] = []  # the head after each finished commit
        self.puts: list[dict] = []  # every P header
        self.sizes: dict[str, int] = {}
        self.max_segment = 0
        self.keep = keep
        self._n = 0
        self._lock = threading.Lock()

    def start_commit(self, repo: str, branch: str | None = "master") -> Any:
        with self._lock:
            self._n += 1
            cid = f"commit{self._n}"
            self.open[cid] = dict(self.head)
        return types.SimpleNamespace(id=cid)

    def list_file(self, repo: str, commit: str, path: str = "/") -> list[Any]:
        tops = sorted({p.strip("/").split("/")[0] for p in self.open[commit]} | {d.strip("/").split("/")[0] for d in self.dirs})
        return [types.SimpleNamespace(path="/" + t) for t in tops]

    def put_files(self, repo: str, commit: str, records: Iterator[bytes]) -> None:
        files = self.open[commit]
        cur: dict[str, str] = {}

        def start(tag: bytes, h: dict) -> None:
            if tag == wire.PUT:
                self.puts.append(h)
                cur["path"] = h["path"]
                if h["overwrite"] or h["path"] not in files:
                    files[h["path"]] = b""
                    self.sizes[h["path"]] = 0
            elif tag == wire.DELETE:
                for p in [p for p in files if p == h["path"] or p.startswith(h["path"] + "/")]:
                    del files[p]
                self.dirs = {d for d in self.dirs if d != h["path"] and not d.startswith(h["path"] + "/")}
            else:
                self.dirs.add(h["path"])

        def data(d: memoryview) -> None:
            self.max_segment = max(self.max_segment, len(d))
            self.sizes[cur["path"]] = self.sizes.get(cur["path"], 0) + len(d)
            if self.keep:
                files[cur["path"]] += bytes(d)

        dec = wire.Decoder(start, data, lambda: None)
        for rec in records:
            dec.feed(rec)
        dec.close()

    def finish_commit(self, repo: str, commit: str) -> None:
        with self._lock:
            self.head = self.open.pop(commit)
            self.finished.append(commit)
            self.heads.append(dict(self.head))

    def delete_commit(self, repo: str, commit: str) -> None:
        with self._lock:
            self.open.pop(commit, None)
            self.deleted.append(commit)


class StillLink:
    """``still_current`` answers as told; ``client`` for spouts."""

    where = "fake daemon"

    def __init__(self, client: FakeClient | None = None):
        self.current = True
        self.unreachable = False
        self.calls = 0
        self.client = client or FakeClient()

    def still_current(self, pipeline: str, task_id: str) -> bool:
        self.calls += 1
        if self.unreachable:
            raise errors.Unreachable("cannot reach the daemon (fake)")
        return self.current


class Background:
    """Run a callable on a thread of its own (it moves that thread into mount namespaces)."""

    def __init__(self, fn: Callable[[], Any]):
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.future = self.pool.submit(fn)

    def result(self, timeout: float = 20.0) -> Any:
        try:
            return self.future.result(timeout=timeout)
        finally:
            self.pool.shutdown()


def service_task(script: str, **kw: Any) -> dict:
    raw = task_dict(["sh", "-c", script], [unit_dict("service")], kind="service", job_id=None, **kw)
    raw["env"] = {"PACH_JOB_ID": "", "PACH_OUTPUT_COMMIT_ID": ""}
    raw["service"] = {"internal_port": 8080, "external_port": 0}
    return raw


def spout_task(script: str, overwrite: bool = False) -> dict:
    unit = {"unit_id": "service", "datums": ["service"], "env": {}, "files": [], "dirs": []}
    raw = task_dict(["sh", "-c", script], [unit], kind="spout", job_id=None)
    raw["output"] = {"repo": "feed", "branch": "master"}
    raw["spout"] = {"overwrite": overwrite}
    return raw


def supervisor(raw: dict, root: Path, link: StillLink, logs: Logs, stop: threading.Event | None = None,
               give_up: float = 60.0, **knobs: float) -> longrun.LongRunning:
    task = Task.from_dict(raw)
    lr = longrun.LongRunning(
        task,
        lambda: materialize.materialize(task, str(root), FakeReader(REPOS)),
        link,
        logs,
        should_stop=stop.is_set if stop is not None else (lambda: False),
        give_up=give_up,
        client=link.client,
    )
    for name, value in {"restart_min": 0.1, "restart_max": 0.3, "term_grace": 1.0, "still_every": 0.2, **knobs}.items():
        setattr(lr, name, value)
    return lr


def notes(logs: Logs) -> list[str]:
    return [m for m, user in logs.lines if not user]


# -- task parsing --------------------------------------------------------------------


def test_long_running_tasks_parse_and_bad_ones_are_refused():
    svc = Task.from_dict(service_task("true"))
    assert svc.kind == "service" and svc.long_running and svc.internal_port == 8080 and svc.job_id == ""
    sp = Task.from_dict(spout_task("true", overwrite=True))
    assert sp.kind == "spout" and sp.output.repo == "feed" and sp.output.branch == "master" and sp.spout_overwrite
    assert not Task.from_dict(task_dict(["true"])).long_running
    with pytest.raises(TaskError, match="unknown task kind 'cron'"):
        Task.from_dict(task_dict(["true"], kind="cron"))
    with pytest.raises(TaskError, match="no output repo"):
        Task.from_dict(spout_task("true") | {"output": None})


# -- services: the supervisor loop ---------------------------------------------------


def test_service_runs_with_its_inputs_in_a_private_pfs_until_not_current(tmp_path):
    seen, term = tmp_path / "seen", tmp_path / "term"
    script = (
        f'trap "echo bye > {term}; exit 0" TERM; cat /pfs/in/f > {seen}; echo "in=$in commit=$in_COMMIT"; '
        "echo oops >&2; while :; do sleep 0.05; done"
    )
    link, logs = StillLink(), Logs()
    lr = supervisor(service_task(script), tmp_path / "t", link, logs)
    bg = Background(lr.run)
    wait_for(lambda: seen.exists() and seen.read_bytes() == b"input bytes\n", 10, "the service to read its input")
    assert not os.path.exists("/pfs/in/f")  # only the service's namespace has it
    calls = link.calls
    wait_for(lambda: link.calls >= calls + 2, 5, "two more still polls")
    link.current = False
    t0 = time.monotonic()
    assert bg.result() == "the task is no longer current"
    assert time.monotonic() - t0 < 3
    assert term.read_text() == "bye\n"  # SIGTERM first: it could clean up
    assert {"in=/pfs/in commit=c", "oops"} <= set(logs.user())  # (and the shell's "Terminated")
    assert lr.starts == 1
    assert not any("restarting" in n for n in notes(logs))


def test_restart_pauses_double_up_to_the_maximum(tmp_path):
    starts = tmp_path / "starts"
    link, logs = StillLink(), Logs()
    lr = supervisor(service_task(f"date +%s.%N >> {starts}; echo started; exit 3"), tmp_path / "t", link, logs,
                    restart_min=0.1, restart_max=0.3)
    bg = Background(lr.run)
    wait_for(lambda: starts.exists() and len(starts.read_text().split()) >= 5, 15, "five starts")
    link.current = False
    bg.result()
    times = [float(x) for x in starts.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, pause in zip(gaps, [0.1, 0.2, 0.3, 0.3], strict=False):
        assert gap >= pause, gaps
    restarts = [n for n in notes(logs) if "restarting" in n]
    assert "exited with code 3" in restarts[0]
    assert [n.rsplit(" in ", 1)[1] for n in restarts[:4]] == ["0.1 s", "0.2 s", "0.3 s", "0.3 s"]
    assert logs.user().count("started") >= 5


def test_a_start_that_ran_long_enough_restarts_after_the_shortest_pause(tmp_path):
    starts = tmp_path / "starts"
    link, logs = StillLink(), Logs()
    lr = supervisor(service_task(f"echo x >> {starts}; sleep 0.3; exit 1"), tmp_path / "t", link, logs,
                    restart_min=0.1, restart_max=5, steady=0.2)
    bg = Background(lr.run)
    wait_for(lambda: starts.exists() and len(starts.read_text().split()) >= 3, 15, "three starts")
    link.current = False
    bg.result()
    restarts = [n for n in notes(logs) if "restarting" in n]
    assert len(restarts) >= 2
    assert all(n.endswith("restarting it in 0.1 s") for n in restarts), restarts


def test_a_process_ignoring_sigterm_is_killed_after_the_grace(tmp_path):
    pidfile = tmp_path / "pid"
    link, logs = StillLink(), Logs()
    script = f'trap "" TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done # ignoring-term'
    stop = threading.Event()
    lr = supervisor(service_task(script), tmp_path / "t", link, logs, stop, term_grace=0.5)
    bg = Background(lr.run)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the service to start")
    pid = host_pid(int(pidfile.read_text()), "ignoring-term")  # it sees pids of its own namespace
    stop.set()  # what the worker's SIGTERM handler does
    t0 = time.monotonic()
    assert bg.result() == "the worker is stopping"
    took = time.monotonic() - t0
    assert 0.5 <= took < 2.5, took
    assert not pid_alive(pid)


def test_the_service_keeps_running_while_the_daemon_is_away_then_gives_up(tmp_path):
    pidfile = tmp_path / "pid"
    link, logs = StillLink(), Logs()
    link.unreachable = True
    lr = supervisor(service_task(f"echo $$ > {pidfile}; exec sleep 1000.4"), tmp_path / "t", link, logs,
                    give_up=1.0)
    bg = Background(lr.run)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the service to start")
    pid = wait_for(lambda: running_with("1000.4"), 10, "the service's sleep")[0]
    assert pid_alive(pid)
    with pytest.raises(GiveUp, match="unreachable for 1 s"):
        bg.result()
    assert not pid_alive(pid)
    assert any("daemon unreachable" in n for n in notes(logs))


def test_a_task_that_cannot_be_laid_out_is_tried_again(tmp_path):
    started = tmp_path / "started"
    link, logs = StillLink(), Logs()
    lr = supervisor(service_task(f"touch {started}; exec sleep 1000"), tmp_path / "t", link, logs)
    real, failures = lr.lay_out, [2]

    def flaky():
        if failures[0]:
            failures[0] -= 1
            raise MaterializeError("cannot lay out the task's inputs at /x: No space left on device")
        return real()

    lr.lay_out = flaky
    bg = Background(lr.run)
    wait_for(started.exists, 10, "the service to start at the third try")
    link.current = False
    bg.result()
    tries = [n for n in notes(logs) if n.startswith("cannot start the service")]
    assert [t.rsplit(" in ", 1)[1] for t in tries] == ["0.1 s", "0.2 s"]
    assert "No space left on device" in tries[0]


# -- spouts: the named pipe ----------------------------------------------------------


def tar_bytes(files: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def pipe(tmp_path) -> Iterator[tuple[str, FakeClient, Logs, Callable[..., longrun.Spout]]]:
    fifo = str(tmp_path / "out")
    os.mkfifo(fifo)
    client, logs = FakeClient(), Logs()
    spouts: list[longrun.Spout] = []

    def start(**kw: Any) -> longrun.Spout:
        args = {"overwrite": False, "append": False} | kw
        sp = longrun.Spout(fifo, client, "feed", "master", log=logs, **args)
        sp.start()
        spouts.append(sp)
        return sp

    yield fifo, client, logs, start
    for sp in spouts:
        if sp._thread is not None and sp._thread.is_alive():
            sp.stop(0)


def write(fifo: str, *chunks: bytes) -> None:
    with open(fifo, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def test_each_tar_stream_is_a_commit_even_when_writers_do_not_wait(pipe, tmp_path):
    fifo, client, logs, start = pipe
    start()
    src = tmp_path / "src"
    src.mkdir()
    for i in (1, 2, 3):
        (src / f"file{i}").write_text(f"content {i}\n")
    subprocess.run(["sh", "-c", f"for i in 1 2 3; do tar -C {src} -cf {fifo} file$i; done"], check=True)
    # and three archives written through one open of the pipe
    write(fifo, tar_bytes({"a": b"A"}), tar_bytes({"b": b"B"}), tar_bytes({"dir/c": b"C"}))
    wait_for(lambda: len(client.finished) == 6, 10, "six commits")
    assert [sorted(h) for h in client.heads] == [
        ["/file1"], ["/file1", "/file2"], ["/file1", "/file2", "/file3"],
        ["/a", "/file1", "/file2", "/file3"], ["/a", "/b", "/file1", "/file2", "/file3"],
        ["/a", "/b", "/dir/c", "/file1", "/file2", "/file3"],
    ]  # fmt: skip
    assert client.head["/file2"] == b"content 2\n" and client.head["/dir/c"] == b"C"
    assert client.deleted == []
    assert sum("spout: commit" in n for n in notes(logs)) == 6


def test_bad_streams_are_dropped_and_their_commits_deleted(pipe):
    fifo, client, logs, start = pipe
    start()
    good = tar_bytes({"big": b"x" * 5000})
    bad = [
        b"this is not a tar stream\n" * 100,  # refused at its first block: no commit made
        good[:2000],  # the writer died mid-file
        good[: 512 + 5120] + b"junk" * 300,  # garbage where the next header should be
        good[: 512 + 5120],  # no end-of-archive blocks
    ]
    for n, data in enumerate(bad, 1):
        # After a bad stream the reader skips to the moment no writer has the pipe open:
        # a writer coming before that loses its stream too. So one at a time here.
        write(fifo, data)
        wait_for(lambda n=n: sum("was dropped" in m for m in notes(logs)) == n, 10, f"bad stream {n} dropped")
    write(fifo, tar_bytes({"ok": b"fine"}))  # and the pipe still works
    wait_for(lambda: client.finished, 10, "the good stream's commit")
    assert client.head == {"/ok": b"fine"}
    assert len(client.deleted) == 3 and not client.open
    dropped = [n for n in notes(logs) if "was dropped" in n]
    assert len(dropped) == 4
    assert "not a tar stream" in dropped[0]
    assert "unexpected end of data" in dropped[1] and "deleted" in dropped[1]
    assert "ended early" in dropped[2] and "more bytes up to the writer's close were dropped" in dropped[2]
    assert "ended early" in dropped[3]


def test_overwrite_replaces_the_branch_and_empty_archives_make_no_commit(pipe):
    fifo, client, logs, start = pipe
    client.head = {"/old": b"1", "/dir/older": b"2"}
    client.dirs = {"/dir"}
    start(overwrite=True)
    write(fifo, tar_bytes({}), tar_bytes({"new": b"N", "sub/x": b"X"}), tar_bytes({}))
    write(fifo, tar_bytes({"newer": b"M"}))
    wait_for(lambda: len(client.finished) == 2, 10, "two commits")
    assert client.heads == [{"/new": b"N", "/sub/x": b"X"}, {"/newer": b"M"}]
    assert client.open == {} and client.deleted == []


def test_appends_in_1x_replaces_in_2x(pipe, tmp_path):
    fifo, client, logs, start = pipe
    client.head = {"/log": b"first\n"}
    sp = start(append=True)
    write(fifo, tar_bytes({"log": b"second\n"}))
    wait_for(lambda: client.finished, 10, "a commit")
    assert client.head == {"/log": b"first\nsecond\n"}
    sp.stop(0)
    start(append=False)
    write(fifo, tar_bytes({"log": b"third\n"}))
    wait_for(lambda: len(client.finished) == 2, 10, "a commit")
    assert client.head == {"/log": b"third\n"}


def test_compressed_streams_directories_and_links(pipe, tmp_path):
    fifo, client, logs, start = pipe
    start()
    write(fifo, tar_bytes({"z": b"zipped"}, mode="w|gz"))
    wait_for(lambda: client.finished, 10, "the gzip stream's commit")
    assert client.head == {"/z": b"zipped"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(_dir("./"))  # the root: nothing to make
        tf.addfile(_dir("empty"))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "z"
        tf.addfile(link)
    write(fifo, buf.getvalue())
    wait_for(lambda: len(client.finished) == 2, 10, "the second commit")
    assert "/empty" in client.dirs
    assert any("1 entries that are not files or directories skipped" in n for n in notes(logs))


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_a_big_member_is_streamed_not_held(pipe):
    fifo, client, logs, start = pipe
    client.keep = False
    size = 48 << 20
    start()
    tracemalloc.start()
    try:
        header = tarfile.TarInfo("big")
        header.size = size
        with open(fifo, "wb") as f:
            f.write(header.tobuf())
            piece = b"\x5a" * (1 << 20)
            for _ in range(size >> 20):
                f.write(piece)
            f.write(b"\0" * 1024)
        wait_for(lambda: client.finished, 30, "the big stream's commit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert client.sizes["/big"] == size
    assert client.max_segment <= longrun.PIECE
    assert peak < 12 << 20, f"peak {peak >> 20} MiB"


def test_stopping_abandons_a_stream_being_written(pipe):
    fifo, client, logs, start = pipe
    sp = start()
    f = open(fifo, "wb")  # noqa: SIM115 - held open across the stop on purpose
    try:
        f.write(tar_bytes({"partial": b"p" * 20000})[:4096])
        f.flush()
        wait_for(lambda: client.open, 10, "the stream's commit to start")
        t0 = time.monotonic()
        sp.stop(0.2)
        assert time.monotonic() - t0 < 2
        assert not sp._thread.is_alive()
    finally:
        try:
            f.close()
        except BrokenPipeError:
            pass
    assert client.finished == [] and len(client.deleted) == 1
    assert any("stopped while a stream was being read" in n for n in notes(logs))


def test_spout_task_writes_tar_streams_into_its_pfs_out(tmp_path):
    link, logs = StillLink(), Logs()
    script = (
        'd=$(mktemp -d); for i in 1 2 3; do echo "n$i" > "$d/f$i"; tar -C "$d" -cf /pfs/out "f$i"; done; '
        'rm -r "$d"; test -p /pfs/out && echo "a pipe"; exec sleep 1000'
    )
    lr = supervisor(spout_task(script, overwrite=True), tmp_path / "t", link, logs)
    bg = Background(lr.run)
    client = link.client
    wait_for(lambda: len(client.finished) == 3, 10, "three commits")
    link.current = False
    assert bg.result() == "the task is no longer current"
    assert client.head == {"/f3": b"n3\n"}
    assert logs.user() == ["a pipe"]
    assert not lr.spout._thread.is_alive()


# -- the worker loop -----------------------------------------------------------------


class LongLink(FakeLink):
    """FakeLink with the still endpoint: current for ``polls`` answers."""

    def __init__(self, tasks: list[dict], polls: int):
        super().__init__(tasks, REPOS)
        self.polls = polls
        self.client = FakeClient()

    def still_current(self, pipeline: str, task_id: str) -> bool:
        self.polls -= 1
        return self.polls >= 0


def test_worker_keeps_a_service_while_current_then_asks_for_the_next_task(tmp_path):
    marker = tmp_path / "ran"
    raw = service_task(f"echo serving; touch {marker}; exec sleep 1000")
    fake = LongLink([raw], polls=2)
    scratch = tmp_path / "scratch"
    t0 = time.monotonic()
    assert in_thread(Worker(fake, "pipe", "pipe-0", str(scratch), give_up=5).run) == EXIT_OK  # then "pipeline gone"
    assert 1.5 < time.monotonic() - t0 < 10  # about a second per still poll
    assert marker.exists()
    assert fake.uploads == []  # a long-running task has no result
    user = [line for line in fake.logs if line["user"]]
    assert [(x["message"], x["job"], x["datum"], x["pipeline"]) for x in user] == [("serving", None, None, "pipe")]
    assert not scratch.exists()


def test_link_asks_still_with_the_task_id():
    asked: list[str] = []
    answers = iter([{"current": True}, {"current": False}])

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json=next(answers))

    link = mock_link(handler)
    assert link.still_current("web", "t1") is True
    assert link.still_current("web", "t1") is False
    assert asked[0] == "http://mountd/v1/workers/web/still?task=t1"
