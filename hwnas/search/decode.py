"""Target-guaranteed decoding: the most probable architecture whose latency meets the target.

Latency is additive over layers (``LAT = fixed + sum_l c_{l, i_l}``), so the decoding problem

    max_{i_1..i_L} sum_l log p_{l, i_l}    subject to    LAT(i) <= T

is a multiple-choice knapsack, solved exactly by dynamic programming over layers on a latency grid. Costs are
taken relative to the fastest candidate of each layer, ``e_{l,i} = c_{l,i} - min_j c_{l,j}``, against the slack
``S = T - LAT(fastest)``, on a grid of step ``d = S / cells``:

* conservative pass: ``ceil(e / d)`` units, capacity ``cells``. Any solution meets ``sum e <= S`` truly, so its
  latency is ``<= T`` (then checked with the estimator's own ``latency_ms``);
* optimistic pass: ``floor(e / d)`` units. Its feasible set contains every truly feasible architecture, so its
  optimum bounds the true optimum from above; when that architecture truly meets ``T`` it *is* the optimum.

The optimistic answer is returned when it meets ``T``; else the conservative one when it is within ``tol`` of the
bound; else the grid is refined (``cells * 8**r``). The result always meets ``T`` when any architecture does
(at worst the most probable of the fastest architectures); ``None`` when even the fastest exceeds ``T``.

A space that is not context free (``mnasnet``: a block's ops depend on the previous block's width) has no exact
per-layer costs. The knapsack then runs on the costs linearized at an anchor (exact at the anchor and at its
one-block changes), every answer is checked with the exact ``latency_ms``, and the decode is repeated anchored at
the last round's linearized optimum until it stops moving (at most :data:`ANCHOR_ROUNDS` rounds); the most probable
checked answer wins. The fastest and slowest architectures are exact: a shortest path over the chain of layers, each
layer's costs after the previous choice (:meth:`~hwnas.latency.estimator.LatencyEstimator.context_costs_ms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.decode_context import Picks, best_neighbour, chain_extreme, linearization_missed
from hwnas.spaces import Architecture, SearchSpace

_LOG_FLOOR = -1e12  # log-probabilities below this (log 0) count as this, so infeasible stays -inf apart
Mask = Sequence[Sequence[bool]]  # per layer, per candidate: whether the candidate may be chosen
ANCHOR_ROUNDS = 4  # decodes of a non-context-free space, each anchored at the previous round's linearized optimum


def fastest_arch(space: SearchSpace, estimator: LatencyEstimator, allowed: Mask | None = None) -> Architecture:
    """The minimum-latency architecture (the fastest candidate per layer, first on ties); ``allowed``: per layer,
    per candidate, whether it may be chosen (a memory bound's mask, :mod:`~hwnas.search.memory_bound`). Exact for a
    space that is not context free too (:func:`~hwnas.search.decode_context.chain_extreme`)."""
    if not space.context_free:
        return chain_extreme(space, estimator, allowed, slowest=False)
    costs = _costs(space, estimator, allowed)
    return space.arch([layer.names[int(np.argmin(c))] for layer, c in zip(space.layers, costs)])


def slowest_arch(space: SearchSpace, estimator: LatencyEstimator) -> Architecture:
    """The maximum-latency architecture (the slowest candidate per layer, first on ties)."""
    if not space.context_free:
        return chain_extreme(space, estimator, None, slowest=True)
    return space.arch([layer.names[int(np.argmax(c))] for layer, c in zip(space.layers, _costs(space, estimator))])


@dataclass(frozen=True)
class LatencyRange:
    """The estimated latency of the space's fastest and slowest architectures, and how the fastest was found."""

    fastest_ms: float
    slowest_ms: float
    note: str | None = None

    def target_at(self, fraction: float) -> float:
        """The latency ``fraction`` of the way from the fastest to the slowest architecture (the default target)."""
        return self.fastest_ms + fraction * (self.slowest_ms - self.fastest_ms)

    def target_note(self, target_ms: float) -> str | None:
        """What the run says of a target above the slowest architecture (None when it is not)."""
        if target_ms <= self.slowest_ms:
            return None
        return (f"target {target_ms:.4g} ms is above the slowest architecture of the space (est. "
                f"{self.slowest_ms:.4g} ms): every architecture meets it, so latency constrains nothing (the result "
                "is the search's most probable architecture, whatever its latency)")


def latency_range(space: SearchSpace, estimator: LatencyEstimator,
                  fallback: LatencyEstimator | None = None) -> LatencyRange:
    """The fastest and slowest architectures' estimates (:func:`fastest_arch`, :func:`slowest_arch`).

    A latency is never <= 0, but a learned correction can say so at the ends of the space, where it extrapolates
    beyond the networks it was fitted on (a calibrated predictor fitted on 24 measured proxyless@32 networks on
    cpu-litert put the fastest architecture at -0.06 ms; the fastest network measured took 0.21 ms). Then the
    fastest architecture's estimate is ``fallback``'s (the latency table, a sum of measured ops), with a note.
    """
    fastest_arch_ = fastest_arch(space, estimator)
    fastest_ms = estimator.latency_ms(fastest_arch_)
    slowest_ms = estimator.latency_ms(slowest_arch(space, estimator))
    if fastest_ms > 0:
        return LatencyRange(fastest_ms, slowest_ms)
    replacement = fallback.latency_ms(fastest_arch_) if fallback is not None else 0.0
    if not 0 < replacement < slowest_ms:
        raise HwnasError(f"latency model: the fastest architecture of {space.name} is estimated at {fastest_ms:.4g} "
                         "ms; a latency is never <= 0 (refit the predictor on more networks, or set predictor=none)")
    return LatencyRange(replacement, slowest_ms, f"the latency model estimates the fastest architecture at "
                        f"{fastest_ms:.4g} ms (a latency is never <= 0: it extrapolates beyond the networks it was "
                        f"fitted on); the latency table's {replacement:.4g} ms is used for it")


def most_probable_arch(space: SearchSpace, log_probs: Sequence[Sequence[float]]) -> Architecture:
    """The most probable architecture (first on ties): where the decoder and the loss linearize a latency model
    with a non-additive part (:meth:`~hwnas.latency.estimator.LatencyEstimator.anchored`)."""
    return space.arch([layer.names[max(range(len(lp)), key=lp.__getitem__)] for layer, lp in zip(space.layers,
                                                                                              log_probs)])


def decode_under_target(space: SearchSpace, log_probs: Sequence[Sequence[float]], estimator: LatencyEstimator,
                        target_ms: float, *, cells: int = 2000, refinements: int = 2,
                        tol: float = 1e-9, allowed: Mask | None = None) -> Architecture | None:
    """The architecture maximising ``sum_l log_probs[l][i_l]`` with ``estimator.latency_ms(arch) <= target_ms``.

    Returns ``None`` when even the fastest architecture exceeds ``target_ms``. ``cells``: grid cells over the
    slack ``T - LAT(fastest)``; ``refinements``: how many times the grid may be refined 8x when the
    conservative and optimistic passes disagree. A latency model with a non-additive part is linearized at the most
    probable architecture (:func:`most_probable_arch`), where the search's loss linearizes it; ``latency_ms`` checks.
    ``allowed``: only these candidates are chosen (a memory bound's mask; the fastest is then the fastest of them).
    """
    lp = _log_probs(space, log_probs)

    def once(view: LatencyEstimator) -> tuple[Picks | None, Picks | None]:
        return _under_target_once(space, lp, view, target_ms, cells, refinements, tol, allowed)

    return _reanchored(space, lp, estimator, most_probable_arch(space, log_probs), once, (-math.inf, target_ms),
                       allowed)


def _under_target_once(space: SearchSpace, lp: list[np.ndarray], estimator: LatencyEstimator, target_ms: float,
                       cells: int, refinements: int, tol: float, allowed: Mask | None) -> tuple[Picks | None,
                                                                                                  Picks | None]:
    """One decode under the target with ``estimator``'s (linearized) costs: (the most probable answer that truly
    meets the target, or None when even the fastest does not; the linearized optimum, checked or not)."""
    costs = _costs(space, estimator, allowed)
    fastest = fastest_arch(space, estimator, allowed)
    if estimator.latency_ms(fastest) > target_ms:
        return None, None
    base = [float(c.min()) for c in costs]
    extra = [c - b for c, b in zip(costs, base)]
    slack = target_ms - estimator.fixed_ms() - sum(base)
    # among the fastest architectures, the most probable: feasible by construction (for additive costs)
    best = [int(np.argmax(np.where(e <= 0.0, v, -np.inf))) for e, v in zip(extra, lp)]
    candidates = [best] if estimator.latency_ms(_arch(space, best)) <= target_ms else [_indices(space, fastest)]
    upper: Picks | None = None
    if slack > 0:
        for level in range(refinements + 1):
            n_cells = cells * 8**level
            step = slack / n_cells
            upper, upper_value = _knapsack([_units(e, step, np.floor, n_cells) for e in extra], lp, n_cells)
            if estimator.latency_ms(_arch(space, upper)) <= target_ms:
                return upper, upper  # the optimum over a superset of the feasible set, and feasible
            safe = _knapsack([_units(e, step, np.ceil, n_cells) for e in extra], lp, n_cells)
            if safe is not None and estimator.latency_ms(_arch(space, safe[0])) <= target_ms:
                candidates.append(safe[0])
                if upper_value - safe[1] <= tol * max(1.0, abs(upper_value)):
                    break
            if linearization_missed(space, estimator, upper, -math.inf, target_ms):
                break  # a finer grid does not help: the next round re-anchors
    answer = max(candidates, key=lambda c: _score(lp, c))
    return answer, upper if upper is not None else answer


def _reanchored(space: SearchSpace, lp: list[np.ndarray], estimator: LatencyEstimator, anchor: Architecture,
                once: Callable[[LatencyEstimator], tuple[Picks | None, Picks | None]], band: tuple[float, float],
                allowed: Mask | None, neighbours: bool = True) -> Architecture | None:
    """``once`` with the estimator anchored at ``anchor`` (the most probable architecture); for a space that is not
    context free, again anchored at each round's linearized optimum until it repeats an anchor (at most
    :data:`ANCHOR_ROUNDS` rounds), each round's anchor and its one-layer changes in ``band`` also answering
    (:func:`~hwnas.search.decode_context.best_neighbour`; not with ``neighbours`` false, for a caller with a budget
    they are not checked against). The most probable checked answer (None: none)."""
    answers: list[Picks] = []
    tried: set[tuple[str, ...]] = set()
    for _ in range(1 if space.context_free else ANCHOR_ROUNDS):
        tried.add(anchor.choices)
        view = estimator.anchored(anchor)
        answer, optimum = once(view)
        near = (best_neighbour(space, lp, view, anchor, *band, allowed)
                if neighbours and not space.context_free else None)
        answers += [picks for picks in (answer, near) if picks is not None]
        if optimum is None or _arch(space, optimum).choices in tried:
            break
        anchor = _arch(space, optimum)
    return _arch(space, max(answers, key=lambda c: _score(lp, c))) if answers else None


def decode_in_band(space: SearchSpace, log_probs: Sequence[Sequence[float]], estimator: LatencyEstimator,
                   low_ms: float, high_ms: float, *, cells: int = 4000, refinements: int = 2,
                   allowed: Mask | None = None) -> Architecture | None:
    """The most probable architecture whose latency lies in ``[low_ms, high_ms]``; None when none is found.

    What the closed loop decodes when it aims: the unconstrained most probable architecture can sit far under the
    target (the latency loss steers the *expected* latency to T, and a broad distribution puts it there while its
    mode is much faster), and a tighter upper bound never moves the decode off it. The same knapsack as
    :func:`decode_under_target`, with each layer's extra cost rounded to the nearest grid unit and the best value
    kept per *exact* total, so any total in the band can be chosen: ``max sum_l log p_{l,i_l}`` over totals whose
    grid cost lies in the band. The answer is checked with the estimator's own ``latency_ms``; when rounding put it
    outside the band the grid is refined (``cells * 8**r``), and None is returned if it still is. ``allowed``: as
    :func:`decode_under_target`'s.
    """
    if not low_ms <= high_ms:
        raise HwnasError(f"decode: band [{low_ms}, {high_ms}] ms is empty")
    lp = _log_probs(space, log_probs)

    def once(view: LatencyEstimator) -> tuple[Picks | None, Picks | None]:
        return _in_band_once(space, lp, view, low_ms, high_ms, cells, refinements, allowed)

    return _reanchored(space, lp, estimator, most_probable_arch(space, log_probs), once, (low_ms, high_ms), allowed)


def _in_band_once(space: SearchSpace, lp: list[np.ndarray], estimator: LatencyEstimator, low_ms: float,
                  high_ms: float, cells: int, refinements: int, allowed: Mask | None) -> tuple[Picks | None,
                                                                                               Picks | None]:
    """One decode in the band with ``estimator``'s (linearized) costs: (the answer, when it truly lies in the band;
    the knapsack's last pick, checked or not)."""
    costs = _costs(space, estimator, allowed)
    base = [float(c.min()) for c in costs]
    floor_ms = estimator.fixed_ms() + sum(base)
    extra = [c - b for c, b in zip(costs, base)]
    top = min(high_ms, floor_ms + sum(float(e[np.isfinite(e)].max()) for e in extra)) - floor_ms
    if top < 0:
        return None, None
    picks = None
    for level in range(refinements + 1):
        step = max(top, 1e-12) / (cells * 8**level)
        capacity = int(round(top / step))
        units = [np.where(np.isfinite(e), np.rint(np.where(np.isfinite(e), e, 0.0) / step), capacity + 1)
                 .astype(np.int64) for e in extra]
        lowest = max(0, int(math.ceil((low_ms - floor_ms) / step)))
        picks = _knapsack_exact(units, lp, capacity, lowest) or picks
        if picks is not None and low_ms <= estimator.latency_ms(_arch(space, picks)) <= high_ms:
            return picks, picks
        if picks is not None and linearization_missed(space, estimator, picks, low_ms, high_ms):
            break  # a finer grid does not help: the next round re-anchors
    return None, picks


def _costs(space: SearchSpace, estimator: LatencyEstimator, allowed: Mask | None = None) -> list[np.ndarray]:
    """Per layer, the candidates' latency costs; a candidate ``allowed`` leaves out costs ``inf`` (never fits)."""
    costs = estimator.layer_costs_ms()
    if len(costs) != len(space.layers) or any(len(c) != len(layer.candidates) for c, layer in zip(costs, space.layers)):
        raise HwnasError(f"decode: estimator costs do not match the layers of space {space.name}")
    out = [np.asarray(c, dtype=np.float64) for c in costs]
    if allowed is None:
        return out
    if len(allowed) != len(out) or any(len(m) != len(c) or not any(m) for m, c in zip(allowed, out)):
        raise HwnasError(f"decode: the mask does not match the layers of space {space.name} (or leaves a layer empty)")
    return [np.where(np.asarray(m, dtype=bool), c, np.inf) for m, c in zip(allowed, out)]


def _log_probs(space: SearchSpace, log_probs: Sequence[Sequence[float]]) -> list[np.ndarray]:
    if len(log_probs) != len(space.layers):
        raise HwnasError(f"decode: {space.name} has {len(space.layers)} layers, got log-probabilities for "
                         f"{len(log_probs)}")
    out = []
    for layer, values in zip(space.layers, log_probs):
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (len(layer.candidates),) or np.isnan(v).any() or (v == np.inf).any():
            raise HwnasError(f"decode: layer {layer.index}: expected {len(layer.candidates)} log-probabilities "
                             f"(finite or -inf), got {list(values)}")
        out.append(np.maximum(v, _LOG_FLOOR))
    return out


def _units(extra: np.ndarray, step: float, rounding: np.ufunc, capacity: int) -> np.ndarray:
    """Grid units of each extra cost, clipped at ``capacity + 1`` (never fits)."""
    return np.minimum(rounding(extra / step), capacity + 1).astype(np.int64)


def _knapsack(units: list[np.ndarray], lp: list[np.ndarray], capacity: int) -> tuple[list[int], float] | None:
    """Exact DP: ``best[u]`` = max log-prob of a prefix of total units ``<= u``; returns (choices, value)."""
    best, choice = _dp(units, lp, capacity, exact=False)
    if not math.isfinite(best[capacity]):
        return None
    return _backtrack(units, choice, capacity), float(best[capacity])


def _knapsack_exact(units: list[np.ndarray], lp: list[np.ndarray], capacity: int, lowest: int) -> list[int] | None:
    """Exact DP over totals: ``best[u]`` = max log-prob of a prefix of total exactly ``u`` units; the answer is the
    best total in ``[lowest, capacity]``."""
    best, choice = _dp(units, lp, capacity, exact=True)
    if lowest > capacity or not np.isfinite(best[lowest:]).any():
        return None
    return _backtrack(units, choice, lowest + int(np.argmax(best[lowest:])))


def _dp(units: list[np.ndarray], lp: list[np.ndarray], capacity: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """Best log-prob per total over the layers, and each layer's choice per total. ``exact``: totals of exactly
    ``u`` units (an empty prefix has total 0 only); else at most ``u`` (it fits every capacity)."""
    best = np.zeros(capacity + 1)
    if exact:
        best[1:] = -np.inf
    choice = np.zeros((len(units), capacity + 1), dtype=np.int16)
    for layer, (w, v) in enumerate(zip(units, lp)):
        new = np.full(capacity + 1, -np.inf)
        for i in range(len(w)):
            if w[i] > capacity:
                continue
            shifted = np.full(capacity + 1, -np.inf)
            shifted[w[i]:] = best[:capacity + 1 - w[i]] + v[i]
            better = shifted > new
            new[better] = shifted[better]
            choice[layer, better] = i
        best = new
    return best, choice


def _backtrack(units: list[np.ndarray], choice: np.ndarray, total: int) -> list[int]:
    picks = []
    for layer in range(len(units) - 1, -1, -1):
        i = int(choice[layer, total])
        picks.append(i)
        total -= int(units[layer][i])
    return picks[::-1]


def _score(lp: list[np.ndarray], indices: list[int]) -> float:
    return float(sum(v[i] for v, i in zip(lp, indices)))


def _arch(space: SearchSpace, indices: list[int]) -> Architecture:
    return space.arch([layer.names[i] for layer, i in zip(space.layers, indices)])


def _indices(space: SearchSpace, arch: Architecture) -> list[int]:
    return [layer.names.index(c) for layer, c in zip(space.layers, arch.choices)]
