"""Fitting returns a new predictor and never changes its inputs; a prediction never changes the predictor (issue 17)."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch

from hwnas.latency.predictors import PredictorMeta
from hwnas.latency.predictors.base import load_predictor
from hwnas.latency.predictors.calibrated import fit_calibrated
from hwnas.latency.predictors.features import OP_FEATURES, Caches, op_features
from hwnas.latency.table import LatencyTable
from hwnas.search.decode import decode_in_band, decode_under_target, most_probable_arch
from hwnas.spaces import get_space
from tests.test_predictors import _synthetic

_FINGERPRINT = {"machine": {"caches": {"L2": 1 << 20, "L3": 1 << 25}}}


@pytest.fixture(scope="module")
def fitted():
    """A calibrated predictor with trees (a non-additive factor), its space and its training data."""
    table = LatencyTable.load("latency_tables/cpu-onnxruntime__proxyless__32.json")
    space = get_space("proxyless", 32, table.num_classes)
    archs, y = _synthetic(space, table, 40, seed=0)
    predictor = fit_calibrated(space, archs, y, table=table, residual="xgb",
                               meta=PredictorMeta(device="cpu-onnxruntime", fingerprint=_FINGERPRINT, reference_ms=1.0))
    assert predictor.selected == "xgb"
    return predictor, space, table, archs, y


def _state(predictor, archs):
    return (predictor.meta.to_dict(), [r.to_dict() for r in predictor.rows], predictor.coef.tolist(),
            predictor.intercept, [predictor.latency_ms(a) for a in archs], predictor.layer_costs_ms(),
            predictor.fixed_ms())


def _log_probs(space, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.log_softmax(torch.randn(len(layer.names), generator=gen, dtype=torch.float64), 0)
            for layer in space.layers]


def test_fit_and_with_rows_leave_their_inputs_untouched(fitted):
    predictor, space, table, archs, y = fitted
    meta = PredictorMeta(device="d", fingerprint=copy.deepcopy(_FINGERPRINT), reference_ms=1.0,
                         training={"sources": ["s"]})
    given = copy.deepcopy(meta.to_dict())
    fresh = fit_calibrated(space, archs[:12], y[:12], table=table, meta=meta, residual="linear")
    assert meta.to_dict() == given and fresh.meta is not meta and fresh.meta.training["n"] == 12
    probe = [space.random_arch(random.Random(i)) for i in range(5)]
    before = copy.deepcopy(_state(predictor, probe))
    refitted = predictor.with_rows([archs[0]], [2.0 * y[0]], weight=3.0, source="closed loop")
    assert copy.deepcopy(_state(predictor, probe)) == before
    assert refitted.meta.training["n"] == len(predictor.rows) + 1 == 41
    assert refitted.meta is not predictor.meta and refitted.rows is not predictor.rows
    fresh.rows.append(fresh.rows[0])  # a predictor's rows are its own, not the list it was built from
    assert len(fresh.rows) == 13 and fresh.meta.training["n"] == 12


def test_a_prediction_leaves_no_state(fitted, tmp_path):
    predictor, space, *_ = fitted
    fresh = load_predictor(predictor.save(tmp_path / "p.json"))  # a predictor nothing was asked of yet
    first, second = _log_probs(space, 1), _log_probs(space, 2)
    assert most_probable_arch(space, first) != most_probable_arch(space, second)
    a = float(predictor.expected_latency_ms([p.exp() for p in first]))
    b = float(predictor.expected_latency_ms([p.exp() for p in second]))
    assert predictor.layer_costs_ms() == fresh.layer_costs_ms() and predictor.fixed_ms() == fresh.fixed_ms()
    assert float(fresh.expected_latency_ms([p.exp() for p in second])) == b
    assert float(fresh.expected_latency_ms([p.exp() for p in first])) == a
    lists = [p.tolist() for p in first]
    target = predictor.latency_ms(most_probable_arch(space, lists))
    assert decode_under_target(space, lists, predictor, target) == decode_under_target(space, lists, fresh, target)
    assert decode_in_band(space, lists, predictor, 0.9 * target, target) == decode_in_band(space, lists, fresh,
                                                                                          0.9 * target, target)


def test_anchored_costs_are_the_factor_times_the_linear_costs_by_hand(fitted):
    predictor, space, *_ = fitted
    arch = space.random_arch(random.Random(3))
    view = predictor.anchored(arch)
    factor = predictor.factor(arch)
    assert factor != 1.0 and view.latency_ms(arch) == predictor.latency_ms(arch)
    leveled = predictor.table.at_level(predictor.meta.reference_ms)
    caches, w = Caches.from_fingerprint(_FINGERPRINT), predictor.coef[:len(OP_FEATURES)]
    costs = view.layer_costs_ms()
    for layer, layer_costs in zip(space.layers, costs):
        for name, cost in zip(layer.names, layer_costs):
            spec = layer.spec(name)
            by_hand = predictor.table_scale * leveled.op_ms(spec) + float(op_features(spec, caches, leveled) @ w)
            assert cost == pytest.approx(factor * by_hand, rel=1e-9, abs=1e-12)
    # linearized at arch, the costs give arch's own latency (the loss is exact at its anchor)
    total = view.fixed_ms() + sum(c[layer.names.index(n)] for c, layer, n in zip(costs, space.layers, arch.choices))
    assert total == pytest.approx(predictor.latency_ms(arch), rel=1e-12)
    assert math.isclose(view.fixed_ms(), factor * predictor.fixed_ms(), rel_tol=1e-15)
    assert np.allclose(predictor.layer_costs_ms()[0], np.asarray(costs[0]) / factor, rtol=1e-12)
