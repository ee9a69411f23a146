"""Architecture-update steps of the search strategies, registered by name (:data:`hwnas.registry.STRATEGIES`;
another package adds one with :func:`hwnas.registry.register_strategy`).

* ``proxyless`` -- gradient (ProxylessNAS): one Adam step on ``alpha`` for ``L(CE, E[LAT], T)`` from
  :mod:`hwnas.search.losses`. ``E[LAT] = fixed + sum_l sum_i p_{l,i} c_{l,i}`` is differentiated through
  ``p = softmax(alpha)`` exactly; ``CE`` through the supernet's binary gates (mode ``arch``).
* ``evolution`` -- none during training (uniform paths); an evolutionary search afterwards
  (:mod:`hwnas.search.decoders`).
* ``mnas`` -- sampling (REINFORCE, as in MnasNet's controller and TuNAS): ``k`` architectures ``a_1..a_k`` are
  drawn from ``p``, each evaluated with the supernet's shared weights on the batch (accuracy), rewarded by
  :func:`hwnas.search.losses.get_reward` with the estimator's ``latency_ms``; with the moving-average baseline
  ``b``, one Adam step on ``-1/k sum_i (R_i - b) log P(a_i) - eta H(p)``, then ``b <- m b + (1 - m) mean R``.

Each step takes one batch ``(x, y)``, puts the supernet in training mode with its buffers (BatchNorm running
statistics) left unchanged, updates ``alpha`` only (weight gradients are neither computed into ``.grad`` nor
changed), and returns its logs. It leaves the supernet in mode ``arch`` (proxyless) or ``fixed`` (mnas) with the
paths it sampled: callers set the mode and sample paths again before their next forward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from hwnas.errors import HwnasError
from hwnas.latency.estimator import LatencyEstimator
from hwnas.registry import STRATEGIES, register_strategy
from hwnas.search.losses import get_loss, get_reward
from hwnas.search.supernet import SuperNet, frozen_buffers

Batch = tuple[torch.Tensor, torch.Tensor]


class ArchStep(ABC):
    """One architecture update of a strategy; holds its optimizer, generator and (mnas) baseline."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None  # the dataclass of its keyword parameters (None: it takes any)

    def __init__(self, lr: float, betas: tuple[float, float], eps: float, seed: int) -> None:
        self._opt_args = {"lr": lr, "betas": betas, "eps": eps}
        self.generator = torch.Generator().manual_seed(seed)
        self._optimizer: torch.optim.Optimizer | None = None
        self._bound: list[int] = []

    @abstractmethod
    def step(self, supernet: SuperNet, batch: Batch, estimator: LatencyEstimator,
             target_ms: float) -> dict[str, float]:
        """Update ``supernet``'s architecture parameters once; returns logs (loss, expected latency, ...)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed search needs (tensors and plain values): optimizer, generator, (mnas) baseline."""
        return {"optimizer": self._optimizer.state_dict() if self._optimizer is not None else None,
                "generator": self.generator.get_state(), "baseline": getattr(self, "baseline", None)}

    def load_state_dict(self, state: dict[str, Any], supernet: SuperNet) -> None:
        """Restore :meth:`state_dict`; the optimizer is bound to ``supernet``'s architecture parameters."""
        self.generator.set_state(state["generator"])
        if hasattr(self, "baseline"):
            self.baseline = state["baseline"]
        if state["optimizer"] is not None:
            self._bind(supernet).load_state_dict(state["optimizer"])

    def _configure(self, kwargs: dict[str, Any]) -> Any:
        """Its ``config_class`` from the defaults and ``kwargs`` (one line for an unknown field), with the optimizer
        settings and generator set from it."""
        config = _config(self.config_class, self.name, kwargs)
        ArchStep.__init__(self, config.lr, config.betas, config.eps, config.seed)
        return config

    def _bind(self, supernet: SuperNet) -> torch.optim.Optimizer:
        params = supernet.arch_parameters()
        if self._optimizer is None or self._bound != [id(p) for p in params]:
            self._optimizer = torch.optim.Adam(params, **self._opt_args)
            self._bound = [id(p) for p in params]
        return self._optimizer

    def _apply(self, supernet: SuperNet, grads: tuple[torch.Tensor, ...]) -> None:
        """Adam step on ``alpha`` with ``grads`` (the optimizer is made for, and kept with, this supernet)."""
        params = supernet.arch_parameters()
        self._bind(supernet)
        for p, g in zip(params, grads):
            p.grad = g.detach().to(p.dtype)
        self._optimizer.step()
        for p in params:
            p.grad = None


@dataclass
class ProxylessConfig:
    """ProxylessNAS defaults: Adam lr 1e-3, betas (0, 0.999), eps 1e-8; loss ``mul#log``."""

    loss: str = "mul#log"
    loss_params: dict[str, float] = field(default_factory=dict)
    lr: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8
    seed: int = 0


@dataclass
class MnasConfig:
    """REINFORCE defaults after TuNAS: Adam lr 0.0048 (3e-4 x 4096/256), betas (0, 0.999), baseline momentum
    0.95, no entropy bonus; ``k`` architectures per step; reward ``mnas-soft``."""

    reward: str = "mnas-soft"
    reward_params: dict[str, float] = field(default_factory=dict)
    samples: int = 4
    lr: float = 0.0048
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8
    baseline_momentum: float = 0.95
    entropy_weight: float = 0.0
    seed: int = 0


