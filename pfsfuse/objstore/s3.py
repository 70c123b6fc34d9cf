"""Objects in an S3 bucket (AWS, MinIO, Ceph, or moto in tests).

A single ``put_object`` is atomic in S3: readers see the old object, the new
one, or none, never a prefix. Settings beyond bucket and prefix come from the
standard AWS chain; ``PACHY_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL`` select a
non-AWS endpoint.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from pfsfuse.errors import InvalidArgument, NoSpace, PfsError, Unauthorized, Unreachable
from pfsfuse.objstore.base import ObjectMissing, ObjectStore

DEFAULT_REGION = "us-east-1"
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_AUTH_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
# MinIO reports a full disk this way; the contract wants NoSpace for it.
_FULL_CODES = {"XMinioStorageFull"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _make_client(endpoint_url: str | None) -> Any:
    # A private session: boto3's default session is not safe to share
    # between threads while creating clients.
    session = boto3.session.Session()
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        # Few, quick retries so a dead endpoint fails in seconds, not minutes.
        retries={"max_attempts": 3, "mode": "standard"},
        # The store is used from several threads at once.
        max_pool_connections=32,
        # Custom endpoints (MinIO at host:port, an IP) rarely resolve
        # bucket.host names, so use path-style addressing for them.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=session.region_name or DEFAULT_REGION,
        config=config,
    )


class S3Store(ObjectStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any = None,
    ):
        if not bucket:
            raise InvalidArgument("S3 store needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client if client is not None else _make_client(endpoint_url)
        self.endpoint = endpoint_url or self._client.meta.endpoint_url
        self._check_bucket()

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        """Open ``s3://BUCKET[/PREFIX]``; the endpoint comes from the environment."""
        if not url.startswith("s3://"):
            raise InvalidArgument(f"not an S3 URL: '{url}'")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise InvalidArgument(f"S3 URL '{url}' names no bucket")
        endpoint = (
            os.environ.get("PACHY_S3_ENDPOINT")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        return cls(bucket, prefix, endpoint_url=endpoint)

    def _check_bucket(self) -> None:
        with self._translate():
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                # head_bucket has no body, so a missing bucket is a bare 404.
                if _code(exc) in ("404", "NoSuchBucket"):
                    raise self._no_bucket() from None
                raise

    def _no_bucket(self) -> PfsError:
        return PfsError(
            f"bucket '{self.bucket}' does not exist at {self.endpoint}; "
            f"create it first (aws s3 mb s3://{self.bucket})"
        )

    @contextmanager
    def _translate(self, key: str = "") -> Iterator[None]:
        """Turn botocore failures into the PfsError kinds callers handle."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING_CODES:
                raise ObjectMissing(key) from None
            if code == "NoSuchBucket":
                raise self._no_bucket() from None
            if code in _AUTH_CODES:
                raise Unauthorized(
                    f"access to s3://{self.bucket} at {self.endpoint} denied ({code}); "
                    "check the AWS credentials"
                ) from None
            if code in _FULL_CODES:
                raise NoSpace(f"S3 endpoint {self.endpoint} is out of space ({code})") from None
            message = exc.response.get("Error", {}).get("Message", "")
            where = f"s3://{self.bucket}/{self._key(key)}" if key else f"s3://{self.bucket}"
            raise PfsError(
                f"S3 request for {where} at {self.endpoint} failed: {code} {message}".rstrip()
            ) from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise Unreachable(f"S3 endpoint {self.endpoint} is unreachable: {exc}") from None
        except NoCredentialsError:
            raise Unauthorized(
                f"no AWS credentials found for {self.endpoint}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or configure a profile"
            ) from None

    def _key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise PfsError(f"invalid object key '{key}'")
        return f"{self.prefix}/{key}" if self.prefix else key

    def upload_stream(self, key: str, pieces: Iterable[bytes]) -> None:
        """Upload an object of any size from a stream of pieces (multipart when big)."""
        with self._translate(key):
            self._client.upload_fileobj(_PieceReader(pieces), self.bucket, self._key(key))

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        # botocore takes bytes/bytearray/file objects but not memoryviews.
        body = bytes(data) if isinstance(data, memoryview) else data
        with self._translate(key):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)

    def get(self, key: str) -> bytes:
        with self._translate(key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise InvalidArgument(f"invalid range offset={offset} length={length}")
        if length == 0:
            # No valid Range header means "zero bytes", but a missing key must
            # still raise, as it does for the other stores.
            self.size(key)
            return b""
        with self._translate(key):
            try:
                response = self._client.get_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            except ClientError as exc:
                # S3 answers 416 InvalidRange for a range starting at or past
                # the end; the other stores return b"" for it.
                if _code(exc) == "InvalidRange":
                    return b""
                raise
            return response["Body"].read()

    def size(self, key: str) -> int:
        with self._translate(key):
            response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return int(response["ContentLength"])

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too, so this is idempotent as is.
        with self._translate(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        with self._translate():
            # S3 returns keys in UTF-8 byte order, which is Python's str
            # order, and stripping a common prefix keeps it: stream, don't sort.
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", ()):
                    yield item["Key"][len(base) :]

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def close(self) -> None:
        self._client.close()


class _PieceReader(io.RawIOBase):
    """A read-only file over an iterator of byte pieces (for upload_fileobj)."""

    def __init__(self, pieces: Iterable[bytes]):
        self._it = iter(pieces)
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            piece = next(self._it, None)
            if piece is None:
                return 0
            self._buf = memoryview(piece)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
