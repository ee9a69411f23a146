"""The ``mnasnet`` space's memory, export and profiling (issue 20): the footprint rules of the ``mnas`` layer and of a
block against the ONNX liveness walk, the memory bound of a space whose ops depend on the previous block's width,
every choice value through ONNX and TFLite with numerics checked, ``hwnas estimate``, and the isolated-op profile of
``mnas`` ops on ONNX Runtime and LiteRT."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwnas.cli import main
from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.export import ExportConfig, export_model
from hwnas.latency.profile import ProfileConfig, artifacts_dir, build_measured_op, profile_device
from hwnas.latency.table import LatencyTable
from hwnas.ops import BlockSpec, ConvSpec, MnasLayerSpec, build_op
from hwnas.runtimes import get_runtime
from hwnas.search import memory_bound as mb
from hwnas.search.memory_bound import MemoryBound
from hwnas.spaces import get_space
from hwnas.spaces.base import SearchableLayer, SearchSpace, Stage
from hwnas.spaces.footprint import (MB, arch_footprint, fixed_peak_bytes, onnx_footprint,
                                    spec_deployed_params, spec_peak_activation_bytes, specs_footprint)
from hwnas.spaces.mnasnet import BLOCKS, OPS, WIDTHS, BlockChoice, block_choices
from tests.test_export import HAS_LITERT, NO_LITERT
from tests.test_footprint import _onnx
from tests.test_latency import FAST, synthetic_table

FAMILIES = [(0, 1), (1, 1), (2, 3), (2, 6)]  # (t, e): conv, dwsep, mbconv e3, mbconv e6
LAYERS = [  # every family x SE x skip keeping the shape, strided ones, and small maps where the SE step is the peak
    *(MnasLayerSpec(8, 8, 8, t=t, e=e, k=3, s=1, se=se, res=res) for (t, e), se, res
      in itertools.product(FAMILIES, (0, 1), (0, 1))),
    *(MnasLayerSpec(8, 12, 8, t=t, e=e, k=5, s=2, se=se) for (t, e), se in itertools.product(FAMILIES, (0, 1))),
    *(MnasLayerSpec(16, 16, size, t=t, e=e, k=3, s=1, se=1, res=1) for (t, e), size
      in itertools.product(FAMILIES, (1, 2))),
]


def _space() -> SearchSpace:
    return get_space("mnasnet", 32, 10)


# -- footprint rules ---------------------------------------------------------------------------------------------
def test_mnas_conv_with_se_and_skip_hand_counted():
    # 1x1 maps, 16 channels: x = y = mid = 16, squeeze 8. conv x + y = 32; SE y + pooled 16 + squeezed 8, with x
    # alive for the skip: 56; add x + y = 32  -> 56. Folded params: conv 16*16*9 + 16, SE 8*16 + 8 + 16*8 + 16.
    spec = MnasLayerSpec(16, 16, 1, t=0, e=1, k=3, s=1, se=1, res=1)
    assert spec_peak_activation_bytes(spec, 1) == 56
    assert spec_deployed_params(spec) == 2320 + 280


@pytest.mark.parametrize("spec", LAYERS, ids=lambda s: s.key())
def test_mnas_rule_equals_onnx_liveness_walk(spec, tmp_path):
    assert _onnx(build_op(spec), spec.input_shape, tmp_path / "op.onnx") == specs_footprint([spec])


def test_block_is_the_max_of_its_layers_peaks_and_the_sum_of_their_params(tmp_path):
    """The last mnasnet block at 32: three SE MBConv layers with skips after the first, then the head conv."""
    block = dict(_space().layers[-1].candidates)["mb6_k5_se_skip_d2_w100"]
    assert isinstance(block, BlockSpec) and isinstance(block.parts[-1], ConvSpec) and len(block.parts) == 3
    expected = specs_footprint(list(block.parts))
    assert specs_footprint([block]) == expected
    assert _onnx(build_op(block), block.input_shape, tmp_path / "block.onnx") == expected


def test_deployed_params_are_torch_params_less_one_per_folded_batchnorm():
    space, rng = _space(), random.Random(0)
    specs = [s for s in space.all_specs() if isinstance(s, MnasLayerSpec)]
    for spec in rng.sample(specs, 40):
        module = build_op(spec)
        folded = sum(m.num_features for m in module.modules() if isinstance(m, nn.BatchNorm2d))
        assert spec_deployed_params(spec) == sum(p.numel() for p in module.parameters()) - folded, spec.key()


def test_arch_footprint_equals_onnx_of_the_exported_network(tmp_path):
    space = _space()
    for index, arch in enumerate(space.sample_archs(5, random.Random(1))):
        with torch.random.fork_rng():
            torch.manual_seed(index)
            net = space.build(arch)
        assert _onnx(net, space.input_shape, tmp_path / f"{index}.onnx") == arch_footprint(space, arch), arch.choices


# -- the memory bound in a space that is not context free --------------------------------------------------------
CONTEXT_BOUND_MB = 0.0625  # at mnasnet@32, some block-1 candidates fit after a narrow block 0 and not after a wide one


def _picks(space: SearchSpace, arch) -> list[int]:
    return [layer.names.index(choice) for layer, choice in zip(space.layers, arch.choices)]


def test_the_bound_depends_on_the_context_here():
    """The premise of the next tests: a candidate's peak straddles the bound across its contexts."""
    space, limit = _space(), CONTEXT_BOUND_MB * MB
    straddles = [name for i in range(len(space.layers)) for j, name in enumerate(space.layers[i].names)
                 if len({spec_peak_activation_bytes(v[j][1]) <= limit for v in space.layer_variants(i)}) == 2]
    assert straddles


