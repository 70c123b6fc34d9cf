"""``:repos`` — every repo: NAME, SIZE, BRANCHES, LAST COMMIT. Enter opens its
commits. The last commits arrive after the first paint (one request per repo,
in the background) so the list shows at once even with hundreds of repos."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from tui import routes
from tui.fmt import ago, human_size, safe
from tui.messages import LiveEvent
from tui.screens.base import PachyScreen
from tui.widgets.table import FilterTable

COLUMNS = ("NAME", "SIZE", "BRANCHES", "LAST COMMIT")
BATCH = 25  # last commits shown together


class ReposScreen(PachyScreen):
    """Repos: name, size, branches, last commit."""

    BINDINGS = [
        Binding("enter", "open_repo", "Commits"),
        Binding("delete,D", "delete_repo", "Delete repo"),
    ]
    ACTIONS = frozenset({"delete_repo"})
    crumb = "repos"

    def __init__(self) -> None:
        super().__init__()
        self._repos: dict[str, object] = {}
        self._last: dict[str, object] = {}

    def compose_body(self) -> ComposeResult:
        yield FilterTable(*COLUMNS, id="repos")

    @property
    def table(self) -> FilterTable:
        return self.query_one("#repos", FilterTable)

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        repos = self.app.client.list_repo()
        self.app.call_from_thread(self._show, repos)
        batch: list = []
        for i, r in enumerate(repos):  # newest commit of each, after the first paint
            try:
                last = self.app.client.list_commit(r.name, n=1)
            except Exception:  # the repo went away meanwhile
                continue
            batch.append((r.name, last[0] if last else None))
            if len(batch) == BATCH or i == len(repos) - 1:
                # A hop to the event loop per batch, not per repo: each costs a frame.
                self.app.call_from_thread(self._show_last, batch)
                batch = []
        if batch:
            self.app.call_from_thread(self._show_last, batch)

    def _cells(self, repo) -> list:
        last = self._last.get(repo.name)
        when = "-"
        if last is not None:
            stamp = last.finished or last.started
            state = "" if last.finished else " (open)"
            when = f"{ago(stamp, self.app.now())}{state} {last.ref}"
        return [Text(safe(repo.name), style="bold"), human_size(repo.size),
                safe(", ".join(repo.branches)) or "-", when]

    def on_mount(self) -> None:
        super().on_mount()
        self.app.record_command("pachctl list repo")

    def _show(self, repos: list) -> None:
        self._repos = {r.name: r for r in repos}
        self.table.set_rows((r.name, self._cells(r)) for r in repos)
        self.set_crumb(f"repos ({len(repos)})")

    def _show_last(self, batch: list) -> None:
        for name, commit in batch:
            repo = self._repos.get(name)
            if repo is not None:
                self._last[name] = commit
                self.table.update_row(name, self._cells(repo))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open("commits", repo=event.row_key.value)

    def action_open_repo(self) -> None:
        key = self.table.current_key()
        if key:
            self.app.open("commits", repo=key)

    @work(exclusive=True, group="action")
    async def action_delete_repo(self) -> None:
        name = self.table.current_key()
        if not name or not await self.app.confirm(f"Delete repo '{name}' and all its commits?"):
            return
        self.app.record_command(f"pachctl delete repo {name}")
        self._delete(name)

    @work(thread=True)
    def _delete(self, name: str) -> None:
        try:
            self.app.client.delete_repo(name)
        except Exception as exc:
            self.app.call_from_thread(self.app.notify, str(getattr(exc, "message", exc)), severity="error")
        self.load()

    def on_live_event(self, message: LiveEvent) -> None:
        if message.kind == "reset" or message.kind.startswith(("repo.", "branch.")) or message.kind == "commit.finished":
            self.load()


routes.ROUTES["repos"] = ReposScreen
