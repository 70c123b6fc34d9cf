"""Pipeline specs: JSON text -> validated, frozen :class:`PipelineSpec`. Pure, no I/O.

Both generations of the seeds are accepted:

* 2.x (seed ``pipeline-spec-2.x``): ``input`` is a tree of pfs/cross/union/
  join/group/cron/git inputs; every field of the seed's manifest, plus the
  later 2.x fields (salt, reprocess_spec, autoscaling, s3_out, metadata,
  tf_job, tolerations, sidecar resources, datum_set_spec).
* 1.x (seed 1.x docs ch. 9, 14, 15): ``inputs: [{repo: {name}, method}]``
  with ``method`` = map/reduce/global or ``{partition, incremental}``,
  ``parallelism`` and ``parallelism_spec.strategy``. They become the same
  :class:`PipelineSpec` with ``generation=1``; each pfs input carries its
  :class:`Method`, and several inputs form a cross (seed 15.1).

Errors are :class:`SpecError` (an ``InvalidArgument``) naming the spec and
the JSON path: ``pipeline spec 'filter': input.cross[1].pfs.glob: expected a
string, got 3``. Fields that are understood but cannot act where the
pipeline runs are kept and listed by :meth:`PipelineSpec.inert_fields`.
``to_dict()`` gives the 2.x JSON form back; ``parse_spec(spec.to_dict())``
returns an equal spec (a 1.x spec keeps ``"generation": 1`` and its methods).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pfsfuse.errors import InvalidArgument
from pfsfuse.names import is_valid_name
from pps.spec_inputs import (
    CronInput,
    CrossInput,
    Fields,
    GitInput,
    GroupInput,
    Input,
    InputContext,
    JoinInput,
    Leaf,
    Method,
    PfsInput,
    SpecError,
    Trigger,
    UnionInput,
    compact,
    describe,
    format_duration,
    input_to_dict,
    object_pairs,
    parse_cron,
    parse_duration,
    parse_input,
    parse_quantity,
    parse_v1_inputs,
    walk,
)

__all__ = [
    "Capabilities", "ChunkSpec", "CronInput", "CrossInput", "DatumSetSpec", "Egress", "GitInput",
    "GpuSpec", "GroupInput", "HashtreeSpec", "Input", "JoinInput", "Metadata", "Method",
    "ParallelismSpec", "PfsInput", "PipelineSpec", "ResourceSpec", "SchedulingSpec", "Secret",
    "Service", "SpecError", "Spout", "TFJob", "Toleration", "Transform", "Trigger", "UnionInput",
    "format_duration", "parse_cron", "parse_duration", "parse_quantity", "parse_spec",
    "parse_specs",
]

REPROCESS_SPECS = ("until_success", "every_job")
# ExternalName is left out: it names a host outside the cluster, and a pipeline's Service routes to its pods.
SERVICE_TYPES = ("NodePort", "LoadBalancer", "ClusterIP")
RUNNERS = ("local", "docker", "kubernetes")


@dataclass(frozen=True)
class Secret:
    name: str
    mount_path: str = ""
    env_var: str = ""
    key: str = ""


@dataclass(frozen=True)
class Transform:
    cmd: tuple[str, ...]
    image: str = ""  # the runner's default image when empty; the local runner needs none
    stdin: tuple[str, ...] = ()
    err_cmd: tuple[str, ...] = ()
    err_stdin: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[Secret, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    accept_return_code: tuple[int, ...] = ()  # 0 is always accepted as well
    debug: bool = False
    user: str = ""
    working_dir: str = ""
    dockerfile: str = ""


@dataclass(frozen=True)
class ParallelismSpec:
    """Workers to start: ``constant``, or ``coefficient`` x nodes (seed: default constant=1)."""

    constant: int = 1
    coefficient: float = 0.0

    def workers(self, nodes: int = 1) -> int:
        if self.coefficient:
            return max(1, int(self.coefficient * nodes))
        return self.constant


@dataclass(frozen=True)
class HashtreeSpec:
    constant: int = 0


@dataclass(frozen=True)
class GpuSpec:
    type: str = ""
    number: int = 0


@dataclass(frozen=True)
class ResourceSpec:
    cpu: float = 0.0
    memory: str = ""  # "1.2G", "64Mi"; see memory_bytes
    disk: str = ""
    gpu: GpuSpec | None = None

    @property
    def memory_bytes(self) -> int | None:
        return parse_quantity(self.memory) if self.memory else None

    @property
    def disk_bytes(self) -> int | None:
        return parse_quantity(self.disk) if self.disk else None


@dataclass(frozen=True)
class Egress:
    url: str


@dataclass(frozen=True)
class Service:
    internal_port: int
    external_port: int = 0
    ip: str = ""
    type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Spout:
    overwrite: bool = False
    service: Service | None = None


@dataclass(frozen=True)
class ChunkSpec:
    number: int = 0
    size_bytes: int = 0


@dataclass(frozen=True)
class DatumSetSpec:
    number: int = 0
    size_bytes: int = 0
    per_worker: int = 0


@dataclass(frozen=True)
class SchedulingSpec:
    node_selector: dict[str, str] = field(default_factory=dict)
    priority_class_name: str = ""


@dataclass(frozen=True)
class Metadata:
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


@dataclass(frozen=True)
class TFJob:
    tf_job: str


@dataclass(frozen=True)
class Capabilities:
    """What the place a pipeline runs on can do, for :meth:`PipelineSpec.inert_fields`."""

    runner: str = "local"  # local | docker | kubernetes
    gpus: int = 0
    s3_gateway: bool = False
    max_workers: int = 0  # workers this machine runs at once, all pipelines together (0: no limit)
    cpu_memory_limits: bool = False  # resource_limits.cpu/memory act (local: a cgroup per worker)
    cpu_memory_why: str = ""  # why they do not, when they do not
    # What else the runner makes live; False: the field is accepted and a create-time note says it is inert.
    lazy_inputs: bool = False  # input.pfs.lazy: inputs served on demand (a FUSE view), not copied in first
    lazy_inputs_why: str = ""  # why not, when not (e.g. "no FUSE on this machine (...)")
    port_mapping: bool = False  # service.external_port can differ from internal_port


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    transform: Transform
    input: Input | None = None  # None only for spouts and input-less 1.x pipelines
    generation: int = 2
    description: str = ""
    parallelism_spec: ParallelismSpec = field(default_factory=ParallelismSpec)
    hashtree_spec: HashtreeSpec | None = None
    resource_requests: ResourceSpec | None = None
    resource_limits: ResourceSpec | None = None
    sidecar_resource_limits: ResourceSpec | None = None
    sidecar_resource_requests: ResourceSpec | None = None
    datum_timeout: float | None = None  # seconds
    job_timeout: float | None = None  # seconds
    datum_tries: int = 3
    output_branch: str = "master"
    egress: Egress | None = None
    standby: bool = False
    cache_size: str = ""
    enable_stats: bool = False
    service: Service | None = None
    spout: Spout | None = None
    max_queue_size: int = 1
    chunk_spec: ChunkSpec | None = None
    datum_set_spec: DatumSetSpec | None = None
    scheduling_spec: SchedulingSpec | None = None
    pod_spec: str = ""
    pod_patch: str = ""
    salt: str = ""  # the daemon picks one when empty
    reprocess_spec: str = "until_success"
    autoscaling: bool = False
    s3_out: bool = False
    metadata: Metadata | None = None
    tf_job: TFJob | None = None
    tolerations: tuple[Toleration, ...] = ()

    def leaves(self) -> list[tuple[Leaf, str]]:
        """Every pfs/cron/git input with its JSON path (2.x form)."""
        return list(walk(self.input))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def inert_fields(self, capabilities: Capabilities | None = None) -> list[tuple[str, str]]:
        return inert_fields(self, capabilities or Capabilities())


# ------------------------------------------------------------------ parsing

TOP_FIELDS = (
    "pipeline", "description", "transform", "parallelism_spec", "parallelism", "hashtree_spec",
    "resource_requests", "resource_limits", "sidecar_resource_limits",
    "sidecar_resource_requests", "datum_timeout", "datum_tries", "job_timeout", "input",
    "inputs", "output_branch", "egress", "standby", "cache_size", "enable_stats", "service",
    "spout", "max_queue_size", "chunk_spec", "datum_set_spec", "scheduling_spec", "pod_spec",
    "pod_patch", "salt", "reprocess_spec", "autoscaling", "s3_out", "metadata", "tf_job",
    "tolerations", "generation",
)
TRANSFORM_FIELDS = ("image", "cmd", "stdin", "err_cmd", "err_stdin", "env", "secrets",
                    "image_pull_secrets", "accept_return_code", "debug", "user", "working_dir",
                    "dockerfile")
RESOURCE_FIELDS = ("cpu", "memory", "disk", "gpu")
SERVICE_FIELDS = ("internal_port", "external_port", "ip", "type", "annotations")


def _transform(f: Fields | None) -> Transform:
    if f is None:
        raise SpecError("transform", 'required: {"cmd": [...], "image": ...}')
    cmd = f.strings("cmd")
    if not cmd:
        raise f.fail("cmd", 'required: the command to run, e.g. ["sh"] with a script in stdin')
    err_cmd = f.strings("err_cmd")
    if f.has("err_stdin") and not err_cmd:
        raise f.fail("err_stdin", "err_stdin is sent to err_cmd, which is not set")
    secrets = []
    for value, path in f.items("secrets"):
        s = Fields(value, path, ("name", "mount_path", "env_var", "key"))
        secret = Secret(name=s.text("name", required="the secret's name"),
                        mount_path=s.text("mount_path"), env_var=s.text("env_var"),
                        key=s.text("key"))
        if not secret.mount_path and not secret.env_var:
            raise SpecError(path, "a secret sets mount_path, or env_var and key")
        if secret.env_var and not secret.key:
            raise s.fail("key", "required with env_var: the key of the secret to read")
        secrets.append(secret)
    return Transform(
        cmd=cmd, image=f.text("image"), stdin=f.strings("stdin"), err_cmd=err_cmd,
        err_stdin=f.strings("err_stdin"), env=f.mapping("env"), secrets=tuple(secrets),
        image_pull_secrets=f.strings("image_pull_secrets"),
        accept_return_code=f.integers("accept_return_code"), debug=f.flag("debug"),
        user=f.text("user"), working_dir=f.text("working_dir"), dockerfile=f.text("dockerfile"))


def _parallelism(top: Fields) -> ParallelismSpec:
    if top.has("parallelism"):  # 1.x: "parallelism": "4"
        if top.has("parallelism_spec"):
            raise top.fail("parallelism", "set either parallelism or parallelism_spec, not both")
        return ParallelismSpec(constant=top.integer("parallelism", minimum=1))
    f = top.sub("parallelism_spec", ("constant", "coefficient", "strategy"))
    if f is None:
        return ParallelismSpec()
    strategy = f.text("strategy").upper()
    if strategy not in ("", "CONSTANT", "COEFFICIENT"):
        got = describe(f.raw("strategy"))
        raise f.fail("strategy", f"expected CONSTANT or COEFFICIENT, got {got}")
    if f.has("constant") and f.has("coefficient"):
        raise f.fail("coefficient", "set at most one of constant and coefficient")
    if strategy == "COEFFICIENT" or f.has("coefficient"):
        if strategy == "CONSTANT":
            raise f.fail("coefficient", "strategy CONSTANT takes 'constant', not 'coefficient'")
        if not f.has("coefficient"):
            raise f.fail("coefficient", "required by strategy COEFFICIENT")
        return ParallelismSpec(constant=0, coefficient=f.number("coefficient", positive=True))
    return ParallelismSpec(constant=f.integer("constant", 1, minimum=1))


def _quantity(f: Fields, name: str) -> str:
    text = f.text(name)
    if text:
        try:
            parse_quantity(text)
        except ValueError as e:
            raise f.fail(name, str(e)) from None
    return text


def _resources(f: Fields | None) -> ResourceSpec | None:
    if f is None:
        return None
    gpu = None
    if isinstance(f.raw("gpu"), int | str) and not isinstance(f.raw("gpu"), bool):
        gpu = GpuSpec(number=f.integer("gpu", minimum=0))  # the seed's prose: "a number"
    elif f.has("gpu"):
        g = Fields(f.raw("gpu"), f.at("gpu"), ("type", "number"))
        gpu = GpuSpec(type=g.text("type"), number=g.integer("number", minimum=0))
    return _unless_empty(ResourceSpec(cpu=f.number("cpu"), memory=_quantity(f, "memory"),
                                      disk=_quantity(f, "disk"), gpu=_unless_empty(gpu)))


def _duration(f: Fields, name: str) -> float | None:
    if not f.has(name):
        return None
    text = f.text(name)
    try:
        return parse_duration(text)
    except ValueError as e:
        raise f.fail(name, str(e)) from None


def _service(f: Fields | None) -> Service | None:
    if f is None:
        return None
    if not f.has("internal_port"):
        raise f.fail("internal_port", "required: the port your code listens on")
    return Service(internal_port=f.integer("internal_port", minimum=1, maximum=65535),
                   external_port=f.integer("external_port", minimum=0, maximum=65535),
                   ip=f.text("ip"), type=f.choice("type", SERVICE_TYPES),
                   annotations=f.mapping("annotations"))


def _json_text(f: Fields, name: str, kind: type, what: str) -> str:
    text = f.text(name)
    if text:
        try:
            value = json.loads(text)
        except ValueError as e:
            raise f.fail(name, f"not valid JSON: {e}") from None
        if not isinstance(value, kind):
            raise f.fail(name, f"expected {what} encoded as a string, got {describe(value)}")
    return text


def _tolerations(top: Fields) -> tuple[Toleration, ...]:
    out = []
    for value, path in top.items("tolerations"):
        t = Fields(value, path, ("key", "operator", "value", "effect", "toleration_seconds"))
        seconds = None
        if t.has("toleration_seconds"):
            seconds = t.integer("toleration_seconds", minimum=0)
        effect = t.choice("effect", ("NoSchedule", "PreferNoSchedule", "NoExecute"))
        out.append(Toleration(key=t.text("key"), operator=t.choice("operator", ("Exists", "Equal")),
                              value=t.text("value"), effect=effect, toleration_seconds=seconds))
    return tuple(out)


def _generation(top: Fields) -> int:
    if top.has("generation"):
        generation = top.integer("generation", minimum=1, maximum=2)
        if generation == 2 and top.has("inputs"):
            raise top.fail("inputs", "'inputs' is the 1.x form; a generation 2 spec uses 'input'")
        return generation
    if top.has("inputs"):
        return 1
    no_input = not top.has("input") and not top.has("spout")
    parallelism_spec = top.raw("parallelism_spec")
    strategy = isinstance(parallelism_spec, dict) and "strategy" in parallelism_spec
    # A 1.x pipeline without inputs only runs when asked (seed: run-pipeline).
    return 1 if no_input and (top.has("parallelism") or strategy) else 2


def _peek_name(obj: Any) -> str | None:
    pipeline = obj.get("pipeline") if isinstance(obj, dict) else None
    name = pipeline.get("name") if isinstance(pipeline, dict) else None
    return name if isinstance(name, str) and is_valid_name(name) else None


def _unless_empty(value: Any) -> Any:
    """An object the user gave as ``{}`` carries nothing: keep it as unset."""
    return None if value is not None and value == type(value)() else value


def parse_spec(obj: Any, where: str = "") -> PipelineSpec:
    """Validate one parsed JSON spec. ``where`` labels it in errors until its name is known."""
    name = _peek_name(obj)
    label = f"pipeline spec '{name}'" if name else f"pipeline spec {where}".strip()
    try:
        return _parse(obj)
    except SpecError as e:
        raise SpecError(e.path, e.detail, label) from None


def _parse(obj: Any) -> PipelineSpec:
    top = Fields(obj, "", TOP_FIELDS)
    pipeline = top.sub("pipeline", ("name",))
    if pipeline is None:
        raise SpecError("pipeline", 'required: {"name": "..."}')
    pipeline.text("name", required="the pipeline's name")
    name = pipeline.name("name", "pipeline")
    generation = _generation(top)
    transform = _transform(top.sub("transform", TRANSFORM_FIELDS))
    ctx = InputContext(pipeline=name, generation=generation)
    if top.has("input") and top.has("inputs"):
        raise top.fail("inputs", "set either 'input' (2.x) or 'inputs' (1.x), not both")
    if top.has("inputs"):
        input_ = parse_v1_inputs(top.raw("inputs"), top.at("inputs"), ctx)
    elif top.has("input"):
        input_, _ = parse_input(top.raw("input"), top.at("input"), ctx)
    else:
        input_ = None
    spout_f = top.sub("spout", ("overwrite", "service"))
    spout = None
    if spout_f is not None:
        spout = Spout(overwrite=spout_f.flag("overwrite"),
                      service=_service(spout_f.sub("service", SERVICE_FIELDS)))
        if top.has("service"):
            raise top.fail("service", "a pipeline is a spout or a service, not both "
                                      "(a spout can expose spout.service)")
        if input_ is not None:
            raise top.fail("input" if top.has("input") else "inputs", "a spout takes no input")
    elif input_ is None and generation == 2:
        raise SpecError("input", "required (only a spout pipeline has no input)")
    hashtree = top.sub("hashtree_spec", ("constant",))
    chunk = top.sub("chunk_spec", ("number", "size_bytes"))
    dss = top.sub("datum_set_spec", ("number", "size_bytes", "per_worker"))
    if dss and dss.has("per_worker") and (dss.has("number") or dss.has("size_bytes")):
        raise dss.fail("per_worker", "per_worker cannot be set with number or size_bytes")
    sched = top.sub("scheduling_spec", ("node_selector", "priority_class_name"))
    meta = top.sub("metadata", ("annotations", "labels"))
    egress = top.sub("egress", ("URL",))
    tf_job = top.sub("tf_job", ("tf_job",))
    if egress is not None:
        url = egress.text("URL", required="where to push the output, e.g. s3://bucket/dir")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", url):
            raise egress.fail("URL", f"expected a URL like s3://bucket/dir, got {describe(url)}")
    return PipelineSpec(
        name=name, transform=transform, input=input_, generation=generation,
        description=top.text("description"),
        parallelism_spec=_parallelism(top),
        hashtree_spec=_unless_empty(HashtreeSpec(hashtree.integer("constant", minimum=0)))
        if hashtree else None,
        resource_requests=_resources(top.sub("resource_requests", RESOURCE_FIELDS)),
        resource_limits=_resources(top.sub("resource_limits", RESOURCE_FIELDS)),
        sidecar_resource_limits=_resources(top.sub("sidecar_resource_limits", RESOURCE_FIELDS)),
        sidecar_resource_requests=_resources(top.sub("sidecar_resource_requests", RESOURCE_FIELDS)),
        datum_timeout=_duration(top, "datum_timeout"), job_timeout=_duration(top, "job_timeout"),
        datum_tries=top.integer("datum_tries", 3, minimum=1),
        output_branch=top.name("output_branch", "branch", "master"),
        egress=Egress(egress.text("URL")) if egress else None,
        standby=top.flag("standby"), cache_size=_quantity(top, "cache_size"),
        enable_stats=top.flag("enable_stats"), service=_service(top.sub("service", SERVICE_FIELDS)),
        spout=spout, max_queue_size=top.integer("max_queue_size", 1, minimum=1),
        chunk_spec=_unless_empty(ChunkSpec(chunk.integer("number", minimum=0),
                                           chunk.integer("size_bytes", minimum=0)))
        if chunk else None,
        datum_set_spec=_unless_empty(DatumSetSpec(dss.integer("number", minimum=0),
                                                  dss.integer("size_bytes", minimum=0),
                                                  dss.integer("per_worker", minimum=0)))
        if dss else None,
        scheduling_spec=_unless_empty(SchedulingSpec(sched.mapping("node_selector"),
                                                     sched.text("priority_class_name")))
        if sched else None,
        pod_spec=_json_text(top, "pod_spec", dict, "a JSON object (a pod spec merge patch)"),
        pod_patch=_json_text(top, "pod_patch", list, "a JSON array (a JSON Patch)"),
        salt=top.text("salt"),
        reprocess_spec=top.choice("reprocess_spec", REPROCESS_SPECS, "until_success"),
        autoscaling=top.flag("autoscaling"), s3_out=top.flag("s3_out"),
        metadata=_unless_empty(Metadata(meta.mapping("annotations"), meta.mapping("labels")))
        if meta else None,
        tf_job=TFJob(tf_job.text("tf_job")) if tf_job else None,
        tolerations=_tolerations(top))


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_specs(text: str) -> list[PipelineSpec]:
    """Every spec in a text: one object, a JSON array, or objects one after another."""
    decoder = json.JSONDecoder(object_pairs_hook=object_pairs)
    found: list[tuple[Any, int]] = []
    pos = 1 if text.startswith("\ufeff") else 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            break
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"pipeline spec: malformed JSON at line {e.lineno}, "
                                  f"column {e.colno}: {e.msg}") from None
        items = value if isinstance(value, list) else [value]
        found.extend((item, _line_of(text, pos)) for item in items)
        pos = end
    if not found:
        raise InvalidArgument("pipeline spec: no pipeline spec found (expected a JSON object)")
    specs: list[PipelineSpec] = []
    seen: dict[str, int] = {}
    for i, (obj, line) in enumerate(found, 1):
        where = f"#{i} (line {line})" if len(found) > 1 else ""
        if not isinstance(obj, dict):
            raise InvalidArgument(f"pipeline spec {where}: expected a JSON object, "
                                  f"got {describe(obj)}")
        spec = parse_spec(obj, where)
        if spec.name in seen:
            raise InvalidArgument(f"pipeline spec '{spec.name}': defined twice in this file "
                                  f"(specs #{seen[spec.name]} and #{i})")
        seen[spec.name] = i
        specs.append(spec)
    return specs


# ------------------------------------------------------------------ output


def _resources_dict(r: ResourceSpec | None) -> dict[str, Any] | None:
    if r is None:
        return None
    gpu = compact({"type": r.gpu.type, "number": r.gpu.number}) if r.gpu else None
    return compact({"cpu": r.cpu, "memory": r.memory, "disk": r.disk, "gpu": gpu}) or None


def _service_dict(s: Service | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return compact({"internal_port": s.internal_port, "external_port": s.external_port,
                    "ip": s.ip, "type": s.type, "annotations": s.annotations})


def _duration_text(seconds: float | None) -> str | None:
    return None if seconds is None else format_duration(seconds)


def to_dict(spec: PipelineSpec) -> dict[str, Any]:
    """The 2.x JSON form, unset fields left out (Go's omitempty)."""
    t = spec.transform
    transform = compact({
        "image": t.image, "cmd": list(t.cmd), "stdin": list(t.stdin), "err_cmd": list(t.err_cmd),
        "err_stdin": list(t.err_stdin), "env": t.env,
        "secrets": [compact(vars(s)) for s in t.secrets],
        "image_pull_secrets": list(t.image_pull_secrets),
        "accept_return_code": list(t.accept_return_code), "debug": t.debug, "user": t.user,
        "working_dir": t.working_dir, "dockerfile": t.dockerfile})
    p = spec.parallelism_spec
    parallelism = {"coefficient": p.coefficient} if p.coefficient else {"constant": p.constant}
    out: dict[str, Any] = {"pipeline": {"name": spec.name}}
    if spec.generation == 1:
        out["generation"] = 1
    spout = None
    if spec.spout is not None:
        spout = {"overwrite": spec.spout.overwrite}
        if spec.spout.service:
            spout["service"] = _service_dict(spec.spout.service)
    out.update(compact({
        "description": spec.description, "transform": transform, "parallelism_spec": parallelism,
        "hashtree_spec": compact(vars(spec.hashtree_spec)) if spec.hashtree_spec else None,
        "resource_requests": _resources_dict(spec.resource_requests),
        "resource_limits": _resources_dict(spec.resource_limits),
        "sidecar_resource_limits": _resources_dict(spec.sidecar_resource_limits),
        "sidecar_resource_requests": _resources_dict(spec.sidecar_resource_requests),
        "datum_timeout": _duration_text(spec.datum_timeout),
        "job_timeout": _duration_text(spec.job_timeout),
        "datum_tries": spec.datum_tries,
        "input": input_to_dict(spec.input) if spec.input is not None else None,
        "output_branch": spec.output_branch,
        "egress": {"URL": spec.egress.url} if spec.egress else None,
        "standby": spec.standby, "cache_size": spec.cache_size, "enable_stats": spec.enable_stats,
        "service": _service_dict(spec.service), "spout": spout,
        "max_queue_size": spec.max_queue_size,
        "chunk_spec": compact(vars(spec.chunk_spec)) if spec.chunk_spec else None,
        "datum_set_spec": compact(vars(spec.datum_set_spec)) if spec.datum_set_spec else None,
        "scheduling_spec": compact(vars(spec.scheduling_spec)) if spec.scheduling_spec else None,
        "pod_spec": spec.pod_spec, "pod_patch": spec.pod_patch, "salt": spec.salt,
        "reprocess_spec": spec.reprocess_spec, "autoscaling": spec.autoscaling,
        "s3_out": spec.s3_out,
        "metadata": compact(vars(spec.metadata)) if spec.metadata else None,
        "tf_job": {"tf_job": spec.tf_job.tf_job} if spec.tf_job else None,
        "tolerations": [compact(vars(t)) for t in spec.tolerations],
    }))
    return out


# ------------------------------------------------------------- inert fields

KUBE_ONLY = "only used by the kubernetes runner"


def inert_fields(spec: PipelineSpec, caps: Capabilities) -> list[tuple[str, str]]:
    """Fields that are understood but cannot act where ``caps`` says the pipeline runs."""
    if caps.runner not in RUNNERS:
        raise InvalidArgument(f"unknown runner '{caps.runner}' (expected {', '.join(RUNNERS)})")
    kube = caps.runner == "kubernetes"
    out: list[tuple[str, str]] = []

    def note(path: str, reason: str, when: Any = True) -> None:
        if when:
            out.append((path, reason))

    t = spec.transform
    note("transform.image", "the local runner runs cmd on this machine, without an image",
         t.image and caps.runner == "local")
    note("transform.image_pull_secrets", f"{KUBE_ONLY} (kubernetes secrets for pulling images)",
         t.image_pull_secrets and not kube)
    note("transform.dockerfile", "only read by 'pachctl create pipeline --build'", t.dockerfile)
    note("hashtree_spec", "1.x hashtree sharding; pachy's file trees are not sharded",
         spec.hashtree_spec)
    note("cache_size", "sizes a Pachyderm sidecar's cache; pachy workers read through the "
                       "FUSE page cache", spec.cache_size)
    note("tf_job", "Kubeflow TFJobs are not supported; the pipeline runs its transform",
         spec.tf_job)
    for path, resources in (("resource_requests", spec.resource_requests),
                            ("resource_limits", spec.resource_limits)):
        if resources is None:
            continue
        gpu = resources.gpu
        if gpu and gpu.number > caps.gpus:
            reason = ("no GPU on this machine" if caps.gpus == 0 else
                      f"{gpu.number} GPUs asked for, {caps.gpus} available")
            note(f"{path}.gpu", reason)
        asks = resources.cpu or resources.memory or resources.disk
        note(path, f"{KUBE_ONLY} (requests guide scheduling on a cluster)",
             path == "resource_requests" and asks and not kube)
        note(f"{path}.disk", f"{KUBE_ONLY} (ephemeral-storage limits)",
             path == "resource_limits" and resources.disk and not kube)
    if not kube:
        for name in ("sidecar_resource_limits", "sidecar_resource_requests", "scheduling_spec",
                     "metadata"):
            note(name, KUBE_ONLY, getattr(spec, name))
        note("pod_spec", KUBE_ONLY, spec.pod_spec)
        note("pod_patch", KUBE_ONLY, spec.pod_patch)
        note("tolerations", KUBE_ONLY, spec.tolerations)
        for prefix, svc in (("service", spec.service),
                            ("spout.service", spec.spout.service if spec.spout else None)):
            if svc is not None:
                note(f"{prefix}.type", f"{KUBE_ONLY} (kubernetes Service type)", svc.type)
                note(f"{prefix}.ip", f"{KUBE_ONLY} (kubernetes Service IP)", svc.ip)
                note(f"{prefix}.annotations", KUBE_ONLY, svc.annotations)
    p = spec.parallelism_spec
    if caps.max_workers and p.workers() > caps.max_workers:
        note("parallelism_spec.coefficient" if p.coefficient else "parallelism_spec.constant",
             f"{p.workers()} workers asked for; this machine runs at most {caps.max_workers} at once, shared "
             "by all pipelines (PACHY_MAX_WORKERS; by default 2 per core), so the pipeline gets at most "
             f"{caps.max_workers}")
    if not caps.s3_gateway:
        reason = "needs an S3 gateway in the worker; none is available here"
        note("s3_out", reason, spec.s3_out)
        for leaf, path in spec.leaves():
            note(f"{path}.s3", reason, isinstance(leaf, PfsInput) and leaf.s3)
    return out