def test_every_architecture_within_the_mask_fits_and_params_are_upper_bounds():
    space = _space()
    bound = MemoryBound.of(space, CONTEXT_BOUND_MB, 4.0)
    assert bound is not None
    rng = random.Random(2)
    for _ in range(300):
        arch = bound.random_arch(rng)
        footprint = arch_footprint(space, arch)
        assert footprint.peak_activation_bytes <= CONTEXT_BOUND_MB * MB, arch.choices
        masked_params = bound.fixed_params + sum(row[i] for row, i in zip(bound.param_bytes, _picks(space, arch)))
        assert masked_params >= footprint.params_bytes == bound.params_of(arch)
        assert bound.fits(arch) == (footprint.params_bytes <= bound.params_budget())


def test_fits_is_exact_outside_the_mask_too():
    space = _space()
    bound = MemoryBound.of(space, CONTEXT_BOUND_MB)
    assert bound is not None
    rng, outside_but_fitting = random.Random(3), 0
    for arch in space.sample_archs(300, rng):
        exact = arch_footprint(space, arch).peak_activation_bytes <= CONTEXT_BOUND_MB * MB
        assert bound.fits(arch) == exact
        masked = all(mask[i] for mask, i in zip(bound.allowed, _picks(space, arch)))
        assert exact or not masked
        outside_but_fitting += exact and not masked
    assert outside_but_fitting  # the mask is sound, not exact; fits is exact


def test_the_smallest_peak_is_accepted_and_just_under_it_refused():
    space = _space()
    widths = [[BlockChoice.parse(n).width for n in layer.names] for layer in space.layers]
    # reference: every path of widths, each block its least peak with that width after the previous block's
    least: dict[tuple[int, str | None, str], int] = {}
    for b in range(len(space.layers)):
        for previous in ([None] if b == 0 else list(WIDTHS)):
            name = None if previous is None else next(n for n, w in zip(space.layers[b - 1].names, widths[b - 1])
                                                      if w == previous)
            for (_, spec), width in zip(space.candidates_after(b, name), widths[b]):
                key = (b, previous, width)
                least[key] = min(least.get(key, math.inf), spec_peak_activation_bytes(spec))
    smallest = min(max(fixed_peak_bytes(space), *(least[(b, path[b - 1] if b else None, path[b])]
                                                   for b in range(len(space.layers))))
                   for path in itertools.product(WIDTHS, repeat=len(space.layers)))
    assert MemoryBound.of(space, smallest / MB) is not None
    with pytest.raises(HwnasError, match=r"mnasnet@32 fits --max-memory-mb .*smallest needs 0\.04297 MB"):
        MemoryBound.of(space, smallest / MB * 0.999)


