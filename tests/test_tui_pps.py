"""`pachctl tui`, the pipeline side: pipelines -> jobs -> datums -> logs through
Textual's Pilot against a real daemon running the fruit stand
(examples/fruit_stand) with the local runner; the actions (confirm yes acts,
no does not; --readonly hides them; each records its pachctl command); live
updates (job.state events moving a progress bar and a DAG colour while a job
runs, no key pressed); paging through a long log; the DAG's layout (pure,
unit-tested); SVG snapshots of each screen at 120x36 (clock frozen, ids
mapped to fixed names, durations masked)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pachctl.client import Client
from tests.conftest import wait_for
from tests.ppshelp import (
    Pachy,
    commit_files,
    flush_ok,
    pachy_daemon,
    pfs,
    processes,
    spec,
    wait_jobs,
)
from tests.tuihelp import AGE, SIZE, Store, anyio_backend, fixed_ids, until  # noqa: F401 (fixtures)
from tui.app import PachyApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.dag import DagScreen
from tui.screens.datums import DatumsScreen
from tui.screens.jobs import JobsScreen
from tui.screens.logs import LogsScreen
from tui.screens.pipelines import PipelinesScreen
from tui.widgets.dag import DagView
from tui.widgets.dag_layout import Node, assign_layers, graph, input_repos, layout, order_layers
from tui.widgets.logview import PAGE, LogView

FRUIT = Path(__file__).resolve().parent.parent / "examples" / "fruit_stand" / "pipeline.json"
SALES = ["apple\t10", "banana\t4", "orange\t7", "apple\t5", "banana\t1"]
LONG_LINES = 30_000


# -- the store every test here sees ---------------------------------------------------


class PpsStore(Store):
    """The fruit stand after one commit of sales (jobs of filter and sum done), and a
    pipeline that wrote a long log."""

    def __init__(self, pachy: Pachy, made_at: float, ids: dict[str, str]):
        super().__init__(pachy, made_at, ids)


def name_ids(c: Client) -> dict[str, str]:
    """Commit ids as tuihelp fixes them; job and datum ids as ``<pipeline>-job<N>``
    (oldest first) and ``<that>-d<N>`` (in datum order)."""
    ids = fixed_ids(c)
    for p in c.list_pipeline():
        for n, j in enumerate(sorted(c.list_job(p.name), key=lambda j: j.created), 1):
            ids[j.id] = f"{p.name}-job{n}"
            for i, d in enumerate(c.list_datum(j.id), 1):
                ids.setdefault(d.id, f"{p.name}-d{hashlib.sha1(d.id.encode()).hexdigest()[:0]}{i}")
    return ids


@pytest.fixture(scope="module")
def pps_px(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PpsStore]:
    with pachy_daemon(Path(tmp_path_factory.mktemp("tui-pps"))) as p:
        c = p.client
        assert c is not None
        c.create_repo("data")
        head = commit_files(c, "data", {"sales": "\n".join(SALES) + "\n"})
        c.create_pipeline(FRUIT.read_text())
        flush_ok(c, "data", head)
        c.create_repo("chatty")
        c.create_pipeline(spec("talk", pfs("chatty"), [f'seq 1 {LONG_LINES} | sed "s/^/log line /"']))
        flush_ok(c, "chatty", commit_files(c, "chatty", {"x": "1"}))
        yield PpsStore(p, time.time(), name_ids(c))


def make_app(store: Store, **kw) -> PachyApp:
    kw.setdefault("now", store.now)
    kw.setdefault("ids", lambda cid: store.ids.get(cid, cid))
    kw.setdefault("live", False)
    return PachyApp(store.client, **kw)


pytestmark = pytest.mark.anyio


def showing(app: PachyApp, cls: type) -> int:
    """How many rows the app's screen shows if it is a ``cls`` and composed, else -1."""
    screen = app.screen
    if not isinstance(screen, cls) or not screen.query("#table"):
        return -1
    table = screen.table
    if table.row_count and not all(col.content_width for col in table.columns.values()):
        return -1  # rows in, columns not yet sized (the table does that when idle)
    return table.row_count


def keys(screen) -> list[str]:
    return [str(k.value) for k in screen.table.rows]


