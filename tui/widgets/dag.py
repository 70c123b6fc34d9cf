"""The provenance DAG widget: draws ``dag_layout``'s text, each pipeline box
coloured by its last job's state (success green, running yellow, failure red),
with a cursor on one node. Only visible rows are rendered (Line API); a state
change recolours without laying the graph out again."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.widgets.dag_layout import Drawing, Node, layout

STATE_STYLES = {
    "success": Style(color="green", bold=True),
    "running": Style(color="yellow", bold=True),
    "created": Style(color="yellow"),
    "starting": Style(color="yellow"),
    "failure": Style(color="red", bold=True),
    "killed": Style(color="red"),
    "crashing": Style(color="red", bold=True),
}
REPO_STYLE = Style(color="cyan")
EDGE_STYLE = Style(dim=True)
CURSOR_STYLE = Style(reverse=True)


def state_style(state: str | None) -> Style:
    return STATE_STYLES.get(state or "", Style())


class DagView(ScrollView, can_focus=True):
    """``set_graph(nodes)`` lays out; ``set_state(pipeline, state)`` recolours."""

    BINDINGS = [
        Binding("up,k", "move(0,-1)", "up", show=False),
        Binding("down,j", "move(0,1)", "down", show=False),
        Binding("left,h", "move(-1,0)", "left", show=False),
        Binding("right,l", "move(1,0)", "right", show=False),
        Binding("enter", "select", "open"),
    ]

    class Selected(Message):
        """Enter on a node: ``kind`` is ``repo`` or ``pipeline``."""

        def __init__(self, name: str, kind: str) -> None:
            super().__init__()
            self.name, self.kind = name, kind

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.drawing = Drawing([])
        self.kinds: dict[str, str] = {}
        self.states: dict[str, str | None] = {}
        self.cursor: str | None = None

    def set_graph(self, nodes: list[Node], states: dict[str, str | None]) -> None:
        self.drawing = layout(nodes)
        self.kinds = {n.name: n.kind for n in nodes}
        self.states = dict(states)
        if self.cursor not in self.drawing.boxes:
            first = [lay[0] for lay in self.drawing.layers if lay]
            self.cursor = first[0] if first else None
        self.virtual_size = Size(self.drawing.width, len(self.drawing.lines))
        self.refresh()

    def set_state(self, pipeline: str, state: str | None) -> None:
        if self.states.get(pipeline) == state:
            return
        self.states[pipeline] = state
        box = self.drawing.boxes.get(pipeline)
        if box is not None:
            self.refresh_lines(box.y - int(self.scroll_y), box.h)

    def state_of(self, name: str) -> str | None:
        return self.states.get(name)

    # -- the cursor ------------------------------------------------------------

    def action_move(self, dx: int, dy: int) -> None:
        if self.cursor is None:
            return
        layers = self.drawing.layers
        box = self.drawing.boxes[self.cursor]
        k, row = box.layer, layers[box.layer].index(self.cursor)
        if dy:
            row = max(0, min(len(layers[k]) - 1, row + dy))
        if dx:
            k2 = k + dx
            while 0 <= k2 < len(layers) and not layers[k2]:
                k2 += dx
            if not 0 <= k2 < len(layers):
                return
            # The node of the next layer nearest the cursor's row.
            k, row = k2, min(range(len(layers[k2])),
                             key=lambda i: abs(self.drawing.boxes[layers[k2][i]].y - box.y))
        self.cursor = layers[k][row]
        self.refresh()
        b = self.drawing.boxes[self.cursor]
        self.scroll_to_region_of(b.x, b.y, b.w, b.h)

    def scroll_to_region_of(self, x: int, y: int, w: int, h: int) -> None:
        self.scroll_to_region(Region(x, y, w, h), animate=False, immediate=True)

    def action_select(self) -> None:
        if self.cursor is not None:
            self.post_message(self.Selected(self.cursor, self.kinds.get(self.cursor, "repo")))

    # -- rendering ---------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        lines = self.drawing.lines
        if row >= len(lines):
            return Strip.blank(width, self.rich_style)
        text = Text(lines[row], style=EDGE_STYLE)
        for name, b in self.drawing.boxes.items():
            if b.y <= row < b.y + b.h:
                if self.kinds.get(name) == "pipeline":
                    style = state_style(self.states.get(name))
                else:
                    style = REPO_STYLE
                if name == self.cursor and row == b.y + 1:
                    style = style + CURSOR_STYLE
                text.stylize(style, b.x, b.x + b.w)
        segments = list(text.render(self.app.console))
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def render_text(self) -> str:
        """The drawing as plain text (tests, the README's capture)."""
        return "\n".join(self.drawing.lines)

