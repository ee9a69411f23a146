"""Kernel-level latency: the splitter against ORT's own optimized graph, single-kernel generators, the kernel
predictor's file round trip and ``hwnas predict`` (no real timing: predictors are fitted on scripted data)."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.latency.kernels import Kernel, count_by_op, kernel_from_key, split_onnx
from hwnas.latency.kernels.generators import FREE_TYPES, kernel_model
from hwnas.runtimes.converters import to_onnx
from hwnas.zoo import build_zoo, zoo_names

PUBLISHED_PARAMS_M = {"resnet18": 11.69, "mobilenet_v2": 3.50, "mobilenet_v3_large": 5.48, "shufflenet_v2": 2.28,
                      "efficientnet_b0": 5.29, "mnasnet": 3.89}


def _ort_optimized_ops(path: Path) -> list[tuple[str, dict]]:
    """ORT's optimized graph (CPU EP, all optimizations, as the cpu-onnxruntime device runs it): (op, attrs)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = []
    for node in onnx.load(options.optimized_model_filepath).graph.node:
        nchwc = node.domain == "com.microsoft.nchwc" and not node.op_type.startswith("Reorder")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        attrs["_inputs"] = [i for i in node.input]
        ops.append((("nchwc." if nchwc else "") + node.op_type, attrs))
    return ops


