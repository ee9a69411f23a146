"""Search for three latency targets spread over the space's measured range on each device; print a Markdown table
of target, table estimate, measured latency (and its ratio to the target), accuracy, and a same-budget uniform
baseline's accuracy and latency (what docs/search.md shows); write ``OUT/targets.json`` and ``OUT/targets.png``.

    python tools/search_targets.py [--devices cpu-onnxruntime,cpu-litert] [--fractions 0.2,0.5,0.8]
        [--out runs/targets] [-- extra hwnas search flags]

Targets lie at the given fractions of the way from the fastest to the slowest architecture (by table latency) as
*measured end to end on the device* before the searches, so they are reachable on the device whatever the table's
bias. Each search runs as its own ``hwnas search --json`` process (timings and memory per run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hwnas.devices import load_device
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.search.decode import fastest_arch, slowest_arch
from hwnas.search.run import SearchConfig, measure_networks
from hwnas.spaces import get_space


def measured_range(device: str, space_name: str, resolution: int, num_classes: int) -> tuple[float, float]:
    """(fastest, slowest) architecture of the space by table latency, measured end to end on the device."""
    space = get_space(space_name, resolution, num_classes)
    estimator = TableEstimator(LatencyTable.load(default_table_path(device, space_name, resolution)), space)
    nets = {name: space.build(f(space, estimator)) for name, f in (("fastest", fastest_arch), ("slowest", slowest_arch))}
    stats, _ = measure_networks(load_device(device), nets, space.input_shape, SearchConfig(), False)
    return stats["fastest"]["median_ms"], stats["slowest"]["median_ms"]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = list(dict.fromkeys(r["device"] for r in rows))
    fig, axes = plt.subplots(1, len(devices), figsize=(5 * len(devices), 4.2), squeeze=False)
    for ax, device in zip(axes[0], devices):
        mine = [r for r in rows if r["device"] == device]
        targets = [r["target_ms"] for r in mine]
        ax.plot(targets, targets, "k--", lw=1, label="measured = target")
        ax.plot(targets, [r["measured_ms"] for r in mine], "o", label="searched")
        base = [(r["target_ms"], r["baseline"]["measured_ms"]) for r in mine if (r.get("baseline") or {}).get("measured_ms")]
        if base:
            ax.plot(*zip(*base), "s", mfc="none", label="uniform baseline")
        for r in mine:
            ax.annotate(f"acc {r['accuracy']:.3f}", (r["target_ms"], r["measured_ms"]), textcoords="offset points",
                        xytext=(5, -12), fontsize=8)
        ax.set(title=device, xlabel="target T (ms)", ylabel="measured end to end (ms)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for device in args.devices.split(","):
        low, high = measured_range(device, args.space, args.resolution, args.num_classes)
        print(f"{device}: fastest architecture {low:.4f} ms, slowest {high:.4f} ms (measured)", file=sys.stderr)
        for fraction in fractions:
            target = round(low + fraction * (high - low), 4)
            run = out / f"{device}-{fraction}"
            cmd = [sys.executable, "-m", "hwnas.cli", "search", "--device", device, "--space", args.space,
                   "--resolution", str(args.resolution), "--target-ms", str(target), "--baseline", "--quiet",
                   "--out", str(run), "--json", *extra]
            result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            rows.append({**result, "device": device, "fraction": fraction, "range_ms": [low, high]})
            print(f"{device} T={target} ms: measured {result['measured_ms']} ms, accuracy {result['accuracy']:.3f}",
                  file=sys.stderr)
            (out / "targets.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "targets.png")
    print("| device | target (ms) | table estimate (ms) | measured (ms) | measured / target | closed-loop measurements |"
          " accuracy | baseline accuracy | baseline measured (ms) | baseline / target | search + train (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = r.get("baseline") or {}
        base_acc = f"{base['accuracy']:.3f}" if base.get("accuracy") is not None else "none fits"
        base_ms = f"{base['measured_ms']:.3f}" if base.get("measured_ms") is not None else "—"
        base_ratio = f"{base['measured_over_target']:.2f}" if base.get("measured_over_target") is not None else "—"
        loop = len({entry["arch"] for entry in r["closed_loop"]})
        print(f"| {r['device']} | {r['target_ms']:.3f} | {r['estimated_ms']:.3f} | {r['measured_ms']:.3f} | "
              f"{r['measured_over_target']:.2f} | {loop} | {r['accuracy']:.3f} | {base_acc} | {base_ms} | "
              f"{base_ratio} | {r['search_seconds'] + r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