# -- the DAG's layout (pure) ----------------------------------------------------------


def test_layers_follow_provenance() -> None:
    nodes = graph(["images", "raw"], [("edges", ["images"]), ("montage", ["images", "edges"]),
                                      ("sum", ["montage", "raw"])])
    layer = assign_layers(nodes)
    assert layer == {"images": 0, "raw": 0, "edges": 1, "montage": 2, "sum": 3}
    kinds = {n.name: n.kind for n in nodes}
    assert kinds == {"images": "repo", "raw": "repo", "edges": "pipeline", "montage": "pipeline", "sum": "pipeline"}
    layers, edges = order_layers(nodes, layer)
    # Long edges get a dummy per layer they cross, so every edge joins neighbouring layers.
    for a, b in edges:
        la = int(a.rsplit("\0", 1)[1]) if a.startswith("\0") else layer[a]
        lb = int(b.rsplit("\0", 1)[1]) if b.startswith("\0") else layer[b]
        assert lb == la + 1
    assert len(layers) == 4


def test_layout_draws_boxes_and_edges() -> None:
    d = layout(graph(["data"], [("filter", ["data"]), ("sum", ["filter"])]))
    assert d.lines == [
        "┌──────┐    ╭────────╮    ╭─────╮",
        "│ data │───▶│ filter │───▶│ sum │",
        "└──────┘    ╰────────╯    ╰─────╯",
    ]
    assert d.boxes["filter"].x == 12 and d.boxes["sum"].layer == 2
    assert d.layers == [["data"], ["filter"], ["sum"]]


def test_layout_bends_and_is_deterministic() -> None:
    nodes = graph(["a", "b"], [("join", ["a", "b"]), ("solo", ["b"])])
    first = layout(nodes)
    assert first.lines == layout(list(reversed(nodes))).lines  # the same drawing whatever the order given
    text = "\n".join(first.lines)
    assert text.count("▶") == 3  # a->join, b->join, b->solo
    assert "┐" in text or "┘" in text  # an edge changed row
    # Two edges into one node enter on rows of their own: edges split, never merge.
    assert first.boxes["join"].h == 4
    assert [line.rstrip()[-8:] for line in first.lines[1:3]] == ["│ join │", "│      │"]
    for name, box in first.boxes.items():
        assert name in first.lines[box.y + 1][box.x : box.x + box.w]


def test_layout_handles_empty_unknown_and_cycles() -> None:
    assert layout([]).lines == []
    nodes = graph([], [("p", ["missing"])])  # an input repo not (yet) listed is still drawn
    assert {n.name for n in nodes} == {"p", "missing"}
    cyc = [Node("x", "pipeline", ("y",)), Node("y", "pipeline", ("x",))]
    assert set(assign_layers(cyc)) == {"x", "y"}  # cut, not looped on


def test_input_repos_of_a_spec() -> None:
    tree = {"cross": [{"pfs": {"repo": "a", "glob": "/*"}},
                      {"union": [{"pfs": {"repo": "b"}}, {"pfs": {"repo": "a"}}]}]}
    assert input_repos(tree) == ["a", "b"]
    assert input_repos(None) == []


# -- navigation ------------------------------------------------------------------------


