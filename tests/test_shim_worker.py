"""The worker loop against a fake link, the HTTP link against a mock transport,
``python -m shim`` and the local runner against an address where nothing listens.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mountd import wire
from pachctl.client import errors
from pps.runners import LocalRunner
from pps.runners.base import WorkerSpec
from shim.link import Link
from shim.worker import EXIT_GAVE_UP, EXIT_OK, Worker
from tests.test_shim import (
    FakeReader,
    in_thread,
    pid_alive,
    running_with,
    task_dict,
    unit_dict,
    wait_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the shim tests need root (mount namespaces)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def decode_result(stream: bytes) -> list:
    events: list = []

    def start(tag: bytes, header: dict) -> None:
        events.append((tag.decode(), header))

    def data(d: memoryview) -> None:
        events.append(bytes(d))

    dec = wire.Decoder(start, data, lambda: None, tags=wire.RESULT_TAGS)
    dec.feed(stream)
    dec.close()
    return events


class FakeLink(FakeReader):
    """The worker's view of the daemon: tasks to hand out, then "pipeline gone"."""

    where = "fake daemon"

    def __init__(self, tasks: list[dict], repos: dict, *, unreachable: int = 0, upload_failures: int = 0):
        super().__init__(repos)
        self.tasks = list(tasks)
        self.unreachable = unreachable  # next_task calls that fail before the daemon is "back"
        self.upload_failures = upload_failures
        self.uploads: list[tuple[str, bytes]] = []
        self.logs: list[dict] = []

    def next_task(self, pipeline: str, worker: str, wait: float) -> dict | None:
        if self.unreachable:
            self.unreachable -= 1
            raise errors.Unreachable("cannot reach the daemon (fake)")
        if self.tasks:
            return self.tasks.pop(0)
        raise errors.NotFound(f"pipeline '{pipeline}' not found")

    def upload_result(self, task_id: str, worker: str, records: Iterator[bytes]) -> int:
        body = b"".join(records)  # consumed even when "failing", as a broken connection would
        if self.upload_failures:
            self.upload_failures -= 1
            raise errors.Unreachable("connection reset (fake)")
        self.uploads.append((task_id, body))
        return 1

    def post_logs(self, lines: list[dict]) -> None:
        self.logs.extend(lines)


def test_worker_runs_a_task_and_uploads_units_in_one_stream(tmp_path):
    units = [unit_dict("good"), unit_dict("bad")]
    script = 'echo "log $PACH_JOB_ID"; if [ "$in_COMMIT" = c ] && [ -z "$FAIL" ]; then cp /pfs/in/f /pfs/out/f; fi'
    raw = task_dict(["sh", "-c", script], units)
    raw["units"][1]["env"]["FAIL"] = "1"
    raw["transform"]["cmd"] = ["sh", "-c", script + '; [ -z "$FAIL" ]']
    fake = FakeLink([raw], {("r", "c"): {"/f": b"payload"}}, unreachable=2, upload_failures=1)
    scratch = tmp_path / "scratch"
    worker = Worker(fake, "pipe", "pipe-0", str(scratch), give_up=10)
    assert in_thread(worker.run) == EXIT_OK  # the fake says "pipeline gone" after the task
    assert len(fake.uploads) == 1  # retried after the fake connection reset
    task_id, body = fake.uploads[0]
    assert task_id == "task1"
    events = decode_result(body)
    assert [e[0] if isinstance(e, tuple) else e for e in events] == ["U", "P", b"payload", "U"]
    assert events[0][1]["unit_id"] == "good" and events[0][1]["state"] == "success"
    assert events[1][1] == {"path": "/f", "append": False}
    assert events[3][1]["unit_id"] == "bad" and events[3][1]["state"] == "failed"
    user = [line for line in fake.logs if line["user"]]
    assert {(line["datum"], line["message"]) for line in user} == {("d-good", "log job1"), ("d-bad", "log job1")}
    assert all(line["job"] == "job1" and line["worker"] == "pipe-0" for line in user)
    assert not scratch.exists()


