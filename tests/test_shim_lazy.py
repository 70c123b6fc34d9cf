"""The worker's FUSE view of lazy inputs (shim/lazyfs.py): real FUSE mounts, the
worker loop against the fake link of test_shim_worker (a daemon's answers in
memory), so what the view asked the daemon for can be checked exactly.
The end-to-end tests with a real daemon are in test_pps_lazy.py.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator

import pytest

from pachctl.client import errors
from pfsfuse.mount import detach_under, make_shared, mounts_under
from shim import lazyfs
from shim.lazyfs import CACHE_BYTES, LazyMount
from shim.materialize import Lazy, materialize
from shim.task import Task
from shim.worker import EXIT_OK, Worker
from tests.images import BUSYBOX_IMAGE
from tests.mounting import requires_fuse
from tests.test_shim import FakeReader, in_thread, task_dict, unit_dict
from tests.test_shim_worker import FakeLink, decode_result

pytestmark = [requires_fuse, pytest.mark.skipif(os.geteuid() != 0, reason="the shim tests need root")]

BIG = bytes(range(256)) * (40 << 12)  # 40 MiB, every byte's place recognisable


def lazy_unit(unit_id: str, files: dict[str, str], input_name: str = "in") -> dict:
    u = unit_dict(unit_id, files, input_name)
    for f in u["files"]:
        f["lazy"] = True
        f["size"] = 0
    return u


def sized(raw: dict, repos: dict) -> dict:
    """Give every file of a task its size, as the scheduler does."""
    for u in raw["units"]:
        for f in u["files"]:
            f["size"] = len(repos[(f["repo"], f["commit"])][f["src"]])
    return raw


@pytest.fixture
def mount(tmp_path) -> Iterator[tuple[LazyMount, FakeReader]]:
    reader = FakeReader({("r", "c"): {"/big": BIG, "/small": b"small\n"}})
    m = LazyMount(reader, str(tmp_path / "scratch"), allow_other=True)
    m.start()
    try:
        yield m, reader
    finally:
        m.close()
    assert not mounts_under(str(tmp_path))


def slurp(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def spec(path: str, src: str, size: int, **kw) -> object:
    from shim.task import FileSpec

    return FileSpec(input="in", path=path, repo="r", commit="c", src=src, size=size, **kw)


def test_a_read_at_an_offset_fetches_only_its_blocks_and_the_cache_stays_bounded(mount) -> None:
    m, reader = mount
    view, counters = m.show([spec("big", "/big", len(BIG))], [("in", "")])
    with open(f"{view}/in/big", "rb") as f:
        f.seek(7_000_001)
        assert f.read(1 << 20) == BIG[7_000_001 : 7_000_001 + (1 << 20)]
    assert (1 << 20) <= counters.bytes <= 2 << 20, counters.describe()
    assert counters.first_byte is not None
    asked = [it for batch in reader.batches for it in batch]
    assert all(it["length"] <= 2 << 20 for it in asked) and min(it["offset"] for it in asked) >= 6 << 20
    with open(f"{view}/in/big", "rb") as f:  # a whole read streams: read ahead, never all of it in memory
        assert f.read() == BIG
    assert m.ops._cached <= CACHE_BYTES


def test_views_swap_under_one_mount_and_a_dropped_view_is_gone(mount, tmp_path) -> None:
    m, _ = mount
    first, _ = m.show([spec("a/small", "/small", 6)], [("in", ""), ("in", "empty")])
    assert sorted(os.listdir(f"{first}/in")) == ["a", "empty"]
    second, _ = m.show([spec("b", "/small", 6, offset=1, length=3)], [("in", "")])
    assert slurp(f"{second}/in/b") == b"mal"
    assert os.readlink(f"{m.path}/current") == os.path.basename(second)
    m.clear()
    assert os.listdir(m.path) == []
    with pytest.raises(FileNotFoundError):
        os.stat(f"{first}/in/a/small")
    assert len(mounts_under(str(tmp_path))) == 1


def test_writes_are_refused_and_daemon_errors_are_eio(mount) -> None:
    m, reader = mount
    view, _ = m.show([spec("f", "/missing", 10)], [("in", "")])
    for attempt in (lambda: os.open(f"{view}/in/f", os.O_WRONLY), lambda: os.mkdir(f"{view}/in/d"),
                    lambda: os.open(f"{view}/in/new", os.O_WRONLY | os.O_CREAT)):
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno == errno.EROFS

    def refuse(items):
        raise errors.Forbidden("worker 'w' may read only the inputs of the task it holds")
        yield  # pragma: no cover

    reader.read_batch = refuse
    with pytest.raises(OSError) as exc:
        slurp(f"{view}/in/f")
    assert exc.value.errno == errno.EIO
    assert m.alive  # the error did not take the mount down


def test_links_layout_points_at_the_running_unit(mount, tmp_path) -> None:
    m, reader = mount
    raw = task_dict(["true"], [lazy_unit("u1", {"/x": "/small"}), lazy_unit("u2", {"/y": "/small"})])
    task = Task.from_dict(sized(raw, reader.repos))
    dirs = materialize(task, str(tmp_path / "task"), reader, Lazy(m.path, links=True))
    assert reader.batches == []  # nothing copied
    pfs0, pfs1 = (u.pfs for u in dirs.units)
    m.show(dirs.units[0].lazy_files, dirs.units[0].lazy_dirs)
    assert os.listdir(f"{pfs0}/in") == ["x"] and slurp(f"{pfs0}/in/x") == b"small\n"
    m.show(dirs.units[1].lazy_files, dirs.units[1].lazy_dirs)
    assert os.listdir(f"{pfs1}/in") == ["y"]
    dirs.remove()


def test_worker_serves_lazy_and_copied_inputs_side_by_side(tmp_path) -> None:
    repos = {("r", "c"): {"/f": b"lazy payload\n", "/g": b"copied\n"}}
    units = []
    for uid in ("one", "two"):
        u = lazy_unit(uid, {"/f": "/f"})
        copied = unit_dict(uid, {"/g": "/g"}, "side")
        u["files"] += copied["files"]
        u["dirs"] += copied["dirs"]
        units.append(u)
    # ln -s into a lazy input: collected through the view at upload time, after both units ran.
    script = "cat /pfs/in/f /pfs/side/g > /pfs/out/cat; ln -s /pfs/in/f /pfs/out/link; ls /pfs/in"
    raw = sized(task_dict(["sh", "-c", script], units), repos)
    fake = FakeLink([raw], repos)
    scratch = tmp_path / "scratch"
    worker = Worker(fake, "pipe", "pipe-0", str(scratch), give_up=10)
    assert in_thread(worker.run) == EXIT_OK
    events = decode_result(fake.uploads[0][1])
    headers = [e[1] for e in events if isinstance(e, tuple) and e[0] == "U"]
    assert [h["state"] for h in headers] == ["success", "success"], headers
    data = [e for e in events if isinstance(e, bytes)]
    assert data == [b"lazy payload\ncopied\n", b"lazy payload\n"] * 2
    copied = [it for batch in fake.batches for it in batch if it["path"] == "/g"]
    assert len(copied) == 1 and all(it["length"] != -1 for batch in fake.batches[1:] for it in batch)
    notes = [line["message"] for line in fake.logs if not line["user"]]
    assert sum("lazy inputs (in): " in n for n in notes) == 2, notes
    assert [line["message"] for line in fake.logs if line["user"]] == ["f", "f"]
    assert not scratch.exists() and not mounts_under(str(tmp_path))


def test_without_fuse_lazy_inputs_are_copied_with_a_note(tmp_path, monkeypatch) -> None:
    # A machine without /dev/fuse cannot be made here: say so where the worker asks.
    monkeypatch.setattr(lazyfs, "unavailable", lambda: "/dev/fuse is missing (test)")
    repos = {("r", "c"): {"/f": b"payload\n"}}
    raw = sized(task_dict(["sh", "-c", "cp /pfs/in/f /pfs/out/f"], [lazy_unit("one", {"/f": "/f"})]), repos)
    fake = FakeLink([raw], repos)
    worker = Worker(fake, "pipe", "pipe-0", str(tmp_path / "scratch"), give_up=10)
    assert in_thread(worker.run) == EXIT_OK
    assert b"payload\n" in fake.uploads[0][1]
    notes = [line["message"] for line in fake.logs if not line["user"]]
    assert any("no FUSE view on this worker (/dev/fuse is missing (test))" in n for n in notes), notes


@pytest.mark.docker
def test_links_layout_reaches_a_container_started_before_the_mount(docker_engine, tmp_path) -> None:
    """The Docker runner's shape: the worker's scratch bound into the container (rslave),
    the unit's pfs dir seen without binds; the FUSE view made after the container started."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    make_shared(str(scratch))
    name = f"pachy-test-lazy-{os.getpid()}"
    reader = FakeReader({("r", "c"): {"/x": b"through the container\n"}})
    m = LazyMount(reader, str(scratch), allow_other=True)
    try:
        subprocess.run(["docker", "run", "-d", "--name", name, "-v", f"{scratch}:{scratch}:rslave", BUSYBOX_IMAGE,
                        "sleep", "600"], capture_output=True, check=True, timeout=60)
        m.start()
        raw = task_dict(["true"], [lazy_unit("u1", {"/x": "/x"})])
        dirs = materialize(Task.from_dict(sized(raw, reader.repos)), str(scratch / "task"), reader,
                           Lazy(m.path, links=True))
        m.show(dirs.units[0].lazy_files, dirs.units[0].lazy_dirs)
        got = subprocess.run(["docker", "exec", name, "cat", f"{dirs.units[0].pfs}/in/x"], capture_output=True,
                             timeout=30)
        assert got.stdout == b"through the container\n", got.stderr
        dirs.remove()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        m.close()
        detach_under(str(scratch))
