"""The reference network that measurements are paired with (see :mod:`hwnas.runtimes.paired`).

For a search space it is the architecture that takes every layer's first candidate (``k3_e3`` throughout
ProxylessNAS, ``k3_e1`` throughout FBNet): a mid-to-low-latency member of the space, measured at the same
resolution as the networks it is paired with. Its weights are seeded, so every process builds the same model.
Kernel measurements and arbitrary models use :data:`GENERIC_REFERENCE` (ProxylessNAS at 128x128).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.spaces import Architecture, SearchSpace, get_space

GENERIC_REFERENCE = ("proxyless", 128, 1000)


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
