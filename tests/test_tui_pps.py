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
from tests.ppshelp import Pachy, commit_files, flush_ok, pachy_daemon, pfs, spec
from tests.tuihelp import AGE, SIZE, Store, anyio_backend, fixed_ids, until  # noqa: F401 (fixtures)
from tui.app import PachyApp
from tui.screens.datums import DatumsScreen
from tui.screens.jobs import JobsScreen
from tui.screens.logs import LogsScreen
from tui.screens.pipelines import PipelinesScreen
from tui.widgets.dag_layout import Node, assign_layers, graph, input_repos, layout, order_layers

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
        await until(pilot, lambda: isinstance(app.screen, PipelinesScreen) and app.screen.table.row_count == 3)
        pipelines = app.screen
        assert keys(pipelines) == ["filter", "sum", "talk"]
        cells = [str(c) for c in pipelines.table.row_cells("sum")]
        assert cells[0] == "sum" and cells[2] == "filter:FILE/DIFF" and "success" in cells[3]
        await pilot.press("down")  # sum
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.table.row_count == 1)
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
        await until(pilot, lambda: isinstance(app.screen, DatumsScreen) and app.screen.table.row_count >= 1)
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
        await until(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.table.row_count == 1)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DatumsScreen) and app.screen.table.row_count == 1)
        talk_datum = next(iter(app.screen.items.values()))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen.view.total >= LONG_LINES)
        logs = app.screen
        assert logs.datum == talk_datum.id and logs.pipeline == "talk"
        view = logs.view
        await until(pilot, lambda: view.line(0) is not None)
        assert view.line(0)[1] == "log line 1"