def test_worker_reports_every_unit_when_inputs_cannot_be_read(tmp_path):
    class Broken(FakeLink):
        def read_batch(self, items):
            raise errors.NotFound("commit 'c' not found in repo 'r'")

    fake = Broken([task_dict(["true"], [unit_dict("a"), unit_dict("b")])], {})
    assert in_thread(Worker(fake, "pipe", "w", str(tmp_path / "s"), give_up=1).run) == EXIT_OK
    events = decode_result(fake.uploads[0][1])
    assert [(h["unit_id"], h["state"]) for _, h in events] == [("a", "failed"), ("b", "failed")]
    assert "commit 'c' not found" in events[0][1]["reason"]


def test_worker_lays_out_again_after_the_daemon_drops_a_read(tmp_path):
    class Flaky(FakeLink):
        drops = 1

        def read_batch(self, items):
            if self.drops:
                self.drops -= 1
                yield from []
                raise errors.Unreachable("connection reset (fake)")
            yield from super().read_batch(items)

    raw = task_dict(["sh", "-c", "cat /pfs/in/f > /pfs/out/f"])
    fake = Flaky([raw], {("r", "c"): {"/f": b"again"}})
    assert in_thread(Worker(fake, "pipe", "w", str(tmp_path / "s"), give_up=5).run) == EXIT_OK
    events = decode_result(fake.uploads[0][1])
    assert events[0][1]["state"] == "success" and events[-1] == b"again"


def test_worker_gives_up_on_an_absent_daemon(tmp_path):
    fake = FakeLink([], {}, unreachable=10**9)
    t0 = time.monotonic()
    assert in_thread(Worker(fake, "pipe", "w", str(tmp_path / "s"), give_up=0.3).run) == EXIT_GAVE_UP
    assert time.monotonic() - t0 < 5


# -- the HTTP link -------------------------------------------------------------


def mock_link(handler) -> Link:
    link = Link("unix:/nonexistent.sock")
    link._http.close()
    link._http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://mountd")
    return link


def test_link_read_batch_parses_frames_across_any_chunking():
    items = [b"hello", b"", b"x" * 100_000]
    body = b"".join(struct.pack(">Q", len(i)) + i for i in items)
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.read()))
        chunks = [body[i : i + 3] for i in range(0, 30, 3)] + [body[30:]]
        return httpx.Response(200, content=iter(chunks))

    link = mock_link(handler)
    asked = [{"repo": "r", "commit": "c", "path": f"/{n}", "offset": 0, "length": -1} for n in range(3)]
    got = [b"".join(it) for it in link.read_batch(asked)]
    assert got == items
    assert seen == [{"items": asked}]
    # a consumer that skips an item still gets the next one right
    got = [next(iter(it), b"") for it in link.read_batch(asked)]
    assert got[0][:1] == b"h" and got[1] == b"" and got[2][:1] == b"x"


def test_link_next_task_and_errors():
    answers = iter(
        [
            httpx.Response(204),
            httpx.Response(200, json={"task_id": "t"}),
            httpx.Response(404, json={"error": "pipeline 'p' not found", "kind": "not_found"}),
        ]
    )
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return next(answers)

    link = mock_link(handler)
    assert link.next_task("p", "p-0", 1) is None
    assert link.next_task("p", "p-0", 1) == {"task_id": "t"}
    with pytest.raises(errors.NotFound, match="pipeline 'p' not found"):
        link.next_task("p", "p-0", 1)
    assert urls[0] == "http://mountd/v1/workers/p/next?worker=p-0&wait=1"


def test_link_unreachable_names_the_address():
    link = Link("unix:/nonexistent/mountd.sock")
    with pytest.raises(errors.Unreachable, match="/nonexistent/mountd.sock"):
        link.next_task("p", "w", 0.1)


# -- python -m shim and the local runner --------------------------------------


def test_shim_process_exits_cleanly_on_sigterm(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, PACHY_SHIM_GIVE_UP="60")
    log = tmp_path / "worker.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shim", "--pipeline", "p", "--worker", "p-0", "--address", f"unix:{tmp_path}/none.sock", "--scratch", str(tmp_path / "s")],
            env=env,
            stderr=err,
        )
    try:
        wait_for(lambda: "unreachable" in log.read_text(), 20, "the worker to start retrying")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert "stopped" in log.read_text()
    assert not (tmp_path / "s").exists()


