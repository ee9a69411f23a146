"""The shipped calibrated predictors on this machine, and one rebuilt here, on a held-out set measured here.

    python benchmarks/bench_second_machine.py --device cpu-onnxruntime --resolution 64 --n-held 20 --n-train 30

For each ``--resolution``: measures a held-out set of ``--n-held`` networks here (``--repeat`` re-measured, the
noise floor), evaluates the shipped predictor on it (compared at the held-out set's reference level: ratios),
then measures ``--n-train`` other networks here, fits a calibrated predictor on them with the shipped table (what
``hwnas search`` builds when no predictor fits the machine) and evaluates it on the same held-out set. Prints one
markdown row per predictor: where it was fitted, ±5%, ±10%, Kendall's tau, bias, and the held-out set's own
re-measure agreement beside them. Work files go to ``--workdir`` (a rerun resumes the sets).
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
from timing_common import measured_set  # noqa: E402


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
    args = parser.parse_args()
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
        start = time.perf_counter()
        train = measured_set(device, space, args.workdir / f"{tag}-train.json", args.n_train, 102, 0)
        out = args.workdir / f"{tag}-here.json"
        fit_predictor(space=space, out=out, sets=[train.path])
        built_s = time.perf_counter() - start
        figures = evaluate_predictor(load_predictor(out), sets=[held.path])
        print(_row(device.name, resolution, "rebuilt here", figures, f"{args.n_train} networks, {built_s:.0f} s"),
              flush=True)


if __name__ == "__main__":
    main()
