"""Every registered op of every space builds, has its spec's shape, round-trips its key, and its
MACs/params/activations from the spec match counts taken from the built module."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.ops import DWSepSpec, MBConvSpec, build_op, spec_from_key
from hwnas.ops.blocks import MnasLayer
from hwnas.ops.modules import MBConv, SqueezeExcite
from hwnas.spaces import Architecture, ArchNet, get_space, space_names
from hwnas.spaces.registry import FBNET_OPS, PROXYLESS_OPS, TINY_OPS, MBConvChoice

SMALL = {"proxyless": 64, "fbnet": 64, "fbnet-cifar100": 32, "tiny": 32, "mnasnet": 32}


def _module_counts(module: nn.Module, x: torch.Tensor) -> tuple[int, int, int]:
    """(MACs, params, activation elements) counted with forward hooks on the built module."""
    macs = activations = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs, activations
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            macs += mod.in_features * mod.out_features
        if len(list(mod.children())) == 0 and not isinstance(mod, nn.Identity):
            activations += out.numel()
        if (isinstance(mod, MBConv) and mod.residual) or (isinstance(mod, MnasLayer) and mod.res) \
                or isinstance(mod, SqueezeExcite):
            activations += out.numel()  # the residual add, the SE scaling

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return macs, sum(p.numel() for p in module.parameters()), activations


def _space_specs():
    for name in space_names():
        specs = get_space(name, SMALL[name]).all_specs()
        if len(specs) > 200:  # mnasnet's 1590: every 20th, which still covers each op, kernel, SE and skip
            specs = specs[::20]
        for spec in specs:
            yield pytest.param(spec, id=f"{name}:{spec.key()}")


@pytest.mark.parametrize("spec", list(_space_specs()))
def test_every_space_op_builds_with_its_shape_and_counts(spec):
    module = build_op(spec).eval()
    x = torch.randn(spec.input_shape)
    with torch.no_grad():
        y = module(x)
    assert tuple(y.shape) == spec.output_shape
    assert spec_from_key(spec.key()) == spec
    macs, params, activations = _module_counts(module, x)
    assert spec.macs() == macs
    assert spec.params() == params
    if not spec.is_free:
        assert spec.activation_elements() == activations


def test_se_and_grouped_mbconv_counts():
    for spec in (MBConvSpec(16, 16, 8, e=4, k=5, se=1, act="hswish"), MBConvSpec(16, 24, 8, e=3, k=3, s=2, g=2)):
        module = build_op(spec).eval()
        macs, params, activations = _module_counts(module, torch.randn(spec.input_shape))
        assert (spec.macs(), spec.params(), spec.activation_elements()) == (macs, params, activations)


@pytest.mark.parametrize("spec", [DWSepSpec(16, 24, 8), DWSepSpec(16, 32, 9, k=5, s=2, act="relu"),
                                  DWSepSpec(8, 8, 6, k=3, act="none")], ids=str)
def test_dwsep_builds_with_its_shape_and_counts(spec):
    """DWSepSpec is in no space yet (the MnasNet space will use it): the same checks as every space op."""
    module = build_op(spec).eval()
    x = torch.randn(spec.input_shape)
    with torch.no_grad():
        assert tuple(module(x).shape) == spec.output_shape
    assert spec_from_key(spec.key()) == spec
    assert (spec.macs(), spec.params(), spec.activation_elements()) == _module_counts(module, x)


def test_candidate_names_parse_to_their_mbconv():
    names = [name for name in (*PROXYLESS_OPS, *FBNET_OPS, *TINY_OPS) if name != "skip"]
    assert all(MBConvChoice.parse(name).name == name for name in names)
    assert MBConvChoice.parse("k5_e6") == MBConvChoice(k=5, e=6, g=1)
    assert MBConvChoice.parse("k3_e1_g2") == MBConvChoice(k=3, e=1, g=2)
    with pytest.raises(HwnasError, match="candidate 'k5e6'"):
        MBConvChoice.parse("k5e6")


def test_key_format_is_canonical():
    spec = MBConvSpec(24, 40, 56, e=3, k=5, s=2)
    assert spec.key() == "mbconv-in:56x56x24-out:28x28x40-e:3-k:5-s:2-se:0-act:relu6-g:1-pw:1"


@pytest.mark.parametrize("bad", ["", "mbconv", "foo-in:1x1x1-out:1x1x1", "mbconv-in:8x8x8-out:8x8x8-k:x",
                                 "mbconv-in:8x8x8-out:4x4x8-e:3-k:3-s:1-se:0-act:relu6-g:1-pw:1",
                                 "conv-in:8x8x8-out:8x8x8-k:3-s:1-g:1-act:gelu", "pool-in:4x4x8-out:1x1x8-cin:8"])
def test_bad_keys_give_one_line_errors(bad):
    with pytest.raises(HwnasError) as err:
        spec_from_key(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", space_names())
def test_architecture_round_trips(name):
    space = get_space(name, SMALL[name])
    arch = space.random_arch(random.Random(1))
    assert Architecture.from_dict(arch.to_dict()) == arch
    assert space.from_human(space.human(arch)) == arch
    net = space.build(arch).eval()
    rebuilt = ArchNet.from_config(net.config).eval()
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(space.input_shape)
    with torch.no_grad():
        assert torch.equal(net(x), rebuilt(x))


def test_space_shapes_follow_the_papers():
    proxyless = get_space("proxyless")
    assert len(proxyless.layers) == 21
    assert [s.channels for s in proxyless.stages] == [24, 40, 80, 96, 192, 320]
    assert sum("zero" in layer.names for layer in proxyless.layers) == 15
    fbnet = get_space("fbnet-cifar100")
    assert len(fbnet.layers) == 22 and fbnet.layers[0].names == (
        "k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
    assert fbnet.suffix[0].cout == 1504 and fbnet.num_classes == 100 and fbnet.prefix[0].s == 1
    assert get_space("fbnet").suffix[0].cout == 1984


@pytest.mark.parametrize("call, message", [
    (lambda: get_space("nope"), "unknown search space"),
    (lambda: get_space("proxyless", 100), "multiple of 32"),
    (lambda: get_space("tiny").arch(["k3_e3"]), "4 searchable layers"),
    (lambda: get_space("tiny").arch(["zero", "k3_e3", "k3_e3", "k3_e3"]), "layer 0 has no op 'zero'"),
    (lambda: Architecture.from_dict({"space": "tiny", "resolution": "32", "choices": []}), "field 'resolution'"),
])
def test_bad_input_gives_one_line_errors(call, message):
    with pytest.raises(HwnasError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)
