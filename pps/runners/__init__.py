"""Runners: start and stop a pipeline's shim workers (pps/WORKERS.md).

A runner only manages processes; the scheduler decides how many workers a
pipeline has (``ensure``) and hears from the runner when one dies
(``on_exit``). ``local``: workers as processes on this machine.
"""

from pps.runners.local import LocalRunner

__all__ = ["LocalRunner"]
