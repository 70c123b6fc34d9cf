"""Small builders for Kubernetes objects as plain dicts, and checks of the
values users give for them (namespace, sizes, registry), each naming the flag
it came from so that a bad value is refused before anything reaches a cluster.
"""

from __future__ import annotations

import re
from typing import Any

from pfsfuse.errors import InvalidArgument

# Labels every object `pachctl deploy` makes carries: `undeploy` finds them by
# these, and `kubectl get all -l app.kubernetes.io/part-of=pachy` shows them.
PART_OF = {"app.kubernetes.io/part-of": "pachy", "app.kubernetes.io/managed-by": "pachctl"}
# The pod selector of the StatefulSet and the Service (never changes between
# versions: a StatefulSet's selector is immutable).
PACHD_SELECTOR = {"app": "pachd", "suite": "pachy"}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A Kubernetes quantity as users write sizes: 10Gi, 500Mi, 1.5Ti, 20G.
_SIZE = re.compile(r"^([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
# host[:port][/path...]: what goes before `/pachy:<version>` in an image name.
_REGISTRY = re.compile(
    r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*$"
)
_IMAGE = re.compile(
    r"^([A-Za-z0-9][-A-Za-z0-9.]*(:[0-9]{1,5})?/)?[a-z0-9]+([._/-]{1,2}[a-z0-9]+)*(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def meta(name: str, namespace: str | None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """An object's metadata: its name, namespace and pachy's labels."""
    m: dict[str, Any] = {"name": name}
    if namespace:
        m["namespace"] = namespace
    m["labels"] = {**PART_OF, **(labels or {})}
    return m


def env_value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def env_secret(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def env_field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


# -- checks of user input -----------------------------------------------------


def check_namespace(value: str, flag: str = "--namespace") -> str:
    if not value or len(value) > 63 or not _DNS_LABEL.match(value):
        raise InvalidArgument(
            f"{flag}: '{value}' is not a valid namespace (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


def check_name(value: str, flag: str) -> str:
    """A name Kubernetes accepts for a Secret, StorageClass, ... (DNS subdomain)."""
    if not value or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise InvalidArgument(f"{flag}: '{value}' is not a valid Kubernetes name "
                              "(lower-case letters, digits, '-' and '.')")
    return value


def parse_size(value: str, flag: str) -> str:
    """A volume size: a Kubernetes quantity (10Gi, 500Mi, 20G), or a bare number of
    GiB as the seed's STORAGE_SIZE is given ("10" means 10Gi)."""
    value = value.strip()
    m = _SIZE.match(value)
    if not m or float(m.group(1)) <= 0:
        raise InvalidArgument(f"{flag}: '{value}' is not a size; give a number of GiB (10) or a "
                              "Kubernetes quantity (10Gi, 500Mi, 1Ti)")
    return value if m.group(3) else f"{value}Gi"


def parse_memory(value: str, flag: str) -> str:
    """A memory amount: a Kubernetes quantity with a unit (512Mi, 2Gi)."""
    m = _SIZE.match(value.strip())
    if not m or not m.group(3) or float(m.group(1)) <= 0:
        raise InvalidArgument(f"{flag}: '{value}' is not an amount of memory (e.g. 512Mi, 2Gi)")
    return value.strip()


def parse_cpu(value: str, flag: str) -> str:
    if not _CPU.match(value.strip()) or value.strip() in ("0", "0m"):
        raise InvalidArgument(f"{flag}: '{value}' is not a CPU amount (e.g. 250m, 0.5, 2)")
    return value.strip()


def check_registry(value: str, flag: str = "--registry") -> str:
    """Where users pushed the pachy image: ``host[:port][/path]`` (no scheme, no tag)."""
    value = value.strip().rstrip("/")
    if not _REGISTRY.match(value):
        raise InvalidArgument(
            f"{flag}: '{value}' is not a registry; give HOST[:PORT][/PATH] with no scheme or tag "
            "(e.g. registry.example.com:5000/team); the image is then REGISTRY/pachy:VERSION"
        )
    return value


def check_image(value: str, flag: str = "--image") -> str:
    if not _IMAGE.match(value.strip()):
        raise InvalidArgument(f"{flag}: '{value}' is not an image reference (e.g. "
                              "registry.example.com/pachy:0.1.0)")
    return value.strip()


def check_bucket(value: str, flag: str) -> tuple[str, str]:
    """``BUCKET[/PREFIX]`` -> (bucket, prefix), the bucket named as S3 allows."""
    bucket, _, prefix = value.strip().partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidArgument(f"{flag}: '{bucket}' is not a bucket name (3-63 lower-case letters, "
                              "digits, '.' and '-')")
    return bucket, prefix.strip("/")


def check_port(value: int, flag: str, low: int = 1, high: int = 65535) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{flag}: {value} is not in {low}-{high}")
    return value
