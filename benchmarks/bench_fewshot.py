"""Few-shot latency transfer, leave-one-device-out: how well k networks of a new device predict it.

For every device of a measurements CSV in turn: the other devices are the prior (per-layer tables fitted on the
adaptation pool), k networks of the held-out device are drawn at random from the pool, the transfer predictor is
fitted on them, and it is scored on test networks that no step ever saw (neither prior tables nor adaptation).
Baselines: a per-layer ridge fit on the k networks alone (no prior) and a plain non-negative least squares mix of
the prior tables (no shrinkage). Prints the table and the curve, saves a plot of Spearman against k.

    python benchmarks/bench_fewshot.py --csv /work/shared/data/fbnet_latency/fbnet_latency.csv \
        --out docs/img/fewshot_fbnet.png
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only contend on a shared machine
os.environ.setdefault("OMP_NUM_THREADS", "1")
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.latency.metrics import agreement
from hwnas.latency.predictors.csvdata import read_prior
from hwnas.latency.predictors.transfer import (RESIDUAL_STRENGTHS, LayerTable, _cv_residual, _folds, _onehot, _ridge,
                                               choice_indices, fit_prior_tables, fit_transfer_tables,
                                               nnls_mix)
from hwnas.spaces import get_space


@dataclass
class BenchConfig:
    """Defaults of the benchmark (command-line flags override them)."""

    space: str = "fbnet-cifar100"
    test_networks: int = 1000
    ks: tuple[int, ...] = (10, 20, 50, 100, 500, 4000)
    draws: dict[int, int] = field(default_factory=lambda: {10: 10, 20: 10, 50: 10, 100: 5, 500: 3})
    seed: int = 0


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall, shares within +-5% / +-10% (%) and MAPE (%): hwnas's one vocabulary (``agreement``)."""
    return agreement(predicted, measured)


def alone(onehot_k: np.ndarray, latencies: np.ndarray, onehot_test: np.ndarray, seed: int) -> np.ndarray:
    """Baseline without prior: per-layer ridge on the k networks, strength chosen by cross-validation among the
    finite ones (a constant prediction would have no rank)."""
    strength, _ = _cv_residual(onehot_k, latencies, _folds(len(latencies), seed))
    weights, intercept = _ridge(onehot_k, latencies, RESIDUAL_STRENGTHS[-2] if math.isinf(strength) else strength)
    return intercept + onehot_test @ weights


def plain_mix(features_k: np.ndarray, latencies: np.ndarray, features_test: np.ndarray) -> np.ndarray:
    """Baseline: plain non-negative least squares mix of the prior tables' predictions plus an offset."""
    weights, intercept = nnls_mix(features_k, latencies)
    return intercept + features_test @ weights


def main() -> None:
    config = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="measurements CSV (arch, arch_id, one column per device)")
    parser.add_argument("--out", default="", help="PNG of Spearman against k per device")
    parser.add_argument("--seed", type=int, default=config.seed)
    parser.add_argument("--devices", default="", help="comma-separated subset of held-out devices (default: all)")
    args = parser.parse_args()

    started = time.time()
    space = get_space(config.space)
    archs, by_device = read_prior(args.csv, space)
    devices = list(by_device)
    targets = args.devices.split(",") if args.devices else devices
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(archs))
    test, pool = order[:config.test_networks], order[config.test_networks:]
    index = choice_indices(space, archs)
    onehot = _onehot(space, index)
    tables: dict[str, LayerTable] = fit_prior_tables(space, [archs[i] for i in pool],
                                                     {d: lat[pool] for d, lat in by_device.items()})
    predictions = {d: tables[d].predict(index) for d in devices}
    print(f"{len(archs)} networks, {len(devices)} devices; test {len(test)} networks, adaptation pool {len(pool)}; "
          f"prior tables fitted on the pool")

    results: dict[str, dict[str, dict[int, list[dict[str, float]]]]] = {}
    for target in targets:
        prior_devices = [d for d in devices if d != target]
        prior = {d: tables[d] for d in prior_devices}
        spreads = np.array([max(tables[d].spread_ms(), 1e-12) for d in sorted(prior_devices)])
        features = np.stack([predictions[d] for d in sorted(prior_devices)], axis=1) / spreads
        y = by_device[target]
        per_method: dict[str, dict[int, list[dict[str, float]]]] = {"transfer": {}, "alone": {}, "plain-mix": {}}
        for k in config.ks:
            draws = config.draws.get(k, 1) if k < len(pool) else 1
            for draw in range(draws):
                chosen = pool if k >= len(pool) else rng.choice(pool, size=k, replace=False)
                table, _ = fit_transfer_tables(space, prior, [archs[i] for i in chosen], y[chosen], seed=draw)
                per_method["transfer"].setdefault(k, []).append(scores(table.predict(index[test]), y[test]))
                per_method["alone"].setdefault(k, []).append(
                    scores(alone(onehot[chosen], y[chosen], onehot[test], draw), y[test]))
                per_method["plain-mix"].setdefault(k, []).append(
                    scores(plain_mix(features[chosen], y[chosen], features[test]), y[test]))
        results[target] = per_method
        print(f"  {target}: done ({time.time() - started:.0f} s)", flush=True)

    _print_tables(results, config.ks)
    print(f"\ntotal {time.time() - started:.0f} s")
    if args.out:
        _plot(results, config.ks, Path(args.out))
        print(f"plot: {args.out}")


