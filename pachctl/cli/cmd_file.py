"""Files: put-file, get-file, list-file, inspect-file, delete-file, glob-file, diff-file."""

from __future__ import annotations

import contextlib
import difflib
import os
import posixpath
import re
import stat
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx

from mountd import wire
from mountd.models import errors
from pachctl.cli.common import add, client, json_flag
from pachctl.cli.output import Progress, ago, emit_json, human_size, kv, safe, table
from pachctl.client import PIECE

SMALL = 1 << 20


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def _source_name(name: str) -> str:
    """A -f/-i source as this command reads it: http(s) URLs as they are,
    ``file://`` URLs as the local path they name; any other scheme is refused
    (it would otherwise be looked up as a local file and be "not found")."""
    m = _SCHEME.match(name)
    if m is None or _is_url(name):
        return name
    scheme = m.group(1).lower()
    if scheme == "file":
        url = urllib.parse.urlsplit(name)
        if url.netloc not in ("", "localhost"):
            raise errors.InvalidArgument(f"cannot read '{name}': file:// URLs name files on this machine (file:///PATH)")
        return urllib.parse.unquote(url.path)
    raise errors.InvalidArgument(
        f"cannot read '{name}': the URL scheme '{scheme}' is not supported; "
        "use a local path, a file:// URL or an http(s):// URL"
    )


def _size(path: str) -> int | None:
    """A local file's size for the progress bar; None when it has none to
    tell (a FIFO, a character device, /proc files that say 0)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size else None


def fetch_url(url: str, progress=None) -> Iterator[bytes]:
    """Stream a URL's body; failures become SourceError before any byte is sent."""
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30) as resp:
            if resp.status_code >= 400:
                raise errors.SourceError(f"cannot fetch {url}: HTTP {resp.status_code}")
            for piece in resp.iter_bytes(PIECE):
                if progress:
                    progress(len(piece))
                yield piece
    except httpx.HTTPError as exc:
        raise errors.SourceError(f"cannot fetch {url}: {exc or type(exc).__name__}") from None


def _local_dest(name: str) -> str:
    """Where a local file lands when no path is given: its relative path, or
    its base name when given absolute."""
    if os.path.isabs(name):
        return os.path.basename(name)
    norm = posixpath.normpath(name.replace(os.sep, "/"))
    if norm.startswith("../") or norm == "..":
        return os.path.basename(os.path.abspath(name))
    return norm


def _url_dest(url: str) -> str:
    tail = httpx.URL(url).path.rstrip("/").rpartition("/")[2]
    if not tail:
        raise errors.InvalidArgument(f"cannot name a file after {url}; give a path")
    return tail


def _open_local(path: str):
    try:
        return open(path, "rb")  # noqa: SIM115 - caller closes
    except IsADirectoryError:
        raise errors.SourceError(f"'{path}' is a directory; use -r to put a directory") from None
    except OSError as exc:
        raise errors.SourceError(f"cannot read '{path}': {exc.strerror}") from None


def _file_records(local: str, dest: str, overwrite: bool, progress) -> Iterator[bytes]:
    with _open_local(local) as f:
        try:
            first = f.read(SMALL + 1)
        except OSError as exc:
            raise errors.SourceError(f"cannot read '{local}': {exc.strerror or exc}") from None
        if len(first) <= SMALL:
            progress(len(first))
            yield wire.encode_small_put(dest, first, overwrite)
            return

        def pieces() -> Iterator[bytes]:
            progress(len(first))
            yield first
            while True:
                try:
                    piece = f.read(PIECE)
                except OSError as exc:
                    raise errors.SourceError(f"cannot read '{local}': {exc.strerror or exc}") from None
                if not piece:
                    return
                progress(len(piece))
                yield piece

        yield from wire.encode_put(dest, pieces(), overwrite)


def _walk(directory: str) -> Iterator[str]:
    """Files under a directory in a stable order (sorted, depth first)."""
    entries = sorted(os.scandir(directory), key=lambda e: e.name)
    for e in entries:
        if e.is_dir(follow_symlinks=True):
            yield from _walk(e.path)
        elif e.is_file(follow_symlinks=True):
            yield e.path


