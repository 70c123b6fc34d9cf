"""Screen aliases (``:repos``, ``:jobs``, ...) and the factories that build them.

Each screen module adds its own rows; ``PachyApp.open(alias, **params)`` and
command mode look names up here."""

from __future__ import annotations

from collections.abc import Callable

from textual.screen import Screen

ROUTES: dict[str, Callable[..., Screen]] = {}


def _pps_routes() -> None:
    """tui-pps's screens (imported late: the screens import tui.messages and widgets)."""
    from tui.screens.dag import DagScreen
    from tui.screens.datums import DatumsScreen
    from tui.screens.jobs import JobsScreen
    from tui.screens.logs import LogsScreen
    from tui.screens.pipelines import PipelinesScreen

    ROUTES.update(pipelines=PipelinesScreen, jobs=JobsScreen, datums=DatumsScreen, logs=LogsScreen, dag=DagScreen)


_pps_routes()
