"""The supernet of the ``mnasnet`` space (hwnas/search/elastic.py): one shared block of weights per block, sliced per
choice; absent layers, per-block widths and skips; against an ArchNet holding the same slices."""

from __future__ import annotations

import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.ops import MnasLayerSpec
from hwnas.search.elastic import ElasticBlock, ElasticCandidate, export_arch, is_elastic_layer
from hwnas.search.supernet import SuperNet
from hwnas.spaces import get_space, space_names
from hwnas.spaces.mnasnet import BLOCKS, BlockChoice

# Two architectures that differ in every block: widths alternate between neighbours, depth max then min, skip on then
# off, every op family and both kernels, SE on and off.
DEEP = ["mb6_k5_se_skip_d{d}_w075", "conv_k3_skip_d{d}_w125", "dwsep_k5_se_skip_d{d}_w075", "mb3_k3_skip_d{d}_w125",
        "mb6_k3_se_skip_d{d}_w075", "conv_k5_se_skip_d{d}_w125", "dwsep_k3_skip_d{d}_w075"]
SHALLOW = ["conv_k5_d{d}_w125", "mb6_k3_se_d{d}_w075", "mb3_k5_d{d}_w100", "dwsep_k3_se_d{d}_w075",
           "conv_k3_d{d}_w125", "mb6_k5_d{d}_w075", "mb3_k3_se_d{d}_w125"]


def _choices(pattern: list[str], deep: bool) -> list[str]:
    return [name.format(d=max(1, base + (1 if deep else -1))) for name, (_, base, _) in zip(pattern, BLOCKS)]


@pytest.fixture(scope="module")
def space():
    return get_space("mnasnet", 32, 10)


@pytest.fixture(scope="module")
def supernet(space) -> SuperNet:
    torch.manual_seed(0)
    return SuperNet(space, arch_grad="two", weight_sharing="nested")


def _set_path(net: SuperNet, choices: list[str], others: list[str] | None = None) -> None:
    for i, (mixed, name) in enumerate(zip(net.mixed_ops, choices)):
        active = mixed.names.index(name)
        mixed.set_path(active, None if others is None else (active, mixed.names.index(others[i])))


def _width(name: str) -> str:
    return BlockChoice.parse(name).width


def test_builds_one_shared_block_per_layer_a_small_multiple_of_the_largest_network(space, supernet) -> None:
    for mixed in supernet.mixed_ops:
        assert all(isinstance(op, ElasticCandidate) for op in mixed.ops) and len(mixed.ops) in (192, 288)
        assert [type(m) for m in mixed.shared] == [ElasticBlock]
    weights = sum(p.numel() for p in supernet.weight_parameters())
    largest = _largest_network_params(space)
    print(f"mnasnet@32/10 supernet weights {weights:,}; largest network {largest:,}; ratio {weights / largest:.2f}")
    assert largest < weights < 8 * largest
    assert len(SuperNet(space, weight_sharing="none").state_dict()) == len(supernet.state_dict())


def _largest_network_params(space) -> int:
    """Greedy over blocks: the choice with the most parameters after the previous block's choice."""
    total, previous = sum(s.params() for s in [*space.prefix, *space.suffix]), None
    for i in range(len(space.layers)):
        name, spec = max(space.candidates_after(i, previous), key=lambda c: c[1].params())
        total, previous = total + spec.params(), name
    return total


def test_every_other_space_keeps_its_candidate_modules() -> None:
    for name in space_names():
        if name != "mnasnet":
            assert not any(is_elastic_layer(layer.candidates) for layer in get_space(name).layers), name


