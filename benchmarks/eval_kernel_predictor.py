"""Check the kernel predictor on the zoo networks at 224 against paired end-to-end measurements.

    python benchmarks/eval_kernel_predictor.py --device cpu-onnxruntime   # also cpu-litert, cpu-torch

Each zoo network at 224x224 (a resolution the build never measured whole networks at) is predicted and measured
whole, paired with the same reference network the kernels were measured against (``--passes`` passes, the median
ratio kept). What is predicted and measured is what the device's runtime runs: ONNX Runtime the exported ``.onnx``
(``hwnas predict --json``); LiteRT the ``.tflite`` conversion (``hwnas predict`` of the ``.tflite`` file, and of the
``.onnx`` file as a second column: the split of a graph as its conversion would run); torch the module itself
(``predictor.predict(module, input_shape=...)``: eager runs the module, with its BatchNorms). Measured latencies are
put on the predictor's reference level (``ratio x predictor reference_ms``), so a drift of the machine between build
and evaluation cancels. Prints a table (network, predicted ms, measured ms, error %) and the share within +-10%,
and saves the plot to docs/img/kernel_predictor.png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.cli import main as hwnas_main
from hwnas.devices import load_device
from hwnas.latency.predictors import load_predictor
from hwnas.latency.reference import generic_reference, prepare_reference
from hwnas.runtimes import get_runtime
from hwnas.runtimes.converters import cached_onnx, cached_tflite
from hwnas.runtimes.paired import PairedProtocol, measure_paired
from hwnas.zoo import build_zoo, zoo_names

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class EvalConfig:
    resolution: int = 224
    passes: int = 5
    pairs: int = 40
    tolerance: float = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--predictor", help="default: latency_tables/predictors/DEVICE__kernel.json")
    parser.add_argument("--workdir", default="runs/kernel-eval")
    parser.add_argument("--plot", help="default: docs/img/kernel_predictor[_BACKEND].png")
    args = parser.parse_args()
    config = EvalConfig()

    device = load_device(args.device)
    predictor_path = Path(args.predictor or ROOT / "latency_tables" / "predictors" / f"{device.name}__kernel.json")
    predictor = load_predictor(predictor_path)
    reference_ms = float(predictor.meta.reference_ms or 0.0)
    workdir = Path(args.workdir)
    runtime = get_runtime(device.backend, device.runtime_config(), workdir / "runtime")
    module, shape, _ = generic_reference()
    reference = prepare_reference(runtime, module, shape)
    size = config.resolution
    modules = {name: build_zoo(name) for name in zoo_names()}
    shape = (1, 3, size, size)
    onnx_paths = {name: cached_onnx(module, shape, workdir, f"{name}-{size}") for name, module in modules.items()}
    second: dict[str, float] = {}
    if device.backend == "litert":
        paths = {name: cached_tflite(module, shape, workdir, f"{name}-{size}") for name, module in modules.items()}
        second = {name: _hwnas_predict(device.name, predictor_path, path) for name, path in onnx_paths.items()}
    if device.backend == "torch":
        predicted = {name: predictor.predict(module, input_shape=shape).ms for name, module in modules.items()}
        prepared = {name: runtime.prepare(module, shape, name) for name, module in modules.items()}
        paths = onnx_paths
    else:
        paths = paths if device.backend == "litert" else onnx_paths
        predicted = {name: _hwnas_predict(device.name, predictor_path, path) for name, path in paths.items()}
        prepared = {name: runtime.prepare_file(path) for name, path in paths.items()}
    ratios: dict[str, list[float]] = {name: [] for name in paths}
    reference_medians = []
    for _ in range(config.passes):
        for name, stats in measure_paired(prepared, reference, PairedProtocol(pairs=config.pairs)).items():
            ratios[name].append(stats.ratio)
            reference_medians.append(stats.reference.median_ms)
    measured = {name: float(np.median(values)) * reference_ms for name, values in ratios.items()}

    print(f"predictor {predictor_path.name}: reference {reference_ms:.3f} ms (this run's reference quiet latency: "
          f"{np.percentile(reference_medians, 10):.3f} ms)")
    extra = " | .onnx predicted ms | .onnx error %" if second else ""
    print(f"| network | predicted ms | measured ms | error % | pass spread %{extra} |")
    print("|---|---|---|---|---|" + ("---|---|" if second else ""))
    errors = {}
    for name in paths:
        errors[name] = predicted[name] / measured[name] - 1
        spread = (max(ratios[name]) - min(ratios[name])) / float(np.median(ratios[name]))
        more = f" | {second[name]:.3f} | {100 * (second[name] / measured[name] - 1):+.1f}" if second else ""
        print(f"| {name} | {predicted[name]:.3f} | {measured[name]:.3f} | {100 * errors[name]:+.1f} | "
              f"{100 * spread:.1f}{more} |")
    within = sum(abs(e) <= config.tolerance for e in errors.values())
    print(f"within +-{config.tolerance:.0%}: {within}/{len(errors)} ({within / len(errors):.0%}); "
          f"mean |error| {100 * np.mean(np.abs(list(errors.values()))):.1f}%")
    if second:
        within = sum(abs(second[n] / measured[n] - 1) <= config.tolerance for n in paths)
        print(f".onnx files (split as their conversion runs) within +-{config.tolerance:.0%}: {within}/{len(paths)}")
    suffix = "" if device.backend == "onnxruntime" else f"_{device.backend}"
    plot = Path(args.plot or ROOT / "docs" / "img" / f"kernel_predictor{suffix}.png")
    _plot(predicted, measured, config.tolerance, plot, device.name)
    print(f"wrote {plot}")


def _hwnas_predict(device: str, predictor: Path, path: Path) -> float:
    """``hwnas predict --json``'s latency for ``path`` (the command line itself, not a shortcut)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = hwnas_main(["predict", "--device", device, "--predictor", str(predictor), str(path), "--json"])
    result = json.loads(out.getvalue())
    if code != 0:
        raise SystemExit(f"hwnas predict failed: {result.get('error')}")
    return float(result["latency_ms"])


def _plot(predicted: dict[str, float], measured: dict[str, float], tolerance: float, path: Path,
          device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    xs = np.asarray([measured[n] for n in predicted])
    ys = np.asarray([predicted[n] for n in predicted])
    top = 1.15 * max(xs.max(), ys.max())
    line = np.linspace(0, top, 10)
    ax.plot(line, line, "k-", lw=1)
    ax.fill_between(line, line * (1 - tolerance), line * (1 + tolerance), color="tab:green", alpha=0.15,
                    label=f"±{tolerance:.0%}")
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    for name, x, y in zip(predicted, xs, ys, strict=True):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("measured (ms, paired, predictor's reference level)")
    ax.set_ylabel("predicted by hwnas predict (ms)")
    ax.set_title(f"kernel predictor, zoo networks at 224, {device}")
    ax.legend(loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
