"""The Docker runner end to end: a real dockerd, a real daemon (``PACHY_RUNNER=docker``),
pipelines naming images made here (tests/images.py) that hold no Python, one of them
no shell either. One daemon for the module; every pipeline is deleted after each test.

Covered: the 1.x fruit stand in ``pachy-test/busybox:1`` (totals against awk's after
each of two commits); inside a container: env, secrets (env and file), user,
working_dir, stdin, err_cmd, accept_return_code, datum_timeout (a hanging unit
killed), a crashing unit, a memory limit exceeded (the OOM reason); an image without
a shell (and a binary without its loader); a missing image's error; no engine at all;
a service published at its external port; a spout; incremental skipping across two
container workers; an updated spec replacing the containers. (mountd kill -9 and a
dockerd restart with containers running: tests/test_docker_restart.py, on an engine
of its own.)
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pachctl.client import Client
from tests.conftest import wait_for
from tests.images import BUSYBOX_IMAGE, NOSHELL_IMAGE
from tests.mounting import requires_fuse
from tests.ppshelp import (
    Pachy,
    commit_files,
    delete_all_pipelines,
    flush,
    flush_ok,
    http_get,
    jobs,
    lazy_bytes,
    outputs,
    pachy_daemon,
    pfs,
    processes,
    sparse_file,
)

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
FRUIT_STAND = ROOT / "examples" / "fruit_stand" / "pipeline.json"
FRUITS = ("apple", "banana", "orange")


@pytest.fixture(scope="module")
def px(docker_engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pachy]:
    with pachy_daemon(tmp_path_factory.mktemp("docker"), PACHY_RUNNER="docker") as p:
        p.engine = docker_engine
        yield p
    assert not _containers(docker_engine, p), "the daemon left containers behind"


@pytest.fixture
def c(px: Pachy) -> Iterator[Client]:
    yield px.client
    delete_all_pipelines(px.client)


def _containers(engine, p: Pachy) -> list:
    from pps.runners.docker import daemon_label

    return engine.containers.list(all=True, filters={"label": f"pachy.daemon={daemon_label(str(p.home))}"})


def _spec(name: str, repo: str, cmd: list[str], stdin: list[str] | None = None, image: str = BUSYBOX_IMAGE,
          **extra) -> dict:
    t = {"image": image, "cmd": cmd} | ({"stdin": stdin} if stdin is not None else {})
    t |= extra.pop("transform", {})
    return {"pipeline": {"name": name}, "input": pfs(repo), "transform": t} | extra


def _awk_totals(*sets: bytes) -> dict[str, str]:
    """What awk on the host says the totals are."""
    out = subprocess.run(["awk", "-F", "\t", "{s[$1] += $2} END {for (f in s) print f \"\\t\" s[f]}"],
                         input=b"".join(sets), capture_output=True, check=True).stdout.decode()
    return {f: f"{n}\n" for f, n in (line.split("\t") for line in out.splitlines())}


def _reason(c: Client, pipeline: str) -> str:
    js = jobs(c, pipeline)
    assert js and js[-1].state == "failure", [(j.state, j.reason) for j in js]
    return js[-1].reason or ""


def test_fruit_stand_in_a_busybox_image(px: Pachy, c: Client) -> None:
    rng = random.Random(7)

    def sales(n: int) -> bytes:
        return b"".join(f"{rng.choice(FRUITS)}\t{rng.randint(1, 99)}\n".encode() for _ in range(n))

    c.create_repo("data")
    set1, set2 = sales(300), sales(200)
    first = commit_files(c, "data", {"sales": set1})
    c.create_pipeline([spec | {"transform": spec["transform"] | {"image": BUSYBOX_IMAGE}}
                       for spec in _json_objects(FRUIT_STAND.read_text())])
    flush_ok(c, "data", first)
    assert outputs(c, "sum") == {f: v.encode() for f, v in _awk_totals(set1).items()}
    with c.commit("data", "master") as commit:
        c.put_file("data", commit.id, "sales", set2)  # appended, as put-file does
    flush_ok(c, "data", commit.id)
    assert outputs(c, "sum") == {f: v.encode() for f, v in _awk_totals(set1, set2).items()}
    names = {ctr.labels["pachy.pipeline"] for ctr in _containers(px.engine, px)}
    assert names == {"filter", "sum"}


def _json_objects(text: str) -> list[dict]:
    dec, pos, out = json.JSONDecoder(), 0, []
    while pos < len(text.rstrip()):
        obj, pos = dec.raw_decode(text, pos)
        out.append(obj)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


# -- what user code sees in the container ------------------------------------------------


def test_env_secrets_user_working_dir_and_stdin_inside(px: Pachy, c: Client) -> None:
    c.create_secret("boxcreds", {"token": "t0k3n-in-a-box", "user": "alice"})
    c.create_repo("seen")
    head = commit_files(c, "seen", {"x": b"hello\n"})
    c.create_pipeline(_spec("seer", "seen", ["sh"], stdin=[
        'echo "greeting is $GREETING"',
        'echo "$GREETING" > /pfs/out/greeting',
        'printf %s "$TOKEN" > /pfs/out/token',
        "cat /etc/boxcreds/user > /pfs/out/user",
        "id -un > /pfs/out/who", "pwd > /pfs/out/pwd", 'echo "$HOME" > /pfs/out/home',
        'cat "$seen" > /pfs/out/input',
        "[ -e /.dockerenv ] && echo yes > /pfs/out/in_a_container",
        "command -v python3 python >/pfs/out/python || true",
    ], transform={
        "env": {"GREETING": "hello 'there'"}, "user": "fruit", "working_dir": "/tmp",
        "secrets": [{"name": "boxcreds", "env_var": "TOKEN", "key": "token"},
                    {"name": "boxcreds", "mount_path": "/etc/boxcreds"}],
    }, datum_tries=1))
    flush_ok(c, "seen", head)
    assert outputs(c, "seer") == {
        "greeting": b"hello 'there'\n", "token": b"t0k3n-in-a-box", "user": b"alice", "who": b"fruit\n",
        "pwd": b"/tmp\n", "home": b"/home/fruit\n", "input": b"hello\n", "in_a_container": b"yes\n",
        "python": b"",
    }
    assert not Path("/etc/boxcreds").exists()  # made in the container, not on the host
    (job,) = jobs(c, "seer")
    assert "greeting is hello 'there'" in "".join(line.message for line in c.get_logs(job=job.id))


def test_return_codes_err_cmd_and_a_crash(c: Client) -> None:
    c.create_repo("codes")
    head = commit_files(c, "codes", {"ok": b"1", "broken": b"2"})
    c.create_pipeline([
        _spec("accepter", "codes", ["sh"], stdin=['cp "$codes" /pfs/out/', "exit 3"],
              transform={"accept_return_code": [3]}, datum_tries=1),
        _spec("recoverer", "codes", ["sh"],
              stdin=['[ "$(basename "$codes")" = broken ] && exit 1', 'cp "$codes" /pfs/out/'],
              transform={"err_cmd": ["sh"], "err_stdin": ['echo "recovering $codes"']}, datum_tries=1),
        _spec("crasher", "codes", ["sh"], stdin=["echo about to crash >&2", "kill -SEGV $$"], datum_tries=1),
    ])
    res = flush(c, "codes", head)
    assert [j.pipeline for j in res.failed_jobs] == ["crasher"]
    assert outputs(c, "accepter") == {"ok": b"1", "broken": b"2"}
    (job,) = jobs(c, "recoverer")
    assert (job.state, job.data_processed, job.data_recovered) == ("success", 1, 1)
    assert outputs(c, "recoverer") == {"ok": b"1"}
    assert "recovering /pfs/codes/broken" in "".join(line.message for line in c.get_logs(job=job.id))
    assert "killed by SIGSEGV" in _reason(c, "crasher")


def test_datum_timeout_kills_the_hanging_unit_in_its_container(c: Client) -> None:
    c.create_repo("hang")
    head = commit_files(c, "hang", {"x": b"1"})
    c.create_pipeline(_spec("hanger", "hang", ["sh"], stdin=["sleep 1000.25 & sleep 1000.5"], datum_timeout="1s",
                            datum_tries=1))
    res = flush(c, "hang", head, timeout=30)
    (job,) = res.failed_jobs
    assert "timed out" in job.reason and "datum_timeout" in job.reason
    wait_for(lambda: not processes("sleep", "1000.25") and not processes("sleep", "1000.5"), 10,
             "the unit's sleeps to be killed")


def test_memory_limit_exceeded_fails_with_the_reason(c: Client) -> None:
    c.create_repo("hog")
    head = commit_files(c, "hog", {"x": b"1"})
    c.create_pipeline(_spec("hogger", "hog", ["sh"], stdin=[
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a)", "echo survived > /pfs/out/x",
    ], resource_limits={"memory": "32Mi"}, datum_tries=1))
    flush(c, "hog", head)
    assert _reason(c, "hogger").endswith("killed: out of memory (resource_limits.memory is 32Mi)")


@requires_fuse
def test_a_lazy_input_is_read_partially_in_the_container(px: Pachy, c: Client) -> None:
    import os

    mib = 1 << 20
    marker = os.urandom(mib)
    c.create_repo("huge")
    big = sparse_file(px.work / "huge.bin", 256 * mib, 200 * mib, marker)
    c.put_file("huge", "master", "/huge.bin", big, new_commit=True)
    script = [f"dd if=/pfs/huge/huge.bin of=/pfs/out/piece bs={mib} skip=200 count=1 2>/dev/null",
              "stat -L -c %s /pfs/huge/huge.bin > /pfs/out/size"]
    created = c.create_pipeline([
        _spec("partial", "huge", ["sh"], stdin=script) | {"input": pfs("huge", "/", lazy=True)},
        # as the image's user "fruit": the view is reachable by user code that is not root
        _spec("partial-fruit", "huge", ["sh"], stdin=script, transform={"user": "fruit"}) | {
            "input": pfs("huge", "/", lazy=True)},
    ])
    assert not [n for p in created for n in p.notes or [] if "lazy" in n.path]  # live under docker
    flush_ok(c, "huge", "master")
    for name in ("partial", "partial-fruit"):
        out = outputs(c, name)
        assert out["piece"] == marker, name
        assert out["size"].strip() == str(256 * mib).encode()
        (got,) = lazy_bytes(c, name)
        assert mib <= got <= 2 * mib, (name, got)


# -- images -------------------------------------------------------------------------------


def test_an_image_without_a_shell(c: Client) -> None:
    c.create_repo("bare")
    head = commit_files(c, "bare", {"a": b"A", "d/b": b"B"})
    c.create_pipeline([
        _spec("copier", "bare", ["cp", "-r", "/pfs/bare/.", "/pfs/out/"], image=NOSHELL_IMAGE) | {
            "input": pfs("bare", "/")},
        _spec("shelly", "bare", ["sh", "-c", "true"], image=NOSHELL_IMAGE, datum_tries=1),
        _spec("dynamic", "bare", ["dyn"], image=NOSHELL_IMAGE, datum_tries=1),
    ])
    res = flush(c, "bare", head)
    assert sorted(j.pipeline for j in res.failed_jobs) == ["dynamic", "shelly"]
    assert "cannot run '/bin/dyn' in image" in _reason(c, "dynamic") and "dynamic loader" in _reason(c, "dynamic")
    assert outputs(c, "copier") == {"a": b"A", "d/b": b"B"}
    assert f"cannot run 'sh' in image '{NOSHELL_IMAGE}': not found" in _reason(c, "shelly")


def test_a_missing_image_says_what_to_do(c: Client) -> None:
    c.create_repo("lost")
    head = commit_files(c, "lost", {"x": b"1"})
    c.create_pipeline(_spec("seeker", "lost", ["true"], image="pachy-test/nosuch:0", datum_tries=1))
    flush(c, "lost", head)
    reason = _reason(c, "seeker")
    assert "image 'pachy-test/nosuch:0' not found: build or load it" in reason and "docker images" in reason


# -- long-running: a service's port, a spout's stream ---------------------------------------


def test_a_service_is_published_at_its_external_port(c: Client) -> None:
    from tests.conftest import free_port

    port = free_port()
    c.create_repo("site")
    commit_files(c, "site", {"index.txt": b"version one\n"})
    c.create_pipeline({
        "pipeline": {"name": "web"}, "input": pfs("site", "/"),
        "transform": {"image": BUSYBOX_IMAGE, "cmd": ["httpd", "-f", "-p", "8080", "-h", "/pfs/site"]},
        "service": {"internal_port": 8080, "external_port": port},
    })
    wait_for(lambda: http_get(port, "index.txt") == b"version one\n", 30, "the service to answer on its external port")
    commit_files(c, "site", {"index.txt": b"version two\n"})
    wait_for(lambda: http_get(port, "index.txt") == b"version two\n", 30, "the service to restart on the new commit")


def test_a_spout_writes_its_streams_from_the_container(c: Client) -> None:
    script = ('d=$(mktemp -d); for i in 1 2; do echo "content $i" > "$d/file$i"; '
              'tar -C "$d" -cf /pfs/out "file$i"; done; rm -r "$d"; echo streams written; sleep 1000.9')
    c.create_pipeline({"pipeline": {"name": "feed"}, "spout": {},
                       "transform": {"image": BUSYBOX_IMAGE, "cmd": ["sh"], "stdin": [script]}})

    def finished() -> list:
        try:
            return [x for x in c.list_commit("feed", "master") if x.finished is not None]
        except Exception:
            return []

    wait_for(lambda: len(finished()) >= 2, 30, "two commits from the spout")
    assert outputs(c, "feed") == {"file1": b"content 1\n", "file2": b"content 2\n"}


def test_no_engine_says_how_to_start_one(tmp_path: Path) -> None:
    import os
    import sys

    env = dict(os.environ, PACHY_RUNNER="docker", DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    res = subprocess.run([sys.executable, "-m", "mountd", "--home", str(tmp_path / "home")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert f"error: the docker runner cannot start: no Docker engine answers at unix://{tmp_path}/no-docker.sock " \
           "(no socket there); start it: systemctl start docker" in res.stderr, res.stderr
    assert res.stderr.rstrip().endswith("or run pipelines on this host: --runner local"), res.stderr
    assert not (tmp_path / "home" / "mountd.sock").exists()


def test_incremental_skipping_across_two_container_workers(px: Pachy, c: Client) -> None:
    c.create_repo("inc")
    files = {f"f{i:02d}": f"content {i}\n".encode() for i in range(12)}
    first = commit_files(c, "inc", files)
    c.create_pipeline(_spec("inc-copy", "inc", ["sh"], stdin=['cp "$inc" /pfs/out/'],
                            parallelism_spec={"constant": 2}))
    flush_ok(c, "inc", first)
    assert len({ctr.labels["pachy.worker"] for ctr in _containers(px.engine, px)
                if ctr.labels["pachy.pipeline"] == "inc-copy"}) == 2
    (j1,) = jobs(c, "inc-copy")
    assert (j1.data_processed, j1.data_skipped) == (12, 0)
    files["f12"] = b"content 12\n"
    second = commit_files(c, "inc", {"f12": files["f12"]})
    flush_ok(c, "inc", second)
    j2 = jobs(c, "inc-copy")[-1]
    assert (j2.data_processed, j2.data_skipped, j2.data_total) == (1, 12, 13)
    assert outputs(c, "inc-copy") == files


def test_an_updated_spec_gets_new_containers(px: Pachy, c: Client) -> None:
    c.create_repo("upd")
    first = commit_files(c, "upd", {"x": b"1"})
    spec = _spec("updater", "upd", ["sh"], stdin=['echo "$WHICH" > /pfs/out/which'],
                 transform={"env": {"WHICH": "one"}}) | {"input": pfs("upd", "/")}
    c.create_pipeline(spec)
    flush_ok(c, "upd", first)
    old = {ctr.id: ctr.labels["pachy.spec"] for ctr in _containers(px.engine, px)
           if ctr.labels["pachy.pipeline"] == "updater"}
    assert len(old) == 1
    spec["transform"]["env"] = {"WHICH": "two"}
    c.update_pipeline(spec)
    second = commit_files(c, "upd", {"y": b"2"})
    flush_ok(c, "upd", second)
    assert outputs(c, "updater") == {"which": b"two\n"}
    new = {ctr.id: ctr.labels["pachy.spec"] for ctr in _containers(px.engine, px)
           if ctr.labels["pachy.pipeline"] == "updater"}
    assert len(new) == 1 and not set(new) & set(old) and set(new.values()) != set(old.values())


# -- create-time notes per runner ----------------------------------------------------------


def test_create_time_notes_for_an_image_spec_follow_the_runner_that_runs_it(docker_engine, tmp_path: Path) -> None:
    """The real runners' capabilities behind the scheduler's notes: under auto, Docker runs
    the image with its limits, port mapping and lazy inputs (no note); under --runner local
    the image is inert (and the port is not mapped)."""
    from pfsfuse.mount import fuse_unavailable
    from pfsfuse.objstore import LocalStore
    from pfsfuse.pfs import PFS
    from pps.runners import cgroups
    from pps.runners.auto import AutoRunner, build_runner
    from pps.scheduler import Scheduler
    from tests.conftest import free_port

    home = tmp_path / "home"
    port = free_port()
    spec = _spec("noted", "notes", ["sh"], stdin=["true"]) | {
        "input": pfs("notes", "/*", lazy=True), "resource_limits": {"memory": "64Mi", "cpu": 0.5},
        "service": {"internal_port": 8080, "external_port": port},
    }
    inert = {"transform.image", "resource_limits", "service.external_port", "input.pfs.lazy"}
    store = PFS(str(home), LocalStore(str(home / "objects")))
    store.create_repo("notes")
    try:
        # local: the image is inert and there is no port mapping (its cgroups act where they can)
        no_fuse = {"input.pfs.lazy"} if fuse_unavailable() else set()
        no_cgroups = {"resource_limits"} if cgroups.available() else set()
        for choice, expected in (("auto", no_fuse),
                                 ("local", {"transform.image", "service.external_port"} | no_fuse | no_cgroups)):
            runner = build_runner(choice, f"unix:{tmp_path}/none.sock", str(home / choice))
            assert isinstance(runner, AutoRunner) == (choice == "auto")
            s = Scheduler(store, str(home / choice), runner=runner, max_workers=4)
            try:
                (row,) = s.create_pipelines(json.dumps(spec | {"pipeline": {"name": f"noted-{choice}"}}))
                paths = {n["path"] for n in row.notes}
                assert paths & inert == expected, (choice, row.notes)
            finally:
                s.close()
                runner.close()
    finally:
        store.close()