async def test_pipelines_jobs_datums_logs(pps_px: PpsStore) -> None:
    app = make_app(pps_px, start="pipelines")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: showing(app, PipelinesScreen) == 3)
        pipelines = app.screen
        assert keys(pipelines) == ["filter", "sum", "talk"]
        cells = [str(c) for c in pipelines.table.row_cells("sum")]
        assert cells[0] == "sum" and cells[2] == "filter:FILE/DIFF" and "success" in cells[3]
        await pilot.press("down")  # sum
        await pilot.press("enter")
        await until(pilot, lambda: showing(app, JobsScreen) == 1)
        jobs = app.screen
        job = next(iter(jobs.items.values()))
        assert job.pipeline == "sum" and job.state == "success"
        row = [str(c) for c in jobs.table.row_cells(job.id)]
        assert row[0] == "sum-job1" and row[4].endswith(f"{job.data_processed} + {job.data_skipped} / {job.data_total}")
        assert "input filter@" in str(jobs.query_one("#detail").render())
        # o: the output commit's files (tui-pfs's screen); esc comes back.
        await pilot.press("o")
        await until(pilot, lambda: type(app.screen).__name__ == "FilesScreen")
        assert (app.screen.repo, app.screen.commit) == ("sum", job.output_commit.commit)
        await pilot.press("escape")
        assert app.screen is jobs
        await pilot.press("enter")
        await until(pilot, lambda: showing(app, DatumsScreen) >= 1)
        datums = app.screen
        d = next(iter(datums.items.values()))
        assert d.state == "success" and d.files and d.files[0].repo == "filter"
        assert "filter@" in str(datums.query_one("#detail").render())  # the datum's inputs
        await pilot.press("s")  # failed only: none
        await until(pilot, lambda: datums.table.row_count == 0)
        await pilot.press("s")  # success
        await until(pilot, lambda: datums.table.row_count >= 1)
        assert "state: success" in datums.crumb
        # The datum of a pipeline that talks: its logs.
        await pilot.press("escape", "escape", "escape")
        assert app.screen is pipelines
        pipelines.table.move_cursor(row=keys(pipelines).index("talk"))
        await pilot.press("enter")
        await until(pilot, lambda: showing(app, JobsScreen) == 1)
        await pilot.press("enter")
        await until(pilot, lambda: showing(app, DatumsScreen) == 1)
        talk_datum = next(iter(app.screen.items.values()))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen.view.total >= LONG_LINES)
        logs = app.screen
        assert logs.datum == talk_datum.id and logs.pipeline == "talk"
        view = logs.view
        await until(pilot, lambda: view.line(0) is not None)
        assert view.line(0)[1] == "log line 1"


# -- actions -------------------------------------------------------------------------


async def test_actions_ask_first_and_record_their_command(pps_px: PpsStore) -> None:
    c = pps_px.client
    app = make_app(pps_px, start="pipelines")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: showing(app, PipelinesScreen) == 3)
        pipelines = app.screen
        pipelines.table.move_cursor(row=keys(pipelines).index("talk"))
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # no: nothing happens
        await until(pilot, lambda: app.screen is pipelines)
        assert not c.inspect_pipeline("talk").stopped and app.command_history == []
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: c.inspect_pipeline("talk").stopped, what="talk stopped")
        assert app.command_history == ["pachctl stop pipeline talk"]
        await until(pilot, lambda: "(stopped)" in str(pipelines.table.row_cells("talk")[1])
                    or "paused" in str(pipelines.table.row_cells("talk")[1]), what="the row to show it")
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: not c.inspect_pipeline("talk").stopped, what="talk started")
        assert app.command_history[-1] == "pachctl start pipeline talk"


async def test_readonly_hides_and_refuses_actions(pps_px: PpsStore) -> None:
    c = pps_px.client
    app = make_app(pps_px, start="pipelines", readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: showing(app, PipelinesScreen) == 3)
        screen = app.screen
        shown = {b.binding.action for b in app.active_bindings.values()}  # what the footer offers
        assert not shown & {"stop", "start", "run"}
        assert "filter" in shown
        await pilot.press("s", "S", "r")
        await pilot.pause()
        assert app.screen is screen and app.command_history == []
        assert not c.inspect_pipeline("filter").stopped
        app.open("jobs", pipeline="sum")
        await until(pilot, lambda: showing(app, JobsScreen) == 1)
        assert "stop" not in {b.binding.action for b in app.active_bindings.values()}
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_restart_a_datum_then_stop_the_job(pps_px: PpsStore, tmp_path: Path) -> None:
    c = pps_px.client
    c.create_repo("stuck")
    c.create_pipeline(spec("stuckp", pfs("stuck"), [f"while [ ! -e {tmp_path}/never ]; do sleep 0.0547; done"]))
    try:
        commit_files(c, "stuck", {"a": "1"})
        job = wait_for(lambda: next(iter(c.list_job("stuckp")), None), 30, "the job of stuckp")
        wait_for(lambda: processes("sleep", "0.0547"), 30, "the datum to run")
        app = make_app(pps_px, start="datums", start_params={"job": job.id, "pipeline": "stuckp"})
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: showing(app, DatumsScreen) == 1)
            datum = next(iter(app.screen.items.values()))
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: app.command_history, what="the command")
            assert app.command_history == [f"pachctl restart datum stuckp@{job.id} {datum.id}"]
            wait_for(lambda: any("restarted by the user" in line.message for line in c.get_logs(job=job.id)),
                     20, "the restart")
            app.open("jobs", pipeline="stuckp")
            await until(pilot, lambda: showing(app, JobsScreen) == 1)
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await until(pilot, lambda: c.inspect_job(job.id).state == "killed", what="the job stopped")
            assert app.command_history[-1] == f"pachctl stop job stuckp@{job.id}"
    finally:
        c.delete_pipeline("stuckp", force=True)
        c.delete_repo("stuck", force=True)


