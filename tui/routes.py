"""Screen aliases (``:repos``, ``:jobs``, ...) and the factories that build them.

Each screen module adds its own rows; ``PachyApp.open(alias, **params)`` and
command mode look names up here."""

from __future__ import annotations

from collections.abc import Callable

from textual.screen import Screen

ROUTES: dict[str, Callable[..., Screen]] = {}
