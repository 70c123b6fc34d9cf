"""Commits and branches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from mountd.models import Commit, errors
from pachctl.cli.common import add, client, json_flag
from pachctl.cli.output import ago, emit_json, error, human_duration, human_size, kv, table


def _name(c) -> str:
    return c.ref


def start_commit(args) -> int:
    c = client().start_commit(args.repo, args.branch, parent=args.parent, description=args.message or "")
    if args.json:
        emit_json(c)
    else:
        print(c.id if args.v2 else c.ref)
    return 0


def finish_commit(args) -> int:
    c = client().finish_commit(args.repo, args.commit, description=args.message)
    if args.json:
        emit_json(c)
    return 0


def list_commit(args) -> int:
    commits = client().list_commit(args.repo, args.branch, n=args.number, all=args.all)
    if args.json:
        emit_json(commits)
        return 0
    commit_table(reversed(commits))  # oldest first, as the 1.x docs show
    return 0


def commit_table(commits: Iterable[Commit]) -> None:
    """The list-commit table (also flush-commit's), rows in the order given."""
    now = time.time()
    rows = [
        (
            c.branch or "",
            f"{c.repo}/{c.ref}",
            c.parent_ref or "<none>",
            ago(c.started, now),
            ago(c.finished, now),
            human_size(c.written),  # what this commit wrote, as 1.x showed it (the repo's total is list-repo's)
        )
        for c in commits
    ]
    table(["BRANCH", "REPO/ID", "PARENT", "STARTED", "FINISHED", "SIZE"], rows)


def inspect_commit(args) -> int:
    c = client().inspect_commit(args.repo, args.commit)
    if args.json:
        emit_json(c)
        return 0
    duration = human_duration(c.finished - c.started) if c.finished else ""
    kv(
        [
            ("Commit", f"{c.repo}/{c.ref}"),
            ("ID", c.id),
            ("Branch", c.branch or "<none>"),
            ("Parent", c.parent_ref or "<none>"),
            ("Started", ago(c.started)),
            ("Finished", ago(c.finished) if c.finished else "(open)"),
            ("Duration", duration),
            ("Size", human_size(c.written)),
            ("Total size", human_size(c.size)),
            ("Description", c.description),
            ("Archived", "yes" if c.archived else "no"),
            ("Provenance", ", ".join(f"{p.get('repo')}@{p.get('commit')}" for p in c.provenance) or "<none>"),
        ]
    )
    return 0


def delete_commit(args) -> int:
    client().delete_commit(args.repo, args.commit)
    return 0


def fork_commit(args) -> int:
    c = client().fork_commit(args.repo, args.parent, args.branch)
    print(c.id if args.v2 else c.ref)
    return 0


def squash_commit(args) -> int:
    if len(args.commits) < 2:
        from mountd.models import errors

        raise errors.InvalidArgument("usage: squash-commit REPO FROM-COMMIT... TO-COMMIT")
    client().squash_commit(args.repo, args.commits[:-1], args.commits[-1])
    return 0


def replay_commit(args) -> int:
    if len(args.args) < 2:
        from mountd.models import errors

        raise errors.InvalidArgument("usage: replay-commit REPO FROM-COMMIT... TO-BRANCH")
    for c in client().replay_commit(args.repo, args.args[:-1], args.args[-1]):
        print(c.id if args.v2 else c.ref)
    return 0


def archive_commit(args) -> int:
    for ref in args.commits:
        client().archive_commit(args.repo, ref)
    return 0


def archive_all(args) -> int:
    n = client().archive_all()
    if args.verbose:
        print(f"archived {n} commits")
    return 0


def commit_specs(tokens: list[str], usage: str) -> list[tuple[str, str]]:
    """Commits named as ``repo@commit``, ``repo/commit`` (1.x: the first '/'
    splits, so ``Data/master/4`` is commit ``master/4`` of ``Data``) or as
    two words ``repo commit`` (what the 2.x ``repo@commit`` becomes)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        sep = "@" if "@" in tok else "/" if "/" in tok else None
        if sep:
            repo, _, commit = tok.partition(sep)
            i += 1
        elif i + 1 < len(tokens):
            repo, commit = tok, tokens[i + 1]
            i += 2
        else:
            raise errors.InvalidArgument(f"'{tok}' names no commit; {usage}")
        if not repo or not commit:
            raise errors.InvalidArgument(f"'{tok}' is not a commit; {usage}")
        out.append((repo, commit))
    return out


def flush_commit(args) -> int:
    """Wait for everything downstream of the commits; print the commits it made."""
    usage = "use REPO@COMMIT, REPO/COMMIT or REPO COMMIT"
    commits = commit_specs(args.commits, usage)
    repos = [r for part in args.repos or [] for r in part.split(",") if r]
    result = client().flush_commit(commits, repos=repos)
    downstream = [Commit(**c) for c in result.commits]
    if args.json:
        emit_json(downstream)
    else:
        commit_table(downstream)
    for job in result.failed_jobs:
        error(f"job {job.id} of pipeline {job.pipeline} failed: {job.reason or job.state}")
    return 1 if result.failed_jobs else 0


def list_branch(args) -> int:
    branches = client().list_branch(args.repo)
    if args.json:
        emit_json(branches)
        return 0
    table(["BRANCH", "HEAD"], [(b.name, b.head_ref or "-") for b in branches])
    return 0


def create_branch(args) -> int:
    b = client().create_branch(args.repo, args.branch, head=args.head)
    if args.json:
        emit_json(b)
    return 0


def delete_branch(args) -> int:
    client().delete_branch(args.repo, args.branch)
    return 0


def register(sub) -> None:
    p = add(sub, "start-commit", "Start a new commit.", start_commit)
    p.add_argument("repo")
    p.add_argument("branch", nargs="?", default="master")
    p.add_argument("-p", "--parent", help="the commit to build on (default: the branch head)")
    p.add_argument("-m", "--message", "--description", dest="message", help="a description of the commit")
    json_flag(p)
    p = add(sub, "finish-commit", "Finish a started commit.", finish_commit)
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("-m", "--message", "--description", dest="message")
    json_flag(p)
    p = add(sub, "list-commit", "Return all commits on a repo (or a branch of it).", list_commit)
    p.epilog = ("SIZE is what each commit wrote (new files whole, appends the appended bytes; deletes and "
                "renames 0), as Pachyderm 1.x showed it; list-repo's SIZE is the repo's total.")
    p.add_argument("repo")
    p.add_argument("branch", nargs="?")
    p.add_argument("-n", "--number", type=int, help="only the newest N commits")
    p.add_argument("-a", "--all", action="store_true", help="include archived commits")
    json_flag(p)
    p = add(sub, "inspect-commit", "Return info about a commit.", inspect_commit)
    p.add_argument("repo")
    p.add_argument("commit")
    json_flag(p)
    p = add(sub, "delete-commit", "Delete a commit that has no children.", delete_commit)
    p.add_argument("repo")
    p.add_argument("commit")
    p = add(sub, "fork-commit", "Start a new commit with a given parent on a new branch.", fork_commit)
    p.add_argument("repo")
    p.add_argument("parent")
    p.add_argument("branch")
    p = add(sub, "squash-commit", "Squash a number of commits into a single (open) commit.", squash_commit)
    p.add_argument("repo")
    p.add_argument("commits", nargs="+", metavar="COMMIT", help="FROM... TO")
    p = add(sub, "replay-commit", "Replay a number of commits onto a branch.", replay_commit)
    p.add_argument("repo")
    p.add_argument("args", nargs="+", metavar="ARG", help="FROM-COMMIT... TO-BRANCH")
    p = add(sub, "archive-commit", "Archive commits: hidden from list-commit unless -a.", archive_commit)
    p.add_argument("repo")
    p.add_argument("commits", nargs="+", metavar="COMMIT")
    add(sub, "archive-all", "Archives all commits in all repos.", archive_all)
    p = add(
        sub,
        "flush-commit",
        "Wait for all commits caused by the specified commits to finish and return them.",
        flush_commit,
        aliases=("wait-commit",),
    )
    p.add_argument("commits", nargs="+", metavar="COMMIT", help="REPO@COMMIT, REPO/COMMIT or REPO COMMIT")
    p.add_argument("-r", "--repos", action="append", metavar="REPO,...", help="only wait for commits in these repos")
    json_flag(p)
    p = add(sub, "list-branch", "Return all branches on a repo.", list_branch)
    p.add_argument("repo")
    json_flag(p)
    p = add(sub, "create-branch", "Create a branch (or move it) to a commit.", create_branch)
    p.add_argument("repo")
    p.add_argument("branch")
    p.add_argument("--head", help="the commit the branch points at (default: none)")
    json_flag(p)
    p = add(sub, "delete-branch", "Delete a branch (its commits stay).", delete_branch)
    p.add_argument("repo")
    p.add_argument("branch")


__all__ = ["register", "json"]
