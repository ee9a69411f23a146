"""Why a per-op table underestimates whole networks at small resolutions: an isolated op's weights stay in the
CPU caches between runs, a whole network's do not (between two uses of one block's weights the rest of the
network's weights pass through the caches).

Two measurements, both printed as Markdown:

1. ``chain`` (default): for shape-keeping candidate ops of the space (stride 1, cin == cout), the latency of the
   op alone vs the per-copy latency of a chain of ``--copies`` copies with distinct weights (the chain's weights
   no longer fit where one copy's did). Small blocks should keep their time; blocks of hundreds of KiB of weights
   should slow down.
2. ``--validation FILE`` (a ``validation.json`` from ``hwnas validate`` of the same device, space and resolution):
   re-time every op of the table with ``--flush`` MiB of unrelated memory written between timed runs (inputs
   refreshed after the flush so only weights and runtime state go cold; CPU runtimes in this process only), and
   compare each table's estimates with the whole-network measurements of that file.

    python benchmarks/bench_cache_pressure.py [--device cpu-litert] [--resolution 32] [--copies 8]
    python benchmarks/bench_cache_pressure.py --device cpu-litert --validation runs/val/validation.json \
        --flush 0,8,16,32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from hwnas.devices import load_device
from hwnas.devices import device_protocol
from hwnas.latency.metrics import agreement
from hwnas.latency.profile import artifacts_dir, build_measured_op
from hwnas.ops import build_op
from hwnas.runtimes import get_runtime
from hwnas.runtimes.base import PreparedModel
from hwnas.runtimes.protocol import measure, measure_overhead
from hwnas.spaces import get_space


def cache_sizes() -> str:
    """This CPU's cache sizes as Linux reports them (L1d, L2, L3 of cpu0)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    sizes = []
    for index in sorted(root.glob("index*")):
        kind = (index / "type").read_text().strip()
        if kind != "Instruction":
            sizes.append(f"L{(index / 'level').read_text().strip()} {(index / 'size').read_text().strip()}")
    return ", ".join(sizes) or "unknown"


def weight_kib(module: nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 1024


def chain(device_name: str, resolution: int, copies: int) -> None:
    device, space = load_device(device_name), get_space("proxyless", resolution)
    chosen: dict[str, Any] = {}
    for layer in space.layers:
        for name, spec in layer.candidates:
            shape_kept = spec.input_shape == spec.output_shape and name != "zero"
            if shape_kept and name in ("k3_e3", "k3_e6", "k7_e6") and spec.key() not in chosen:
                chosen[spec.key()] = spec
    items = []
    for key, spec in chosen.items():
        items.append((f"{key}|1", build_measured_op(spec), spec.input_shape))
        torch.manual_seed(0)
        items.append((f"{key}|{copies}", nn.Sequential(*[build_op(spec).eval() for _ in range(copies)]).eval(),
                      spec.input_shape))
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    print(f"converting {len(items)} models for {device.name} (cached by content)...", flush=True)
    prepared = runtime.prepare_many(items)
    stats = measure(prepared, device_protocol(device, {"rounds": 5}))
    overhead = measure_overhead(runtime, device_protocol(device)).median_ms
    print(f"\n{device.name}, proxyless@{resolution}, one thread; caches: {cache_sizes()}; run() overhead "
          f"{overhead * 1e3:.1f} us\n")
    print(f"| op | weights (KiB) | alone (ms) | per copy in a chain of {copies} (ms) | ratio |")
    print("|---|---|---|---|---|")
    kib = {key: weight_kib(module) for key, module, _ in items if key.endswith("|1")}
    for key in sorted(chosen, key=lambda k: kib[f"{k}|1"]):
        alone = stats[f"{key}|1"].median_ms - overhead
        per_copy = (stats[f"{key}|{copies}"].median_ms - overhead) / copies
        print(f"| {key} | {kib[f'{key}|1']:.0f} | {alone:.4f} | {per_copy:.4f} | {per_copy / alone:.2f} |")


def flushing(model: PreparedModel, backend: str, buffer: np.ndarray | None) -> Callable[[int], list[float]]:
    """A ``time_runs`` for ``model`` that writes ``buffer`` and refreshes the inputs before each timed run."""
    if backend == "litert":
        interp = model.interpreter  # type: ignore[attr-defined]
        inputs = [(d["index"], interp.get_tensor(d["index"]).copy()) for d in interp.get_input_details()]
        run, refresh = interp.invoke, lambda: [interp.set_tensor(i, v) for i, v in inputs]
    elif backend == "onnxruntime":
        session, binding = model.session, model.binding  # type: ignore[attr-defined]
        values = [(v, v.numpy().copy()) for v in model.input_values]  # type: ignore[attr-defined]
        run, refresh = (lambda: session.run_with_iobinding(binding)), lambda: [v.update_inplace(a) for v, a in values]
    else:
        raise SystemExit(f"--flush supports the litert and onnxruntime backends, not {backend}")

    def time_runs(n: int) -> list[float]:
        times = []
        for _ in range(n):
            if buffer is not None:
                np.add(buffer, 1.0, out=buffer)  # read and write every line: evicts what the op left cached
                refresh()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return times

    return time_runs


def flush(device_name: str, validation: Path, sizes_mib: list[float]) -> None:
    data = json.loads(validation.read_text())
    device = load_device(device_name)
    space = get_space(data["space"], data["resolution"])
    specs = [s for s in space.all_specs() if not s.is_free]
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    print(f"converting {len(specs)} ops for {device.name} (cached by content)...", flush=True)
    prepared = runtime.prepare_many([(s.key(), build_measured_op(s), s.input_shape) for s in specs])
    prepared["overhead"] = runtime.prepare(nn.ReLU(), (1, 8, 1, 1), "overhead-relu-1x8x1x1")
    measured = [row["measured_ms"] for row in data["rows"]]
    archs = [space.arch(row["arch"]["choices"]) for row in data["rows"]]
    # warm-up stays unflushed (warmup_s 0), timed runs capped: a flush costs milliseconds per run
    protocol = device_protocol(device, {"max_runs": 200, "warmup_s": 0.0})
    print(f"\n{device.name}, {space.name}@{space.resolution}: {len(archs)} whole networks of {validation}; caches: "
          f"{cache_sizes()}\n")
    print("| flush (MiB) | within 10% | mean bias | MAPE | Kendall tau | seconds |")
    print("|---|---|---|---|---|---|")
    for size in sizes_mib:
        buffer = np.zeros(int(size * 2**20) // 8) if size > 0 else None
        for model in prepared.values():
            model.time_runs = flushing(model, device.backend, buffer)  # type: ignore[method-assign]
        start = time.perf_counter()
        stats = measure(prepared, protocol)
        overhead = stats["overhead"].median_ms
        op_ms = {key: max(s.median_ms - overhead, 0.0) for key, s in stats.items()}
        estimates = [overhead + sum(op_ms[s.key()] for s in space.arch_specs(a) if not s.is_free) for a in archs]
        m = agreement(estimates, measured)
        print(f"| {size:g} | {m['within10_pct']:.0f}% | {m['bias_pct']:+.1f}% | {m['mape']:.1f}% | "
              f"{m['kendall']:.2f} | {time.perf_counter() - start:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu-litert")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--validation", type=Path, help="validation.json of hwnas validate: run the flush study")
    parser.add_argument("--flush", default="0,16", help="MiB written between timed runs, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.validation:
        flush(args.device, args.validation, [float(x) for x in args.flush.split(",")])
    else:
        chain(args.device, args.resolution, args.copies)


if __name__ == "__main__":
    main()
