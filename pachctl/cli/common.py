"""What every command module shares."""

from __future__ import annotations

import argparse

from pachctl.client import Client

_client: Client | None = None


def client() -> Client:
    global _client
    if _client is None:
        _client = Client()
    return _client


def add(sub, name: str, help: str, func, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, aliases=list(aliases))
    p.set_defaults(func=func)
    return p


def json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