def _plan(args) -> list[tuple[str, str]]:
    """(dest path, local path or URL) for each source named by -f / -i."""
    names: list[str] = list(args.file or [])
    if args.input:
        stream = sys.stdin if args.input == "-" else None
        try:
            with contextlib.ExitStack() as stack:
                if stream is None:
                    stream = stack.enter_context(open(_source_name(args.input)))
                names += [line.strip() for line in stream if line.strip()]
        except OSError as exc:
            raise errors.SourceError(f"cannot read '{args.input}': {exc.strerror}") from None
    names = [_source_name(n) for n in names]
    plan = []
    many = len(names) > 1 or args.input
    for name in names:
        if _is_url(name):
            dest = _url_dest(name)
            plan.append((posixpath.join(args.path, dest) if (args.path and many) else (args.path or dest), name))
        elif args.recursive and os.path.isdir(name):
            root = args.path or _local_dest(name)
            for local in _walk(name):
                rel = os.path.relpath(local, name).replace(os.sep, "/")
                plan.append((posixpath.join(root, rel) if root not in ("", ".") else rel, local))
        else:
            if not os.path.exists(name):
                raise errors.SourceError(f"cannot read '{name}': No such file or directory")
            if os.path.isdir(name):
                raise errors.SourceError(f"'{name}' is a directory; use -r to put a directory")
            dest = _local_dest(name)
            plan.append((posixpath.join(args.path, dest) if (args.path and many) else (args.path or dest), name))
    return plan


def _target(c, args) -> tuple[str, bool]:
    """The ref to write into, and whether the daemon makes a new commit on it
    (``-c``, or the 2.x form on a branch whose head is finished). A new commit
    is started, written and finished by the daemon in one step once the whole
    upload arrived: if this command is interrupted or killed (SIGINT, SIGTERM,
    SIGKILL), its source fails, or the disk fills, the branch stays as it was
    -- there is never an open commit left behind to block the next put."""
    if args.commit_flag:
        return args.commit, True
    if args.v2:
        # 2.x: putting into a branch whose head is finished makes a new commit.
        try:
            info = c.inspect_commit(args.repo, args.commit)
        except errors.NotFound:
            info = None
        if info is None or (info.finished is not None and info.branch == args.commit):
            return args.commit, True
    return args.commit, False


def _report(args, result) -> None:
    if args.verbose and result is not None and result.commit is not None:
        print(result.commit.ref, file=sys.stderr)


def put_file(args) -> int:
    c = client()
    if not args.file and not args.input:
        if not args.path:
            raise errors.InvalidArgument("put-file from stdin needs a PATH: pachctl put-file REPO COMMIT PATH")
        plan = None
    else:
        plan = _plan(args)
    target, new = _target(c, args)
    if plan is None:
        result = c.put_file(args.repo, target, args.path, sys.stdin.buffer, overwrite=args.overwrite, new_commit=new)
    elif len(plan) == 1 and not args.recursive and not args.input:
        dest, src = plan[0]
        total = None if _is_url(src) else _size(src)
        progress = Progress(total, dest)
        source = fetch_url(src) if _is_url(src) else Path(src)
        try:
            result = c.put_file(
                args.repo, target, dest, source, overwrite=args.overwrite, progress=progress, new_commit=new
            )
        finally:
            progress.close()
    else:
        total = sum(_size(s) or 0 for _, s in plan if not _is_url(s))
        progress = Progress(total, f"{len(plan)} files")

        def records() -> Iterator[bytes]:
            for dest, src in plan:
                if _is_url(src):
                    yield from wire.encode_put(dest, fetch_url(src, progress), args.overwrite)
                else:
                    yield from _file_records(src, dest, args.overwrite, progress)

        try:
            result = c.put_files(args.repo, target, records(), new_commit=new)
        finally:
            progress.close()
    _report(args, result)
    if args.verbose:
        print(f"put {result.files} file(s), {human_size(result.bytes)}; stored {human_size(result.stored)} new", file=sys.stderr)
    return 0


def get_file(args) -> int:
    stream = client().get_file(args.repo, args.commit, args.path)
    if args.output:
        tmp = f"{args.output}.pachy-partial"
        try:
            with open(tmp, "wb") as f:
                for piece in stream:
                    f.write(piece)
            os.replace(tmp, args.output)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return 0
    out = sys.stdout.buffer
    for piece in stream:
        out.write(piece)
    out.flush()
    return 0


def _modified(mtime: float, now: float | None = None) -> str:
    return ago(mtime, now) if mtime else "-"  # the root has no time of its own


