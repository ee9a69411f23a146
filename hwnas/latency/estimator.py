"""The one latency estimator interface (NNI's profiler idea): a discrete latency and a differentiable one.

``latency_ms(arch)`` answers for one architecture; ``expected_latency_ms(probs)`` is the differentiable
expectation over architecture probabilities that search losses use::

    E[LAT] = fixed_ms + sum_l sum_i p_{l,i} * LAT_{l,i}

With one-hot probabilities it equals ``latency_ms`` of that architecture exactly. Tables implement it here;
learned predictors implement the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch

from hwnas.errors import HwnasError
from hwnas.latency.table import LatencyTable
from hwnas.ops import OpSpec
from hwnas.spaces import Architecture, SearchSpace

OVERHEAD_MODES = ("once", "per-op", "none")


class LatencyEstimator(ABC):
    """Latency of architectures of one search space on one device."""

    space: SearchSpace

    @abstractmethod
    def layer_costs_ms(self) -> list[list[float]]:
        """Per searchable layer, the latency of each candidate (in the layer's candidate order)."""

    @abstractmethod
    def fixed_ms(self) -> float:
        """Latency of the parts every architecture has (stem, fixed blocks, head, runtime overhead)."""

    def anchored(self, arch: Architecture | None) -> LatencyEstimator:
        """The estimator linearized at ``arch`` for the decoder and the loss: an additive estimator is its own
        linearization; one with a non-additive part returns a view whose costs carry its factor at ``arch``."""
        return self

    def latency_ms(self, arch: Architecture) -> float:
        self.space.validate(arch)
        costs = self.layer_costs_ms()
        return float(self.fixed_ms() + sum(costs[i][layer.names.index(c)] for i, (layer, c) in
                                           enumerate(zip(self.space.layers, arch.choices))))

    def expected_latency_ms(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """E[LAT] over independent per-layer categorical distributions ``probs[l]`` (differentiable)."""
        costs = self.layer_costs_ms()
        if len(probs) != len(costs):
            raise HwnasError(f"expected_latency_ms: {len(costs)} layers, got probabilities for {len(probs)}")
        total = torch.tensor(self.fixed_ms(), dtype=torch.float64)
        for p, cost in zip(probs, costs):
            total = total + (p.to(torch.float64) * torch.tensor(cost, dtype=torch.float64, device=p.device)).sum()
        return total


@dataclass(frozen=True)
class Term:
    """One term of a table estimate: which part of the network, which op, how many ms."""

    part: str
    key: str
    ms: float


class TableEstimator(LatencyEstimator):
    """Sum of isolated-op medians from a lookup table.

    Each isolated op was timed as its own model, so each median includes the runtime's per-invocation
    overhead (measured on an empty model). With ``overhead="once"`` (default) that overhead is subtracted
    from every op and added back once for the whole network, which is what a single network invocation pays;
    ``"per-op"`` is the plain table sum; ``"none"`` subtracts it everywhere.
    """

    def __init__(self, table: LatencyTable, space: SearchSpace, overhead: str = "once") -> None:
        if overhead not in OVERHEAD_MODES:
            raise HwnasError(f"overhead mode must be one of {OVERHEAD_MODES}, got {overhead!r}")
        if (table.space, table.resolution) != (space.name, space.resolution):
            raise HwnasError(f"{table.path}: table is for {table.space}@{table.resolution}, "
                             f"not {space.name}@{space.resolution}")
        table.check_keys()
        lacks = table.lacks(space)
        if lacks:  # the hint names the head too: the classifier is an op, measured per number of classes
            raise HwnasError(f"{lacks}; run `{table.profile_command(space.num_classes)}` to measure them")
        self.table, self.space, self.overhead = table, space, overhead
        self._layer_costs = [[self.op_ms(spec) for _, spec in layer.candidates] for layer in space.layers]
        self._fixed = sum(self.op_ms(spec) for spec in [*space.prefix, *space.suffix])
        self._fixed += table.overhead_ms if overhead == "once" else 0.0

    def op_ms(self, spec: OpSpec) -> float:
        if spec.is_free:
            return 0.0
        ms = self.table.median_ms(spec.key())
        return ms if self.overhead == "per-op" else max(ms - self.table.overhead_ms, 0.0)

    def layer_costs_ms(self) -> list[list[float]]:
        return self._layer_costs

    def fixed_ms(self) -> float:
        return self._fixed

    def terms(self, arch: Architecture) -> list[Term]:
        """Every term of ``latency_ms(arch)``, in network order."""
        self.space.validate(arch)
        terms = [Term("prefix", spec.key(), self.op_ms(spec)) for spec in self.space.prefix]
        for layer, choice in zip(self.space.layers, arch.choices):
            spec = layer.spec(choice)
            terms.append(Term(f"layer{layer.index}:{choice}", spec.key(), self.op_ms(spec)))
        terms += [Term("suffix", spec.key(), self.op_ms(spec)) for spec in self.space.suffix]
        if self.overhead == "once":
            terms.append(Term("overhead", "runtime-invocation", self.table.overhead_ms))
        return terms
