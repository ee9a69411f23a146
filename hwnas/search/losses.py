"""Latency-aware losses (gradient strategies) and rewards (sampling strategies), registered by name
(:data:`hwnas.registry.LOSSES`, :data:`hwnas.registry.REWARDS`; another package adds its own with
:func:`hwnas.registry.register_loss` and :func:`hwnas.registry.register_reward`).

A loss is ``(ce, expected_latency_ms, target_ms) -> Tensor``; ``expected_latency_ms`` is the differentiable
``E[LAT]`` of :meth:`hwnas.latency.estimator.LatencyEstimator.expected_latency_ms` and ``T`` = ``target_ms``.
A reward is ``(accuracy, latency_ms, target_ms) -> float`` for one sampled architecture.

Losses:

* ``mul#log`` -- ``L = a * CE * (log E[LAT] / log T) ** b``, a = 0.2, b = 0.3. The form and defaults of the
  ProxylessNAS search code (Cai, Zhu, Han, ICLR 2019; ``--grad_reg_loss_type mul#log``), with latency in ms.
* ``add#linear`` -- ``L = CE + lambda * (E[LAT] - T) / T``, lambda = 0.1: the paper's additive latency loss
  ``CE + lambda_2 * E[LAT]`` normalised by the target, as the same code writes it (``add#linear``).
* ``add#abs`` -- ``L = CE + lambda * |E[LAT] / T - 1|``, lambda = 0.1: TuNAS's absolute-value cost (Bender et
  al., CVPR 2020) as a differentiable loss. Both losses above push ``E[LAT]`` down at any latency, so with a
  weak accuracy signal (short searches, small data) the probabilities drift to the cheapest ops whatever T is;
  this one pulls ``E[LAT]`` towards T from both sides, so the probabilities describe networks near T and decoding
  under T (:mod:`hwnas.search.decode`) lands just below it. The search run's default.

Rewards:

* ``mnas-soft`` -- ``ACC * (LAT / T) ** w``, w = -0.07 (MnasNet, Tan et al., CVPR 2019: the weighted product
  objective with w = alpha if LAT <= T else beta, soft constraint alpha = beta = -0.07).
* ``mnas-hard`` -- ``ACC * (LAT / T) ** w``, w = 0 if LAT <= T else -1 (MnasNet's hard constraint,
  alpha = 0, beta = -1).
* ``tunas-abs`` -- ``ACC + beta * |LAT / T - 1|``, beta = -0.10 (TuNAS, Bender et al., CVPR 2020;
  -0.10 is the default ``rl_cost_model_exponent`` of the TuNAS code).

``soft``, ``hard`` and ``abs`` are the same three rewards under the short names of ``--reward``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from hwnas.errors import HwnasError
from hwnas.registry import LOSSES, REWARDS, Registry, register_loss, register_reward

LossFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
RewardFn = Callable[[float, float, float], float]


def _check_target(name: str, target_ms: float) -> None:
    if not target_ms > 0 or not math.isfinite(target_ms):
        raise HwnasError(f"{name}: target latency must be a positive number of ms, got {target_ms!r}")


@dataclass(frozen=True)
class MulLogLoss:
    """``L = alpha * CE * (log(E[LAT]/u) / log(T/u)) ** beta`` (ProxylessNAS ``mul#log``).

    ``u`` = ``unit_ms`` is the latency unit (1 ms as in ProxylessNAS). The ratio of logs needs ``T/u > 1``; when
    ``E[LAT]/u <= 1`` the log ratio is clamped at 1e-6 (no latency pressure below one unit): pick ``unit_ms``
    well below the latencies searched (e.g. 0.01 for sub-millisecond targets).
    """

    alpha: float = 0.2
    beta: float = 0.3
    unit_ms: float = 1.0

    def __call__(self, ce: torch.Tensor, expected_latency_ms: torch.Tensor, target_ms: float) -> torch.Tensor:
        _check_target("mul#log", target_ms)
        if target_ms / self.unit_ms <= 1.0:
            raise HwnasError(f"mul#log: needs target_ms / unit_ms > 1 (log T > 0), got {target_ms} / {self.unit_ms}; "
                             f"pass a smaller unit_ms")
        expected = expected_latency_ms.to(ce.dtype)
        ratio = torch.log(expected / self.unit_ms) / math.log(target_ms / self.unit_ms)
        return self.alpha * ce * ratio.clamp_min(1e-6) ** self.beta


@dataclass(frozen=True)
class AddLinearLoss:
    """``L = CE + lambda * (E[LAT] - T) / T`` (ProxylessNAS ``add#linear``)."""

    lam: float = 0.1

    def __call__(self, ce: torch.Tensor, expected_latency_ms: torch.Tensor, target_ms: float) -> torch.Tensor:
        _check_target("add#linear", target_ms)
        return ce + self.lam * (expected_latency_ms.to(ce.dtype) - target_ms) / target_ms


@dataclass(frozen=True)
class AddAbsLoss:
    """``L = CE + lambda * |E[LAT] / T - 1|`` (TuNAS's absolute cost as a loss; see the module docstring)."""

    lam: float = 0.1

    def __call__(self, ce: torch.Tensor, expected_latency_ms: torch.Tensor, target_ms: float) -> torch.Tensor:
        _check_target("add#abs", target_ms)
        return ce + self.lam * torch.abs(expected_latency_ms.to(ce.dtype) / target_ms - 1.0)


@dataclass(frozen=True)
class MnasSoftReward:
    """``R = ACC * (LAT / T) ** w`` with ``w`` = -0.07 (MnasNet soft constraint)."""

    w: float = -0.07

    def __call__(self, accuracy: float, latency_ms: float, target_ms: float) -> float:
        _check_target("mnas-soft", target_ms)
        return accuracy * (latency_ms / target_ms) ** self.w


@dataclass(frozen=True)
class MnasHardReward:
    """``R = ACC * (LAT / T) ** w`` with ``w = alpha`` (0) if ``LAT <= T`` else ``beta`` (-1) (MnasNet hard)."""

    alpha: float = 0.0
    beta: float = -1.0

    def __call__(self, accuracy: float, latency_ms: float, target_ms: float) -> float:
        _check_target("mnas-hard", target_ms)
        w = self.alpha if latency_ms <= target_ms else self.beta
        return accuracy * (latency_ms / target_ms) ** w


@dataclass(frozen=True)
class TunasAbsReward:
    """``R = ACC + beta * |LAT / T - 1|`` with ``beta`` = -0.10 (TuNAS absolute-value reward)."""

    beta: float = -0.10

    def __call__(self, accuracy: float, latency_ms: float, target_ms: float) -> float:
        _check_target("tunas-abs", target_ms)
        return accuracy + self.beta * abs(latency_ms / target_ms - 1.0)


register_loss("mul#log", MulLogLoss)
register_loss("add#linear", AddLinearLoss)
register_loss("add#abs", AddAbsLoss)
register_reward("mnas-soft", MnasSoftReward)
register_reward("mnas-hard", MnasHardReward)
register_reward("tunas-abs", TunasAbsReward)
register_reward("soft", MnasSoftReward)  # the short names of ``hwnas search --reward soft|hard|abs``
register_reward("hard", MnasHardReward)
register_reward("abs", TunasAbsReward)


def _make(kind: str, registry: Registry[type], name: str, kwargs: dict[str, Any]) -> Any:
    cls = registry.get(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise HwnasError(f"{kind} {name}: bad parameters {sorted(kwargs)} ({exc})") from None


def get_loss(name: str, **kwargs: Any) -> LossFn:
    """The loss ``name`` with its parameters overridden by ``kwargs`` (e.g. ``get_loss("mul#log", beta=0.6)``)."""
    return _make("loss", LOSSES, name, kwargs)


def get_reward(name: str, **kwargs: Any) -> RewardFn:
    """The reward ``name`` with its parameters overridden by ``kwargs``."""
    return _make("reward", REWARDS, name, kwargs)


def loss_names() -> list[str]:
    return LOSSES.names()


def reward_names() -> list[str]:
    return REWARDS.names()
