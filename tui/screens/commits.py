"""``:commits REPO`` — a repo's branches (left) and its commit history (right),
newest first, fetched a page at a time as the cursor or the scroll nears the
end (``before=<last id>``), so 10,000 commits open as fast as 10.

Keys: enter opens a commit's files (or shows a branch's history), space marks
a commit (two at most), ``d`` diffs the marked pair, or the marked commit and
the cursor's, or the cursor's commit and its parent."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable

from pachctl.cli.output import human_duration
from tui import routes
from tui.fmt import ago, human_size, safe, short_id
from tui.messages import LiveEvent
from tui.screens.base import PachyScreen
from tui.widgets.table import FilterTable

PAGE = 200  # commits per request
PREFETCH = 50  # fetch the next page when the cursor is this close to the end
ALL = "\x00all"  # the branches table's "every branch" row
COLUMNS = ("", "COMMIT", "REF", "PARENT", "STARTED", "DURATION", "SIZE", "DESCRIPTION")


class CommitsScreen(PachyScreen):
    """A repo's branches and commits (give the repo: :commits images)."""

    CSS_PATH = "commits.tcss"
    BINDINGS = [
        Binding("space", "mark", "Mark"),
        Binding("d", "diff", "Diff"),
        Binding("tab", "switch_pane", "Branches/commits", show=False),
        Binding("delete,D", "delete", "Delete"),
    ]
    ACTIONS = frozenset({"delete"})

    def __init__(self, repo: str, branch: str | None = None) -> None:
        super().__init__()
        self.repo = repo
        self.branch = branch
        self.commits: list = []  # every commit fetched, newest first
        self.by_id: dict[str, object] = {}
        self.marks: list[str] = []
        self.more = False  # the last page was full: older commits may exist
        self.fetching = False
        self.pages = 0  # pages fetched since the last (re)load, for tests
        self.crumb = f"repos › {repo} › commits"

    def compose_body(self) -> ComposeResult:
        with Horizontal():
            yield FilterTable("BRANCH", "HEAD", id="branches")
            yield FilterTable(*COLUMNS, id="commits")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.commits_table
        table.focus()
        self.watch(table, "scroll_y", self._scrolled, init=False)
        self.app.record_command(f"pachctl list commit {self.repo}" + (f"@{self.branch}" if self.branch else ""))

    @property
    def commits_table(self) -> FilterTable:
        return self.query_one("#commits", FilterTable)

    @property
    def branches_table(self) -> FilterTable:
        return self.query_one("#branches", FilterTable)

    def filter_table(self) -> FilterTable:
        return self.branches_table if self.branches_table.has_focus else self.commits_table

    # -- fetching -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        c = self.app.client
        try:
            branches = c.list_branch(self.repo)
            page = c.list_commit(self.repo, self.branch, n=PAGE)
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self._show, branches, page)

    def _failed(self, exc: Exception) -> None:
        self.notify(str(getattr(exc, "message", exc)), severity="error")

    def _show(self, branches: list, page: list) -> None:
        rows = [(ALL, [Text("(all)", style="italic"), ""])]
        rows += [(b.name, [safe(b.name), b.head_ref or "-"]) for b in branches]
        self.branches_table.set_rows(rows)
        self.commits = list(page)
        self.by_id = {c.id: c for c in page}
        self.more = len(page) == PAGE
        self.pages = 1
        self.commits_table.set_rows((c.id, self._cells(c)) for c in page)
        self._crumb()

    def _crumb(self) -> None:
        where = f"@{self.branch}" if self.branch else ""
        more = "+" if self.more else ""
        self.set_crumb(f"repos › {self.repo}{where} › commits ({len(self.commits)}{more})")

    def _cells(self, c) -> list:
        now = self.app.now()
        mark = Text("●", style="bold yellow") if c.id in self.marks else ""
        took = human_duration(c.finished - c.started) if c.finished else Text("open", style="bold green")
        return [mark, short_id(self.app.show_id(c.id)), c.ref, c.parent_ref or "<none>", ago(c.started, now), took,
                human_size(c.size), safe(c.description)]

    def maybe_more(self) -> None:
        """Fetch the next page if older commits may exist and none is on its way."""
        if self.more and not self.fetching and self.commits:
            self.fetching = True
            self._next_page(self.commits[-1].id)

    @work(thread=True, group="page")
    def _next_page(self, before: str) -> None:
        try:
            page = self.app.client.list_commit(self.repo, self.branch, n=PAGE, before=before)
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
            page = None
        self.app.call_from_thread(self._append, before, page)

    def _append(self, before: str, page: list | None) -> None:
        self.fetching = False
        if page is None or not self.commits or self.commits[-1].id != before:
            return  # failed, or reloaded meanwhile
        new = [c for c in page if c.id not in self.by_id]
        self.commits += new
        self.by_id.update((c.id, c) for c in new)
        self.more = len(page) == PAGE
        self.pages += 1
        self.commits_table.add_rows((c.id, self._cells(c)) for c in new)
        self._crumb()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table is self.commits_table and event.cursor_row >= event.data_table.row_count - PREFETCH:
            self.maybe_more()

    def _scrolled(self, y: float) -> None:
        table = self.commits_table
        if y >= table.max_scroll_y - PREFETCH:
            self.maybe_more()

    # -- live -----------------------------------------------------------------

    def on_live_event(self, message: LiveEvent) -> None:
        data = message.data
        if message.kind == "reset":
            self.load()
        elif data.get("repo") != self.repo:
            return
        elif message.kind == "repo.deleted":
            self.notify(f"repo '{self.repo}' was deleted", severity="warning")
        elif message.kind in ("commit.started", "commit.finished", "commit.deleted", "branch.moved"):
            self._refresh_head()

    @work(thread=True, exclusive=True, group="head")
    def _refresh_head(self) -> None:
        """The newest page again, merged over what is shown (older pages stay)."""
        c = self.app.client
        try:
            branches = c.list_branch(self.repo)
            page = c.list_commit(self.repo, self.branch, n=PAGE)
        except Exception:
            return  # the next event or a reload will tell
        self.app.call_from_thread(self._merge, branches, page)

    def _merge(self, branches: list, page: list) -> None:
        self.branches_table.set_rows([(ALL, [Text("(all)", style="italic"), ""])]
                                     + [(b.name, [safe(b.name), b.head_ref or "-"]) for b in branches])
        if not page:
            self._show(branches, page)
            return
        oldest_new = page[-1]
        fresh = {c.id for c in page}
        keep = []
        older = False
        for c in self.commits:  # what was shown below the newest page stays
            if c.id == oldest_new.id:
                older = True
                continue
            if older and c.id not in fresh:
                keep.append(c)
        self.commits = list(page) + keep
        self.by_id = {c.id: c for c in self.commits}
        self.marks = [m for m in self.marks if m in self.by_id]
        self.commits_table.set_rows((c.id, self._cells(c)) for c in self.commits)
        self._crumb()

    # -- keys -----------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if event.data_table is self.branches_table:
            self.branch = None if key == ALL else key
            self.marks = []
            self.app.record_command(f"pachctl list commit {self.repo}" + (f"@{self.branch}" if self.branch else ""))
            self.load()
            self.commits_table.focus()
        else:
            self.app.open("files", repo=self.repo, commit=key)

    def action_switch_pane(self) -> None:
        (self.commits_table if self.branches_table.has_focus else self.branches_table).focus()

    def action_mark(self) -> None:
        cid = self.commits_table.current_key()
        if cid is None:
            return
        if cid in self.marks:
            self.marks.remove(cid)
        else:
            self.marks.append(cid)
            if len(self.marks) > 2:
                dropped = self.marks.pop(0)
                self._redraw_row(dropped)
        self._redraw_row(cid)

    def _redraw_row(self, cid: str) -> None:
        c = self.by_id.get(cid)
        if c is not None:
            self.commits_table.update_row(cid, self._cells(c))

    def diff_pair(self) -> tuple[str, str | None] | None:
        """(newer, older) for ``d``: the marked pair, the mark and the cursor, or
        the cursor and its parent (older None)."""
        cursor = self.commits_table.current_key()
        picked = list(self.marks)
        if len(picked) == 1 and cursor and cursor != picked[0]:
            picked.append(cursor)
        if len(picked) == 2:
            order = {c.id: i for i, c in enumerate(self.commits)}
            a, b = sorted(picked, key=lambda cid: order.get(cid, 0))
            return a, b
        one = picked[0] if picked else cursor
        return (one, None) if one else None

    def action_diff(self) -> None:
        pair = self.diff_pair()
        if pair is not None:
            self.app.open("diff", repo=self.repo, commit=pair[0], old=pair[1])

    @work(exclusive=True, group="action")
    async def action_delete(self) -> None:
        if self.branches_table.has_focus:
            name = self.branches_table.current_key()
            if not name or name == ALL:
                return
            if await self.app.confirm(f"Delete branch '{name}' of repo '{self.repo}'? (its commits stay)"):
                self.app.record_command(f"pachctl delete branch {self.repo}@{name}")
                self._run(lambda: self.app.client.delete_branch(self.repo, name))
            return
        cid = self.commits_table.current_key()
        if cid and await self.app.confirm(f"Delete commit {short_id(self.app.show_id(cid))} of repo '{self.repo}'?"):
            self.app.record_command(f"pachctl delete commit {self.repo}@{cid}")
            self._run(lambda: self.app.client.delete_commit(self.repo, cid))

    @work(thread=True)
    def _run(self, call) -> None:
        try:
            call()
        except Exception as exc:
            self.app.call_from_thread(self._failed, exc)
        self.app.call_from_thread(self._refresh_head)

    def palette_commands(self) -> list[tuple[str, str, object]]:
        return [("Diff", "the marked commits, or the cursor's commit and its parent", self.action_diff),
                ("Mark commit", "mark the cursor's commit for a diff", self.action_mark)]


routes.ROUTES["commits"] = CommitsScreen
