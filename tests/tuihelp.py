"""Shared by the TUI tests (test_tui_pfs, test_tui_pps): one real daemon per
module with deterministic PFS data, an app factory whose clock and ids are
fixed (so SVG snapshots do not change between runs), and waiting on a
condition inside a Pilot session (with a deadline, never a fixed sleep).

Use as::

    from tests.tuihelp import anyio_backend, tui_store_fixture  # noqa: F401 (fixtures)
    pytestmark = pytest.mark.anyio

    async def test_x(tui_store):                # a Store: .client, .now, .ids
        app = make_app(tui_store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: table(app).row_count == len(REPOS))
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pachctl.client import Client
from tests.ppshelp import Pachy, pachy_daemon
from tui.app import PachyApp

SIZE = (120, 36)  # every snapshot's terminal size

# The data every TUI test sees: repo -> commits on master, each {path: bytes}.
SEED: dict[str, list[dict[str, bytes]]] = {
    "images": [
        {"/README.md": b"# images\n\nPictures of the fruit stand.\n"},
        {"/data/sales.csv": b"fruit,count,price\napple,10,0.5\nbanana,24,0.25\ncherry,300,0.05\n"},
        {"/meta/info.json": b'{"name": "images", "tags": ["fruit", "stand"], "count": 3}',
         "/README.md": b"# images\n\nPictures of the fruit stand, and their sales.\n"},
    ],
    "labels": [
        {"/labels.tsv": b"id\tlabel\n1\tapple\n2\tbanana\n"},
        {"/blob.bin": bytes(range(256)) * 4, "/code/main.py": b"def main():\n    print('hi')\n"},
    ],
    "empty": [],
}
BRANCHES = {"images": {"dev": "master^"}}  # extra branches: name -> ref
# How long before "now" the data was made: every relative time reads "5 minutes ago".
AGE = 330.0


class Store:
    """What the seeded daemon holds and how tests show it."""

    def __init__(self, pachy: Pachy, made_at: float, ids: dict[str, str]):
        self.pachy = pachy
        self.made_at = made_at
        self.ids = ids

    @property
    def client(self) -> Client:
        assert self.pachy.client is not None
        return self.pachy.client

    @property
    def now(self) -> float:
        return self.made_at + AGE


def seed(c: Client, data: dict[str, list[dict[str, bytes]]] = SEED) -> None:
    for repo, commits in data.items():
        c.create_repo(repo)
        for files in commits:
            with c.commit(repo, "master") as commit:
                for path, body in files.items():
                    c.put_file(repo, commit.id, path, body, overwrite=True)
        for branch, ref in BRANCHES.get(repo, {}).items():
            c.create_branch(repo, branch, head=ref)


def fixed_ids(c: Client) -> dict[str, str]:
    """Every commit id -> a stable stand-in derived from ``repo@ref``."""
    out: dict[str, str] = {}
    for r in c.list_repo():
        for commit in c.list_commit(r.name, all=True):
            out[commit.id] = hashlib.sha1(f"{r.name}@{commit.ref}".encode()).hexdigest()[:32]
    return out


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio: async tests are marked ``pytest.mark.anyio``."""
    return "asyncio"


@pytest.fixture(scope="module", name="tui_store")
def tui_store_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A daemon with SEED in it, for a whole test module."""
    with pachy_daemon(Path(tmp_path_factory.mktemp("tui"))) as p:
        assert p.client is not None
        seed(p.client)
        made_at = time.time()
        yield Store(p, made_at, fixed_ids(p.client))


def make_app(store: Store, **kw) -> PachyApp:
    """The app against ``store``'s daemon, its clock frozen at ``store.now``,
    its ids fixed; ``live=False`` unless a test wants events."""
    kw.setdefault("now", store.now)
    kw.setdefault("ids", lambda cid: store.ids.get(cid, cid))
    kw.setdefault("live", False)
    return PachyApp(store.client, **kw)


async def until(pilot, cond: Callable[[], object], timeout: float = 15.0, what: str = "") -> object:
    """Let the app run until ``cond()`` is true (returns it); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await pilot.pause(0.02)


def bulk_commits(c: Client, repo: str, n: int, branch: str = "master") -> None:
    """``n`` finished commits on ``branch`` of ``repo`` (made if missing), one
    request each (a new-commit upload of one small file): the fast way to a
    long history."""
    from mountd import wire

    if repo not in {r.name for r in c.list_repo()}:
        c.create_repo(repo)
    for i in range(n):
        c.put_files(repo, branch, [wire.encode_small_put(f"/n/{i % 97}.txt", f"{i}\n".encode())], new_commit=True)
