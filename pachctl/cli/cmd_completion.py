"""`pachctl completion bash|zsh|fish [--install]` and the hidden `pachctl __complete`.

The scripts are generated from the argparse tree: command names (the 1.x
``create-repo`` and the 2.x ``create repo`` forms) and each command's flags are
written into the script, so they complete without starting Python. Everything
else — a positional argument or an option's value — asks ``pachctl __complete
-- WORD... CURRENT``, which finds out from the same tree what the slot holds
(a repo, a branch of the repo named before it or in ``repo@``, a pipeline, a
job, a datum of that job, a secret, a path in a commit, a local file) and asks
the daemon with a short timeout, never starting one, silent on any error.
Output: one candidate a line; a line ``:files`` / ``:dirs`` asks the shell for
its own file-name completion.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from pachctl.cli import completion_scripts as scripts
from pachctl.cli.common import add

TIMEOUT = 1.0  # seconds: a tab press must not hang on a slow or absent daemon
MAX_JOBS = 200  # newest jobs offered
GLOBAL_FLAGS = ("--debug", "--verbose", "-v", "--help", "-h")

# What a positional argument holds, by its dest; per command where it differs.
POSITIONAL = {"repo": "repo", "branch": "branch", "commit": "branch", "parent": "branch", "commits": "branch",
              "args": "branch", "pipeline": "pipeline", "job": "job", "job_arg": "job", "datum": "datum",
              "secrets": "secret", "path": "path", "dir": "dirs"}
POSITIONAL_IN = {("flush-commit", "commits"): "ref", ("wait-commit", "commits"): "ref",
                 ("run-pipeline", "commits"): "ref", ("glob-file", "pattern"): "path"}
OPTION = {"pipeline": "pipeline", "job": "job", "datum": "datum", "repos": "repo", "parent": "branch",
          "head": "branch", "file": "files", "kubeconfig": "files", "home": "dirs", "store": "dirs",
          "output": "files", "input": "files", "dir": "dirs"}
OPTION_IN = {("list-job", "input"): "ref", ("list-job", "output"): "ref", ("put-file", "commit"): None}


# -- the argparse tree ----------------------------------------------------------------


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help or "" for a in sub._choices_actions}


def flags(sp: argparse.ArgumentParser) -> list[tuple[str, str]]:
    return [(s, a.help or "") for a in sp._actions for s in a.option_strings]


def forms() -> tuple[argparse.ArgumentParser, dict[str, list[str]]]:
    """The parser and the 2.x verbs with their nouns (``create`` -> repo, branch, ...)."""
    from pachctl.cli import main

    parser = main.build_parser()
    verbs: dict[str, list[str]] = {}
    for name in commands(parser):
        verb, _, noun = name.partition("-")
        if verb in main.VERBS and noun in main.NOUNS:
            verbs.setdefault(verb, []).append(noun)
    return parser, verbs


# -- what a slot holds ----------------------------------------------------------------


def _takes_value(a: argparse.Action) -> bool:
    return a.nargs != 0 and not isinstance(a, argparse._HelpAction)


def _kind(name: str, a: argparse.Action, option: bool) -> str | None:
    if a.choices:
        return "choices"
    table, special = (OPTION, OPTION_IN) if option else (POSITIONAL, POSITIONAL_IN)
    if (name, a.dest) in special:
        return special[(name, a.dest)]
    return table.get(a.dest)


def _split_v2(tok: str) -> list[str]:
    repo, _, rest = tok.partition("@")
    ref, colon, path = rest.partition(":")
    return [repo, ref] + ([path] if colon else [])


def complete(words: list[str]) -> list[str]:
    """Candidates for the last of ``words`` (the words after ``pachctl``)."""
    parser, verbs = forms()
    cmds = commands(parser)
    strip = ""
    if len(words) >= 2 and (words[-1] == ":" or words[-2] == ":") and len(words) >= 3:
        # bash splits repo@branch:/path at the colon (COMP_WORDBREAKS): join it back and
        # answer with what follows the colon only.
        if words[-1] == ":":
            words = words[:-2] + [words[-2] + ":"]
        else:
            words = words[:-3] + [words[-3] + ":" + words[-1]]
        strip = words[-1].rpartition(":")[0] + ":"
    cur, before = words[-1], list(words[:-1])
    while before and before[0] in GLOBAL_FLAGS:
        before.pop(0)
    if not before:
        if cur.startswith("-"):
            return _match(GLOBAL_FLAGS, cur)
        return _match([*cmds, *verbs], cur)
    v2 = before[0] in verbs and before[0] not in cmds
    if v2:
        if len(before) == 1:
            return _match(verbs[before[0]], cur)
        name, args = f"{before[0]}-{before[1]}", before[2:]
    else:
        name, args = before[0], before[1:]
    sp = cmds.get(name)
    if sp is None:
        return []
    if cur.startswith("-"):
        return _match([f for f, _ in flags(sp)], cur)
    opts = {s: a for a in sp._actions for s in a.option_strings}
    positionals = [a for a in sp._actions if not a.option_strings]
    values: list[str] = []
    pending: argparse.Action | None = None
    for tok in args:
        if pending is not None:
            pending = None
        elif tok in opts:
            pending = opts[tok] if _takes_value(opts[tok]) else None
        elif not tok.startswith("-"):
            values += _split_v2(tok) if v2 and "@" in tok else [tok]
    if pending is not None:
        kind = _kind(name, pending, option=True)
        return [strip_prefix(c, strip) for c in _values(kind, cur, pending, values, positionals)]
    slot = len(values)
    action = _slot(positionals, slot)
    if action is None:
        return []
    kind = "datum" if (name, action.dest) == ("inspect-datum", "ids") and slot >= 1 else _kind(name, action, False)
    if name == "inspect-datum" and slot == 0:
        kind = "job"
    if "@" in cur and kind in ("repo", "ref", "branch", "path"):
        kind = "ref"
    return [strip_prefix(c, strip) for c in _values(kind, cur, action, values, positionals)]


def strip_prefix(c: str, prefix: str) -> str:
    return c[len(prefix):] if prefix and c.startswith(prefix) else c


def _slot(positionals: list[argparse.Action], n: int) -> argparse.Action | None:
    for a in positionals:
        if a.nargs in ("*", "+", "...", argparse.REMAINDER):
            return a
        if n == 0:
            return a
        n -= 1
    return None


def _match(cands: Iterable[str], cur: str) -> list[str]:
    return sorted({c for c in cands if c.startswith(cur)})


def _named(values: list[str], positionals: list[argparse.Action], dest: str) -> str | None:
    """The value given for the positional ``dest`` (e.g. the repo a branch belongs to)."""
    for i, a in enumerate(positionals):
        if a.dest == dest:
            return values[i] if i < len(values) else None
    return None


def _values(kind: str | None, cur: str, action: argparse.Action, values: list[str],
            positionals: list[argparse.Action]) -> list[str]:
    if kind == "choices":
        return _match([str(c) for c in action.choices or ()], cur)
    if kind in ("files", "dirs"):
        return [":" + kind]
    if kind is None:
        return []
    try:
        return _match(_ask(kind, cur, values, positionals), cur)
    except Exception:  # noqa: BLE001 - completion stays silent: no daemon, no answer, a bug alike
        return []


def _ask(kind: str, cur: str, values: list[str], positionals: list[argparse.Action]) -> list[str]:
    from pachctl.client import Client

    with Client(autostart=False, timeout=TIMEOUT) as c:
        if kind == "repo":
            return [r.name for r in c.list_repo()]
        if kind == "pipeline":
            return [p.name for p in c.list_pipeline()]
        if kind == "job":
            return [j.id for j in c.list_job()[:MAX_JOBS]]
        if kind == "secret":
            return c.list_secret()
        if kind == "datum":
            job = _named(values, positionals, "job") or (values[0] if values else None)
            return [d.id for d in c.list_datum(job)] if job else []
        if kind == "branch":
            repo = _named(values, positionals, "repo")
            return [b.name for b in c.list_branch(repo)] if repo else []
        if kind == "ref":  # repo@branch[:path], or repo@ to go on with
            if "@" not in cur:
                return [r.name + "@" for r in c.list_repo()]
            repo, _, rest = cur.partition("@")
            if ":" in rest:
                branch, _, path = rest.partition(":")
                return [f"{repo}@{branch}:{p}" for p in _paths(c, repo, branch, path)]
            return [f"{repo}@{b.name}" for b in c.list_branch(repo)]
        if kind == "path":
            repo = _named(values, positionals, "repo")
            commit = _named(values, positionals, "commit")
            return _paths(c, repo, commit, cur) if repo and commit else []
    return []


def _paths(c, repo: str, commit: str, prefix: str) -> list[str]:
    """Files and directories (with a trailing /) in the directory ``prefix`` is in."""
    where = prefix.rpartition("/")[0] or "/"
    out = []
    for f in c.list_file(repo, commit, where):
        path = f.path if f.path.startswith("/") else "/" + f.path
        out.append(path + "/" if f.type == "dir" else path)
    return out


def complete_main(argv: list[str]) -> int:
    """``pachctl __complete [--] WORD... CURRENT``: candidates, one a line; never an error."""
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        out = complete(argv or [""])
    except Exception:  # noqa: BLE001 - a broken completion must not print into the user's prompt
        return 0
    sys.stdout.write("".join(c + "\n" for c in out))
    return 0


# -- the command ----------------------------------------------------------------------


def install_path(shell: str) -> str:
    home = os.path.expanduser("~")
    if shell == "bash":
        data = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
        return os.path.join(data, "bash-completion", "completions", "pachctl")
    if shell == "zsh":
        return os.path.join(home, ".zfunc", "_pachctl")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(config, "fish", "completions", "pachctl.fish")


NOTES = {
    "bash": "new bash shells load it (with the bash-completion package); in this one: source {path}",
    "zsh": "zsh loads it from a directory in $fpath: put these lines in ~/.zshrc, before any other compinit:\n"
           "  fpath=(~/.zfunc $fpath)\n  autoload -Uz compinit && compinit\nthen open a new shell",
    "fish": "new fish shells load it; in this one: source {path}",
}


def script(shell: str) -> str:
    parser, verbs = forms()
    cmds = commands(parser)
    tree = {name: flags(sp) for name, sp in cmds.items()}
    return scripts.generate(shell, tree, helps(parser), verbs, GLOBAL_FLAGS)


def completion(args) -> int:
    text = script(args.shell)
    if not args.install:
        sys.stdout.write(text)
        return 0
    path = install_path(args.shell)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"wrote {path}")
    print(NOTES[args.shell].format(path=path))
    return 0


def register(sub) -> None:
    p = add(sub, "completion", "Print (or --install) the shell completion script for bash, zsh or fish.",
            completion)
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    p.add_argument("--install", action="store_true",
                   help="write it where the shell looks (bash: ~/.local/share/bash-completion/completions/"
                        "pachctl, zsh: ~/.zfunc/_pachctl, fish: ~/.config/fish/completions/pachctl.fish)")