def _brute_force_widest(tables, limit: float) -> int:
    """The most combinations of any sound product mask (every pair of allowed neighbours fits), by enumeration."""
    def subsets(n):
        return [s for r in range(1, n + 1) for s in itertools.combinations(range(n), r)]

    best = 0
    for masks in itertools.product(*(subsets(len(t.gives)) for t in tables)):
        contexts = [{0}] + [{tables[i].gives[j] for j in masks[i]} for i in range(len(tables) - 1)]
        if all(tables[i].peaks[c][j] <= limit for i in range(len(tables)) for c in contexts[i] for j in masks[i]):
            best = max(best, math.prod(len(m) for m in masks))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_widest_mask_against_brute_force(seed):
    """Small random chains of layers with 2 contexts: the programme's mask is sound, has the most combinations of
    any sound mask, and exists exactly when the min-max reference says an architecture fits."""
    rng = random.Random(seed)
    shapes = [(1, 3), (2, 3), (2, 3)]  # (contexts, candidates) per layer
    tables = []
    for i, (contexts, candidates) in enumerate(shapes):
        peaks = tuple(tuple(rng.randint(1, 9) for _ in range(candidates)) for _ in range(contexts))
        gives = tuple(rng.randint(0, 1) for _ in range(candidates)) if i + 1 < len(shapes) else (0,) * candidates
        tables.append(mb._LayerTable(peaks, peaks, gives))
    for limit in range(1, 10):
        widest = mb._widest_mask(tables, 0, limit)
        brute = _brute_force_widest(tables, limit)
        fits = mb._smallest_peak(tables, 0, 0) <= limit
        assert (widest is not None) == fits == (brute > 0)
        if widest is not None:
            assert math.prod(sum(mask) for _, mask in widest) == brute
            for (contexts, mask), table in zip(widest, tables):
                assert all(table.peaks[c][j] <= limit for c in contexts for j, ok in enumerate(mask) if ok)


# -- export: every choice value through ONNX and TFLite ----------------------------------------------------------
FIELDS = ("op", "k", "se", "skip", "depth", "width")


def covering_archs(space: SearchSpace, count: int = 4) -> list:
    """``count`` architectures in which every block takes every op, kernel, SE, skip, depth and width; within each
    one the choices rotate over the blocks, so each architecture alone has every value somewhere."""
    archs = []
    for i in range(count):
        choices = []
        for b in range(len(BLOCKS)):
            depths, r = sorted({c.depth for c in block_choices(b)}), i + b
            choice = BlockChoice(list(OPS)[r % len(OPS)], (3, 5)[r % 2], r // 2 % 2 == 1, r % 4 in (1, 2),
                                 depths[r % len(depths)], list(WIDTHS)[r % len(WIDTHS)])
            choices.append(choice.name)
        archs.append(space.arch(choices))
    return archs


def _depth_offset(block: int, choice: BlockChoice) -> int:
    return choice.depth - BLOCKS[block][1]


def test_covering_archs_cover_every_value():
    space = _space()
    archs = covering_archs(space)
    for b in range(len(BLOCKS)):  # every block, over the four architectures
        picked = [BlockChoice.parse(arch.choices[b]) for arch in archs]
        for field in FIELDS:
            assert {getattr(c, field) for c in picked} == {getattr(c, field) for c in block_choices(b)}, (b, field)
    first = [BlockChoice.parse(name) for name in archs[0].choices]  # the one converted to TFLite: every value
    every = [c for b in range(len(BLOCKS)) for c in block_choices(b)]
    for field in FIELDS[:-2] + ("width",):
        assert {getattr(c, field) for c in first} == {getattr(c, field) for c in every}, field
    offsets = {_depth_offset(b, c) for b, c in enumerate(first)}
    assert offsets == {-1, 0, 1}  # a layer absent (base - 1), as in the base, one more


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[object, dict]]:
    """The four covering architectures exported to ONNX, the first also to TFLite (a conversion takes 5-60 s
    on a busy 2-core machine), verified against PyTorch; not timed."""
    if not HAS_LITERT:
        pytest.skip(NO_LITERT)
    space, folder = _space(), tmp_path_factory.mktemp("mnas-export")
    results = []
    for index, arch in enumerate(covering_archs(space)):
        formats = ("onnx", "tflite") if index == 0 else ("onnx",)
        config = ExportConfig(formats=formats, verify_samples=20, calibration_batches=1, measure=False)
        results.append((arch, export_model(arch.save(folder / f"arch{index}.json"), folder / f"out{index}", config)))
    return results


def test_every_choice_exports_to_onnx_and_tflite_with_numerics_checked(exported):
    assert "tflite" in exported[0][1]["files"]
    for arch, result in exported:
        for fmt in result["verification"]:
            if result["verification"][fmt] is None:
                continue
            assert Path(result["files"][fmt]).is_file()
            assert result["within_bounds"][fmt] is True, (arch.choices, fmt, result["verification"][fmt])
            assert result["max_abs_diff"][fmt] <= 1e-4 * max(1.0, result["verification"][fmt]["output_scale"])
    assert sum(1 for _, result in exported for fmt in ("onnx", "tflite")
               if result["within_bounds"].get(fmt) is True) == len(exported) + 1


