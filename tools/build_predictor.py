"""Build and check a device's calibrated predictor for one space and resolution, as the docs report it.

    python tools/build_predictor.py --device cpu-onnxruntime --space proxyless --resolution 224

Steps (each resumable: rerun the same command after a kill and only what is missing is measured):
1. the device's latency table (``hwnas profile``), when it does not exist yet;
2. a training set of ``--n-train`` networks (seed 1) with ``--repeat-train`` re-measured, paired with the reference;
3. the calibrated predictor fitted on it (cross-validated additive vs additive+XGBoost);
4. a held-out set of ``--n-test`` networks (seed 2, none of them used in fitting) with ``--repeat-test``
   re-measured, and the predictor's and the table sum's figures on it against the set's own noise floor.

``--refit`` skips steps 1, 2 and 4's measuring: it refits the predictor on the existing sets (after a change of
features or model) and evaluates it on the existing held-out set.

Prints the build cost (measurements and wall time of steps 1-3) and the figures; writes the sets under
``latency_tables/sets/``, the predictor under ``latency_tables/predictors/`` and a plot under ``docs/img/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hwnas.devices import load_device
from hwnas.latency.estimator import TableEstimator
from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.fit import evaluate_predictor, fit_predictor
from hwnas.latency.profile import ProfileConfig, profile_device
from hwnas.latency.sets import MeasureConfig, MeasurementSet, measure_set
from hwnas.latency.table import LatencyTable, default_table_path
from hwnas.spaces import SearchSpace, get_space

ROOT = Path(__file__).resolve().parents[1]


def _lacks_ops(path: Path, space: SearchSpace) -> bool:
    entries = LatencyTable.load(path).entries
    return any(spec.key() not in entries for spec in space.all_specs())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True)
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--repeat-train", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--repeat-test", type=int, default=20)
    parser.add_argument("--residual", default="auto", choices=["auto", "linear", "xgb"])
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--refit", action="store_true", help="measure nothing: refit on the existing sets")
    args = parser.parse_args()

    device = load_device(args.device)
    space = get_space(args.space, args.resolution, args.num_classes)
    stem = f"{device.name}__{space.name}__{space.resolution}"
    sets_dir, predictors_dir = ROOT / "latency_tables" / "sets", ROOT / "latency_tables" / "predictors"
    table_path = default_table_path(device.name, space.name, space.resolution)
    train_path, test_path = sets_dir / f"{stem}__train.json", sets_dir / f"{stem}__test.json"
    out = predictors_dir / f"{stem}__calibrated.json"
    if args.refit:
        _refit(space, table_path, train_path, test_path, out, args.residual)
        return
    start = time.perf_counter()
    if not table_path.is_file() or _lacks_ops(table_path, space):  # none yet, or a profile that was interrupted
        profile_device(device, space, table_path, ProfileConfig(progress=not args.quiet))
    table = LatencyTable.load(table_path)
    proxy = TableEstimator(table, space)
    train = measure_set(device, space, train_path, MeasureConfig(n=args.n_train, seed=1, repeat=args.repeat_train,
                                                                 progress=not args.quiet), proxy)
    fit = fit_predictor(space=space, out=out, table=table_path, sets=[train_path], residual=args.residual)
    build_s = time.perf_counter() - start
    test = measure_set(device, space, test_path, MeasureConfig(n=args.n_test, seed=2, repeat=args.repeat_test,
                                                               progress=not args.quiet), proxy)
    train_set, test_set = MeasurementSet.load(train_path), MeasurementSet.load(test_path)
    overlap = {r.choices for r in train_set.rows.values()} & {r.choices for r in test_set.rows.values()}
    figures = evaluate_predictor(load_predictor(out), sets=[test_path],
                                 plot=ROOT / "docs" / "img" / f"predictor_{stem}.png")
    report = {"device": device.name, "space": space.name, "resolution": space.resolution,
              "build": {"seconds": round(build_s, 1), "networks_measured": train.rows + len(train_set.repeats),
                        "seconds_measuring_train_set": train.seconds, "note": "table profiling included if it ran"},
              "train": {"n": train.rows, "reference_ms": train.reference_ms, "noise": train.noise,
                        "cv": fit["training"].get("cv"), "selected": fit["training"].get("selected")},
              "test": {"n": test.rows, "reference_ms": test.reference_ms, "overlap_with_train": len(overlap),
                       "predictor": {k: v for k, v in figures.items() if k not in ("table", "noise", "plot")},
                       "table": figures.get("table"), "noise": figures.get("noise")}}
    print(json.dumps(report, indent=1))


def _refit(space, table_path: Path, train_path: Path, test_path: Path, out: Path, residual: str) -> None:
    for path in (table_path, train_path, test_path):
        if not path.is_file():
            raise SystemExit(f"--refit: {path} does not exist; run without --refit to measure it")
    fit = fit_predictor(space=space, out=out, table=table_path, sets=[train_path], residual=residual)
    plot = ROOT / "docs" / "img" / f"predictor_{out.name.removesuffix('__calibrated.json')}.png"
    figures = evaluate_predictor(load_predictor(out), sets=[test_path], plot=plot)
    print(json.dumps({"out": str(out.relative_to(ROOT)), "selected": fit["training"].get("selected"),
                      "correction": fit["training"].get("correction"), "cv": fit["training"].get("cv"),
                      "test": {k: v for k, v in figures.items()
                               if k in ("n", "within5_pct", "within10_pct", "kendall", "mape")},
                      "table_scaled": figures.get("table_scaled")}, indent=1))


if __name__ == "__main__":
    main()
