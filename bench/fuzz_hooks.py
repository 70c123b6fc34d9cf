"""Schemathesis hooks for fuzzing mountd's API (``SCHEMATHESIS_HOOKS=bench.fuzz_hooks``).

Used by ``bench/fuzz_api.py`` and ``tests/test_api_fuzz.py``:
- ``POST /v1/workers/logs`` takes NDJSON, a media type schemathesis cannot
  write by itself: each generated item becomes one line.
- ``GET /v1/logs?follow=true`` streams until its pipeline is deleted (like
  ``tail -f``), so it would only ever end in a client timeout: not generated;
  nor ``GET /v1/events`` without ``follow=false`` (a live stream).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

_TRUE = {"1", "on", "t", "true", "y", "yes"}  # what the API reads as true (pydantic's bool)
_FALSE = {"0", "off", "f", "false", "n", "no"}


@schemathesis.serializer("application/x-ndjson")
def ndjson(_ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@schemathesis.hook
def filter_case(_ctx: Any, case: Any) -> bool:
    """Every phase passes its cases through here (the per-part hooks miss the coverage phase)."""
    query = case.query or {}
    follow = str(query.get("follow", "")).strip().lower()
    if case.path == "/v1/events":  # follows unless told not to (a live stream never ends by itself)
        return follow in _FALSE
    return follow not in _TRUE
