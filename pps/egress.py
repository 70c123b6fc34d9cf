"""egress: after a job succeeds, copy its output commit to an object store URL.

``s3://bucket/prefix`` through boto3 (endpoint and credentials from the
standard AWS environment, or ``PACHY_S3_ENDPOINT``); a local path
(``file:///dir`` or ``/dir``) is written with temporary names and renames.
Files stream chunk by chunk: nothing is held whole in memory.
"""

from __future__ import annotations

import os

from pfsfuse.errors import InvalidArgument


def egress(pfs, repo: str, commit: str, url: str) -> int:
    """Copy every file of ``repo@commit`` under ``url``; returns the file count."""
    row = pfs.resolve(repo, commit)
    files = [(p, e) for p, e in pfs.walk_tree(pfs.root_of(row), "") if not e.is_dir]
    if url.startswith("s3://"):
        from pfsfuse.objstore.s3 import S3Store

        store = S3Store.from_url(url)
        for path, _e in files:
            _info, pieces = pfs.read_file(repo, commit, path)
            store.upload_stream(path, pieces)
        return len(files)
    target = url.removeprefix("file://")
    if not target.startswith("/"):
        raise InvalidArgument(f"egress URL '{url}' is neither s3://bucket/prefix nor an absolute path")
    for path, _e in files:
        dest = os.path.join(target, path)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.pachy-tmp"
        _info, pieces = pfs.read_file(repo, commit, path)
        with open(tmp, "wb") as f:
            for piece in pieces:
                f.write(piece)
        os.replace(tmp, dest)
    return len(files)
