"""The reference network that measurements are paired with (see :mod:`hwnas.runtimes.paired`).

For a search space it is the architecture that takes every layer's first candidate (``k3_e3`` throughout
ProxylessNAS, ``k3_e1`` throughout FBNet): a mid-to-low-latency member of the space, measured at the same
resolution as the networks it is paired with. Its weights are seeded, so every process builds the same model.
Kernel measurements and arbitrary models use :data:`GENERIC_REFERENCE` (ProxylessNAS at 128x128).

The reference can be measured as a pool of separately loaded copies that take turns (:class:`ReferencePool`,
``instances`` of :func:`prepare_reference`). One loaded copy has a speed of its own that lasts as long as it
lives: on LiteRT at 224x224, four interpreters of the same file kept their ratios against one network 3.0% apart
over four rounds whose round-to-round deviation was 0.4% (``benchmarks/bench_reference_instances.py``), so a set
measured against one copy carries that copy's offset in every row. But switching copies costs cache: at 32x32
(runs of 0.1-0.4 ms) a pool of five slowed the reference's turns by up to 40% in a search's closed loop (each
copy's buffers fall out of the cache between its turns), and with two untimed runs after each switch its ratios
still sat 12% above single copies', with twice their round-to-round noise. So the default is one copy
(:data:`REFERENCE_INSTANCES`), which every shipped measurement set and the search's meter use, except the LiteRT
and PyTorch 224 sets and the tables re-profiled on 2026-12-05, which were measured with a pool of five
(docs/predictors.md).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.runtimes.base import PreparedModel
from hwnas.spaces import Architecture, SearchSpace, get_space

GENERIC_REFERENCE = ("proxyless", 128, 1000)
REFERENCE_INSTANCES = 1


class ReferencePool(PreparedModel):
    """Several loaded copies of one model taking turns: each :meth:`time_runs` call (a turn of the paired and the
    rounds protocols) runs the next copy, so the medians over turns average the copies' own speeds."""

    def __init__(self, instances: Sequence[PreparedModel]) -> None:
        if not instances:
            raise ValueError("ReferencePool needs at least one instance")
        self.instances = list(instances)
        self._next = 0

    def run(self) -> None:
        self.instances[self._next].run()

    def time_runs(self, n: int) -> list[float]:
        times = self.instances[self._next].time_runs(n)
        self._next = (self._next + 1) % len(self.instances)
        return times

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        return self.instances[0].infer(inputs)

    def close(self) -> None:
        for instance in self.instances:
            instance.close()


def prepare_reference(runtime: Any, module: nn.Module, input_shape: Sequence[int],
                      instances: int = REFERENCE_INSTANCES) -> PreparedModel:
    """The reference loaded once (the default), or a :class:`ReferencePool` of ``instances`` separately loaded
    copies (a deep copy each, so no two share memory; the runtime's conversion cache makes the later ones cheap)."""
    if instances <= 1:
        return runtime.prepare(module, input_shape, "reference")
    return ReferencePool([runtime.prepare(copy.deepcopy(module), input_shape, "reference")
                          for _ in range(instances)])


def reference_arch(space: SearchSpace) -> Architecture:
    """Every searchable layer's first candidate."""
    return space.arch([layer.names[0] for layer in space.layers])


def reference_module(space: SearchSpace) -> tuple[nn.Module, tuple[int, int, int, int], Architecture]:
    """The reference network of ``space`` (eval mode, seeded weights), its input shape and its architecture."""
    arch = reference_arch(space)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = space.build(arch).eval()
    return module, space.input_shape, arch


def generic_reference() -> tuple[nn.Module, tuple[int, int, int, int], Architecture]:
    """The reference for measurements that belong to no space (kernels, ONNX files)."""
    return reference_module(get_space(*GENERIC_REFERENCE))
