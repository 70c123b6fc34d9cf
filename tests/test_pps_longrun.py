"""Spouts and services end to end: a real daemon, its local runner, shim workers.

- a service (``python3 -m http.server``) serves its input repo's head, is
  restarted on a new input commit, and its port closes on stop-pipeline;
- a spout turns each tar stream its code writes to ``/pfs/out`` into a
  commit of its output repo, keeping only the last stream's files with
  ``overwrite``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

from pachctl.client import Client, errors
from tests.conftest import free_port, wait_for
from tests.ppshelp import http_get

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="workers need root (mount namespaces)")
DEADLINE = 30.0


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _commit(c: Client, repo: str, files: dict[str, bytes]) -> str:
    with c.commit(repo, "master") as commit:
        for path, data in files.items():
            c.put_file(repo, commit.id, path, data, overwrite=True)
    return commit.id


def _logs(c: Client, pipeline: str) -> str:
    try:
        return "\n".join(line.message for line in c.get_logs(pipeline=pipeline))
    except errors.PfsError as exc:
        return f"(no logs: {exc})"


def _wait(c: Client, pipeline: str, condition: Callable[[], object], what: str) -> object:
    """``wait_for`` with the pipeline's logs in the failure."""
    try:
        return wait_for(condition, DEADLINE, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; logs of {pipeline}:\n{_logs(c, pipeline)}") from None


def test_service_serves_its_input_restarts_on_new_data_and_stops(client: Client) -> None:
    c = client
    port = free_port()
    c.create_repo("site")
    _commit(c, "site", {"index.txt": b"version one\n", "other.txt": b"other\n"})
    c.create_pipeline({
        "pipeline": {"name": "web"},
        "transform": {"cmd": ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
                              "--directory", "/pfs/site"]},
        "input": {"pfs": {"repo": "site", "glob": "/"}},
        "service": {"internal_port": port},
    })
    try:
        _wait(c, "web", lambda: http_get(port, "index.txt") == b"version one\n", "the service to serve the input's head")
        assert http_get(port, "other.txt") == b"other\n"

        _commit(c, "site", {"index.txt": b"version two\n"})
        _wait(c, "web", lambda: http_get(port, "index.txt") == b"version two\n", "the service to restart on the new commit")
        assert http_get(port, "other.txt") == b"other\n"  # the head: every file, not only the changed one

        user = _wait(c, "web", lambda: [x for x in c.get_logs(pipeline="web") if x.user and "GET /index.txt" in x.message],
                     "the service's access log in the pipeline's logs")
        assert all(line.job is None and line.datum is None and line.pipeline == "web" for line in user)

        t0 = time.monotonic()
        c.stop_pipeline("web")  # returns once the runner's workers are gone (SIGKILL after 5 s)
        assert time.monotonic() - t0 < 4, "the worker did not stop on SIGTERM by itself"
        wait_for(lambda: _port_closed(port), DEADLINE, "the service's port to close after stop-pipeline")
    finally:
        c.delete_pipeline("web", force=True)
    assert _port_closed(port)


def _spout(c: Client, name: str, overwrite: bool) -> None:
    script = (
        'd=$(mktemp -d); for i in 1 2 3; do echo "content $i" > "$d/file$i"; '
        'tar -C "$d" -cf /pfs/out "file$i"; done; rm -r "$d"; echo streams written; sleep 1000'
    )
    c.create_pipeline({
        "pipeline": {"name": name},
        "transform": {"cmd": ["sh"], "stdin": [script]},
        "spout": {"overwrite": overwrite},
    })


def _finished(c: Client, repo: str) -> list:
    try:
        return [x for x in c.list_commit(repo, "master") if x.finished is not None]
    except errors.NotFound:
        return []


def test_spout_makes_a_commit_per_tar_stream(client: Client) -> None:
    c = client
    _spout(c, "feed", overwrite=False)
    try:
        commits = _wait(c, "feed", lambda: (lambda cs: cs if len(cs) >= 3 else None)(_finished(c, "feed")),
                        "three commits from the spout")
        assert len(commits) == 3
        head = sorted(f.path for f in c.list_file("feed", "master", "/"))
        assert head == ["/file1", "/file2", "/file3"]
        for i in (1, 2, 3):
            assert c.read_file("feed", "master", f"file{i}") == f"content {i}\n".encode()
        # each commit added one stream's file to what its parent had
        oldest = commits[-1]
        assert [f.path for f in c.list_file("feed", oldest.id, "/")] == ["/file1"]
        user = _wait(c, "feed", lambda: [x for x in c.get_logs(pipeline="feed") if x.user],
                     "the spout's output in the pipeline's logs")
        assert [(x.message, x.job, x.datum) for x in user] == [("streams written", None, None)]
    finally:
        c.delete_pipeline("feed", force=True)


def test_spout_with_overwrite_keeps_the_last_stream_only(client: Client) -> None:
    c = client
    _spout(c, "latest", overwrite=True)
    try:
        _wait(c, "latest", lambda: len(_finished(c, "latest")) >= 3, "three commits from the spout")
        assert [f.path for f in c.list_file("latest", "master", "/")] == ["/file3"]
        assert c.read_file("latest", "master", "file3") == b"content 3\n"
    finally:
        c.delete_pipeline("latest", force=True)
