"""The shim without a daemon: materializer, executor (namespaces, env, tries,
timeouts), collector. The daemon is a FakeReader (helpers here are shared
with test_shim_worker.py).
"""

from __future__ import annotations

import concurrent.futures
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mountd import wire
from shim import collect, execute, link, materialize, sandbox
from shim.task import Task

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the shim tests need root (mount namespaces)")


class FakeReader:
    """``read_batch``/``walk`` over in-memory repos: ``{(repo, commit): {path: bytes}}``."""

    def __init__(self, repos: dict[tuple[str, str], dict[str, bytes]] | None = None):
        self.repos = repos or {}
        self.batches: list[list[dict]] = []

    def read_batch(self, items: list[dict]) -> Iterator[Iterator[bytes]]:
        self.batches.append(items)
        for it in items:
            data = self.repos[(it["repo"], it["commit"])]["/" + it["path"].lstrip("/")]
            off, length = it["offset"], it["length"]
            data = data[off:] if length < 0 else data[off : off + length]
            yield iter([data[i : i + 5] for i in range(0, len(data), 5)])  # small pieces on purpose

    def walk(self, repo: str, commit: str) -> list[dict]:
        out: list[dict] = []
        dirs: set[str] = set()
        for path, data in sorted(self.repos[(repo, commit)].items()):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/" + "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    out.append({"path": d, "type": "dir", "size": 0})
            out.append({"path": path, "type": "file", "size": len(data)})
        return out


def task_dict(cmd: list[str], units: list[dict] | None = None, **kw: Any) -> dict:
    transform = {"cmd": cmd}
    for key in ("stdin", "err_cmd", "err_stdin", "env", "accept_return_code", "user", "working_dir"):
        if key in kw:
            transform[key] = kw.pop(key)
    d = {
        "task_id": "task1",
        "job_id": "job1",
        "pipeline": "pipe",
        "generation": 2,
        "transform": transform,
        "datum_tries": 1,
        "env": {"PACH_JOB_ID": "job1", "PACH_OUTPUT_COMMIT_ID": "out1"},
        "units": units if units is not None else [unit_dict("u1")],
    }
    d.update(kw)
    return d


def unit_dict(unit_id: str, files: dict[str, str] | None = None, input_name: str = "in") -> dict:
    """A unit whose input ``input_name`` holds ``files`` ({path: src path in repo 'r'@'c'})."""
    files = files if files is not None else {"/f": "/f"}
    return {
        "unit_id": unit_id,
        "datums": [f"d-{unit_id}"],
        "env": {input_name: f"/pfs/{input_name}", f"{input_name}_COMMIT": "c"},
        "files": [
            {"input": input_name, "path": p, "repo": "r", "commit": "c", "src": s, "offset": 0, "length": -1}
            for p, s in files.items()
        ],
        "dirs": [{"input": input_name, "path": "/"}],
    }


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, bool]] = []

    def __call__(self, message: str, user: bool) -> None:
        self.lines.append((message, user))

    def user(self) -> list[str]:
        return [m for m, u in self.lines if u]


def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on a fresh thread: units move their thread into a mount namespace,
    and pytest's own thread should stay where it is."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=60)


def run_task(raw: dict, root: str, reader: FakeReader | None = None, index: int = 0):
    """Materialize ``raw`` and run unit ``index``: (outcome, dirs, logs)."""
    task = Task.from_dict(raw)
    dirs = materialize.materialize(task, root, reader or FakeReader({("r", "c"): {"/f": b"data\n"}}))
    logs = Logs()
    udir = dirs.units[index]

    def prepare(n: int) -> None:
        if n:
            dirs.reset_out(udir)

    outcome = in_thread(execute.run_unit, task, task.units[index], dirs.binds(udir), logs, prepare)
    return outcome, dirs, logs


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def out_file(dirs: materialize.TaskDirs, name: str, index: int = 0) -> str:
    return os.path.join(dirs.units[index].out, name)


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# -- materialize ---------------------------------------------------------------


