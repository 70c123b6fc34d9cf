"""The lower half of spec parsing: reading JSON fields by path, and the input tree.

Pure: every function takes parsed JSON and returns dataclasses or raises
:class:`SpecError`, an :class:`InvalidArgument` whose ``path`` is the JSON path
of the offending field (``input.cross[1].pfs.glob``). ``pps.spec`` builds the
whole pipeline spec on top of this.

Inputs (seed 2.x "Input", plus the 1.x ``inputs`` of seed ch. 9.1.4-9.1.6):

* ``pfs`` (also ``atom``, its name before 1.8.1), ``cross``, ``union``,
  ``join``, ``group``, ``cron``, ``git``: exactly one key per input object.
* A pfs input's ``name`` defaults to its repo, a git input's to the repository
  named by its URL; a cron input's ``repo`` to ``<pipeline>_<name>``.
* Names must be unique across crossed/joined/grouped inputs; a union's
  children may share a name (seed 2.x, "PFS Input").
* 1.x inputs carry a :class:`Method`; several of them form a cross (seed 15.1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from difflib import get_close_matches
from typing import Any, ClassVar

from pfsfuse.errors import InvalidArgument
from pfsfuse.names import check_name
from pps.datums import GlobError, compile_glob


class SpecError(InvalidArgument):
    """A pipeline spec problem at one JSON path. ``label`` names the spec once known."""

    def __init__(self, path: str, detail: str, label: str = ""):
        self.path, self.detail, self.label = path, detail, label
        text = f"{path}: {detail}" if path else detail
        super().__init__(f"{label}: {text}" if label else text)


# ---------------------------------------------------------------- reading JSON


class DupKeyDict(dict):
    """A JSON object that remembers keys the text set twice (json keeps the last)."""

    duplicates: list[str]


def object_pairs(pairs: list[tuple[str, Any]]) -> DupKeyDict:
    d = DupKeyDict()
    d.duplicates = []
    for key, value in pairs:
        if key in d:
            d.duplicates.append(key)
        d[key] = value
    return d


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + '..."'


def _norm(key: str) -> str:
    return key.replace("_", "").lower()


# Known names that were renamed or removed; shown instead of a close match.
HINTS = {
    "scale_down_threshold": "replaced by 'standby' in 1.7.1",
    "resources": "use 'resource_requests' and 'resource_limits'",
    "from": "not supported; pfs inputs take 'commit'",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Fields:
    """One JSON object's fields, checked against the names it may have.

    Keys match a name exactly or ignoring case and '_' (jsonpb accepted both
    ``mount_path`` and ``mountPath``). Null values count as absent, as in jsonpb.
    Getters check the type and raise a :class:`SpecError` naming the field's path.
    """

    def __init__(self, value: Any, path: str, names: tuple[str, ...] | list[str]):
        if not isinstance(value, dict):
            raise SpecError(path, f"expected an object, got {describe(value)}")
        duplicates = getattr(value, "duplicates", ())
        if duplicates:
            raise SpecError(join(path, duplicates[0]), "set twice in one object")
        self.path = path
        self.got: dict[str, tuple[str, Any]] = {}
        by_norm = {_norm(n): n for n in names}
        for key, v in value.items():
            name = key if key in names else by_norm.get(_norm(key))
            if name is None:
                close = get_close_matches(key, names, n=1, cutoff=0.6)
                hint = HINTS.get(key) or (f"did you mean '{close[0]}'?" if close else "")
                raise SpecError(path, f"unknown field '{key}'" + (f" ({hint})" if hint else ""))
            if name in self.got:
                first = self.got[name][0]
                raise SpecError(join(path, key), f"set twice (as '{first}' and '{key}')")
            if v is not None:
                self.got[name] = (key, v)

    def has(self, name: str) -> bool:
        return name in self.got

    def at(self, name: str) -> str:
        """The JSON path of a field, spelled as the user wrote its key."""
        return join(self.path, self.got[name][0] if name in self.got else name)

    def raw(self, name: str, default: Any = None) -> Any:
        return self.got[name][1] if name in self.got else default

    def fail(self, name: str, detail: str) -> SpecError:
        return SpecError(self.at(name), detail)

    def text(self, name: str, default: str = "", *, required: str = "") -> str:
        if name not in self.got:
            if required:
                raise self.fail(name, f"required: {required}")
            return default
        v = self.raw(name)
        if not isinstance(v, str):
            raise self.fail(name, f"expected a string, got {describe(v)}")
        if required and not v:
            raise self.fail(name, f"required: {required}")
        return v

    def flag(self, name: str, default: bool = False) -> bool:
        v = self.raw(name, default)
        if not isinstance(v, bool):
            raise self.fail(name, f"expected true or false, got {describe(v)}")
        return v

    def integer(self, name: str, default: int = 0, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        if name not in self.got:
            return default
        v = as_int(self.raw(name), self.at(name))
        if minimum is not None and v < minimum or maximum is not None and v > maximum:
            bounds = (f"at least {minimum}" if maximum is None
                      else f"between {minimum} and {maximum}")
            raise self.fail(name, f"expected {bounds}, got {v}")
        return v

    def number(self, name: str, default: float = 0.0, *, positive: bool = False) -> float:
        if name not in self.got:
            return default
        v = self.raw(name)
        if isinstance(v, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", v):
            v = float(v)  # jsonpb accepts numbers in strings
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise self.fail(name, f"expected a number, got {describe(v)}")
        if v < 0 or positive and v == 0:
            sign = "positive" if positive else "non-negative"
            raise self.fail(name, f"expected a {sign} number, got {v}")
        return float(v)

    def items(self, name: str) -> list[tuple[Any, str]]:
        """An array's elements with their paths."""
        v = self.raw(name, [])
        if not isinstance(v, list):
            raise self.fail(name, f"expected an array, got {describe(v)}")
        return [(item, join(self.at(name), i)) for i, item in enumerate(v)]

    def strings(self, name: str) -> tuple[str, ...]:
        v = self.raw(name, [])
        if not isinstance(v, list):
            raise self.fail(name, f"expected an array of strings, got {describe(v)}")
        for item, path in self.items(name):
            if not isinstance(item, str):
                raise SpecError(path, f"expected a string, got {describe(item)}")
        return tuple(v)

    def integers(self, name: str) -> tuple[int, ...]:
        return tuple(as_int(item, path) for item, path in self.items(name))

    def mapping(self, name: str) -> dict[str, str]:
        v = self.raw(name, {})
        if not isinstance(v, dict):
            raise self.fail(name, f"expected an object of strings, got {describe(v)}")
        for key, item in v.items():
            if not isinstance(item, str):
                raise SpecError(join(self.at(name), key),
                                f"expected a string, got {describe(item)}")
        return dict(v)

    def sub(self, name: str, names: tuple[str, ...]) -> Fields | None:
        return Fields(self.raw(name), self.at(name), names) if name in self.got else None

    def choice(self, name: str, allowed: tuple[str, ...], default: str = "") -> str:
        v = self.text(name) or default
        if v and v not in allowed:
            close = get_close_matches(v, allowed, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(name, f"expected one of {', '.join(allowed)}, got {describe(v)}{hint}")
        return v

    def name(self, key: str, kind: str, default: str = "") -> str:
        """A repo/branch/pipeline/input name, checked by ``pfsfuse.names``; "" means default."""
        v = self.text(key) or default
        if v:
            try:
                check_name(kind, v)
            except InvalidArgument as e:
                raise self.fail(key, str(e)) from None
        return v


def as_int(v: Any, path: str) -> int:
    if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v):
        return int(v)  # jsonpb writes 64-bit integers as strings
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if not _is_int(v):
        raise SpecError(path, f"expected an integer, got {describe(v)}")
    return v


