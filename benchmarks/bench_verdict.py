"""A search's verdict against quiet, independent measurements of its exported network.

    python benchmarks/bench_verdict.py --resolution 32                 # search quietly, then check
    python benchmarks/bench_verdict.py --resolution 64 --load          # search with two busy loops, then check
    python benchmarks/bench_verdict.py --resolution 64 --load --old-timing   # the same without the new timing
    python benchmarks/bench_verdict.py --run runs/s1                   # check an existing run folder

Runs ``hwnas search`` (``--load``: a busy loop pinned to each core for the whole search, the search pinned to core
0), then, quiet, exports the searched model to ONNX (``hwnas export --format onnx``) and measures the file:

* ``hwnas bench`` of the exported file (the warm steady state): the verdict's milliseconds against it (the
  acceptance, quiet: within 3%);
* a paired measurement of the exported file against the space's reference (the default paired protocol): its ratio
  against the verdict's ratio (the acceptance under load: within +-5%); both are multiples of the same reference, so
  this comparison carries no level.

Prints the figures and the verdict's noisy flag and reason.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from hwnas.devices import load_device
from hwnas.devices import device_protocol
from hwnas.latency.bench import bench
from hwnas.runtimes.protocol import measure
from hwnas.latency.reference import prepare_reference, reference_module
from hwnas.runtimes import get_runtime
from hwnas.runtimes.paired import PairedProtocol, measure_paired
from hwnas.spaces import get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing_common import busy_loops  # noqa: E402

HWNAS = str(Path(sys.executable).with_name("hwnas"))
OLD_TIMING = ("import sys\n"
              "from hwnas.runtimes import base, interruptions\n"
              "interruptions.thread_waits = base.thread_waits = "
              "lambda: interruptions.NoWaits('switched off by the benchmark')\n"
              "from hwnas.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
"""``hwnas search`` without the new timing (``--old-timing``): no interruption detection (every run counts as
clean) and fixed pairs (``precision`` 0), as bench_timing_load.py's ``loaded-old``; warm turns as the default."""


def search(args: argparse.Namespace, out: Path) -> None:
    """``hwnas search`` into ``out``, pinned to core 0 beside busy loops on both cores with ``--load``."""
    hwnas = [sys.executable, "-c", OLD_TIMING] if args.old_timing else [HWNAS]
    command = [*hwnas, "search", "--device", args.device, "--resolution", str(args.resolution), "--out", str(out),
               "--quiet", "--json", *args.search_args]
    if args.old_timing:
        command += ["--set", 'paired={"precision": 0}']
    if args.load:
        command = ["taskset", "-c", "0", *command]
    with busy_loops([0, 1] if args.load else []):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def check(run: Path, device_name: str) -> None:
    report = json.loads((run / "report.json").read_text())
    verdict = report["measured"]
    device = load_device(device_name)
    arch = json.loads((run / "arch.json").read_text())
    space = get_space(arch["space"], arch["resolution"], arch.get("num_classes"))
    with tempfile.TemporaryDirectory(prefix="hwnas-verdict-") as tmp:
        subprocess.run([HWNAS, "export", str(run), "--format", "onnx", "--out", tmp, "--json"], check=True,
                       stdout=subprocess.DEVNULL)
        onnx = next(Path(tmp).glob("*.onnx"))
        benched = bench(device, str(onnx))
        runtime = get_runtime(device.backend, device.runtime_config(), Path(tmp) / "rt")
        module, shape, _ = reference_module(space)
        reference = prepare_reference(runtime, module, shape)
        model = runtime.prepare_file(onnx)
        try:
            paired = measure_paired({"net": model}, reference, PairedProtocol())["net"]
            both = measure({"net": model, "ref": reference}, device_protocol(device))  # bench's protocol, interleaved
        finally:
            model.close()
            reference.close()
    print(f"{run}: {space.name}@{space.resolution}/{space.num_classes}, target {report['target_ms']:.4g} ms")
    print(f"  verdict {verdict['median_ms']:.4g} ms (ratio {verdict.get('ratio', float('nan')):.4f} x "
          f"{verdict.get('reference_ms', float('nan')):.4g} ms), noisy {verdict['noisy']}"
          + (f": {verdict['paired'].get('noisy_reason')}" if verdict.get("paired", {}).get("noisy_reason") else ""))
    print(f"  hwnas bench of the exported file: {benched.median_ms:.4g} ms; verdict / bench "
          f"{verdict['median_ms'] / benched.median_ms:.3f}")
    bench_ratio = both["net"].median_ms / both["ref"].median_ms
    if "ratio" in verdict:
        print(f"  bench's protocol, file and reference interleaved: {both['net'].median_ms:.4g} / "
              f"{both['ref'].median_ms:.4g} ms = {bench_ratio:.4f}; verdict ratio / bench ratio "
              f"{verdict['ratio'] / bench_ratio:.3f} (the scale, the machine's drift cancelled)")
        print(f"  quiet paired ratio of the exported file {paired.ratio:.4f} (ci {paired.ci_pct}%); verdict ratio / "
              f"quiet ratio {verdict['ratio'] / paired.ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-onnxruntime")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--load", action="store_true", help="search beside a busy loop on each core")
    parser.add_argument("--run", type=Path, help="check this run folder instead of searching")
    parser.add_argument("--old-timing", action="store_true", help="search without the new timing: no interruption "
                        "detection, fixed pairs (the comparison the acceptance under load asks for)")
    parser.add_argument("--out", type=Path, default=None, help="run folder of the search (default: a temp folder)")
    parser.add_argument("search_args", nargs="*", help="more hwnas search flags, after --")
    args = parser.parse_args()
    run = args.run
    if run is None:
        run = args.out or Path(tempfile.mkdtemp(prefix="hwnas-verdict-run-"))
        search(args, run)
    check(run, args.device)


if __name__ == "__main__":
    main()
