"""cProfile for every Python process started with this directory on PYTHONPATH and
PACHY_BENCH_PROFILE=DIR set (`python -m bench.pps --profile DIR`): the daemon, and the
shim workers it spawns (they inherit both). Every thread gets its own profiler
(trio's worker threads and the scheduler thread do the daemon's work); at exit
they are merged into DIR/<program>-<pid>.prof (program: mountd, or the worker id).
"""

import os

_DIR = os.environ.get("PACHY_BENCH_PROFILE")

if _DIR:
    import atexit
    import cProfile
    import sys
    import threading

    _profiles: list[cProfile.Profile] = []

    def _start(*_args) -> None:
        p = cProfile.Profile()
        _profiles.append(p)
        p.enable()  # replaces threading's python-level hook for this thread

    def _dump() -> None:
        import pstats

        argv = sys.argv
        prog = argv[argv.index("--worker") + 1] if "--worker" in argv else os.path.basename(os.path.dirname(argv[0]))
        merged = None
        for p in _profiles:
            try:
                merged = pstats.Stats(p) if merged is None else merged.add(p)
            except (TypeError, ValueError):  # a thread that never made a call
                pass
        if merged is not None:
            merged.dump_stats(os.path.join(_DIR, f"{prog}-{os.getpid()}.prof"))

    _start()
    threading.setprofile(_start)
    atexit.register(_dump)