# ----------------------------------------------------------- durations, sizes

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3,
          "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """A Go duration ("1m30s", "10s", "2h", "1.5h", "300ms") in seconds. Raises ValueError."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(f'invalid duration "{text}" (Go syntax like "1m30s", "10s", "2h")')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError('empty duration (Go syntax like "1m30s", "10s", "2h")')
    return total


def format_duration(seconds: float) -> str:
    """The compact Go form: 90 -> "1m30s", 7200 -> "2h", 0.25 -> "250ms"."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{int(hours)}h" if hours else "") + (f"{int(minutes)}m" if minutes else "")
    return out + (f"{round(secs, 9):g}s" if secs else "")


_QUANTITY = re.compile(r"(\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?\s*(?:([kKmMgGtTpPeE])(i)?)?[bB]?")
_POWERS = "kmgtpe"


def parse_quantity(text: str) -> int:
    """A size like "1.2G", "64Mi", "512M", "10GB", "1e9" in bytes. Raises ValueError."""
    m = _QUANTITY.fullmatch(text.strip())
    if not m:
        raise ValueError(f'invalid size "{text}" (a number of bytes with an optional '
                         'suffix: K, M, G, T or Ki, Mi, Gi, Ti)')
    value = float(m.group(1)) * 10 ** int(m.group(2) or 0)
    if m.group(3):
        value *= (1024 if m.group(4) else 1000) ** (_POWERS.index(m.group(3).lower()) + 1)
    return int(value)


# ---------------------------------------------------------------------- cron

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
                ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron spec: five standard fields, a descriptor, or ``@every <duration>``."""

    spec: str
    every: float | None = None
    fields: tuple[frozenset[int], ...] = ()  # minute, hour, day of month, month, day of week
    dom_any: bool = True
    dow_any: bool = True

    def next_after(self, t: datetime) -> datetime | None:
        """The first tick strictly after ``t`` (keeps t's tzinfo), None if none in 5 years."""
        if self.every is not None:
            return t + timedelta(seconds=self.every)
        minutes, hours, doms, months, dows = self.fields
        start = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for offset in range(366 * 5):
            d: date = start.date() + timedelta(days=offset)
            dom_ok, dow_ok = d.day in doms, d.isoweekday() % 7 in dows
            day_ok = dom_ok and dow_ok if self.dom_any or self.dow_any else dom_ok or dow_ok
            if d.month not in months or not day_ok:
                continue
            for h in sorted(hours):
                for m in sorted(minutes):
                    if offset == 0 and (h, m) < (start.hour, start.minute):
                        continue
                    return start.replace(year=d.year, month=d.month, day=d.day, hour=h, minute=m)
        return None


