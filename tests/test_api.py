"""The HTTP API through the real daemon (``python -m mountd``) and the Python client."""

from __future__ import annotations

import io
import os
import random
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mountd import wire
from pachctl.client import Client, errors
from tests.conftest import (
    Daemon,
    free_port,
    pid_gone,
    spawn_daemon,
    stop_pid,
    wait_for,
    wait_until_answering,
)

MiB = 1 << 20


def names_in(client: Client, repo: str, ref: str, path: str = "/") -> set[str]:
    return {f.path for f in client.list_file(repo, ref, path)}


def test_seed_19_6_example(client: Client) -> None:
    client.create_repo("foo")
    assert client.start_commit("foo", "master").ref == "master/0"
    client.put_file("foo", "master/0", "test.txt", b"hai\n")
    client.finish_commit("foo", "master/0")
    assert client.start_commit("foo", "master").ref == "master/1"
    client.put_file("foo", "master/1", "test.txt", "bai\n")
    client.finish_commit("foo", "master/1")
    assert client.read_file("foo", "master/1", "test.txt") == b"hai\nbai\n"
    assert client.read_file("foo", "master/0", "test.txt") == b"hai\n"
    assert [c.ref for c in client.list_commit("foo")] == ["master/1", "master/0"]


def test_put_file_sources(client: Client, tmp_path: Path) -> None:
    client.create_repo("r")
    c = client.start_commit("r")
    local = tmp_path / "local.bin"
    local_data = os.urandom(3 * MiB + 17)
    local.write_bytes(local_data)
    sources: dict[str, tuple[object, bytes]] = {
        "bytes": (b"raw bytes", b"raw bytes"),
        "str": ("text \u00e9", "text \u00e9".encode()),
        "path": (local, local_data),
        "fileobj": (io.BytesIO(b"from a file object" * 1000), b"from a file object" * 1000),
        "generator": (
            (bytes([i]) * 1000 for i in range(200)),
            b"".join(bytes([i]) * 1000 for i in range(200)),
        ),
        "bytearray": (bytearray(b"ba"), b"ba"),
        "memoryview": (memoryview(b"mv-data")[3:], b"data"),
    }
    for path, (source, _expected) in sources.items():
        result = client.put_file("r", c.id, f"src/{path}", source)
        assert result.files == 1 and result.bytes == len(_expected)
    with open(local, "rb") as f:
        client.put_file("r", c.id, "src/opened", f)
    client.finish_commit("r", c.id)
    for path, (_source, expected) in sources.items():
        assert client.read_file("r", "master", f"src/{path}") == expected, path
    assert client.read_file("r", "master", "src/opened") == local_data
    assert client.inspect_file("r", "master", "src/path").size == len(local_data)


def test_put_file_missing_local_source(client: Client, tmp_path: Path) -> None:
    client.create_repo("r")
    c = client.start_commit("r")
    with pytest.raises(errors.SourceError):
        client.put_file("r", c.id, "x", tmp_path / "does-not-exist")
    assert names_in(client, "r", c.id) == set()


def test_put_file_overwrite_and_progress(client: Client) -> None:
    client.create_repo("r")
    seen: list[int] = []
    with client.commit("r") as c:
        client.put_file("r", c.id, "f", b"a" * 10)
        client.put_file("r", c.id, "f", b"b" * (2 * MiB + 5), progress=seen.append)
    assert sum(seen) == 2 * MiB + 5 and len(seen) == 3
    assert client.inspect_file("r", "master", "f").size == 2 * MiB + 15
    with client.commit("r") as c:
        client.put_file("r", c.id, "f", b"new", overwrite=True)
    assert client.read_file("r", "master", "f") == b"new"


def test_get_file_streams_a_big_file(client: Client) -> None:
    size = 30 * MiB
    data = random.Random(11).randbytes(size)
    client.create_repo("r")
    with client.commit("r") as c:
        client.put_file("r", c.id, "big", data)
    pieces = 0
    offset = 0
    for piece in client.get_file("r", "master", "big"):
        assert 0 < len(piece) <= 8 * MiB
        assert piece == data[offset : offset + len(piece)]
        offset += len(piece)
        pieces += 1
    assert offset == size and pieces >= 10
    assert client.inspect_file("r", "master", "big").chunks > 1


