"""The provenance DAG as text: nodes (input repos and pipelines) placed in layers
by provenance, left to right, with edges drawn in box characters. Pure: no
Textual, no I/O, so it is tested alone (tests/test_tui_pps.py); the widget
(tui/widgets/dag.py) colours what this draws.

Method (Sugiyama's, small): a node's layer is one more than its deepest input;
an edge that spans several layers gets a dummy node per layer it crosses (drawn
as a straight line), so edges only join neighbouring layers; the order inside a
layer comes from barycentre sweeps (a node sits near the mean position of its
neighbours), ties broken by name so the drawing is the same every time. Each
edge between two layers that must change row gets a column of its own in the
gap, so parallel edges do not merge into one trunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

BOX_H = 3  # a node is a box: border, name, border
ROW_GAP = 1
MIN_GAP = 4  # columns between two layers
LABEL_MAX = 24

_UP, _DOWN, _LEFT, _RIGHT = 1, 2, 4, 8
_JOIN = {
    _LEFT | _RIGHT: "─", _UP | _DOWN: "│", _DOWN | _RIGHT: "┌", _DOWN | _LEFT: "┐", _UP | _RIGHT: "└",
    _UP | _LEFT: "┘", _UP | _DOWN | _RIGHT: "├", _UP | _DOWN | _LEFT: "┤", _LEFT | _RIGHT | _DOWN: "┬",
    _LEFT | _RIGHT | _UP: "┴", _UP | _DOWN | _LEFT | _RIGHT: "┼", _LEFT: "─", _RIGHT: "─", _UP: "│", _DOWN: "│",
}


@dataclass(frozen=True)
class Node:
    """A repo nobody writes (``kind="repo"``) or a pipeline (``kind="pipeline"``, which
    stands for its output repo too); ``inputs``: the names of the nodes it reads."""

    name: str
    kind: str = "repo"
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int = BOX_H
    layer: int = 0


@dataclass
class Drawing:
    lines: list[str]
    boxes: dict[str, Box] = field(default_factory=dict)  # real nodes only
    layers: list[list[str]] = field(default_factory=list)  # real nodes, in drawing order

    @property
    def width(self) -> int:
        return max((len(line) for line in self.lines), default=0)


def input_repos(node: dict | None) -> list[str]:
    """The repos an input tree (a pipeline spec's ``input``, 2.x names) reads, in order."""
    if not node:
        return []
    out: list[str] = []
    for kind in ("cross", "union", "join", "group"):
        for child in node.get(kind) or []:
            out += [r for r in input_repos(child) if r not in out]
    if "pfs" in node and node["pfs"].get("repo"):
        out.append(node["pfs"]["repo"])
    return out


def graph(repos: Iterable[str], pipelines: Iterable[tuple[str, list[str]]]) -> list[Node]:
    """Nodes from the repos and ``(pipeline, input repos)``: a pipeline's output repo
    is the pipeline's node; an input naming no known repo is still drawn (as a repo)."""
    pipes = {name: tuple(inputs) for name, inputs in pipelines}
    nodes = {r: Node(r) for r in repos if r not in pipes}
    for inputs in pipes.values():
        for r in inputs:
            if r not in pipes and r not in nodes:
                nodes[r] = Node(r)
    for name, inputs in pipes.items():
        nodes[name] = Node(name, "pipeline", tuple(dict.fromkeys(inputs)))
    return sorted(nodes.values(), key=lambda n: n.name)


def assign_layers(nodes: list[Node]) -> dict[str, int]:
    """Longest path from a source: a node's layer is one more than its deepest input's.
    A cycle (which the daemon refuses) is cut where it is found, not looped on."""
    by_name = {n.name: n for n in nodes}
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(name: str) -> int:
        if name in layer:
            return layer[name]
        if name in visiting:
            return 0
        visiting.add(name)
        node = by_name[name]
        d = 1 + max((depth(i) for i in node.inputs if i in by_name), default=-1)
        visiting.discard(name)
        layer[name] = d
        return d

    for n in nodes:
        depth(n.name)
    return layer


def _dummy(src: str, dst: str, layer: int) -> str:
    return f"\0{src}\0{dst}\0{layer}"


def is_dummy(name: str) -> bool:
    return name.startswith("\0")


def order_layers(nodes: list[Node], layer: dict[str, int], sweeps: int = 4) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Layers (each an ordered list of node names, dummies included) and the edges
    between neighbouring layers."""
    edges: list[tuple[str, str]] = []
    count = max(layer.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(count)]
    for n in sorted(nodes, key=lambda n: n.name):
        layers[layer[n.name]].append(n.name)
    for n in sorted(nodes, key=lambda n: n.name):
        for src in n.inputs:
            if src not in layer:
                continue
            prev = src
            for mid in range(layer[src] + 1, layer[n.name]):
                d = _dummy(src, n.name, mid)
                layers[mid].append(d)
                edges.append((prev, d))
                prev = d
            edges.append((prev, n.name))
    preds: dict[str, list[str]] = {}
    succs: dict[str, list[str]] = {}
    for a, b in edges:
        succs.setdefault(a, []).append(b)
        preds.setdefault(b, []).append(a)

    def sort_by(lay: list[str], ref: list[str], links: dict[str, list[str]]) -> list[str]:
        pos = {name: i for i, name in enumerate(ref)}

        def key(name: str) -> tuple[float, int, str]:
            near = [pos[x] for x in links.get(name, []) if x in pos]
            here = lay.index(name)
            return (sum(near) / len(near) if near else here, here, name.lstrip("\0"))

        return sorted(lay, key=key)

    for i in range(sweeps):
        if i % 2 == 0:
            for k in range(1, count):
                layers[k] = sort_by(layers[k], layers[k - 1], preds)
        else:
            for k in range(count - 2, -1, -1):
                layers[k] = sort_by(layers[k], layers[k + 1], succs)
    return layers, edges


class _Canvas:
    def __init__(self) -> None:
        self.text: dict[tuple[int, int], str] = {}
        self.links: dict[tuple[int, int], int] = {}

    def put(self, x: int, y: int, s: str) -> None:
        for i, ch in enumerate(s):
            self.text[(x + i, y)] = ch

    def link(self, x: int, y: int, dirs: int) -> None:
        self.links[(x, y)] = self.links.get((x, y), 0) | dirs

    def hline(self, x1: int, x2: int, y: int) -> None:
        for x in range(min(x1, x2), max(x1, x2) + 1):
            self.link(x, y, (_LEFT if x > min(x1, x2) else 0) | (_RIGHT if x < max(x1, x2) else 0))

    def vline(self, x: int, y1: int, y2: int) -> None:
        for y in range(min(y1, y2), max(y1, y2) + 1):
            self.link(x, y, (_UP if y > min(y1, y2) else 0) | (_DOWN if y < max(y1, y2) else 0))

    def lines(self) -> list[str]:
        cells = set(self.text) | set(self.links)
        if not cells:
            return []
        w = max(x for x, _ in cells) + 1
        h = max(y for _, y in cells) + 1
        rows = [[" "] * w for _ in range(h)]
        for (x, y), dirs in self.links.items():
            rows[y][x] = _JOIN.get(dirs, " ")
        for (x, y), ch in self.text.items():
            rows[y][x] = ch
        return ["".join(r).rstrip() for r in rows]


def _label(name: str) -> str:
    return name if len(name) <= LABEL_MAX else name[: LABEL_MAX - 1] + "…"


def layout(nodes: list[Node]) -> Drawing:
    """Place and draw ``nodes``: repos as square boxes, pipelines as round ones."""
    if not nodes:
        return Drawing([])
    kinds = {n.name: n.kind for n in nodes}
    layer = assign_layers(nodes)
    layers, edges = order_layers(nodes, layer)
    widths = [max((len(_label(n)) + 4 for n in lay if not is_dummy(n)), default=1) for lay in layers]
    # Every edge into a node enters on a row of its own (a box is as tall as its inputs need),
    # so edges only ever split (one source, several targets), never merge: a junction reads
    # one way only.
    incoming: dict[str, list[str]] = {}
    for a, b in edges:
        incoming.setdefault(b, []).append(a)
    heights = {name: BOX_H if is_dummy(name) else max(BOX_H, len(incoming.get(name, [])) + 2)
               for lay in layers for name in lay}
    slot_y: dict[str, int] = {}
    for lay in layers:
        y = 0
        for name in lay:
            slot_y[name] = y
            y += heights[name] + ROW_GAP
    out_y = {name: slot_y[name] + 1 for name in slot_y}
    in_y: dict[tuple[str, str], int] = {}
    for b, sources in incoming.items():
        for i, a in enumerate(sorted(sources, key=lambda a: (out_y[a], a))):
            in_y[(a, b)] = slot_y[b] + 1 + (0 if is_dummy(b) else i)
    bends: list[list[tuple[str, str]]] = [[] for _ in layers]
    for a, b in edges:
        if out_y[a] != in_y[(a, b)]:
            bends[layer_of(a, layer)].append((a, b))
    xs, x = [], 0
    for k, w in enumerate(widths):
        xs.append(x)
        x += w + max(MIN_GAP, len(bends[k]) + 3)
    canvas = _Canvas()
    boxes: dict[str, Box] = {}
    for k, lay in enumerate(layers):
        for name in lay:
            y = slot_y[name]
            if is_dummy(name):
                canvas.hline(xs[k] - 1, xs[k] + widths[k], y + 1)
                continue
            w, h = widths[k], heights[name]
            boxes[name] = Box(xs[k], y, w, h, k)
            tl, tr, bl, br = ("╭", "╮", "╰", "╯") if kinds[name] == "pipeline" else ("┌", "┐", "└", "┘")
            canvas.put(xs[k], y, tl + "─" * (w - 2) + tr)
            canvas.put(xs[k], y + 1, "│ " + _label(name).ljust(w - 4) + " │")
            for row in range(y + 2, y + h - 1):
                canvas.put(xs[k], row, "│" + " " * (w - 2) + "│")
            canvas.put(xs[k], y + h - 1, bl + "─" * (w - 2) + br)
    for k in range(len(layers)):
        # Columns in the gap: edges going up use the left ones, going down the right ones,
        # nearest first, so verticals cross as few horizontals as they can.
        ordered = sorted(bends[k], key=lambda e: (out_y[e[0]], in_y[e]))
        column = {e: i for i, e in enumerate(ordered)}
        gap_x = xs[k] + widths[k]
        for a, b in [e for e in edges if layer_of(e[0], layer) == k]:
            y1, y2 = out_y[a], in_y[(a, b)]
            x2 = xs[k + 1] - 1
            if y1 == y2:
                canvas.hline(gap_x, x2, y1)
            else:
                xm = gap_x + 1 + column[(a, b)]
                canvas.hline(gap_x, xm, y1)
                canvas.vline(xm, y1, y2)
                canvas.hline(xm, x2, y2)
            if not is_dummy(b):
                canvas.put(x2, y2, "▶")
    return Drawing(canvas.lines(), boxes, [[n for n in lay if not is_dummy(n)] for lay in layers])


def layer_of(name: str, layer: dict[str, int]) -> int:
    if is_dummy(name):
        return int(name.rsplit("\0", 1)[1])
    return layer[name]
