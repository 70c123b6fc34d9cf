"""The command palette's provider (``ctrl+p``): every screen alias, as
``Open repos`` etc., plus the active screen's own actions, as ``(name, help,
callback)`` triples that a screen offers through ``palette_commands()``."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.routes import ROUTES


class PachyCommands(Provider):
    def _commands(self) -> list[tuple[str, str, object]]:
        app = self.app
        out: list[tuple[str, str, object]] = []
        for alias in sorted(ROUTES):
            out.append((f"Open {alias}", f":{alias}", partial(app.open, alias)))
        screen = self.screen  # the screen under the palette
        offer = getattr(screen, "palette_commands", None)
        if offer is not None:
            out.extend(offer())
        out.append(("Toggle command log", "show or hide the pachctl commands of every action", app.action_toggle_log))
        return out

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
