"""The accuracy–latency points a search evaluated, their Pareto front, and ``RUN/pareto.json`` / ``RUN/pareto.png``.

A point is one architecture with one accuracy and one latency. Two things make points not comparable, and a front
drawn across them would mislead:

- **the latency kind**: a latency *measured* on the device and one *predicted* by the latency model differ by the
  model's error (often 10-20 %), so a predicted point can "dominate" a measured one only by being mispredicted;
- **the accuracy kind**: a *supernet* accuracy (shared weights) is systematically different from a *trained*
  (from scratch) accuracy of the same network, usually lower, so a trained baseline would dominate every supernet
  candidate for a reason that has nothing to do with its architecture.

So :func:`pareto_front` computes the front of exactly the points it is given (the caller picks one group), and
:func:`write_pareto` writes one front per (latency kind, accuracy kind) group present (``fronts``) plus one
``front``: the front of the most trustworthy group present, in the order measured+trained, measured+supernet,
predicted+trained, predicted+supernet (measured latency first because the latency target is what hwnas promises).

A point may also carry its architecture's peak activation memory (``memory_mb``, :mod:`hwnas.spaces.footprint`;
MemNet's third axis): ``pareto.json`` then also holds ``front_memory``, the front of the same group over (accuracy
up, latency down, memory down) among its points that have one (:func:`front_memory_indices`), and each entry of
``fronts`` its ``memory_indices``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from hwnas.checks import check_fields, check_required, dataclass_hints, field_error
from hwnas.errors import HwnasError
from hwnas.io import atomic_path, read_json_file, write_error, write_json_atomic

ACCURACY_KINDS = ("supernet", "trained")
"""``supernet``: evaluated with the trained supernet's shared weights; ``trained``: trained from scratch."""

GROUP_ORDER = ((True, "trained"), (True, "supernet"), (False, "trained"), (False, "supernet"))
"""(measured, accuracy_kind) groups, most trustworthy first: the first one present gives ``pareto.json``'s front."""

AXES = {"x": "latency_ms", "x_goal": "min", "y": "accuracy", "y_goal": "max"}
MEMORY_AXES = {**AXES, "z": "memory_mb", "z_goal": "min"}


