"""PachyApp: the shell every screen runs in (``pachctl tui``).

The contract screens code against (see HELPERS.md):
- ``app.client``: a synchronous ``pachctl.client.Client``; call it only from
  thread workers (``@work(thread=True)``), never on the event loop.
- ``app.readonly``: ``--readonly``; screens hide their actions (``check_action``)
  and ``confirm`` refuses.
- ``app.record_command(cmd)``: the ``pachctl`` command equivalent to an action,
  shown in the command-log pane (``@`` toggles it).
- ``await app.confirm(question) -> bool``: a yes/no modal. Await it from a
  screen's handler or an async worker (``@work``), not from an App action.
- ``app.open(alias, **params)``: push the screen ``tui.routes.ROUTES[alias]``.
- ``app.now()``: the time tables measure "5 minutes ago" from (frozen in tests);
  ``app.show_id(cid)``: an id as shown (tests map random ids to fixed names).
- Live events: one thread reads ``client.events()`` and posts each event as
  ``tui.messages.LiveEvent`` to the active screen (``on_live_event``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from pachctl.client import Client
from tui import routes
from tui.commands import PachyCommands
from tui.messages import LiveEvent
from tui.screens.command import CommandScreen, parse
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.widgets.command_log import CommandLog


def _load_screens() -> None:
    """Import every screen module so it adds its ROUTES rows. A screen that
    another helper has not written yet is simply absent."""
    import importlib
    import pkgutil

    import tui.screens as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"tui.screens.{mod.name}")


class PachyApp(App):
    TITLE = "pachy"
    COMMANDS = App.COMMANDS | {PachyCommands}
    BINDINGS = [
        Binding("colon", "command_mode", "Command", key_display=":"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("at", "toggle_log", "Cmd log", key_display="@"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        client: Client,
        *,
        readonly: bool = False,
        start: str = "repos",
        start_params: dict | None = None,
        now: float | Callable[[], float] | None = None,
        live: bool = True,
        ids: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.readonly = readonly
        self.command_history: list[str] = []
        self.show_log = True
        self._start = (start, dict(start_params or {}))
        self._now = now
        self._live = live
        self._ids = ids
        self._events_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.events_connected = False  # for the title bar and tests
        _load_screens()

    # -- the contract ---------------------------------------------------------

    def now(self) -> float:
        if self._now is None:
            return time.time()
        return self._now() if callable(self._now) else float(self._now)

    def show_id(self, cid: str | None) -> str:
        """A commit or job id as tables show it (tests map ids to fixed names)."""
        if not cid:
            return "-"
        return self._ids(cid) if self._ids is not None else cid

    def record_command(self, cmd: str) -> None:
        self.command_history.append(cmd)
        for pane in self.screen.query(CommandLog):
            pane.add(cmd)
        self.log.info(f"pachctl command: {cmd}")

    async def confirm(self, question: str) -> bool:
        if self.readonly:
            self.notify("read-only: actions are disabled (started with --readonly)", severity="warning")
            return False
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(result: bool | None) -> None:
            if not answer.done():
                answer.set_result(bool(result))

        self.push_screen(ConfirmScreen(question), callback=done)
        return await answer

    def open(self, alias: str, *args: object, **params: object):
        """Push the screen named ``alias`` (``repos``, ``commits``, ...)."""
        factory = routes.ROUTES.get(alias)
        if factory is None:
            known = ", ".join(f":{a}" for a in sorted(routes.ROUTES))
            self.notify(f"unknown view ':{alias}'; try one of {known}", severity="error")
            return None
        try:
            screen = factory(*args, **params)
        except TypeError as exc:  # wrong parameters typed in command mode
            self.notify(f":{alias}: {exc}", severity="error")
            return None
        return self.push_screen(screen)

    def back(self) -> None:
        """esc: the previous screen; the first one stays."""
        if len(self.screen_stack) > 2:
            self.pop_screen()

    # -- start and stop -------------------------------------------------------

    def on_mount(self) -> None:
        alias, params = self._start
        self.open(alias, **params)
        if self._live:
            self._start_events()

    async def action_quit(self) -> None:
        self._stopping.set()
        self.exit()

    def on_unmount(self) -> None:
        self._stopping.set()

    # -- keys -----------------------------------------------------------------

    def action_command_mode(self) -> None:
        self.push_screen(CommandScreen(), callback=self._run_command)

    def _run_command(self, line: str | None) -> None:
        if not line:
            return
        alias, args, params = parse(line)
        if alias in ("q", "quit", "q!"):
            self.exit()
        elif alias in ("help", "h"):
            self.action_help()
        else:
            self.open(alias, *args, **params)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_toggle_log(self) -> None:
        self.show_log = not self.show_log
        for screen in self.screen_stack:
            for pane in screen.query(CommandLog):
                pane.set_class(not self.show_log, "-hidden")

    # -- live events ----------------------------------------------------------

    def _start_events(self) -> None:
        if not hasattr(self.client, "events"):
            self.log.warning("this client has no events(): the TUI does not update live")
            return
        # A daemon thread of its own rather than a Textual thread worker: those
        # run on asyncio's default executor, which the loop waits for at exit,
        # and this one may sit in a read until the next event.
        self._events_thread = threading.Thread(target=self._follow_events, name="pachy-events", daemon=True)
        self._events_thread.start()

    def _follow_events(self) -> None:
        client = Client(self.client.settings.address, token=self.client.settings.token,
                        home=self.client.settings.home, autostart=False, timeout=3600)
        try:
            for event in client.events():
                if self._stopping.is_set():
                    break
                try:
                    self.call_from_thread(self._deliver, event)
                except RuntimeError:  # the app has gone
                    break
        except Exception as exc:  # the stream is a nicety: the screens still work
            if not self._stopping.is_set():
                with contextlib.suppress(RuntimeError):
                    self.call_from_thread(self.notify, f"live updates stopped: {exc}", severity="warning")
        finally:
            client.close()

    def _deliver(self, event: object) -> None:
        self.events_connected = True
        # The active screen, and the one under a modal (a confirm dialog must
        # not stop the table under it from updating).
        for screen in reversed(self.screen_stack):
            screen.post_message(LiveEvent(event))
            if not screen.is_modal:
                break

    def get_default_screen(self) -> Screen:
        return super().get_default_screen()
