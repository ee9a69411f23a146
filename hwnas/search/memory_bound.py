"""The memory bound of a search (MemNet): ``--max-memory-mb M`` on the network's peak activation memory and,
optionally, ``--max-params-mb P`` on its parameter bytes, for batch-1 inference (:mod:`hwnas.spaces.footprint`).

The two budgets differ in kind, and the decoders use that:

* **peak activation** is a *max* over the ops run in sequence (``peak = max(fixed, max_l peak_{l, i_l})``), so
  ``peak <= M`` holds exactly when every chosen op's own peak is ``<= M`` (and the fixed ops'): the bound is a
  *mask* of allowed candidates per layer, and any combination of allowed candidates fits;
* **parameters** are a *sum* (``params = fixed + sum_l params_{l, i_l}``): ``params <= P`` is a second knapsack
  budget beside latency (:func:`~hwnas.search.decode_memory.decode_within`).

A bound no architecture of the space can meet is refused in one line before any work, with the smallest figure
the space reaches. ``MB`` is a MiB (``2**20`` bytes), as in :mod:`hwnas.spaces.footprint`.

In a space that is not ``context_free`` (``mnasnet``: a block's first layer takes the previous block's width), a
candidate's peak and parameters depend on the previous layer's choice. The mask stays a mask (a product of
per-layer sets, which the decoders need) and is **sound**: every combination of allowed candidates is within the
peak bound. A candidate is allowed iff its peak fits in *every* context the previous layer's allowed candidates can
give it; of all such masks the one with the most combinations is taken (a dynamic programme over the sets of
contexts each layer passes on), so the mask is empty exactly when no architecture fits. The per-candidate
parameter bytes are the largest over those contexts: an upper bound, so the knapsack never admits an architecture
over the parameter budget (and a budget is refused when even the least sum of these exceeds it, which may refuse
one a few architectures outside the mask would meet). :meth:`MemoryBound.fits` and :meth:`MemoryBound.params_of`
are exact (the architecture's own ops, :meth:`~hwnas.spaces.base.SearchSpace.layer_specs`). For a context-free
space all of this is the plain per-candidate mask and figures.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from hwnas.errors import HwnasError
from hwnas.spaces.base import Architecture, SearchSpace
from hwnas.spaces.footprint import (MB, Footprint, arch_footprint, fixed_param_bytes, fixed_peak_bytes,
                                    spec_deployed_params, spec_peak_activation_bytes)


@dataclass(frozen=True)
class MemoryBound:
    """A search's memory bound on one space: the per-layer mask of candidates whose own peak activation fits
    ``max_memory_mb`` (all True without it; in every context it may run in, for a non-context-free space), and
    the parameter bytes the additive budget counts (the largest over those contexts).

    Build it with :meth:`of`, which refuses a bound the space cannot meet."""

    space: SearchSpace
    max_memory_mb: float | None
    max_params_mb: float | None
    allowed: tuple[tuple[bool, ...], ...]  # per layer, per candidate (``layer.candidates`` order)
    param_bytes: tuple[tuple[int, ...], ...]  # per layer, per candidate: deployed parameter bytes (at most)
    fixed_params: int  # parameter bytes of the fixed ops (stem, head)

    @classmethod
    def of(cls, space: SearchSpace, max_memory_mb: float | None, max_params_mb: float | None = None,
           ) -> MemoryBound | None:
        """The bound of ``space`` (None when neither budget is given); one line when no architecture meets it."""
        if max_memory_mb is None and max_params_mb is None:
            return None
        tables = _layer_tables(space)
        limit = math.inf if max_memory_mb is None else max_memory_mb * MB
        widest = _widest_mask(tables, _first_context(space), limit) if fixed_peak_bytes(space) <= limit else None
        if widest is None:
            smallest = _smallest_peak(tables, _first_context(space), fixed_peak_bytes(space))
            raise HwnasError(f"no architecture of {_name(space)} fits --max-memory-mb {max_memory_mb:g}: the "
                             f"smallest needs {round_up(smallest / MB)} MB of peak activation memory")
        allowed = tuple(mask for _, mask in widest)
        params = tuple(tuple(max(t.params[c][j] for c in contexts) for j in range(len(t.gives)))
                       for t, (contexts, _) in zip(tables, widest))
        bound = cls(space, max_memory_mb, max_params_mb, allowed, params, fixed_param_bytes(space))
        if max_params_mb is not None and bound.least_params() > bound.params_budget():
            within = f" within --max-memory-mb {max_memory_mb:g}" if max_memory_mb is not None else ""
            raise HwnasError(f"no architecture of {_name(space)}{within} fits --max-params-mb {max_params_mb:g}: the "
                             f"smallest needs {round_up(bound.least_params() / MB)} MB of parameters")
        return bound

    def params_budget(self) -> int | None:
        """The parameter budget in bytes (None: unbounded)."""
        return None if self.max_params_mb is None else int(math.floor(self.max_params_mb * MB))

    def least_params(self) -> int:
        """The fewest parameter bytes an architecture within the memory mask has."""
        return self.fixed_params + sum(min(p for p, ok in zip(params, mask) if ok)
                                       for params, mask in zip(self.param_bytes, self.allowed))

    def allowed_names(self, layer: int) -> list[str]:
        """The candidates of searchable layer ``layer`` within the memory bound, in the layer's order."""
        return [name for name, ok in zip(self.space.layers[layer].names, self.allowed[layer]) if ok]

    def random_arch(self, rng: random.Random) -> Architecture:
        """A uniform draw over the candidates within the peak bound (it may still exceed the parameter budget)."""
        return self.space.arch([rng.choice(self.allowed_names(layer)) for layer in range(len(self.space.layers))])

    def params_of(self, arch: Architecture) -> int:
        """Parameter bytes of ``arch`` (the footprint's: fixed ops plus the chosen ones), exact in any space."""
        if not self.space.context_free:
            return self.footprint(arch).params_bytes
        return self.fixed_params + sum(params[layer.names.index(choice)] for params, layer, choice
                                       in zip(self.param_bytes, self.space.layers, arch.choices))

    def fits(self, arch: Architecture) -> bool:
        """Whether ``arch``'s peak activation and parameters are within the bound (exact in any space: an
        architecture of a non-context-free space may fit outside the mask)."""
        budget = self.params_budget()
        if not self.space.context_free:
            footprint = self.footprint(arch)
            return ((self.max_memory_mb is None or footprint.peak_activation_bytes <= self.max_memory_mb * MB)
                    and (budget is None or footprint.params_bytes <= budget))
        masked = all(mask[layer.names.index(choice)] for mask, layer, choice
                     in zip(self.allowed, self.space.layers, arch.choices))
        return masked and (budget is None or self.params_of(arch) <= budget)

    def footprint(self, arch: Architecture) -> Footprint:
        return arch_footprint(self.space, arch)

    def describe(self) -> str:
        """The bound in flag form, e.g. ``--max-memory-mb 0.5 --max-params-mb 2``."""
        parts = [f"--max-memory-mb {self.max_memory_mb:g}"] if self.max_memory_mb is not None else []
        if self.max_params_mb is not None:
            parts.append(f"--max-params-mb {self.max_params_mb:g}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"max_memory_mb": self.max_memory_mb, "max_params_mb": self.max_params_mb}


# -- the mask of a space whose layers' ops depend on the previous choice (module docstring) ----------------------
@dataclass(frozen=True)
class _LayerTable:
    """One searchable layer: per context (``space.layer_variants`` order), per candidate (``layer.names`` order)
    the op's peak activation and parameter bytes, and per candidate the context it gives the next layer."""

    peaks: tuple[tuple[int, ...], ...]
    params: tuple[tuple[int, ...], ...]
    gives: tuple[int, ...]


def _layer_tables(space: SearchSpace) -> list[_LayerTable]:
    variants = [space.layer_variants(i) for i in range(len(space.layers))]
    tables = []
    for i, layer in enumerate(space.layers):
        for variant in variants[i]:
            assert tuple(name for name, _ in variant) == layer.names, "a variant lists the layer's names in order"
        peaks = tuple(tuple(spec_peak_activation_bytes(spec) for _, spec in v) for v in variants[i])
        params = tuple(tuple(spec_deployed_params(spec) * 4 for _, spec in v) for v in variants[i])
        gives = tuple(variants[i + 1].index(space.candidates_after(i + 1, name)) for name in layer.names
                      ) if i + 1 < len(space.layers) else (0,) * len(layer.names)
        tables.append(_LayerTable(peaks, params, gives))
    return tables


def _first_context(space: SearchSpace) -> int:
    return space.layer_variants(0).index(space.candidates_after(0, None))


def _widest_mask(tables: list[_LayerTable], first: int, limit: float,
                 ) -> list[tuple[frozenset[int], tuple[bool, ...]]] | None:
    """Per layer, the contexts it may run in and its allowed candidates, for the sound mask with the most
    combinations (module docstring); None when every mask is empty somewhere (no architecture fits).

    State after a layer: the set of next-layer contexts its allowed candidates give. Each layer tries every
    subset of those contexts to keep (all subsets up to 6 contexts, else all of them or one), allowing a
    candidate iff it gives a kept context and fits in every context it may run in; score: sum of log counts."""
    frontier: dict[frozenset[int], tuple[float, list[tuple[frozenset[int], tuple[bool, ...]]]]] = {
        frozenset({first}): (0.0, [])}
    for table in tables:
        reached: dict[frozenset[int], tuple[float, list[tuple[frozenset[int], tuple[bool, ...]]]]] = {}
        for contexts, (score, path) in frontier.items():
            fits = [all(table.peaks[c][j] <= limit for c in contexts) for j in range(len(table.gives))]
            for kept in _subsets(sorted(set(table.gives))):
                mask = tuple(ok and given in kept for ok, given in zip(fits, table.gives))
                if not any(mask):
                    continue
                given = frozenset(g for g, ok in zip(table.gives, mask) if ok)
                value = score + math.log(sum(mask))
                if given not in reached or value > reached[given][0]:
                    reached[given] = (value, [*path, (contexts, mask)])
        if not reached:
            return None
        frontier = reached
    return max(frontier.values(), key=lambda entry: entry[0])[1]


def _subsets(groups: list[int]) -> list[frozenset[int]]:
    if len(groups) > 6:
        return [frozenset(groups), *(frozenset({g}) for g in groups)]
    return [frozenset(c) for n in range(1, len(groups) + 1) for c in itertools.combinations(groups, n)]


def _smallest_peak(tables: list[_LayerTable], first: int, fixed: int) -> int:
    """The least peak activation bytes of any architecture (exact: a min-max over the chain of contexts)."""
    best = {first: fixed}
    for table in tables:
        reached: dict[int, int] = {}
        for context, so_far in best.items():
            for j, given in enumerate(table.gives):
                peak = max(so_far, table.peaks[context][j])
                reached[given] = min(reached.get(given, peak), peak)
        best = reached
    return min(best.values())


def _name(space: SearchSpace) -> str:
    return f"{space.name}@{space.resolution}"


def round_up(mb: float, digits: int = 4) -> str:
    """``mb`` rounded up to ``digits`` significant digits: a figure the user can pass back that is not refused."""
    if mb <= 0:
        return "0"
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(mb)))
    return f"{math.ceil(mb * scale) / scale:g}"


__all__ = ["MemoryBound", "round_up"]
