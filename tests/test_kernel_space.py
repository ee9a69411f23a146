"""The kernel predictor as a search space's latency estimator (issue 17): against the whole network exported and split,
the decoder against brute force, the differentiable loss against its formula written out."""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.latency.kernels.onnx_split import read_onnx
from hwnas.latency.predictors import kernel_space, load_predictor
from hwnas.latency.predictors.kernel import KernelPredictor
from hwnas.latency.predictors.kernel_space import KernelSpacePredictor, split_in_network
from hwnas.latency.profile import build_measured_op
from hwnas.runtimes.converters import to_onnx
from hwnas.search.decode import decode_under_target
from hwnas.spaces import get_space

SHIPPED = "latency_tables/predictors/cpu-onnxruntime__kernel.json"


@pytest.fixture(scope="module")
def kernel() -> KernelPredictor:
    predictor = load_predictor(SHIPPED)
    assert isinstance(predictor, KernelPredictor) and "power" in predictor.correction
    return predictor


@pytest.fixture(scope="module")
def tiny(kernel: KernelPredictor) -> KernelSpacePredictor:
    return kernel.for_space(get_space("tiny", 32))


def _one_hot(space, arch) -> list[torch.Tensor]:
    return [torch.nn.functional.one_hot(torch.tensor(layer.names.index(c)), len(layer.names)).to(torch.float64)
            for layer, c in zip(space.layers, arch.choices)]


def _check_against_whole_networks(kernel: KernelPredictor, space, estimator, n: int) -> None:
    rng = random.Random(0)
    archs = [space.random_arch(rng) for _ in range(n)]
    archs.append(space.arch(["zero" if "zero" in layer.names else layer.names[-1] for layer in space.layers]))
    for arch in archs:
        whole_ms, _ = kernel.predict_arch(arch)
        assert estimator.latency_ms(arch) == pytest.approx(whole_ms, rel=1e-12)


def test_latency_is_the_whole_network_split(kernel: KernelPredictor, tiny: KernelSpacePredictor) -> None:
    """Each op split alone in its place sums to what the whole network, exported and split, is predicted at (the
    layout reorders neither counted twice nor dropped; split alone, the ops' reorders made proxyless 1.0006x)."""
    _check_against_whole_networks(kernel, tiny.space, tiny, 3)


@pytest.mark.slow
def test_latency_is_the_whole_network_split_on_proxyless(kernel: KernelPredictor) -> None:
    """The same on proxyless@64 (71 ops to export: about 10 s)."""
    space = get_space("proxyless", 64)
    _check_against_whole_networks(kernel, space, kernel.for_space(space), 2)


def test_a_residual_op_in_its_place_fuses_its_add_and_pays_no_reorder(kernel: KernelPredictor, tmp_path: Path) -> None:
    spec = get_space("proxyless", 64).layers[1].spec("k3_e3")  # 24 -> 24 channels, stride 1: a residual MBConv
    model = read_onnx(to_onnx(build_measured_op(spec), spec.input_shape, tmp_path / "op.onnx"))
    placed, leaves_blocked = split_in_network(copy.deepcopy(model), 16, (True, "left"))
    assert leaves_blocked and [k.type for k in placed] == ["pwconv", "dwconv", "pwconv"] and placed[-1].sum == 1
    alone, _ = split_in_network(model, 16, (False, "nchw"))  # what the op costs split on its own
    assert {"reorder_in", "reorder_out"} <= {k.type for k in alone}


def test_one_hot_and_the_gradient_against_the_formula(tiny: KernelSpacePredictor) -> None:
    space, c = tiny.space, tiny.correction
    rng = random.Random(1)
    for arch in (space.random_arch(rng) for _ in range(4)):
        latency = tiny.latency_ms(arch)
        assert tiny.predict(arch).ms == latency
        assert float(tiny.expected_latency_ms(_one_hot(space, arch))) == pytest.approx(latency, rel=1e-12)
        assert float(tiny.anchored(arch).expected_latency_ms(_one_hot(space, arch))) == pytest.approx(latency,
                                                                                                        rel=1e-12)
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(len(layer.names), generator=gen, dtype=torch.float64, requires_grad=True)
              for layer in space.layers]
    probs = [torch.softmax(x, 0) for x in logits]
    for p in probs:
        p.retain_grad()
    tiny.expected_latency_ms(probs).backward()
    ref = tiny.kernel.meta.reference_ms
    sums = [np.asarray(costs) / ref for costs in tiny.layer_costs_ms()]  # t[l, i] in reference units
    expected_t = (tiny.fixed_ms() / ref - tiny.overhead_ratio) + sum(float(p.detach() @ torch.tensor(t))
                                                                     for p, t in zip(probs, sums))
    slope = c["scale"] * c["power"] * expected_t ** (c["power"] - 1) * ref  # d latency / d E[T], written out
    for p, t in zip(probs, sums):
        assert np.allclose(p.grad.numpy(), slope * t, rtol=1e-10)
    assert all(torch.isfinite(x.grad).all() for x in logits)


