"""The pipeline commands of `pachctl` (pipelines, jobs, datums, logs, flush,
secrets) against a fake daemon.

Each test runs ``pachctl.cli.main.main([...])`` in-process with the CLI's
Client talking to an ``httpx.MockTransport`` that serves canned models of
``mountd.pps_models`` and records every request, so the CLI side (argument
forms, tables, JSON, exit codes) is checked without a scheduler.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from mountd.pps_models import (
    Datum,
    DatumFile,
    FlushResult,
    InputCommit,
    Job,
    LogLine,
    Note,
    OutputCommit,
    Pipeline,
)
from pachctl.cli import cmd_pipeline, common
from pachctl.cli.main import main
from pachctl.client import Client

NOW = time.time()

EDGES = Pipeline(
    name="edges",
    version=2,
    state="running",
    input="images:/*",
    output_repo="edges",
    created=NOW - 120,
    updated=NOW - 60,
    workers=1,
    last_job="a1b2c3",
    last_job_state="success",
    spec={"pipeline": {"name": "edges"}, "transform": {"cmd": ["python3", "/edges.py"]}},
)
MONTAGE = Pipeline(
    name="montage",
    state="paused",
    stopped=True,
    input="(images:/ ⨯ edges:/)",
    output_repo="montage",
    created=NOW - 100,
    updated=NOW - 100,
)
DONE = Job(
    id="a1b2c3d4e5f6",
    pipeline="edges",
    state="success",
    created=NOW - 11,
    started=NOW - 10,
    finished=NOW - 7.5,
    input_commits=[InputCommit(name="images", repo="images", branch="master", commit="c0ffee")],
    output_commit=OutputCommit(repo="edges", branch="master", commit="beef01"),
    data_total=4,
    data_processed=3,
    data_skipped=1,
)
RUNNING = Job(id="ffff0000", pipeline="montage", state="running", created=NOW - 3, started=NOW - 2, data_total=2)
FAILED = Job(id="dead0001", pipeline="montage", state="failure", reason="datum 9f failed: exit status 1", created=NOW - 5)
DATUMS = [
    Datum(
        id="9f86d081", job=DONE.id, state="success", tries=1, started=NOW - 9, finished=NOW - 8,
        files=[DatumFile(input="images", repo="images", commit="c0ffee", path="/liberty.png", size=58644)],
    ),
    Datum(id="6b86b273", job=DONE.id, state="skipped"),
]
COMMIT = {
    "id": "beef01", "repo": "edges", "branch": "master", "ref": "master/3", "parent_ref": "master/2",
    "started": NOW - 10, "finished": NOW - 8, "size": 2048,
    "provenance": [{"repo": "images", "commit": "c0ffee"}],
}
SECRET_VALUE = "hunter2-do-not-print"


@dataclass
class Fake:
    """A canned daemon: routes by (method, path regex); records requests."""

    requests: list[httpx.Request] = field(default_factory=list)
    created: list[Pipeline] = field(default_factory=lambda: [EDGES.model_copy(update={"notes": [
        Note(path="transform.gpu", reason="no GPUs here"),
        Note(path="resource_limits", reason="not enforced by the local runner"),
    ]})])
    flush: FlushResult = field(default_factory=lambda: FlushResult(commits=[COMMIT]))
    secrets: dict[str, dict] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)

    def routes(self) -> list[tuple[str, str, Callable[[httpx.Request, re.Match], httpx.Response]]]:
        ok = lambda v, status=200: lambda req, m: _json(v, status)  # noqa: E731
        return [
            ("POST", r"/v1/pipelines", ok([p.model_dump() for p in self.created], 201)),
            ("GET", r"/v1/pipelines", ok([EDGES.model_dump(), MONTAGE.model_dump()])),
            ("DELETE", r"/v1/pipelines", ok({})),
            ("GET", r"/v1/pipelines/edges", ok(EDGES.model_dump())),
            ("GET", r"/v1/pipelines/([^/]+)", lambda req, m: _missing(f"pipeline '{m[1]}' not found")),
            ("DELETE", r"/v1/pipelines/edges", ok({})),
            ("POST", r"/v1/pipelines/edges/stop", ok(EDGES.model_copy(update={"stopped": True, "state": "paused"}).model_dump())),
            ("POST", r"/v1/pipelines/edges/start", ok(EDGES.model_dump())),
            ("POST", r"/v1/pipelines/edges/run", ok(RUNNING.model_dump())),
            ("POST", r"/v1/jobs", ok(RUNNING.model_dump(), 201)),
            ("GET", r"/v1/jobs", ok([RUNNING.model_dump(), DONE.model_dump()])),
            ("GET", r"/v1/jobs/a1b2[0-9a-f]*", ok(DONE.model_dump())),
            ("GET", r"/v1/jobs/dead[0-9a-f]*", ok(FAILED.model_dump())),
            ("DELETE", r"/v1/jobs/[0-9a-f]+", ok({})),
            ("GET", r"/v1/jobs/[^/]+/datums", ok([d.model_dump() for d in DATUMS])),
            ("GET", r"/v1/jobs/[^/]+/datums/9f86d081", ok(DATUMS[0].model_dump())),
            ("GET", r"/v1/jobs/([^/]+)", lambda req, m: _missing(f"no job '{m[1]}'")),
            ("GET", r"/v1/logs", self._logs),
            ("POST", r"/v1/flush", lambda req, m: _json(self.flush.model_dump())),
            ("PUT", r"/v1/secrets/([^/]+)", self._put_secret),
            ("GET", r"/v1/secrets", lambda req, m: _json(sorted(self.secrets))),
            ("DELETE", r"/v1/secrets/([^/]+)", lambda req, m: _json(self.secrets.pop(m[1]) and {})),
            ("GET", r"/v1/repos/edges/commit", ok(COMMIT)),
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for method, pattern, handler in self.routes():
            m = re.fullmatch(pattern, request.url.path)
            if m and method == request.method:
                return handler(request, m)
        return httpx.Response(404, json={"detail": "Not Found"})  # as FastAPI answers

    def _logs(self, request: httpx.Request, m: re.Match) -> httpx.Response:
        lines = (line.model_dump_json().encode() + b"\n" for line in self.logs)
        return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=lines)

    def _put_secret(self, request: httpx.Request, m: re.Match) -> httpx.Response:
        self.secrets[m[1]] = json.loads(request.content)
        return _json({})

    # -- what the tests look at --

    def last(self, method: str, path: str) -> httpx.Request:
        hits = [r for r in self.requests if r.method == method and r.url.path == path]
        assert hits, f"no {method} {path} among {[(r.method, r.url.path) for r in self.requests]}"
        return hits[-1]

    def body(self, method: str, path: str) -> dict:
        return json.loads(self.last(method, path).content)


def _json(value, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=value)


def _missing(message: str) -> httpx.Response:
    return httpx.Response(404, json={"error": message, "kind": "not_found"})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    f = Fake()
    c = Client("127.0.0.1:9", autostart=False)
    c._http = httpx.Client(transport=httpx.MockTransport(f), base_url="http://mountd")
    monkeypatch.setattr(common, "_client", c)
    return f


@dataclass
class Out:
    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def pach(fake: Fake, capsys: pytest.CaptureFixture[str]) -> Callable[..., Out]:
    def run(*argv: str, rc: int | None = 0, stdin: str | None = None) -> Out:
        if stdin is not None:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr("sys.stdin", io.StringIO(stdin))
                code = main(list(argv))
        else:
            code = main(list(argv))
        cap = capsys.readouterr()
        res = Out(code, cap.out, cap.err)
        assert "Traceback" not in res.err and "internal error" not in res.err, res.err
        if rc is not None:
            assert res.rc == rc, f"pachctl {' '.join(argv)}: exit {res.rc}, want {rc}\nstderr: {res.err}"
        return res

    return run


def _header(line: str) -> list[str]:
    return line.split()


# -- pipelines --------------------------------------------------------------------


def test_list_pipeline_both_forms_and_json(pach, fake: Fake) -> None:
    one, two = pach("list-pipeline"), pach("list", "pipeline")
    assert one.out == two.out
    assert _header(one.lines[0]) == ["NAME", "INPUT", "OUTPUT", "STATE", "CREATED"]  # the seed's order
    edges = one.lines[1]
    assert edges.startswith("edges ") and "images:/*" in edges and "edges/master" in edges
    assert "running / success" in edges and edges.endswith("minutes ago")  # NOW is fixed at import
    assert " paused " in one.lines[2]  # no last job: the state alone
    assert [p["name"] for p in pach("list", "pipeline", "--json").json()] == ["edges", "montage"]


def test_inspect_pipeline_facts_then_spec(pach) -> None:
    res = pach("inspect", "pipeline", "edges")
    head, _, spec = res.out.partition("Spec:\n")
    assert "Name: edges\n" in head and "State: running\n" in head and "Output: edges/master\n" in head
    assert "Last Job: a1b2c3 (success)\n" in head
    assert json.loads(spec) == EDGES.spec
    assert pach("inspect-pipeline", "edges", "--json").json()["spec"] == EDGES.spec


def test_create_pipeline_from_file_sends_the_text_and_warns_notes(pach, fake: Fake, tmp_path) -> None:
    text = '{"pipeline": {"name": "edges"}}\n{"pipeline": {"name": "montage"}}\n'
    (tmp_path / "two.json").write_text(text)
    res = pach("create-pipeline", "-f", str(tmp_path / "two.json"))
    assert res.out == ""
    assert fake.body("POST", "/v1/pipelines") == {"text": text, "update": False, "reprocess": False}
    assert res.err.splitlines() == [
        "warning: transform.gpu: no GPUs here",
        "warning: resource_limits: not enforced by the local runner",
    ]
    res = pach("create", "pipeline", "--file", str(tmp_path / "two.json"), "--json")
    assert res.json()[0]["name"] == "edges"


def test_create_pipeline_from_stdin(pach, fake: Fake) -> None:
    spec = '{"pipeline": {"name": "edges"}}'
    pach("create", "pipeline", "-f", "-", stdin=spec)
    assert fake.body("POST", "/v1/pipelines")["text"] == spec
    pach("create-pipeline", stdin=spec + "\n")
    assert fake.body("POST", "/v1/pipelines")["text"] == spec + "\n"
    res = pach("create-pipeline", stdin="  \n", rc=2)
    assert "empty" in res.err


def test_create_pipeline_from_url(pach, fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = '{"pipeline": {"name": "edges"}, "transform": {"cmd": ["sh"]}}'

    def web(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/pipeline.json":
            return httpx.Response(200, text=spec)
        return httpx.Response(404, text="nope")

    monkeypatch.setattr(cmd_pipeline, "url_client", lambda: httpx.Client(transport=httpx.MockTransport(web)))
    pach("create-pipeline", "-f", "https://example.com/pipeline.json")
    assert fake.body("POST", "/v1/pipelines")["text"] == spec
    res = pach("create-pipeline", "-f", "https://example.com/missing.json", rc=6)
    assert res.err == "error: cannot fetch https://example.com/missing.json: HTTP 404\n"


def test_create_pipeline_missing_file_is_a_source_error(pach, fake: Fake, tmp_path) -> None:
    res = pach("create-pipeline", "-f", str(tmp_path / "nope.json"), rc=6)
    assert "cannot read" in res.err
    assert not any(r.url.path == "/v1/pipelines" for r in fake.requests)


@pytest.mark.parametrize(
    "argv, reprocess",
    [
        (["update-pipeline"], True),  # 1.x: archive and reprocess unless --no-archive
        (["update-pipeline", "--no-archive"], False),
        (["update-pipeline", "-no-archive"], False),  # as the 1.x docs spell it
        (["update", "pipeline"], False),  # 2.x: new data only unless --reprocess
        (["update", "pipeline", "--reprocess"], True),
    ],
)
def test_update_pipeline_reprocess(pach, fake: Fake, argv: list[str], reprocess: bool) -> None:
    pach(*argv, "-f", "-", stdin='{"pipeline": {"name": "edges"}}')
    body = fake.body("POST", "/v1/pipelines")
    assert body["update"] is True and body["reprocess"] is reprocess


def test_delete_stop_start_run_pipeline(pach, fake: Fake) -> None:
    pach("delete-pipeline", "edges", "--keep-repo")
    assert dict(fake.last("DELETE", "/v1/pipelines/edges").url.params) == {"force": "false", "keep_repo": "true"}
    pach("delete", "pipeline", "--all")
    assert fake.last("DELETE", "/v1/pipelines").url.params["all"] == "true"
    assert "name a pipeline" in pach("delete-pipeline", rc=2).err
    assert pach("stop", "pipeline", "edges").out == ""
    assert pach("stop-pipeline", "edges", "--json").json()["stopped"] is True
    pach("start", "pipeline", "edges")
    fake.last("POST", "/v1/pipelines/edges/start")
    assert pach("run", "pipeline", "edges", "images@c0ffee").out == "ffff0000\n"
    assert fake.body("POST", "/v1/pipelines/edges/run") == {
        "commits": [{"name": "images", "repo": "images", "branch": None, "commit": "c0ffee"}]
    }
    pach("run-pipeline", "edges")
    assert fake.body("POST", "/v1/pipelines/edges/run") == {"commits": []}


def test_create_job_prints_its_id(pach, fake: Fake) -> None:
    assert pach("create-job", "-f", "-", stdin='{"pipeline": {"name": "once"}}').out == "ffff0000\n"
    assert fake.body("POST", "/v1/jobs")["text"] == '{"pipeline": {"name": "once"}}'


# -- jobs and datums -------------------------------------------------------------


def test_list_job_table_progress_and_filters(pach, fake: Fake) -> None:
    res = pach("list-job")
    # The seed's ID OUTPUT STARTED DURATION STATE, in its order, then PROGRESS.
    assert _header(res.lines[0]) == ["ID", "OUTPUT", "STARTED", "DURATION", "STATE", "PROGRESS"]
    running, done = res.lines[1], res.lines[2]
    assert running.startswith("ffff0000 ") and running.endswith("0 + 0 / 2") and " - " in running
    assert done.startswith("a1b2c3d4e5f6   edges@beef01 ") and re.search(r" ago ", done)  # NOW is fixed at import
    assert "2 seconds" in done and done.endswith("success   3 + 1 / 4")
    assert pach("list", "job").out == res.out
    pach("list", "job", "-p", "edges", "--input", "images@master")
    assert dict(fake.last("GET", "/v1/jobs").url.params) == {"pipeline": "edges", "input": "images@master"}
    pach("list-job", "-i", "images/master/4", "-o", "edges@beef01")
    assert dict(fake.last("GET", "/v1/jobs").url.params) == {"input": "images@master/4", "output": "edges@beef01"}
    assert [j["id"] for j in pach("list-job", "--json").json()] == ["ffff0000", "a1b2c3d4e5f6"]


def test_list_job_less_than_a_second() -> None:
    from pachctl.cli.cmd_job import _duration, progress

    assert _duration(NOW, NOW + 0.4) == "Less than a second"
    assert _duration(NOW, None) == "-"
    assert progress(DONE) == "3 + 1 / 4"


def test_inspect_job_forms(pach, fake: Fake) -> None:
    res = pach("inspect-job", "a1b2")
    facts = dict(line.split(": ", 1) for line in res.lines if ": " in line)
    assert facts["ID"] == "a1b2c3d4e5f6" and facts["Pipeline"] == "edges" and facts["State"] == "success"
    assert facts["Duration"] == "2 seconds"
    assert (facts["Datums Processed"], facts["Datums Skipped"], facts["Datums Total"]) == ("3", "1", "4")
    assert facts["Input Commits"] == "images@c0ffee" and facts["Output Commit"] == "edges@beef01"
    assert fake.last("GET", "/v1/jobs/a1b2").url.params["wait"] == "false"
    assert pach("inspect", "job", "edges@a1b2").out == res.out  # 2.x pipeline@job
    assert pach("inspect-job", "edges@a1b2").out == res.out
    pach("inspect-job", "a1b2", "--block")
    assert fake.last("GET", "/v1/jobs/a1b2").url.params["wait"] == "true"
    assert pach("inspect-job", "a1b2", "--json").json()["data_processed"] == 3
    res = pach("inspect", "job", "montage@a1b2", rc=3)
    assert "not a job of pipeline 'montage'" in res.err


def test_wait_and_stop_job(pach, fake: Fake) -> None:
    assert pach("wait", "job", "a1b2").out == ""
    assert fake.last("GET", "/v1/jobs/a1b2").url.params["wait"] == "true"
    res = pach("wait-job", "dead", rc=1)
    assert res.err == "error: job dead0001 of pipeline montage failed: datum 9f failed: exit status 1\n"
    pach("stop", "job", "a1b2")
    fake.last("DELETE", "/v1/jobs/a1b2c3d4e5f6")  # the prefix resolved first


def test_datums(pach, fake: Fake) -> None:
    res = pach("list-datum", "a1b2c3d4e5f6")
    assert _header(res.lines[0]) == ["ID", "STATE", "TIME", "FILES"]
    assert res.lines[1].split() == ["9f86d081", "success", "1", "second", "images:/liberty.png"]
    assert res.lines[2].split() == ["6b86b273", "skipped", "-"]
    assert pach("list", "datum", "edges@a1b2c3d4e5f6").out == res.out
    assert len(pach("list-datum", "a1b2c3d4e5f6", "--json").json()) == 2
    res = pach("inspect", "datum", "edges@a1b2c3d4e5f6", "9f86d081")
    assert "State: success\n" in res.out and "images@c0ffee:/liberty.png" in res.out and "57 KiB" in res.out
    assert fake.requests[-1].url.path == "/v1/jobs/a1b2c3d4e5f6/datums/9f86d081"
    assert pach("inspect-datum", "a1b2c3d4e5f6", "9f86d081", "--json").json()["tries"] == 1


def test_long_datum_file_lists_are_abbreviated(pach, fake: Fake) -> None:
    many = [DatumFile(input="images", repo="images", commit="c", path=f"/img{i:03}.png") for i in range(20)]
    DATUMS.append(Datum(id="77", job=DONE.id, state="running", files=many))
    try:
        row = pach("list-datum", "a1b2").lines[-1]
    finally:
        DATUMS.pop()
    assert row.endswith("...") and len(row) < 100


def test_not_found_exits_3(pach, fake: Fake) -> None:
    res = pach("inspect", "pipeline", "nope", rc=3)
    assert res.err == "error: pipeline 'nope' not found\n"
    assert pach("inspect-job", "0000", rc=3).err == "error: no job '0000'\n"
    # FastAPI's own 404 (no such route) too
    assert pach("inspect-datum", "a1b2", "nope", rc=3).err.startswith("error: daemon answered 404")


# -- logs ---------------------------------------------------------------------------


def test_logs(pach, fake: Fake) -> None:
    fake.logs = [
        LogLine(ts=NOW, pipeline="edges", job="a1b2", datum="9f", message="reading /pfs/images/liberty.png"),
        LogLine(ts=NOW, pipeline="edges", job="a1b2", datum="9f", message="wrote edges\n"),
    ]
    res = pach("get-logs", "--pipeline", "edges")
    assert res.out == "reading /pfs/images/liberty.png\nwrote edges\n"
    assert dict(fake.last("GET", "/v1/logs").url.params) == {"pipeline": "edges", "follow": "false"}
    assert pach("logs", "-p", "edges").out == res.out
    pach("logs", "-j", "edges@a1b2", "--datum", "9f", "-f")
    assert dict(fake.last("GET", "/v1/logs").url.params) == {
        "pipeline": "edges", "job": "a1b2", "datum": "9f", "follow": "true"
    }
    pach("get-logs", "a1b2")  # as the 1.x docs call it
    assert fake.last("GET", "/v1/logs").url.params["job"] == "a1b2"
    raw = [json.loads(line) for line in pach("logs", "--pipeline", "edges", "--raw").lines]
    assert raw[0]["datum"] == "9f" and raw[1]["message"] == "wrote edges\n"


# -- flush --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["flush-commit", "images/master/4"],
        ["flush-commit", "images", "master/4"],
        ["flush-commit", "images@master/4"],
        ["flush", "commit", "images@master/4"],
        ["wait", "commit", "images@master/4"],
    ],
)
def test_flush_commit_forms(pach, fake: Fake, argv: list[str]) -> None:
    res = pach(*argv)
    assert fake.body("POST", "/v1/flush") == {
        "commits": [{"repo": "images", "branch": None, "commit": "master/4"}], "repos": [], "timeout": None
    }
    assert _header(res.lines[0]) == ["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"]
    assert res.lines[1].split()[:3] == ["master", "edges/master/3", "master/2"]


def test_flush_commit_repos_json_and_failures(pach, fake: Fake) -> None:
    res = pach("flush-commit", "a/x", "b", "y", "--repos", "edges,montage", "--json")
    body = fake.body("POST", "/v1/flush")
    assert [(c["repo"], c["commit"]) for c in body["commits"]] == [("a", "x"), ("b", "y")]
    assert body["repos"] == ["edges", "montage"]
    assert res.json()[0]["id"] == "beef01"
    fake.flush = FlushResult(commits=[COMMIT], failed_jobs=[FAILED])
    res = pach("wait", "commit", "images@master", rc=1)
    assert "edges/master/3" in res.out
    assert res.err == "error: job dead0001 of pipeline montage failed: datum 9f failed: exit status 1\n"
    assert "names no commit" in pach("flush-commit", "a/x", "lonely", rc=2).err


def test_inspect_commit_shows_provenance(pach) -> None:
    assert "Provenance: images@c0ffee\n" in pach("inspect", "commit", "edges@master").out


# -- secrets ------------------------------------------------------------------------


def test_secrets_never_print_values(pach, fake: Fake, tmp_path) -> None:
    k8s = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-creds"},
        "type": "Opaque",
        "data": {"password": base64.b64encode(SECRET_VALUE.encode()).decode(), "user": "YWRtaW4="},
        "stringData": {"region": "eu-west-1"},
    }
    (tmp_path / "secret.json").write_text(json.dumps(k8s))
    outs = [pach("create", "secret", "-f", str(tmp_path / "secret.json"))]
    assert fake.secrets["s3-creds"] == {
        "name": "s3-creds", "data": {"password": SECRET_VALUE, "user": "admin", "region": "eu-west-1"}
    }
    outs.append(pach("create-secret", stdin=json.dumps({**k8s, "metadata": {"name": "other"}})))
    outs.append(res := pach("list-secret"))
    assert res.lines == ["NAME", "other", "s3-creds"]
    outs.append(res := pach("list", "secret", "--json"))
    assert res.json() == ["other", "s3-creds"]
    pach("delete", "secret", "other")
    assert sorted(fake.secrets) == ["s3-creds"]
    bad = {**k8s, "data": {"password": SECRET_VALUE}}  # not base64
    outs.append(res := pach("create-secret", stdin=json.dumps(bad), rc=2))
    assert res.err == "error: secret 's3-creds': data.password is not base64 of UTF-8 text\n"
    outs.append(pach("create-secret", stdin='{"kind": "ConfigMap", "metadata": {"name": "x"}}', rc=2))
    outs.append(pach("create-secret", stdin='{"kind": "Secret", "data": {"a": "YQ=="}}', rc=2))
    for o in outs:
        assert SECRET_VALUE not in o.out + o.err
        assert base64.b64encode(SECRET_VALUE.encode()).decode() not in o.out + o.err
