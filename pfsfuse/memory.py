"""The long-lived daemon's dealings with glibc's allocator (no-ops elsewhere).

A big plan or merge frees tens of MB at once; glibc keeps freed pages mapped,
and by default gives every thread that allocates an arena of its own (up to 8
per core), each keeping its own free pages. mountd runs a thread per blocking
request (trio's thread cache, a hundred under load), so both add up in RSS:
bench/mountd_scale.py, kube/README.md "Scale".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
    except OSError:  # not glibc
        return None


_LIBC = _libc()


def give_back_memory() -> None:
    """Hand the heap's free pages back to the system. glibc keeps what a big plan freed
    (tens of MB for an input of 100,000 files) mapped; the daemon lives long, so ask."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def limit_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` malloc arenas for the whole process (unless MALLOC_ARENA_MAX
    says otherwise): threads share them, and free memory is not kept once per thread.
    Called before the daemon starts its threads."""
    if _LIBC is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _LIBC.mallopt(M_ARENA_MAX, arenas)
