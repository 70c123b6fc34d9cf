"""Kubernetes: the objects ``pachctl deploy`` makes, the Kubernetes runner's
pod builder and the runner itself (kube/README.md).

Objects are plain dicts built by small Python functions (no string
templates), checked by :mod:`kube.validate` against the Kubernetes schemas.
May import ``pps`` (pipeline and worker specs) and ``pfsfuse.errors``;
nothing in ``pfsfuse`` or ``pps`` imports this package statically (the
runner is loaded by name, as the Docker runner is, when ``--runner
kubernetes`` asks for it).
"""
