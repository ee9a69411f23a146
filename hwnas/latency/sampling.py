"""Stratified sampling of a space's networks for a measurement set (:mod:`hwnas.latency.sets`).

Sampling is stratified over a latency proxy (the table's estimate when a table exists, else MACs): a large
pool is drawn with a per-network preference for small or large ops, then one network is kept per equal-width
bin of the proxy's range, so a set covers the fastest and slowest networks rather than the middle only.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.estimator import LatencyEstimator
from hwnas.spaces import Architecture, SearchSpace


def macs_proxy(space: SearchSpace) -> Callable[[Architecture], float]:
    return lambda arch: float(sum(spec.macs() for spec in space.arch_specs(arch) if not spec.is_free))


def sample_stratified(space: SearchSpace, n: int, seed: int,
                      proxy: Callable[[Architecture], float] | LatencyEstimator | None = None,
                      pool_factor: int = 40) -> list[Architecture]:
    """``n`` distinct architectures spread evenly over the proxy's range (see the module docstring).

    Each pool network draws a preference ``beta ~ U(-4, 4)`` and picks each layer's candidate with probability
    proportional to ``exp(beta * rank)``, the rank of the candidate's own proxy cost scaled to [0, 1]; the pool
    therefore reaches both ends of the range. Then ``n`` equal-width bins over the pool's proxy range each keep
    the pool network nearest their centre (bins left empty are filled from the largest remaining gaps).
    """
    if n < 1:
        raise HwnasError(f"measurement set: --n must be at least 1, got {n}")
    if n >= space.size:  # the whole space (a small one): every architecture once, in random order
        return space.sample_archs(space.size, random.Random(seed))
    cost = proxy.latency_ms if isinstance(proxy, LatencyEstimator) else (proxy or macs_proxy(space))
    rng = random.Random(seed)
    ranks = []
    for layer in space.layers:
        costs = [_candidate_cost(space, layer.index, name, cost) for name in layer.names]
        order = np.argsort(np.argsort(costs))
        ranks.append(order / max(len(costs) - 1, 1))
    pool: dict[tuple[str, ...], float] = {}
    for _ in range(max(pool_factor * n, 400)):
        beta = rng.uniform(-4.0, 4.0)
        choices = []
        for layer, rank in zip(space.layers, ranks):
            weights = np.exp(beta * rank)
            choices.append(rng.choices(layer.names, weights=list(weights))[0])
        key = tuple(choices)
        if key not in pool:
            pool[key] = cost(space.arch(key))
    while len(pool) < n:  # a pool with fewer distinct networks than asked for: topped up uniformly
        arch = space.random_arch(rng)
        pool.setdefault(arch.choices, cost(arch))
    keys = sorted(pool, key=pool.__getitem__)
    values = np.array([pool[k] for k in keys])
    lo, hi = float(values[0]), float(values[-1])
    chosen: list[int] = []
    for b in range(n):
        centre = lo + (b + 0.5) * (hi - lo) / n
        order = np.argsort(np.abs(values - centre))
        pick = next((int(i) for i in order if int(i) not in chosen), None)
        if pick is not None:
            chosen.append(pick)
    rng.shuffle(chosen)
    return [space.arch(keys[i]) for i in chosen]


def _candidate_cost(space: SearchSpace, index: int, name: str, cost: Callable[[Architecture], float]) -> float:
    base = [layer.names[0] for layer in space.layers]
    base[index] = name
    return cost(space.arch(base))
