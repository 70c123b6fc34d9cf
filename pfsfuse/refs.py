"""Commit references, parsed without touching storage.

A reference is one of:
  - a commit id, or a unique prefix of one (at least 4 hex digits),
  - a branch name (its head),
  - ``branch/N``: the N-th commit made on that branch, from 0 (the 1.x docs' ``master/0``),
followed by any number of ``^`` (parent) or ``~N`` (N-th ancestor) suffixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pfsfuse.errors import InvalidArgument
from pfsfuse.names import CONTROL, escape

_SUFFIX = re.compile(r"(\^+|~\d*)$")
_HEX = re.compile(r"[0-9a-f]{4,32}")
HEX_PREFIX = _HEX  # what may name a commit by its id or a prefix of it
MAX_NUMBER = (1 << 63) - 1  # commit numbers are SQLite integers


@dataclass(frozen=True)
class Ref:
    base: str  # branch name, commit id or id prefix
    seq: int | None = None  # set for 'branch/N'
    back: int = 0  # how many first-parent steps back from the base

    @property
    def maybe_id(self) -> bool:
        return self.seq is None and bool(_HEX.fullmatch(self.base))


def parse_ref(text: str) -> Ref:
    if not text:
        raise InvalidArgument("empty commit reference")
    if CONTROL.search(text):
        raise InvalidArgument(f"invalid commit reference '{escape(text)}': it holds control characters")
    back = 0
    rest = text
    while True:
        m = _SUFFIX.search(rest)
        if not m:
            break
        token = m.group(1)
        if token.startswith("^"):
            back += len(token)
        else:
            back += int(token[1:]) if len(token) > 1 else 1
        if back > MAX_NUMBER:
            raise InvalidArgument(f"invalid commit reference '{text}': {back} steps back is out of range")
        rest = rest[: m.start()]
    if not rest:
        raise InvalidArgument(f"invalid commit reference '{text}'")
    base, slash, seq = rest.partition("/")
    if slash:
        if not (seq.isascii() and seq.isdigit()):
            raise InvalidArgument(
                f"invalid commit reference '{text}': expected BRANCH/N with N a number"
            )
        if int(seq) > MAX_NUMBER:
            raise InvalidArgument(f"invalid commit reference '{text}': commit number {seq} is out of range")
        return Ref(base=base, seq=int(seq), back=back)
    return Ref(base=base, back=back)
