"""Actions on the daemon the TUI offers, shared by every screen (pipelines,
jobs, datums here; branches, commits, repos on tui-pfs's screens): each asks
``await app.confirm(...)`` first, records the equivalent ``pachctl`` command
line in the command-log pane (``app.record_command``), calls the client in a
thread (never on the event loop), and says how it went. All are refused with
``--readonly``. Each returns whether it acted."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from typing import Any

from pachctl.client import errors


async def act(app: Any, question: str, command: list[str], call: Callable[[], object],
              done: str | None = None) -> bool:
    """Confirm, record ``pachctl <command>``, run ``call`` in a thread, notify."""
    if getattr(app, "readonly", False):
        app.notify("read-only: actions are off (started with --readonly)", severity="warning")
        return False
    if not await app.confirm(question):
        return False
    line = shlex.join(["pachctl", *command])
    app.record_command(line)
    try:
        await asyncio.to_thread(call)
    except errors.PfsError as exc:
        app.notify(f"error: {exc}", severity="error", timeout=8)
        return False
    app.notify(done or line)
    return True


async def stop_pipeline(app: Any, name: str) -> bool:
    return await act(app, f"Stop pipeline {name}? (its running job is stopped; start it again later)",
                     ["stop", "pipeline", name], lambda: app.client.stop_pipeline(name), f"stopped {name}")


async def start_pipeline(app: Any, name: str) -> bool:
    return await act(app, f"Start pipeline {name}?", ["start", "pipeline", name],
                     lambda: app.client.start_pipeline(name), f"started {name}")


async def run_pipeline(app: Any, name: str) -> bool:
    return await act(app, f"Run pipeline {name} now, on its inputs' heads?", ["run", "pipeline", name],
                     lambda: app.client.run_pipeline(name), f"ran {name}")


async def stop_job(app: Any, pipeline: str, job: str) -> bool:
    return await act(app, f"Stop job {job} of {pipeline}? (its output commit is not made)",
                     ["stop", "job", f"{pipeline}@{job}"], lambda: app.client.stop_job(job), f"stopped job {job}")


async def restart_datum(app: Any, pipeline: str, job: str, datum: str) -> bool:
    return await act(app, f"Restart datum {datum} of job {job}? (its run is cut short and tried again)",
                     ["restart", "datum", f"{pipeline}@{job}", datum],
                     lambda: app.client.restart_datum(job, datum), f"restarted datum {datum}")


async def delete_branch(app: Any, repo: str, branch: str) -> bool:
    return await act(app, f"Delete branch {branch} of {repo}? (its commits stay)",
                     ["delete", "branch", f"{repo}@{branch}"], lambda: app.client.delete_branch(repo, branch),
                     f"deleted {repo}@{branch}")


async def delete_commit(app: Any, repo: str, commit: str) -> bool:
    return await act(app, f"Delete commit {commit} of {repo}? This cannot be undone.",
                     ["delete", "commit", f"{repo}@{commit}"], lambda: app.client.delete_commit(repo, commit),
                     f"deleted {repo}@{commit}")


async def delete_repo(app: Any, repo: str, force: bool = False) -> bool:
    command = ["delete", "repo", repo] + (["--force"] if force else [])
    return await act(app, f"Delete repo {repo} and all its commits? This cannot be undone.", command,
                     lambda: app.client.delete_repo(repo, force=force), f"deleted {repo}")
