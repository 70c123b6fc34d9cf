"""Object stores: one small interface, a local directory, S3, and an in-memory twin."""

from __future__ import annotations

from pfsfuse.objstore.base import ObjectMissing, ObjectStore
from pfsfuse.objstore.local import LocalStore
from pfsfuse.objstore.memory import MemoryStore

__all__ = ["ObjectMissing", "ObjectStore", "LocalStore", "MemoryStore", "open_store"]


def open_store(url: str) -> ObjectStore:
    """Open a store from a URL: a directory path, ``file://DIR``, ``s3://BUCKET/PREFIX`` or ``memory://``.

    S3 settings beyond bucket and prefix come from the standard AWS chain
    (environment, ~/.aws, instance roles); ``AWS_ENDPOINT_URL`` or
    ``PACHY_S3_ENDPOINT`` point it at MinIO, Ceph or a test server.
    """
    if url.startswith("s3://"):
        from pfsfuse.objstore.s3 import S3Store

        return S3Store.from_url(url)
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalStore(url)
