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
from hwnas.latency.predictors import load_predictor
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.search.aim import PairedMeter, default_predictor_path
from hwnas.search.decode import fastest_arch, slowest_arch
from hwnas.search.run import SearchConfig, measure_networks
from hwnas.spaces import get_space


def measured_range(device: str, space_name: str, resolution: int, num_classes: int) -> tuple[float, float]:
    """(fastest, slowest) architecture of the space by table latency, measured end to end on the device."""
    space = get_space(space_name, resolution, num_classes)
    estimator = TableEstimator(LatencyTable.load(default_table_path(device, space_name, resolution)), space)
    nets = {"fastest": space.build(fastest_arch(space, estimator)),
            "slowest": space.build(slowest_arch(space, estimator))}
    predictor_path = default_predictor_path(device, space)
    if predictor_path.is_file():  # paired, at the level the searches' predictor measures at
        reference_ms = float(load_predictor(predictor_path).meta.reference_ms)
        with PairedMeter(load_device(device), space, reference_ms) as meter:
            stats = {name: m.to_dict() for name, m in meter.measure(nets, "range").items()}
    else:
        measured, _ = measure_networks(load_device(device), nets, space.input_shape, SearchConfig(), False)
        stats = {name: {"median_ms": m.median_ms} for name, m in measured.items()}
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
        base = [(r["target_ms"], r["baseline"]["measured_ms"]) for r in mine
                if (r.get("baseline") or {}).get("measured_ms")]
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
    parser.add_argument("--table-only", action="store_true", help="reprint the table and plot of OUT/targets.json")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.table_only:
        rows = json.loads((Path(args.out) / "targets.json").read_text())
        plot(rows, Path(args.out) / "targets.png")
        print(markdown(rows))
        return
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
    print(markdown(rows))


def _loop_ms(result: dict[str, Any], arch: dict[str, Any]) -> str:
    """The closed loop's (pre-training) measurement of the chosen architecture."""
    chosen = " ".join(arch["choices"])
    values = [entry["measured_ms"] for entry in result.get("closed_loop") or [] if entry["arch"] == chosen]
    return f"{values[-1]:.3f}" if values else "—"


def _measured(row: dict[str, Any], baseline: bool = False) -> dict[str, Any]:
    """The kept statistics of the searched network (or the baseline) from the run's report."""
    report = Path(row["out"]) / "report.json"
    if not report.is_file():
        return {}
    data = json.loads(report.read_text())
    return ((data.get("baseline") or {}).get("measured") if baseline else data.get("measured")) or {}


def _finals(row: dict[str, Any], baseline: bool = False) -> str:
    """The medians of the final measurement's attempts ("*": noisy), to show how much the machine moved."""
    attempts = [a for a in _measured(row, baseline).get("attempts", []) if a.get("source", "final") == "final"]
    return ", ".join(f"{a['median_ms']:.3f}{'*' if a['noisy'] else ''}" for a in attempts) or "—"


def _noisy(row: dict[str, Any], baseline: bool = False) -> str:
    """" *" when the kept measurement's fastest rounds still disagreed (the protocol's ``noisy`` flag)."""
    return " *" if _measured(row, baseline).get("noisy") else ""


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| device | target T (ms) | latency model | estimate (ms) | loop measurements | closed loop (ms) | "
             "final attempts (ms) | measured (ms) | measured / T | accuracy | baseline closed loop (ms) | "
             "baseline final "
             "attempts (ms) | baseline measured (ms) | baseline / T | baseline accuracy | search + train (s) |",
             "|---" * 16 + "|"]
    for r in rows:
        base = r.get("baseline") or {}
        if base.get("arch"):
            base_cells = (f"{_loop_ms(base, base['arch'])} | {_finals(r, True)} | "
                          f"{base['measured_ms']:.3f}{_noisy(r, True)} | "
                          f"{base['measured_over_target']:.2f} | {base['accuracy']:.3f}")
        else:
            base_cells = "— | — | — | — | none fits"
        model = (r.get("latency_model") or {"kind": "table"})["kind"]
        steps = len({entry["arch"] for entry in r.get("closed_loop") or []})
        lines.append(f"| {r['device']} | {r['target_ms']:.3f} | {model} | {r['estimated_ms']:.3f} | {steps} | "
                     f"{_loop_ms(r, r['arch'])} | "
                     f"{_finals(r)} | {r['measured_ms']:.3f}{_noisy(r)} | {r['measured_over_target']:.2f} | "
                     f"{r['accuracy']:.3f} | "
                     f"{base_cells} | "
                     f"{r['search_seconds'] + r['train_seconds']:.0f} |")
    return "\n".join(lines + ["", "measured: with a calibrated predictor, one paired measurement (ratio to the "
                               "reference network x its quiet latency); with the table alone, the quietest of the "
                               "closed loop's measurement and the final attempts (see docs/search.md, step 5). "
                               "\\* noisy: the measurement's halves (paired) or fastest rounds (table) disagreed."])


if __name__ == "__main__":
    main()
