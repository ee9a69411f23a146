"""MnasNet's and TuNAS's rewards against values computed by hand, and the short names of ``--reward``."""

from __future__ import annotations

import math

import pytest

from hwnas.errors import HwnasError
from hwnas.registry import REWARDS
from hwnas.search.losses import MnasHardReward, MnasSoftReward, TunasAbsReward, get_reward, reward_names

# ACC 0.8, T 10 ms throughout. Literals worked out by hand (ln 1.2 = 0.18232, ln 0.8 = -0.22314):
# 0.8 * 1.2 ** -0.07 = 0.8 * exp(-0.0127625) = 0.789855; 0.8 * 0.8 ** -0.07 = 0.8 * exp(0.0156200) = 0.812594.
HAND = [
    ("soft", 12.0, 0.7898549), ("soft", 10.0, 0.8), ("soft", 8.0, 0.8125941),
    ("hard", 8.0, 0.8), ("hard", 10.0, 0.8), ("hard", 12.0, 0.8 / 1.2), ("hard", 20.0, 0.4),
    ("abs", 12.0, 0.78), ("abs", 10.0, 0.8), ("abs", 8.0, 0.78), ("abs", 15.0, 0.75),
]
ALIASES = {"soft": "mnas-soft", "hard": "mnas-hard", "abs": "tunas-abs"}


@pytest.mark.parametrize(("short", "latency_ms", "expected"), HAND)
def test_reward_against_hand_computed_value(short: str, latency_ms: float, expected: float) -> None:
    for name in (short, ALIASES[short]):
        assert get_reward(name)(0.8, latency_ms, 10.0) == pytest.approx(expected, abs=5e-7), (name, latency_ms)


def test_hard_reward_is_flat_up_to_the_target_and_falls_as_one_over_latency_above() -> None:
    hard = get_reward("hard")
    assert [hard(0.8, lat, 10.0) for lat in (1.0, 5.0, 9.999, 10.0)] == [0.8] * 4
    assert hard(0.8, 10.001, 10.0) < 0.8
    assert hard(0.8, 40.0, 10.0) == pytest.approx(0.2)


def test_reward_parameters_pass_through_the_short_names() -> None:
    # 0.8 * 1.2 ** -0.15 = 0.8 * exp(-0.027348) = 0.778418
    assert get_reward("soft", w=-0.15)(0.8, 12.0, 10.0) == pytest.approx(0.7784179, abs=5e-7)
    assert get_reward("abs", beta=-0.5)(0.8, 12.0, 10.0) == pytest.approx(0.7)
    assert get_reward("hard", beta=-2.0)(0.8, 20.0, 10.0) == pytest.approx(0.2)


@pytest.mark.parametrize(("short", "cls"), [("soft", MnasSoftReward), ("hard", MnasHardReward),
                                            ("abs", TunasAbsReward)])
def test_short_names_are_the_long_names(short: str, cls: type) -> None:
    assert REWARDS.get(short) is REWARDS.get(ALIASES[short]) is cls
    assert get_reward(short) == get_reward(ALIASES[short])
    assert {short, ALIASES[short]} <= set(reward_names())
    for accuracy, latency_ms in [(0.0, 3.0), (0.5, 9.0), (0.93, 10.0), (1.0, 31.0)]:
        assert get_reward(short)(accuracy, latency_ms, 10.0) == get_reward(ALIASES[short])(accuracy, latency_ms, 10.0)


@pytest.mark.parametrize("name", ["soft", "hard", "abs", "mnas-soft", "mnas-hard", "tunas-abs"])
@pytest.mark.parametrize("target_ms", [0.0, -1.0, math.nan, math.inf])
def test_bad_target_refused_in_one_line(name: str, target_ms: float) -> None:
    with pytest.raises(HwnasError, match="target latency must be a positive number of ms") as info:
        get_reward(name)(0.8, 10.0, target_ms)
    assert "\n" not in str(info.value)


def test_unknown_reward_lists_the_short_names() -> None:
    with pytest.raises(HwnasError, match="unknown reward 'sofft'.*soft.*hard.*abs"):
        get_reward("sofft")