def test_materialize_pieces_empty_dirs_and_one_read(tmp_path):
    data = {"/big": b"0123456789abcdef", "/small": b"xy", "/e": b"never read"}
    reader = FakeReader({("r", "c"): data})
    u1 = {
        "unit_id": "u1",
        "files": [
            {"input": "a", "path": "/sub/big", "repo": "r", "commit": "c", "src": "/big", "offset": 0, "length": 4},
            {"input": "a", "path": "/sub/big", "repo": "r", "commit": "c", "src": "/big", "offset": 10, "length": -1},
            {"input": "a", "path": "/small", "repo": "r", "commit": "c", "src": "/small"},
            {"input": "a", "path": "/e", "repo": "r", "commit": "c", "src": "/e", "empty": True},
        ],
        "dirs": [{"input": "a", "path": "/"}, {"input": "a", "path": "/nothing/here"}],
    }
    u2 = {"unit_id": "u2", "files": [{"input": "b", "path": "/s", "repo": "r", "commit": "c", "src": "/small"}]}
    task = Task.from_dict(task_dict(["true"], [u1, u2]))
    dirs = materialize.materialize(task, str(tmp_path / "t"), reader)
    a = os.path.join(dirs.units[0].pfs, "a")
    assert read(f"{a}/sub/big") == "0123abcdef"
    assert read(f"{a}/small") == "xy"
    assert read(f"{a}/e") == ""
    assert os.path.isdir(f"{a}/nothing/here")
    assert os.listdir(dirs.units[0].out) == []
    assert sorted(os.listdir(dirs.units[0].pfs)) == ["a", "out"]
    assert read(os.path.join(dirs.units[1].pfs, "b", "s")) == "xy"
    assert len(reader.batches) == 1  # one request per task
    assert [i["path"] for i in reader.batches[0]].count("/small") == 1  # identical inputs read once
    dirs.remove()
    assert not os.path.exists(tmp_path / "t")


def test_materialize_refuses_paths_leaving_pfs(tmp_path):
    bad = {"unit_id": "u", "files": [{"input": "a", "path": "/../../etc/x", "repo": "r", "commit": "c"}]}
    # normpath of "/../../etc/x" is "/etc/x": it stays inside /pfs/a
    task = Task.from_dict(task_dict(["true"], [bad]))
    assert task.units[0].files[0].path == "etc/x"
    with pytest.raises(ValueError, match="not a valid directory name"):
        Task.from_dict(task_dict(["true"], [{"unit_id": "u", "files": [{"input": "..", "path": "/x"}]}]))


def test_prev_is_read_only_and_out_starts_as_its_copy(tmp_path):
    reader = FakeReader({("r", "c"): {"/f": b"in\n"}, ("sum", "p1"): {"/total": b"1\n", "/d/x": b"x"}})
    raw = task_dict(
        ["sh", "-c", "echo 2 >> /pfs/out/total; cat /pfs/prev/d/x; echo nope > /pfs/prev/total"],
        generation=1,
        prev={"repo": "sum", "commit": "p1"},
    )
    outcome, dirs, logs = run_task(raw, str(tmp_path / "t"), reader)
    assert outcome.state == "failed"  # the write to /pfs/prev fails, so sh exits non-zero
    assert "Read-only file system" in outcome.reason
    assert read(out_file(dirs, "total")) == "1\n2\n"
    assert read(os.path.join(dirs.prev, "total")) == "1\n"
    assert "x" in logs.user()


# -- execute -------------------------------------------------------------------


def test_stdin_lines_and_cmd(tmp_path):
    raw = task_dict(["sh"], stdin=["cat /pfs/in/f > /pfs/out/copy", "echo second >> /pfs/out/copy"])
    outcome, dirs, _ = run_task(raw, str(tmp_path / "t"))
    assert outcome.state == "success", outcome.reason
    assert outcome.tries == 1
    assert read(out_file(dirs, "copy")) == "data\nsecond\n"


