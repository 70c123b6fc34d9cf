"""pachctl: the command line and the Python client of pachy."""

from pachctl.client import Client, errors

__all__ = ["Client", "errors"]
