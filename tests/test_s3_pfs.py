"""The whole PFS on S3 (moto's server on loopback), as on the local disk."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import boto3
import pytest

from pachctl import errors
from pfsfuse.objstore.s3 import S3Store
from pfsfuse.pfs import PFS
from tests.s3server import s3_endpoint  # noqa: F401


@pytest.fixture
def bucket(s3_endpoint: str) -> str:  # noqa: F811
    name = f"pachy-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def test_engine_on_s3_round_trips_dedups_and_collects(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:  # noqa: F811
    store = S3Store(bucket, "pfs", endpoint_url=s3_endpoint)
    p = PFS(str(tmp_path / "meta"), store)
    p.create_repo("data")
    payload = os.urandom(3 << 20)
    for name in ("a", "b"):
        c = p.start_commit("data")
        with p.write_session("data", c.id) as s:
            s.put_bytes(f"{name}.bin", payload)
            s.put_bytes("log.txt", f"{name}\n".encode())
            s.commit()
        p.finish_commit("data", c.id)
    assert b"".join(p.read_file("data", "master", "b.bin")[1]) == payload
    assert b"".join(p.read_file("data", "master", "log.txt")[1]) == b"a\nb\n"
    assert b"".join(p.read_file("data", "master/0", "log.txt")[1]) == b"a\n"
    # The second copy of the payload stored nothing new.
    packs = list(store.list("packs/"))
    stored = sum(store.size(k) for k in packs)
    assert stored < len(payload) + (64 << 10)
    assert p.fsck()["ok"]

    p.delete_repo("data")
    report = p.gc()
    assert report["packs_deleted"] == len(packs)
    assert list(store.list("packs/")) == []
    p.close()


def test_daemon_with_s3_store(tmp_path: Path, s3_endpoint: str, bucket: str, start_daemon, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("PACHY_S3_ENDPOINT", s3_endpoint)
    d = start_daemon(tmp_path / "home", "--store", f"s3://{bucket}/team")
    c = d.client
    assert c.version().store == f"s3://{bucket}/team"
    c.create_repo("images")
    with c.commit("images", "master") as commit:
        c.put_file("images", commit.id, "x/y.bin", b"\x00\x01" * 100_000)
    assert c.read_file("images", "master", "x/y.bin") == b"\x00\x01" * 100_000
    keys = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    assert keys and all(k["Key"].startswith("team/packs/") for k in keys)
    assert c.fsck().ok


def test_missing_bucket_is_a_clear_start_up_error(tmp_path: Path, s3_endpoint: str, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("PACHY_S3_ENDPOINT", s3_endpoint)
    with pytest.raises(errors.PfsError, match="does not exist"):
        S3Store.from_url("s3://no-such-bucket-here/x")