def _cron_value(text: str, lo: int, hi: int, names: tuple[str, ...] | list[str], what: str) -> int:
    if text.lower() in names:
        return names.index(text.lower()) + (1 if what == "month" else 0)
    if not text.isdigit():
        raise ValueError(f"{what}: '{text}' is not a number")
    v = int(text)
    if not lo <= v <= hi:
        raise ValueError(f"{what} {v} out of range {lo}-{hi}")
    return v


def _cron_field(text: str, what: str, lo: int, hi: int, names: Any) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        rng, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{what}: bad step '{step_text}'")
            step = int(step_text)
        if rng in ("*", "?"):
            a, b = lo, hi
        elif "-" in rng:
            first, _, last = rng.partition("-")
            a, b = (_cron_value(x, lo, hi, names, what) for x in (first, last))
            if a > b:
                raise ValueError(f"{what}: range {rng} runs backwards")
        else:
            a = _cron_value(rng, lo, hi, names, what)
            b = hi if slash else a
        out.update(range(a, b + 1, step))
    if what == "day of week" and 7 in out:
        out = (out - {7}) | {0}  # 7 is Sunday too
    return frozenset(out)


def parse_cron(spec: str) -> CronSchedule:
    """Parse a cron spec (seed 2.x "Cron Input"). Raises ValueError saying what is wrong."""
    text = spec.strip()
    if text.startswith("@every"):
        rest = text[len("@every"):].strip()
        seconds = parse_duration(rest)
        if seconds <= 0:
            raise ValueError("@every needs a positive duration")
        return CronSchedule(spec, every=seconds)
    if text.startswith("@"):
        if text not in _DESCRIPTORS:
            raise ValueError(f"unknown descriptor '{text}' (use {', '.join(_DESCRIPTORS)} "
                             "or '@every <duration>')")
        text = _DESCRIPTORS[text]
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(parts)}")
    fields = tuple(_cron_field(p, what, lo, hi, names)
                   for p, (what, lo, hi, names) in zip(parts, _CRON_FIELDS, strict=True))
    return CronSchedule(spec, fields=fields, dom_any=parts[2] in ("*", "?"),
                        dow_any=parts[4] in ("*", "?"))


