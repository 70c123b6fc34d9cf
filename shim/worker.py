"""The worker loop: poll a task, lay it out, run its units, upload, clean up.

One unit runs at a time per worker process (parallelism is more workers).
A task's results go up in one streamed request after its last unit, the
logs just before it. If the daemon goes away (a restart), every call is
retried with backoff for ``give_up`` seconds (``PACHY_SHIM_GIVE_UP``,
default 60); after that the worker exits non-zero and its runner decides.
SIGTERM/SIGINT stop it promptly: a running unit is killed, its task is
left unreported (the daemon hands it to another worker), scratch removed.

The worker is a child subreaper, so anything a unit daemonized away from
its process group is reparented here, and killed when the unit ends.

A spout or service task (``shim.longrun``) occupies the worker while the
daemon says it is current; it has no result. Then the worker asks for the
next task as after any other.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from pachctl.client import errors
from shim import collect, execute, longrun, sandbox
from shim.execute import Outcome
from shim.link import GiveUp, Link, encode_actions, encode_unit
from shim.logs import LogShipper
from shim.materialize import Lazy, MaterializeError, TaskDirs, materialize
from shim.task import Task, TaskError

if TYPE_CHECKING:  # imported when first needed: it loads pyfuse3
    from shim.lazyfs import LazyMount

T = TypeVar("T")
PR_SET_CHILD_SUBREAPER = 36
MARKER = ".pachy-worker-scratch"  # a scratch directory the worker may wipe
FAST_TASK_BYTES = 64 << 20  # inputs up to this go to the tmpfs scratch
FAST_HEADROOM = 1 << 30  # ...if it keeps this much free besides (outputs land there too)
EXIT_OK, EXIT_CONFIG, EXIT_GAVE_UP = 0, 2, 3


class Stop(BaseException):
    """SIGTERM/SIGINT: unwind from wherever the worker is."""


Result = tuple[str, Outcome, list[collect.Action]]


class Worker:
    def __init__(
        self,
        link: Link,
        pipeline: str,
        worker: str,
        scratch: str,
        *,
        give_up: float | None = None,
        wait: float = 20.0,
        own_process: bool = False,
        fast_scratch: str | None = None,
    ):
        """``own_process``: this worker is the whole process (``python -m shim``):
        it handles SIGTERM/SIGINT, and adopts and kills what units orphan."""
        self.link = link
        self.pipeline, self.worker = pipeline, worker
        self.scratch = scratch
        # Small tasks are laid out on a tmpfs: creating and removing a few files
        # per datum costs ~20x less there than on a disk (bench/pps.py).
        self.fast_scratch = fast_scratch
        self.give_up = give_up if give_up is not None else float(os.environ.get("PACHY_SHIM_GIVE_UP") or 60)
        self.wait = wait
        self.logs = LogShipper(link.post_logs, pipeline, worker)
        self.own_process = own_process
        self.stopping = False
        self._shielded = False
        self.lazy: LazyMount | None = None  # made by the first task with a lazy input
        # Why lazy inputs are copied on this worker (no FUSE here, or, set by its runner, its
        # units could not see the view); None: they are served by the view.
        self.no_lazy: str | None = None
        # A runner whose units see their directory without binds (an agent in a container
        # links /pfs to it) sets this: lazy inputs are then symlinks into the mount.
        self.lazy_links = False
        # The next task, when the daemon answered the last result with it (pps/WORKERS.md).
        self._then: dict | None = None

    # -- signals --------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if not self._shielded:
            raise Stop(signal.Signals(signum).name)

    def _say(self, message: str) -> None:
        print(f"[{self.worker}] {message}", file=sys.stderr, flush=True)

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        """Serve tasks until stopped; the process exit code."""
        self._shielded = True  # set-up is short: a signal during it stops the loop before it starts
        if self.own_process:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        try:
            sandbox.ensure_mountpoint()
            self._claim_scratch(self.scratch)
            if self.fast_scratch:
                try:
                    self._claim_scratch(self.fast_scratch)
                except OSError as exc:
                    self._say(f"not using {self.fast_scratch} for small tasks: {exc}")
                    self.fast_scratch = None
        except (sandbox.SandboxError, OSError) as exc:
            self._say(f"cannot start: {exc}")
            return EXIT_CONFIG
        # User code must not reach the daemon (its home, socket) or any scratch.
        client = getattr(self.link, "client", None)
        execute.set_anonymous_salt(getattr(self.link, "home", None) or "")
        sandbox.hide(p for p in (getattr(self.link, "home", None), getattr(client, "socket", None),
                                 self.scratch, self.fast_scratch) if p)
        if self.own_process:
            _become_subreaper()
        self.logs.start()
        self._say(f"serving pipeline {self.pipeline} from {self.link.where}")
        try:
            self._shielded = False
            while not self.stopping:
                raw, self._then = self._then, None  # the task that came with the last result, if any
                if raw is None:
                    raw = self._retry(lambda: self.link.next_task(self.pipeline, self.worker, self.wait))
                if raw is None:
                    continue
                try:
                    self.serve(raw)
                except (GiveUp, errors.Unauthorized):
                    raise
                except Exception as exc:  # a bug: fail the task rather than pass it from worker to worker
                    traceback.print_exc()
                    if raw.get("kind") in ("service", "spout"):
                        # no result to fail it with: say so, and do not take it back at once
                        self.logs.add(None, None, f"the worker failed on this {raw['kind']} task: {exc!r}", False)
                        self._pause(longrun.RESTART_MAX)
                    else:
                        self._fail_all(raw, f"the worker failed on this task: {exc!r}")
            self._say("stopped")
            return EXIT_OK
        except Stop:
            self._say("stopped")
            return EXIT_OK
        except GiveUp as exc:
            self._say(str(exc))
            return EXIT_GAVE_UP
        except errors.NotFound as exc:
            self._say(f"pipeline {self.pipeline} is gone ({exc}); exiting")
            return EXIT_OK
        except errors.Unauthorized as exc:
            self._say(f"the daemon refused this worker ({exc}); only workers its runner started, with the "
                      f"credential it gave them (and its PACHY_TOKEN over TCP), may serve")
            return EXIT_CONFIG
        finally:
            self._shielded = True
            self.logs.stop()
            if self.lazy is not None:
                self.lazy.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            if self.fast_scratch:
                shutil.rmtree(self.fast_scratch, ignore_errors=True)

    def _pause(self, seconds: float) -> None:
        """Sleep, cut short when the worker is told to stop."""
        end = time.monotonic() + seconds
        while not self.stopping and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, longrun.TICK))

    @staticmethod
    def _claim_scratch(scratch: str) -> None:
        """Start from an empty scratch directory, wiping only one a worker made."""
        if os.path.exists(os.path.join(scratch, MARKER)):
            from shim.lazyfs import detach_under

            detach_under(scratch)  # a killed predecessor's FUSE mount: rmtree cannot pass it
        if os.path.isdir(scratch) and os.listdir(scratch):
            if not os.path.exists(os.path.join(scratch, MARKER)):
                raise OSError(
                    f"scratch directory {scratch} is not empty and not a worker's; "
                    f"give --scratch an empty or new directory"
                )
            # What a killed predecessor left. Emptied, not removed: under Docker the
            # directory is bind-mounted into the worker's container, which sees this inode.
            for entry in os.scandir(scratch):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        os.makedirs(scratch, mode=0o700, exist_ok=True)
        open(os.path.join(scratch, MARKER), "w").close()

    def _root_for(self, task: Task, task_id: str, lazy: bool = False) -> str:
        """The tmpfs for a task of small inputs with room to spare, else the disk scratch
        (``lazy``: lazy inputs are not copied, so they do not count)."""
        base = self.scratch
        if self.fast_scratch and task.prev is None:
            size = sum(f.size for u in task.units for f in u.files if not (lazy and f.lazy))
            try:
                st = os.statvfs(self.fast_scratch)
                free = st.f_bavail * st.f_frsize
            except OSError:
                free = 0
            if size <= FAST_TASK_BYTES and free >= FAST_HEADROOM + 4 * size:
                base = self.fast_scratch
        return os.path.join(base, re.sub(r"[^A-Za-z0-9_.-]", "_", task_id) or "task")

    def _retry(self, call: Callable[[], T]) -> T:
        """``call()``, retried with backoff while the daemon is unreachable, up to ``give_up`` s."""
        first = None
        delay = 0.05
        while True:
            try:
                return call()
            except errors.Unreachable as exc:
                now = time.monotonic()
                if first is None:
                    first = now
                    self._say(f"daemon unreachable ({exc}); retrying for up to {self.give_up:g} s")
                left = first + self.give_up - now
                if left <= 0:
                    raise GiveUp(
                        f"gave up: the daemon at {self.link.where} was unreachable for {self.give_up:g} s; "
                        f"the runner starts workers again when it is back"
                    ) from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)

    # -- one task -------------------------------------------------------------

    def serve(self, raw: dict) -> None:
        """Run one task (the JSON the daemon sent) and upload its result."""
        task_id = str(raw.get("task_id") or "")
        try:
            task = Task.from_dict(raw)
        except (TaskError, ValueError, TypeError, KeyError) as exc:
            self._say(f"task {task_id}: cannot parse it: {exc}")
            if raw.get("kind") in ("service", "spout"):
                self.logs.add(None, None, f"the worker could not parse its {raw['kind']} task: {exc}", False)
                self._pause(longrun.RESTART_MAX)  # no result to report; do not take it back at once
                return
            self._fail_all(raw, f"the worker could not parse its task: {exc}")
            return
        if task.long_running:
            self._serve_long(task, self._root_for(task, task_id))
            return
        dirs: TaskDirs | None = None
        lazy = self._lazy_for(task)
        root = self._root_for(task, task_id, lazy is not None)

        def lay_out() -> TaskDirs:
            shutil.rmtree(root, ignore_errors=True)  # a try cut short by a daemon restart
            return materialize(task, root, self.link, lazy)

        try:
            try:
                dirs = self._retry(lay_out)
            except (MaterializeError, TaskError, sandbox.SandboxError) as exc:
                results = [(u.unit_id, _failed(str(exc)), []) for u in task.units]
            except errors.PfsError as exc:
                reason = f"cannot read the unit's inputs: {exc}"
                results = [(u.unit_id, _failed(reason), []) for u in task.units]
            else:
                results = [self._run(task, dirs, i) for i in range(len(task.units))]
            self._shielded = True  # the work is done: let the upload finish
            self._retry(self.logs.flush)
            self._upload(task.task_id, results)
        finally:
            self._shielded = False
            if lazy is not None and self.lazy is not None:
                self.lazy.clear()
            if dirs is not None:
                dirs.remove()
            else:
                shutil.rmtree(root, ignore_errors=True)
        if self.stopping:
            raise Stop("signal during upload")

    def _lazy_for(self, task: Task) -> Lazy | None:
        """The FUSE view for a task with lazy inputs, mounted on first use; None (lazy
        inputs copied, with a note) when there is none or FUSE is unavailable here."""
        if not any(f.lazy for u in task.units for f in u.files):
            return None
        if self.lazy is None and self.no_lazy is None:
            from shim.lazyfs import LazyMount, LazyUnavailable

            # User code of a root worker runs as another uid (shim.execute.anonymous_identity).
            allow_other = os.geteuid() == 0 and not sandbox.in_user_namespace()
            mount = LazyMount(self.link, self.scratch, allow_other=allow_other)
            try:
                mount.start()
            except LazyUnavailable as exc:
                self.no_lazy = str(exc)
                self._say(f"lazy inputs will be copied: {exc}")
            else:
                self.lazy = mount
                # Units' namespaces are copies of the PID namespace init's, made
                # before the mount: a new one sees it.
                sandbox.renew()
        if self.lazy is None or not self.lazy.alive:
            self.logs.add(task.job_id, None, f"input.pfs.lazy: no FUSE view on this worker "
                          f"({self.no_lazy or 'its FUSE loop stopped'}); the lazy inputs were copied", False)
            return None
        return Lazy(self.lazy.path, links=self.lazy_links)

    def _serve_long(self, task: Task, root: str) -> None:
        """A spout or service: kept while it is current, never answered with a result.

        Runs shielded: a SIGTERM only marks the worker stopping, and the task's
        loop notices within a tick and stops the user's process gracefully.
        """
        log = self.logs.bind(None, None)

        def lay_out() -> TaskDirs:
            def once() -> TaskDirs:
                shutil.rmtree(root, ignore_errors=True)  # a try cut short by a daemon restart
                return materialize(task, root, self.link)

            return self._retry(once)

        self._shielded = True
        try:
            why = longrun.LongRunning(
                task,
                lay_out,
                self.link,
                log,
                should_stop=lambda: self.stopping,
                give_up=self.give_up,
                client=self.link.client,
                after_exit=_reap_orphans if self.own_process else None,
            ).run()
            self._say(f"{task.kind} task {task.task_id}: {why}")
            try:
                self.logs.flush()
            except errors.PfsError:
                pass  # the shipper keeps them; a stopping worker sends them once more on its way out
        finally:
            shutil.rmtree(root, ignore_errors=True)
            self._shielded = False
        if self.stopping:
            raise Stop("signal during a long-running task")

    def _fail_all(self, raw: dict, reason: str) -> None:
        """Report every unit of a task failed (one the worker cannot handle)."""
        units = raw.get("units") if isinstance(raw.get("units"), list) else []
        ids = [str(u.get("unit_id", "")) for u in units if isinstance(u, dict)]
        self._upload(str(raw.get("task_id") or ""), [(uid, _failed(reason), []) for uid in ids])

    def _run(self, task: Task, dirs: TaskDirs, i: int) -> Result:
        unit, udir = task.units[i], dirs.units[i]
        log = self.logs.bind(task.job_id, unit.log_datum)
        try:
            who = execute.executor().resolve_user(task.transform.user, task.pipeline)
        except TaskError:
            who = None  # run_unit reports it as the unit's failure

        def prepare_try(n: int) -> None:
            if n:
                dirs.reset_out(udir)
            if dirs.prev is not None and who is not None:
                # 1.x: /pfs/out is measured against what it started with; handing it
                # to the user changes the files' ctime, so measure after that.
                execute.hand_over(dirs.binds(udir), who)
                udir.baseline = collect.snapshot(udir.out)

        counters = None
        if udir.lazy_inputs and self.lazy is not None:
            try:
                udir.view, counters = self.lazy.show(udir.lazy_files, udir.lazy_dirs)
            except ValueError as exc:
                log(f"cannot show the lazy inputs: {exc}", False)
                return unit.unit_id, _failed(f"cannot show the lazy inputs: {exc}"), []
        try:
            outcome = execute.run_unit(task, unit, dirs.binds(udir), log, prepare_try)
        finally:
            if self.own_process:
                _reap_orphans()
        if counters is not None:
            log(f"lazy inputs ({', '.join(udir.lazy_inputs)}): {counters.describe()}", False)
        actions: list[collect.Action] = []
        if outcome.state == "success":
            try:
                actions = collect.plan(dirs.view(udir), udir.baseline)
            except collect.CollectError as exc:
                outcome.state, outcome.reason = "failed", str(exc)
            except OSError as exc:
                outcome.state, outcome.reason = "failed", f"cannot read /pfs/out: {exc}"
            if outcome.state == "failed":
                log(outcome.reason, False)
        return unit.unit_id, outcome, actions

    def _upload(self, task_id: str, results: list[Result]) -> None:
        def records() -> Iterator[bytes]:
            for unit_id, outcome, actions in results:
                yield encode_unit(outcome.header(unit_id))
                if outcome.state == "success":
                    yield from encode_actions(actions)

        try:
            upload_and_next = getattr(self.link, "upload_result_and_next", None)
            if upload_and_next is not None and not self.stopping:
                _accepted, self._then = self._retry(lambda: upload_and_next(task_id, self.worker, records()))
            else:
                self._retry(lambda: self.link.upload_result(task_id, self.worker, records()))
        except errors.Unreachable:
            raise
        except errors.PfsError as exc:
            # The task was taken back (the job was killed, or the daemon
            # restarted and handed it out again): nothing to do but move on.
            self._say(f"task {task_id}: the daemon did not take the result: {exc}")
        except OSError as exc:
            self._say(f"task {task_id}: cannot read an output while uploading: {exc}")


def _failed(reason: str) -> Outcome:
    now = time.time()
    return Outcome("failed", reason, 0, now, now)


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _reap_orphans() -> None:
    """Kill and reap what a unit left behind outside its process group."""
    for _ in range(10):
        pids = [p for p in _children() if p not in sandbox.inits()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _children() -> list[int]:
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return pids
