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
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from hwnas.errors import HwnasError
from hwnas.spaces.base import Architecture, SearchSpace
from hwnas.spaces.footprint import (MB, Footprint, arch_footprint, fixed_param_bytes, fixed_peak_bytes,
                                    layer_param_bytes, layer_peak_bytes)


@dataclass(frozen=True)
class MemoryBound:
    """A search's memory bound on one space: the per-layer mask of candidates whose own peak activation fits
    ``max_memory_mb`` (all True without it), and the parameter bytes the additive budget counts.

    Build it with :meth:`of`, which refuses a bound the space cannot meet."""

    space: SearchSpace
    max_memory_mb: float | None
    max_params_mb: float | None
    allowed: tuple[tuple[bool, ...], ...]  # per layer, per candidate (``layer.candidates`` order)
    param_bytes: tuple[tuple[int, ...], ...]  # per layer, per candidate: deployed parameter bytes
    fixed_params: int  # parameter bytes of the fixed ops (stem, head)

    @classmethod
    def of(cls, space: SearchSpace, max_memory_mb: float | None, max_params_mb: float | None = None,
           ) -> MemoryBound | None:
        """The bound of ``space`` (None when neither budget is given); one line when no architecture meets it."""
        if max_memory_mb is None and max_params_mb is None:
            return None
        peaks = layer_peak_bytes(space)
        allowed = tuple(tuple(max_memory_mb is None or peak <= max_memory_mb * MB for peak in layer) for layer in peaks)
        if max_memory_mb is not None:
            smallest = max([fixed_peak_bytes(space), *(min(layer) for layer in peaks)])
            if smallest > max_memory_mb * MB:
                raise HwnasError(f"no architecture of {_name(space)} fits --max-memory-mb {max_memory_mb:g}: the "
                                 f"smallest needs {round_up(smallest / MB)} MB of peak activation memory")
        bound = cls(space, max_memory_mb, max_params_mb, allowed,
                    tuple(tuple(layer) for layer in layer_param_bytes(space)), fixed_param_bytes(space))
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
        """Parameter bytes of ``arch`` (the footprint's: fixed ops plus the chosen ones)."""
        return self.fixed_params + sum(params[layer.names.index(choice)] for params, layer, choice
                                       in zip(self.param_bytes, self.space.layers, arch.choices))

    def fits(self, arch: Architecture) -> bool:
        """Whether ``arch``'s peak activation and parameters are within the bound."""
        masked = all(mask[layer.names.index(choice)] for mask, layer, choice
                     in zip(self.allowed, self.space.layers, arch.choices))
        budget = self.params_budget()
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


def _name(space: SearchSpace) -> str:
    return f"{space.name}@{space.resolution}"


def round_up(mb: float, digits: int = 4) -> str:
    """``mb`` rounded up to ``digits`` significant digits: a figure the user can pass back that is not refused."""
    if mb <= 0:
        return "0"
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(mb)))
    return f"{math.ceil(mb * scale) / scale:g}"


__all__ = ["MemoryBound", "round_up"]
