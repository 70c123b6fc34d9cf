"""Messages the app posts to its screens."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class LiveEvent(Message):
    """One event from mountd's event stream (``Client.events()``): ``kind``
    (``job.state``, ``commit.finished``, ``reset``, ...) and its ``data``."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event

    @property
    def kind(self) -> str:
        return self.event.kind

    @property
    def data(self) -> dict:
        return self.event.data
