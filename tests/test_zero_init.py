"""Zero-initialized residual branches: a network trained from scratch starts with every residual block the
identity (:func:`hwnas.ops.modules.zero_init_residuals`), in every space; networks built to be timed do not."""

from __future__ import annotations

import random

import pytest
import torch

from hwnas.ops.blocks import MnasLayer
from hwnas.ops.modules import MBConv, zero_init_residuals
from hwnas.spaces import get_space


def _residual_blocks(net: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in net.modules() if (isinstance(m, MBConv) and m.residual) or (isinstance(m, MnasLayer) and m.res)]


@pytest.mark.parametrize("name, resolution", [("proxyless", 32), ("mnasnet", 32), ("fbnet-cifar100", 32)])
def test_every_residual_block_starts_as_the_identity(name: str, resolution: int) -> None:
    space = get_space(name, resolution)
    torch.manual_seed(0)
    net = space.build(space.sample_archs(1, random.Random(3))[0]).train()  # batch statistics: activations O(1)
    blocks = _residual_blocks(net)
    assert blocks, "the sampled architecture has residual blocks"
    inputs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda m, i, o: inputs.__setitem__(id(m), (i[0], o))) for b in blocks]
    x = torch.randn(2, *space.input_shape[1:])
    with torch.no_grad():
        net(x)
        # built for timing: random scales
        assert all((o - i).abs().max() > 1e-2 * i.abs().max() for i, o in inputs.values())
        assert zero_init_residuals(net) == len(blocks)
        inputs.clear()
        net(x)
    for hook in hooks:
        hook.remove()
    for i, o in inputs.values():
        torch.testing.assert_close(o, i)  # the branch adds exactly zero


def test_non_residual_blocks_keep_their_scales() -> None:
    space = get_space("proxyless", 32)
    net = space.build(space.sample_archs(1, random.Random(1))[0])
    plain = [m for m in net.modules() if isinstance(m, MBConv) and not m.residual]
    before = [m.body[-1][1].weight.clone() for m in plain]
    zero_init_residuals(net)
    for m, w in zip(plain, before):
        assert torch.equal(m.body[-1][1].weight, w) and w.abs().sum() > 0