def test_exported_onnx_has_exactly_the_chosen_layers(exported):
    """Absent layers are absent: the exported graph has one depthwise conv per dwsep/mbconv layer present and the
    liveness walk of the file gives the architecture's computed peak."""
    space = _space()
    for arch, result in exported:
        model = onnx.load(result["files"]["onnx"])
        depthwise = sum(1 for n in model.graph.node if n.op_type == "Conv"
                        and next((a.i for a in n.attribute if a.name == "group"), 1) > 1)
        layers = [p for block in space.layer_specs(arch) for p in block.parts if isinstance(p, MnasLayerSpec)]
        assert depthwise == sum(1 for p in layers if p.t != 0)
        assert onnx_footprint(result["files"]["onnx"]).peak_activation_bytes == arch_footprint(
            space, arch).peak_activation_bytes


def test_estimate_prints_latency_and_memory_of_an_mnasnet_architecture(tmp_path, capsys):
    space = _space()
    arch = covering_archs(space)[1]
    arch_path = arch.save(tmp_path / "arch.json")
    table = synthetic_table(space).save(tmp_path / "t.json")
    assert main(["estimate", "--table", str(table), str(arch_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["memory_mb"] == pytest.approx(arch_footprint(space, arch).to_dict())
    entries = LatencyTable.load(table).entries
    parts = [p for spec in space.arch_specs(arch) for p in getattr(spec, "parts", (spec,)) if not p.is_free]
    # every layer of every block counted, each less the runtime overhead (0.01 ms), which is counted once
    expected_ms = sum(entries[p.key()]["median_ms"] - 0.01 for p in parts) + 0.01
    assert result["latency_ms"] == pytest.approx(expected_ms)


# -- profile: isolated mnas ops on ONNX Runtime and LiteRT -------------------------------------------------------
def _probe_space(device_name: str) -> SearchSpace:
    """A space of ``mnas`` ops only: every family with SE and the skip, and a strided SE MBConv; on LiteRT (several
    seconds a conversion) the SE MBConv and the SE conv, each with the skip."""
    same = [MnasLayerSpec(16, 16, 8, t=t, e=e, k=k, s=1, se=1, res=1)
            for (t, e), k in zip([(2, 6), (1, 1), (0, 1)], (3, 5, 3))]
    strided = MnasLayerSpec(16, 24, 8, t=2, e=6, k=5, s=2, se=1)
    layers = [SearchableLayer(0, 1, tuple((f"op{i}", s) for i, s in enumerate(same))),
              SearchableLayer(1, 2, (("down", strided),))]
    if device_name == "cpu-litert":
        layers = [SearchableLayer(0, 1, (("mbconv", same[0]), ("conv", same[-1])))]
    # no stem, pool or classifier: each is one more conversion, and only the mnas ops matter here
    return SearchSpace("mnas-probe", 8, 10, [], layers, [], [Stage(i + 1, 16, 1, (i,)) for i in range(len(layers))])


@pytest.mark.parametrize("device_name", ["cpu-onnxruntime", "cpu-litert"])
def test_isolated_mnas_ops_profile_and_match_torch(device_name, tmp_path):
    if device_name == "cpu-litert" and not HAS_LITERT:
        pytest.skip(NO_LITERT)
    device, space = load_device(device_name), _probe_space(device_name)
    result = profile_device(device, space, tmp_path / "t.json", ProfileConfig(protocol_overrides=FAST,
                                                                              progress=False))
    table = LatencyTable.load(tmp_path / "t.json")
    mnas = space.all_specs()
    assert all(isinstance(s, MnasLayerSpec) and s.se and s.kind == "mnas" for s in mnas)
    assert result.measured == len(mnas) == len(table.entries) and all(table.entries[s.key()]["median_ms"] > 0
                                                                       for s in mnas)
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    x = np.random.default_rng(0).standard_normal((1, 16, 8, 8)).astype(np.float32)
    for spec in mnas:  # the converted op (channel-last for LiteRT) computes what the torch module does
        module = build_measured_op(spec)
        prepared = runtime.prepare(module, spec.input_shape, spec.key())  # the profile's file, from the cache
        try:
            got = prepared.infer(x)
        finally:
            prepared.close()
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max())), spec.key()