def test_put_files_batch_lands_atomically(client: Client) -> None:
    client.create_repo("r")
    c = client.start_commit("r")
    client.put_file("r", c.id, "before", b"0")
    n = 2000
    records = [wire.encode_small_put(f"f{i:04d}", b"content %d\n" % i) for i in range(n)]
    counts: set[int] = set()
    done = threading.Event()
    failure: list[BaseException] = []

    def watch() -> None:
        watcher = Client(home=str(client.settings.home), autostart=False)
        try:
            while not done.is_set():
                counts.add(len(watcher.list_file("r", c.id)))
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            watcher.close()

    t = threading.Thread(target=watch)
    t.start()
    try:
        result = client.put_files("r", c.id, records)
    finally:
        done.set()
        t.join(30)
    assert not failure, failure
    assert result.files == n
    assert counts <= {1, n + 1}  # a reader sees none of the batch or all of it
    listed = client.list_file("r", c.id)
    assert len(listed) == n + 1
    client.finish_commit("r", c.id)
    assert client.read_file("r", "master", "f1234") == b"content 1234\n"
    assert client.inspect_commit("r", "master").size == 1 + sum(
        len(b"content %d\n" % i) for i in range(n)
    )


def test_put_files_batch_with_big_file_mkdir_and_delete(client: Client) -> None:
    client.create_repo("r")
    with client.commit("r") as c:
        client.put_file("r", c.id, "old/x", b"x")
    big = random.Random(12).randbytes(3 * MiB)

    def records() -> Iterator[bytes]:
        yield wire.encode_header(wire.DELETE, {"path": "old"})
        yield wire.encode_header(wire.MKDIR, {"path": "empty"})
        yield from wire.encode_put(
            "big", (big[i : i + 100_000] for i in range(0, len(big), 100_000))
        )
        yield wire.encode_small_put("small", b"s")

    with client.commit("r") as c:
        client.put_files("r", c.id, records())
    assert names_in(client, "r", "master") == {"/empty", "/big", "/small"}
    assert client.read_file("r", "master", "big") == big


def test_put_files_batch_with_invalid_path_lands_nothing(client: Client) -> None:
    client.create_repo("r")
    c = client.start_commit("r")
    client.put_file("r", c.id, "existing", b"e")
    before = client.list_file("r", c.id)
    records = [wire.encode_small_put(f"ok{i}", b"x") for i in range(500)]
    records.append(wire.encode_small_put("a/../b", b"bad"))
    records += [wire.encode_small_put(f"after{i}", b"y") for i in range(500)]
    with pytest.raises(errors.InvalidArgument, match=r"\.\."):
        client.put_files("r", c.id, records)
    assert client.list_file("r", c.id) == before
    # a malformed stream is refused the same way
    with pytest.raises(errors.InvalidArgument):
        client.put_files("r", c.id, [wire.encode_small_put("fine", b"1"), b"Zjunk"])
    with pytest.raises(errors.InvalidArgument):
        client.put_files("r", c.id, [wire.encode_small_put("fine", b"1")[:-2]])
    assert client.list_file("r", c.id) == before
    # the commit is still usable
    client.put_files("r", c.id, [wire.encode_small_put("good", b"g")])
    assert names_in(client, "r", c.id) == {"/existing", "/good"}


def test_put_file_invalid_path_and_finished_commit(client: Client) -> None:
    client.create_repo("r")
    with client.commit("r") as c:
        for bad in ("a/../b", "/", "a//b"):
            with pytest.raises(errors.InvalidArgument):
                client.put_file("r", c.id, bad, b"x" * 100)
    with pytest.raises(errors.Conflict):
        client.put_file("r", c.id, "late", b"x" * (2 * MiB))
    assert names_in(client, "r", "master") == set()


