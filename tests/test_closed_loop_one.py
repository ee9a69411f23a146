"""The one closed loop (:func:`hwnas.search.closed_loop.close_loop`) under both policies, on a scripted device.

A toy latency model of the tiny space makes every decode derivable by hand: layer 0 costs ``scale x (1, 2, 4)`` ms
(``k3_e3``, ``k5_e3``, ``k3_e6``), every other candidate is free, and the search prefers the slower ops of layer 0
(log-probabilities -2, -1, 0) and ``k3_e3`` elsewhere. So the decode under a target t is the slowest of
a1 = 1, a2 = 2, a4 = 4 (x scale) that fits. The device measures ``factor x`` the unscaled cost. The expected targets
below are derived by hand from the policies' rules (docs/search.md, "One closed loop, two policies", and step 4).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from hwnas.latency.estimator import LatencyEstimator, TableEstimator
from hwnas.runtimes.protocol import Stats
from hwnas.search.aim import RefitPolicy
from hwnas.search.checkpoint import RunCheckpoint
from hwnas.search.closed_loop import (LoopMeter, StepPolicy, checkpointed_meter, close_loop, loop_aim,
                                      loop_policy)
from hwnas.search.records import Attempt, LoopStep, Measurement, PairedMeasurement, arch_id
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import Architecture, SearchSpace, get_space
from tests.test_search_run import write_synthetic_table

COSTS = (1.0, 2.0, 4.0)  # layer 0's candidates, unscaled


class Toy(LatencyEstimator):
    """Layer 0 costs ``scale x COSTS``; refits (a kind with ``supports_refit`` at level 1 ms) by moving its scale
    halfway, geometrically, to measured / unscaled of the newest row: it learns, but not all at once."""

    supports_refit = True

    def __init__(self, space: SearchSpace, scale: float = 1.0, rows: tuple = (), level: float | None = 1.0) -> None:
        self.space, self.scale, self.rows, self.reference_ms = space, scale, rows, level
        self.refits: list[dict[str, Any]] = []

    def layer_costs_ms(self) -> list[list[float]]:
        return [[self.scale * c for c in COSTS]] + [[0.0] * len(layer.names) for layer in self.space.layers[1:]]

    def fixed_ms(self) -> float:
        return 0.0

    def with_rows(self, archs: list[Architecture], ms: list[float], weight: float = 1.0, source: str = "") -> Toy:
        self.refits.append({"archs": [arch_id(a) for a in archs], "ms": list(ms), "weight": weight, "source": source})
        ratio = ms[-1] / unscaled(archs[-1])
        return Toy(self.space, math.sqrt(self.scale * ratio), self.rows + tuple(zip(archs, ms)))

    def for_space(self, space: SearchSpace) -> Toy:
        return self


def unscaled(arch: Architecture) -> float:
    return COSTS[("k3_e3", "k5_e3", "k3_e6").index(arch.choices[0])]


@pytest.fixture
def toy() -> dict[str, Any]:
    space = get_space("tiny", 32, 10)
    log_probs = [[-2.0, -1.0, 0.0]] + [[0.0] + [-5.0] * (len(layer.names) - 1) for layer in space.layers[1:]]
    rest = ["k3_e3"] * (len(space.layers) - 1)
    archs = {name: space.arch([first] + rest) for name, first in (("a1", "k3_e3"), ("a2", "k5_e3"), ("a4", "k3_e6"))}
    return {"space": space, "log_probs": log_probs, **archs}


class Device:
    """The scripted device: ``factor x`` the unscaled cost, as a paired record at level 1 ms (``paired``) or an end
    to end :class:`Measurement`; remembers what it measured."""

    def __init__(self, factor: float, paired: bool) -> None:
        self.factor, self.paired, self.calls = factor, paired, []

    def __call__(self, arch: Architecture) -> Any:
        ms = self.factor * unscaled(arch)
        self.calls.append(arch_id(arch))
        if self.paired:
            return PairedMeasurement(ms, False, "closed loop", ms, 1.0, {}, [Attempt(ms, False, "closed loop")])
        stats = Stats(median_ms=ms, p10_ms=ms, p90_ms=ms, mean_ms=ms, std_ms=0.0, n=10)
        return Measurement(stats, "closed loop", [Attempt(ms, False, "closed loop")])


def _trace(log: list[LoopStep]) -> tuple[list[str], list[float]]:
    """The steps' architectures, and their target, estimate and measurement in a row."""
    return [step.arch for step in log], [x for s in log for x in (s.table_target_ms, s.estimated_ms, s.measured_ms)]