@dataclass(frozen=True)
class ParetoPoint:
    """One evaluated architecture: its accuracy, its latency, and where each number came from.

    ``arch`` is the architecture's JSON (:meth:`hwnas.spaces.Architecture.to_dict`) or its one-line human form;
    ``measured`` says whether ``latency_ms`` was measured on the device (True) or predicted (False); ``source``
    names who evaluated it (``evolution``, ``mnas``, ``closed_loop``, ``baseline``, ``random``, ...);
    ``memory_mb``: the architecture's peak activation memory in MiB (None when not known).
    """

    arch: dict[str, Any] | str
    accuracy: float
    latency_ms: float
    measured: bool
    source: str
    accuracy_kind: str = "supernet"
    memory_mb: float | None = None

    def __post_init__(self) -> None:
        """A point without a finite accuracy and latency has no place on the plot: the caller leaves failed
        evaluations out rather than writing ``null`` into a front."""
        if not (math.isfinite(self.accuracy) and math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"ParetoPoint: expected a finite accuracy and latency_ms >= 0, got "
                             f"{self.accuracy!r}, {self.latency_ms!r}")
        if self.memory_mb is not None and not (math.isfinite(self.memory_mb) and self.memory_mb >= 0):
            raise ValueError(f"ParetoPoint: expected memory_mb >= 0 or null, got {self.memory_mb!r}")
        if self.accuracy_kind not in ACCURACY_KINDS:
            raise ValueError(f"ParetoPoint: accuracy_kind {self.accuracy_kind!r} is not one of {ACCURACY_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def front_indices(points: Sequence[ParetoPoint]) -> list[int]:
    """Indices of the non-dominated points for (max accuracy, min latency), by increasing latency.

    ``a`` dominates ``b`` when ``a.latency_ms <= b.latency_ms`` and ``a.accuracy >= b.accuracy`` with one of them
    strict. Of points equal in both, only the first in ``points`` is kept, so the front has no duplicates and the
    same input always gives the same front. One sort by (latency, -accuracy, index), then a sweep that keeps a point
    when its accuracy beats every faster point's: O(n log n). Along the front both latency and accuracy increase
    strictly.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i].latency_ms, -points[i].accuracy, i))
    front: list[int] = []
    best = -math.inf
    for index in order:
        if points[index].accuracy > best:
            front.append(index)
            best = points[index].accuracy
    return front


def front_memory_indices(points: Sequence[ParetoPoint]) -> list[int]:
    """Indices of the points with a ``memory_mb`` that no other such point dominates for (max accuracy, min latency,
    min memory), by increasing latency (then decreasing accuracy, then increasing memory).

    ``a`` dominates ``b`` when it is no worse on all three axes and better on one; of points equal on all three only
    the first is kept. In the sort order a dominating point comes before the point it dominates, and a dominated
    point is dominated by a front point (dominance is transitive), so each point is checked against the front kept
    so far: O(n f) for a front of f points.
    """
    with_memory = [i for i, p in enumerate(points) if p.memory_mb is not None]
    order = sorted(with_memory, key=lambda i: (points[i].latency_ms, -points[i].accuracy, points[i].memory_mb, i))
    front: list[int] = []
    for index in order:
        p = points[index]
        if not any(_no_worse(points[kept], p) for kept in front):
            front.append(index)
    return front


def _no_worse(a: ParetoPoint, b: ParetoPoint) -> bool:
    """``a`` is at least as good as ``b`` on all three axes (it dominates ``b``, or equals it)."""
    assert a.memory_mb is not None and b.memory_mb is not None
    return a.latency_ms <= b.latency_ms and a.accuracy >= b.accuracy and a.memory_mb <= b.memory_mb


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The non-dominated points of ``points`` (see :func:`front_indices`), by increasing latency.

    The front is over the points given, whatever their kinds: pass one group (see :func:`groups`) when mixing
    measured with predicted latencies or supernet with trained accuracies would mislead.
    """
    return [points[i] for i in front_indices(points)]


def groups(points: Sequence[ParetoPoint]) -> dict[tuple[bool, str], list[int]]:
    """Indices of ``points`` per (measured, accuracy_kind) group present, in :data:`GROUP_ORDER`."""
    found = {key: [i for i, p in enumerate(points) if (p.measured, p.accuracy_kind) == key] for key in GROUP_ORDER}
    return {key: indices for key, indices in found.items() if indices}


def group_fronts(points: Sequence[ParetoPoint]) -> dict[tuple[bool, str], list[int]]:
    """Per group present, the indices into ``points`` of that group's front, by increasing latency."""
    fronts = {}
    for key, indices in groups(points).items():
        fronts[key] = [indices[i] for i in front_indices([points[j] for j in indices])]
    return fronts


def write_pareto(path_json: Path, path_png: Path | None, points: Sequence[ParetoPoint], title: str,
                 target_ms: float | None) -> Path:
    """Write ``pareto.json`` (and ``pareto.png`` when ``path_png`` is given), both atomically; return ``path_json``.

    The JSON holds every point, ``fronts`` (one per (measured, accuracy_kind) group present, as indices into
    ``points``) and ``front``: the front of the first group present in :data:`GROUP_ORDER`. See the module's
    docstring for why there is no single front across groups.
    """
    points = list(points)
    fronts = group_fronts(points)
    primary = next(iter(fronts), None)
    data = {
        "title": title,
        "target_ms": target_ms,
        "axes": AXES,
        "points": [p.to_dict() for p in points],
        "front": fronts[primary] if primary else [],
        "front_group": _group_dict(primary) if primary else None,
        "fronts": [{**_group_dict(key), "indices": indices, "memory_indices": _memory_front(points, key)}
                   for key, indices in fronts.items()],
        "memory_axes": MEMORY_AXES,
        "front_memory": _memory_front(points, primary) if primary else [],
    }
    write_json_atomic(path_json, data)
    if path_png is not None:
        plot_pareto(path_png, points, fronts, title, target_ms)
    return Path(path_json)


def _memory_front(points: Sequence[ParetoPoint], key: tuple[bool, str]) -> list[int]:
    """The 3-D front (:func:`front_memory_indices`) of group ``key``, as indices into ``points``."""
    indices = groups(points)[key]
    return [indices[i] for i in front_memory_indices([points[j] for j in indices])]


def load_pareto(path: str | Path) -> tuple[list[ParetoPoint], list[int]]:
    """The points of a ``pareto.json`` and its front (indices into the points); a file that is not one raises one
    line naming the file, the field and what was expected."""
    data = read_json_file(path, "pareto file")
    source = str(path)
    if not isinstance(data, dict):
        raise HwnasError(f"{source}: expected a JSON object with points and front, got {type(data).__name__}")
    check_required(data, ("points", "front"), source)
    if not isinstance(data["points"], list):
        raise field_error(source, "points", "a list of points", data["points"])
    points = [_point_from_dict(item, f"{source}: points[{i}]") for i, item in enumerate(data["points"])]
    front = data["front"]
    if not isinstance(front, list) or not all(_is_index(i, len(points)) for i in front):
        raise field_error(source, "front", f"a list of indices into the {len(points)} points", front)
    return points, front


def _point_from_dict(item: Any, source: str) -> ParetoPoint:
    if not isinstance(item, dict):
        raise HwnasError(f"{source}: expected a JSON object, got {type(item).__name__}")
    check_fields(item, dataclass_hints(ParetoPoint), source)
    check_required(item, ("arch", "accuracy", "latency_ms", "measured", "source"), source)
    try:
        return ParetoPoint(**item)
    except ValueError as exc:
        raise HwnasError(f"{source}: {str(exc).removeprefix('ParetoPoint: ')}") from None


def _is_index(value: Any, count: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def _group_dict(key: tuple[bool, str]) -> dict[str, Any]:
    return {"measured": key[0], "accuracy_kind": key[1]}


def _group_label(key: tuple[bool, str]) -> str:
    return f"front: {'measured' if key[0] else 'predicted'} latency, {key[1]} accuracy"


def plot_pareto(path: Path, points: Sequence[ParetoPoint], fronts: dict[tuple[bool, str], list[int]], title: str,
                target_ms: float | None) -> Path:
    """All points (filled: measured latency, hollow: predicted; circle: supernet accuracy, square: trained; colour:
    source), each group's front as a step line, and the target as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    sources = sorted({p.source for p in points})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(sources)}
    markers = {"supernet": "o", "trained": "s"}
    fig, ax = plt.subplots(figsize=(10, 5))
    for p in points:
        colour = colours[p.source]
        ax.scatter(p.latency_ms, p.accuracy, s=30, marker=markers[p.accuracy_kind], edgecolors=colour,
                   facecolors=colour if p.measured else "none", linewidths=1.2, zorder=3)
    styles = {True: "-", False: "--"}
    for key, indices in fronts.items():
        xs, ys = [points[i].latency_ms for i in indices], [points[i].accuracy for i in indices]
        ax.step(xs, ys, where="post", ls=styles[key[0]], lw=1.2, color="black" if key[1] == "trained" else "gray",
                label=_group_label(key), zorder=2)
    if target_ms is not None:
        ax.axvline(target_ms, color="tab:red", lw=1, label=f"target {target_ms:.3g} ms")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="", marker="o", color=colours[s]) for s in sources]
    labels += sources
    handles += [Line2D([], [], ls="", marker="o", color="k"), Line2D([], [], ls="", marker="o", color="k", mfc="none"),
                Line2D([], [], ls="", marker="o", color="gray"), Line2D([], [], ls="", marker="s", color="gray")]
    labels += ["measured latency (filled)", "predicted latency (hollow)", "supernet accuracy (circle)",
               "trained accuracy (square)"]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a point
    ax.set(xlabel="latency (ms)", ylabel="accuracy", title=title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            try:
                fig.savefig(tmp, format="png", dpi=110)
            except OSError as exc:
                raise write_error(Path(path), exc) from None
    finally:
        plt.close(fig)
    return Path(path)
