"""Decoding under a latency target and a memory bound (MemNet's two budgets, :mod:`~hwnas.search.memory_bound`).

The peak-activation bound is a mask (a candidate whose own peak exceeds it is never chosen), so with it alone the
latency knapsack of :mod:`~hwnas.search.decode` runs on the allowed candidates. A parameter budget adds a second
additive constraint:

    max_{i_1..i_L} sum_l log p_{l, i_l}   s.t.   LAT(i) <= T,   PARAMS(i) = fixed + sum_l w_{l, i_l} <= P,
                                                 every i_l allowed by the peak mask,

a multiple-choice knapsack with two budgets, solved exactly by :func:`best_within`: branch and bound over the
layers, pruned by a two-dimensional dynamic program on a coarse grid of both budgets. With the extra costs
``e_{k,l,i} = c_{k,l,i} - min_j c_{k,l,j}`` and steps ``d_k = S_k / G_k`` over the slacks ``S_k``, the table
``U[l][a][b]`` is the best log-probability of layers ``l..L-1`` whose ``floor(e / d)`` units fit ``(a, b)``.
Since ``sum floor(x) <= floor(sum x)``, a suffix that truly fits the remaining slacks ``(r_0, r_1)`` fits
``(floor(r_0 / d_0), floor(r_1 / d_1))`` units, so ``U`` there bounds it from above: a branch whose value plus that
bound cannot beat the best found is cut, and the search is exact. Every answer is checked with the estimator's own
``latency_ms`` and the parameter sum before it is kept. In a space that is not context free (``mnasnet``) the
latency costs are linearized at an anchor and re-anchored at each round's optimum, as the one-budget decoders of
:mod:`~hwnas.search.decode` do.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.decode import (_costs, _log_probs, _reanchored, decode_in_band, decode_under_target,
                                 fastest_arch, most_probable_arch)
from hwnas.search.memory_bound import MemoryBound, round_up
from hwnas.spaces import Architecture, SearchSpace

NODE_LIMIT = 2_000_000  # branch-and-bound nodes before the best answer found so far is returned (never reached in
# the spaces tried: a few thousand nodes on proxyless)


def best_within(values: Sequence[Sequence[float]], costs: Sequence[Sequence[Sequence[float]]],
                budgets: Sequence[float], *, low: float = -math.inf,
                check: Callable[[list[int]], bool] | None = None, cells: int = 96,
                node_limit: int = NODE_LIMIT) -> tuple[list[int], float] | None:
    """``max sum_l values[l][i_l]`` subject to ``sum_l costs[k][l][i_l] <= budgets[k]`` for both resources ``k``
    (0 and 1; a budget may be ``inf``) and ``sum_l costs[0][l][i_l] >= low``; a cost ``inf`` is never chosen.

    Returns the choices and their value, None when nothing fits. ``check(choices)``: a final test an answer must
    also pass (the estimator's own latency). Exact (see the module docstring) unless ``node_limit`` nodes are
    visited first, when the best answer found so far is returned.
    """
    vals = [np.asarray(v, dtype=np.float64) for v in values]
    keep = [np.all([np.isfinite(np.asarray(c[l], dtype=np.float64)) for c in costs], axis=0) for l in range(len(vals))]
    if not all(k.any() for k in keep):
        return None
    base = [sum(float(np.min(np.asarray(c[l], dtype=np.float64)[keep[l]])) for l in range(len(vals))) for c in costs]
    extra = [[np.where(keep[l], np.asarray(c[l], dtype=np.float64) - float(np.min(np.asarray(c[l])[keep[l]])), 0.0)
              for l in range(len(vals))] for c in costs]
    slack = [b - s for b, s in zip(budgets, base)]
    tols = [1e-9 * max(1.0, abs(b)) if math.isfinite(b) else 0.0 for b in budgets]
    if any(s < -t for s, t in zip(slack, tols)):
        return None
    search = _Search(vals, keep, extra, slack, tols, low - base[0], check, cells, node_limit)
    return search.run()


class _Search:
    """The branch and bound of :func:`best_within` over prepared extra costs."""

    def __init__(self, values: list[np.ndarray], keep: list[np.ndarray], extra: list[list[np.ndarray]],
                 slack: list[float], tols: list[float], low_extra: float, check: Callable[[list[int]], bool] | None,
                 cells: int, node_limit: int) -> None:
        self.values, self.extra, self.slack, self.tols = values, extra, slack, tols
        self.low_extra, self.check, self.node_limit = low_extra, check, node_limit
        self.cells = [cells if math.isfinite(s) and s > 0 else 0 for s in slack]
        self.step = [s / g if g else math.inf for s, g in zip(slack, self.cells)]
        self.order = [[int(i) for i in np.argsort(-v, kind="stable") if k[i]] for v, k in zip(values, keep)]
        # the most the layers from l on can add to resource 0 (to reach ``low``)
        most = [max(float(e[i]) for i in o) for e, o in zip(extra[0], self.order)]
        self.reach = [sum(most[l:]) for l in range(len(values) + 1)]
        self.bound = self._bound_table()
        self.best: tuple[list[int], float] | None = None
        self.nodes = 0

    def _units(self, k: int, extra: float) -> int:
        """Grid units of an extra cost, rounded down (less the tolerance): optimistic, so ``U`` is a bound."""
        if not self.cells[k]:
            return 0 if extra <= self.tols[k] or not math.isfinite(self.slack[k]) else 1  # 1 never fits 0 cells
        return min(max(0, int(math.floor((extra - self.tols[k]) / self.step[k]))), self.cells[k] + 1)

    def _bound_table(self) -> list[np.ndarray]:
        """``U[l][a][b]`` (module docstring): the best value of layers ``l..`` within ``(a, b)`` floor units."""
        shape = (self.cells[0] + 1, self.cells[1] + 1)
        tables = [np.zeros(shape)]
        for l in range(len(self.values) - 1, -1, -1):
            after, new = tables[0], np.full(shape, -np.inf)
            for i in self.order[l]:
                u0, u1 = self._units(0, float(self.extra[0][l][i])), self._units(1, float(self.extra[1][l][i]))
                if u0 < shape[0] and u1 < shape[1]:
                    shifted = after[:shape[0] - u0, :shape[1] - u1] + self.values[l][i]
                    np.maximum(new[u0:, u1:], shifted, out=new[u0:, u1:])
            tables.insert(0, new)
        return tables

    def _cell(self, k: int, remaining: float) -> int:
        if not self.cells[k]:
            return 0
        return min(self.cells[k], int(math.floor((remaining + self.tols[k]) / self.step[k])))

    def run(self) -> tuple[list[int], float] | None:
        self._visit(0, 0.0, 0.0, 0.0, [])
        return self.best

    def _visit(self, layer: int, used0: float, used1: float, value: float, picks: list[int]) -> None:
        self.nodes += 1
        if layer == len(self.values):
            if used0 >= self.low_extra - self.tols[0] and (self.best is None or value > self.best[1]) and \
                    (self.check is None or self.check(picks)):
                self.best = (list(picks), value)
            return
        for i in self.order[layer]:
            if self.nodes >= self.node_limit:
                return
            n0, n1 = used0 + float(self.extra[0][layer][i]), used1 + float(self.extra[1][layer][i])
            r0, r1 = self.slack[0] - n0, self.slack[1] - n1
            if r0 < -self.tols[0] or r1 < -self.tols[1] or n0 + self.reach[layer + 1] < self.low_extra - self.tols[0]:
                continue
            bound = value + self.values[layer][i] + self.bound[layer + 1][self._cell(0, r0), self._cell(1, r1)]
            if bound == -math.inf or self.best is not None and bound <= self.best[1]:
                continue
            picks.append(i)
            self._visit(layer + 1, n0, n1, value + float(self.values[layer][i]), picks)
            picks.pop()


# -- the decoders' entry points ----------------------------------------------------------------------------------
def decode_within(space: SearchSpace, log_probs: Sequence[Sequence[float]], estimator: LatencyEstimator,
                  target_ms: float, bound: MemoryBound | None) -> Architecture | None:
    """:func:`~hwnas.search.decode.decode_under_target` within ``bound`` too: the most probable architecture whose
    latency is ``<= target_ms`` and whose memory is within the bound; None when none is. Without a bound it is
    exactly ``decode_under_target``; with a peak bound alone, the same knapsack on the allowed candidates."""
    if bound is None:
        return decode_under_target(space, log_probs, estimator, target_ms)
    if bound.params_budget() is None:
        return decode_under_target(space, log_probs, estimator, target_ms, allowed=bound.allowed)
    values = _log_probs(space, log_probs)
    return _within(space, values, estimator, most_probable_arch(space, log_probs), bound, -math.inf, target_ms)


def in_band_within(space: SearchSpace, log_probs: Sequence[Sequence[float]], estimator: LatencyEstimator,
                   low_ms: float, high_ms: float, bound: MemoryBound | None) -> Architecture | None:
    """:func:`~hwnas.search.decode.decode_in_band` within ``bound`` too (None when nothing is found)."""
    if bound is None or bound.params_budget() is None:
        return decode_in_band(space, log_probs, estimator, low_ms, high_ms,
                              allowed=None if bound is None else bound.allowed)
    if not low_ms <= high_ms:
        raise HwnasError(f"decode: band [{low_ms}, {high_ms}] ms is empty")
    values = _log_probs(space, log_probs)
    return _within(space, values, estimator, most_probable_arch(space, log_probs), bound, low_ms, high_ms)


def fastest_within(space: SearchSpace, estimator: LatencyEstimator, bound: MemoryBound | None) -> Architecture:
    """The fastest architecture within ``bound`` (:func:`~hwnas.search.decode.fastest_arch` on the allowed
    candidates; under a parameter budget, the least latency that fits it, by :func:`best_within`)."""
    if bound is None or bound.params_budget() is None:
        return fastest_arch(space, estimator, None if bound is None else bound.allowed)
    costs = _costs(space, estimator, bound.allowed)
    values = [np.where(np.isfinite(c), -c, -np.inf) for c in costs]
    found = _two_budgets(space, values, estimator, bound, -math.inf, math.inf)
    assert found is not None, "MemoryBound.of refuses a parameter budget no architecture fits"
    return _arch(space, found)


def slowest_within(space: SearchSpace, estimator: LatencyEstimator, bound: MemoryBound | None) -> Architecture:
    """The slowest architecture within ``bound``: the top of the latency range the bound leaves (the slowest
    allowed candidate per layer; under a parameter budget, the most latency that fits it, by :func:`best_within`)."""
    if bound is None or bound.params_budget() is None:
        allowed = None if bound is None else bound.allowed
        costs = _costs(space, estimator, allowed)
        return space.arch([layer.names[int(np.argmax(np.where(np.isfinite(c), c, -np.inf)))]
                           for layer, c in zip(space.layers, costs)])
    costs = _costs(space, estimator, bound.allowed)
    values = [np.where(np.isfinite(c), c, -np.inf) for c in costs]
    found = _two_budgets(space, values, estimator, bound, -math.inf, math.inf)
    assert found is not None, "MemoryBound.of refuses a parameter budget no architecture fits"
    return _arch(space, found)


def bounded_target(space: SearchSpace, estimator: LatencyEstimator, bound: MemoryBound,
                   fraction: float) -> tuple[float, float, float]:
    """``(T, fastest, slowest)`` of the architectures within ``bound``: the default target (no ``--target-ms``)
    at ``fraction`` of the way from the fastest to the slowest of them, as the unbounded default is of the whole
    space, so a bound alone never leaves the default target out of reach."""
    fastest_ms = estimator.latency_ms(fastest_within(space, estimator, bound))
    slowest_ms = estimator.latency_ms(slowest_within(space, estimator, bound))
    return fastest_ms + fraction * (slowest_ms - fastest_ms), fastest_ms, slowest_ms


def _within(space: SearchSpace, values: list[np.ndarray], estimator: LatencyEstimator, anchor: Architecture,
            bound: MemoryBound, low_ms: float, high_ms: float) -> Architecture | None:
    """:func:`_two_budgets` with the latency model linearized at ``anchor`` (the most probable architecture), and
    re-anchored as the one-budget decoders are (:func:`~hwnas.search.decode._reanchored`) in a space that is not
    context free: each round's unchecked linearized optimum is the next anchor."""

    def once(view: LatencyEstimator) -> tuple[list[int] | None, list[int] | None]:
        answer = _two_budgets(space, values, view, bound, low_ms, high_ms)
        optimum = None if space.context_free else _two_budgets(space, values, view, bound, low_ms, high_ms,
                                                               checked=False)
        return answer, optimum

    return _reanchored(space, values, estimator, anchor, once, (low_ms, high_ms), bound.allowed, neighbours=False)


def _two_budgets(space: SearchSpace, values: Sequence[np.ndarray], estimator: LatencyEstimator, bound: MemoryBound,
                 low_ms: float, high_ms: float, checked: bool = True) -> list[int] | None:
    """The choices (indices) of the best architecture by ``values`` with latency in ``[low_ms, high_ms]`` and memory
    within ``bound`` (``checked`` false: by the linearized costs alone, not checked with the exact latency and
    memory)."""
    budget = bound.params_budget()
    assert budget is not None
    costs = _costs(space, estimator, bound.allowed)
    params = [np.where(np.asarray(mask), np.asarray(p, dtype=np.float64), np.inf)
              for p, mask in zip(bound.param_bytes, bound.allowed)]
    fixed_ms = estimator.fixed_ms()

    def check(picks: list[int]) -> bool:
        arch = _arch(space, picks)
        return bound.fits(arch) and (math.isinf(high_ms) or low_ms <= estimator.latency_ms(arch) <= high_ms)

    found = best_within(values, [costs, params], [high_ms - fixed_ms, float(budget - bound.fixed_params)],
                        low=low_ms - fixed_ms, check=check if checked else None)
    return None if found is None else found[0]


def refuse_unreachable_target(space: SearchSpace, estimator: LatencyEstimator, target_ms: float,
                              bound: MemoryBound | None) -> None:
    """One line when no architecture within ``bound`` meets ``target_ms`` by the latency model (the search could
    only return the fastest one within the bound, over the target, whatever it learned)."""
    if bound is None:
        return
    fastest_ms = estimator.latency_ms(fastest_within(space, estimator, bound))
    if fastest_ms > target_ms:
        raise HwnasError(f"target {target_ms:.4g} ms is below the fastest architecture of {space.name}@"
                         f"{space.resolution} within {bound.describe()} (est. {fastest_ms:.4g} ms): no architecture "
                         f"meets both; give --target-ms {round_up(fastest_ms)} or more, or a looser bound")


def _arch(space: SearchSpace, indices: list[int]) -> Architecture:
    return space.arch([layer.names[i] for layer, i in zip(space.layers, indices)])


__all__ = ["best_within", "decode_within", "fastest_within", "in_band_within", "refuse_unreachable_target"]
