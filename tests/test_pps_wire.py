"""The task wire format (pps.wire): what the scheduler builds is what the shim reads."""

from __future__ import annotations

import json

import pytest

from pps import wire
from shim import task as shim_task


def a_task(**kw) -> wire.Task:
    unit = wire.Unit("u1", ["d1"], {"in": "/pfs/in/a"},
                     [wire.FileSpec("in", "/a", "repo", "c1", "/a", size=3, lazy=True),
                      wire.FileSpec("in", "/b", "repo", "c1", "/b", 4, 10, size=10, empty=True)],
                     [wire.Dir("in", "/sub")])
    base = dict(task_id="t1", job_id="j1", pipeline="p", generation=1,
                transform=wire.Transform(["sh"], stdin=["echo hi"], err_cmd=["true"], env={"A": "1"},
                                         accept_return_code=[3], user="nobody", working_dir="/w"),
                secrets=[wire.Secret("s", mount_path="/sec", data={"k": "v"})], datum_timeout=2.5, datum_tries=2,
                env={"PACH_JOB_ID": "j1"}, prev=("p", "c0"), units=[unit])
    return wire.Task(**(base | kw))


def test_a_task_survives_json_and_paths_come_back_clean() -> None:
    sent = a_task()
    got = wire.Task.from_dict(json.loads(json.dumps(sent.to_dict())))
    assert sent.to_dict()["wire"] == wire.WIRE
    assert got.transform == sent.transform and got.secrets == sent.secrets and got.prev == ("p", "c0")
    assert [f.path for f in got.units[0].files] == ["a", "b"]  # relative to /pfs/<input>
    assert got.units[0].files[0].lazy and not got.units[0].files[1].lazy
    assert got.units[0].files[1].piece() == ("repo", "c1", "/b", 4, 10) and got.units[0].files[1].empty
    assert got.units[0].dirs == [("in", "sub")]
    assert (got.datum_timeout, got.datum_tries, got.kind, got.long_running) == (2.5, 2, "job", False)


def test_long_running_tasks_carry_their_output_and_ports() -> None:
    svc = a_task(kind="service", job_id="", output=wire.Output("p"), internal_port=8080, external_port=30080)
    got = wire.Task.from_dict(svc.to_dict())
    assert (got.kind, got.job_id, got.internal_port, got.external_port) == ("service", "", 8080, 30080)
    spout = a_task(kind="spout", output=wire.Output("p", "out"), spout_overwrite=True)
    got = wire.Task.from_dict(spout.to_dict())
    assert got.long_running and got.spout_overwrite and got.output == wire.Output("p", "out")


def test_a_worker_refuses_a_task_in_a_wire_format_it_does_not_know() -> None:
    raw = a_task().to_dict() | {"wire": 2}
    with pytest.raises(wire.TaskError, match="upgrade the worker"):
        wire.Task.from_dict(raw)
    older = a_task().to_dict()
    del older["wire"]  # written before the field existed: version 1
    assert wire.Task.from_dict(older).task_id == "t1"


@pytest.mark.parametrize("bad", [
    {"input": "..", "path": "/x"},
    {"input": "in", "path": "/a\x00b"},
    {"input": "in", "path": "/"},
    {"input": "a/b", "path": "/x"},
])
def test_no_file_of_a_task_lands_outside_its_input(bad: dict) -> None:
    raw = a_task().to_dict()
    raw["units"][0]["files"] = [bad]
    with pytest.raises(wire.TaskError):
        wire.Task.from_dict(raw)


def test_the_shim_reads_the_same_types() -> None:
    assert shim_task.Task is wire.Task and shim_task.FileSpec is wire.FileSpec and shim_task.TaskError is wire.TaskError
