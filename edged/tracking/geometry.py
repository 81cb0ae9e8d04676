"""Points, polygons and directed segments in source pixels.

Sides of a directed line A->B are signed distances ``cross(B - A, P - A) / |B - A|``; in
image coordinates (y down) a positive distance is on the right-hand side of A->B as seen
on screen (below a line drawn left to right).
"""

from typing import Callable, Dict, Sequence, Tuple

Point = Tuple[float, float]
Box = Sequence[float]  # x1, y1, x2, y2

#: Where on its box an object is: the point tested against zones and lines, by name.
ANCHORS: Dict[str, Callable[[Box], Point]] = {
    "bottom_center": lambda b: ((b[0] + b[2]) / 2.0, float(b[3])),
    "center": lambda b: ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0),
    "top_center": lambda b: ((b[0] + b[2]) / 2.0, float(b[1])),
    "bottom_left": lambda b: (float(b[0]), float(b[3])),
    "bottom_right": lambda b: (float(b[2]), float(b[3])),
}

#: How config points are given: source pixels, or fractions of the frame's width and height.
UNITS = ("pixels", "fraction")


def to_pixels(
    points: Sequence[Sequence[float]], units: str, size: Tuple[int, int]
) -> Tuple[Point, ...]:
    """Config points -> source pixels for a frame of ``size`` (width, height)."""
    if units == "fraction":
        return tuple((float(x) * size[0], float(y) * size[1]) for x, y in points)
    return tuple((float(x), float(y)) for x, y in points)


def signed_distance(a: Point, b: Point, p: Point) -> float:
    """Distance of ``p`` from the line through a and b; positive on the right of a->b."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = (dx * dx + dy * dy) ** 0.5 or 1.0
    return (dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / length


def _orient(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    """For p collinear with a-b: whether it lies within the segment's extent."""
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether segment p1-p2 meets segment q1-q2 (touching counts)."""
    d1, d2 = _orient(q1, q2, p1), _orient(q1, q2, p2)
    d3, d4 = _orient(p1, p2, q1), _orient(p1, p2, q2)
    if d1 * d2 < 0 and d3 * d4 < 0:
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def point_in_polygon(p: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule (a ray to the right crosses the edges an odd number of times)."""
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            if x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
    return inside
