"""How much one loaded copy of the reference network shifts every ratio measured against it, and what a pool
of copies (:class:`hwnas.latency.reference.ReferencePool`) leaves of that.

    python benchmarks/bench_reference_instances.py --device cpu-litert --resolution 224

Loads ``--copies`` single copies of the space's reference and ``--copies`` pools of ``--pool`` copies each, then
measures one fixed network of the space against every one of them (paired protocol), ``--rounds`` times in
interleaved order. Prints the ratio matrix, each reference's mean ratio, the spread between references (max/min of
the means) and the round-to-round deviation within one reference: a spread far above the round-to-round
deviation is an offset that belongs to the loaded copy, not to the moment.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from hwnas.devices import load_device
from hwnas.latency.profile import artifacts_dir
from hwnas.latency.reference import prepare_reference, reference_module
from hwnas.runtimes import get_runtime
from hwnas.runtimes.paired import PairedProtocol, measure_paired
from hwnas.spaces import get_space


def _report(name: str, ratios: np.ndarray) -> None:
    means = ratios.mean(axis=0)
    print(f"{name}: ratios (rows: rounds, columns: references)")
    print(np.array2string(ratios, precision=3))
    print(f"  mean per reference {np.array2string(means, precision=3)}; spread between references "
          f"{100 * (means.max() / means.min() - 1):.1f}%; round-to-round sd within one reference "
          f"{100 * float(np.mean(ratios.std(axis=0) / means)):.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu-litert")
    parser.add_argument("--space", default="proxyless")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--pool", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = load_device(args.device)
    space = get_space(args.space, args.resolution)
    runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
    module, shape, _ = reference_module(space)
    singles = [prepare_reference(runtime, module, shape, instances=1) for _ in range(args.copies)]
    pools = [prepare_reference(runtime, module, shape, instances=args.pool) for _ in range(args.copies)]
    torch.manual_seed(1)
    network = runtime.prepare(space.build(space.random_arch(random.Random(5))).eval(), shape, "bench-network")
    protocol = PairedProtocol()
    single, pooled = [], []
    for _ in range(args.rounds):
        single.append([measure_paired({"x": network}, ref, protocol)["x"].ratio for ref in singles])
        pooled.append([measure_paired({"x": network}, ref, protocol)["x"].ratio for ref in pools])
    print(f"{device.name} {space.name}@{space.resolution}: one network against {args.copies} references each")
    _report("single copies", np.array(single))
    _report(f"pools of {args.pool} copies", np.array(pooled))
    for model in [*singles, *pools, network]:
        model.close()


if __name__ == "__main__":
    main()
