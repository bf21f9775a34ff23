"""Charts for the console, laid out here and drawn as inline SVG by the templates: no
JavaScript, nothing fetched by the browser. Functions return plain geometry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f")


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    points: list[Point]

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    series: list[Series]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    diagonal: tuple[Point, Point] | None = None


MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 16, 12, 36


def _y(value: float, low: float, high: float, height: int) -> float:
    span = high - low or 1.0
    inner = height - MARGIN_TOP - MARGIN_BOTTOM
    return MARGIN_TOP + inner * (1.0 - (value - low) / span)


def _x(index: float, count: float, width: int) -> float:
    inner = width - MARGIN_LEFT - MARGIN_RIGHT
    return MARGIN_LEFT + (inner * index / count if count else inner / 2)


def accuracy_chart(
    rows: Sequence[tuple[str, int, float]], width: int = 640, height: int = 220
) -> Chart | None:
    """Accuracy of each version in creation order, one line per generation.
    ``rows``: (version label, generation, accuracy), oldest first."""
    if not rows:
        return None
    values = [r[2] for r in rows]
    low = max(0.0, min(values) - 0.05)
    high = min(1.0, max(values) + 0.05)
    last = max(len(rows) - 1, 1)
    by_generation: dict[int, list[Point]] = {}
    for index, (label, generation, value) in enumerate(rows):
        point = Point(_x(index, last, width), _y(value, low, high, height), f"{label}: {value:.3f}")
        by_generation.setdefault(generation, []).append(point)
    series = [
        Series(f"generation {g}", PALETTE[i % len(PALETTE)], points)
        for i, (g, points) in enumerate(sorted(by_generation.items()))
    ]
    ticks = [low + (high - low) * k / 4 for k in range(5)]
    return Chart(
        width,
        height,
        series,
        [Tick(_y(t, low, high, height), f"{t:.2f}") for t in ticks],
        [Tick(_x(i, last, width), r[0]) for i, r in enumerate(rows)],
    )


def calibration_chart(
    bins: Sequence[dict[str, float]], width: int = 320, height: int = 280
) -> Chart | None:
    """The reliability curve: accuracy against mean confidence per bin, with the diagonal
    a calibrated model would follow."""
    if not bins:
        return None

    def x(value: float) -> float:
        return MARGIN_LEFT + (width - MARGIN_LEFT - MARGIN_RIGHT) * value

    points = [
        Point(x(b["confidence"]), _y(b["accuracy"], 0.0, 1.0, height), _bin_label(b)) for b in bins
    ]
    ticks = [k / 4 for k in range(5)]
    return Chart(
        width,
        height,
        [Series("model", PALETTE[0], points)],
        [Tick(_y(t, 0.0, 1.0, height), f"{t:.2f}") for t in ticks],
        [Tick(x(t), f"{t:.2f}") for t in ticks],
        diagonal=(
            Point(x(0.0), _y(0.0, 0.0, 1.0, height)),
            Point(x(1.0), _y(1.0, 0.0, 1.0, height)),
        ),
    )


def _bin_label(b: dict[str, float]) -> str:
    return (
        f"confidence {b['confidence']:.2f}, accuracy {b['accuracy']:.2f}, {int(b['count'])} images"
    )


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    label: str
    x: float
    y: float
    link: str | None = None


@dataclass(frozen=True)
class Edge:
    source: Node
    target: Node


@dataclass
class Graph:
    width: int
    height: int
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


COLUMNS = {"base": 70, "vector": 270, "version": 470, "next": 650}
ROW = 34


def lineage_graph(
    bases: Sequence[tuple[str, str]],
    vectors: Sequence[tuple[str, str, str]],
    versions: Sequence[tuple[str, str, str, list[str]]],
    next_bases: Sequence[tuple[str, str, str]],
    width: int = 760,
) -> Graph | None:
    """base -> vectors -> version -> next generation, one column each.

    ``bases``: (id, label); ``vectors``: (id, label, base id); ``versions``: (id, label,
    base id, input vector ids); ``next_bases``: (id, label, source version id).
    """
    if not versions:
        return None
    tallest = max(len(bases), len(vectors), len(versions), len(next_bases), 1)
    graph = Graph(width, 24 + tallest * ROW)
    placed: dict[tuple[str, str], Node] = {}

    def column(kind: str, items: Sequence[tuple[str, str]], link: str | None = None) -> None:
        top = (graph.height - len(items) * ROW) / 2 + ROW / 2
        for row, (item_id, label) in enumerate(items):
            node = Node(
                item_id,
                kind,
                label,
                COLUMNS[kind],
                top + row * ROW,
                link.format(id=item_id) if link else None,
            )
            placed[(kind, item_id)] = node
            graph.nodes.append(node)

    column("base", bases)
    column("vector", [(v[0], v[1]) for v in vectors])
    column("version", [(v[0], v[1]) for v in versions], "/console/versions/{id}")
    column("next", [(b[0], b[1]) for b in next_bases])

    def connect(source: tuple[str, str], target: tuple[str, str]) -> None:
        if source in placed and target in placed:
            graph.edges.append(Edge(placed[source], placed[target]))

    for vector_id, _, base_id in vectors:
        connect(("base", base_id), ("vector", vector_id))
    for version_id, _, base_id, inputs in versions:
        if not inputs:
            connect(("base", base_id), ("version", version_id))
        for vector_id in inputs:
            connect(("vector", vector_id), ("version", version_id))
    for base_id, _, version_id in next_bases:
        connect(("version", version_id), ("next", base_id))
    return graph