def test_error_classes_cross_the_wire(client: Client) -> None:
    client.create_repo("r")
    with client.commit("r") as c:
        client.put_file("r", c.id, "file", b"f")
    cases: list[tuple[type[errors.PfsError], Callable[[], object]]] = [
        (errors.NotFound, lambda: client.inspect_repo("nope")),
        (errors.NotFound, lambda: client.delete_repo("nope")),
        (errors.NotFound, lambda: client.inspect_commit("r", "master/7")),
        (errors.NotFound, lambda: client.inspect_commit("r", "nobranch")),
        (errors.NotFound, lambda: client.start_commit("nope")),
        (errors.NotFound, lambda: client.inspect_file("r", "master", "missing")),
        (errors.NotFound, lambda: client.read_file("r", "master", "missing")),
        (errors.NotFound, lambda: client.read_file("nope", "master", "file")),
        (errors.NotFound, lambda: client.list_file("r", "master", "missing")),
        (errors.NotFound, lambda: client.delete_branch("r", "nobranch")),
        (errors.AlreadyExists, lambda: client.create_repo("r")),
        (errors.AlreadyExists, lambda: client.fork_commit("r", "master", "master")),
        (errors.Conflict, lambda: client.finish_commit("r", "master")),
        (errors.Conflict, lambda: client.put_file("r", "master", "x", b"x")),
        (errors.InvalidArgument, lambda: client.create_repo("a b")),
        (errors.InvalidArgument, lambda: client.create_repo("x" * 51)),
        (errors.InvalidArgument, lambda: client.inspect_commit("r", "master/x")),
        (errors.InvalidArgument, lambda: client.read_file("r", "master", "/")),
    ]
    for expected, call in cases:
        with pytest.raises(expected) as info:
            call()
        assert type(info.value) is expected, (expected, info.value)
        assert str(info.value)
    client.start_commit("r")
    with pytest.raises(errors.Conflict):
        client.start_commit("r")  # the head is open
    # repo names that could smuggle path segments are just not found / invalid
    with pytest.raises((errors.NotFound, errors.InvalidArgument)):
        client.inspect_repo("../v1")


def test_commit_context_manager(client: Client) -> None:
    client.create_repo("r")
    with client.commit("r", "master") as c:
        client.put_file("r", c.id, "ok", b"1")
    info = client.inspect_commit("r", c.id)
    assert info.finished is not None and info.ref == "master/0"
    with pytest.raises(RuntimeError, match="boom"), client.commit("r", "master") as c2:
        client.put_file("r", c2.id, "half", b"2")
        raise RuntimeError("boom")
    with pytest.raises(errors.NotFound):
        client.inspect_commit("r", c2.id)
    head = client.inspect_commit("r", "master")
    assert head.id == c.id and head.finished is not None
    assert names_in(client, "r", "master") == {"/ok"}
    with client.commit("r") as c3:  # the branch is usable again
        pass
    assert client.inspect_commit("r", "master").id == c3.id


def test_api_tour(client: Client) -> None:
    """The rest of the surface, for the wire conversions."""
    client.create_repo("r", description="desc")
    repo = client.inspect_repo("r")
    assert (repo.name, repo.description) == ("r", "desc")
    with client.commit("r") as c0:
        client.put_file("r", c0.id, "a/x.txt", b"1")
        client.put_file("r", c0.id, "b.csv", b"22")
    with client.commit("r") as c1:
        client.put_file("r", c1.id, "a/y.txt", b"333")
        client.delete_file("r", c1.id, "b.csv")
    assert {f.path for f in client.glob_file("r", "master", "**/*.txt")} == {"/a/x.txt", "/a/y.txt"}
    assert {(d.path, d.status) for d in client.diff_file("r", "master")} == {
        ("/a/y.txt", "added"),
        ("/b.csv", "deleted"),
    }
    assert {d.path for d in client.diff_file("r", "master", "master")} == set()
    assert client.inspect_file("r", "master", "a").size == 4
    assert client.inspect_commit("r", "master").size == 4
    assert client.inspect_repo("r").size == 4
    fork = client.fork_commit("r", "master/0", "dev")
    assert fork.ref == "dev/0" and fork.parent == c0.id
    client.squash_commit("r", [c1.id], fork.id)
    client.finish_commit("r", fork.id, description="squashed")
    assert names_in(client, "r", "dev") == {"/a"}
    assert client.inspect_commit("r", "dev").description == "squashed"
    b = client.create_branch("r", "stable", "master/0")
    assert b.head == c0.id
    assert {x.name for x in client.list_branch("r")} == {"dev", "master", "stable"}
    client.delete_branch("r", "stable")
    client.archive_commit("r", "master/0")
    assert [c.id for c in client.list_commit("r", "master")] == [c1.id]
    assert len(client.list_commit("r", all=True)) == 3
    assert len(client.list_commit("r", n=1, all=True)) == 1
    assert client.archive_all() == 2
    assert client.fsck().ok
    assert client.gc().packs_deleted == 0
    client.delete_repo("r")
    assert client.list_repo() == []
    client.create_repo("s")
    client.delete_all()
    assert client.list_repo() == []