def _refit_run(toy: dict[str, Any], known: dict[str, Any] | None = None) -> tuple[Any, ...]:
    config = SearchConfig(closed_loop_steps=3, closed_loop_margin=0.05)
    predictor, device = Toy(toy["space"]), Device(0.5, paired=True)
    policy = RefitPolicy(toy["space"], predictor, toy["log_probs"], loop_aim(2.2, 0.05), config)
    arch, log, refitted = close_loop(policy, LoopMeter(device, 3, known=known), 2.2, 0.05)
    return arch, log, refitted, predictor, device


def test_refit_policy_learns_scales_the_target_on_a_repeat_and_keeps_the_slowest_under_the_aim(toy):
    """T = 2.2, margin 0.05: aim 2.09, accepted band [0.9 x 2.09, 2.09] = [1.881, 2.09]; the device is 0.5 x.

    1. scale 1, target = aim 2.09: a2 (2 <= 2.09, within the band of the prediction) measures 1.0: under the band.
       Refit: scale sqrt(1 x 1.0 / 2) = sqrt(0.5); predictions 0.707, 1.414, 2.828.
    2. target 2.09 again: a2 (1.414; a4's 2.828 > 2.09) was measured: not logged; not the fastest (a1), so the
       target is scaled by aim / measured: 2.09 x 2.09 / 1.0 = 4.3681.
    3. target 4.3681: a4 (2.828) measures 2.0: in the band, accepted (no refit). a4 is the slowest under the aim.
    """
    arch, log, refitted, predictor, device = _refit_run(toy)
    assert device.calls == [arch_id(toy["a2"]), arch_id(toy["a4"])]
    archs, figures = _trace(log)
    assert archs == [arch_id(toy["a2"]), arch_id(toy["a4"])]
    assert figures == pytest.approx([2.09, 2.0, 1.0, 2.09 * 2.09 / 1.0, 4.0 * math.sqrt(0.5), 2.0])
    assert all(isinstance(step.measured, PairedMeasurement) for step in log)
    assert arch == toy["a4"]
    assert refitted.scale == pytest.approx(math.sqrt(0.5)) and refitted is not predictor and predictor.scale == 1.0
    assert predictor.refits == [{"archs": [arch_id(toy["a2"])], "ms": [1.0], "weight": 10.0,
                                 "source": "closed loop"}]


class Extrapolating(Toy):
    """A refit that puts every architecture 10 ms lower: the fastest at <= 0 ms."""

    def with_rows(self, archs: list[Architecture], ms: list[float], weight: float = 1.0, source: str = "") -> Toy:
        refit = super().with_rows(archs, ms, weight, source)
        refit.fixed_ms = lambda: -10.0  # type: ignore[method-assign]
        return refit