# -- live updates ----------------------------------------------------------------------


async def test_live_progress_and_dag_colour_while_a_job_runs(pps_px: PpsStore, tmp_path: Path) -> None:
    """A job of three datums, each waiting for its own go-file: each released datum moves
    the progress bar and the end turns the DAG node green, with no key pressed."""
    c = pps_px.client
    go = tmp_path / "go"
    go.mkdir()
    c.create_repo("slow")
    c.create_pipeline(spec("slowp", pfs("slow"), [f'while [ ! -e {go}/$(basename "$slow") ]; do sleep 0.0531; done',
                                                  'cp "$slow" /pfs/out/']))
    try:
        app = make_app(pps_px, start="jobs", start_params={"pipeline": "slowp"}, live=True)
        async with app.run_test(size=SIZE) as pilot:
            jobs = app.screen
            assert isinstance(jobs, JobsScreen)
            await until(pilot, lambda: app.events_connected or jobs.table.row_count == 0, what="the screen")
            commit_files(c, "slow", {"a": "1", "b": "2", "c": "3"})
            # The new job appears (a job.state event), then its progress moves as datums finish.
            await until(pilot, lambda: jobs.table.row_count == 1, 30, "the job to appear")
            job_id = jobs.order[0]
            await until(pilot, lambda: jobs.items[job_id].data_total == 3, 30, "the job's total")
            assert jobs.items[job_id].data_processed == 0
            (go / "a").touch()
            await until(pilot, lambda: jobs.items[job_id].data_processed == 1, 30, "1 datum processed")
            assert str(jobs.table.row_cells(job_id)[4]).endswith("1 + 0 / 3")
            # The DAG: slowp is running (yellow), then green when the job ends.
            app.open("dag")
            await until(pilot, lambda: isinstance(app.screen, DagScreen) and app.screen.query(DagView)
                        and "slowp" in app.screen.dag.kinds)
            dag = app.screen.dag
            assert dag.state_of("slowp") == "running"
            (go / "b").touch()
            (go / "c").touch()
            await until(pilot, lambda: dag.state_of("slowp") == "success", 30, "slowp to turn green")
            assert str(dag.render_line(dag.drawing.boxes["slowp"].y + 1).text).find("slowp") >= 0
            # Back on the jobs screen the row shows the end too.
            await pilot.press("escape")
            await until(pilot, lambda: str(jobs.table.row_cells(job_id)[5]) == "success", 30, "the row's state")
    finally:
        c.delete_pipeline("slowp", force=True)
        c.delete_repo("slow", force=True)


async def test_following_a_log_shows_new_lines_as_they_come(pps_px: PpsStore, tmp_path: Path) -> None:
    c = pps_px.client
    c.create_repo("ticks")
    c.create_pipeline(spec("tickp", pfs("ticks"), ["echo tick one", f"while [ ! -e {tmp_path}/go ]; do sleep 0.0559; done",
                                                   "echo tick two"]))
    try:
        commit_files(c, "ticks", {"a": "1"})
        job = wait_for(lambda: next(iter(c.list_job("tickp")), None), 30, "the job of tickp")
        wait_for(lambda: processes("sleep", "0.0559"), 30, "the datum to run")
        app = make_app(pps_px, start="logs", start_params={"job": job.id, "pipeline": "tickp", "follow": True},
                       live=True)
        async with app.run_test(size=SIZE) as pilot:
            view = app.screen.view

            def messages() -> list[str]:
                return [got[1] for i in range(view.total) if (got := view.line(i)) is not None]

            await until(pilot, lambda: "tick one" in messages(), 30, "the first line")
            assert view.follow and "tick two" not in messages()
            (tmp_path / "go").touch()
            await until(pilot, lambda: "tick two" in messages(), 30, "the new line, with no key pressed")
            assert view.scroll_y == view.max_scroll_y  # following: at the end
    finally:
        c.delete_pipeline("tickp", force=True)
        c.delete_repo("ticks", force=True)


