"""The one latency estimator interface (NNI's profiler idea): a discrete latency and a differentiable one.

``latency_ms(arch)`` answers for one architecture; ``expected_latency_ms(probs)`` is the differentiable
expectation over architecture probabilities that search losses use::

    E[LAT] = fixed_ms + sum_l sum_i p_{l,i} * LAT_{l,i}

With one-hot probabilities it equals ``latency_ms`` of that architecture exactly. Tables implement it here;
learned predictors implement the same interface.

A space that is not ``context_free`` (``mnasnet``: a block's first layer takes the previous block's width) has no
exact per-layer costs: ``latency_ms`` sums the exact ops (:meth:`SearchSpace.layer_specs`), ``anchored(arch)`` is
the first-order model exact at ``arch`` and at each one-layer change of it (:meth:`SearchSpace.linearized_costs`),
``expected_latency_ms`` uses it at the most probable architecture, and ``context_costs_ms`` gives a layer's exact
costs after a given previous choice (what the decoder's exact fastest/slowest path needs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from hwnas.errors import HwnasError
from hwnas.latency.table import LatencyTable
from hwnas.ops import OpSpec, flat_specs
from hwnas.spaces import Architecture, SearchSpace

OVERHEAD_MODES = ("once", "per-op", "none")
ANCHORS_KEPT = 32  # linearizations kept per estimator (the loss re-anchors every step; the anchor rarely changes)


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

    def context_costs_ms(self, index: int, previous: str | None) -> list[float]:
        """Layer ``index``'s candidates' costs when the layer before chose ``previous``: exact and additive over the
        layers (the decoder's fastest and slowest path). The layer's own costs where they do not depend on it."""
        return self.layer_costs_ms()[index]

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


def most_probable(space: SearchSpace, probs: Sequence[torch.Tensor]) -> Architecture:
    """The architecture of the per-layer argmax (first on ties): where a loss linearizes a non-additive model."""
    if len(probs) != len(space.layers):
        raise HwnasError(f"expected_latency_ms: {len(space.layers)} layers, got probabilities for {len(probs)}")
    return space.arch([layer.names[int(torch.argmax(p))] for layer, p in zip(space.layers, probs)])


class LinearizedView(LatencyEstimator):
    """An estimator of a non-context-free space linearized at an anchor: per-layer ``costs`` (those of
    :meth:`SearchSpace.linearized_costs`) and ``fixed``, both times ``scale``; ``latency_ms`` and
    ``context_costs_ms`` stay the exact estimator's (the latter times ``scale``). Read-only."""

    def __init__(self, exact: LatencyEstimator, costs: list[list[float]], fixed_ms: float, scale: float = 1.0) -> None:
        self.exact, self.space, self.scale = exact, exact.space, float(scale)
        self._costs = costs if scale == 1.0 else [[v * self.scale for v in row] for row in costs]
        self._fixed = float(fixed_ms) * self.scale

    def layer_costs_ms(self) -> list[list[float]]:
        return self._costs

    def fixed_ms(self) -> float:
        return self._fixed

    def latency_ms(self, arch: Architecture) -> float:
        return self.exact.latency_ms(arch)

    def context_costs_ms(self, index: int, previous: str | None) -> list[float]:
        row = self.exact.context_costs_ms(index, previous)
        return row if self.scale == 1.0 else [v * self.scale for v in row]

    def anchored(self, arch: Architecture | None) -> LatencyEstimator:
        return self.exact.anchored(arch)


class AnchorCache:
    """The few most recent linearizations of an estimator, by anchor (oldest dropped first)."""

    def __init__(self, kept: int = ANCHORS_KEPT) -> None:
        self.kept, self.views = kept, {}

    def get(self, anchor: Architecture, make: Callable[[], LatencyEstimator]) -> LatencyEstimator:
        view = self.views.get(anchor.choices)
        if view is None:
            if len(self.views) >= self.kept:
                self.views.pop(next(iter(self.views)))
            view = self.views[anchor.choices] = make()
        return view


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
    ``"per-op"`` is the plain table sum; ``"none"`` subtracts it everywhere. A block of several layers
    (:class:`~hwnas.ops.BlockSpec`) costs the sum of its layers (the table holds the layers).
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
        self._by_spec: dict[OpSpec, float] = {}
        self._contexts: dict[tuple[int, int], tuple[Any, list[float]]] = {}
        self._anchors = AnchorCache()
        self._layer_costs = space.linearized_costs(self.op_ms, None)
        self._fixed = sum(self.op_ms(spec) for spec in [*space.prefix, *space.suffix])
        self._fixed += table.overhead_ms if overhead == "once" else 0.0

    def op_ms(self, spec: OpSpec) -> float:
        """The table latency of one op, or the sum over a block's layers (memoized: the linearizations ask often)."""
        ms = self._by_spec.get(spec)
        if ms is None:
            ms = self._by_spec[spec] = sum(self._entry_ms(part) for part in flat_specs(spec))
        return ms

    def _entry_ms(self, spec: OpSpec) -> float:
        if spec.is_free:
            return 0.0
        ms = self.table.median_ms(spec.key())
        return ms if self.overhead == "per-op" else max(ms - self.table.overhead_ms, 0.0)

    def layer_costs_ms(self) -> list[list[float]]:
        return self._layer_costs

    def fixed_ms(self) -> float:
        return self._fixed

    def latency_ms(self, arch: Architecture) -> float:
        """The table sum of ``arch``'s ops: exact for every space (each block's ops in its context)."""
        if self.space.context_free:
            return super().latency_ms(arch)
        return float(self._fixed + sum(self.op_ms(spec) for spec in self.space.layer_specs(arch)))

    def context_costs_ms(self, index: int, previous: str | None) -> list[float]:
        if self.space.context_free:
            return self._layer_costs[index]
        candidates = self.space.candidates_after(index, previous)
        held = self._contexts.get((index, id(candidates)))
        if held is None or held[0] is not candidates:
            held = self._contexts[(index, id(candidates))] = (candidates, [self.op_ms(s) for _, s in candidates])
        return held[1]

    def anchored(self, arch: Architecture | None) -> LatencyEstimator:
        """Itself for a context-free space (its costs are exact); otherwise the costs linearized at ``arch``
        (:meth:`SearchSpace.linearized_costs`), with the exact ``latency_ms``."""
        if self.space.context_free or arch is None:
            return self
        return self._anchors.get(arch, lambda: LinearizedView(self, self.space.linearized_costs(self.op_ms, arch),
                                                              self._fixed))

    def expected_latency_ms(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """E[LAT]; for a non-context-free space with the costs linearized at the most probable architecture (exact
        for one-hot probabilities)."""
        if self.space.context_free:
            return super().expected_latency_ms(probs)
        return self.anchored(most_probable(self.space, probs)).expected_latency_ms(probs)

    def terms(self, arch: Architecture) -> list[Term]:
        """Every term of ``latency_ms(arch)``, in network order (each layer's exact op, in its context)."""
        terms = [Term("prefix", spec.key(), self.op_ms(spec)) for spec in self.space.prefix]
        for layer, choice, spec in zip(self.space.layers, arch.choices, self.space.layer_specs(arch)):
            terms.append(Term(f"layer{layer.index}:{choice}", spec.key(), self.op_ms(spec)))
        terms += [Term("suffix", spec.key(), self.op_ms(spec)) for spec in self.space.suffix]
        if self.overhead == "once":
            terms.append(Term("overhead", "runtime-invocation", self.table.overhead_ms))
        return terms
