"""mountd's worker endpoints under 50 simulated workers (bench/mountd_scale.py, short):
a real daemon over TCP with a token, workers speaking the worker protocol over HTTP.

The floor is far below the issue's figure (2,000 round trips/s, measured by the
bench: see kube/README.md "Scale") so that a busy CI machine does not fail it;
what must hold exactly is that every task is done once and the RSS bound.
"""

from __future__ import annotations

import pytest

from bench import mountd_scale as ms

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

WORKERS = 50
DATUMS = 3000  # ~1 s at the bench's rate here (2,800-3,800 round trips/s from 50 workers)
FLOOR = 800  # round trips/s: under a third of what this machine does with others' tests running


def test_fifty_workers_every_task_once(tmp_path):
    creds = ms.mint([ms.PIPELINE], WORKERS)
    d = ms.Daemon(tmp_path, creds)
    try:
        ms.setup(d)
        res = ms.measure(d, ms.PIPELINE, creds, DATUMS, 1)
        peak = d.status("VmHWM")
        with d.client() as c:
            job = c.list_job(ms.PIPELINE)[0]
            datums = c.list_datum(job.id)
    finally:
        d.stop()
    # Every task handed out once and accepted once; the job saw each datum once.
    assert res["round_trips"] == DATUMS and res["duplicates"] == 0, res
    assert res["accepted"] == DATUMS and res["units"] == DATUMS, res
    assert job.state == "success" and job.data_processed == DATUMS and job.data_failed == 0, job
    assert len(datums) == DATUMS and {x.state for x in datums} == {"success"}
    assert res["exactly_once"]
    assert res["rate"] >= FLOOR, f"{res['rate']:.0f} round trips/s from {WORKERS} workers (floor {FLOOR})"
    assert peak <= 300, f"daemon peak RSS {peak:.0f} MB"