def test_openapi_schema_and_socket_mode(daemon: Daemon) -> None:
    sock = daemon.home / "mountd.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://mountd"
    ) as http:
        resp = http.get("/openapi.json")
        assert resp.status_code == 200
        schema = resp.json()
    assert "/v1/repos" in schema["paths"]
    assert {"get", "post"} <= set(schema["paths"]["/v1/repos"])
    assert "/v1/repos/{repo}/file" in schema["paths"]
    version = daemon.client.version()
    assert version.pid == daemon.proc.pid and Path(version.home) == daemon.home


def test_tcp_with_token(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    good = Client(address, token="secret", timeout=30)
    d = start_daemon(tmp_path / "tcp-home", "--listen", address, "--token", "secret", client=good)
    assert not (d.home / "mountd.sock").exists()
    good.create_repo("r")
    with good.commit("r") as c:
        good.put_file("r", c.id, "f", b"over tcp")
    assert good.read_file("r", "master", "f") == b"over tcp"
    for token in ("wrong", None):
        with Client(address, token=token, timeout=30) as bad:
            with pytest.raises(errors.Unauthorized):
                bad.list_repo()
            with pytest.raises(errors.Unauthorized):
                bad.read_file("r", "master", "f")
            with pytest.raises(errors.Unauthorized):
                bad.put_file("r", "master", "g", b"x" * MiB)
    # the schema stays public
    assert httpx.get(f"http://{address}/openapi.json", timeout=10).status_code == 200
    assert [r.name for r in good.list_repo()] == ["r"]


def test_tcp_token_made_up_and_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--listen without --token: the daemon makes one up, saves it 0600 in its
    home, and clients must present it (PACHY_TOKEN works too)."""
    address = f"127.0.0.1:{free_port()}"
    home = tmp_path / "tcp-auto"
    token_file = home / "token"
    proc = spawn_daemon(home, "--listen", address)
    try:
        wait_for(
            lambda: token_file.exists() and token_file.read_text().strip(), 30, "the token file"
        )
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 20
        with Client(address, token=token, timeout=30) as good:
            wait_until_answering(proc, good, home.parent / f"{home.name}-mountd.log")
            good.create_repo("r")
        with Client(address, timeout=30) as anonymous, pytest.raises(errors.Unauthorized):
            anonymous.list_repo()
        monkeypatch.setenv("PACHY_TOKEN", token)
        with Client(address, timeout=30) as from_env:
            assert [r.name for r in from_env.list_repo()] == ["r"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0


def _daemon_pid(home: Path) -> int | None:
    try:
        return int((home / "mountd.lock").read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def test_autostart_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "auto"
    assert not home.exists()
    try:
        # several clients at once: exactly one daemon starts
        pids: list[int] = []
        failures: list[BaseException] = []

        def first_contact() -> None:
            try:
                with Client(home=str(home)) as c:
                    pids.append(c.version().pid)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=first_contact) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        assert len(pids) == 3 and len(set(pids)) == 1
        pid = pids[0]
        assert pid != os.getpid() and _daemon_pid(home) == pid
        with Client(home=str(home)) as first:
            assert Path(first.version().home) == home
            first.create_repo("r")
        with Client(home=str(home)) as second:
            assert second.version().pid == pid
            assert [r.name for r in second.list_repo()] == ["r"]
        # PACHY_HOME selects the same home
        monkeypatch.setenv("PACHY_HOME", str(home))
        with Client() as third:
            assert third.version().pid == pid
        assert (home / "mountd.log").exists()
        # with autostart off and the daemon gone, nothing starts
        stop_pid(pid)
        with pytest.raises(errors.Unreachable):
            Client(home=str(home), autostart=False).list_repo()
        monkeypatch.setenv("PACHY_NO_AUTOSTART", "1")
        with pytest.raises(errors.Unreachable):
            Client(home=str(home)).list_repo()
        assert not (home / "mountd.sock").exists()
    finally:
        pid = _daemon_pid(home)
        if pid is not None and not pid_gone(pid):
            stop_pid(pid)


def test_sigterm_stops_cleanly(daemon: Daemon) -> None:
    sock = daemon.home / "mountd.sock"
    daemon.client.create_repo("r")
    assert sock.exists()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    assert not sock.exists()
    assert "stopped" in daemon.log_text()
    with pytest.raises(errors.Unreachable):
        Client(home=str(daemon.home), autostart=False).list_repo()


def test_second_daemon_on_same_home_refuses(daemon: Daemon) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "mountd", "--home", str(daemon.home)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0
    assert "already runs" in second.stderr and str(daemon.proc.pid) in second.stderr
    # the first one is unharmed and still owns its socket
    assert daemon.client.version().pid == daemon.proc.pid
    assert (daemon.home / "mountd.sock").exists()
    assert not pid_gone(daemon.proc.pid)


def test_concurrent_clients(client: Client) -> None:
    client.create_repo("r")
    c = client.start_commit("r")
    errors_seen: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            with Client(home=str(client.settings.home), autostart=False) as mine:
                for i in range(20):
                    mine.put_file("r", c.id, f"w{k}/f{i}", b"%d-%d" % (k, i))
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors_seen, errors_seen
    client.finish_commit("r", c.id)
    for k in range(4):
        assert len(client.list_file("r", "master", f"w{k}")) == 20
    assert client.read_file("r", "master", "w3/f19") == b"3-19"
    assert client.fsck().ok


def test_early_errors_on_big_uploads_answer_promptly(daemon: Daemon) -> None:
    """An error found before the body is all read must still reach the client
    (which sends the whole body first) promptly, and leave the connection usable."""
    client = Client(home=str(daemon.home), autostart=False, timeout=15)
    client.create_repo("r")
    with client.commit("r") as done:
        pass
    c = client.start_commit("r")
    filler = b"y" * 10_000
    records = [wire.encode_small_put("a/../b", b"bad")] + [
        wire.encode_small_put(f"f{i}", filler) for i in range(2000)
    ]
    for _ in range(2):
        with pytest.raises(errors.InvalidArgument):
            client.put_files("r", c.id, records)
        assert names_in(client, "r", c.id) == set()
        with pytest.raises(errors.Conflict):
            client.put_file("r", done.id, "late", random.Random(13).randbytes(20 * MiB))
        assert names_in(client, "r", done.id) == set()
    client.close()


def test_empty_file_and_unusual_names(client: Client) -> None:
    client.create_repo("r")
    weird = "dir with space/\u00fc \u65e5\u672c#?%&=+.txt"
    with client.commit("r") as c:
        client.put_file("r", c.id, "empty", b"")
        client.put_file("r", c.id, "empty-gen", iter([]))
        client.put_file("r", c.id, weird, b"weird")
    assert client.read_file("r", "master", "empty") == b""
    assert client.read_file("r", "master", "empty-gen") == b""
    assert client.inspect_file("r", "master", "empty").size == 0
    assert client.read_file("r", "master", weird) == b"weird"
    assert names_in(client, "r", "master", "dir with space") == {"/" + weird}
    assert {f.path for f in client.glob_file("r", "master", "dir*/*.txt")} == {"/" + weird}


def test_damaged_file_is_an_error_never_a_short_read(daemon: Daemon) -> None:
    client = daemon.client
    client.create_repo("r")
    rng = random.Random(14)
    big, small = rng.randbytes(10 * MiB), rng.randbytes(300_000)
    with client.commit("r") as c:
        client.put_file("r", c.id, "big", big)
        client.put_file("r", c.id, "small", small)
    assert client.inspect_file("r", "master", "big").chunks > 2
    packs = sorted(
        (f for f in (daemon.home / "objects" / "packs").rglob("*") if f.is_file()),
        key=lambda f: f.stat().st_size,
    )
    assert len(packs) == 2
    for pack, offset in ((packs[-1], packs[-1].stat().st_size - 5000), (packs[0], 10)):
        with open(
            pack, "r+b"
        ) as f:  # flip a byte: the big file's last chunk, the small file's only one
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 1]))
    for path in ("small", "big"):
        with pytest.raises(errors.Damaged):
            client.read_file("r", "master", path)
    assert not client.fsck().ok
    assert client.version().pid == daemon.proc.pid  # still serving


def test_local_file_is_read_by_the_daemon_and_falls_back_to_streaming(client, tmp_path, monkeypatch) -> None:
    """A client on the daemon's socket names a local file; the daemon reads it
    itself. When the daemon cannot see the same file, the client streams it."""
    src = tmp_path / "big.bin"
    payload = os.urandom(9 << 20)
    src.write_bytes(payload)
    client.create_repo("localread")
    with client.commit("localread", "master") as c:
        r = client.put_file("localread", c.id, "direct.bin", src)
        assert r.bytes == len(payload)
        # A different inode than the daemon will open: it must refuse (412)...
        resp = client._http.put(
            "/v1/repos/localread/file",
            params={"ref": c.id, "path": "x", "local": str(src), "dev": 1, "ino": 1},
        )
        assert resp.status_code == 412
        # ...and the client then streams, with the same result.
        monkeypatch.setattr(client, "_put_local", lambda *a, **k: None)
        client.put_file("localread", c.id, "streamed.bin", src)
    assert client.read_file("localread", "master", "direct.bin") == payload
    assert client.read_file("localread", "master", "streamed.bin") == payload
    assert [f.path for f in client.list_file("localread", "master")] == ["/direct.bin", "/streamed.bin"]


def test_local_read_of_a_missing_file_is_a_source_error(client, tmp_path) -> None:
    client.create_repo("localmissing")
    with client.commit("localmissing", "master") as c, pytest.raises(errors.SourceError):
        client.put_file("localmissing", c.id, "x", tmp_path / "nope")


# -- malformed requests, the OpenAPI's statuses, OPTIONS (issue 9, item 11) --------


def _uds(daemon: Daemon) -> httpx.Client:
    sock = str(daemon.home / "mountd.sock")
    return httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://mountd", timeout=30)


def test_malformed_bodies_are_400s_never_500s(daemon: Daemon, tmp_path: Path) -> None:
    """Bodies that are not JSON, not the right shape, or hold values out of range
    answer 400 in the API's error shape; the daemon logs no traceback."""
    outside = tmp_path / "planted"
    bad: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("POST", "/v1/workers/read", None, {}),
        ("POST", "/v1/workers/read", b"{not json", {"content-type": "application/json"}),
        ("POST", "/v1/workers/read", b'{"items": [{"repo": 1}]}', {"content-type": "application/json"}),
        ("POST", "/v1/workers/read", b'{"items": "x"}', {"content-type": "application/json"}),
        (
            "POST",
            "/v1/workers/read",
            b'{"items": [{"repo": "r", "commit": "c", "path": "/f", "offset": -5}]}',
            {"content-type": "application/json"},
        ),
        ("POST", "/v1/workers/logs", b"{not json\n", {}),
        ("POST", "/v1/workers/logs", b'{"message": "no pipeline"}\n', {}),
        ("POST", "/v1/workers/logs", b"[1, 2]\n", {}),
        # a log line's job names its log file: no path may ride in it
        (
            "POST",
            "/v1/workers/logs",
            b'{"pipeline": "p", "job": "../../../' + str(outside).encode() + b'", "message": "m"}\n',
            {},
        ),
        ("POST", "/v1/repos", b"\xff\xfe", {"content-type": "application/json"}),
        ("POST", "/v1/repos", b'{"name": 3}', {"content-type": "application/json"}),
        ("PUT", "/v1/secrets/s", b"[", {"content-type": "application/json"}),
        ("POST", "/v1/flush", b"{}", {"content-type": "application/json"}),
        ("GET", "/v1/repos/r/commits?n=notanumber", None, {}),
        # numbers past SQLite's 64 bits, in a query parameter and inside a ref
        ("GET", "/v1/repos/r/commits?n=99999999999999999999999", None, {}),
        ("GET", "/v1/repos/r/commit?ref=master/99999999999999999999999", None, {}),
    ]
    daemon.client.create_repo("r")
    daemon.client.start_commit("r")
    with _uds(daemon) as http:
        for method, url, body, headers in bad:
            resp = http.request(method, url, content=body, headers=headers)
            # the worker routes may ask for the worker's credential first (401)
            allowed = {400, 401} if url.startswith("/v1/workers/") else {400}
            assert resp.status_code in allowed, (method, url, body, resp.status_code, resp.text)
            answer = resp.json()
            assert set(answer) == {"error", "kind"}, (url, answer)
            if resp.status_code == 400:
                assert answer["kind"] == "invalid_argument" and answer["error"], (url, answer)
    assert not any(tmp_path.glob("planted*")), "a log line's job wrote outside the home"
    assert "Traceback" not in daemon.log_text()


