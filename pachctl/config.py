"""Where the daemon is: flag, then environment, then config file, then default.

Environment: ``PACHY_ADDRESS``, or the seeds' ``ADDRESS`` / ``PACHD_ADDRESS``
(``HOST:PORT``, or ``unix:PATH``); ``PACHY_TOKEN``; ``PACHY_HOME`` (the
embedded default's data directory). Config file: ``$XDG_CONFIG_HOME/pachy/
config.toml`` with keys ``address``, ``token``, ``home`` (and ``runner``, read
by the daemon itself: where pipelines run, see ``pachctl daemon --runner``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

from mountd.models import errors


@dataclass
class Settings:
    address: str | None  # None: the embedded default (unix socket under home)
    token: str | None
    home: str


def config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "pachy", "config.toml")


def _config_file() -> dict:
    path = config_path()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise errors.InvalidArgument(f"cannot read {path}: {exc}") from None


def default_home() -> str:
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "pachy")


def resolve(address: str | None = None, token: str | None = None, home: str | None = None) -> Settings:
    cfg = None

    def from_cfg(key: str) -> str | None:
        nonlocal cfg
        if cfg is None:
            cfg = _config_file()
        value = cfg.get(key)
        return str(value) if value is not None else None

    env = os.environ
    address = address or env.get("PACHY_ADDRESS") or env.get("ADDRESS") or env.get("PACHD_ADDRESS") or from_cfg("address")
    token = token or env.get("PACHY_TOKEN") or from_cfg("token")
    home = home or env.get("PACHY_HOME") or from_cfg("home") or default_home()
    return Settings(address or None, token, os.path.abspath(os.path.expanduser(home)))
