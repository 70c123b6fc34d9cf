"""Every failure PFS reports, each with the exit code and HTTP status it maps to.

The daemon turns these into JSON error bodies ``{"error": msg, "kind": kind}``;
the client turns them back into the same classes, so a script using the Python
client catches ``NotFound`` whether the store is local or remote.
"""

from __future__ import annotations

# Documented exit codes (README, "Exit codes"). Kept here so the CLI, the
# daemon and the client agree on one table.
EXIT_ERROR = 1  # anything not listed below
EXIT_USAGE = 2  # bad arguments, invalid names or paths
EXIT_NOT_FOUND = 3  # repo, branch, commit or file does not exist
EXIT_CONFLICT = 4  # exists already, commit finished/open, has dependents
EXIT_UNREACHABLE = 5  # no daemon answers at the address
EXIT_SOURCE = 6  # a local file or URL to read from could not be read
EXIT_NO_SPACE = 7  # the store's disk is full
EXIT_DAMAGED = 8  # fsck found missing or corrupt objects


class PfsError(Exception):
    """Base class: a message fit to print after ``error: ``."""

    kind = "error"
    exit_code = EXIT_ERROR
    http_status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(PfsError):
    kind = "invalid_argument"
    exit_code = EXIT_USAGE
    http_status = 400


class NotFound(PfsError):
    kind = "not_found"
    exit_code = EXIT_NOT_FOUND
    http_status = 404


class AlreadyExists(PfsError):
    kind = "already_exists"
    exit_code = EXIT_CONFLICT
    http_status = 409


class Conflict(PfsError):
    """The request is well formed but the current state forbids it."""

    kind = "conflict"
    exit_code = EXIT_CONFLICT
    http_status = 409


class SourceError(PfsError):
    """A local file or URL the caller asked us to read from failed."""

    kind = "source"
    exit_code = EXIT_SOURCE
    http_status = 400


class NoSpace(PfsError):
    kind = "no_space"
    exit_code = EXIT_NO_SPACE
    http_status = 507


class Damaged(PfsError):
    kind = "damaged"
    exit_code = EXIT_DAMAGED
    http_status = 500


class Unreachable(PfsError):
    kind = "unreachable"
    exit_code = EXIT_UNREACHABLE
    http_status = 503


class Unauthorized(PfsError):
    kind = "unauthorized"
    exit_code = EXIT_ERROR
    http_status = 401


class Forbidden(PfsError):
    """The caller is known but may not do this (a worker outside its pipeline,
    a mount asked for over TCP)."""

    kind = "forbidden"
    exit_code = EXIT_ERROR
    http_status = 403


class TimedOut(PfsError):
    """A wait the caller bounded (``flush --timeout``) ran out: not the server's
    failure, so not a 5xx."""

    kind = "timed_out"
    exit_code = EXIT_ERROR
    http_status = 408


ALL_KINDS: dict[str, type[PfsError]] = {
    cls.kind: cls
    for cls in (
        PfsError,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Conflict,
        SourceError,
        NoSpace,
        Damaged,
        Unreachable,
        Unauthorized,
        Forbidden,
        TimedOut,
    )
}


def from_kind(kind: str, message: str) -> PfsError:
    """Rebuild the exception a daemon reported, falling back to the base class."""
    return ALL_KINDS.get(kind, PfsError)(message)
