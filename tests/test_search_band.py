"""The refitting closed loop aims into the accepted band even when the search's most probable architecture lies
far under the target (E[LAT] = T with a broad distribution): it decodes within the band, not under T alone."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors import PredictorMeta
from hwnas.latency.predictors.calibrated import fit_calibrated
from hwnas.latency.sets import sample_stratified
from hwnas.latency.table import LatencyTable
from hwnas.search.aim import aim_on_device
from hwnas.search.decode import decode_under_target, fastest_arch, slowest_arch
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import get_space
from tests.test_search_aim import TABLE, ScriptedMeter, _device_ms


@pytest.mark.parametrize("fraction", [0.4, 0.6, 0.8])
def test_loop_leaves_a_mode_far_under_the_target(fraction):
    table = LatencyTable.load(TABLE)
    space = get_space("proxyless", 32, table.num_classes)
    estimator = TableEstimator(table, space)
    archs = sample_stratified(space, 30, seed=5, proxy=estimator)
    rng = np.random.default_rng(1)
    y = [_device_ms(space, estimator, a) * (1 + rng.uniform(-0.02, 0.02)) for a in archs]
    predictor = fit_calibrated(space, archs, y, table=table, meta=PredictorMeta(reference_ms=1.0), residual="linear")
    fastest = fastest_arch(space, estimator)
    log_probs = [[0.0 if name == choice else -1.0 for name in layer.names]
                 for layer, choice in zip(space.layers, fastest.choices)]  # the mode: the fastest architecture
    low = _device_ms(space, estimator, fastest)
    target = low + fraction * (_device_ms(space, estimator, slowest_arch(space, estimator)) - low)
    assert decode_under_target(space, log_probs, predictor, target) == fastest  # under T alone: the mode
    config = SearchConfig(closed_loop_steps=6, closed_loop_margin=0.03)
    meter = ScriptedMeter(space, estimator)
    arch, _, _ = aim_on_device(space, predictor, target, log_probs, meter, config)
    assert 0.85 * target <= _device_ms(space, estimator, arch) <= 0.97 * target
    assert len(meter.calls) <= config.closed_loop_steps
