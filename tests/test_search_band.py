"""The refitting closed loop aims into the accepted band even when the search's most probable architecture lies
far under the target (E[LAT] = T with a broad distribution): it decodes within the band, not under T alone."""

from __future__ import annotations

import pytest

from hwnas.search.aim import aim_on_device
from hwnas.search.decode import decode_under_target, fastest_arch, slowest_arch
from hwnas.search.run_config import SearchConfig
from tests.test_search_aim import ScriptedMeter, _device_ms, setting  # noqa: F401 (setting: the fixture)


@pytest.mark.parametrize("fraction", [0.4, 0.6, 0.8])
def test_loop_leaves_a_mode_far_under_the_target(setting, fraction):  # noqa: F811
    space, estimator, predictor = setting
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
