"""Search for three latency targets spread over the space's range on each device, and print a Markdown table of
target, table estimate, measured latency (and its ratio to the target), accuracy and a same-budget uniform
baseline's accuracy and latency (what docs/search.md shows).

    python tools/search_targets.py [--devices cpu-onnxruntime,cpu-litert] [--fractions 0.2,0.5,0.8]
        [--out runs/targets] [-- extra hwnas search flags]

Targets are placed at the given fractions of the way from the fastest to the slowest architecture's table
latency. Each search runs as its own ``hwnas search --json`` process (so timings and memory are per run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from hwnas.latency.estimator import TableEstimator
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.search.decode import fastest_arch, slowest_arch
from hwnas.spaces import get_space


def targets(device: str, space_name: str, resolution: int, num_classes: int, fractions: list[float]) -> list[float]:
    space = get_space(space_name, resolution, num_classes)
    estimator = TableEstimator(LatencyTable.load(default_table_path(device, space_name, resolution)), space)
    low, high = (estimator.latency_ms(f(space, estimator)) for f in (fastest_arch, slowest_arch))
    return [round(low + f * (high - low), 4) for f in fractions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu-onnxruntime,cpu-litert")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10, help="classes of the data set (digits: 10)")
    parser.add_argument("--fractions", default="0.2,0.5,0.8")
    parser.add_argument("--out", default="runs/targets")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = []
    for device in args.devices.split(","):
        for fraction, target in zip(fractions, targets(device, args.space, args.resolution, args.num_classes,
                                                       fractions)):
            out = Path(args.out) / f"{device}-{fraction}"
            cmd = [sys.executable, "-m", "hwnas.cli", "search", "--device", device, "--space", args.space,
                   "--resolution", str(args.resolution), "--target-ms", str(target), "--baseline", "--quiet",
                   "--out", str(out), "--json", *extra]
            result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            rows.append((device, fraction, result))
            print(f"{device} T={target} ms: measured {result['measured_ms']} ms, accuracy {result['accuracy']:.3f}",
                  file=sys.stderr)
    print("| device | target (ms) | table estimate (ms) | measured (ms) | measured / target | accuracy | "
          "baseline (uniform) accuracy | baseline measured (ms) | search + train (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for device, fraction, r in rows:
        base = r.get("baseline") or {}
        base_acc = f"{base['accuracy']:.3f}" if base.get("accuracy") is not None else "none fits"
        base_ms = f"{base['measured_ms']:.3f}" if base.get("measured_ms") is not None else "—"
        print(f"| {device} | {r['target_ms']:.3f} | {r['estimated_ms']:.3f} | {r['measured_ms']:.3f} | "
              f"{r['measured_over_target']:.2f} | {r['accuracy']:.3f} | {base_acc} | {base_ms} | "
              f"{r['search_seconds'] + r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
