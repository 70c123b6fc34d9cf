"""``python -m shim --pipeline NAME --worker ID``: one pipeline worker.

The daemon's address and token come from ``--address``/``--token``, else
from the environment and config file exactly as for ``pachctl``
(``PACHY_ADDRESS``, ``PACHY_TOKEN``, ...). The worker's credential (and the
token) come best through ``--credential-fd N``: a pipe holding
``{"credential": ..., "token": ...}``, read and closed at start; else from
``PACHY_WORKER_CREDENTIAL``, removed from the environment once read; or, on
Kubernetes, derived from the pipeline version's key (``PACHY_WORKER_KEY``, removed
from the environment once read, or ``--key-file``). User
code never sees either (pps/WORKERS.md, "Isolation"). Exit codes: 0 stopped (signal,
or the pipeline is gone), 2 cannot work here (no /pfs mount point, no
mount namespaces, bad token), 3 gave up on an unreachable daemon.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys

from shim import sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shim", description="A pachy pipeline worker.")
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--worker", default=os.environ.get("PACHY_WORKER_ID"),
                        help="this worker's id, unique within the pipeline (default: $PACHY_WORKER_ID, e.g. a pod's "
                             "name from the downward API)")
    parser.add_argument("--address", default=None, help="unix:/path/to/mountd.sock or host:port")
    parser.add_argument("--token", default=None)
    parser.add_argument("--credential-fd", type=int, default=None,
                        help="read this worker's credential (and the daemon's token) from this descriptor")
    parser.add_argument("--key-file", default=None,
                        help="derive this worker's credential from the pipeline version's key in this file "
                             "(or $PACHY_WORKER_KEY: the Kubernetes runner's Secret, in the shim's container only)")
    parser.add_argument("--scratch", default=None, help="where units' inputs are laid out (default <home>/scratch/<worker>)")
    parser.add_argument("--fast-scratch", default=None,
                        help="a tmpfs directory for tasks of small inputs (default /dev/shm/pachy-<worker> when "
                             "/dev/shm is a tmpfs; 'none' to keep every task on --scratch)")
    parser.add_argument("--executor", choices=("local", "container"), default="local",
                        help="where user code runs: here in a sandbox, or in a container through its agent (--ctl)")
    parser.add_argument("--ctl", default=None, help="the container's control directory (--executor container)")
    parser.add_argument("--no-lazy", default=None, metavar="REASON",
                        help="copy lazy inputs (the runner says why its units could not see the FUSE view)")
    parser.add_argument("--wait", type=float, default=20.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker:
        parser.error("--worker is required (or PACHY_WORKER_ID in the environment)")

    # Files the shim lays out for user code are readable by it (it may run as
    # another uid); what must stay private is made 0700 explicitly.
    os.umask(0o022)
    try:
        credential, token = _credentials(args)
    except (OSError, ValueError) as exc:
        print(f"[{args.worker}] cannot start: cannot read the worker credential: {exc}", file=sys.stderr)
        return 2
    if args.executor == "container" and not args.ctl:
        print(f"[{args.worker}] cannot start: --executor container needs --ctl DIR", file=sys.stderr)
        return 2
    if os.geteuid() != 0 and args.executor == "local":
        # Before anything starts a thread: the kernel refuses a user namespace
        # to a multithreaded process.
        try:
            sandbox.enter_user_namespace()
        except (sandbox.SandboxError, OSError) as exc:
            print(f"[{args.worker}] cannot start: {exc}", file=sys.stderr)
            return 2

    from pachctl import config
    from shim.link import Link
    from shim.worker import Worker

    try:
        settings = config.resolve(args.address, token)
    except Exception as exc:  # a broken config file: say which, exit as a config problem
        print(f"[{args.worker}] cannot start: {exc}", file=sys.stderr)
        return 2
    scratch = args.scratch or os.path.join(settings.home, "scratch", args.worker)
    fast = args.fast_scratch or os.environ.get("PACHY_FAST_SCRATCH") or _default_fast(args.worker)
    fast = None if fast in ("", "none") else fast
    os.environ.pop("PACHY_TOKEN", None)  # user code gets no copy of it, even by mistake
    if args.executor == "container":
        from shim import execute
        from shim.container import ContainerExecutor

        sandbox.no_host_mountpoints()  # /pfs and secrets' mount points are the container's
        try:
            execute.use_executor(ContainerExecutor(args.ctl, roots=[p for p in (scratch, fast) if p]))
        except (OSError, ValueError) as exc:
            print(f"[{args.worker}] cannot start: cannot open the container's control directory: {exc}",
                  file=sys.stderr)
            return 2
    link = Link(settings.address, settings.token, settings.home, credential=credential)
    try:
        worker = Worker(link, args.pipeline, args.worker, scratch, wait=args.wait, own_process=True,
                        fast_scratch=fast)
        # In a container /pfs is a symlink the agent follows, so a lazy input is a symlink into
        # the FUSE view under the scratch (which the container sees through mount propagation).
        worker.lazy_links = args.executor == "container"
        worker.no_lazy = args.no_lazy
        return worker.run()
    finally:
        link.close()


def _credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(worker credential, token): from ``--credential-fd``, else the environment."""
    credential = os.environ.pop("PACHY_WORKER_CREDENTIAL", None)
    key = os.environ.pop("PACHY_WORKER_KEY", None)
    token = args.token
    if args.key_file:
        with open(args.key_file) as f:
            key = f.read()
    if key:
        credential = derive_credential(key.strip(), args.pipeline, args.worker)
    if args.credential_fd is not None:
        with os.fdopen(args.credential_fd, "rb") as f:
            given = json.loads(f.read(1 << 16) or b"{}")
        credential = given.get("credential") or credential
        token = token or given.get("token")
    return credential, token


def derive_credential(key: str, pipeline: str, worker: str) -> str:
    """A Kubernetes worker's credential: its pod name vouched for by the pipeline version's key
    (kube/credentials.py checks it; the two must agree)."""
    mac = hmac.new(key.encode(), f"{pipeline}:{worker}".encode(), hashlib.sha256).hexdigest()
    return f"k1:{pipeline}:{worker}:{mac}"


def _default_fast(worker: str) -> str | None:
    """/dev/shm/pachy-<uid>-<worker> if /dev/shm is a tmpfs we can write."""
    try:
        with open("/proc/self/mounts") as f:
            tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f)
    except OSError:
        return None
    if not tmpfs or not os.access("/dev/shm", os.W_OK):
        return None
    return os.path.join("/dev/shm", f"pachy-{os.getuid()}-{worker}")


if __name__ == "__main__":
    sys.exit(main())