# --------------------------------------------------------------- input tree

PARTITIONS = ("BLOCK", "FILE", "REPO")
INCREMENTALS = ("NONE", "DIFF", "FILE")


@dataclass(frozen=True)
class Method:
    """A 1.x input method (seed 9.1.5): partition unit x incrementality."""

    partition: str = "BLOCK"
    incremental: str = "DIFF"

    @property
    def alias(self) -> str | None:
        return next((k for k, v in METHODS.items() if v == self), None)


MAP = Method("BLOCK", "DIFF")
REDUCE = Method("FILE", "NONE")
GLOBAL = Method("REPO", "NONE")
METHODS = {"map": MAP, "reduce": REDUCE, "global": GLOBAL}
DEFAULT_METHOD = MAP  # "If no method is specified, the map method (BLOCK + DIFF) is used"


@dataclass(frozen=True)
class Trigger:
    branch: str = ""
    all: bool = False
    cron_spec: str = ""
    size: str = ""
    commits: int = 0


@dataclass(frozen=True)
class PfsInput:
    kind: ClassVar[str] = "pfs"
    name: str
    repo: str
    glob: str = ""  # required in 2.x; 1.x inputs may leave it to their method
    branch: str = "master"
    commit: str = ""
    lazy: bool = False
    empty_files: bool = False
    join_on: str = ""
    group_by: str = ""
    outer_join: bool = False
    s3: bool = False
    trigger: Trigger | None = None
    method: Method | None = None  # 1.x only
    run_empty: bool = False  # 1.x only


@dataclass(frozen=True)
class CronInput:
    kind: ClassVar[str] = "cron"
    name: str
    spec: str
    repo: str
    start: datetime | None = None
    overwrite: bool = False

    @property
    def schedule(self) -> CronSchedule:
        return parse_cron(self.spec)


@dataclass(frozen=True)
class GitInput:
    kind: ClassVar[str] = "git"
    name: str
    url: str
    branch: str = "master"


