"""Refuse a resolution whose activations cannot fit in this machine's memory, before anything is built."""

from __future__ import annotations

import os

from hwnas.errors import HwnasError
from hwnas.spaces.base import SearchSpace


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation (Linux ``MemAvailable``, else free physical pages); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def least_activation_bytes(space: SearchSpace) -> int:
    """A lower bound of what any use of ``space`` at batch 1 holds at once: the input plus the activations of its
    heaviest single op (every network of the space, and every op a profile measures, needs at least this)."""
    heaviest = max((spec.activation_bytes() for spec in space.all_specs()), default=0)
    return 4 * _elements(space.input_shape) + heaviest


def check_fits_memory(space: SearchSpace, available: int | None = None) -> None:
    """Raise a one-line :class:`HwnasError` when :func:`least_activation_bytes` exceeds the available memory."""
    available = available_memory_bytes() if available is None else available
    needed = least_activation_bytes(space)
    if available is not None and needed > available:
        raise HwnasError(f"space {space.name} at resolution {space.resolution}: one op alone needs "
                         f"{needed / 2**30:.3g} GiB of activations at batch 1, more than the {available / 2**30:.3g} "
                         "GiB of memory available here; use a smaller --resolution")


def _elements(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


__all__ = ["available_memory_bytes", "check_fits_memory", "least_activation_bytes"]