def test_stdin_ends_with_a_newline_like_pachyderm(tmp_path):
    raw = task_dict(["sh", "-c", "cat > /pfs/out/stdin"], stdin=["a", "b"])
    _, dirs, _ = run_task(raw, str(tmp_path / "t"))
    assert read(out_file(dirs, "stdin")) == "a\nb\n"


def test_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIM_TEST_LEAK", "worker-only")
    raw = task_dict(
        ["sh", "-c", "env > /pfs/out/env"],
        env={"MINE": "transform", "PACH_JOB_ID": "overridden-by-transform"},
        secrets=[{"name": "s", "env_var": "TOKEN", "key": "k", "data": {"k": "sekrit"}}],
    )
    raw["env"]["JOBLEVEL"] = "job"
    outcome, dirs, _ = run_task(raw, str(tmp_path / "t"))
    assert outcome.state == "success", outcome.reason
    env = dict(line.split("=", 1) for line in read(out_file(dirs, "env")).splitlines() if "=" in line)
    assert env["in"] == "/pfs/in"
    assert env["in_COMMIT"] == "c"
    assert env["PACH_OUTPUT_COMMIT_ID"] == "out1"
    assert env["PACH_JOB_ID"] == "overridden-by-transform"  # transform.env comes after the job env
    assert env["JOBLEVEL"] == "job"
    assert env["MINE"] == "transform"
    assert env["TOKEN"] == "sekrit"
    assert "PATH" in env
    assert "SHIM_TEST_LEAK" not in env


def test_missing_secret_key_fails_the_unit_with_the_fix(tmp_path):
    raw = task_dict(["true"], secrets=[{"name": "s", "env_var": "T", "key": "nope", "data": {"k": "v"}}])
    outcome, _, _ = run_task(raw, str(tmp_path / "t"))
    assert outcome.state == "failed"
    assert "secret 's' has no key 'nope'" in outcome.reason
    assert "v" not in outcome.reason.split("'")  # never the value


def test_secret_files_are_private_to_the_unit(tmp_path):
    mount = str(tmp_path / "secret-mnt")
    raw = task_dict(
        ["sh", "-c", f"cat {mount}/password > /pfs/out/pw; ls /pfs/cfg > /pfs/out/ls"],
        secrets=[
            {"name": "s", "mount_path": mount, "data": {"password": "hunter2"}},
            {"name": "t", "mount_path": "/pfs/cfg", "data": {"k": "v"}},
        ],
    )
    outcome, dirs, _ = run_task(raw, str(tmp_path / "t"))
    assert outcome.state == "success", outcome.reason
    assert read(out_file(dirs, "pw")) == "hunter2"
    assert read(out_file(dirs, "ls")) == "k\n"
    assert os.listdir(mount) == []  # the host's directory is only a mount point


def test_accept_return_code(tmp_path):
    raw = task_dict(["sh", "-c", "exit 3"], accept_return_code=[3])
    outcome, _, _ = run_task(raw, str(tmp_path / "t"))
    assert outcome.state == "success"
    raw = task_dict(["sh", "-c", "exit 4"], accept_return_code=[3])
    outcome, _, _ = run_task(raw, str(tmp_path / "u"))
    assert outcome.state == "failed"
    assert outcome.reason.startswith("exit code 4")


def test_failure_is_retried_datum_tries_times_from_a_fresh_out(tmp_path):
    counter = tmp_path / "count"
    script = f"ls /pfs/out >> {counter}; echo try >> /pfs/out/x; echo 'bad things' >&2; exit 1"
    raw = task_dict(["sh", "-c", script], datum_tries=3)
    outcome, dirs, logs = run_task(raw, str(tmp_path / "t"))
    assert outcome.state == "failed"
    assert outcome.tries == 3
    assert outcome.reason == "exit code 1: bad things"
    assert read(str(counter)) == ""  # every try saw an empty /pfs/out
    assert logs.user().count("bad things") == 3
    assert sum(1 for m, u in logs.lines if not u and "failed" in m) == 3