@register_strategy("proxyless")
class ProxylessStep(ArchStep):
    """Gradient step with binary gates; see the module docstring."""

    name = "proxyless"
    config_class = ProxylessConfig

    def __init__(self, **kwargs: Any) -> None:
        self.config = self._configure(kwargs)
        self.loss_fn = get_loss(self.config.loss, **self.config.loss_params)

    def step(self, supernet: SuperNet, batch: Batch, estimator: LatencyEstimator,
             target_ms: float) -> dict[str, float]:
        x, y = batch
        alphas = supernet.arch_parameters()
        before = [a.detach().clone() for a in alphas]
        supernet.train()
        supernet.set_mode("arch")
        supernet.sample_paths(self.generator)
        with frozen_buffers(supernet):
            ce = F.cross_entropy(supernet(x), y)
            expected = estimator.expected_latency_ms(supernet.probs())
            loss = self.loss_fn(ce, expected, target_ms)
            grads = torch.autograd.grad(loss, alphas)
        self._apply(supernet, grads)
        supernet.rescale_sampled_pairs(before)
        return {"loss": loss.item(), "ce": ce.item(), "expected_latency_ms": expected.item(),
                "argmax_latency_ms": estimator.latency_ms(supernet.argmax_arch()), "target_ms": float(target_ms)}


@register_strategy("mnas")
class MnasStep(ArchStep):
    """REINFORCE step with shared weights; see the module docstring."""

    name = "mnas"
    config_class = MnasConfig

    def __init__(self, **kwargs: Any) -> None:
        config = self._configure(kwargs)
        if config.samples < 1 or not 0.0 <= config.baseline_momentum < 1.0:
            raise HwnasError(f"mnas: samples must be >= 1 and baseline_momentum in [0, 1), got {asdict(config)}")
        self.config = config
        self.reward_fn = get_reward(self.config.reward, **self.config.reward_params)
        self.baseline: float | None = None

    def step(self, supernet: SuperNet, batch: Batch, estimator: LatencyEstimator,
             target_ms: float) -> dict[str, float]:
        x, y = batch
        k, space = self.config.samples, supernet.space
        probs = [p.detach().to(torch.float64).cpu() for p in supernet.probs()]
        picks = torch.stack([torch.multinomial(p, k, replacement=True, generator=self.generator) for p in probs])
        rewards, accuracies, latencies = [], [], []
        supernet.train()
        with torch.no_grad(), frozen_buffers(supernet):
            for i in range(k):
                arch = space.arch([layer.names[int(j)] for layer, j in zip(space.layers, picks[:, i])])
                supernet.set_arch(arch)
                accuracy = float((supernet(x).argmax(dim=1) == y).float().mean())
                latency = estimator.latency_ms(arch)
                rewards.append(self.reward_fn(accuracy, latency, target_ms))
                accuracies.append(accuracy)
                latencies.append(latency)
        mean_reward = sum(rewards) / k
        baseline = mean_reward if self.baseline is None else self.baseline
        advantage = torch.tensor(rewards, dtype=torch.float64) - baseline
        alphas = supernet.arch_parameters()
        log_p = [F.log_softmax(a.to(torch.float64), dim=0) for a in alphas]
        log_prob = torch.stack([lp[picks[layer]] for layer, lp in enumerate(log_p)]).sum(dim=0)  # per sample
        entropy = sum(-(lp.exp() * lp).sum() for lp in log_p)
        loss = -(advantage * log_prob).mean() - self.config.entropy_weight * entropy
        self._apply(supernet, torch.autograd.grad(loss, alphas))
        m = self.config.baseline_momentum
        self.baseline = m * baseline + (1.0 - m) * mean_reward
        return {"loss": loss.item(), "reward": mean_reward, "baseline": self.baseline,
                "accuracy": sum(accuracies) / k, "latency_ms": sum(latencies) / k,
                "expected_latency_ms": estimator.expected_latency_ms(supernet.probs()).item(),
                "target_ms": float(target_ms)}


@dataclass
class EvolutionStepConfig:
    """``evolution`` has no architecture step: these are the base class's settings, unused."""

    lr: float = 0.0
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8
    seed: int = 0


@register_strategy("evolution")
class EvolutionStep(ArchStep):
    """No step: ``alpha`` stays uniform, so the weight steps train the supernet on uniformly sampled paths (single
    path one-shot, as Once-for-All and SPOS train before they search); the architecture is found after training by
    an evolutionary search (:class:`~hwnas.search.decoders.EvolutionDecoder`) under the closed loop's bound."""

    name = "evolution"
    config_class = EvolutionStepConfig

    def __init__(self, **kwargs: Any) -> None:
        self.config = self._configure(kwargs)

    def step(self, supernet: SuperNet, batch: Batch, estimator: LatencyEstimator,
             target_ms: float) -> dict[str, float]:
        supernet.set_mode("arch")
        return {"expected_latency_ms": estimator.expected_latency_ms(supernet.probs()).item(),
                "target_ms": float(target_ms)}


def _config(cls: type, name: str, kwargs: dict[str, Any]) -> Any:
    try:
        return cls(**kwargs)
    except TypeError:
        known = ", ".join(cls.__dataclass_fields__)
        raise HwnasError(f"strategy {name}: unknown parameter in {sorted(kwargs)} (expected {known})") from None


def strategy_parameters(name: str) -> set[str] | None:
    """The keyword parameters strategy ``name`` takes (the fields of its ``config_class``; None: any)."""
    from dataclasses import fields

    config_class = STRATEGIES.get(name).config_class
    return None if config_class is None else {f.name for f in fields(config_class)}


def get_strategy(name: str, **kwargs: Any) -> ArchStep:
    """The strategy ``name`` with its config fields overridden by ``kwargs``, e.g.
    ``get_strategy("proxyless", loss="add#linear", loss_params={"lam": 0.2}, seed=1)``."""
    return STRATEGIES.get(name)(**kwargs)


def strategy_names() -> list[str]:
    """The registered strategies: the built-ins and those added with :func:`hwnas.registry.register_strategy`."""
    return STRATEGIES.names()
