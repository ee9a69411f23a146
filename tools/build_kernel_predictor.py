"""Build a device's kernel predictor (any ONNX model's latency from its kernels), as docs/predictors_kernel.md reports.

    python tools/build_kernel_predictor.py --device cpu-onnxruntime

The steps live in the package (:mod:`hwnas.latency.predictors.kernel_build`, also ``hwnas predictor build --kind
kernel --device D``, which writes to the user's predictor folder); this wrapper writes the shipped file
``latency_tables/predictors/DEVICE__kernel.json`` of the checkout by default, with the measurements beside it
(resumable: the measurements file is written every few kernels; rerun the same command after a kill).

Prints the number of measurements and the wall time.

    python tools/build_kernel_predictor.py --device cpu-onnxruntime --refit

refits only the network-level correction of the existing predictor from the calibration networks' stored paired
ratios (exported and split again here; nothing is measured, the file's fingerprint and boosters are kept).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hwnas.devices import load_device
from hwnas.errors import HwnasError
from hwnas.latency.predictors.kernel_build import KernelBuildConfig, build_kernel_predictor, refit_correction

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--out", help="predictor path (default: latency_tables/predictors/DEVICE__kernel.json)")
    parser.add_argument("--workdir", default="runs/kernel-build", help="cache of exported networks")
    parser.add_argument("--initial", type=int, help="random neighbours before the first fit")
    parser.add_argument("--rounds", type=int, help="adaptive rounds")
    parser.add_argument("--batch", type=int, help="kernels per adaptive round")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--refit", action="store_true", help="refit the correction from the stored measurements")
    args = parser.parse_args()
    if args.refit:
        out = Path(args.out or ROOT / "latency_tables" / "predictors" / f"{args.device}__kernel.json")
        previous, correction = refit_correction(out, Path(args.workdir))
        print(f"correction {previous} -> {correction}\nwrote {out}")
        return
    device = load_device(args.device)
    out = Path(args.out or ROOT / "latency_tables" / "predictors" / f"{device.name}__kernel.json")
    overrides = {name: value for name, value in (("initial_random", args.initial), ("adaptive_rounds", args.rounds),
                                                 ("adaptive_batch", args.batch)) if value is not None}
    config = KernelBuildConfig(sample=dataclasses.replace(KernelBuildConfig().sample, **overrides))
    build = build_kernel_predictor(device, out, Path(args.workdir), config, progress=not args.quiet)
    print(f"kernels measured: {build.kernels} (seeds {build.seeds}; {build.remeasured} re-measurements of "
          f"noisy kernels in this run), calibration networks: {build.networks} ({build.network_runs} paired "
          f"measurements), paired measurements in total: {build.paired_measurements}")
    print(f"reference quiet latency: {build.reference_ms:.3f} ms; overhead ratio {build.overhead_ratio:.5f}; "
          f"correction {build.correction}")
    print(f"wall time: {build.wall_s:.0f} s (sampling+measuring {build.sampling_s:.0f} s)")
    print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main()
    except HwnasError as exc:
        raise SystemExit(f"build_kernel_predictor: error: {exc}") from None
