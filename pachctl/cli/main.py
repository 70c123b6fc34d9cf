"""`pachctl`: entry point, both command generations, and error reporting.

1.x form: ``pachctl create-repo data``; 2.x form: ``pachctl create repo data``
and ``repo@branch:/path`` arguments. Both land on the same handlers.
"""

from __future__ import annotations

import argparse
import os
import sys

from mountd.models import errors
from pachctl.cli import (
    cmd_admin,
    cmd_commit,
    cmd_completion,
    cmd_debug,
    cmd_deploy,
    cmd_doctor,
    cmd_file,
    cmd_job,
    cmd_mount,
    cmd_pipeline,
    cmd_repo,
    cmd_secret,
    cmd_tui,
)
from pachctl.cli.output import error

VERBS = {"create", "list", "inspect", "delete", "start", "finish", "put", "get", "glob", "diff", "fork", "squash", "archive", "flush", "wait", "replay",
         "stop", "run", "update", "restart", "debug"}
NOUNS = {"repo", "commit", "branch", "file", "job", "pipeline", "datum", "secret"}
# Options whose value is never a repo@ref argument.
VALUE_OPTS = {"-f", "--file", "-i", "--input", "-o", "--output", "-m", "--message", "-d", "--description", "--head", "-p", "--parent", "--old", "--listen", "--token", "--store", "--home", "-n", "-j", "--job"}


def normalize(argv: list[str]) -> tuple[list[str], bool]:
    """Rewrite the 2.x form into the 1.x one; returns (argv, used_2x)."""
    if len(argv) >= 2 and argv[0] in VERBS and argv[1] in NOUNS:
        argv = [f"{argv[0]}-{argv[1]}"] + argv[2:]
        return _expand_at(argv), True
    return argv, False


def _expand_at(argv: list[str]) -> list[str]:
    """``repo@ref:/path`` -> ``repo ref /path``; ``repo@ref`` -> ``repo ref``."""
    out: list[str] = []
    skip = False
    for i, tok in enumerate(argv):
        if skip or i == 0 or tok.startswith("-") or "@" not in tok:
            out.append(tok)
            skip = tok in VALUE_OPTS
            continue
        repo, _, rest = tok.partition("@")
        ref, colon, path = rest.partition(":")
        out += [repo, ref] + ([path or "/"] if colon else [])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pachctl",
        description="Version control for data: repos, commits and files, with pipelines.",
        epilog="Environment: ADDRESS/PACHD_ADDRESS (HOST:PORT of a remote daemon), PACHY_HOME, PACHY_TOKEN.",
    )
    p.add_argument("--debug", action="store_true", help="print tracebacks on errors")
    p.add_argument("-v", "--verbose", action="store_true", help="more output on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in (cmd_repo, cmd_commit, cmd_file, cmd_pipeline, cmd_job, cmd_secret, cmd_mount, cmd_admin, cmd_deploy, cmd_tui, cmd_doctor, cmd_debug,
                   cmd_completion):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["__complete"]:  # hidden: the shell completion scripts ask it for candidates
        return cmd_completion.complete_main(argv[1:])
    argv, used_2x = normalize(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.v2 = used_2x
    debug = args.debug or bool(os.environ.get("PACHY_DEBUG"))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except errors.PfsError as exc:
        if debug:
            raise
        error(exc.message)
        detail = getattr(exc, "detail", None)  # e.g. the log tail of a daemon that failed to start
        if detail:
            sys.stderr.write(detail if detail.endswith("\n") else detail + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        # `pachctl get-file ... | head`: the reader left; that is not an error.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except Exception as exc:  # a bug: say so briefly unless asked for more
        if debug:
            raise
        error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