def test_err_cmd_recovers_or_not(tmp_path):
    raw = task_dict(["false"], err_cmd=["sh"], err_stdin=["test -f /pfs/in/f"], datum_tries=2)
    outcome, _, _ = run_task(raw, str(tmp_path / "t"))
    assert (outcome.state, outcome.tries) == ("recovered", 2)
    assert outcome.reason == "exit code 1"
    raw = task_dict(["false"], err_cmd=["sh", "-c", "exit 7"])
    outcome, _, _ = run_task(raw, str(tmp_path / "u"))
    assert outcome.state == "failed"
    assert "err_cmd failed too: exit code 7" in outcome.reason


def running_with(arg: str) -> list[int]:
    """Host pids of live processes with ``arg`` on their command line (user code
    sees pids of its own PID namespace, so it cannot tell us its host pid)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if any(arg.encode() in a for a in f.read().split(b"\0")) and pid_alive(int(name)):
                    found.append(int(name))
        except OSError:
            continue
    return found


def host_pid(ns_pid: int, token: str) -> int:
    """The host pid of the process user code knows as ``ns_pid`` (in its PID
    namespace) and with ``token`` in its command line."""
    for pid in running_with(token) or [-1]:
        try:
            with open(f"/proc/{pid}/status") as f:
                nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        if len(nspid) > 1 and int(nspid[-1]) == ns_pid:
            return pid
    raise AssertionError(f"no process known as {ns_pid} in its namespace runs with {token!r}")


def test_datum_timeout_kills_the_whole_group_promptly(tmp_path):
    raw = task_dict(["sh", "-c", "sleep 1000.1 & sleep 1000"], datum_timeout=0.3)
    t0 = time.monotonic()
    outcome, _, _ = run_task(raw, str(tmp_path / "t"))
    assert time.monotonic() - t0 < 5
    assert outcome.state == "failed"
    assert "timed out after 0.3 s" in outcome.reason
    wait_for(lambda: not running_with("1000.1"), 5, "the background sleep to die")


def test_leftover_background_processes_are_killed(tmp_path):
    raw = task_dict(["sh", "-c", "setsid sleep 1000.2 > /dev/null 2>&1 &"])
    t0 = time.monotonic()
    outcome, _, _ = run_task(raw, str(tmp_path / "t"))
    assert outcome.state == "success"
    assert time.monotonic() - t0 < 5
    wait_for(lambda: not running_with("1000.2"), 5, "the leftover sleep (in a session of its own) to die")


def test_spawn_errors_name_the_fix(tmp_path):
    outcome, _, _ = run_task(task_dict(["/no/such/program"]), str(tmp_path / "t"))
    assert outcome.state == "failed"
    assert "cannot run '/no/such/program'" in outcome.reason
    outcome, _, _ = run_task(task_dict(["true"], working_dir="/pfs/nope"), str(tmp_path / "u"))
    assert "working_dir '/pfs/nope'" in outcome.reason


def test_cd_pfs_out_and_working_dir(tmp_path):
    outcome, dirs, _ = run_task(task_dict(["sh", "-c", "cd /pfs/out && echo hi > x"]), str(tmp_path / "t"))
    assert outcome.state == "success", outcome.reason
    assert read(out_file(dirs, "x")) == "hi\n"
    _, dirs, _ = run_task(task_dict(["sh", "-c", "pwd > /pfs/out/pwd"]), str(tmp_path / "u"))
    assert read(out_file(dirs, "pwd")) == "/\n"  # Pachyderm: the image's WORKDIR, "/" by default
    _, dirs, _ = run_task(task_dict(["sh", "-c", "pwd > /pfs/out/pwd; cat f >> /pfs/out/pwd"], working_dir="/pfs/in"), str(tmp_path / "v"))
    assert read(out_file(dirs, "pwd")) == "/pfs/in\ndata\n"


def test_user_code_runs_as_transform_user(tmp_path):
    raw = task_dict(["sh", "-c", "id -u > /pfs/out/uid; id -u > /tmp/not-allowed-$$ 2>/dev/null; true"], user="65534")
    task = Task.from_dict(raw)
    dirs = materialize.materialize(task, str(tmp_path / "t"), FakeReader({("r", "c"): {"/f": b"x"}}))
    udir = dirs.units[0]
    outcome = in_thread(execute.run_unit, task, task.units[0], dirs.binds(udir), Logs())
    assert outcome.state == "success", outcome.reason
    assert read(out_file(dirs, "uid")) == "65534\n"
    with pytest.raises(ValueError, match="no user 'no-such-user-here'"):
        execute.resolve_user("no-such-user-here")


def test_concurrent_units_each_see_only_their_own_pfs(tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = (
        f"echo $ME > /pfs/out/$ME; touch {barrier}/$ME; "
        f"i=0; while [ $(ls {barrier} | wc -l) -lt 2 ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; "
        "ls /pfs/out > /pfs/out/seen; ls /pfs > /pfs/out/top"
    )
    reader = FakeReader({("r", "c"): {"/f": b"x"}})
    roots = []
    for me in ("one", "two"):
        raw = task_dict(["sh", "-c", script], [unit_dict(me, input_name=f"in_{me}")], env={"ME": me})
        roots.append((raw, str(tmp_path / me)))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run_task, raw, root, reader) for raw, root in roots]
        results = [f.result(timeout=30) for f in futures]
    for me, (outcome, dirs, _) in zip(("one", "two"), results, strict=True):
        assert outcome.state == "success", outcome.reason
        assert sorted(read(out_file(dirs, "seen")).split()) == sorted([me, "seen"])
        assert read(out_file(dirs, "top")).split() == [f"in_{me}", "out"]
    assert os.listdir("/pfs") == []  # nothing leaked to the host


def test_isolation_overhead_is_small():
    """sandbox.enter + release per unit: measured ~0.12 ms on the dev VM."""
    target = "/tmp"

    def measure() -> float:
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            sandbox.enter([sandbox.Bind(target, sandbox.PFS)])
            sandbox.release()
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]

    assert in_thread(measure) < 0.002


# -- collect -------------------------------------------------------------------


def _out(tmp_path, files: dict[str, bytes]) -> collect.View:
    pfs = tmp_path / "pfs"
    for name, data in files.items():
        p = pfs / "out" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (pfs / "out").mkdir(parents=True, exist_ok=True)
    return collect.View(str(pfs))


def test_collect_2x_every_file_is_a_put_and_empty_dirs_a_mkdir(tmp_path):
    view = _out(tmp_path, {"a": b"1", "d/b": b"2"})
    os.makedirs(os.path.join(view.pfs, "out", "empty", "deeper"))
    actions = collect.plan(view)
    assert [(a.kind, a.path) for a in actions] == [("put", "/a"), ("put", "/d/b"), ("mkdir", "/empty/deeper")]


def test_collect_1x_delta(tmp_path):
    prev = tmp_path / "prev"
    for name, data in {"app": b"old\n", "rep": b"old\n", "gone": b"x", "same": b"s", "rewr": b"r", "dir/a": b"a", "dir/b": b"b", "keep/k": b"k"}.items():
        (prev / name).parent.mkdir(parents=True, exist_ok=True)
        (prev / name).write_bytes(data)
    pfs = tmp_path / "pfs"
    pfs.mkdir()
    baseline = materialize.start_out(str(pfs / "out"), str(prev))
    out = pfs / "out"
    with open(out / "app", "ab") as f:
        f.write(b"new\n")
    (out / "rep").write_bytes(b"different\n")
    (out / "gone").unlink()
    (out / "rewr").write_bytes(b"r")  # rewritten with the same bytes
    for name in ("a", "b"):
        (out / "dir" / name).unlink()
    (out / "dir").rmdir()
    (out / "keep" / "k").unlink()  # the directory stays, empty
    (out / "fresh").write_bytes(b"f")
    actions = collect.plan(collect.View(str(pfs), str(prev)), baseline)
    got = [(a.kind, a.path, a.offset) for a in actions]
    assert got == [
        ("delete", "/dir", 0),
        ("delete", "/gone", 0),
        ("delete", "/keep/k", 0),
        ("append", "/app", 4),
        ("put", "/fresh", 0),
        ("put", "/rep", 0),
    ]
    records = b"".join(link.encode_actions(actions))
    assert b"new\n" in records and b"old\n" not in records


def test_collect_follows_symlinks_inside_pfs_only(tmp_path):
    view = _out(tmp_path, {})
    out = os.path.join(view.pfs, "out")
    os.makedirs(os.path.join(view.pfs, "in", "d"))
    with open(os.path.join(view.pfs, "in", "d", "f"), "w") as f:
        f.write("input")
    os.symlink("/pfs/in/d/f", os.path.join(out, "abs"))
    os.symlink("../in/d/f", os.path.join(out, "rel"))
    os.symlink("/pfs/in/d", os.path.join(out, "tree"))
    actions = collect.plan(view)
    host = os.path.join(view.pfs, "in", "d", "f")
    assert [(a.path, a.source) for a in actions] == [("/abs", host), ("/rel", host), ("/tree/f", host)]
    for bad, why in (("/etc/passwd", "outside /pfs"), ("../../../../../etc/passwd", "outside /pfs"), ("/pfs/in/nope", "does not exist")):
        os.symlink(bad, os.path.join(out, "bad"))
        with pytest.raises(collect.CollectError, match=why):
            collect.plan(view)
        os.unlink(os.path.join(out, "bad"))


def test_collect_out_removed_or_replaced(tmp_path):
    view = _out(tmp_path, {"a": b"1"})
    out = os.path.join(view.pfs, "out")
    os.unlink(os.path.join(out, "a"))
    os.rmdir(out)
    assert collect.plan(view) == []
    os.rmdir(out)
    os.symlink("/etc", out)
    with pytest.raises(collect.CollectError, match="replaced by a symlink"):
        collect.plan(view)


def test_collect_refuses_special_files(tmp_path):
    view = _out(tmp_path, {})
    os.mkfifo(os.path.join(view.pfs, "out", "fifo"))
    with pytest.raises(collect.CollectError, match="named pipe"):
        collect.plan(view)


def test_collect_streams_a_huge_file_in_pieces(tmp_path):
    view = _out(tmp_path, {})
    size = 200 << 20
    with open(os.path.join(view.pfs, "out", "huge"), "wb") as f:
        f.truncate(size)  # sparse: cheap to make, still 200 MiB to read
    actions = collect.plan(view)
    tracemalloc.start()
    try:
        total = biggest = 0
        for rec in link.coalesce(link.encode_actions(actions)):
            biggest = max(biggest, len(rec))
            total += len(rec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total > size
    assert biggest <= collect.PIECE + 64
    assert peak < 16 << 20


def test_result_stream_decodes_with_unit_records(tmp_path):
    view = _out(tmp_path, {"a": b"hello"})
    header = execute.Outcome("success", "", 1, 1.0, 2.0).header("u1")
    stream = b"".join([link.encode_unit(header), *link.encode_actions(collect.plan(view))])
    events: list = []
    dec = wire.Decoder(lambda t, h: events.append((t, h)), lambda d: events.append(bytes(d)), lambda: events.append("end"), tags=wire.RESULT_TAGS)
    dec.feed(stream)
    dec.close()
    assert events == [(b"U", header), (b"P", {"path": "/a", "append": False}), b"hello", "end"]
    with pytest.raises(ValueError, match="bad record tag"):
        wire.Decoder(lambda t, h: None, lambda d: None, lambda: None).feed(link.encode_unit(header))
