"""Pipeline spec parsing (pps.spec): both generations, every field, every error's JSON path."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from pfsfuse.errors import InvalidArgument
from pps.spec import (
    Capabilities,
    CronInput,
    CrossInput,
    GitInput,
    GroupInput,
    JoinInput,
    Method,
    ParallelismSpec,
    PfsInput,
    SpecError,
    UnionInput,
    format_duration,
    parse_cron,
    parse_duration,
    parse_quantity,
    parse_spec,
    parse_specs,
)
from pps.spec_inputs import GLOBAL, MAP, REDUCE

# The 1.x beginner tutorial's fruit stand (seed 1.x docs 3.1.4): "filter" greps the
# sales logs in /pfs/data into /pfs/out/apple etc.; "sum" reduces over "filter",
# adding each new count to the previous total in /pfs/prev. Two objects, one file.
FRUIT_STAND = """
{
  "pipeline": {
    "name": "filter"
  },
  "transform": {
    "cmd": [ "sh" ],
    "stdin": [
        "for fruit in apple orange banana; do",
        "   grep $fruit /pfs/data/sales | awk '{print $2}' >>/pfs/out/$fruit",
        "done"
    ],
    "acceptReturnCode": [1]
  },
  "parallelism_spec": {
    "strategy": "CONSTANT",
    "constant": 1
  },
  "inputs": [
    {
      "repo": {
        "name": "data"
      },
      "method": "map"
    }
  ]
}
{
  "pipeline": {
    "name": "sum"
  },
  "transform": {
    "cmd": [ "sh" ],
    "stdin": [
        "for fruit in apple orange banana; do",
        "   { cat /pfs/prev/$fruit || echo 0; cat /pfs/filter/$fruit; } | awk '{s+=$1} END {print s}' >/pfs/out/$fruit",
        "done"
    ]
  },
  "parallelism_spec": {
    "strategy": "CONSTANT",
    "constant": 1
  },
  "inputs": [
    {
      "repo": {
        "name": "filter"
      },
      "method": "reduce"
    }
  ]
}
"""

# The Go client blog's stats pipeline (seed go-client-blog.txt), tabs and all.
GO_BLOG_STATS = """{
  "pipeline": {
    "name": "stats"
  },
  "transform": {
    "image": "dwhitena/stats",
    "cmd": [ "/bin/bash" ],
    "stdin": [
        "for filename in /pfs/projects/*; do",
\t\t"REPONAME=`cat $filename`",
\t\t"source /stats.sh >> /pfs/out/results",\t
\t"done"
    ]
  },
  "parallelism_spec": {
    "strategy": "CONSTANT",
    "constant": "1"
  },
  "inputs": [
    {
      "repo": {
        "name": "projects"
      },
      "method": "reduce"
    }
  ]
}
"""

MINIMAL = {
    "pipeline": {"name": "wordcount"},
    "transform": {"image": "wordcount-image", "cmd": ["/binary", "/pfs/data", "/pfs/out"]},
    "input": {"pfs": {"repo": "data", "glob": "/*"}},
}

FULL = {
    "pipeline": {"name": "full"},
    "description": "every field",
    "transform": {
        "image": "python:3.11",
        "cmd": ["python3", "/code/run.py"],
        "stdin": ["line one"],
        "err_cmd": ["sh"],
        "err_stdin": ["exit 0"],
        "env": {"MODE": "fast"},
        "secrets": [{"name": "creds", "mount_path": "/secrets"},
                    {"name": "token", "env_var": "TOKEN", "key": "value"}],
        "image_pull_secrets": ["myregistrykey"],
        "accept_return_code": [1, 2],
        "debug": True,
        "user": "nobody",
        "working_dir": "/work",
        "dockerfile": "./Dockerfile",
    },
    "parallelism_spec": {"coefficient": 0.5},
    "hashtree_spec": {"constant": 2},
    "resource_requests": {"memory": "1.2G", "cpu": 0.5, "disk": "10Gi"},
    "resource_limits": {"memory": "2G", "cpu": 2, "gpu": {"type": "nvidia.com/gpu", "number": 1},
                        "disk": "20Gi"},
    "sidecar_resource_limits": {"memory": "512Mi", "cpu": 1},
    "sidecar_resource_requests": {"memory": "256Mi"},
    "datum_timeout": "1m30s",
    "datum_tries": 5,
    "job_timeout": "2h",
    "input": {"cross": [
        {"pfs": {"name": "images", "repo": "images", "branch": "dev", "glob": "/*", "lazy": True,
                 "empty_files": True, "s3": True, "commit": "abc123",
                 "trigger": {"branch": "staging", "all": True, "cron_spec": "@every 1h",
                             "size": "1M", "commits": 10}}},
        {"cron": {"name": "tick", "spec": "*/10 * * * *", "repo": "ticks",
                  "start": "2024-01-01T00:00:00Z", "overwrite": True}},
    ]},
    "output_branch": "out",
    "egress": {"URL": "s3://bucket/dir"},
    "standby": True,
    "cache_size": "64M",
    "enable_stats": True,
    "service": {"internal_port": 8888, "external_port": 30888, "ip": "10.0.0.1",
                "type": "NodePort", "annotations": {"a": "b"}},
    "max_queue_size": 4,
    "chunk_spec": {"number": 10, "size_bytes": 1048576},
    "datum_set_spec": {"number": 5},
    "scheduling_spec": {"node_selector": {"disk": "ssd"}, "priority_class_name": "high"},
    "pod_spec": '{"restartPolicy": "Never"}',
    "pod_patch": '[{"op": "add", "path": "/x", "value": 1}]',
    "salt": "pepper",
    "reprocess_spec": "every_job",
    "autoscaling": True,
    "s3_out": True,
    "metadata": {"annotations": {"team": "ml"}, "labels": {"tier": "gold"}},
    "tf_job": {"tf_job": "{}"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                     "effect": "NoSchedule", "toleration_seconds": 30}],
}


def spec_with(**changes):
    """MINIMAL with top-level fields replaced (None removes one)."""
    obj = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def pfs(repo, glob="/*", **extra):
    return {"pfs": {"repo": repo, "glob": glob, **extra}}


def error_of(obj, where=""):
    with pytest.raises(SpecError) as info:
        parse_spec(obj, where)
    return str(info.value)


def assert_round_trip(spec):
    again = parse_spec(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.to_dict() == spec.to_dict()


# ---------------------------------------------------------------- 1.x specs


def test_fruit_stand_two_concatenated_specs():
    filt, total = parse_specs(FRUIT_STAND)
    assert (filt.name, total.name) == ("filter", "sum")
    assert filt.generation == total.generation == 1
    assert filt.input == PfsInput(name="data", repo="data", method=MAP)
    assert total.input == PfsInput(name="filter", repo="filter", method=REDUCE)
    assert filt.input.method == Method("BLOCK", "DIFF") and filt.input.method.alias == "map"
    assert total.input.method == Method("FILE", "NONE") and total.input.method.alias == "reduce"
    assert filt.transform.cmd == ("sh",) and filt.transform.image == ""
    assert "/pfs/out/$fruit" in filt.transform.stdin[1]
    assert "/pfs/prev/$fruit" in total.transform.stdin[1]
    assert filt.transform.accept_return_code == (1,)  # camelCase, as the 1.x docs write it
    assert filt.parallelism_spec == ParallelismSpec(constant=1)
    for spec in (filt, total):
        assert_round_trip(spec)
        assert spec.to_dict()["generation"] == 1


def test_go_blog_stats_spec():
    (spec,) = parse_specs(GO_BLOG_STATS)
    assert spec.name == "stats" and spec.generation == 1
    assert spec.transform.image == "dwhitena/stats"
    assert spec.transform.cmd == ("/bin/bash",)
    assert spec.transform.stdin[-1] == "done"
    assert spec.parallelism_spec.workers() == 1  # "constant": "1" as a string
    assert spec.input == PfsInput(name="projects", repo="projects", method=REDUCE)
    assert_round_trip(spec)


def test_v1_template_parallelism_and_method_forms():
    spec = parse_spec({
        "pipeline": {"name": "my-pipeline"},
        "transform": {"image": "my-image", "cmd": ["my-binary", "arg1", "arg2"],
                      "stdin": ["my-std-input"],
                      "secrets": [{"name": "secret_name", "mountPath": "/path/in/container"}]},
        "parallelism": "4",
        "inputs": [
            {"repo": {"name": "sums"}, "method": {"partition": "FILE", "incremental": "DIFF"}},
            {"repo": {"name": "params"}, "method": "global", "runEmpty": True},
            {"repo": {"name": "logs"}},
            {"repo": {"name": "old"}, "method": {"partition": "block", "incremental": False}},
            {"repo": {"name": "half"}, "method": {"partition": "REPO"}},
            {"repo": {"name": "data"}, "name": "renamed", "glob": "*", "branch": "dev",
             "lazy": True},
        ],
    })
    assert spec.generation == 1
    assert spec.parallelism_spec == ParallelismSpec(constant=4)
    assert spec.transform.secrets[0].mount_path == "/path/in/container"
    assert isinstance(spec.input, CrossInput)  # several 1.x inputs: their cross product
    sums, params, logs, old, half, data = spec.input.inputs
    assert sums.method == Method("FILE", "DIFF") and sums.method.alias is None
    assert params.method == GLOBAL and params.run_empty
    assert logs.method == MAP  # no method: map
    assert old.method == Method("BLOCK", "NONE")  # pre-1.2 bool incremental
    assert half.method == Method("REPO", "DIFF")  # missing half taken from the default (map)
    assert (data.name, data.repo, data.glob, data.branch, data.lazy) == (
        "renamed", "data", "/*", "dev", True)
    assert_round_trip(spec)


def test_v1_strategies_and_inputless_pipeline():
    base = {"pipeline": {"name": "wordcount_input"}, "transform": {"cmd": ["wget"]}}
    spec = parse_spec({**base, "parallelism_spec": {"strategy": "COEFFICIENT", "coefficient": 2.0}})
    assert spec.generation == 1 and spec.input is None  # triggered by run-pipeline only
    assert spec.parallelism_spec.workers(nodes=3) == 6
    assert_round_trip(spec)
    assert parse_spec({**base, "inputs": []}).input is None
    spec = parse_spec({**base, "parallelism_spec": {"coefficient": 0.5}, "inputs": []})
    assert spec.parallelism_spec.workers(nodes=1) == 1
    assert parse_spec({**base, "inputs": [], "parallelism_spec": {"strategy": "constant",
                                                                  "constant": 3}}).parallelism_spec.constant == 3


@pytest.mark.parametrize("v1, message", [
    ({"inputs": [{"repo": {"name": "a"}, "method": "mapp"}]},
     "inputs[0].method: expected map, reduce, global or an object with partition and "
     "incremental, got \"mapp\" (did you mean 'map'?)"),
    ({"inputs": [{"repo": {"name": "a"}, "method": {"partition": "ROW"}}]},
     'inputs[0].method.partition: expected BLOCK, FILE or REPO, got "ROW"'),
    ({"inputs": [{"repo": {"name": "a"}, "method": {"incremental": "ALL"}}]},
     'inputs[0].method.incremental: expected NONE, DIFF or FILE, got "ALL"'),
    ({"inputs": [{"repo": {"name": "a"}}, {"repo": {"name": "a"}}]},
     "inputs[1]: duplicate input name 'a' (also used at inputs[0])"),
    ({"inputs": [{"method": "map"}]}, 'inputs[0].repo: required'),
    ({"inputs": [{"repo": {"name": "prev"}}]}, "inputs[0]: input name 'prev' is reserved"),
    ({"inputs": {"repo": {"name": "a"}}}, "inputs: expected an array of inputs, got an object"),
    ({"inputs": [{"repo": {"name": "a"}, "mehtod": "map"}]},
     "inputs[0]: unknown field 'mehtod' (did you mean 'method'?)"),
    ({"inputs": [], "parallelism": 2, "parallelism_spec": {"constant": 2}},
     "parallelism: set either parallelism or parallelism_spec, not both"),
    ({"inputs": [], "parallelism_spec": {"strategy": "CONSTANT", "coefficient": 1}},
     "parallelism_spec.coefficient: strategy CONSTANT takes 'constant'"),
    ({"inputs": [], "parallelism_spec": {"strategy": "COEFFICIENT"}},
     "parallelism_spec.coefficient: required by strategy COEFFICIENT"),
    ({"inputs": [], "parallelism_spec": {"strategy": "RANDOM"}},
     'parallelism_spec.strategy: expected CONSTANT or COEFFICIENT, got "RANDOM"'),
    ({"inputs": [], "input": pfs("a")},
     "inputs: set either 'input' (2.x) or 'inputs' (1.x), not both"),
    ({"inputs": [], "generation": 2}, "inputs: 'inputs' is the 1.x form"),
])
def test_v1_errors(v1, message):
    obj = {"pipeline": {"name": "p"}, "transform": {"cmd": ["sh"]}, **v1}
    assert error_of(obj).startswith(f"pipeline spec 'p': {message}")


def test_method_only_in_generation_one():
    obj = spec_with(input=pfs("data", method="map"))
    assert "input.pfs.method: 'method' is a 1.x field" in error_of(obj)
    spec = parse_spec({**obj, "generation": 1})
    assert spec.generation == 1 and spec.input.method == MAP and spec.input.glob == "/*"
    spec = parse_spec({**spec_with(input={"pfs": {"repo": "data"}}), "generation": 1})
    assert spec.input.method == MAP and spec.input.glob == ""  # the method decides


# ---------------------------------------------------------------- 2.x specs


def test_minimal_spec_defaults():
    spec = parse_spec(MINIMAL)
    assert spec.generation == 2
    assert spec.input == PfsInput(name="data", repo="data", glob="/*")
    assert spec.input.branch == "master" and spec.input.method is None
    assert spec.datum_tries == 3 and spec.output_branch == "master"
    assert spec.parallelism_spec.workers(nodes=10) == 1
    assert spec.max_queue_size == 1 and spec.reprocess_spec == "until_success"
    assert spec.datum_timeout is None and spec.job_timeout is None
    assert spec.to_dict() == {
        "pipeline": {"name": "wordcount"},
        "transform": {"image": "wordcount-image", "cmd": ["/binary", "/pfs/data", "/pfs/out"]},
        "parallelism_spec": {"constant": 1},
        "datum_tries": 3,
        "input": {"pfs": {"name": "data", "repo": "data", "branch": "master", "glob": "/*"}},
        "output_branch": "master",
        "max_queue_size": 1,
        "reprocess_spec": "until_success",
    }


def test_full_spec_every_field():
    spec = parse_spec(FULL)
    t = spec.transform
    assert t.image == "python:3.11" and t.err_cmd == ("sh",) and t.err_stdin == ("exit 0",)
    assert t.env == {"MODE": "fast"} and t.user == "nobody" and t.working_dir == "/work"
    assert [s.name for s in t.secrets] == ["creds", "token"] and t.secrets[1].key == "value"
    assert t.image_pull_secrets == ("myregistrykey",) and t.accept_return_code == (1, 2)
    assert t.debug and t.dockerfile == "./Dockerfile"
    assert spec.parallelism_spec.workers(nodes=4) == 2
    assert spec.hashtree_spec.constant == 2
    assert spec.resource_requests.memory_bytes == 1_200_000_000
    assert spec.resource_requests.disk_bytes == 10 * 2**30
    assert spec.resource_limits.gpu.number == 1 and spec.resource_limits.cpu == 2.0
    assert spec.sidecar_resource_limits.memory == "512Mi"
    assert spec.sidecar_resource_requests.memory == "256Mi"
    assert spec.datum_timeout == 90 and spec.job_timeout == 7200 and spec.datum_tries == 5
    images, tick = spec.input.inputs
    assert images.trigger.cron_spec == "@every 1h" and images.trigger.commits == 10
    assert images.s3 and images.lazy and images.empty_files and images.commit == "abc123"
    assert tick == CronInput(name="tick", spec="*/10 * * * *", repo="ticks",
                             start=datetime(2024, 1, 1, tzinfo=UTC), overwrite=True)
    assert spec.output_branch == "out" and spec.egress.url == "s3://bucket/dir"
    assert spec.standby and spec.enable_stats and spec.cache_size == "64M"
    assert spec.service.external_port == 30888 and spec.service.annotations == {"a": "b"}
    assert spec.max_queue_size == 4 and spec.chunk_spec.size_bytes == 1048576
    assert spec.datum_set_spec.number == 5
    assert spec.scheduling_spec.node_selector == {"disk": "ssd"}
    assert json.loads(spec.pod_spec) == {"restartPolicy": "Never"}
    assert spec.salt == "pepper" and spec.reprocess_spec == "every_job"
    assert spec.autoscaling and spec.s3_out and spec.metadata.labels == {"tier": "gold"}
    assert spec.tf_job.tf_job == "{}" and spec.tolerations[0].toleration_seconds == 30
    assert_round_trip(spec)
    out = spec.to_dict()
    assert out["datum_timeout"] == "1m30s" and out["job_timeout"] == "2h"
    assert out["input"]["cross"][1]["cron"]["start"] == "2024-01-01T00:00:00Z"
    assert out["parallelism_spec"] == {"coefficient": 0.5}
    # Everything FULL says is in the output (the output adds defaults such as names).
    for key, value in FULL.items():
        if key not in ("input", "datum_timeout", "job_timeout", "resource_limits"):
            assert out[key] == value, key


def test_spout_with_service_and_no_input():
    spec = parse_spec(spec_with(input=None, spout={
        "overwrite": True, "service": {"internal_port": 80, "annotations": {"foo": "bar"}}}))
    assert spec.input is None and spec.spout.overwrite
    assert spec.spout.service.internal_port == 80 and spec.spout.service.annotations == {"foo": "bar"}
    assert_round_trip(spec)
    assert parse_spec(spec_with(input=None, spout={})).spout.service is None


def test_camel_case_and_null_fields():
    spec = parse_spec(spec_with(transform={"cmd": ["sh"], "workingDir": "/w", "image": None},
                                datumTries=2, outputBranch=None))
    assert spec.transform.working_dir == "/w" and spec.transform.image == ""
    assert spec.datum_tries == 2 and spec.output_branch == "master"


# ------------------------------------------------------------------- inputs


def test_every_input_type_nested():
    spec = parse_spec(spec_with(input={"union": [
        {"cross": [pfs("a"), {"join": [pfs("b", "/(*)", join_on="$1", outer_join=True),
                                       pfs("c", "/(*)", join_on="$1")]}]},
        {"cross": [{"group": [pfs("d", "/(*)-*", group_by="$1"), pfs("e", "/*", group_by="$1")]},
                   {"cron": {"name": "a", "spec": "@daily"}}]},
        {"git": {"URL": "https://github.com/foo/bar.git"}},
        {"atom": {"repo": "old", "glob": "/"}},
    ]}))
    union = spec.input
    assert isinstance(union, UnionInput)
    cross1, cross2, git, atom = union.inputs
    assert isinstance(cross1, CrossInput) and isinstance(cross1.inputs[1], JoinInput)
    assert cross1.inputs[1].inputs[0].join_on == "$1" and cross1.inputs[1].inputs[0].outer_join
    group, cron = cross2.inputs
    assert isinstance(group, GroupInput) and group.inputs[0].group_by == "$1"
    assert cron == CronInput(name="a", spec="@daily", repo="wordcount_a")  # <pipeline>_<input>
    assert git == GitInput(name="bar", url="https://github.com/foo/bar.git", branch="master")
    assert atom == PfsInput(name="old", repo="old", glob="/")  # "atom" was pfs before 1.8.1
    # a union's members may share names ("a" twice), crossed inputs may not
    names = [(leaf.name, path) for leaf, path in spec.leaves()]
    assert names[0] == ("a", "input.union[0].cross[0].pfs")
    assert names[4] == ("e", "input.union[1].cross[0].group[1].pfs")
    assert names[5] == ("a", "input.union[1].cross[1].cron")
    assert_round_trip(spec)


def test_glob_gets_a_leading_slash():
    assert parse_spec(spec_with(input=pfs("data", "*"))).input.glob == "/*"


def test_duplicate_input_names():
    msg = error_of(spec_with(input={"cross": [pfs("data"), pfs("data", "/")]}))
    assert msg == ("pipeline spec 'wordcount': input.cross[1].pfs: duplicate input name 'data' "
                   "(also used at input.cross[0].pfs); give one of them a different 'name'")
    # renaming one fixes it
    parse_spec(spec_with(input={"cross": [pfs("data"), pfs("data", "/", name="whole")]}))
    # a union of same-named inputs is fine, but crossing it with another 'data' is not
    union = {"union": [pfs("data"), pfs("other", name="data")]}
    parse_spec(spec_with(input=union))
    msg = error_of(spec_with(input={"join": [union, pfs("x", name="data")]}))
    assert "input.join[1].pfs: duplicate input name 'data' (also used at input.join[0].union[0].pfs)" in msg
    msg = error_of(spec_with(input={"cross": [{"cron": {"name": "t", "spec": "@hourly"}},
                                              {"git": {"URL": "https://x.org/t.git"}}]}))
    assert "input.cross[1].git: duplicate input name 't' (also used at input.cross[0].cron)" in msg


@pytest.mark.parametrize("spec, good", [
    ("*/10 * * * *", True), ("0 0 1 1 *", True), ("@daily", True), ("@every 10s", True),
    ("@every 1h30m", True), ("0 9-17/2 * JAN-mar mon-FRI", True), ("15,45 * ? * 7", True),
    ("0 0 * * *", True), ("@hourly", True),
    ("* * * *", False), ("61 * * * *", False), ("@every", False), ("@every 0s", False),
    ("@sometimes", False), ("* 24 * * *", False), ("5-1 * * * *", False), ("*/0 * * * *", False),
    ("* * 0 * *", False), ("* * * 13 *", False), ("x * * * *", False), ("* * * * * *", False),
])
def test_cron_specs(spec, good):
    if good:
        parse_cron(spec)
        parse_spec(spec_with(input={"cron": {"name": "tick", "spec": spec}}))
    else:
        with pytest.raises(ValueError):
            parse_cron(spec)
        msg = error_of(spec_with(input={"cron": {"name": "tick", "spec": spec}}))
        assert msg.startswith(f"pipeline spec 'wordcount': input.cron.spec: invalid cron spec \"{spec}\": ")


def test_cron_messages_and_next_tick():
    assert "minute 61 out of range 0-59" in error_of(
        spec_with(input={"cron": {"name": "t", "spec": "61 * * * *"}}))
    assert "expected 5 fields" in error_of(spec_with(input={"cron": {"name": "t", "spec": "* *"}}))
    t = datetime(2024, 1, 1, 12, 7, 30, tzinfo=UTC)
    assert parse_cron("*/10 * * * *").next_after(t) == datetime(2024, 1, 1, 12, 10, tzinfo=UTC)
    assert parse_cron("@daily").next_after(t) == datetime(2024, 1, 2, tzinfo=UTC)
    assert parse_cron("@every 10s").next_after(t) == datetime(2024, 1, 1, 12, 7, 40, tzinfo=UTC)
    # 2024-01-01 is a Monday: dom and dow both set means either matches
    assert parse_cron("0 0 15 * fri").next_after(t) == datetime(2024, 1, 5, tzinfo=UTC)
    assert parse_cron("0 0 * * sun").next_after(t) == datetime(2024, 1, 7, tzinfo=UTC)
    assert parse_cron("0 0 30 2 *").next_after(t) is None


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("obj, message", [
    (spec_with(input={"cross": [pfs("a"), pfs("b", 3)]}),
     "input.cross[1].pfs.glob: expected a string, got 3"),
    (spec_with(transfrom={"cmd": ["sh"]}),
     "unknown field 'transfrom' (did you mean 'transform'?)"),
    (spec_with(input={"pfs": {"rep": "a", "glob": "/"}}),
     "input.pfs: unknown field 'rep' (did you mean 'repo'?)"),
    (spec_with(scale_down_threshold="10s"),
     "unknown field 'scale_down_threshold' (replaced by 'standby' in 1.7.1)"),
    (spec_with(zzz=1), "unknown field 'zzz'"),
    (spec_with(input={"pfs": {"repo": "a", "glob": "/"}, "cron": {"name": "t", "spec": "@daily"}}),
     "input: an input sets exactly one of pfs, cross, union, join, group, cron or git; "
     "got 'pfs', 'cron'"),
    (spec_with(input={"cross": [{}]}),
     "input.cross[0]: an input sets exactly one of pfs, cross, union, join, group, cron or git; got none"),
    (spec_with(input={"cross": []}), "input.cross: a cross needs at least one input"),
    (spec_with(input={"union": pfs("a")}), "input.union: expected an array, got an object"),
    (spec_with(input=[pfs("a")]), "input: expected an input object, got an array"),
    (spec_with(input={"pfs": {"glob": "/"}}), "input.pfs.repo: required"),
    (spec_with(input={"pfs": {"repo": "a"}}), "input.pfs.glob: required"),
    (spec_with(input={"cron": {"spec": "@daily"}}), "input.cron.name: required"),
    (spec_with(input={"cron": {"name": "t"}}), "input.cron.spec: required"),
    (spec_with(input={"cron": {"name": "t", "spec": "@daily", "start": "yesterday"}}),
     'input.cron.start: expected an RFC 3339 time like 2024-01-01T00:00:00Z, got "yesterday"'),
    (spec_with(input={"cron": {"name": "t", "spec": "@daily", "start": "2024-01-01T00:00:00"}}),
     "input.cron.start: \"2024-01-01T00:00:00\" has no time zone"),
    (spec_with(input={"git": {"URL": "github.com/foo/bar"}}),
     'input.git.URL: expected a URL of the form https://github.com/foo/bar.git, got "github.com/foo/bar"'),
    (spec_with(input={"pfs": {"repo": "a", "glob": "/", "trigger": {"cron_spec": "daily"}}}),
     'input.pfs.trigger.cron_spec: invalid cron spec "daily"'),
    (spec_with(input={"pfs": {"repo": "a", "glob": "/", "trigger": {"size": "big"}}}),
     'input.pfs.trigger.size: invalid size "big"'),
    (spec_with(input=pfs("a", name="out")), "input.pfs.name: input name 'out' is reserved for /pfs/out"),
    (spec_with(input=pfs("a", lazy="yes")), 'input.pfs.lazy: expected true or false, got "yes"'),
    (spec_with(transform=None), "transform: required"),
    (spec_with(transform={"image": "x"}), "transform.cmd: required: the command to run"),
    (spec_with(transform={"cmd": "sh"}), 'transform.cmd: expected an array of strings, got "sh"'),
    (spec_with(transform={"cmd": ["sh", 3]}), "transform.cmd[1]: expected a string, got 3"),
    (spec_with(transform={"cmd": ["sh"], "env": {"A": 1}}), "transform.env.A: expected a string, got 1"),
    (spec_with(transform={"cmd": ["sh"], "accept_return_code": ["one"]}),
     'transform.accept_return_code[0]: expected an integer, got "one"'),
    (spec_with(transform={"cmd": ["sh"], "secrets": [{"name": "s"}]}),
     "transform.secrets[0]: a secret sets mount_path, or env_var and key"),
    (spec_with(transform={"cmd": ["sh"], "secrets": [{"name": "s", "env_var": "S"}]}),
     "transform.secrets[0].key: required with env_var"),
    (spec_with(transform={"cmd": ["sh"], "err_stdin": ["x"]}),
     "transform.err_stdin: err_stdin is sent to err_cmd, which is not set"),
    (spec_with(transform={"cmd": ["sh"], "workingDir": "/a", "working_dir": "/b"}),
     "transform.working_dir: set twice (as 'workingDir' and 'working_dir')"),
    (spec_with(input=None), "input: required (only a spout pipeline has no input)"),
    (spec_with(datum_tries=0), "datum_tries: expected at least 1, got 0"),
    (spec_with(datum_tries=1.5), "datum_tries: expected an integer, got 1.5"),
    (spec_with(datum_tries=True), "datum_tries: expected an integer, got true"),
    (spec_with(max_queue_size=0), "max_queue_size: expected at least 1, got 0"),
    (spec_with(parallelism_spec={"constant": 2, "coefficient": 1.0}),
     "parallelism_spec.coefficient: set at most one of constant and coefficient"),
    (spec_with(parallelism_spec={"coefficient": -1}),
     "parallelism_spec.coefficient: expected a positive number, got -1"),
    (spec_with(resource_limits={"memory": "lots"}), 'resource_limits.memory: invalid size "lots"'),
    (spec_with(resource_requests={"cpu": "x"}), 'resource_requests.cpu: expected a number, got "x"'),
    (spec_with(resource_limits={"gpu": {"kind": "a"}}),
     "resource_limits.gpu: unknown field 'kind'"),
    (spec_with(egress={}), "egress.URL: required"),
    (spec_with(egress={"URL": "bucket"}), 'egress.URL: expected a URL like s3://bucket/dir, got "bucket"'),
    (spec_with(service={"external_port": 80}), "service.internal_port: required"),
    (spec_with(service={"internal_port": 70000}),
     "service.internal_port: expected between 1 and 65535, got 70000"),
    (spec_with(service={"internal_port": 80, "type": "Nodeport"}),
     "service.type: expected one of NodePort, LoadBalancer, ClusterIP, got "
     "\"Nodeport\" (did you mean 'NodePort'?)"),
    (spec_with(spout={}, service={"internal_port": 80}),
     "service: a pipeline is a spout or a service, not both"),
    (spec_with(spout={}), "input: a spout takes no input"),
    (spec_with(reprocess_spec="always"),
     'reprocess_spec: expected one of until_success, every_job, got "always"'),
    (spec_with(pod_spec="{not json"), "pod_spec: not valid JSON"),
    (spec_with(pod_patch='{"op": "add"}'), "pod_patch: expected a JSON array (a JSON Patch) encoded as a string"),
    (spec_with(datum_set_spec={"per_worker": 2, "number": 1}),
     "datum_set_spec.per_worker: per_worker cannot be set with number or size_bytes"),
    (spec_with(tolerations=[{"operator": "Maybe"}]),
     'tolerations[0].operator: expected one of Exists, Equal, got "Maybe"'),
    (spec_with(output_branch="no/slash"), "output_branch: invalid branch name 'no/slash'"),
    (spec_with(generation=3), "generation: expected between 1 and 2, got 3"),
    (spec_with(description=["x"]), "description: expected a string, got an array"),
])
def test_errors_name_the_json_path(obj, message):
    assert error_of(obj).startswith(f"pipeline spec 'wordcount': {message}")


def test_spec_error_carries_path_and_is_invalid_argument():
    with pytest.raises(InvalidArgument) as info:
        parse_spec(spec_with(input={"cross": [pfs("a"), pfs("b", 3)]}))
    err = info.value
    assert isinstance(err, SpecError)
    assert (err.path, err.label) == ("input.cross[1].pfs.glob", "pipeline spec 'wordcount'")
    assert err.detail == "expected a string, got 3"
    assert err.exit_code == 2


@pytest.mark.parametrize("text, seconds", [
    ("10s", 10), ("1m30s", 90), ("2h", 7200), ("1.5h", 5400), ("300ms", 0.3), ("0", 0),
    ("1h2m3s", 3723), ("500us", 0.0005), ("2µs", 2e-6), ("100ns", 1e-7),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(parse_duration(text))) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1 m", "-5s", "5 minutes", "1d", "s", "1h 30m"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
    msg = error_of(spec_with(datum_timeout=text))
    assert msg.startswith("pipeline spec 'wordcount': datum_timeout: ")
    assert "duration" in msg


def test_duration_formats_and_types():
    assert [format_duration(s) for s in (90, 7200, 0.25, 3723.5, 0)] == [
        "1m30s", "2h", "250ms", "1h2m3.5s", "0s"]
    assert error_of(spec_with(job_timeout=60)) == (
        "pipeline spec 'wordcount': job_timeout: expected a string, got 60")


def test_quantities():
    assert parse_quantity("1.2G") == 1_200_000_000
    assert parse_quantity("64Mi") == 64 * 2**20
    assert parse_quantity("512") == 512
    assert parse_quantity("10GB") == 10**10
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("2Ki") == 2048
    for bad in ("", "G", "1.2.3G", "-1G", "1Q"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


# -------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["bad name", "-lead", "trail_", "x" * 51, "a/b", ""])
def test_invalid_pipeline_names(name):
    msg = error_of(spec_with(pipeline={"name": name}), "#2 (line 9)")
    if name:
        assert msg.startswith(f"pipeline spec #2 (line 9): pipeline.name: invalid pipeline name '{name}': "
                              "names use letters, digits")
    else:
        assert msg.startswith("pipeline spec #2 (line 9): pipeline.name: required")


def test_invalid_repo_branch_and_input_names():
    assert error_of(spec_with(input=pfs("my repo"))).startswith(
        "pipeline spec 'wordcount': input.pfs.repo: invalid repo name 'my repo'")
    assert error_of(spec_with(input=pfs("a", branch="-x"))).startswith(
        "pipeline spec 'wordcount': input.pfs.branch: invalid branch name '-x'")
    assert error_of(spec_with(input=pfs("a", name="a b"))).startswith(
        "pipeline spec 'wordcount': input.pfs.name: invalid input name 'a b'")
    long = spec_with(pipeline={"name": "p" * 45}, input={"cron": {"name": "ticks", "spec": "@daily"}})
    assert "input.cron: the default repo '" + "p" * 45 + "_ticks' is not valid" in error_of(long)


def test_unnamed_spec_uses_its_index():
    assert error_of({"transform": {"cmd": ["sh"]}}, "#3") == (
        'pipeline spec #3: pipeline: required: {"name": "..."}')
    assert error_of({"transform": {"cmd": ["sh"]}}) == 'pipeline spec: pipeline: required: {"name": "..."}'
    assert error_of(spec_with(pipeline={})) == (
        "pipeline spec: pipeline.name: required: the pipeline's name")
    assert error_of(spec_with(pipeline={"name": "ok", "nmae": "x"}), "#1") == (
        "pipeline spec 'ok': pipeline: unknown field 'nmae' (did you mean 'name'?)")


# ---------------------------------------------------------- files of specs


def test_several_specs_in_one_text():
    a = spec_with(pipeline={"name": "a"})
    b = spec_with(pipeline={"name": "b"}, input=pfs("a"))
    for text in (json.dumps([a, b]), json.dumps(a) + "\n" + json.dumps(b),
                 json.dumps(a) + json.dumps(b), "\ufeff" + json.dumps(a, indent=2) + "\n\n" + json.dumps(b)):
        assert [s.name for s in parse_specs(text)] == ["a", "b"]
    assert [s.name for s in parse_specs(json.dumps(a))] == ["a"]
    assert [s.name for s in parse_specs(json.dumps([a]) + json.dumps(b))] == ["a", "b"]


def test_errors_in_a_file_of_specs():
    a = json.dumps(spec_with(pipeline={"name": "a"}), indent=2)
    unnamed = json.dumps({"transform": {"cmd": ["sh"]}, "input": pfs("a")}, indent=2)
    with pytest.raises(SpecError) as info:
        parse_specs(a + "\n" + unnamed)
    line = a.count("\n") + 2
    assert str(info.value) == f'pipeline spec #2 (line {line}): pipeline: required: {{"name": "..."}}'
    with pytest.raises(SpecError, match=r"^pipeline spec 'a': transform.cmd\[0\]"):
        parse_specs(a + json.dumps(spec_with(pipeline={"name": "a"}, transform={"cmd": [1]})))
    with pytest.raises(InvalidArgument, match=r"^pipeline spec 'a': defined twice in this file \(specs #1 and #2\)$"):
        parse_specs(a + a)
    with pytest.raises(InvalidArgument, match=r"^pipeline spec #2 \(line 1\): expected a JSON object, got 3$"):
        parse_specs(json.dumps([spec_with(), 3]))
    for empty in ("", "  \n\t"):
        with pytest.raises(InvalidArgument, match="no pipeline spec found"):
            parse_specs(empty)


@pytest.mark.parametrize("text, where", [
    ('{"pipeline": {"name": "a"},\n  "transform": {"cmd": ["sh"],}\n}', "line 2, column 31"),
    ('{"pipeline": {"name": "a"}}\n{"pipeline" {"name": "b"}}', "line 2, column 13"),
    ('{"a": 1}, {"b": 2}', "line 1, column 9"),
    ('{"a": [1, 2}', "line 1, column 12"),
    ("{'a': 1}", "line 1, column 2"),
])
def test_malformed_json_reports_line_and_column(text, where):
    with pytest.raises(InvalidArgument) as info:
        parse_specs(text)
    assert str(info.value).startswith(f"pipeline spec: malformed JSON at {where}: ")


def test_duplicate_json_keys_are_errors():
    text = '{"pipeline": {"name": "a"}, "transform": {"cmd": ["sh"], "cmd": ["bash"]}, "input": {}}'
    with pytest.raises(SpecError, match=r"^pipeline spec 'a': transform.cmd: set twice in one object$"):
        parse_specs(text)


# ------------------------------------------------------------- inert fields


def test_inert_fields_on_this_machine():
    spec = parse_spec(FULL)
    local = dict(spec.inert_fields())
    assert local["resource_limits.gpu"] == "no GPU on this machine"
    assert local["pod_spec"] == "only used by the kubernetes runner"
    assert local["transform.image_pull_secrets"].startswith("only used by the kubernetes runner")
    assert local["transform.image"].startswith("the local runner runs cmd")
    assert local["input.cross[0].pfs.s3"].startswith("needs an S3 gateway")
    assert set(local) == {
        "transform.image", "transform.image_pull_secrets", "transform.dockerfile",
        "hashtree_spec", "cache_size", "tf_job", "resource_limits.gpu", "resource_requests",
        "resource_limits.disk", "sidecar_resource_limits", "sidecar_resource_requests",
        "scheduling_spec", "metadata", "pod_spec", "pod_patch", "tolerations", "service.type",
        "service.ip", "service.annotations", "s3_out", "input.cross[0].pfs.s3",
    }
    docker = dict(spec.inert_fields(Capabilities(runner="docker", gpus=1)))
    assert "transform.image" not in docker and "resource_limits.gpu" not in docker
    kube = dict(spec.inert_fields(Capabilities(runner="kubernetes", gpus=4, s3_gateway=True)))
    assert set(kube) == {"transform.dockerfile", "hashtree_spec", "cache_size", "tf_job"}
    few = dict(parse_spec(spec_with(resource_limits={"gpu": {"number": 2}})).inert_fields(
        Capabilities(runner="docker", gpus=1)))
    assert few == {"resource_limits.gpu": "2 GPUs asked for, 1 available"}
    with pytest.raises(InvalidArgument, match="unknown runner"):
        spec.inert_fields(Capabilities(runner="mesos"))


def test_plain_spec_has_no_inert_fields_beyond_its_image():
    assert parse_spec(MINIMAL).inert_fields() == [
        ("transform.image", "the local runner runs cmd on this machine, without an image")]
    assert parse_spec(MINIMAL).inert_fields(Capabilities(runner="docker")) == []
    spout = parse_spec(spec_with(input=None, spout={"service": {"internal_port": 80,
                                                               "annotations": {"a": "b"}}}))
    assert ("spout.service.annotations", "only used by the kubernetes runner") in spout.inert_fields()
    gpu_number = parse_spec(spec_with(resource_limits={"gpu": 1}))
    assert gpu_number.resource_limits.gpu.number == 1
    assert_round_trip(gpu_number)


def test_empty_strings_mean_defaults_and_nanosecond_times():
    spec = parse_spec(spec_with(input=pfs("data", branch="", name=""), output_branch="",
                                reprocess_spec=""))
    assert spec.input.branch == "master" and spec.input.name == "data"
    assert spec.output_branch == "master" and spec.reprocess_spec == "until_success"
    cron = parse_spec(spec_with(input={"cron": {"name": "t", "spec": "@hourly",
                                                "start": "2024-05-06T07:08:09.123456789+02:00"}}))
    assert cron.input.start.microsecond == 123456 and cron.input.start.utcoffset().seconds == 7200
    assert_round_trip(cron)
