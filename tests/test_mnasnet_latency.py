"""Latency of the ``mnasnet`` space (not context free: a block takes the previous block's width): the table's exact
sum and its linearization, the decoders on it, and every predictor kind."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.base import PredictorMeta
from hwnas.latency.table import LatencyTable
from hwnas.ops import flat_specs
from hwnas.search import decode_memory
from hwnas.search.decode import (decode_in_band, decode_under_target, fastest_arch, latency_range, most_probable_arch,
                                 slowest_arch)
from hwnas.search.decode_context import chain_extreme
from hwnas.search.decode_memory import decode_within
from hwnas.search.memory_bound import MemoryBound
from hwnas.spaces import get_space
from hwnas.spaces.footprint import MB, arch_footprint

OVERHEAD_MS = 0.01


def _stats(ms: float) -> dict[str, float]:
    return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "mean_ms": ms, "std_ms": 0.0, "n": 1}


@pytest.fixture(scope="module")
def space():
    return get_space("mnasnet", 32, 10)


@pytest.fixture(scope="module")
def table(space) -> LatencyTable:
    """A random positive median per table entry: no smoothness the linearization could lean on."""
    rng = random.Random(0)
    return LatencyTable(device={"name": "synthetic"}, space=space.name, resolution=space.resolution,
                        num_classes=space.num_classes, fingerprint={}, protocol={}, overhead=_stats(OVERHEAD_MS),
                        entries={s.key(): _stats(0.02 + rng.random()) for s in space.all_specs()})


@pytest.fixture(scope="module")
def estimator(table, space) -> TableEstimator:
    return TableEstimator(table, space)


@pytest.fixture(scope="module")
def sampled(estimator, space) -> list[tuple[object, float]]:
    """2000 random architectures and their latencies."""
    return [(a, estimator.latency_ms(a)) for a in space.sample_archs(2000, random.Random(5))]


def _brute_ms(table: LatencyTable, space, arch) -> float:
    """The table sum over every op of the network, each block's layers in their context (overhead once)."""
    parts = [p for spec in space.arch_specs(arch) for p in flat_specs(spec) if not p.is_free]
    return sum(table.median_ms(p.key()) - OVERHEAD_MS for p in parts) + OVERHEAD_MS


def _linear(view, space, arch) -> float:
    costs = view.layer_costs_ms()
    return view.fixed_ms() + sum(costs[l][layer.names.index(c)] for l, (layer, c) in
                                 enumerate(zip(space.layers, arch.choices)))


def _log_probs(space, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.log(rng.dirichlet(np.full(len(layer.names), 0.3))) for layer in space.layers]


def _score(space, lp, arch) -> float:
    return float(sum(v[layer.names.index(c)] for v, layer, c in zip(lp, space.layers, arch.choices)))


def test_table_latency_is_the_exact_sum_and_terms_add_up(estimator, table, space):
    for arch in space.sample_archs(20, random.Random(1)):
        assert estimator.latency_ms(arch) == pytest.approx(_brute_ms(table, space, arch), rel=1e-12)
        assert sum(t.ms for t in estimator.terms(arch)) == pytest.approx(estimator.latency_ms(arch), rel=1e-12)
    # the per-layer costs of layer.candidates alone (previous width 1.0) are not the exact latency
    assert any(abs(super(TableEstimator, estimator).latency_ms(a) - estimator.latency_ms(a)) > 1e-6
               for a in space.sample_archs(5, random.Random(2)))


def test_anchored_costs_are_exact_at_the_anchor_and_every_one_block_change(estimator, table, space):
    rng = random.Random(3)
    anchor = space.random_arch(rng)
    view = estimator.anchored(anchor)
    assert estimator.anchored(anchor) is view  # cached by anchor
    assert _linear(view, space, anchor) == pytest.approx(_brute_ms(table, space, anchor), rel=1e-12)
    for l, layer in enumerate(space.layers):
        for name in layer.names[::7]:
            changed = space.arch([*anchor.choices[:l], name, *anchor.choices[l + 1:]])
            assert _linear(view, space, changed) == pytest.approx(_brute_ms(table, space, changed), rel=1e-9)
    one_hot = [torch.tensor([float(n == c) for n in layer.names]) for layer, c in zip(space.layers, anchor.choices)]
    assert float(estimator.expected_latency_ms(one_hot)) == pytest.approx(estimator.latency_ms(anchor), rel=1e-12)


