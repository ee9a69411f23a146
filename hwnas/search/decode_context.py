"""Decoding in a space that is not context free (``mnasnet``: a block's ops depend on the previous block's width).

Latency is then not additive over the layers' choices, so :mod:`~hwnas.search.decode`'s knapsack runs on costs
linearized at an anchor (:meth:`~hwnas.latency.estimator.LatencyEstimator.anchored`: exact at the anchor and at each
of its one-layer changes). What this module adds:

* :func:`chain_extreme`: the exact fastest or slowest architecture, a shortest path over the chain of layers
  (Viterbi) with each layer's costs after the previous choice (``context_costs_ms``);
* :func:`best_neighbour`: the most probable of the anchor and its one-layer changes within a latency band, exact
  (the linearization is exact there), so a round whose knapsack answer misses the band still yields a checked one;
* :func:`linearization_missed`: whether an answer misses by the linearization rather than by the grid.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.estimator import LatencyEstimator
from hwnas.spaces import Architecture, SearchSpace

Picks = list[int]  # per layer, the chosen candidate's index
Mask = Sequence[Sequence[bool]]


def masks_of(space: SearchSpace, allowed: Mask | None) -> list[np.ndarray]:
    """Per layer, the boolean mask of the candidates that may be chosen (every one when ``allowed`` is None)."""
    if allowed is None:
        return [np.ones(len(layer.names), dtype=bool) for layer in space.layers]
    masks = [np.asarray(m, dtype=bool) for m in allowed]
    if len(masks) != len(space.layers) or any(m.shape != (len(layer.names),) or not m.any()
                                              for m, layer in zip(masks, space.layers)):
        raise HwnasError(f"decode: the mask does not match the layers of space {space.name} (or leaves a layer empty)")
    return masks


def chain_extreme(space: SearchSpace, estimator: LatencyEstimator, allowed: Mask | None,
                  slowest: bool) -> Architecture:
    """The exact fastest (``slowest``: slowest) architecture: a shortest path over the chain of layers, each layer's
    costs after the previous choice, asked once per distinct candidate set (previous choices that give the same set,
    e.g. the same width, share it). First on ties."""
    sign = -1.0 if slowest else 1.0
    masks = masks_of(space, allowed)
    total = np.where(masks[0], sign * _row(space, estimator, 0, None), np.inf)
    back: list[np.ndarray] = []
    for i in range(1, len(space.layers)):
        previous_names = space.layers[i - 1].names
        groups: dict[int, tuple[object, list[int]]] = {}  # id of a candidate set -> (the set, kept alive; members)
        for j in np.flatnonzero(np.isfinite(total)):
            candidates = space.candidates_after(i, previous_names[j])
            groups.setdefault(id(candidates), (candidates, []))[1].append(int(j))
        size = len(space.layers[i].names)
        new, came = np.full(size, np.inf), np.zeros(size, dtype=np.int64)
        for _, members in groups.values():
            j = members[int(np.argmin(total[members]))]
            row = np.where(masks[i], total[j] + sign * _row(space, estimator, i, previous_names[j]), np.inf)
            better = row < new
            new[better], came[better] = row[better], j
        total = new
        back.append(came)
    picks = [int(np.argmin(total))]
    for came in reversed(back):
        picks.append(int(came[picks[-1]]))
    return space.arch([layer.names[i] for layer, i in zip(space.layers, picks[::-1])])


def _row(space: SearchSpace, estimator: LatencyEstimator, index: int, previous: str | None) -> np.ndarray:
    row = np.asarray(estimator.context_costs_ms(index, previous), dtype=np.float64)
    if row.shape != (len(space.layers[index].names),):
        raise HwnasError(f"decode: estimator costs do not match layer {index} of space {space.name}")
    return row


def linear_ms(estimator: LatencyEstimator, picks: Picks) -> float:
    """The latency of ``picks`` by ``estimator``'s per-layer costs (the linearization, for an anchored view)."""
    return estimator.fixed_ms() + sum(float(c[i]) for c, i in zip(estimator.layer_costs_ms(), picks))


def linearization_missed(space: SearchSpace, estimator: LatencyEstimator, picks: Picks, low_ms: float,
                         high_ms: float) -> bool:
    """Whether ``picks`` of a non-context-free space lie in ``[low_ms, high_ms]`` by the linearized costs (and so
    missed it by the exact latency because the anchor is too far: a finer grid would not help)."""
    return not space.context_free and low_ms <= linear_ms(estimator, picks) <= high_ms


def best_neighbour(space: SearchSpace, lp: list[np.ndarray], view: LatencyEstimator, anchor: Architecture,
                   low_ms: float, high_ms: float, allowed: Mask | None) -> Picks | None:
    """The most probable of ``anchor`` and its one-layer changes whose latency lies in ``[low_ms, high_ms]`` (None:
    none), by ``view``'s costs linearized at ``anchor`` (exact there), checked with ``view.latency_ms``."""
    masks = masks_of(space, allowed)
    picks = [layer.names.index(c) for layer, c in zip(space.layers, anchor.choices)]
    if not all(m[i] for m, i in zip(masks, picks)):
        return None
    costs = [np.asarray(c, dtype=np.float64) for c in view.layer_costs_ms()]
    here = view.fixed_ms() + sum(float(c[i]) for c, i in zip(costs, picks))
    score = float(sum(v[i] for v, i in zip(lp, picks)))
    best, best_score = None, -math.inf
    for layer, (cost, values, mask, i) in enumerate(zip(costs, lp, masks, picks)):
        latency = here + cost - cost[i]
        scores = np.where(mask & (latency >= low_ms) & (latency <= high_ms), score + values - values[i], -math.inf)
        j = int(np.argmax(scores))
        if scores[j] > best_score:
            best, best_score = picks[:layer] + [j] + picks[layer + 1:], float(scores[j])
    if best is None:
        return None
    exact = view.latency_ms(space.arch([layer.names[i] for layer, i in zip(space.layers, best)]))
    return best if low_ms <= exact <= high_ms else None
