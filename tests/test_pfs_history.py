"""pfsfuse.history: finished commits by their place on a branch (what pps reads instead of PFS's tables)."""

from __future__ import annotations

from pathlib import Path

from pfsfuse.objstore import LocalStore
from pfsfuse.pfs import PFS


def test_finished_commits_by_place(tmp_path: Path) -> None:
    pfs = PFS(str(tmp_path), LocalStore(str(tmp_path / "objects")))
    pfs.create_repo("r")
    assert pfs.latest_finished("r", "master") is None and pfs.next_finished("r", "master", None) is None
    ids = []
    for i, data in enumerate([b"a", b"bb", b"ccc"]):
        info = pfs.start_commit("r", "master", description=f"n{i}")
        with pfs.write_session("r", info.id) as ws:
            ws.put_bytes("f", data, overwrite=True)
            ws.commit()
        pfs.finish_commit("r", info.id)
        ids.append(info.id)
    open_commit = pfs.start_commit("r", "master")  # not finished: never a result
    head = pfs.latest_finished("r", "master")
    assert head is not None and (head.id, head.seq, head.size) == (ids[2], 2, 3) and head.finished > 0
    assert pfs.next_finished("r", "master", None).id == ids[0]
    assert pfs.next_finished("r", "master", 0).id == ids[1]
    assert pfs.next_finished("r", "master", 2) is None
    assert pfs.finished_at("r", "master", 1).size == 2 and pfs.finished_at("r", "master", 3) is None
    assert pfs.place_of(ids[1]) == 1 and pfs.place_of("nope") is None
    assert pfs.last_description("r", "master") == "n2"
    pfs.delete_commit("r", open_commit.id)
    pfs.archive_commit("r", ids[2])
    assert not pfs.is_current(ids[2]) and pfs.is_current(ids[1]) and not pfs.is_current("nope")
    assert pfs.latest_finished("r", "master").id == ids[1]  # archived ones are skipped...
    assert pfs.latest_finished("r", "master", archived=True).id == ids[2]  # ...unless asked for
    assert pfs.next_finished("r", "master", 1) is None
    pfs.close()
