"""How many untimed runs a paired turn needs to be on ``hwnas bench``'s scale (docs/timing.md, "Turn warm-up").

    python benchmarks/bench_turn_warmup.py --device cpu-onnxruntime --resolution 32 --num-classes 10 --n 8 --rounds 4

For ``--n`` networks of the proxyless space (stratified over MACs) and the space's reference network: per round
and network, one call of the device's bench protocol (network and reference, rounds interleaved) and one paired
measurement per turn shape (``--untimed`` runs per turn with ``turn_warmup_s=0``, and the default protocol), all
back to back. Prints each shape's paired ratio over the median of bench's ratios, per network and summarized
(share within +-5%, median). Pins itself to ``--core``; the machine should be quiet.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from hwnas.devices import device_protocol, load_device
from hwnas.latency.profile import artifacts_dir
from hwnas.latency.reference import prepare_reference, reference_module
from hwnas.latency.sampling import macs_proxy, sample_stratified
from hwnas.latency.sets import network_items
from hwnas.runtimes import get_runtime
from hwnas.runtimes.paired import PairedProtocol, measure_paired
from hwnas.runtimes.protocol import measure
from hwnas.spaces import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--untimed", default="1,2,3,6", help="untimed runs per turn to compare (comma-separated)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    device = load_device(args.device)
    space = get_space("proxyless", args.resolution, args.num_classes)
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    module, shape, _ = reference_module(space)
    reference = prepare_reference(runtime, module, shape)
    bench_protocol = device_protocol(device)
    plan = [a.choices for a in sample_stratified(space, args.n, args.seed, macs_proxy(space))]
    prepared = runtime.prepare_many(network_items(space, plan, list(range(args.n))))
    shapes = {f"{k} untimed": PairedProtocol(turn_warmup_runs=int(k), turn_warmup_s=0.0)
              for k in args.untimed.split(",")}
    shapes["default"] = PairedProtocol()
    ratios: dict[str, dict[str, list[float]]] = {key: {name: [] for name in ["bench", *shapes]} for key in prepared}
    for round_ in range(args.rounds):
        for key, model in prepared.items():
            stats = measure({"net": model, "ref": reference}, bench_protocol)
            ratios[key]["bench"].append(stats["net"].median_ms / stats["ref"].median_ms)
            for name, protocol in shapes.items():
                ratios[key][name].append(measure_paired({key: model}, reference, protocol)[key].ratio)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    print(f"{'network':24} {'bench':>7} " + " ".join(f"{name:>10}" for name in shapes) + "  bench's round spread")
    relative: dict[str, list[float]] = {name: [] for name in shapes}
    for key, figures in ratios.items():
        bench = float(np.median(figures["bench"]))
        row = [float(np.median(figures[name])) / bench for name in shapes]
        for name, value in zip(shapes, row):
            relative[name].append(value)
        spread = (max(figures["bench"]) - min(figures["bench"])) / bench
        print(f"{key[:24]:24} {bench:7.4f} " + " ".join(f"{value:10.4f}" for value in row) + f"  {spread:.1%}")
    for name, values in relative.items():
        array = np.asarray(values)
        print(f"{name}: paired ratio / bench ratio median {np.median(array):.4f}, within +-5% "
              f"{100 * np.mean(np.abs(array - 1) <= 0.05):.0f}% of {array.size}")
    reference.close()


if __name__ == "__main__":
    main()
