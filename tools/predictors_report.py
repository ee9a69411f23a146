"""Print the Markdown table of docs/predictors.md: every shipped calibrated predictor on its held-out set.

    python tools/predictors_report.py [--plots docs/img]

For each ``latency_tables/predictors/DEVICE__SPACE__RES__calibrated.json`` with a held-out set
``latency_tables/sets/DEVICE__SPACE__RES__test.json`` (made by ``tools/build_predictor.py``): the predictor's and the
table sum's share within +-5% / +-10% and Kendall tau on the held-out networks, the held-out set's own
re-measurement figures (its noise floor), and the cost to build (networks measured for the training set and the
wall time between its first and last save).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.fit import evaluate_predictor
from hwnas.latency.sets import MeasurementSet

ROOT = Path(__file__).resolve().parents[1]


def _pct(value: float) -> str:
    """A share in percent (the vocabulary of :func:`~hwnas.latency.metrics.agreement`), rounded."""
    return f"{value:.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plots", help="folder for predicted-vs-measured plots (default: none)")
    args = parser.parse_args()
    print("| device | space | res | held-out n | predictor ±5% | ±10% | τ | table sum ±5% | ±10% | τ | "
          "table × one scale ±5% | "
          "±10% | set vs itself ±5% | ±10% | τ | model | train networks | build wall time |")
    print("|---" * 18 + "|")
    for path in sorted((ROOT / "latency_tables" / "predictors").glob("*__calibrated.json")):
        stem = path.name.removesuffix("__calibrated.json")
        test, train = (ROOT / "latency_tables" / "sets" / f"{stem}__{part}.json" for part in ("test", "train"))
        if not test.is_file():
            continue
        predictor = load_predictor(path)
        plot = Path(args.plots) / f"predictor_{stem}.png" if args.plots else None
        figures = evaluate_predictor(predictor, sets=[test], plot=plot)
        table, noise = figures.get("table") or {}, (figures.get("noise") or {}).get("paired") or {}
        scaled = figures.get("table_scaled") or {}
        device, space, resolution = stem.split("__")
        cost = ""
        if train.is_file():
            mset = MeasurementSet.load(train)
            seconds = (datetime.fromisoformat(mset.updated) - datetime.fromisoformat(mset.created)).total_seconds()
            cost = f"{len(mset.rows) + len(mset.repeats)} | {seconds / 60:.1f} min"
        nan = float("nan")
        print(f"| {device} | {space} | {resolution} | {figures['n']} | {_pct(figures['within5_pct'])} | "
              f"{_pct(figures['within10_pct'])} | {figures['kendall']:.3f} | {_pct(table.get('within5_pct', nan))} | "
              f"{_pct(table.get('within10_pct', nan))} | {table.get('kendall', nan):.3f} | "
              f"{_pct(scaled.get('within5_pct', nan))} | {_pct(scaled.get('within10_pct', nan))} | "
              f"{_pct(noise.get('within5_pct', nan))} | {_pct(noise.get('within10_pct', nan))} | "
              f"{noise.get('kendall', nan):.3f} | {predictor.selected} | {cost} |")


if __name__ == "__main__":
    main()