def _conv_signature(ops: list[tuple[str, dict]]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for op, attrs in ops:
        if "Conv" in op:
            act = attrs.get("activation", b"none")
            act = act.decode() if isinstance(act, bytes) else act
            fused_sum = int(len(attrs["_inputs"]) == 4 and attrs["_inputs"][3] != "")
            counts[(op, act, fused_sum, attrs.get("group", 1) > 1)] += 1
    return counts


@pytest.fixture(scope="module")
def zoo_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zoo")
    paths = {name: to_onnx(build_zoo(name), (1, 3, 64, 64), folder / f"{name}.onnx") for name in zoo_names()}
    from hwnas.spaces import get_space

    space = get_space("proxyless", 64)
    arch = space.random_arch(random.Random(3))
    paths["proxyless"] = to_onnx(space.build(arch).eval(), space.input_shape, folder / "proxyless.onnx")
    return paths


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_shapes_and_params(name: str) -> None:
    module = build_zoo(name, num_classes=10)
    with torch.no_grad():
        assert module(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    params = sum(p.numel() for p in build_zoo(name).parameters()) / 1e6
    assert params == pytest.approx(PUBLISHED_PARAMS_M[name], rel=0.01)


@pytest.mark.parametrize("name", [*zoo_names(), "proxyless"])
def test_splitter_matches_ort_optimized_graph(name: str, zoo_onnx: dict[str, Path]) -> None:
    kernels = split_onnx(zoo_onnx[name])
    ort_ops = _ort_optimized_ops(zoo_onnx[name])
    assert count_by_op(kernels) == dict(collections.Counter(op for op, _ in ort_ops))
    mine = collections.Counter((k.op, k.act, k.sum, k.g > 1) for k in kernels if "Conv" in k.op)
    assert mine == _conv_signature(ort_ops)


def test_kernel_key_round_trip(zoo_onnx: dict[str, Path]) -> None:
    kernels = {k.key: k for name in zoo_names() for k in split_onnx(zoo_onnx[name])}
    assert len(kernels) > 100
    for key, kernel in kernels.items():
        assert kernel_from_key(key) == kernel
    with pytest.raises(HwnasError, match="malformed"):
        kernel_from_key("conv-in:3x3")
    with pytest.raises(HwnasError, match="type must be"):
        Kernel("warp", "Conv", 1, 1, 1, 1, 1, 1)


def test_generators_give_one_node_of_the_kernels_op(zoo_onnx: dict[str, Path], tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    kernels = {k.key: k for name in ("mobilenet_v3_large", "shufflenet_v2", "efficientnet_b0", "resnet18")
               for k in split_onnx(zoo_onnx[name])}
    by_op: dict[tuple[str, str], Kernel] = {}
    for kernel in kernels.values():  # one of each (type, op): keeps the test fast
        if kernel.type not in FREE_TYPES:
            by_op.setdefault((kernel.type, kernel.op), kernel)
    assert len(by_op) >= 15
    for kernel in by_op.values():
        path = tmp_path / "kernel.onnx"
        onnx.save(kernel_model(kernel), str(path))
        ops = [op for op, _ in _ort_optimized_ops(path)]
        assert ops == [kernel.op.removeprefix("blocked.")], kernel.key
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()})


# -- the kernel predictor (fitted on scripted costs: no timing) ---------------------------------------------
def _fake_cost(kernel: Kernel) -> float:
    """A deterministic stand-in for a measured cost in reference units: work plus traffic."""
    return 1e-4 + kernel.macs * 2e-10 + (kernel.input_elements + kernel.output_elements) * 1e-9


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from torch import nn

    from hwnas.zoo import InvertedResidual

    module = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), InvertedResidual(16, 16, 3, 1, 48, "relu6", 12),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    return to_onnx(module, (1, 3, 32, 32), tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def tiny_predictor(tiny_onnx: Path):  # noqa: ANN201
    from hwnas.latency.kernels.sample import perturb
    from hwnas.latency.predictors import PredictorMeta
    from hwnas.latency.predictors.kernel import fit_kernel_predictor

    rng = random.Random(0)
    seeds = [k for k in split_onnx(tiny_onnx) if k.type not in FREE_TYPES]
    kernels = seeds + [k for k in (perturb(rng.choice(seeds), rng) for _ in range(150)) if k is not None]
    costs = np.asarray([_fake_cost(k) for k in kernels])
    meta = PredictorMeta(device="cpu-onnxruntime", reference_ms=2.0)
    network = (split_onnx(tiny_onnx), 1.1 * sum(_fake_cost(k) for k in split_onnx(tiny_onnx)) + 0.001)
    predictor = fit_kernel_predictor(kernels, costs, meta, 0.001, 16, [network])
    predictor.meta.features = list(predictor.expected_features(meta))
    return predictor


def test_kernel_predictor_save_load_identical(tiny_predictor, tiny_onnx: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from hwnas.latency.predictors import load_predictor

    path = tiny_predictor.save(tmp_path / "kernel.json")
    text = path.read_text()
    assert "learner" in text and json.loads(text)["kind"] == "kernel"  # boosters as JSON models, no pickle
    loaded = load_predictor(path)
    before, terms_before = tiny_predictor.predict_onnx(tiny_onnx)
    after, terms_after = loaded.predict_onnx(tiny_onnx)
    assert after == before and terms_after == terms_before
    assert before == pytest.approx(sum(t["ms"] for t in terms_before) + tiny_predictor.overhead_ms)
    truth = 2.0 * (0.001 + 1.1 * sum(_fake_cost(k) for k in split_onnx(tiny_onnx)) + 0.001)
    assert before == pytest.approx(truth, rel=0.25)


@pytest.mark.parametrize("damage", ["not json", "foreign", "booster", "stale"])
def test_corrupt_or_foreign_kernel_predictor_is_one_line(
    tiny_predictor, tmp_path: Path, damage: str  # noqa: ANN001
) -> None:
    from hwnas.latency.predictors import load_predictor

    path = tiny_predictor.save(tmp_path / "kernel.json")
    data = json.loads(path.read_text())
    if damage == "not json":
        path.write_text(path.read_text()[:500])
    else:
        if damage == "foreign":
            data["schema"] = "other/1"
        elif damage == "booster":
            data["model"]["fallback"] = json.dumps({"learner": {"garbage": 1}})
        else:
            data["meta"]["features"] = data["meta"]["features"][:-1]
        path.write_text(json.dumps(data))
    with pytest.raises(HwnasError) as error:
        load_predictor(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_cli_predict_json(
    tiny_predictor, tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture  # noqa: ANN001
) -> None:
    from hwnas.cli import main

    path = tiny_predictor.save(tmp_path / "kernel.json")
    assert main(["predict", "--device", "cpu-onnxruntime", "--predictor", str(path), str(tiny_onnx), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected, terms = tiny_predictor.predict_onnx(tiny_onnx)
    assert result["latency_ms"] == pytest.approx(expected)
    assert [k["type"] for k in result["kernels"]] == [t["type"] for t in terms]
    assert {"type", "key", "input", "output", "ms"} <= set(result["kernels"][0])
    # a predictor of another device: one line
    tiny_predictor.meta.device = "cpu-litert"
    other = tiny_predictor.save(tmp_path / "other.json")
    tiny_predictor.meta.device = "cpu-onnxruntime"
    assert main(["predict", "--device", "cpu-onnxruntime", "--predictor", str(other), str(tiny_onnx), "--json"]) == 2
    captured = capsys.readouterr()
    assert "cpu-litert" in json.loads(captured.out)["error"] and captured.err.count("\n") == 1


class _ScriptedModel:
    """A prepared model whose runs take ``seconds``, growing by ``drift`` each time (drift: a noisy measurement)."""

    def __init__(self, seconds: float, drift: float = 0.0) -> None:
        self.seconds, self.drift = seconds, drift

    def time_runs(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            times.append(self.seconds)
            self.seconds += self.drift
        return times

    def close(self) -> None:
        pass


class _ScriptedRuntime:
    """Prepares each kernel's model file as a scripted model: twice the reference's time, drifting if noisy."""

    def __init__(self, noisy_keys: set[str]) -> None:
        self.noisy_keys, self.prepared = noisy_keys, []

    def prepare_file(self, path: Path) -> _ScriptedModel:
        assert path.is_file()
        noisy = any(path.name == f"{key.replace(':', '=')}.onnx" for key in self.noisy_keys)
        self.prepared.append(path.name)
        return _ScriptedModel(2e-3, drift=2e-4 if noisy else 0.0)


def test_store_measures_missing_kernels_and_outvotes_noisy_ones(tmp_path: Path) -> None:
    from hwnas.latency.kernels.store import KernelStore, measure_kernels, remeasure_noisy
    from hwnas.runtimes.paired import PairedProtocol

    kernels = [Kernel("act", "Relu", c, 4, 4, c, 4, 4, act="Relu") for c in (8, 16, 24)]
    noisy = kernels[2].key
    runtime, protocol = _ScriptedRuntime({noisy}), PairedProtocol(pairs=4, warmup_runs=1, warmup_s=0.0)
    store = KernelStore(tmp_path / "kernels.json", "cpu-onnxruntime", {}, 8)
    assert measure_kernels(kernels[:2], runtime, _ScriptedModel(1e-3), store, protocol, tmp_path) == 2
    assert measure_kernels(kernels, runtime, _ScriptedModel(1e-3), store, protocol, tmp_path, save_every=1) == 1
    assert len(runtime.prepared) == 3 and not list((tmp_path / "kernels").iterdir())  # model files removed
    assert [store.kernels[k.key]["ratio"] for k in kernels[:2]] == [2.0, 2.0]
    assert store.kernels[noisy]["noisy"] and store.kernels[noisy]["flagged"]
    first_ratio = store.kernels[noisy]["ratio"]
    assert remeasure_noisy(runtime, _ScriptedModel(1e-3), store, protocol, tmp_path, passes=2) == 2
    ratios = store.kernels[noisy]["ratios"]
    assert len(ratios) == 3 and ratios[0] == first_ratio and store.kernels[noisy]["ratio"] == float(np.median(ratios))
    assert "ratios" not in store.kernels[kernels[0].key]  # a quiet kernel is measured once
    reloaded = KernelStore(tmp_path / "kernels.json", "cpu-onnxruntime", {}, 8)
    assert reloaded.kernels == json.loads(json.dumps(store.kernels))
