"""`pachctl debug datum JOB DATUM` (also `debug-datum`): reproduce one datum here.

It lays the datum's ``/pfs`` out in a local directory as the worker showed it
(shim/materialize.py: ``/pfs/<input>/<path>`` for each file of the datum,
``/pfs/out`` empty, or for 1.x specs ``/pfs/prev`` = the previous output
commit and ``/pfs/out`` a copy of it,
secrets whose ``mount_path`` is under /pfs), builds the environment the
worker gives user code (shim/execute.py ``build_env``: the job's env, the
datum's ``<input>``/``<input>_COMMIT``, ``transform.env``, secrets' env vars),
and runs the transform's cmd with its stdin where ``/pfs`` is that
directory: a private mount namespace (``unshare --mount``) with the
directory bound onto /pfs, so paths in the user's code work unchanged and
nothing outside this process sees the bind. ``--docker`` runs it in the
pipeline's image instead, the directory mounted at /pfs. Secrets' values
stay ``<redacted>`` unless ``--show-secrets``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from mountd.models import errors
from pachctl.cli.common import add, client

REDACTED = "<redacted>"
DEFAULT_CWD = "/"  # the local executor's default working dir (shim/execute.py)
ANON_HOME = "/tmp"  # HOME of user code run as the worker's anonymous user


@dataclass
class Leaf:
    name: str
    repo: str
    glob: str = "/"
    empty_files: bool = False


@dataclass
class Plan:
    """What the worker showed one datum: files to fetch and the environment."""

    files: list[tuple[str, str, str, str]] = field(default_factory=list)  # (dest rel to pfs, repo, commit, path)
    empty: list[str] = field(default_factory=list)  # files present but empty (empty_files inputs)
    dirs: list[str] = field(default_factory=list)  # dirs rel to pfs (inputs, out, prev)
    prev: tuple[str, str] | None = None  # (repo, commit) laid out at /pfs/prev
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # var -> (secret, key)
    secret_files: list[tuple[str, str]] = field(default_factory=list)  # (mount_path, secret)
    cmd: list[str] = field(default_factory=list)
    stdin: bytes = b""
    cwd: str = DEFAULT_CWD
    image: str | None = None
    accept: tuple[int, ...] = (0,)  # exit codes the worker counts as success


def leaves(node: object) -> Iterator[Leaf]:
    """The pfs/cron/git leaves of a normalized input tree, with their names and globs."""
    if isinstance(node, list):
        for n in node:
            yield from leaves(n)
    elif isinstance(node, dict):
        for kind in ("pfs", "cron", "git"):
            leaf = node.get(kind)
            if isinstance(leaf, dict):
                name = str(leaf.get("name") or leaf.get("repo") or "")
                yield Leaf(name, str(leaf.get("repo") or name), str(leaf.get("glob") or "/"),
                           bool(leaf.get("empty_files")))
        for kind in ("cross", "union", "join", "group"):
            if kind in node:
                yield from leaves(node[kind])


def matched_path(glob: str, paths: list[str]) -> str:
    """The path the glob matched, from the files it brought: as many leading
    components as the glob has (``/*`` matching ``/d`` brings ``/d/x``, ``/d/y``)."""
    parts = [p for p in glob.strip("/").split("/") if p]
    if not parts or not paths:
        return "/"
    if "**" in glob:  # any depth: the deepest directory the files share
        return os.path.commonpath(paths) if len(paths) > 1 else paths[0]
    return "/" + "/".join(paths[-1].strip("/").split("/")[: len(parts)])


def env_key(repo: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in repo.upper())


def plan(spec: dict, job, datum, prev: tuple[str, str] | None) -> Plan:
    """The worker's view of ``datum`` (a pure function of the API's answers)."""
    t = spec.get("transform") or {}
    generation = int(spec.get("generation") or 2)
    by_name = {leaf.name: leaf for leaf in leaves(spec.get("input"))}
    p = Plan(cmd=[str(c) for c in t.get("cmd") or []], cwd=str(t.get("working_dir") or DEFAULT_CWD),
             image=t.get("image") or None, accept=(0, *[int(x) for x in t.get("accept_return_code") or []]))
    stdin = [str(x) for x in t.get("stdin") or []]
    p.stdin = ("\n".join(stdin) + "\n").encode() if stdin else b""
    # The job's env (pps/scheduler/running.py), then the datum's, transform.env, secrets.
    p.env = {"PACH_JOB_ID": job.id, "PACH_OUTPUT_COMMIT_ID": job.output_commit.commit if job.output_commit else ""}
    for ic in job.input_commits:
        p.env[f"PACH_{env_key(ic.repo)}_COMMIT_ID"] = ic.commit
    per_input: dict[str, list] = {}
    for f in datum.files:
        per_input.setdefault(f.input, []).append(f)
    for name in sorted(per_input):
        files = per_input[name]
        leaf = by_name.get(name, Leaf(name, files[0].repo))
        p.dirs.append(name)
        for f in files:
            dest = f"{name}/{f.path.lstrip('/')}"
            if leaf.empty_files:
                p.empty.append(dest)
            else:
                p.files.append((dest, f.repo, f.commit, f.path))
        if generation == 1:
            p.env[name] = f"/pfs/{name}"
        else:
            path = matched_path(leaf.glob, [f.path for f in files])
            p.env[name] = f"/pfs/{name}" if path in ("", "/") else f"/pfs/{name}{path}"
        p.env[f"{name}_COMMIT"] = files[0].commit
    p.dirs.append("out")
    if generation == 1 and prev is not None:
        p.prev = prev
        p.dirs.append("prev")
    p.env.update({str(k): str(v) for k, v in (t.get("env") or {}).items()})
    for s in t.get("secrets") or []:
        if s.get("env_var"):
            p.secret_env[s["env_var"]] = (s["name"], s.get("key") or "")
        if s.get("mount_path"):
            p.secret_files.append((s["mount_path"], s["name"]))
    return p


# -- laying it out --------------------------------------------------------------------


def _write(c, dest: str, repo: str, commit: str, path: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as out:
        for chunk in c.get_file(repo, commit, path):
            out.write(chunk)


def lay_out(c, p: Plan, root: str, show_secrets: bool) -> dict[str, str]:
    """Fetch the files under ``root``/pfs; returns the full environment for user code."""
    pfs = os.path.join(root, "pfs")
    for d in p.dirs:
        os.makedirs(os.path.join(pfs, d), exist_ok=True)
    for dest, repo, commit, path in p.files:
        _write(c, os.path.join(pfs, dest), repo, commit, path)
    for dest in p.empty:
        os.makedirs(os.path.dirname(os.path.join(pfs, dest)), exist_ok=True)
        open(os.path.join(pfs, dest), "wb").close()
    if p.prev is not None:
        repo, commit = p.prev
        for info in c.glob_file(repo, commit, "/**"):
            target = os.path.join(pfs, "prev", info.path.lstrip("/"))
            if info.type == "dir":
                os.makedirs(target, exist_ok=True)
            else:
                _write(c, target, repo, commit, info.path)
        # A 1.x worker starts /pfs/out as a copy of /pfs/prev (shim/materialize.py start_out).
        shutil.copytree(os.path.join(pfs, "prev"), os.path.join(pfs, "out"), symlinks=True,
                        copy_function=shutil.copyfile, dirs_exist_ok=True)
    values: dict[str, dict[str, str]] = {}

    def secret(name: str) -> dict[str, str]:
        if name not in values:
            values[name] = c.inspect_secret(name) if show_secrets else {}
        return values[name]

    env = dict(p.env)
    for var, (name, key) in p.secret_env.items():
        env[var] = secret(name).get(key, REDACTED) if show_secrets else REDACTED
    for mount_path, name in p.secret_files:
        if mount_path == "/pfs" or mount_path.startswith("/pfs/"):
            target = os.path.join(pfs, mount_path[len("/pfs/"):])
            os.makedirs(target, mode=0o700, exist_ok=True)
            data = secret(name) if show_secrets else {}
            keys = data or {"<keys>": ""}  # without --show-secrets the keys are not fetched either
            for key, value in keys.items():
                with open(os.path.join(target, key), "w") as f:
                    f.write(value if show_secrets else REDACTED)
    return env


# -- running it ----------------------------------------------------------------------


def local_argv(pfs: str, cwd: str, cmd: list[str]) -> list[str] | None:
    """``cmd`` in a private mount namespace with ``pfs`` bound onto /pfs; None when
    that cannot be done here (no ``unshare``, or no /pfs to bind onto and no root to make one)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    if not os.path.isdir("/pfs"):
        if os.geteuid() != 0:
            return None
        os.makedirs("/pfs", mode=0o755, exist_ok=True)  # an empty mount point, as workers make it
    ns = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        ns[1:1] = ["--user", "--map-root-user"]  # an unprivileged user namespace, where the kernel allows it
    script = 'mount --bind "$0" /pfs && cd "$1" && shift && exec "$@"'
    return [*ns, "sh", "-c", script, pfs, cwd, *cmd]


def docker_argv(pfs: str, p: Plan, env: dict[str, str], interactive: bool) -> list[str]:
    argv = ["docker", "run", "--rm", "-i"] + (["-t"] if interactive else [])
    argv += ["-v", f"{pfs}:/pfs"]
    if p.cwd != DEFAULT_CWD:
        argv += ["-w", p.cwd]
    for k, v in env.items():
        argv += ["-e", f"{k}={v}"]
    return argv + [str(p.image)]


def _manual(root: str, p: Plan, env: dict[str, str]) -> str:
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    cmd = shlex.join(p.cmd)
    return (f"to run it by hand, as root:\n  mkdir -p /pfs && unshare --mount --propagation private "
            f"sh -c 'mount --bind {root}/pfs /pfs && cd {p.cwd} && env {exports} {cmd}'"
            + (f" < {root}/stdin" if p.stdin else ""))


def debug_datum(args) -> int:
    c = client()
    job = c.inspect_job(args.job)
    datum = c.inspect_datum(job.id, args.datum)
    pipeline = c.inspect_pipeline(job.pipeline)
    spec = pipeline.spec
    if int(spec.get("generation") or 2) == 1 and job.output_commit is not None:
        parent = c.inspect_commit(job.output_commit.repo, job.output_commit.commit).parent
        prev = (job.output_commit.repo, parent) if parent else None
    else:
        prev = None
    p = plan(spec, job, datum, prev)
    if not p.cmd:
        raise errors.InvalidArgument(f"pipeline '{job.pipeline}' has no transform.cmd to run")
    made = args.dir is None
    root = tempfile.mkdtemp(prefix=f"pachy-datum-{datum.id[:12]}-") if made else os.path.abspath(args.dir)
    if not made:
        if os.path.exists(root) and os.listdir(root):
            raise errors.InvalidArgument(f"{root} is not empty; name a new or empty directory with --dir")
        os.makedirs(root, exist_ok=True)
    try:
        env = lay_out(c, p, root, args.show_secrets)
        if p.stdin:
            with open(os.path.join(root, "stdin"), "wb") as f:
                f.write(p.stdin)
        return _run(root, p, env, args)
    finally:
        if made and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            sys.stderr.write(f"the datum's files stay in {root}\n")


def _run(root: str, p: Plan, env: dict[str, str], args) -> int:
    pfs = os.path.join(root, "pfs")
    err = sys.stderr
    err.write(f"datum {args.datum} of job {args.job}: /pfs laid out in {pfs}\n")
    for k in sorted(env):
        err.write(f"  {k}={env[k]}\n")
    shell = [os.environ.get("SHELL") or "/bin/sh"]
    if args.docker:
        if not p.image:
            raise errors.InvalidArgument("the pipeline names no transform.image; run without --docker")
        if shutil.which("docker") is None:
            raise errors.InvalidArgument("--docker: no docker command here; install Docker or run without --docker")
        argv = docker_argv(pfs, p, env, args.shell and sys.stdin.isatty()) + (["sh"] if args.shell else p.cmd)
        run_env = dict(os.environ)
    else:
        argv = local_argv(pfs, p.cwd, shell if args.shell else p.cmd)
        if argv is None:
            err.write("error: cannot give this process a private /pfs here (needs unshare, and root or "
                      "an existing /pfs)\n" + _manual(root, p, env) + "\n")
            args.keep = True  # the manual way needs the files
            return 1
        base = {k: os.environ[k] for k in ("PATH", "LANG", "TERM") if k in os.environ}
        base["HOME"] = os.environ.get("HOME", ANON_HOME) if args.shell else ANON_HOME
        run_env = base | env
    if args.shell:
        err.write("opening a shell where /pfs is the datum's; exit it to clean up\n")
        return subprocess.run(argv, env=run_env).returncode
    err.write(f"running: {shlex.join(p.cmd)}\n")
    err.flush()
    rc = subprocess.run(argv, env=run_env, input=p.stdin).returncode
    err.write(f"exit code: {rc}" + ("" if rc in p.accept else " (the worker counts this datum as failed)") + "\n")
    return rc


def register(sub) -> None:
    p = add(sub, "debug-datum", "Reproduce one datum here: lay out its /pfs as the worker saw it and run "
            "the transform (or open a shell there).", debug_datum)
    p.add_argument("job", help="the job's ID (or a unique prefix)")
    p.add_argument("datum", help="the datum's ID (pachctl list datum JOB)")
    p.add_argument("--dir", help="lay /pfs out under this new or empty directory (kept); default a temporary one")
    p.add_argument("--shell", action="store_true", help="open $SHELL there instead of running the transform")
    p.add_argument("--show-secrets", action="store_true", help="give user code the secrets' real values "
                   "(default: <redacted>)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory afterwards")
    p.add_argument("--docker", action="store_true", help="run in the pipeline's image (docker run, the "
                   "directory mounted at /pfs) instead of here")
