"""A log view for logs of any length: only the visible rows are rendered
(Textual's Line API), and lines come from the daemon a page at a time
(``Client.log_page``: ``GET /v1/logs?offset=&n=``) when a visible row needs
them; a few pages are kept, the least recently used dropped. So a
100,000-line log costs the memory of a few pages, and a key press redraws
only what is on screen.

Toggles: ``w`` wrap (the scroll unit stays one log line; a wrapped line takes
as many rows as it needs below it), ``t`` timestamps, ``f`` follow (stay at
the end as lines arrive: ``log`` events from the app's event stream say when,
and the last page is fetched again).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

PAGE = 500  # lines per request
PAGES_KEPT = 16
LOADING = "…"
TS_STYLE = Style(dim=True)
_CONTROL = {c: " " for c in range(32) if c not in (9,)} | {9: "    ", 127: " "}

Line = tuple[float, str]  # (ts, message)
Fetch = Callable[[int, int], tuple[int, list[Line]]]  # (offset, n) -> (total lines, lines)


def clean(message: str) -> str:
    """A log line as one terminal row: no newline, tabs as spaces, no control characters."""
    return message.rstrip("\n").translate(_CONTROL)


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "Z "


class LogView(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("w", "toggle_wrap", "wrap"),
        Binding("t", "toggle_timestamps", "timestamps"),
        Binding("f", "toggle_follow", "follow"),
    ]

    wrap: reactive[bool] = reactive(False)
    timestamps: reactive[bool] = reactive(False)
    follow: reactive[bool] = reactive(False)

    def __init__(self, fetch: Fetch, *, follow: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self._fetch = fetch
        self.total = 0
        self.pages: OrderedDict[int, list[Line]] = OrderedDict()
        self._pending: set[int] = set()
        self._tail_dirty = False
        self._widest = 0
        self._version = 0  # bumped whenever what the rows show may have changed
        self.loaded = False  # the first answer came (an empty log shows as such, not as loading)
        self.fetches = 0  # pages asked of the daemon (tests and the bench read it)
        self.set_reactive(LogView.follow, follow)

    def on_mount(self) -> None:
        self._request(0 if not self.follow else -1)

    # -- pages -------------------------------------------------------------------

    def _request(self, page: int) -> None:
        """Fetch page ``page`` in a thread (-1: the last page, whatever its number)."""
        if page in self._pending:
            return
        self._pending.add(page)
        self.run_worker(lambda: self._load(page), thread=True, group="log-pages")

    def _load(self, page: int) -> None:
        try:
            if page == -1:
                total, _ = self._fetch(0, 1)
                page = max(0, (total - 1) // PAGE)
            total, lines = self._fetch(page * PAGE, PAGE)
        except Exception as exc:  # noqa: BLE001 - shown, not raised: the daemon went away, ...
            self.app.call_from_thread(self._failed, exc)
            return
        finally:
            self._pending.discard(page)
        self.app.call_from_thread(self._loaded, page, total, lines)

    def _failed(self, exc: Exception) -> None:
        self._pending.clear()
        self.notify(f"error: cannot read the log: {exc}", severity="error")

    def _loaded(self, page: int, total: int, lines: list[Line]) -> None:
        self._pending.discard(-1)
        self.fetches += 1
        self.loaded = True
        self.pages[page] = [(ts, clean(m)) for ts, m in lines]
        self.pages.move_to_end(page)
        while len(self.pages) > PAGES_KEPT:
            self.pages.popitem(last=False)
        self._widest = max([self._widest] + [len(m) for _, m in self.pages[page]])
        self._version += 1
        self._set_total(total)
        if self._tail_dirty:
            self._tail_dirty = False
            self.refresh_tail()
        self.refresh()

    def _set_total(self, total: int) -> None:
        grew = total != self.total
        self.total = total
        stamp_w = 21 if self.timestamps else 0
        self.virtual_size = Size(0 if self.wrap else self._widest + stamp_w, total)
        if grew:
            # Pages past the end may have been fetched short: ask again when shown.
            last = (total - 1) // PAGE if total else 0
            if last in self.pages and len(self.pages[last]) < min(PAGE, total - last * PAGE):
                del self.pages[last]
        if self.follow:
            self.scroll_end(animate=False, immediate=True)

    def line(self, index: int) -> Line | None:
        """Line ``index`` if its page is here; else its page is asked for and None returned."""
        page = index // PAGE
        lines = self.pages.get(page)
        if lines is None:
            self._request(page)
            return None
        self.pages.move_to_end(page)
        offset = index - page * PAGE
        if offset >= len(lines):
            if index < self.total:
                self._request(page)
            return None
        return lines[offset]

    def refresh_tail(self) -> None:
        """New lines were written (a ``log`` event): fetch the last page again, once
        at a time however many events arrive meanwhile."""
        if self._pending:
            self._tail_dirty = True
            return
        last = max(0, (self.total - 1) // PAGE) if self.total else 0
        self.pages.pop(last, None)
        self._request(last)

    def reload(self) -> None:
        """Everything again (a ``reset`` event: the daemon restarted)."""
        self.pages.clear()
        self._request(-1 if self.follow else 0)

    # -- moves: no animation (an animated jump renders, and so fetches, every page on its way) --

    def action_scroll_home(self) -> None:
        self.follow = False
        self.scroll_to(y=0, animate=False, immediate=True)

    def action_scroll_end(self) -> None:
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def action_page_down(self) -> None:
        self.scroll_to(y=self.scroll_y + self.scrollable_content_region.height, animate=False, immediate=True)

    def action_page_up(self) -> None:
        self.follow = False
        self.scroll_to(y=self.scroll_y - self.scrollable_content_region.height, animate=False, immediate=True)

    # -- toggles -----------------------------------------------------------------

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap

    def action_toggle_timestamps(self) -> None:
        self.timestamps = not self.timestamps

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def watch_wrap(self) -> None:
        self._version += 1
        self._set_total(self.total)
        self.refresh()

    def watch_timestamps(self) -> None:
        self._version += 1
        self._set_total(self.total)
        self.refresh()

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self.refresh_tail()
            self.scroll_end(animate=False, immediate=True)

    # -- rendering ---------------------------------------------------------------

    def _text(self, index: int) -> Text:
        got = self.line(index)
        if got is None:
            return Text(LOADING, style=TS_STYLE)
        ts, message = got
        if self.timestamps:
            return Text.assemble((stamp(ts), TS_STYLE), message)
        return Text(message)

    def _wrapped_rows(self, top: int, height: int, width: int) -> list[Text]:
        rows: list[Text] = []
        index = top
        while len(rows) < height and index < self.total:
            text = self._text(index)
            pieces = text.wrap(self.app.console, max(1, width), no_wrap=False, overflow="fold") if width else [text]
            rows.extend(pieces)
            index += 1
        return rows[:height]

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if self.total == 0:
            if y != 0:
                return Strip.blank(width, self.rich_style)
            text = Text("(no log lines yet)" if self.loaded else LOADING, style=TS_STYLE)
            return Strip(list(text.render(self.app.console))).crop_extend(0, width, self.rich_style)
        if self.wrap:
            if y == 0 or getattr(self, "_wrap_key", None) != (scroll_y, width, self._version):
                self._wrap_key = (scroll_y, width, self._version)
                self._wrap_rows = self._wrapped_rows(scroll_y, self.size.height, width)
            if y >= len(self._wrap_rows):
                return Strip.blank(width, self.rich_style)
            text = self._wrap_rows[y]
            scroll_x = 0
        else:
            index = scroll_y + y
            if index >= self.total:
                return Strip.blank(width, self.rich_style)
            text = self._text(index)
            text.no_wrap = True
        segments = list(text.render(self.app.console))
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, self.rich_style)
