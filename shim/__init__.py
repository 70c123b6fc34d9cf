"""The worker side of PPS: one process per pipeline worker (pps/WORKERS.md).

It long-polls mountd for tasks, materializes each unit's inputs into a
scratch directory (``materialize``), runs the user's transform with that
directory at ``/pfs`` in a mount namespace of its own (``sandbox``,
``execute``), and streams back what the unit wrote to ``/pfs/out``
(``collect``, ``link``). The HTTP API is its only boundary, so the same
code runs under the local, Docker and Kubernetes runners.

    python -m shim --pipeline NAME --worker ID [--address unix:/path] [--scratch DIR]
"""
