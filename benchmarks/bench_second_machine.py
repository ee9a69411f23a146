"""The shipped calibrated predictors on this machine, and one rebuilt here, on a held-out set measured here.

    python benchmarks/bench_second_machine.py --device cpu-onnxruntime --resolution 64 --n-held 20 --n-train 30

For each ``--resolution``: measures a held-out set of ``--n-held`` networks here (``--repeat`` re-measured, the
noise floor), evaluates the shipped predictor on it (compared at the held-out set's reference level: ratios),
then measures ``--n-train`` other networks here, fits a calibrated predictor on them with the shipped table (what
``hwnas search`` builds when no predictor fits the machine) and evaluates it on the same held-out set. Prints one
markdown row per predictor: where it was fitted, ±5%, ±10%, Kendall's tau, bias, and the held-out set's own
re-measure agreement beside them. With ``--train-load`` the same training networks are measured once more with a
busy loop pinned to each core (this process pinned to core 0), and a predictor fitted on that set is evaluated on
the same quiet held-out set: the acceptance "a predictor fitted on a loaded machine predicts a quiet held-out set as
well as one fitted quietly". Work files go to ``--workdir`` (a rerun resumes the sets).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from hwnas.devices import load_device
from hwnas.latency.predictors import load_predictor
from hwnas.latency.predictors.fit import evaluate_predictor, fit_predictor
from hwnas.latency.predictors.locate import find_predictor
from hwnas.runtimes.fingerprint import machine_fingerprint
from hwnas.spaces import get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing_common import busy_loops, measured_set, pin_to  # noqa: E402


def _row(device: str, resolution: int, where: str, figures: dict[str, Any], extra: str) -> str:
    noise = (figures.get("noise") or {}).get("paired") or {}
    own = f"{noise.get('within5_pct', float('nan')):.0f}% / {noise.get('within10_pct', float('nan')):.0f}%"
    return (f"| {device} | {resolution} | {where} | {figures['n']} | {figures['within5_pct']:.0f}% | "
            f"{figures['within10_pct']:.0f}% | {figures['kendall']:.3f} | {figures['bias_pct']:+.1f}% | {own} | "
            f"{extra} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, nargs="+", default=[64])
    parser.add_argument("--n-held", type=int, default=20)
    parser.add_argument("--n-train", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hwnas-bench-second"))
    parser.add_argument("--train-load", action="store_true", help="also fit on the training networks measured loaded")
    args = parser.parse_args()
    if args.train_load:
        pin_to(0)
    device = load_device(args.device)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"this machine: {machine_fingerprint().get('cpu_model')}, caches {machine_fingerprint().get('caches')}")
    print("| device | res | predictor | held-out n | ±5% | ±10% | τ | bias | held-out set vs itself ±5% / ±10% "
          "| notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for resolution in args.resolution:
        space = get_space(args.space, resolution)
        tag = f"{device.name}-{space.name}{resolution}"
        held = measured_set(device, space, args.workdir / f"{tag}-held.json", args.n_held, 101, args.repeat)
        shipped = find_predictor(device.name, "calibrated", space)
        if shipped is not None:
            predictor = load_predictor(shipped)
            cpu = predictor.meta.fingerprint.get("machine", {}).get("cpu_model", "?")
            figures = evaluate_predictor(predictor, sets=[held.path])
            turns = predictor.meta.turns or "cold"
            print(_row(device.name, resolution, f"shipped ({cpu})", figures, f"turns: {turns}"))
        for name, cores in (("here", []), ("here-loaded", [0, 1]))[:2 if args.train_load else 1]:
            start = time.perf_counter()
            with busy_loops(cores):
                train = measured_set(device, space, args.workdir / f"{tag}-train-{name}.json", args.n_train, 102, 0)
            out = args.workdir / f"{tag}-{name}.json"
            fit_predictor(space=space, out=out, sets=[train.path])
            built_s = time.perf_counter() - start
            figures = evaluate_predictor(load_predictor(out), sets=[held.path])
            where = "rebuilt here" + (", measured beside two busy loops" if cores else "")
            print(_row(device.name, resolution, where, figures, f"{args.n_train} networks, {built_s:.0f} s"),
                  flush=True)


if __name__ == "__main__":
    main()