def test_fastest_and_slowest_match_brute_force_on_a_reduced_space(estimator, space):
    """Three candidates per block (three widths, so the contexts matter): 3**7 architectures, all enumerated."""
    import itertools

    rng = random.Random(4)
    keep = []
    for layer in space.layers:
        picks = {rng.choice([n for n in layer.names if n.endswith(w)]) for w in ("w075", "w100", "w125")}
        keep.append(sorted(picks, key=layer.names.index))
    allowed = [[n in k for n in layer.names] for layer, k in zip(space.layers, keep)]
    every = [space.arch(c) for c in itertools.product(*keep)]
    latencies = [estimator.latency_ms(a) for a in every]
    fastest = fastest_arch(space, estimator, allowed)
    assert estimator.latency_ms(fastest) == pytest.approx(min(latencies), rel=1e-12)
    slowest = chain_extreme(space, estimator, allowed, slowest=True)
    assert estimator.latency_ms(slowest) == pytest.approx(max(latencies), rel=1e-12)
    span = latency_range(space, estimator)
    assert span.fastest_ms == estimator.latency_ms(fastest_arch(space, estimator)) <= min(latencies)
    assert span.slowest_ms == estimator.latency_ms(slowest_arch(space, estimator)) >= max(latencies)


@pytest.mark.parametrize("fraction", [0.22, 0.3, 0.45])
def test_decode_under_target_meets_it_and_beats_random_feasible_architectures(estimator, space, sampled, fraction):
    span = latency_range(space, estimator)
    target = span.target_at(fraction)
    feasible = [a for a, ms in sampled if ms <= target][:200]
    assert len(feasible) >= 40
    for seed in range(2):
        lp = _log_probs(space, seed)
        arch = decode_under_target(space, lp, estimator, target)
        assert arch is not None and estimator.latency_ms(arch) <= target
        assert all(_score(space, lp, arch) >= _score(space, lp, a) for a in feasible)
    assert decode_under_target(space, _log_probs(space, 0), estimator, span.fastest_ms * 0.999) is None
    fastest_exactly = decode_under_target(space, _log_probs(space, 0), estimator, span.fastest_ms)
    assert fastest_exactly is not None and estimator.latency_ms(fastest_exactly) <= span.fastest_ms


def test_decode_in_band_lands_in_the_band(estimator, space):
    span = latency_range(space, estimator)
    for fraction in (0.2, 0.5):
        high = span.target_at(fraction)
        arch = decode_in_band(space, _log_probs(space, 1), estimator, 0.92 * high, high)
        assert arch is not None and 0.92 * high <= estimator.latency_ms(arch) <= high


def test_calibrated_predictor_fits_predicts_and_decodes(estimator, table, space, tmp_path):
    from hwnas.latency.predictors.calibrated import fit_calibrated

    rng = random.Random(6)
    archs = space.sample_archs(30, rng)
    measured = [1.1 * estimator.latency_ms(a) * rng.uniform(0.98, 1.02) for a in archs]
    predictor = fit_calibrated(space, archs, measured, table=table, meta=PredictorMeta(device="synthetic"),
                               residual="linear")
    for arch in space.sample_archs(10, random.Random(7)):
        assert predictor.latency_ms(arch) == pytest.approx(1.1 * estimator.latency_ms(arch), rel=0.1)
        prediction = predictor.predict(arch)
        assert sum(t["ms"] for t in prediction.terms) == pytest.approx(predictor.latency_ms(arch), rel=1e-9)
    anchor = archs[0]
    view = predictor.anchored(anchor)
    assert _linear(view, space, anchor) == pytest.approx(predictor.latency_ms(anchor), rel=1e-9)
    changed = space.arch([*anchor.choices[:3], space.layers[3].names[-1], *anchor.choices[4:]])
    assert _linear(view, space, changed) == pytest.approx(predictor.latency_ms(changed), rel=1e-9)
    span = latency_range(space, predictor)
    target = span.target_at(0.3)
    arch = decode_under_target(space, _log_probs(space, 2), predictor, target)
    assert arch is not None and predictor.latency_ms(arch) <= target
    loaded = load_predictor(predictor.save(tmp_path / "mnas.json"))
    assert loaded.latency_ms(arch) == pytest.approx(predictor.latency_ms(arch), rel=1e-12)
    trees = fit_calibrated(space, archs, measured, table=table, meta=PredictorMeta(device="synthetic"),
                           residual="xgb")
    one_hot = [torch.tensor([float(n == c) for n in layer.names]) for layer, c in zip(space.layers, anchor.choices)]
    assert float(trees.expected_latency_ms(one_hot)) == pytest.approx(trees.latency_ms(anchor), rel=1e-9)
    arch = decode_under_target(space, _log_probs(space, 2), trees, target)
    assert arch is not None and trees.latency_ms(arch) <= target