def test_local_runner_reports_a_worker_that_gives_up(tmp_path, monkeypatch):
    monkeypatch.setenv("PACHY_SHIM_GIVE_UP", "1")
    exits: list[tuple[str, str, int]] = []
    done = threading.Event()

    def on_exit(pipeline: str, worker: str, rc: int) -> None:
        exits.append((pipeline, worker, rc))
        done.set()

    runner = LocalRunner(f"unix:{tmp_path}/nothing.sock", str(tmp_path / "home"), on_exit=on_exit)
    try:
        runner.ensure("edges", WorkerSpec("edges"), 1)
        assert runner.running("edges") == 1
        assert done.wait(30), "on_exit was not called"
        assert len(exits) == 1 and exits[0][0] == "edges" and exits[0][2] == EXIT_GAVE_UP
        assert re.fullmatch(r"edges-[0-9a-f]{4}-0", exits[0][1])
        assert runner.running("edges") == 0
        log = (tmp_path / "home" / "logs" / "workers" / f"{exits[0][1]}.log").read_text()
        assert "gave up" in log
    finally:
        runner.close()


def test_local_runner_ensure_scales_and_stop_is_quiet(tmp_path, monkeypatch):
    monkeypatch.setenv("PACHY_SHIM_GIVE_UP", "60")
    exits: list = []
    runner = LocalRunner(f"unix:{tmp_path}/nothing.sock", str(tmp_path / "home"), token="t0k", on_exit=lambda *a: exits.append(a))
    try:
        runner.ensure("p", WorkerSpec("p"), 3)
        assert runner.running("p") == 3
        runner.ensure("p", WorkerSpec("p"), 1)
        assert runner.running("p") == 1
        t0 = time.monotonic()
        runner.stop("p")
        assert time.monotonic() - t0 < 5.5
        assert runner.running("p") == 0
        assert exits == []  # asked-for stops are not news
    finally:
        runner.close()


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _userns_works() -> bool:
    if shutil.which("setpriv") is None or shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*NOBODY, "unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _userns_works(), reason="no unprivileged user namespaces here")
