"""`pachctl tui [--readonly]`: the terminal UI (tui/), against the daemon the
other commands use (ADDRESS / PACHD_ADDRESS / PACHY_TOKEN / config file)."""

from __future__ import annotations

import sys

from pachctl.cli.common import add, client


def tui(args) -> int:
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        from mountd.models import errors

        raise errors.InvalidArgument("pachctl tui needs a terminal; run it in one (not through a pipe)")
    c = client()
    c.version()  # fail here, with the CLI's message, if the daemon is not reachable
    from tui.app import PachyApp  # Textual is imported only for this command

    PachyApp(c, readonly=args.readonly, start=args.view).run()
    return 0


def register(sub) -> None:
    p = add(sub, "tui", "Browse repos, commits, files, pipelines, jobs and logs in a terminal UI.", tui)
    p.add_argument("--readonly", action="store_true", help="hide every action that changes data")
    p.add_argument("--view", default="repos", metavar="ALIAS",
                   help="the first screen: repos, pipelines, jobs, dag, ... (default: repos)")


def main(argv: list[str] | None = None) -> int:
    """``python -m tui``: the same command, without the rest of pachctl."""
    from pachctl.cli.main import main as pachctl_main

    return pachctl_main(["tui", *(sys.argv[1:] if argv is None else argv)])