def test_refit_policy_keeps_the_previous_fit_when_a_refit_goes_below_zero(toy, capsys):
    """As above, but the refit estimates the fastest architecture at 0.707 - 10 ms: it is not taken (one warning
    line); the step scales the target by aim / measured instead, 2.09 x 2.09 / 1.0 = 4.3681 -> a4 (4.0 by the kept
    fit) measures 2.0: in the band, accepted."""
    config = SearchConfig(closed_loop_steps=3, closed_loop_margin=0.05)
    predictor, device = Extrapolating(toy["space"]), Device(0.5, paired=True)
    policy = RefitPolicy(toy["space"], predictor, toy["log_probs"], loop_aim(2.2, 0.05), config)
    arch, log, refitted = close_loop(policy, LoopMeter(device, 3), 2.2, 0.05)
    archs, figures = _trace(log)
    assert archs == [arch_id(toy["a2"]), arch_id(toy["a4"])]
    assert figures == pytest.approx([2.09, 2.0, 1.0, 2.09 * 2.09 / 1.0, 4.0, 2.0])
    assert arch == toy["a4"] and refitted is predictor and policy.refused == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if "closed loop: refitting" in line]
    assert len(warnings) == 1 and "keeps the previous fit" in warnings[0]


def test_step_policy_brackets_the_table_target(toy):
    """T = 2.2, margin 0.05 (aim 2.09, band [1.881, 2.09]); the device is 0.9 x the table: a2 1.8 (under the band),
    a4 3.6 (over); decode(t) = the slowest of a1, a2, a4 with table latency <= t; ceiling 4; budget 2 (8 proposals).
    With r = 2.09 / 1.8 and s = 2.09 / 3.6:

    t1 = 2.2 -> a2 (1.8 under). t2 = t1 r -> a2 again (consecutive: not logged; exponent 2). t3 = t2 r^2 -> a2
    (exponent 4). t4 = t3 r^4 -> a4 (3.6 over; now bracketed by t3 under and t4 over). t5 = t4 s -> a2 (logged again:
    not consecutive). t6 = t5 r -> a4. t7: t6 s < t5, so sqrt(t5 t6) -> a2. t8: t7 r > t6, so sqrt(t7 t6) -> a4.
    The eighth proposal ends the loop (4 x budget); a2 is the slowest under the aim.
    """
    estimator = Toy(toy["space"], level=None)
    candidates = [toy["a1"], toy["a2"], toy["a4"]]
    decode = lambda t: max((a for a in candidates if unscaled(a) <= t), key=unscaled, default=None)  # noqa: E731
    device = Device(0.9, paired=False)
    policy = StepPolicy(estimator, 2.2, loop_aim(2.2, 0.05), decode, toy["a1"], 4.0)
    arch, log, same = close_loop(policy, LoopMeter(device, 2), 2.2, 0.05)
    r, s = 2.09 / 1.8, 2.09 / 3.6
    t1 = 2.2
    t4 = t1 * r * r**2 * r**4
    t5 = t4 * s
    t6 = t5 * r
    t7 = math.sqrt(t5 * t6)
    t8 = math.sqrt(t7 * t6)
    a2, a4 = arch_id(toy["a2"]), arch_id(toy["a4"])
    assert device.calls == [a2, a4]
    assert [step.arch for step in log] == [a2, a4, a2, a4, a2, a4]
    assert [step.table_target_ms for step in log] == pytest.approx([t1, t4, t5, t6, t7, t8])
    assert [step.measured_ms for step in log] == pytest.approx([1.8, 3.6] * 3)
    assert all(isinstance(step.measured, Measurement) for step in log)
    assert arch == toy["a2"] and same is estimator


def test_policy_chosen_by_capabilities(toy, tmp_path: Path):
    space, log_probs = toy["space"], toy["log_probs"]
    config = SearchConfig()
    assert isinstance(loop_policy(space, Toy(space), 2.2, 4.0, log_probs, config), RefitPolicy)
    assert isinstance(loop_policy(space, Toy(space, level=None), 2.2, 4.0, log_probs, config), StepPolicy)
    table = TableEstimator(write_synthetic_table(tmp_path / "t.json"), space)
    assert isinstance(loop_policy(space, table, 1.0, 2.0, log_probs, config), StepPolicy)