def test_transfer_predictor_fits_predicts_and_decodes(space):
    """A transfer predictor is additive over the blocks' choices by construction: it fits mnasnet as any space."""
    from hwnas.latency.predictors.transfer import fit_transfer

    rng = np.random.default_rng(0)
    tables = [(rng.uniform(1, 3), [rng.uniform(0.1, 1.0, len(layer.names)) for layer in space.layers])
              for _ in range(2)]

    def latency(d: int, arch) -> float:  # noqa: ANN001
        fixed, costs = tables[d]
        return fixed + sum(row[layer.names.index(c)] for row, layer, c in zip(costs, space.layers, arch.choices))

    prior_archs, archs = space.sample_archs(60, random.Random(1)), space.sample_archs(10, random.Random(2))
    prior = {f"dev{d}": np.array([latency(d, a) for a in prior_archs]) for d in range(2)}
    predictor = fit_transfer(space, prior_archs, prior, archs,
                             np.array([0.5 * latency(0, a) + 1.5 * latency(1, a) for a in archs]))
    arch = archs[0]
    assert predictor.predict(arch).ms == pytest.approx(predictor.latency_ms(arch)) and predictor.latency_ms(arch) > 0
    target = latency_range(space, predictor).target_at(0.4)
    decoded = decode_under_target(space, _log_probs(space, 3), predictor, target)
    assert decoded is not None and predictor.latency_ms(decoded) <= target


def test_kernel_predictor_refuses_to_aim_a_mnasnet_search(space):
    kernel = load_predictor("latency_tables/predictors/cpu-onnxruntime__kernel.json")
    with pytest.raises(HwnasError, match="previous block's width"):
        kernel.for_space(space)


def test_two_budget_decoder_reanchors_and_beats_the_feasible_sample(estimator, space, sampled):
    """``--max-params-mb`` in mnasnet: the two-budget decoder re-anchors its linearized latency like the one-budget
    ones. Its answer meets both budgets exactly, is at least as probable as the single pass at the most probable
    architecture, and as every sampled architecture that meets both."""
    params = sorted(arch_footprint(space, a).params_bytes for a, _ in sampled)
    bound = MemoryBound.of(space, None, params[len(params) // 3] / MB)
    span = latency_range(space, estimator)
    better = 0
    for seed, fraction in ((0, 0.3), (1, 0.45), (2, 0.6), (5, 0.3)):
        target, lp = span.target_at(fraction), _log_probs(space, seed)
        arch = decode_within(space, lp, estimator, target, bound)
        assert arch is not None and estimator.latency_ms(arch) <= target and bound.fits(arch)
        picks = decode_memory._two_budgets(space, lp, estimator.anchored(most_probable_arch(space, lp)), bound,
                                           -math.inf, target)
        single = None if picks is None else decode_memory._arch(space, picks)
        assert single is None or _score(space, lp, arch) >= _score(space, lp, single)
        better += single is None or _score(space, lp, arch) > _score(space, lp, single)
        feasible = [a for a, ms in sampled if ms <= target and bound.fits(a)]
        assert len(feasible) >= 20
        assert all(_score(space, lp, arch) >= _score(space, lp, a) for a in feasible)
    assert better  # seed 5 at 0.3: the single pass misses a more probable architecture that re-anchoring finds


@pytest.mark.parametrize("device", ["cpu-onnxruntime", "cpu-litert"])
def test_predict_cli_uses_the_shipped_mnasnet_224_predictor(device, tmp_path, capsys):
    """`hwnas predict --device D ARCH` of an mnasnet@224 architecture (as `hwnas sample` writes it) finds the shipped
    calibrated predictor of the space and gives its prediction, each block's term included."""
    space224 = get_space("mnasnet", 224)
    arch = space224.sample_archs(1, random.Random(7))[0]
    path = arch.save(tmp_path / "arch.json")
    assert main(["predict", "--device", device, str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    shipped = f"latency_tables/predictors/{device}__mnasnet__224__calibrated.json"
    assert result["kind"] == "calibrated" and result["predictor"].endswith(shipped)
    assert result["latency_ms"] == pytest.approx(load_predictor(shipped).predict(arch).ms, rel=1e-9)
    assert len([k for k in result["kernels"] if k["type"].startswith("layer")]) == len(space224.layers)
