"""Learned latency predictors: one file format, one registry of kinds, one estimator interface.

Kinds: ``calibrated`` (a space's table sum plus a learned correction from end-to-end measurement sets),
``transfer`` (few-shot: other devices' measurements as a prior, adapted from a handful of networks of the new
device) and ``kernel`` (any ONNX model: split into the kernels the runtime runs, each predicted by a model
fitted on sampled kernels measured on the device).
"""

from hwnas.latency.predictors.base import (
    Predictor,
    PredictorMeta,
    SpacePredictor,
    check_device,
    load_predictor,
    predictor_kinds,
    register_predictor,
)

__all__ = ["Predictor", "PredictorMeta", "SpacePredictor", "check_device", "load_predictor", "predictor_kinds",
           "register_predictor"]
