"""``hwnas predictor build``: a device's kernel predictor measured on this machine, without a source checkout."""

from __future__ import annotations

import argparse
from typing import Any

from hwnas.cli.common import progress
from hwnas.errors import HwnasError
from hwnas.outputs import check_out_file


def cmd_predictor_build(args: argparse.Namespace) -> dict[str, Any]:
    """Check the input (kind, device, its splitter, the output files), then measure, fit and write."""
    from hwnas.devices import load_device
    from hwnas.latency.predictors.kernel_build import (KernelBuildConfig, build_kernel_predictor,
                                                       check_kernel_device, measurements_path)
    from hwnas.latency.predictors.locate import user_predictor_path
    from hwnas.locations import cache_dir

    if args.kind != "kernel":
        raise HwnasError(f"--kind {args.kind}: `predictor build` builds kernel predictors (measured kernels); a "
                         f"{args.kind} predictor is fitted on measured networks by `hwnas predictor fit`")
    device = load_device(args.device)
    check_kernel_device(device)
    out = check_out_file(args.out or user_predictor_path(device.name, "kernel"))
    check_out_file(measurements_path(out), "--out (its measurements file)")
    config = KernelBuildConfig.quick() if args.quick else KernelBuildConfig()
    workdir = cache_dir() / "kernel-build" / device.name
    build = build_kernel_predictor(device, out, workdir, config, progress=progress(args))
    model = {"litert": "MODEL.tflite", "torch": "MODEL.onnx (or a module, in Python)"}.get(device.backend, "MODEL.onnx")
    found = "" if args.out else f"; `hwnas predict --device {device.name} {model}` finds it"
    text = "\n".join([
        f"predictor     {out} (kernel, {device.name}{', quick' if args.quick else ''}{found})",
        f"measurements  {build.measurements}: {build.kernels} kernels ({build.measured_now} measured now, "
        f"{build.reused} reused; {build.remeasured} re-measurements of noisy ones), {build.networks} calibration "
        f"networks ({build.network_runs} runs, {build.network_runs_now} now); {build.paired_measurements} paired "
        "measurements in all",
        f"wall time     {build.wall_s:.0f} s (kernels {build.sampling_s:.0f} s)",
    ])
    return {**build.to_dict(), "quick": bool(args.quick), "_text": text}
