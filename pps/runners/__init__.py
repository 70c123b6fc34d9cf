"""Runners: start and stop a pipeline's shim workers (pps/WORKERS.md).

A runner only manages processes; the scheduler decides how many workers a
pipeline has (``ensure``) and hears from the runner when one dies
(``on_exit``). ``local``: workers as processes on this machine; ``auto``
(``pps.runners.auto``): each pipeline on the first runner that owns its spec.
"""

from pps.runners.local import LocalRunner

__all__ = ["LocalRunner"]