@dataclass(frozen=True)
class CrossInput:
    kind: ClassVar[str] = "cross"
    inputs: tuple[Input, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class UnionInput:
    kind: ClassVar[str] = "union"
    inputs: tuple[Input, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class JoinInput:
    kind: ClassVar[str] = "join"
    inputs: tuple[Input, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class GroupInput:
    kind: ClassVar[str] = "group"
    inputs: tuple[Input, ...] = field(default_factory=tuple)


Input = PfsInput | CrossInput | UnionInput | JoinInput | GroupInput | CronInput | GitInput
Leaf = PfsInput | CronInput | GitInput
COMBINERS: dict[str, type] = {"cross": CrossInput, "union": UnionInput, "join": JoinInput,
                              "group": GroupInput}
INPUT_KINDS = ("pfs", "cross", "union", "join", "group", "cron", "git", "atom")


def walk(node: Input | None, path: str = "input") -> Iterator[tuple[Leaf, str]]:
    """Every leaf input with its 2.x JSON path, depth first."""
    if node is None:
        return
    if isinstance(node, PfsInput | CronInput | GitInput):
        yield node, join(path, node.kind)
        return
    for i, child in enumerate(node.inputs):
        yield from walk(child, join(join(path, node.kind), i))


@dataclass
class InputContext:
    pipeline: str
    generation: int
    names: dict[str, str] = field(default_factory=dict)  # scratch for the duplicate check


PFS_FIELDS = ("name", "repo", "branch", "glob", "lazy", "empty_files", "join_on", "group_by",
              "outer_join", "s3", "trigger", "commit", "method", "run_empty")
TRIGGER_FIELDS = ("branch", "all", "cron_spec", "size", "commits")
CRON_FIELDS = ("name", "spec", "repo", "start", "overwrite")
GIT_FIELDS = ("URL", "name", "branch")
V1_INPUT_FIELDS = ("repo", "name", "branch", "glob", "method", "run_empty", "lazy")


def _input_name(f: Fields, default: str, generation: int) -> str:
    name = f.name("name", "input", default)
    reserved = ("out", "prev") if generation == 1 else ("out",)
    if name in reserved:
        where = f.at("name") if f.has("name") else f.path
        raise SpecError(where, f"input name '{name}' is reserved for /pfs/{name}; "
                               "set another 'name'")
    return name


def parse_method(value: Any, path: str) -> Method:
    """A 1.x method: "map"/"reduce"/"global", or {partition, incremental} (seed 9.1.5)."""
    if isinstance(value, str):
        if value.lower() not in METHODS:
            close = get_close_matches(value.lower(), METHODS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(path, f"expected map, reduce, global or an object with partition and "
                                  f"incremental, got {describe(value)}{hint}")
        return METHODS[value.lower()]
    f = Fields(value, path, ("partition", "incremental"))
    partition = f.text("partition", DEFAULT_METHOD.partition).upper()
    if partition not in PARTITIONS:
        got = describe(f.raw("partition"))
        raise f.fail("partition", f"expected BLOCK, FILE or REPO, got {got}")
    incremental = f.raw("incremental", DEFAULT_METHOD.incremental)
    if isinstance(incremental, bool):  # before 1.2 incremental was a bool
        incremental = "DIFF" if incremental else "NONE"
    if not isinstance(incremental, str) or incremental.upper() not in INCREMENTALS:
        raise f.fail("incremental", f"expected NONE, DIFF or FILE, got {describe(incremental)}")
    return Method(partition, incremental.upper())


def _method_of(f: Fields) -> Method:
    return parse_method(f.raw("method"), f.at("method")) if f.has("method") else DEFAULT_METHOD


def _trigger(f: Fields | None) -> Trigger | None:
    if f is None:
        return None
    cron_spec = f.text("cron_spec")
    if cron_spec:
        try:
            parse_cron(cron_spec)
        except ValueError as e:
            raise f.fail("cron_spec", f'invalid cron spec "{cron_spec}": {e}') from None
    size = f.text("size")
    if size:
        try:
            parse_quantity(size)
        except ValueError as e:
            raise f.fail("size", str(e)) from None
    trigger = Trigger(branch=f.name("branch", "branch"), all=f.flag("all"), cron_spec=cron_spec,
                      size=size, commits=f.integer("commits", minimum=0))
    return None if trigger == Trigger() else trigger


def _pfs(f: Fields, ctx: InputContext) -> PfsInput:
    repo = f.name("repo", "repo")
    if not repo:
        raise f.fail("repo", "required: the repo to read")
    glob = f.text("glob")
    method = None
    if (f.has("method") or f.has("run_empty")) and ctx.generation != 1:
        key = "method" if f.has("method") else "run_empty"
        raise f.fail(key, f"'{key}' is a 1.x field (use 'glob' in a 2.x spec, "
                          'or set "generation": 1)')
    if ctx.generation == 1:
        method = _method_of(f)
    elif not glob:
        raise f.fail("glob", 'required: a glob pattern such as "/*" or "/"')
    if glob and not glob.startswith("/"):
        glob = "/" + glob
    _check_glob(f, glob)
    return PfsInput(
        name=_input_name(f, repo, ctx.generation), repo=repo, glob=glob,
        branch=f.name("branch", "branch", "master"), commit=f.text("commit"),
        lazy=f.flag("lazy"), empty_files=f.flag("empty_files"), join_on=f.text("join_on"),
        group_by=f.text("group_by"), outer_join=f.flag("outer_join"), s3=f.flag("s3"),
        trigger=_trigger(f.sub("trigger", TRIGGER_FIELDS)), method=method,
        run_empty=f.flag("run_empty"))


def _check_glob(f: Fields, glob: str) -> None:
    """A glob the datum planner cannot compile (``/[a-``) is refused here,
    naming its field, rather than failing every job of the pipeline later."""
    if not glob:
        return
    try:
        compile_glob(glob)
    except GlobError as e:
        raise f.fail("glob", f"invalid glob pattern: {e}") from None


def _cron(f: Fields, ctx: InputContext) -> CronInput:
    name = f.text("name", required="a cron input needs a name")
    name = _input_name(f, name, ctx.generation)
    spec = f.text("spec", required='a cron spec such as "*/10 * * * *" or "@every 10s"')
    try:
        parse_cron(spec)
    except ValueError as e:
        raise f.fail("spec", f'invalid cron spec "{spec}": {e}') from None
    if f.has("repo"):
        repo = f.name("repo", "repo")
    else:
        repo = f"{ctx.pipeline}_{name}"
        try:
            check_name("repo", repo)
        except InvalidArgument as e:
            raise SpecError(f.path, f"the default repo '{repo}' is not valid ({e}); "
                                    "set 'repo'") from None
    start = None
    if f.has("start"):
        text = f.text("start")
        try:  # Go writes nanoseconds; Python keeps microseconds
            start = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text))
        except ValueError:
            raise f.fail("start", "expected an RFC 3339 time like 2024-01-01T00:00:00Z, "
                                  f"got {describe(text)}") from None
        if start.tzinfo is None:
            raise f.fail("start", f"{describe(text)} has no time zone "
                                  "(RFC 3339 needs one, e.g. 'Z')")
    return CronInput(name=name, spec=spec, repo=repo, start=start, overwrite=f.flag("overwrite"))


def _git(f: Fields, ctx: InputContext) -> GitInput:
    url = f.text("URL", required="a URL of the form https://github.com/foo/bar.git")
    m = re.fullmatch(r"(?:https?|ssh|git)://[^/\s]+/(?:[^\s]+/)?([^/\s]+)\.git", url)
    if not m:
        raise f.fail("URL", "expected a URL of the form https://github.com/foo/bar.git, "
                            f"got {describe(url)}")
    name = _input_name(f, f.text("name") or m.group(1), ctx.generation)
    return GitInput(name=name, url=url, branch=f.name("branch", "branch", "master"))


def _claim(names: dict[str, str], name: str, path: str) -> None:
    if name in names:
        raise SpecError(path, f"duplicate input name '{name}' (also used at {names[name]}); "
                              "give one of them a different 'name'")
    names[name] = path


def parse_input(value: Any, path: str, ctx: InputContext) -> tuple[Input, dict[str, str]]:
    """One 2.x input object -> (input, {name: path of the input that uses it})."""
    if not isinstance(value, dict):
        raise SpecError(path, f"expected an input object, got {describe(value)}")
    f = Fields(value, path, INPUT_KINDS)
    kinds = list(f.got)
    if len(kinds) != 1:
        got = ", ".join(f"'{f.got[k][0]}'" for k in kinds) or "none"
        raise SpecError(path, f"an input sets exactly one of pfs, cross, union, join, group, "
                              f"cron or git; got {got}")
    kind = kinds[0]
    at = f.at(kind)
    if kind in COMBINERS:
        children = f.items(kind)
        if not children:
            raise SpecError(at, f"a {kind} needs at least one input")
        nodes, names = [], {}
        for child, child_path in children:
            node, child_names = parse_input(child, child_path, ctx)
            nodes.append(node)
            for name, where in child_names.items():
                if kind == "union":  # union members may share a name
                    names.setdefault(name, where)
                else:
                    _claim(names, name, where)
        return COMBINERS[kind](tuple(nodes)), names
    builders = {"pfs": (_pfs, PFS_FIELDS), "atom": (_pfs, PFS_FIELDS),
                "cron": (_cron, CRON_FIELDS), "git": (_git, GIT_FIELDS)}
    build, names_ = builders[kind]
    leaf = build(Fields(f.raw(kind), at, names_), ctx)
    return leaf, {leaf.name: at}


def parse_v1_inputs(value: Any, path: str, ctx: InputContext) -> Input | None:
    """1.x ``inputs: [{repo: {name}, method, ...}]`` -> one pfs input, a cross of them, or None."""
    if not isinstance(value, list):
        raise SpecError(path, f"expected an array of inputs, got {describe(value)}")
    leaves, names = [], {}
    for i, item in enumerate(value):
        at = join(path, i)
        f = Fields(item, at, V1_INPUT_FIELDS)
        if not f.has("repo"):
            raise f.fail("repo", 'required: the input repo, as {"name": "..."}')
        if isinstance(f.raw("repo"), str):
            repo = f.name("repo", "repo")
        else:
            repo = Fields(f.raw("repo"), f.at("repo"), ("name",)).name("name", "repo")
            if not repo:
                raise SpecError(join(f.at("repo"), "name"), "required: the input repo's name")
        glob = f.text("glob")
        _check_glob(f, glob)
        leaf = PfsInput(
            name=_input_name(f, repo, 1), repo=repo,
            glob="/" + glob if glob and not glob.startswith("/") else glob,
            branch=f.name("branch", "branch", "master"), lazy=f.flag("lazy"),
            method=_method_of(f), run_empty=f.flag("run_empty"))
        _claim(names, leaf.name, at)
        leaves.append(leaf)
    if not leaves:
        return None
    return leaves[0] if len(leaves) == 1 else CrossInput(tuple(leaves))


# ------------------------------------------------------------------ to JSON


def compact(d: dict[str, Any]) -> dict[str, Any]:
    """Drop unset values, as Go's omitempty does."""
    return {k: v for k, v in d.items() if v not in (None, "", False, 0, (), [], {})}


def method_to_dict(m: Method) -> dict[str, str]:
    return {"partition": m.partition, "incremental": m.incremental}


def input_to_dict(node: Input) -> dict[str, Any]:
    if isinstance(node, PfsInput):
        body = compact({
            "name": node.name, "repo": node.repo, "branch": node.branch, "commit": node.commit,
            "glob": node.glob, "lazy": node.lazy, "empty_files": node.empty_files,
            "join_on": node.join_on, "group_by": node.group_by, "outer_join": node.outer_join,
            "s3": node.s3, "run_empty": node.run_empty,
            "trigger": compact(vars(node.trigger)) if node.trigger else None,
            "method": method_to_dict(node.method) if node.method else None})
        return {"pfs": body}
    if isinstance(node, CronInput):
        start = node.start.isoformat().replace("+00:00", "Z") if node.start else None
        return {"cron": compact({"name": node.name, "spec": node.spec, "repo": node.repo,
                                 "start": start, "overwrite": node.overwrite})}
    if isinstance(node, GitInput):
        return {"git": compact({"URL": node.url, "name": node.name, "branch": node.branch})}
    return {node.kind: [input_to_dict(child) for child in node.inputs]}
