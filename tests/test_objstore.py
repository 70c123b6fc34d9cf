"""The object store contract (pfsfuse/objstore/base.py), checked for every backend alike."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pfsfuse.errors import InvalidArgument, NoSpace, NotFound, PfsError, Unreachable
from pfsfuse.objstore import LocalStore, MemoryStore, ObjectMissing, ObjectStore, open_store
from pfsfuse.objstore.local import TMP_PREFIX
from pfsfuse.objstore.s3 import S3Store
from tests.conftest import tmpfs_at
from tests.s3server import s3_endpoint  # noqa: F401

MiB = 1024 * 1024
BACKENDS = ["memory", "local", "s3", "s3-prefixed"]


def _raw_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _new_bucket(endpoint: str) -> str:
    bucket = f"pachy-test-{uuid.uuid4().hex[:16]}"
    _raw_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    kind = request.param
    if kind == "memory":
        s: ObjectStore = MemoryStore()
    elif kind == "local":
        s = LocalStore(str(tmp_path / "objects"))
    else:
        # Only S3 cases pay for starting the server.
        endpoint = request.getfixturevalue("s3_endpoint")
        prefix = "some/prefix" if kind == "s3-prefixed" else ""
        s = S3Store(_new_bucket(endpoint), prefix, endpoint_url=endpoint)
    yield s
    s.close()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:  # noqa: F811
    return _new_bucket(s3_endpoint)


def _files_under(root: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _dirs, fs in os.walk(root) for f in fs
    )


# --- the contract, for every backend ----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"hello", os.urandom(5 * MiB)],
    ids=["empty", "small", "5MiB"],
)
def test_round_trip(store: ObjectStore, data: bytes) -> None:
    store.put("packs/ab/obj", data)
    assert store.get("packs/ab/obj") == data
    assert store.size("packs/ab/obj") == len(data)
    assert store.exists("packs/ab/obj")


def test_put_accepts_bytearray_and_memoryview(store: ObjectStore) -> None:
    store.put("a", bytearray(b"from bytearray"))
    store.put("b", memoryview(b"xxfrom memoryviewxx")[2:-2])
    assert store.get("a") == b"from bytearray"
    assert store.get("b") == b"from memoryview"


def test_second_put_replaces_whole(store: ObjectStore) -> None:
    store.put("k", b"a much longer first version")
    store.put("k", b"short")
    assert store.get("k") == b"short"
    assert store.size("k") == 5


def test_get_range(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4
    store.put("k", data)
    assert store.get_range("k", 0, 10) == data[:10]
    assert store.get_range("k", 300, 50) == data[300:350]
    assert store.get_range("k", 1000, 24) == data[1000:]
    assert store.get_range("k", 1000, 100) == data[1000:]  # runs past the end
    assert store.get_range("k", 1024, 10) == b""  # starts exactly at the end
    assert store.get_range("k", 5000, 10) == b""  # starts beyond the end
    assert store.get_range("k", 10, 0) == b""


def test_read_into_matches_get_range(store: ObjectStore) -> None:
    data = os.urandom(3 * MiB + 777)
    store.put("k", data)
    buf = bytearray(3 * MiB + 3 * 4096)
    for offset, length in [(0, 4096), (1, 10), (4095, 8193), (12345, 2 * MiB + 3), (len(data) - 5, 5)]:
        assert bytes(store.read_into("k", offset, length, buf)) == data[offset : offset + length]
    assert bytes(store.read_into("k", len(data) - 5, 100, buf)) == data[-5:]  # runs past the end


def test_get_range_of_empty_object(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get_range("empty", 0, 10) == b""


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get("no/such"),
        lambda s: s.get_range("no/such", 0, 10),
        lambda s: s.get_range("no/such", 0, 0),
        lambda s: s.size("no/such"),
    ],
    ids=["get", "get_range", "get_range_empty", "size"],
)
def test_missing_key_raises_object_missing(store: ObjectStore, call) -> None:
    store.put("no/other", b"x")
    with pytest.raises(ObjectMissing) as info:
        call(store)
    assert isinstance(info.value, NotFound)
    assert info.value.key == "no/such"
    assert not store.exists("no/such")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.delete("never/existed")
    store.put("k", b"x")
    store.delete("k")
    store.delete("k")
    assert not store.exists("k")
    with pytest.raises(ObjectMissing):
        store.get("k")


def test_list_is_sorted_and_filtered_by_prefix(store: ObjectStore) -> None:
    keys = ["packs/cd/3", "meta/x", "packs/ab/2", "packsX/y", "packs/ab/1", "packs/ab/10"]
    for key in keys:
        store.put(key, key.encode())
    assert list(store.list()) == sorted(keys)
    assert list(store.list("packs/")) == ["packs/ab/1", "packs/ab/10", "packs/ab/2", "packs/cd/3"]
    assert list(store.list("packs/ab/1")) == ["packs/ab/1", "packs/ab/10"]
    assert list(store.list("packs")) == sorted(k for k in keys if k.startswith("packs"))
    assert list(store.list("nothing/")) == []


def test_list_after_delete(store: ObjectStore) -> None:
    store.put("a/1", b"1")
    store.put("a/2", b"2")
    store.delete("a/1")
    assert list(store.list("a/")) == ["a/2"]


def test_concurrent_puts_and_gets(store: ObjectStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                key = f"t/{n}/{i}"
                store.put(key, key.encode() * 100)
                assert store.get(key) == key.encode() * 100
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(store.list("t/"))) == 40


# --- S3 specifics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "stored"),
    [("", "packs/k"), ("pre/fix", "pre/fix/packs/k"), ("/pre/fix/", "pre/fix/packs/k")],
)
def test_s3_key_layout(s3_endpoint: str, bucket: str, prefix: str, stored: str) -> None:  # noqa: F811
    store = S3Store(bucket, prefix, endpoint_url=s3_endpoint)
    store.put("packs/k", b"x")
    raw = _raw_client(s3_endpoint).list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in raw["Contents"]] == [stored]
    assert list(store.list()) == ["packs/k"]


def test_s3_prefixes_are_isolated(s3_endpoint: str, bucket: str) -> None:  # noqa: F811
    one = S3Store(bucket, "one", endpoint_url=s3_endpoint)
    # "one2" starts with "one": the store must not list it as part of "one".
    two = S3Store(bucket, "one2", endpoint_url=s3_endpoint)
    one.put("k", b"from one")
    two.put("k", b"from two")
    two.put("only-two", b"x")
    assert list(one.list()) == ["k"]
    assert list(two.list()) == ["k", "only-two"]
    assert one.get("k") == b"from one"
    assert not one.exists("only-two")
    one.delete("k")
    assert two.get("k") == b"from two"


def test_s3_describe(s3_endpoint: str, bucket: str) -> None:  # noqa: F811
    assert S3Store(bucket, endpoint_url=s3_endpoint).describe() == f"s3://{bucket}"
    assert S3Store(bucket, "a/b/", endpoint_url=s3_endpoint).describe() == f"s3://{bucket}/a/b"


def test_open_store_s3_url(
    s3_endpoint: str,  # noqa: F811
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACHY_S3_ENDPOINT", s3_endpoint)
    store = open_store(f"s3://{bucket}/data/main")
    assert isinstance(store, S3Store)
    assert store.describe() == f"s3://{bucket}/data/main"
    store.put("packs/k", b"via url")
    assert store.get("packs/k") == b"via url"
    raw = _raw_client(s3_endpoint).get_object(Bucket=bucket, Key="data/main/packs/k")
    assert raw["Body"].read() == b"via url"


def test_open_store_s3_url_without_prefix(
    s3_endpoint: str,  # noqa: F811
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACHY_S3_ENDPOINT", s3_endpoint)
    store = open_store(f"s3://{bucket}")
    assert isinstance(store, S3Store) and store.prefix == ""


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix"])
def test_s3_url_without_bucket(url: str) -> None:
    with pytest.raises(InvalidArgument):
        S3Store.from_url(url)


def test_s3_missing_bucket_is_a_clear_error(s3_endpoint: str) -> None:  # noqa: F811
    with pytest.raises(PfsError) as info:
        S3Store("no-such-bucket", endpoint_url=s3_endpoint)
    assert str(info.value) == (
        f"bucket 'no-such-bucket' does not exist at {s3_endpoint}; "
        "create it first (aws s3 mb s3://no-such-bucket)"
    )


def test_s3_unreachable_endpoint_fails_fast(s3_endpoint: str) -> None:  # noqa: F811
    # s3_endpoint only for its fake credentials: without them botocore would
    # fail on signing before it ever tries to connect.
    started = time.monotonic()
    with pytest.raises(Unreachable) as info:
        S3Store("any-bucket", endpoint_url="http://127.0.0.1:1")
    assert time.monotonic() - started < 20
    assert "http://127.0.0.1:1" in str(info.value)


def test_s3_region_defaults_to_us_east_1(
    s3_endpoint: str,  # noqa: F811
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    store = S3Store(bucket, endpoint_url=s3_endpoint)
    assert store._client.meta.region_name == "us-east-1"


# --- LocalStore specifics -----------------------------------------------------------------


@pytest.mark.parametrize("o_direct", [True, False], ids=["o_direct", "no_o_direct"])
def test_local_read_into_direct_cached_or_plain(tmp_path: Path, monkeypatch, o_direct: bool) -> None:
    """O_DIRECT when the range is not in the page cache, the page cache when it
    is; plain reads where the filesystem refuses O_DIRECT. Same bytes each way."""
    import errno
    import mmap

    from pfsfuse.objstore import local

    if not o_direct:
        real_open = os.open

        def refusing_open(path, flags, *args):
            if flags & os.O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_open(path, flags, *args)

        monkeypatch.setattr(local.os, "open", refusing_open)
    s = LocalStore(str(tmp_path / "objects"))
    data = os.urandom(9 * MiB)
    s.put("p", data)
    fd = os.open(tmp_path / "objects" / "p", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache
    buf = mmap.mmap(-1, 9 * MiB + 2 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset, length in [(4097, 5 * MiB), (0, 9 * MiB), (9 * MiB - 3, 3)]:
        view = s.read_into("p", offset, length, buf)
        assert view.obj is buf and bytes(view) == data[offset : offset + length]
    assert s._direct is o_direct
    # Direct reads leave the page cache alone; plain ones fill it.
    assert local.cached(fd, 0, 9 * MiB) is not o_direct
    os.pread(fd, 9 * MiB, 0)
    assert local.cached(fd, 0, 9 * MiB)
    assert bytes(s.read_into("p", 100, MiB, buf)) == data[100 : 100 + MiB]
    os.close(fd)
    s.close()


def test_local_put_leaves_no_temporary(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    store.put("packs/ab/k", b"x" * 1000)
    store.put("packs/ab/k", b"y" * 10)
    assert _files_under(str(tmp_path)) == [os.path.join("packs", "ab", "k")]


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "a/..", "/abs", ""])
def test_local_rejects_unsafe_keys(tmp_path: Path, key: str) -> None:
    store = LocalStore(str(tmp_path / "root"))
    with pytest.raises(PfsError):
        store.put(key, b"x")
    with pytest.raises(PfsError):
        store.get(key)
    assert _files_under(str(tmp_path)) == []


def test_local_cleanup_temporaries(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    store.put("packs/ab/k", b"real")
    (tmp_path / "packs" / "ab" / f"{TMP_PREFIX}123-abc-k").write_bytes(b"partial")
    (tmp_path / f"{TMP_PREFIX}456-def-x").write_bytes(b"partial")
    assert list(store.list()) == ["packs/ab/k"]  # temporaries are never listed
    assert store.cleanup_temporaries() == 2
    assert _files_under(str(tmp_path)) == [os.path.join("packs", "ab", "k")]
    assert store.get("packs/ab/k") == b"real"
    assert store.cleanup_temporaries() == 0


def test_local_full_disk_raises_no_space_and_leaves_nothing(tmp_path: Path) -> None:
    with tmpfs_at(tmp_path / "disk", "1m") as disk:
        store = LocalStore(str(disk))
        with pytest.raises(NoSpace):
            store.put("packs/ab/big", os.urandom(2 * MiB))
        assert _files_under(str(disk)) == []
        assert not store.exists("packs/ab/big")
        # The disk is usable again once the failed write is gone.
        store.put("packs/ab/small", b"fits")
        assert store.get("packs/ab/small") == b"fits"
