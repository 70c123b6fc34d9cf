"""Check Kubernetes objects before anything is applied or played.

Two layers: the Kubernetes OpenAPI schemas (``kubernetes-validate``, strict:
an unknown field is an error, as ``kubectl apply --validate=strict`` says),
then the rules those schemas cannot express, which a real API server would
refuse at admission (names, labels, mount propagation, ports).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

KUBE_VERSION = "1.32.0"  # the API version the objects are written for (and checked against)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Kinds whose names must be DNS labels (they become host names or DNS records); the rest are subdomains.
_LABEL_NAMED = {"Service", "Namespace"}


def where(obj: dict[str, Any]) -> str:
    """``Kind/name``, as kubectl names an object."""
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def schema_errors(obj: dict[str, Any], version: str = KUBE_VERSION) -> list[str]:
    """What the Kubernetes schema for ``obj``'s kind finds wrong with it (strict)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(top)"
        return [f"{where(obj)}: {path}: {exc.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        return [f"{where(obj)}: no schema for it in Kubernetes {version}: {exc}"]
    return []


def rule_errors(obj: dict[str, Any]) -> list[str]:
    """What the API server would refuse that the schemas let through."""
    errors: list[str] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    name_rule = _DNS_LABEL if obj.get("kind") in _LABEL_NAMED else _DNS_SUBDOMAIN
    limit = 63 if obj.get("kind") in _LABEL_NAMED else 253
    if not name or len(name) > limit or not name_rule.match(name):
        errors.append(f"{where(obj)}: metadata.name: '{name}' is not a valid name "
                      f"(lower-case letters, digits and '-', at most {limit} characters)")
    for path, labels in _label_sets(obj):
        for key, value in (labels or {}).items():
            short = key.rsplit("/", 1)[-1]
            if not _LABEL_NAME.match(short) or len(short) > 63:
                errors.append(f"{where(obj)}: {path}: label key '{key}' is not valid")
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                errors.append(f"{where(obj)}: {path}.{key}: label value '{value}' is not valid "
                              "(at most 63 letters, digits, '-', '_' or '.')")
    for path, pod in _pod_specs(obj):
        errors += [f"{where(obj)}: {path}.{e}" for e in pod_errors(pod)]
    return errors


def pod_errors(pod: dict[str, Any]) -> list[str]:
    """Rules of a pod spec the schema misses (paths relative to the pod spec)."""
    errors: list[str] = []
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(group) or []):
            at = f"{group}[{i}]"
            if c.get("name") in names:
                errors.append(f"{at}.name: '{c.get('name')}' is used by another container of the pod")
            names.add(c.get("name"))
            if not _DNS_LABEL.match(c.get("name") or ""):
                errors.append(f"{at}.name: '{c.get('name')}' is not a DNS label")
            privileged = bool((c.get("securityContext") or {}).get("privileged"))
            for j, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") not in volumes:
                    errors.append(f"{at}.volumeMounts[{j}].name: no volume '{m.get('name')}' in the pod")
                if m.get("mountPropagation") == "Bidirectional" and not privileged:
                    errors.append(f"{at}.volumeMounts[{j}].mountPropagation: Bidirectional needs a "
                                  "privileged container (securityContext.privileged: true)")
            for j, p in enumerate(c.get("ports") or []):
                for key in ("containerPort", "hostPort"):
                    if key in p and not 1 <= int(p[key]) <= 65535:
                        errors.append(f"{at}.ports[{j}].{key}: {p[key]} is not a port (1-65535)")
            for j, e in enumerate(c.get("env") or []):
                if "value" in e and "valueFrom" in e:
                    errors.append(f"{at}.env[{j}]: value and valueFrom are exclusive")
    return errors


def _label_sets(obj: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    yield "metadata.labels", (obj.get("metadata") or {}).get("labels") or {}
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        yield "spec.template.metadata.labels", (template.get("metadata") or {}).get("labels") or {}


def _pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    if obj.get("kind") == "Pod":
        yield "spec", obj.get("spec") or {}
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        yield "spec.template.spec", template.get("spec") or {}


def validate(objects: Iterable[dict[str, Any]], version: str = KUBE_VERSION) -> list[str]:
    """Every error in ``objects`` (schema, then rules), each naming its object and field; [] if valid."""
    errors: list[str] = []
    for obj in objects:
        if obj.get("kind") == "List":
            errors += validate(obj.get("items") or [], version)
            continue
        errors += schema_errors(obj, version) + rule_errors(obj)
    return errors