@pytest.mark.parametrize("deep", [True, False])
def test_weight_and_fixed_modes_run_absent_layers_and_changing_widths(space, supernet, deep: bool) -> None:
    choices = _choices(DEEP if deep else SHALLOW, deep)
    assert all(_width(a) != _width(b) for a, b in zip(choices, choices[1:]))
    specs = space.layer_specs(space.arch(choices))
    assert [len([p for p in s.parts if isinstance(p, MnasLayerSpec)]) for s in specs] == [
        BlockChoice.parse(c).depth for c in choices]
    assert any(p.res for s in specs for p in s.parts if isinstance(p, MnasLayerSpec)) == deep
    supernet.train()
    supernet.set_mode("weight")
    _set_path(supernet, choices)
    supernet.zero_grad()
    supernet(torch.randn(2, 3, 32, 32)).square().mean().backward()
    block = supernet.mixed_ops[3].shared[0]
    used = {f"p{p}" for p in range(BlockChoice.parse(choices[3]).depth)}
    for key, weights in block.layers.items():
        family = {"conv": 0, "dwsep": 1, "mbconv": 2}[key.split("_")[1]]
        touched = key.split("_")[0] in used and family == specs[3].parts[0].t
        convs = [p for name, p in weights.named_parameters() if not name.startswith("se_")]
        assert all((p.grad is not None and bool(p.grad.abs().sum() > 0)) == touched for p in convs), key
    supernet.set_arch(space.arch(choices))
    assert supernet(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_fixed_path_equals_an_archnet_holding_the_sliced_weights(space, supernet) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    supernet.train()
    supernet.set_mode("weight")
    for pattern, deep in ((DEEP, True), (SHALLOW, False)):  # move the running statistics of the slices
        _set_path(supernet, _choices(pattern, deep))
        with torch.no_grad():
            supernet(torch.randn(4, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    for pattern, deep in ((DEEP, True), (SHALLOW, False), (DEEP, False), (SHALLOW, True)):
        arch = space.arch(_choices(pattern, deep))
        supernet.set_arch(arch)
        supernet.eval()
        reference = export_arch(supernet, arch).eval()
        with torch.no_grad():
            expected, got = reference(x), supernet(x)
            assert (space.build(arch).eval()(x) - expected).abs().max() > 1e-3  # the copy is what makes them equal
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()


def test_arch_gradient_two_mode_gives_alpha_gradients_and_leaves_statistics_alone(space, supernet) -> None:
    supernet.train()
    supernet.set_mode("arch")
    deep, shallow = _choices(DEEP, True), _choices(SHALLOW, False)
    _set_path(supernet, deep, others=shallow)  # the other path of each pair: another width, depth and skip
    supernet.zero_grad()
    out = supernet(torch.randn(2, 3, 32, 32))
    after_forward = [b.clone() for b in supernet.buffers()]
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    assert all(torch.equal(a, b) for a, b in zip(after_forward, supernet.buffers()))
    for mixed in supernet.mixed_ops:
        involved = list(mixed.involved)
        assert bool(mixed.alpha.grad[involved].abs().sum() > 0)
        assert torch.count_nonzero(mixed.alpha.grad) == 2


def test_a_choice_owns_the_shared_buffers_and_checks_its_input(supernet) -> None:
    candidate = supernet.mixed_ops[2].ops[0]
    assert {id(b) for b in candidate.buffers()} == {id(b) for b in supernet.mixed_ops[2].shared[0].buffers()}
    with pytest.raises(HwnasError, match="input of 7 channels"):
        candidate(torch.zeros(1, 7, 16, 16))


def test_state_dict_holds_each_block_once(space, supernet) -> None:
    state = supernet.state_dict()
    assert not [key for key in state if ".ops." in key]
    blocks = sum(t.numel() for m in supernet.mixed_ops for t in [*m.shared.parameters(), *m.shared.buffers()])
    fixed = sum(t.numel() for m in (supernet.prefix, supernet.suffix) for t in [*m.parameters(), *m.buffers()])
    alphas = sum(a.numel() for a in supernet.arch_parameters())
    assert sum(t.numel() for t in state.values()) == blocks + fixed + alphas
    one_module_per_choice = sum(spec.params() for layer in space.layers for _, spec in layer.candidates)
    print(f"state_dict {sum(t.numel() for t in state.values()):,} elements; one module per choice would hold "
          f"{one_module_per_choice:,} parameters")
    assert blocks * 20 < one_module_per_choice
