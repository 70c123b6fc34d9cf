"""The two patch formats a pipeline spec may apply to its workers' pod spec.

``pod_spec`` is a JSON merge patch (RFC 7386) and ``pod_patch`` a JSON Patch
(RFC 6902); Pachyderm applies the merge patch first, then the JSON Patch, both
last, over everything it built. Both are small enough to carry here rather
than add a dependency. Pure: no I/O.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch that cannot apply to the document (the message names the operation)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    """RFC 6901: '/a/b~1c' -> ['a', 'b/c']."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"path '{path}' must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, path: str, *, adding: bool) -> int:
    if token == "-" and adding:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"path '{path}': '{token}' is not an array index")
    i = int(token)
    if i > len(container) or (i == len(container) and not adding):
        raise PatchError(f"path '{path}': index {i} is out of range")
    return i


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("the whole document cannot be the target here")
    node = doc
    for token in tokens[:-1]:
        node = _get(node, token, path)
    return node, tokens[-1]


def _get(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise PatchError(f"path '{path}': no member '{token}'")
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, path, adding=False)]
    raise PatchError(f"path '{path}': '{token}' is below a value that is neither object nor array")


def _resolve(doc: Any, path: str) -> Any:
    node = doc
    for token in _pointer(path):
        node = _get(node, token, path)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, path, adding=True), value)
    else:
        raise PatchError(f"path '{path}': the parent is neither object nor array")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"path '{path}': no member '{token}' to remove")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, path, adding=False))
    raise PatchError(f"path '{path}': the parent is neither object nor array")


def json_patch(doc: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test, in order, on a copy of ``doc``;
    PatchError (naming the operation) if one cannot apply."""
    doc = copy.deepcopy(doc)
    for n, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise PatchError(f"operation {n}: needs 'op' and a string 'path'")
        kind, path = op.get("op"), op["path"]
        try:
            if kind in ("add", "replace", "test") and "value" not in op:
                raise PatchError("needs 'value'")
            if kind == "add":
                doc = _add(doc, path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                doc, _ = _remove(doc, path)
            elif kind == "replace":
                if path == "":
                    doc = copy.deepcopy(op["value"])
                else:
                    _resolve(doc, path)  # must exist
                    doc, _ = _remove(doc, path)
                    doc = _add(doc, path, copy.deepcopy(op["value"]))
            elif kind in ("move", "copy"):
                source = op.get("from")
                if not isinstance(source, str):
                    raise PatchError("needs a string 'from'")
                if kind == "move":
                    if path.startswith(source + "/"):
                        raise PatchError(f"cannot move '{source}' into itself")
                    doc, value = _remove(doc, source)
                else:
                    value = copy.deepcopy(_resolve(doc, source))
                doc = _add(doc, path, value)
            elif kind == "test":
                if _resolve(doc, path) != op["value"]:
                    raise PatchError(f"test failed: the value at '{path}' differs")
            else:
                raise PatchError(f"unknown op '{kind}'")
        except PatchError as exc:
            raise PatchError(f"operation {n} ({kind} {path}): {exc}") from None
    return doc