def test_zero_budget_measures_nothing_and_returns_each_policys_fallback(toy):
    config = SearchConfig(closed_loop_steps=0, closed_loop_margin=0.05)
    device = Device(0.5, paired=True)
    policy = RefitPolicy(toy["space"], Toy(toy["space"]), toy["log_probs"], loop_aim(2.2, 0.05), config)
    assert close_loop(policy, LoopMeter(device, 0), 2.2, 0.05)[:2] == (toy["a2"], [])  # under the aim 2.09
    step = StepPolicy(Toy(toy["space"]), 4.5, loop_aim(4.5, 0.05), lambda t: None, toy["a1"], 4.0)
    assert close_loop(step, LoopMeter(device, 0), 4.5, 0.05)[:2] == (toy["a1"], []) and device.calls == []


# The records the previous code wrote in a run's checkpoint: the predictor's loop a plain dict (paired_record),
# the table's loop Measurement.to_dict(). An interrupted run from before the one loop must resume from them.
OLD_PAIRED = {"median_ms": 1.0, "noisy": False, "source": "closed loop", "ratio": 1.0, "reference_ms": 1.0,
              "paired": {"ratio": 1.0, "pairs": 9}, "attempts": [{"median_ms": 1.0, "noisy": False,
                                                                  "source": "closed loop"}]}
OLD_END_TO_END = {"median_ms": 1.8, "p10_ms": 1.8, "p90_ms": 1.8, "mean_ms": 1.8, "std_ms": 0.0, "n": 10,
                  "round_medians_ms": [], "noisy": False, "remeasured": 0, "source": "closed loop",
                  "attempts": [{"median_ms": 1.8, "noisy": False, "source": "closed loop"}]}


def test_a_checkpoint_of_the_previous_records_resumes(toy, tmp_path: Path):
    """A checkpoint file holding the previous code's record of the first measurement: the resumed loop measures only
    the rest, decodes as the uninterrupted one, reads the old record as the typed one, and writes new records in the
    same JSON (readable by a weights-only load)."""
    _, reference_log, _, _, _ = _refit_run(toy)
    checkpoint = RunCheckpoint(tmp_path, {"seed": 0})
    checkpoint.record("derived", arch_id(toy["a2"]), OLD_PAIRED)
    checkpoint.record("baseline", arch_id(toy["a2"]), OLD_END_TO_END)
    resumed = RunCheckpoint.open(tmp_path, {"seed": 0})
    config = SearchConfig(closed_loop_steps=3, closed_loop_margin=0.05)
    device = Device(0.5, paired=True)
    policy = RefitPolicy(toy["space"], Toy(toy["space"]), toy["log_probs"], loop_aim(2.2, 0.05), config)
    arch, log, _ = close_loop(policy, checkpointed_meter(resumed, "derived", device, 3), 2.2, 0.05)
    assert device.calls == [arch_id(toy["a4"])] and arch == toy["a4"]
    assert _trace(log) == _trace(reference_log) and log[0].measured == PairedMeasurement.from_dict(OLD_PAIRED)
    written = RunCheckpoint.open(tmp_path, {"seed": 0}).measured("derived")
    assert written[arch_id(toy["a4"])] == log[1].measured.to_dict() and written[arch_id(toy["a2"])] == OLD_PAIRED

    table_device = Device(0.9, paired=False)
    candidates = [toy["a1"], toy["a2"], toy["a4"]]
    decode = lambda t: max((a for a in candidates if unscaled(a) <= t), key=unscaled, default=None)  # noqa: E731
    step = StepPolicy(Toy(toy["space"], level=None), 2.2, loop_aim(2.2, 0.05), decode, toy["a1"], 4.0)
    _, steps, _ = close_loop(step, checkpointed_meter(resumed, "baseline", table_device, 2), 2.2, 0.05)
    assert table_device.calls == [arch_id(toy["a4"])]
    assert steps[0].measured == Measurement.from_dict(OLD_END_TO_END) and steps[0].measured_ms == 1.8