def test_the_decoder_finds_the_brute_force_optimum(tiny: KernelSpacePredictor) -> None:
    space = tiny.space
    every = [space.arch(c) for c in itertools.product(*(layer.names for layer in space.layers))]
    latency = {a.choices: tiny.latency_ms(a) for a in every}
    low, high = min(latency.values()), max(latency.values())
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        log_probs = [torch.log_softmax(3 * torch.randn(len(layer.names), generator=gen, dtype=torch.float64),
                                       0).tolist() for layer in space.layers]

        def score(arch, log_probs=log_probs):  # noqa: ANN001, ANN202
            return sum(lp[layer.names.index(c)] for lp, layer, c in zip(log_probs, space.layers, arch.choices))

        for target in (low + 0.2 * (high - low), low + 0.6 * (high - low)):
            decoded = decode_under_target(space, log_probs, tiny, target)
            best = max((a for a in every if latency[a.choices] <= target), key=score)
            assert latency[decoded.choices] <= target and score(decoded) == pytest.approx(score(best), abs=1e-9)


def test_terms_are_shares_that_sum_to_the_latency(tiny: KernelSpacePredictor) -> None:
    arch = tiny.space.random_arch(random.Random(4))
    prediction = tiny.predict(arch)
    terms = prediction.terms
    assert sum(t["ms"] for t in terms) == pytest.approx(prediction.ms, rel=1e-12)
    assert terms[0]["type"] == "fixed" and terms[0]["ms"] > tiny.kernel.overhead_ms == prediction.overhead_ms
    costs = [row[layer.names.index(c)] for row, layer, c in zip(tiny.layer_costs_ms(), tiny.space.layers,
                                                                  arch.choices)]
    shares = [t["ms"] for t in terms[1:]]
    assert all(s >= 0 for s in shares)
    nonzero = [(s, c) for s, c in zip(shares, costs) if c > 0]
    assert np.allclose([s / c for s, c in nonzero], nonzero[0][0] / nonzero[0][1], rtol=1e-12)  # one factor


def test_protocol_meta_and_what_it_refuses(kernel: KernelPredictor, tiny: KernelSpacePredictor,
                                           tmp_path: Path) -> None:
    assert (tiny.meta.space, tiny.meta.resolution, tiny.meta.num_classes) == ("tiny", 32, 10)
    assert tiny.meta.device == kernel.meta.device and kernel.meta.space is None  # the kernel's meta is untouched
    assert tiny.reference_ms is None and tiny.path == kernel.path and tiny.kind == "kernel"
    for refused in (lambda: tiny.save(tmp_path / "p.json"),
                    lambda: tiny.with_rows([tiny.space.random_arch(random.Random(0))], [1.0])):
        with pytest.raises(HwnasError) as error:
            refused()
        assert "\n" not in str(error.value)
    assert not (tmp_path / "p.json").exists()
    assert tiny.for_space(get_space("tiny", 32)) is tiny
    other = tiny.for_space(get_space("tiny", 64))
    assert other.space.resolution == 64 and other.meta.resolution == 64
    module = get_space("tiny", 32).build(tiny.space.random_arch(random.Random(5)))
    assert tiny.predict(module, input_shape=(1, 3, 32, 32)).ms == kernel.predict(module, input_shape=(1, 3, 32, 32)).ms


def test_a_second_build_reuses_the_splits_and_predicts_the_same(kernel: KernelPredictor,
                                                                 tiny: KernelSpacePredictor,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    correction = copy.deepcopy(kernel.correction)
    monkeypatch.setattr(kernel_space, "op_split", lambda *a: pytest.fail("exported again"))
    again = kernel.for_space(get_space("tiny", 32))
    assert again.layer_costs_ms() == tiny.layer_costs_ms() and again.fixed_ms() == tiny.fixed_ms()
    assert kernel.correction == correction


def test_an_unwritable_cache_is_one_line(kernel: KernelPredictor, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = KernelPredictor(kernel.meta, kernel.boosters, kernel.fallback, kernel.overhead_ratio, kernel.block,
                            kernel.correction)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "file"))
    with pytest.raises(HwnasError, match="HWNAS_CACHE") as error:
        fresh.for_space(get_space("tiny", 32))
    assert "\n" not in str(error.value)