# -- a long log -------------------------------------------------------------------------


async def test_a_long_log_comes_a_page_at_a_time(pps_px: PpsStore) -> None:
    c = pps_px.client
    job = wait_jobs(c, "talk", 1)[0]
    app = make_app(pps_px, start="logs", start_params={"job": job.id, "pipeline": "talk"})
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, LogsScreen)
        view: LogView = screen.view
        await until(pilot, lambda: view.total >= LONG_LINES and view.line(0) is not None)
        assert view.fetches == 1 and list(view.pages) == [0]
        await pilot.press("end")
        last = view.total - 1
        await until(pilot, lambda: view.line(last) is not None, what="the last page")
        assert view.line(last)[1].startswith("job ") or view.line(last)[1] == f"log line {LONG_LINES}"
        assert view.fetches <= 3 and len(view.pages) <= 3  # the first page, the last (and one near it)
        for _ in range(5):
            await pilot.press("pageup")
        await until(pilot, lambda: view.line(int(view.scroll_y)) is not None)
        assert view.fetches <= 5
        total_pages = (view.total + PAGE - 1) // PAGE
        assert len(view.pages) < total_pages
        # Toggles: timestamps prefix each line, wrap keeps the first line on top.
        await pilot.press("t")
        assert view.timestamps
        await pilot.press("w")
        assert view.wrap
        await pilot.press("home")
        await pilot.pause()
        assert view.scroll_y == 0


# -- SVG snapshots (120x36; clock frozen, ids fixed, durations masked) ------------------


@pytest.fixture
def masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """How long a job or datum took differs run to run: shown as one fixed value."""
    import tui.screens.datums
    import tui.screens.jobs

    for module in (tui.screens.jobs, tui.screens.datums):
        monkeypatch.setattr(module, "duration", lambda start, end, at: "1 second" if start else "-")


def snap(pps_px: PpsStore, snap_compare, alias: str, ready, **params) -> bool:
    app = make_app(pps_px, start=alias, start_params=params)

    async def wait(pilot) -> None:
        await until(pilot, lambda: ready(app), what=f"the {alias} screen")
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        await pilot.pause()

    return snap_compare(app, terminal_size=SIZE, run_before=wait)


def test_snapshot_pipelines(pps_px: PpsStore, snap_compare, masked) -> None:
    wait_jobs(pps_px.client, "talk", 1)
    assert snap(pps_px, snap_compare, "pipelines", lambda app: showing(app, PipelinesScreen) >= 3)


def test_snapshot_jobs(pps_px: PpsStore, snap_compare, masked) -> None:
    assert snap(pps_px, snap_compare, "jobs", lambda app: showing(app, JobsScreen) == 1, pipeline="sum")


def test_snapshot_datums(pps_px: PpsStore, snap_compare, masked) -> None:
    job = pps_px.client.list_job("filter")[0]
    assert snap(pps_px, snap_compare, "datums", lambda app: showing(app, DatumsScreen) == 1, job=job.id,
                pipeline="filter")


def test_snapshot_logs(pps_px: PpsStore, snap_compare) -> None:
    c = pps_px.client
    job = c.list_job("talk")[-1]
    datum = c.list_datum(job.id)[0]

    def ready(app) -> bool:
        screen = app.screen
        return isinstance(screen, LogsScreen) and bool(screen.query(LogView)) and screen.view.line(30) is not None

    assert snap(pps_px, snap_compare, "logs", ready, job=job.id, datum=datum.id, pipeline="talk")


def test_snapshot_dag(pps_px: PpsStore, snap_compare) -> None:
    def ready(app) -> bool:
        screen = app.screen
        return isinstance(screen, DagScreen) and bool(screen.query(DagView)) and "talk" in screen.dag.kinds

    assert snap(pps_px, snap_compare, "dag", ready)