def _mean(draws: list[dict[str, float]], key: str) -> float:
    return float(np.mean([d[key] for d in draws]))


def _worst(draws: list[dict[str, float]], key: str) -> float:
    values = [d[key] for d in draws]
    return float(max(values) if key == "mape" else min(values))


def _print_tables(results: dict, ks: tuple[int, ...]) -> None:
    small, large = ks[0], ks[-1]
    print(f"\nTransfer predictor, k={small} (mean / worst over draws) and k={large} (all of the pool)")
    print(f"{'device':15s} {'Spearman':>13s} {'Kendall':>13s} {'+-5%':>11s} {'+-10%':>11s} {'MAPE %':>11s}"
          f" | {'Sp':>6s} {'Kd':>6s} {'5%':>5s} {'10%':>5s} {'MAPE':>5s} | {'gap':>6s}")
    rows = []
    for device, methods in results.items():
        few, full = methods["transfer"][small], methods["transfer"][large]
        cells = []
        for key, pct in (("spearman", False), ("kendall", False), ("within5_pct", True), ("within10_pct", True),
                         ("mape", True)):
            fmt = "{:5.1f}/{:5.1f}" if pct else "{:.3f}/{:.3f}"
            cells.append(fmt.format(_mean(few, key), _worst(few, key)))
        ref = full[0]
        gap = ref["spearman"] - _mean(few, "spearman")
        rows.append((_mean(few, "spearman"), _worst(few, "spearman"), _mean(few, "within10_pct"), ref["spearman"],
                     gap))
        print(f"{device:15s} {cells[0]:>13s} {cells[1]:>13s} {cells[2]:>11s} {cells[3]:>11s} {cells[4]:>11s}"
              f" | {ref['spearman']:.3f} {ref['kendall']:.3f} {ref['within5_pct']:5.1f} "
              f"{ref['within10_pct']:5.1f} {ref['mape']:5.2f} | {gap:+.3f}")
    arr = np.array(rows)
    print(f"{'mean':15s} Spearman k={small}: {arr[:, 0].mean():.3f} (worst draw mean {arr[:, 1].mean():.3f}); "
          f"+-10% {arr[:, 2].mean():.1f}%; k={large}: {arr[:, 3].mean():.3f}; largest gap {arr[:, 4].max():+.3f}")

    print("\nCurve: mean Spearman over devices (mean over draws); worst device in brackets")
    print(f"{'method':10s} " + " ".join(f"{'k=' + str(k):>16s}" for k in ks))
    for method in ("transfer", "plain-mix", "alone"):
        cells = []
        for k in ks:
            per_device = {d: _mean(m[method][k], "spearman") for d, m in results.items()}
            worst = min(per_device, key=per_device.get)
            cells.append(f"{np.mean(list(per_device.values())):.3f} ({per_device[worst]:.2f})")
        print(f"{method:10s} " + " ".join(f"{c:>16s}" for c in cells))
    print(f"{'+-10%':10s} " + " ".join(
        f"{np.mean([_mean(m['transfer'][k], 'within10_pct') for m in results.values()]):15.1f}%" for k in ks))

    print("\nCurve per device (transfer, mean Spearman over draws)")
    print(f"{'device':15s} " + " ".join(f"{k:>6d}" for k in ks))
    for device, methods in results.items():
        print(f"{device:15s} " + " ".join(f"{_mean(methods['transfer'][k], 'spearman'):6.3f}" for k in ks))


def _plot(results: dict, ks: tuple[int, ...], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for device, methods in results.items():
        ax.plot(ks, [_mean(methods["transfer"][k], "spearman") for k in ks], marker="o", label=device)
    mean_alone = [np.mean([_mean(m["alone"][k], "spearman") for m in results.values()]) for k in ks]
    mean_mix = [np.mean([_mean(m["plain-mix"][k], "spearman") for m in results.values()]) for k in ks]
    ax.plot(ks, mean_mix, "k--", label="mean, plain NNLS mix")
    ax.plot(ks, mean_alone, "k:", label="mean, per-layer fit alone")
    ax.set_xscale("log")
    ax.set_xlabel("networks of the held-out device (k)")
    ax.set_ylabel("Spearman on 1,000 test networks")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.set_title("Few-shot latency transfer, leave-one-device-out (FBNet CIFAR-100)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
