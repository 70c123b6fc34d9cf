"""Secrets: create-secret, list-secret, delete-secret. Values are never printed."""

from __future__ import annotations

import base64
import binascii
import json

from mountd.models import errors
from pachctl.cli.cmd_pipeline import read_source
from pachctl.cli.common import add, client, json_flag
from pachctl.cli.output import emit_json, table


def parse_secret(text: str) -> tuple[str, dict[str, str]]:
    """A Kubernetes Secret (JSON) as (name, plain-text values): ``data`` is
    base64-decoded, ``stringData`` taken as is and wins on a shared key (as
    Kubernetes does). Errors name keys, never values."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise errors.InvalidArgument(f"the secret is not JSON (line {getattr(exc, 'lineno', '?')})") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument('a secret is a JSON object: {"kind": "Secret", "metadata": {"name": ...}, "data": {...}}')
    if doc.get("kind", "Secret") != "Secret":
        raise errors.InvalidArgument(f"expected a Secret, got kind '{doc.get('kind')}'")
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgument("the secret has no metadata.name")
    values: dict[str, str] = {}
    data = doc.get("data") or {}
    strings = doc.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(strings, dict):
        raise errors.InvalidArgument(f"secret '{name}': data and stringData map keys to strings")
    for key, value in data.items():
        if not isinstance(value, str):
            raise errors.InvalidArgument(f"secret '{name}': data.{key} is not a base64 string")
        try:
            values[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise errors.InvalidArgument(f"secret '{name}': data.{key} is not base64 of UTF-8 text") from None
    for key, value in strings.items():
        if not isinstance(value, str):
            raise errors.InvalidArgument(f"secret '{name}': stringData.{key} is not a string")
        values[key] = value
    if not values:
        raise errors.InvalidArgument(f"secret '{name}' has no data")
    return name, values


def create_secret(args) -> int:
    name, values = parse_secret(read_source(args.file, "secret"))
    client().create_secret(name, values)
    return 0


def list_secret(args) -> int:
    names = client().list_secret()
    if args.json:
        emit_json(names)
        return 0
    table(["NAME"], [(n,) for n in names])
    return 0


def delete_secret(args) -> int:
    for name in args.secrets:
        client().delete_secret(name)
    return 0


def register(sub) -> None:
    p = add(sub, "create-secret", "Create (or replace) a secret from a Kubernetes Secret in JSON.", create_secret)
    p.add_argument("-f", "--file", metavar="FILE|URL|-", help="the Secret: a file, a URL, or - (default: stdin)")
    p = add(sub, "list-secret", "Return the names of all secrets (never their values).", list_secret)
    json_flag(p)
    p = add(sub, "delete-secret", "Delete a secret.", delete_secret)
    p.add_argument("secrets", nargs="+", metavar="NAME")