def test_a_worker_without_root_uses_a_user_namespace():
    os.makedirs("/pfs", exist_ok=True)  # what an admin does once on a host without root workers
    work = tempfile.mkdtemp(prefix="shim-nonroot-")
    try:
        os.chmod(work, 0o777)
        script = os.path.join(work, "unit.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(f"""
                import sys
                sys.path.insert(0, {ROOT!r})
                from shim import sandbox
                sandbox.enter_user_namespace()
                from shim import collect, execute, materialize
                from shim.task import Task
                from tests.test_shim import FakeReader, Logs, task_dict, unit_dict
                raw = task_dict(["sh", "-c", "id -u > /pfs/out/uid; cat /pfs/in/f >> /pfs/out/uid"])
                task = Task.from_dict(raw)
                dirs = materialize.materialize(task, {work!r} + "/t", FakeReader({{("r", "c"): {{"/f": b"hi"}}}}))
                outcome = execute.run_unit(task, task.units[0], dirs.binds(dirs.units[0]), Logs())
                print(outcome.state, outcome.reason, open(dirs.units[0].out + "/uid").read().split())
                try:
                    execute.resolve_user("65534")
                except ValueError as exc:
                    print(exc)
            """))
        proc = subprocess.run([*NOBODY, sys.executable, script], capture_output=True, text=True, timeout=60, cwd=work)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "success  ['0', 'hi']"  # root inside its namespace, nobody outside
        assert "needs a worker run as root" in lines[1]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_worker_refuses_a_scratch_directory_it_did_not_make(tmp_path):
    scratch = tmp_path / "precious"
    scratch.mkdir()
    (scratch / "keep.txt").write_text("mine")
    fake = FakeLink([], {})
    assert in_thread(Worker(fake, "pipe", "w", str(scratch), give_up=1).run) == 2
    assert (scratch / "keep.txt").read_text() == "mine"


# -- a worker process against a tiny HTTP stand-in for mountd -------------------


class MiniDaemon:
    """Just the worker endpoints, over a unix socket, with plain http.server."""

    def __init__(self, sock: str, task: dict, files: dict[str, bytes]):
        import http.server
        import json
        import socketserver

        daemon = self
        self.task, self.files = task, files
        self.results: list[bytes] = []
        self.logs: list[dict] = []
        self.handed = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def address_string(self) -> str:  # unix sockets have no peer address
                return "worker"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _send(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self._body()
                if "/next" in self.path:
                    if not daemon.handed.is_set():
                        daemon.handed.set()
                        return self._send(200, json.dumps(daemon.task).encode())
                    time.sleep(0.05)
                    return self._send(204)
                if self.path.startswith("/v1/workers/read"):
                    items = json.loads(body)["items"]
                    data = b"".join(struct.pack(">Q", len(daemon.files[i["path"]])) + daemon.files[i["path"]] for i in items)
                    return self._send(200, data, "application/octet-stream")
                if self.path.startswith("/v1/workers/logs"):
                    daemon.logs.extend(json.loads(line) for line in body.splitlines())
                    return self._send(200, b"{}")
                if "/result" in self.path:
                    daemon.results.append(body)
                    return self._send(200, b'{"accepted": 1}')
                return self._send(404, b'{"error": "no route", "kind": "not_found"}')

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(sock, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _shim(tmp_path, sock: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT, PACHY_SHIM_GIVE_UP="5")
    return subprocess.Popen(
        [sys.executable, "-m", "shim", "--pipeline", "p", "--worker", "p-0", "--address", f"unix:{sock}", "--scratch", str(tmp_path / "s"), "--wait", "0.2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_worker_process_over_http_uploads_the_result(tmp_path):
    sock = str(tmp_path / "d.sock")
    raw = task_dict(["sh", "-c", "echo hello from $PACH_JOB_ID; tr a-z A-Z < /pfs/in/f > /pfs/out/up"])
    mini = MiniDaemon(sock, raw, {"/f": b"shout\n"})
    proc = _shim(tmp_path, sock)
    try:
        wait_for(lambda: mini.results, 20, "the task's result")
        wait_for(lambda: any(line["user"] for line in mini.logs), 10, "the user's log line")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        mini.close()
    events = decode_result(mini.results[0])
    assert events[0][0] == "U" and events[0][1]["state"] == "success"
    assert events[1:] == [("P", {"path": "/up", "append": False}), b"SHOUT\n"]
    assert [line["message"] for line in mini.logs if line["user"]] == ["hello from job1"]


def test_sigterm_during_a_unit_kills_it_and_exits_cleanly(tmp_path):
    sock = str(tmp_path / "d.sock")
    pidfile = tmp_path / "pid"
    raw = task_dict(["sh", "-c", f"echo $$ > {pidfile}; sleep 1000.5"])
    mini = MiniDaemon(sock, raw, {"/f": b"x"})
    proc = _shim(tmp_path, sock)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "the unit to start")
        user_pid = wait_for(lambda: running_with("1000.5"), 10, "the unit's sleep")[0]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
    finally:
        proc.kill()
        mini.close()
    wait_for(lambda: not pid_alive(user_pid), 5, "the unit's process to die")
    assert mini.results == []  # the task is left for another worker
    assert not (tmp_path / "s").exists()



def test_1x_out_handed_to_the_user_reports_only_what_the_code_changed(tmp_path):
    """/pfs/out is handed (chowned) to the unprivileged user before the try; the
    result still has only what the code changed (an append), nothing for the rest."""
    raw = task_dict(["sh", "-c", "id -u > /pfs/out/uid; echo more >> /pfs/out/total"],
                    generation=1, prev={"repo": "sum", "commit": "p1"})
    fake = FakeLink([raw], {("r", "c"): {"/f": b"x"}, ("sum", "p1"): {"/total": b"1\n", "/same": b"s"}})
    assert in_thread(Worker(fake, "pipe", "w", str(tmp_path / "s"), give_up=1).run) == EXIT_OK
    events = decode_result(fake.uploads[0][1])
    assert events[0][1]["state"] == "success", events[0][1]["reason"]
    puts = {e[1]["path"]: (e[1]["append"], nxt) for e, nxt in zip(events, events[1:], strict=False) if isinstance(e, tuple) and e[0] == "P"}
    assert puts["/total"] == (True, b"more\n") and "/same" not in puts  # an append, and nothing for the rest
    assert puts["/uid"][1] != b"0\n"  # not root
