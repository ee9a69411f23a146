"""A predictor file's ``meta``: who the predictor is for and how it was made."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import hwnas
from hwnas.errors import HwnasError
from hwnas.latency.metrics import training_in_percent


@dataclass
class PredictorMeta:
    """Who a predictor is for and how it was made (the ``meta`` object of the file).

    Attributes:
        device: device profile name the training data was measured on ("" for a transfer prior alone).
        fingerprint: the machine/runtime fingerprint of the training data (``{}`` when unknown, e.g. a CSV).
        space, resolution, num_classes: the search space it predicts architectures of (None: any model).
        reference: the reference network (``{"arch": {...}}`` or a description) that latencies were paired with.
        reference_ms: the reference's quiet latency in the training data; predictions are in these ms, and
            :func:`rescale` moves them to another set's reference level.
        features: names of the features the model reads, in order (a file whose list differs from what this
            hwnas computes is stale and refused).
        training: rows, sources, fit date and cross-validated figures.
        versions: hwnas, xgboost, numpy and runtime versions at fit time.
        turns: how the training networks were paired (:func:`~hwnas.runtimes.paired.turns_of`): ``"warm"`` (on
            ``hwnas bench``'s scale), ``"cold"``, or ``""``: not said (a CSV; or a file fitted before warm turns,
            which :func:`~hwnas.latency.predictors.origin.differences` reads as cold when it has a fingerprint).
    """

    device: str = ""
    fingerprint: dict[str, Any] = field(default_factory=dict)
    space: str | None = None
    resolution: int | None = None
    num_classes: int | None = None
    reference: dict[str, Any] | None = None
    reference_ms: float | None = None
    features: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    turns: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> PredictorMeta:
        if not isinstance(data, Mapping):
            raise HwnasError(f"{source}: field 'meta': expected an object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HwnasError(f"{source}: field 'meta': unknown field {unknown[0]!r}")
        meta = cls(**dict(data))
        for name, typ in (("device", str), ("fingerprint", dict), ("features", list), ("training", dict),
                          ("versions", dict), ("turns", str)):
            if not isinstance(getattr(meta, name), typ):
                raise HwnasError(f"{source}: field 'meta.{name}': expected {typ.__name__}")
        ref = meta.reference_ms
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (int, float)) or not 0 < ref < math.inf):
            raise HwnasError(f"{source}: field 'meta.reference_ms': expected a positive number or null, got {ref!r}")
        meta.training = training_in_percent(meta.training)  # an older file's cv shares: fractions -> percent
        return meta


def versions(runtime: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions recorded with a fitted predictor."""
    import numpy
    import xgboost

    return {"hwnas": hwnas.__version__, "xgboost": xgboost.__version__, "numpy": numpy.__version__,
            "runtime": dict(runtime or {})}