def _print_files(args, files) -> int:
    if args.json:
        emit_json(files)
    else:
        now = time.time()
        table(
            ["NAME", "TYPE", "MODIFIED", "LAST_COMMIT_MODIFIED", "SIZE"],  # as the 1.x seeds
            [(f.path, f.type, _modified(f.mtime, now), f.last_commit or "-", human_size(f.size)) for f in files],
        )
    return 0


def list_file(args) -> int:
    return _print_files(args, client().list_file(args.repo, args.commit, args.path or "/"))


def glob_file(args) -> int:
    return _print_files(args, client().glob_file(args.repo, args.commit, args.pattern))


def inspect_file(args) -> int:
    f = client().inspect_file(args.repo, args.commit, args.path)
    if args.json:
        emit_json(f)
        return 0
    kv([("Path", f.path), ("Type", f.type), ("Modified", _modified(f.mtime)),
        ("Last commit modified", f.last_commit or "-"), ("Size", human_size(f.size)), ("Chunks", f.chunks)])
    return 0


def delete_file(args) -> int:
    c = client()
    target, new = _target(c, args)
    _report(args, c.delete_file(args.repo, target, args.path, new_commit=new))
    return 0


def diff_file(args) -> int:
    c = client()
    changes = c.diff_file(args.repo, args.commit, args.old)
    if args.path:
        prefix = "/" + args.path.strip("/")
        changes = [d for d in changes if d.path == prefix or d.path.startswith(prefix + "/")]
    if args.json:
        emit_json(changes)
        return 0
    old_ref = args.old or f"{args.commit}^"
    for d in changes:
        mark = {"added": "A", "deleted": "D", "modified": "M"}[d.status]
        if not args.patch:
            print(f"{mark}  {safe(d.path)}")
            continue
        old = _text(c, args.repo, old_ref, d.path) if d.status != "added" else ""
        new = _text(c, args.repo, args.commit, d.path) if d.status != "deleted" else ""
        if old is None or new is None:
            print(f"Binary or large file {safe(d.path)} {d.status}")
            continue
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"a{safe(d.path)}", tofile=f"b{safe(d.path)}",
            )
        )
    return 0


def _text(c, repo: str, ref: str, path: str) -> str | None:
    info = c.inspect_file(repo, ref, path)
    if info.size > SMALL:
        return None
    try:
        return c.read_file(repo, ref, path).decode()
    except UnicodeDecodeError:
        return None


def register(sub) -> None:
    p = add(sub, "put-file", "Put a file into the filesystem (appends unless -o).", put_file)
    p.add_argument("repo")
    p.add_argument("commit", help="an open commit, or a branch with -c")
    p.add_argument("path", nargs="?", help="where the file goes in the commit")
    p.add_argument("-f", "--file", action="append", help="a local file, a directory (with -r) or an http(s) URL")
    p.add_argument("-i", "--input", help="a file listing paths or URLs, one per line ('-' for stdin)")
    p.add_argument("-r", "--recursive", action="store_true", help="put directories recursively")
    p.add_argument("-c", "--commit", dest="commit_flag", action="store_true", help="start and finish a commit around the put")
    p.add_argument("-o", "--overwrite", action="store_true", help="replace the file instead of appending")
    p = add(sub, "get-file", "Return the contents of a file.", get_file)
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.add_argument("-o", "--output", help="write to this local file instead of stdout")
    p = add(sub, "list-file", "Return the files in a directory.", list_file)
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path", nargs="?", default="/")
    json_flag(p)
    p = add(sub, "glob-file", "Return the files that match a glob pattern.", glob_file)
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("pattern")
    json_flag(p)
    p = add(sub, "inspect-file", "Return info about a file.", inspect_file)
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    json_flag(p)
    p = add(sub, "delete-file", "Delete a file (or a directory and all below it).", delete_file)
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path")
    p.set_defaults(commit_flag=False)
    p = add(sub, "diff-file", "Show what a commit changed (relative to its parent or --old).", diff_file)
    p.add_argument("repo")
    p.add_argument("commit")
    p.add_argument("path", nargs="?", help="only changes at or below this path")
    p.add_argument("--old", help="compare against this commit instead of the parent")
    p.add_argument("-p", "--patch", action="store_true", help="show unified diffs of text files")
    json_flag(p)
