"""`pachctl doctor`: every check failing on its own (through injected probes: a
fake file system root, PATH lookups, environment, thresholds) with the command
that fixes it, and the real command against a real daemon."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pachctl import config
from pachctl.cli import cmd_doctor as doc
from tests.clihelp import make_env, run
from tests.conftest import Daemon, free_port


def probes(tmp_path: Path, **kw) -> doc.Probes:
    kw.setdefault("env", {"HOME": str(tmp_path)})
    return doc.Probes(**kw)


def by_name(checks: list[doc.Check]) -> dict[str, doc.Check]:
    return {c.name: c for c in checks}


# -- FUSE ------------------------------------------------------------------------


def test_fuse_device_missing(tmp_path: Path) -> None:
    c = doc.check_fuse_device(probes(tmp_path, root=str(tmp_path)))
    assert (c.status, c.detail) == ("fail", "missing")
    assert c.fix.startswith("modprobe fuse")


def test_fuse_device_not_a_device(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "fuse").write_text("")
    c = doc.check_fuse_device(probes(tmp_path, root=str(tmp_path)))
    assert c.status == "fail" and "not a character device" in c.detail


def test_fuse_device_real() -> None:
    c = doc.check_fuse_device(doc.Probes())
    assert c.status == "ok", c  # the suite needs FUSE anyway


def test_fusermount_missing(tmp_path: Path) -> None:
    c = doc.check_fusermount(probes(tmp_path, which=lambda name: None))
    assert c.status == "fail" and c.fix == "apt-get install fuse3"


def test_fuse_module(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "filesystems").write_text("nodev\tsysfs\n\text4\nnodev\tfuseblk_not\n")
    c = doc.check_fuse_module(probes(tmp_path, root=str(tmp_path)))
    assert c.status == "fail" and c.fix == "modprobe fuse"
    (tmp_path / "proc" / "filesystems").write_text("nodev\tsysfs\nnodev\tfuse\n")
    assert doc.check_fuse_module(probes(tmp_path, root=str(tmp_path))).status == "ok"


# -- the daemon ------------------------------------------------------------------


def test_daemon_down(tmp_path: Path) -> None:
    settings = config.Settings(None, None, str(tmp_path / "nohome"))
    checks, version = doc.check_daemon(probes(tmp_path), settings)
    assert version is None
    assert checks[0].status == "fail" and checks[0].fix == "pachctl daemon &"
    assert str(tmp_path / "nohome" / "mountd.sock") in checks[0].detail


def test_daemon_remote_down(tmp_path: Path) -> None:
    settings = config.Settings(f"127.0.0.1:{free_port()}", None, str(tmp_path))
    checks, _ = doc.check_daemon(probes(tmp_path), settings)
    assert checks[0].status == "fail" and "ADDRESS" in checks[0].fix


def test_daemon_version_mismatch(daemon: Daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(doc, "__version__", "0.0.0-other")
    checks, _ = doc.check_daemon(probes(tmp_path), config.Settings(None, None, str(daemon.home)))
    c = by_name(checks)
    assert c["reachable"].status == "ok"
    assert c["version"].status == "fail" and "0.0.0-other" in c["version"].detail
    assert c["version"].fix == "pachctl daemon --stop && pachctl daemon &"


def test_home_permissions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    c = by_name(doc.check_home(probes(tmp_path), str(home)))
    assert c["home permissions"].status == "fail"
    assert c["home permissions"].fix == f"chmod 700 {home}"
    home.chmod(0o700)
    assert by_name(doc.check_home(probes(tmp_path), str(home)))["home permissions"].status == "ok"


def test_home_owner(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    c = by_name(doc.check_home(probes(tmp_path, euid=12345), str(home)))
    assert c["home owner"].status == "fail" and c["home owner"].fix == f"chown -R 12345 {home}"


def test_socket_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(home / "mountd.sock"))
        os.chmod(home / "mountd.sock", 0o666)
        c = by_name(doc.check_home(probes(tmp_path), str(home)))
    assert c["socket"].status == "fail" and c["socket"].fix == f"chmod 600 {home / 'mountd.sock'}"


def test_home_not_made_yet(tmp_path: Path) -> None:
    [c] = doc.check_home(probes(tmp_path), str(tmp_path / "later"))
    assert c.status == "skip"


def test_low_disk(tmp_path: Path) -> None:
    c = doc.check_disk(probes(tmp_path, min_free=1 << 60), str(tmp_path / "not" / "yet"))
    assert c.status == "fail" and c.fix.startswith("pachctl gc")
    assert doc.check_disk(probes(tmp_path, min_free=1), str(tmp_path)).status == "ok"


# -- Docker, Kubernetes (optional) ------------------------------------------------------


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:{port}"])
def test_docker_unreachable(tmp_path: Path, host: str) -> None:
    host = host.format(port=free_port())
    c = doc.check_docker(probes(tmp_path, env={"DOCKER_HOST": host}))
    assert (c.status, c.optional) == ("warn", True)
    assert host in c.detail and "unset DOCKER_HOST" in c.fix


def test_docker_not_installed(tmp_path: Path) -> None:
    c = doc.check_docker(probes(tmp_path, env={}, which=lambda name: None))
    assert c.status == "warn" and c.fix == "apt-get install docker.io"


def _kubeconfig(path: Path, server: str | None, current: str | None = "ctx") -> Path:
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": current,
           "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
           "clusters": [{"name": "c", "cluster": {"server": server} if server else {}}], "users": [{"name": "u"}]}
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.fixture
def api_server() -> Iterator[str]:
    """A real HTTP server answering 401 everywhere, as an API server to an anonymous caller does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_kubeconfig_missing(tmp_path: Path) -> None:
    [c] = doc.check_kubernetes(probes(tmp_path, env={"KUBECONFIG": str(tmp_path / "none")}))
    assert c.status == "warn" and c.optional and "KUBECONFIG" in c.fix


