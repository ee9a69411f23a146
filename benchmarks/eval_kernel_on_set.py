"""The kernel predictor on a measurement set's networks: networks it never saw, of a family outside its zoo.

    python benchmarks/eval_kernel_on_set.py [--predictor latency_tables/predictors/cpu-onnxruntime__kernel.json]
        [--set latency_tables/sets/cpu-onnxruntime__proxyless__224__test.json]

Each architecture is exported to ONNX, split into kernels and predicted; the set's paired latencies are the truth.
The two sit at different reference levels (the kernel predictor's generic reference on the day it was built, the
set's own reference on its day), so beside the raw figures the predictions are also shown after one scale factor
(the median measured / predicted): ranking and shape are what carry across days on a drifting machine.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hwnas.latency.predictors import load_predictor
from hwnas.latency.metrics import agreement
from hwnas.latency.sets import MeasurementSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictor", default="latency_tables/predictors/cpu-onnxruntime__kernel.json")
    parser.add_argument("--set", default="latency_tables/sets/cpu-onnxruntime__proxyless__224__test.json")
    args = parser.parse_args()
    predictor, mset = load_predictor(args.predictor), MeasurementSet.load(args.set)
    archs, measured = mset.archs(), mset.latencies_ms()
    predicted = np.array([predictor.predict_arch(a)[0] for a in archs])
    scale = float(np.median(measured / predicted))
    print(json.dumps({"n": len(archs), "raw": agreement(predicted, measured), "scale": scale,
                      "scaled": agreement(predicted * scale, measured), "noise": (mset.noise() or {}).get("paired")},
                     indent=1))


if __name__ == "__main__":
    main()
