"""How much a measurement on an idle GPU reads too slow, and how long a priming load fixes it.

A GPU drops to a fraction of its clock when idle and climbs back only under sustained load. A measurement that
starts right after an idle spell (after CPU-side training, or the pause between final attempts of a search) times
the first rounds at a low clock. This tool measures one network with the device's protocol after an idle pause
of P seconds with a priming load of S seconds (``Protocol.prime_s``), for every (P, S), interleaved and repeated,
and prints each median next to the one with no pause and the longest priming, with the SM clock read through NVML
(when nvidia-ml-py is installed) before and after.

    python -m benchmarks.bench_gpu_warmup --device cuda-torch --pauses 0,10 --primes 0,0.5,2 --repeats 2

Run as a module from the repository root, it needs no install (GPU images often ship torch but cannot reach PyPI):
the root is on ``sys.path`` and ``hwnas`` imports from the checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hwnas.devices import load_device
from hwnas.devices import device_protocol
from hwnas.runtimes import get_runtime
from hwnas.runtimes.protocol import measure
from hwnas.spaces import get_space


def sm_clock_mhz() -> int | None:
    """The first GPU's current SM clock, or None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetClockInfo(pynvml.nvmlDeviceGetHandleByIndex(0), pynvml.NVML_CLOCK_SM))
    except Exception:  # NVML is optional: no clocks, the medians still tell
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda-torch")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random architecture measured")
    parser.add_argument("--pauses", default="0,10", help="idle seconds before a measurement")
    parser.add_argument("--primes", default="0,0.5,2", help="prime_s values (seconds of untimed priming load)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    pauses = [float(v) for v in args.pauses.split(",")]
    primes = [float(v) for v in args.primes.split(",")]
    device = load_device(args.device)
    protocol = device_protocol(device)
    space = get_space(args.space, args.resolution)
    arch = space.random_arch(random.Random(args.seed))
    print(f"device {device.name}, {space.name}@{space.resolution}, protocol warmup_s {protocol.warmup_s}, "
          f"rounds {protocol.rounds}; pause s, prime s, median ms, SM MHz before -> after")
    cells = [(p, s) for p in pauses for s in primes]
    medians: dict[tuple[float, float], list[float]] = {cell: [] for cell in cells}
    with tempfile.TemporaryDirectory(prefix="hwnas-gpu-warmup-") as tmp:
        runtime = get_runtime(device.backend, device.runtime_config(), Path(tmp))
        prepared = runtime.prepare(space.build(arch).eval(), space.input_shape, "net")
        try:
            for repeat in range(args.repeats):
                order = cells[:] if repeat % 2 == 0 else cells[::-1]
                for pause, prime in order:
                    time.sleep(pause)
                    before = sm_clock_mhz()
                    stats = measure({"net": prepared}, dataclasses.replace(protocol, prime_s=prime))["net"]
                    after = sm_clock_mhz()
                    medians[(pause, prime)].append(stats.median_ms)
                    print(f"{pause:5.1f} {prime:4.1f} {stats.median_ms:8.4f} {before} -> {after}"
                          f"{'  noisy' if stats.noisy else ''}", flush=True)
        finally:
            prepared.close()
    reference = statistics.median(medians[(min(pauses), max(primes))])
    print(f"\nmedian over repeats, / reference (pause {min(pauses):g} s, prime {max(primes):g} s = "
          f"{reference:.4f} ms)")
    for pause, prime in cells:
        value = statistics.median(medians[(pause, prime)])
        print(f"pause {pause:5.1f} s  prime {prime:4.1f} s  {value:8.4f} ms  {value / reference:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
