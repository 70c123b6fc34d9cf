"""The task a worker receives (pps/WORKERS.md, "The task"): the shared wire
module ``pps.wire``, which the scheduler builds tasks with. Re-exported here so
that the shim's modules keep one local name for it.
"""

from pps.wire import (
    KINDS,
    WIRE,
    Dir,
    FileSpec,
    Output,
    Secret,
    Task,
    TaskError,
    Transform,
    Unit,
    clean_name,
    clean_rel,
)

__all__ = ["KINDS", "WIRE", "Dir", "FileSpec", "Output", "Secret", "Task", "TaskError", "Transform", "Unit",
           "clean_name", "clean_rel"]
