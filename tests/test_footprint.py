"""Memory of an architecture (issue 20 item 2): peak activations against hand-counted networks, deployed parameters
against the torch module's, the spec rules against the ONNX liveness walk, and ``hwnas estimate``'s memory figures.

Hand counts are in elements (fp32: 4 bytes each) at batch 1; each op holds its input and output, and a residual
block holds its input to the add (rules in hwnas/spaces/footprint.py)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.ops import build_op
from hwnas.ops.specs import ConvSpec, DWSepSpec, LinearSpec, MBConvSpec, PoolSpec, SkipSpec, ZeroSpec
from hwnas.runtimes.converters import to_onnx
from hwnas.spaces import get_space
from hwnas.spaces.footprint import (MB, Footprint, arch_footprint, fixed_param_bytes, fixed_peak_bytes,
                                    layer_param_bytes, layer_peak_bytes, onnx_footprint, spec_deployed_params,
                                    spec_peak_activation_bytes, specs_footprint)
from tests.test_latency import synthetic_table

CHAIN = [ConvSpec(3, 8, 16, k=3, s=2), ConvSpec(8, 16, 8, k=3, s=1), ConvSpec(16, 4, 8, k=1, s=1)]
RESIDUAL = MBConvSpec(8, 8, 8, e=3, k=3, s=1)
SE_BLOCK = MBConvSpec(8, 8, 4, e=4, k=3, s=1, se=1)
EDGE_SPECS = [  # every branch of the rules: shuffle, no expansion, strided SE, dwsep, skip, zero, head
    MBConvSpec(16, 16, 8, e=4, k=3, s=1, se=1, act="hswish", g=2, pw=1),
    MBConvSpec(16, 24, 8, e=1, k=3, s=2, se=1, act="relu", pw=0),
    MBConvSpec(16, 16, 8, e=1, k=5, s=1, act="relu", pw=0),
    DWSepSpec(8, 16, 8, k=3, s=1), DWSepSpec(8, 16, 8, k=5, s=2, act="none"),
    SkipSpec(8, 16, 8, s=2), SkipSpec(8, 8, 8, s=1), ZeroSpec(8, 8, 8),
    PoolSpec(32, 32, 4), LinearSpec(32, 10, 1), RESIDUAL, SE_BLOCK, *CHAIN,
]


def _randomised_bn(module: nn.Module) -> nn.Module:
    """BatchNorm with non-trivial statistics, so folded biases differ and the exporter keeps each one."""
    for sub in module.modules():
        if isinstance(sub, nn.BatchNorm2d):
            nn.init.uniform_(sub.weight, 0.5, 1.5)
            nn.init.normal_(sub.bias)
            sub.running_mean.normal_()
    return module.eval()


def _onnx(module: nn.Module, input_shape, path) -> Footprint:
    to_onnx(_randomised_bn(module), input_shape, path)
    return onnx_footprint(path)


def test_chain_of_convs_hand_counted(tmp_path):
    # conv1 3x16x16 -> 8x8x8: 768 + 512 = 1280; conv2 8x8x8 -> 16x8x8: 512 + 1024 = 1536;
    # conv3 16x8x8 -> 4x8x8: 1024 + 256 = 1280. Between ops only one tensor is alive: the peak is conv2's.
    assert [spec_peak_activation_bytes(s, 1) for s in CHAIN] == [1280, 1536, 1280]
    # folded parameters: weights + one bias per output channel: 8*3*9 + 8, 16*8*9 + 16, 4*16 + 4
    expected = Footprint(4 * (224 + 1168 + 68), 4 * 1536)
    assert specs_footprint(CHAIN) == expected
    assert _onnx(nn.Sequential(*(build_op(s) for s in CHAIN)), CHAIN[0].input_shape, tmp_path / "c.onnx") == expected


def test_residual_block_keeps_its_input_alive(tmp_path):
    # x = 8*8*8 = 512; expansion E = 24*64 = 1536; depthwise D = 1536; projection P = 512.
    # expand x + E = 2048; depthwise E + D + x = 3584 (x waits for the add); project D + P + x = 2560;
    # add x + P = 1024 (its output overwrites P)  -> 3584
    assert spec_peak_activation_bytes(RESIDUAL, 1) == 3584
    # the same block without the residual (cout 16 != cin): depthwise E + D = 3072, project 1536 + 1024 -> 3072
    assert spec_peak_activation_bytes(MBConvSpec(8, 16, 8, e=3, k=3, s=1), 1) == 3072
    assert _onnx(build_op(RESIDUAL), RESIDUAL.input_shape, tmp_path / "r.onnx").peak_activation_bytes == 4 * 3584


def test_block_with_squeeze_excite_hand_counted(tmp_path):
    # x = 8*4*4 = 128; mid 32: E = D = 32*16 = 512; SE squeeze 8 channels; P = 128.
    # expand 128 + 512 = 640; depthwise 512 + 512 + 128 = 1152;
    # SE: D + pooled (32) + squeezed (8) + x = 680 (the gate multiply overwrites D: 512 + 32 + 128 = 672);
    # project 512 + 128 + 128 = 768; add 128 + 128 = 256  -> 1152
    assert spec_peak_activation_bytes(SE_BLOCK, 1) == 1152
    onnx = _onnx(build_op(SE_BLOCK), SE_BLOCK.input_shape, tmp_path / "se.onnx")
    assert onnx.peak_activation_bytes == 4 * 1152
    # without expansion and with 4x4 maps: x = D = P = 16*16 = 256; depthwise x + D = 512; SE D + 16 + 8 + x = 536;
    # project D + P + x = 768; add x + P = 512  -> 768
    no_expansion = MBConvSpec(16, 16, 4, e=1, k=3, s=1, se=1, pw=0)
    assert spec_peak_activation_bytes(no_expansion, 1) == 768
    # params: expand 32*8 + 32, depthwise 32*9 + 32, SE 8*32 + 8 + 32*8 + 32, project 8*32 + 8
    assert onnx.params_bytes == 4 * spec_deployed_params(SE_BLOCK) == 4 * (288 + 320 + 552 + 264)


@pytest.mark.parametrize("spec", EDGE_SPECS, ids=lambda s: s.key())
def test_spec_rule_equals_onnx_liveness_walk(spec, tmp_path):
    assert _onnx(build_op(spec), spec.input_shape, tmp_path / "op.onnx") == specs_footprint([spec])


@pytest.mark.parametrize("space_name", ["tiny", "fbnet-cifar100"])
def test_deployed_params_are_torch_params_less_one_per_folded_batchnorm(space_name):
    """Folding turns a BatchNorm's scale and shift (2 per channel) into the conv's bias (1 per channel)."""
    for spec in get_space(space_name, 32).all_specs():
        module = build_op(spec)
        folded = sum(m.num_features for m in module.modules() if isinstance(m, nn.BatchNorm2d))
        assert spec_deployed_params(spec) == sum(p.numel() for p in module.parameters()) - folded, spec.key()


def test_arch_footprint_equals_onnx_of_the_exported_network(tmp_path):
    space = get_space("tiny", 32)
    for index, arch in enumerate(space.sample_archs(3, random.Random(0))):
        with torch.random.fork_rng():
            torch.manual_seed(index)
            net = space.build(arch)
        assert _onnx(net, space.input_shape, tmp_path / f"{index}.onnx") == arch_footprint(space, arch)


def test_layer_tables_compose_to_the_network_figures():
    """What a two-budget decoder uses: peak = max(fixed, chosen peaks), params = fixed + chosen sum."""
    space = get_space("proxyless", 64)
    peaks, params = layer_peak_bytes(space), layer_param_bytes(space)
    assert [len(row) for row in peaks] == [len(layer.candidates) for layer in space.layers] == [len(r) for r in params]
    for arch in space.sample_archs(5, random.Random(1)):
        picks = [layer.names.index(choice) for layer, choice in zip(space.layers, arch.choices)]
        footprint = arch_footprint(space, arch)
        assert footprint.peak_activation_bytes == max(fixed_peak_bytes(space),
                                                      *(row[i] for row, i in zip(peaks, picks)))
        assert footprint.params_bytes == fixed_param_bytes(space) + sum(row[i] for row, i in zip(params, picks))


def test_footprint_units_and_dict():
    footprint = Footprint(3 * MB, MB // 2)
    assert MB == 2**20
    assert footprint.to_dict() == {"params_mb": 3.0, "peak_activation_mb": 0.5, "memory_mb": 3.5}


def test_onnx_footprint_refuses_a_missing_file(tmp_path):
    with pytest.raises(HwnasError, match="no such ONNX file"):
        onnx_footprint(tmp_path / "absent.onnx")


def test_estimate_prints_memory(tmp_path, capsys):
    space = get_space("tiny", 32)
    arch = space.random_arch(random.Random(2))
    arch_path = arch.save(tmp_path / "arch.json")
    table = synthetic_table(space).save(tmp_path / "t.json")
    assert main(["estimate", "--table", str(table), str(arch_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = arch_footprint(space, arch).to_dict()
    memory = result["memory_mb"]  # nested, as in `hwnas search --json`
    assert memory == pytest.approx(expected)
    assert memory["peak_activation_mb"] > 0
    assert memory["memory_mb"] == pytest.approx(memory["params_mb"] + memory["peak_activation_mb"])
    assert main(["estimate", "--table", str(table), str(arch_path)]) == 0
    assert "peak activations" in capsys.readouterr().out
