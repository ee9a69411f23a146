"""The accuracy–latency Pareto front (hwnas/search/pareto.py) against a brute-force O(n^2) definition, and
``pareto.json`` / ``pareto.png`` written, read back, and refused in one line when broken."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hwnas.errors import HwnasError
from hwnas.search.pareto import ParetoPoint, front_indices, group_fronts, load_pareto, pareto_front, write_pareto

ARCH = {"space": "tiny", "resolution": 32, "choices": ["mb3_k3", "skip"]}


def _point(accuracy: float, latency_ms: float, measured: bool = True, kind: str = "supernet",
           source: str = "evolution") -> ParetoPoint:
    return ParetoPoint(ARCH, accuracy, latency_ms, measured, source, kind)


def _brute_front(points: list[ParetoPoint]) -> set[int]:
    """The definition, independently: not dominated by any point, and the first of its exact duplicates."""

    def dominates(a: ParetoPoint, b: ParetoPoint) -> bool:
        no_worse = a.latency_ms <= b.latency_ms and a.accuracy >= b.accuracy
        return no_worse and (a.latency_ms < b.latency_ms or a.accuracy > b.accuracy)

    def same(a: ParetoPoint, b: ParetoPoint) -> bool:
        return a.latency_ms == b.latency_ms and a.accuracy == b.accuracy

    return {i for i, p in enumerate(points)
            if not any(dominates(q, p) for q in points) and not any(same(q, p) for q in points[:i])}


def _random_points(rng: random.Random, count: int) -> list[ParetoPoint]:
    """Values on a coarse grid so that ties in latency, in accuracy and exact duplicates are frequent."""
    return [_point(rng.randint(0, 6) / 6, float(rng.randint(1, 6)), rng.random() < 0.5) for _ in range(count)]


@pytest.mark.parametrize("seed", range(300))
def test_front_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    points = _random_points(rng, rng.randint(0, 14))
    indices = front_indices(points)
    assert len(indices) == len(set(indices))
    assert set(indices) == _brute_front(points)
    latencies = [points[i].latency_ms for i in indices]
    accuracies = [points[i].accuracy for i in indices]
    assert latencies == sorted(latencies) and len(set(latencies)) == len(latencies)
    assert accuracies == sorted(accuracies) and len(set(accuracies)) == len(accuracies)
    assert pareto_front(points) == [points[i] for i in indices]


def test_ties_and_duplicates_keep_the_first_deterministically() -> None:
    slow_good, fast_bad = _point(0.9, 3.0), _point(0.5, 1.0)
    duplicate_a, duplicate_b = _point(0.7, 2.0, source="a"), _point(0.7, 2.0, source="b")
    same_latency_worse, same_accuracy_slower = _point(0.6, 2.0), _point(0.7, 2.5)
    points = [slow_good, duplicate_a, same_latency_worse, duplicate_b, fast_bad, same_accuracy_slower]
    assert front_indices(points) == [4, 1, 0]
    assert front_indices(points[::-1]) == [1, 2, 5]  # reversed: duplicate_b comes first and is kept
    assert [p.source for p in pareto_front(points[::-1])] == ["evolution", "b", "evolution"]
    assert front_indices([]) == []


def test_groups_are_not_mixed() -> None:
    """A predicted point faster and better than a measured one does not push the measured one off its front."""
    points = [_point(0.8, 2.0, measured=True), _point(0.9, 1.0, measured=False),
              _point(0.95, 5.0, measured=True, kind="trained")]
    fronts = group_fronts(points)
    assert fronts == {(True, "trained"): [2], (True, "supernet"): [0], (False, "supernet"): [1]}
    assert front_indices(points) == [1, 2]  # over everything, the measured supernet point would be dominated


def test_write_load_round_trip_and_png(tmp_path: Path) -> None:
    rng = random.Random(7)
    points = [_point(rng.random(), rng.uniform(1, 10), rng.random() < 0.5, rng.choice(["supernet", "trained"]),
                     rng.choice(["evolution", "random", "baseline"])) for _ in range(25)]
    points.append(ParetoPoint("ir_r1_k3_e6", 0.5, 2.5, False, "derived"))
    json_path, png_path = tmp_path / "run" / "pareto.json", tmp_path / "run" / "pareto.png"
    assert write_pareto(json_path, png_path, points, "test front", 5.0) == json_path
    loaded, front = load_pareto(json_path)
    assert loaded == points
    measured_trained = [i for i, p in enumerate(points) if p.measured and p.accuracy_kind == "trained"]
    assert front == [measured_trained[i] for i in front_indices([points[i] for i in measured_trained])]
    data = json.loads(json_path.read_text())
    assert data["target_ms"] == 5.0 and data["front_group"] == {"measured": True, "accuracy_kind": "trained"}
    assert {(f["measured"], f["accuracy_kind"]) for f in data["fronts"]} == {
        (p.measured, p.accuracy_kind) for p in points}
    png = png_path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["pareto.json", "pareto.png"]  # no temporary left


def test_only_predicted_points_and_no_png(tmp_path: Path) -> None:
    path = tmp_path / "pareto.json"
    points = [_point(0.6, 1.0, measured=False), _point(0.5, 2.0, measured=False)]
    write_pareto(path, None, points, "predicted only", None)
    assert load_pareto(path) == (points, [0])
    assert not (tmp_path / "pareto.png").exists()
    write_pareto(path, tmp_path / "empty.png", [], "nothing", None)
    assert load_pareto(path) == ([], [])
    assert (tmp_path / "empty.png").read_bytes().startswith(b"\x89PNG")


BAD_FILES = {
    "not json": ("{", "not valid JSON"),
    "a list": ("[]", "expected a JSON object"),
    "no front": (json.dumps({"points": []}), "missing field 'front'"),
    "front out of range": (json.dumps({"points": [], "front": [0]}), "field 'front'"),
    "front a bool": (json.dumps({"points": [_point(0.5, 1.0).to_dict()], "front": [True]}), "field 'front'"),
    "point not an object": (json.dumps({"points": [3], "front": []}), "points[0]: expected a JSON object"),
    "point missing accuracy": (json.dumps({"points": [{"arch": "x", "latency_ms": 1.0, "measured": True,
                                                       "source": "s"}], "front": []}), "missing field 'accuracy'"),
    "latency a string": (json.dumps({"points": [{**_point(0.5, 1.0).to_dict(), "latency_ms": "1"}], "front": []}),
                         "field 'latency_ms'"),
    "unknown kind": (json.dumps({"points": [{**_point(0.5, 1.0).to_dict(), "accuracy_kind": "x"}], "front": []}),
                     "accuracy_kind 'x'"),
    "negative latency": (json.dumps({"points": [{**_point(0.5, 1.0).to_dict(), "latency_ms": -1}], "front": []}),
                         "latency_ms >= 0"),
    "unknown field": (json.dumps({"points": [{**_point(0.5, 1.0).to_dict(), "flops": 1}], "front": []}),
                      "unknown field 'flops'"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    path = tmp_path / "pareto.json"
    path.write_text(text)
    with pytest.raises(HwnasError) as caught:
        load_pareto(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and expected in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HwnasError, match="no such pareto file"):
        load_pareto(tmp_path / "nope.json")


@pytest.mark.parametrize("accuracy, latency, kind", [(float("nan"), 1.0, "supernet"), (0.5, float("inf"), "supernet"),
                                                     (0.5, 1.0, "retrained")])
def test_point_refuses_what_cannot_be_placed(accuracy: float, latency: float, kind: str) -> None:
    with pytest.raises(ValueError):
        _point(accuracy, latency, kind=kind)
