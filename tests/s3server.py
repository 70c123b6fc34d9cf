"""A real S3 endpoint for tests: moto's server mode in a subprocess.

A subprocess rather than ``mock_aws`` so the store is exercised over real
HTTP, with the same connection and error paths as against MinIO or AWS.

Use from a test module::

    from tests.s3server import s3_endpoint  # noqa: F401
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _command(port: int) -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if os.path.exists(script):
        return [script, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


# urllib would honour HTTP_PROXY; a local server must be asked directly.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except OSError:
        return False


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto's S3 server on a free local port; yields its endpoint URL."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # A file, not a pipe: werkzeug logs every request, and a pipe nobody
    # drains would eventually block the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            _command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers(endpoint + "/moto-api/"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"moto server did not start on {endpoint}:\n{output}")
                time.sleep(0.05)
            yield endpoint
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto S3 server shared by the session, with fake credentials set."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_CREDENTIALS.items():
            mp.setenv(name, value)
        # Real profiles or session tokens in the environment must not leak
        # into requests against the fake server.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        # botocore honours HTTP_PROXY too; keep the local server direct.
        for name in ("NO_PROXY", "no_proxy"):
            mp.setenv(name, ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get(name)])))
        with moto_server() as endpoint:
            yield endpoint
