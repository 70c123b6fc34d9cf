"""``:dag``: the provenance graph of repos and pipelines (tui/widgets/dag.py),
each pipeline coloured by its last job's state and recoloured live by
``job.state`` and ``pipeline.state`` events. Enter on a pipeline opens its
jobs, on a repo its commits."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import Static

from pachctl.client import errors
from tui.messages import LiveEvent
from tui.screens.base import PachyScreen
from tui.widgets.dag import DagView
from tui.widgets.dag_layout import Node, graph, input_repos

LEGEND = "[green]■ success[/]  [yellow]■ running[/]  [red]■ failure[/]  [cyan]□ repo[/]"


class DagScreen(PachyScreen):
    DEFAULT_CSS = """
    DagScreen DagView { height: 1fr; }
    DagScreen #legend { height: 1; padding: 0 1; }
    """
    crumb = "provenance"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)

    def compose_body(self) -> ComposeResult:
        yield DagView(id="dag")
        yield Static(LEGEND, id="legend")

    @property
    def dag(self) -> DagView:
        return self.query_one(DagView)

    def on_mount(self) -> None:
        self.dag.focus()
        self.load()

    def load(self) -> None:
        self.run_worker(self._fetch, thread=True, group="fetch", exclusive=True)

    def _fetch(self) -> None:
        try:
            repos = [r.name for r in self.app.client.list_repo()]
            pipelines = self.app.client.list_pipeline()
        except errors.PfsError as exc:
            self.app.call_from_thread(self.notify, f"error: {exc}", severity="error")
            return
        nodes = graph(repos, [(p.name, input_repos(p.spec.get("input"))) for p in pipelines])
        states = {p.name: p.last_job_state or (p.state if p.state in ("crashing", "failure") else None)
                  for p in pipelines}
        self.app.call_from_thread(self._show, nodes, states)

    def _show(self, nodes: list[Node], states: dict[str, str | None]) -> None:
        if self.query(DagView):  # (not closed meanwhile)
            self.dag.set_graph(nodes, states)

    def on_live_event(self, message: LiveEvent) -> None:
        kind, data = message.kind, message.data
        if not self.query(DagView):
            return
        if kind == "reset" or kind in ("repo.created", "repo.deleted"):
            self.load()
        elif kind == "job.state":
            self.dag.set_state(data.get("pipeline", ""), data.get("state"))
        elif kind == "pipeline.state":
            name = data.get("pipeline", "")
            if name not in self.dag.kinds:
                self.load()  # a new pipeline
            elif data.get("state") in ("crashing", "failure"):
                self.dag.set_state(name, data.get("state"))

    def on_dag_view_selected(self, event: DagView.Selected) -> None:
        if event.kind == "pipeline":
            self.app.open("jobs", pipeline=event.name)
        else:
            self.app.open("commits", repo=event.name)
