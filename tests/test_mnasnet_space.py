"""The mnasnet space: its choices, absent layers, per-block widths, exact specs and the first-order cost model."""

from __future__ import annotations

import random
import zlib

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.ops import BlockSpec, MnasLayerSpec, flat_specs
from hwnas.spaces import get_space
from hwnas.spaces.mnasnet import BLOCKS, BlockChoice, block_choices, block_width


@pytest.fixture(scope="module")
def space():
    return get_space("mnasnet", 32, 10)


def _cost(spec) -> float:
    """A deterministic, non-additive-looking cost per spec (the hash of its key)."""
    return sum(1.0 + zlib.crc32(p.key().encode()) % 1000 / 100.0 for p in flat_specs(spec))


def test_the_space_is_mnasnets(space):
    assert len(space.layers) == 7 and [s.channels for s in space.stages] == [b[0] for b in BLOCKS]
    assert [len(layer.names) for layer in space.layers] == [192, 288, 288, 288, 288, 288, 192]
    assert not space.context_free and get_space("proxyless", 32).context_free
    choice = BlockChoice.parse("mb6_k5_se_skip_d3_w125")
    assert (choice.op, choice.k, choice.se, choice.skip, choice.depth, choice.width) == ("mb6", 5, True, True, 3,
                                                                                         "w125")
    assert {c.depth for c in block_choices(3)} == {3, 4, 5} and {c.depth for c in block_choices(0)} == {1, 2}
    assert [block_width(1, w) for w in ("w075", "w100", "w125")] == [20, 24, 32]
    for bad in ("mb6_k5_d3", "mb4_k3_d1_w100", "mb6_k5_d3_w150"):
        with pytest.raises(HwnasError):
            BlockChoice.parse(bad)


def test_blocks_chain_with_the_previous_blocks_width_and_absent_layers(space):
    rng = random.Random(3)
    for _ in range(30):
        arch = space.random_arch(rng)
        specs = space.arch_specs(arch)
        for before, after in zip(specs, specs[1:]):
            assert (before.cout, before.out_size) == (after.cin, after.size)
        for b, (choice, block) in enumerate(zip(arch.choices, space.layer_specs(arch))):
            parsed = BlockChoice.parse(choice)
            layers = [p for p in block.parts if isinstance(p, MnasLayerSpec)]
            assert len(layers) == parsed.depth  # the layers beyond the depth are absent
            assert layers[0].cout == block_width(b, parsed.width)
            assert all(p.res == (parsed.skip and p.residual) for p in layers)
        net = space.build(arch).eval()
        assert sum(p.numel() for p in net.parameters()) == sum(s.params() for s in specs)
    with torch.no_grad():
        assert net(torch.randn(space.input_shape)).shape == (1, 10)


def test_every_exact_op_is_a_table_entry(space):
    entries = {s.key() for s in space.all_specs()}
    assert not any(isinstance(s, BlockSpec) for s in space.all_specs())
    rng = random.Random(4)
    for _ in range(50):
        arch = space.random_arch(rng)
        assert {p.key() for s in space.arch_specs(arch) for p in flat_specs(s)} <= entries


def test_linearized_costs_are_exact_at_the_anchor_and_its_one_block_changes(space):
    rng = random.Random(5)
    anchor = space.random_arch(rng)

    def exact(arch):
        return sum(_cost(s) for s in space.layer_specs(arch))

    costs = space.linearized_costs(_cost, anchor)
    def linear(choices):
        return sum(costs[i][space.layers[i].names.index(c)] for i, c in enumerate(choices))

    assert linear(anchor.choices) == pytest.approx(exact(anchor))
    for i, layer in enumerate(space.layers):
        for name in rng.sample(layer.names, 12):
            changed = list(anchor.choices)
            changed[i] = name
            assert linear(changed) == pytest.approx(exact(space.arch(changed))), (i, name)


def test_uniform_baselines_share_every_choice_but_depth(space):
    archs = space.uniform_archs()
    assert len(archs) == 3 * 96
    for arch in archs[:20]:
        parsed = [BlockChoice.parse(c) for c in arch.choices]
        assert len({(p.op, p.k, p.se, p.skip, p.width) for p in parsed}) == 1