def test_openapi_lists_the_statuses_routes_answer(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    """Each operation documents its error statuses (from the error classes it
    can raise), the 400 of a malformed request instead of FastAPI's unused 422,
    and over TCP the 401 of a wrong token; errors share one schema."""
    address = f"127.0.0.1:{free_port()}"
    good = Client(address, token="secret", timeout=30)
    start_daemon(tmp_path / "tcp-home", "--listen", address, "--token", "secret", client=good)
    schema = httpx.get(f"http://{address}/openapi.json", timeout=10).json()
    paths = schema["paths"]

    def codes(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"200", "400", "401", "404"} <= codes("/v1/repos/{repo}", "get")
    assert {"201", "400", "401", "409", "507"} <= codes("/v1/repos", "post")  # invalid name, exists, disk full
    assert {"400", "404", "409"} <= codes("/v1/repos/{repo}/commit/finish", "post")
    assert {"400", "404"} <= codes("/v1/pipelines/{name}", "get")
    assert "412" in codes("/v1/repos/{repo}/file", "put")  # a daemon-side local file it cannot read
    assert "204" in codes("/v1/workers/{pipeline}/next", "post")
    assert {"200", "401"} == codes("/v1/version", "get")  # nothing to validate, nothing to find
    for path, item in paths.items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            for code, resp in op["responses"].items():
                if code >= "400":
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["token"] == {"type": "http", "scheme": "bearer"}
    # what the schema says is what the daemon answers
    auth = {"Authorization": "Bearer secret"}
    assert httpx.get(f"http://{address}/v1/repos/nope", headers=auth, timeout=10).status_code == 404
    assert httpx.get(f"http://{address}/v1/repos/nope", timeout=10).status_code == 401
    resp = httpx.post(f"http://{address}/v1/repos", headers=auth, content=b"{", timeout=10)
    assert resp.status_code == 400 and resp.json()["kind"] == "invalid_argument"


def test_options_and_405_name_every_method_of_the_path(daemon: Daemon) -> None:
    with _uds(daemon) as http:
        for path, methods in [
            ("/v1/pipelines", {"GET", "POST", "DELETE"}),
            ("/v1/repos", {"GET", "POST"}),
            ("/v1/repos/r/file", {"GET", "PUT", "DELETE"}),
            ("/v1/repos/r/branches/b", {"PUT", "DELETE"}),
        ]:
            resp = http.options(path)
            assert resp.status_code == 204, (path, resp.text)
            assert set(resp.headers["allow"].split(", ")) == methods | {"OPTIONS"}, path
            resp = http.patch(path)
            assert resp.status_code == 405, path
            assert set(resp.headers["allow"].split(", ")) == methods, path
            assert resp.json()["kind"] == "error"
        # a path no route serves stays a 404, whatever the method
        assert http.options("/v1/nothing").status_code == 404
        assert http.get("/v1/nothing").json() == {"error": "Not Found", "kind": "not_found"}
