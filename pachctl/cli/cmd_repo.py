"""Repos: create-repo, list-repo, inspect-repo, delete-repo."""

from __future__ import annotations

import time

from pachctl.cli.common import add, client, json_flag
from pachctl.cli.output import ago, emit_json, human_size, kv, table


def create_repo(args) -> int:
    client().create_repo(args.repo, args.description or "")
    return 0


def list_repo(args) -> int:
    repos = client().list_repo()
    if args.json:
        emit_json(repos)
        return 0
    now = time.time()
    table(["NAME", "CREATED", "SIZE"], [(r.name, ago(r.created, now), human_size(r.size)) for r in repos])
    return 0


def inspect_repo(args) -> int:
    r = client().inspect_repo(args.repo)
    if args.json:
        emit_json(r)
        return 0
    kv([("Name", r.name), ("Description", r.description), ("Created", ago(r.created)),
        ("Size", human_size(r.size)), ("Branches", ", ".join(r.branches))])
    return 0


def delete_repo(args) -> int:
    c = client()
    targets = [r.name for r in c.list_repo()] if args.all else args.repo
    if not targets:
        from mountd.models import errors

        raise errors.InvalidArgument("name a repo to delete, or pass --all")
    for name in targets:
        c.delete_repo(name, force=args.force or args.all)
    return 0


def register(sub) -> None:
    p = add(sub, "create-repo", "Create a new repo.", create_repo)
    p.add_argument("repo")
    p.add_argument("-d", "--description", help="what the repo holds")
    p = add(sub, "list-repo", "Return all repos.", list_repo)
    json_flag(p)
    p = add(sub, "inspect-repo", "Return info about a repo.", inspect_repo)
    p.add_argument("repo")
    json_flag(p)
    p = add(sub, "delete-repo", "Delete a repo.", delete_repo)
    p.add_argument("repo", nargs="*")
    p.add_argument("-f", "--force", action="store_true", help="delete even if other repos depend on it")
    p.add_argument("-a", "--all", action="store_true", help="delete every repo")