def test_kubeconfig_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text("{unclosed: [")
    [c] = doc.check_kubernetes(probes(tmp_path, env={"KUBECONFIG": str(bad)}))
    assert c.status == "warn" and c.fix.startswith("kubectl config view")


def test_kube_no_context(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", current=None)
    c = by_name(doc.check_kubernetes(probes(tmp_path, env={"KUBECONFIG": str(kc)})))
    assert c["context"].status == "warn" and c["context"].fix == "kubectl config use-context ctx"


def test_kube_unreachable(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{free_port()}")
    c = by_name(doc.check_kubernetes(probes(tmp_path, env={"KUBECONFIG": str(kc)})))
    assert c["kubeconfig"].status == "ok" and c["context"].status == "ok"
    assert c["API"].status == "warn" and "use-context" in c["API"].fix


def test_kube_reachable(tmp_path: Path, api_server: str) -> None:
    kc = _kubeconfig(tmp_path / "kc", api_server)
    c = by_name(doc.check_kubernetes(probes(tmp_path, env={"KUBECONFIG": str(kc)})))
    assert c["API"].status == "ok" and c["API"].detail == api_server


# -- output and the real command --------------------------------------------------------


def test_render_marks() -> None:
    checks = [doc.Check("FUSE", "x", "ok", "fine"), doc.Check("Docker", "engine", "warn", "down", "dockerd &", True)]
    plain = doc.render(checks, tty=False, color=False)
    assert plain.startswith("OK  ") and "WARN" in plain and "\033" not in plain
    marks = doc.render(checks, tty=True, color=False)  # a terminal with NO_COLOR
    assert marks.startswith("✓") and "!" in marks and "\033" not in marks
    assert "\033[32m" in doc.render(checks, tty=True, color=True)
    assert "dockerd &" in plain and "optional" in plain.splitlines()[-1]


def test_cli_against_real_daemon(daemon: Daemon, tmp_path: Path) -> None:
    env = make_env(daemon.home, tmp_path / "cfg", PACHY_NO_AUTOSTART="1",
                   DOCKER_HOST="unix:///nonexistent/docker.sock", KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    res = run(env, "doctor", "--json", "--min-free", "1M", rc=0)
    doc_ = res.json()
    c = {(x["group"], x["name"]): x for x in doc_["checks"]}
    assert doc_["ok"] is True
    assert c[("daemon", "reachable")]["status"] == "ok"
    assert c[("daemon", "version")]["status"] == "ok"
    assert c[("daemon", "home permissions")]["status"] == "ok"
    assert c[("daemon", "socket")]["status"] == "ok"
    assert c[("Docker", "engine")]["status"] == "warn"  # optional: the exit code stays 0
    assert c[("Kubernetes", "kubeconfig")]["status"] == "warn"
    table = run(env, "doctor", "--min-free", "1M", rc=0).text
    assert "OK    daemon: reachable" in table and "all required checks passed; 2 optional" in table

    os.chmod(daemon.home, 0o777)
    try:
        res = run(env, "doctor", "--min-free", "1M", rc=1)
    finally:
        os.chmod(daemon.home, 0o700)
    assert f"chmod 700 {daemon.home}" in res.text and "1 required check(s) failed" in res.text


def test_cli_daemon_down(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home", tmp_path / "cfg", PACHY_NO_AUTOSTART="1")
    res = run(env, "doctor", rc=1)
    assert "FAIL  daemon: reachable" in res.text and "pachctl daemon &" in res.text
    assert not (tmp_path / "home").exists()  # doctor never starts a daemon
