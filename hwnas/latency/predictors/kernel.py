"""The kernel predictor: any ONNX model's latency as the sum of its kernels' predicted latencies (nn-Meter).

A model is split into the kernels ONNX Runtime really runs (:mod:`hwnas.latency.kernels.onnx_split`); each
kernel's cost is predicted by an XGBoost regressor of its type (log of the cost in reference units, from
:func:`kernel_features`), fitted on sampled kernels measured paired with the generic reference network. The
network's latency is

    ratio = overhead + b + sum_g a_g * sum_{kernels i of group g} cost_i,        ms = ratio * reference_ms

where ``overhead`` is one ``run()``'s fixed cost (paired ratio of a one-ReLU model), and ``a_g`` (groups: conv
kernels, memory-bound kernels) and ``b`` are the network-level correction, a ridge fit (towards a = 1, b = 0) of
relative errors on a few whole networks' paired measurements: isolated kernels run with warm caches, a network
streams its activations through the cache, so the sum of isolated kernels alone falls short of the network.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.kernels.features import FEATURES, feature_matrix, fit_booster, predict_booster
from hwnas.latency.kernels.generators import FREE_TYPES
from hwnas.latency.kernels.onnx_split import split_onnx
from hwnas.latency.kernels.record import Kernel
from hwnas.latency.predictors.base import Predictor, PredictorMeta, register_predictor

CONV_TYPES = ("conv", "pwconv", "dwconv", "gconv")
GROUPS = ("conv", "memory")
MIN_TYPE_ROWS = 20  # a kernel type with fewer measurements is predicted by the all-types model


def kernel_group(kernel: Kernel) -> str:
    return "conv" if kernel.type in CONV_TYPES else "memory"


@register_predictor
class KernelPredictor(Predictor):
    """Per-kernel-type XGBoost models, the per-run overhead and a network-level correction (see module doc)."""

    kind: ClassVar[str] = "kernel"

    def __init__(self, meta: PredictorMeta, boosters: Mapping[str, Any], fallback: Any, overhead_ratio: float,
                 block: int, correction: Mapping[str, Any] | None = None) -> None:
        super().__init__(meta)
        if not meta.reference_ms:
            raise HwnasError("kernel predictor: meta.reference_ms is required (latencies are ratio x reference)")
        self.boosters = dict(boosters)
        self.fallback = fallback
        self.overhead_ratio = float(overhead_ratio)
        self.block = int(block)
        self.correction = dict(correction or {"coef": [1.0] * len(GROUPS), "intercept": 0.0})

    # -- prediction ---------------------------------------------------------------------------------------------
    def kernel_costs(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Uncorrected cost of each kernel in reference units (free kernels cost 0)."""
        costs = np.zeros(len(kernels))
        rows_by_booster: dict[str, list[int]] = {}  # kernel type -> rows; "": the all-types fallback's rows
        for index, kernel in enumerate(kernels):
            if kernel.type not in FREE_TYPES:
                rows_by_booster.setdefault(kernel.type if kernel.type in self.boosters else "", []).append(index)
        for name, rows in rows_by_booster.items():
            booster = self.boosters[name] if name else self.fallback
            x = feature_matrix([kernels[i] for i in rows], self.block)
            costs[rows] = np.exp(predict_booster(booster, x))
        return costs

    def predict_kernels(self, kernels: Sequence[Kernel]) -> tuple[float, list[dict[str, Any]]]:
        """Latency (ms) of a network made of ``kernels`` and each kernel's corrected term."""
        reference_ms = float(self.meta.reference_ms or 0.0)
        costs = self.kernel_costs(kernels)
        coef = dict(zip(GROUPS, self.correction["coef"], strict=True))
        terms = []
        total = self.overhead_ratio + float(self.correction["intercept"])
        for kernel, cost in zip(kernels, costs, strict=True):
            ratio = coef[kernel_group(kernel)] * float(cost)
            total += ratio
            terms.append({**kernel.to_dict(), "ms": ratio * reference_ms})
        return total * reference_ms, terms

    def predict_onnx(self, path: str | Path) -> tuple[float, list[dict[str, Any]]]:
        """Latency (ms) of the ``.onnx`` file and its kernels' terms ``{type, key, op, input, output, ..., ms}``."""
        return self.predict_kernels(split_onnx(path, self.block))

    def predict_arch(self, arch: Any) -> tuple[float, list[dict[str, Any]]]:
        """Latency (ms) of a search-space architecture: exported to ONNX like the runtime does, then split."""
        from hwnas.runtimes.converters import to_onnx
        from hwnas.spaces import get_space

        space = get_space(arch.space, arch.resolution, arch.num_classes)
        with tempfile.TemporaryDirectory(prefix="hwnas-predict-") as tmp:
            path = to_onnx(space.build(arch).eval(), space.input_shape, Path(tmp) / "arch.onnx")
            return self.predict_onnx(path)

    @property
    def overhead_ms(self) -> float:
        return (self.overhead_ratio + float(self.correction["intercept"])) * float(self.meta.reference_ms or 0.0)

    # -- file ---------------------------------------------------------------------------------------------------
    @classmethod
    def expected_features(cls, meta: PredictorMeta) -> list[str] | None:
        return list(FEATURES)

    def model_to_dict(self) -> dict[str, Any]:
        return {"block": self.block, "overhead_ratio": self.overhead_ratio, "correction": self.correction,
                "boosters": {name: _booster_json(b) for name, b in self.boosters.items()},
                "fallback": _booster_json(self.fallback)}

    @classmethod
    def model_from_dict(cls, meta: PredictorMeta, data: Mapping[str, Any], source: str) -> KernelPredictor:
        for name in ("block", "overhead_ratio", "correction", "boosters", "fallback"):
            if name not in data:
                raise HwnasError(f"{source}: field 'model.{name}': missing")
        correction = data["correction"]
        if not isinstance(correction, Mapping) or len(correction.get("coef", [])) != len(GROUPS):
            raise HwnasError(f"{source}: field 'model.correction': expected coef for {', '.join(GROUPS)}")
        if not isinstance(data["boosters"], Mapping):
            raise HwnasError(f"{source}: field 'model.boosters': expected an object")
        boosters = {name: _booster_from_json(value, f"{source}: model.boosters.{name}")
                    for name, value in data["boosters"].items()}
        ratio = data["overhead_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < math.inf:
            raise HwnasError(f"{source}: field 'model.overhead_ratio': expected a non-negative number")
        return cls(meta, boosters, _booster_from_json(data["fallback"], f"{source}: model.fallback"), ratio,
                   int(data["block"]), correction)


def fit_kernel_predictor(
    kernels: Sequence[Kernel],
    costs: np.ndarray,
    meta: PredictorMeta,
    overhead_ratio: float,
    block: int,
    networks: Sequence[tuple[Sequence[Kernel], float]] = (),
    ridge: float = 0.05,
    seed: int = 0,
) -> KernelPredictor:
    """Fit the per-type models on measured ``costs`` (reference units), then the network-level correction on
    ``networks`` = [(its kernels, its measured paired ratio)] (none: no correction)."""
    costs = np.asarray(costs, dtype=np.float64)
    if len(kernels) != len(costs) or not len(kernels):
        raise HwnasError("kernel predictor: need as many costs as kernels, and at least one")
    x, y = feature_matrix(list(kernels), block), np.log(costs)
    boosters = {}
    for type_ in sorted({k.type for k in kernels}):
        rows = [i for i, k in enumerate(kernels) if k.type == type_]
        if len(rows) >= MIN_TYPE_ROWS:
            boosters[type_] = fit_booster(x[rows], y[rows], seed)
    predictor = KernelPredictor(meta, boosters, fit_booster(x, y, seed), overhead_ratio, block)
    if networks:
        predictor.correction = _fit_correction(predictor, networks, ridge)
    return predictor


def _fit_correction(predictor: KernelPredictor, networks: Sequence[tuple[Sequence[Kernel], float]],
                    ridge: float) -> dict[str, Any]:
    """Ridge fit of relative errors: minimise sum_n ((b + sum_g a_g S_ng + o - y_n) / y_n)^2 + ridge |(a-1, b)|^2."""
    rows, targets = [], []
    for kernels, ratio in networks:
        costs = predictor.kernel_costs(kernels)
        sums = [sum(c for k, c in zip(kernels, costs, strict=True) if kernel_group(k) == g) for g in GROUPS]
        rows.append([1.0, *sums])
        targets.append(ratio - predictor.overhead_ratio)
    a = np.asarray(rows) / np.asarray([[r + predictor.overhead_ratio] for r in targets])
    y = np.asarray(targets) / (np.asarray(targets) + predictor.overhead_ratio)
    prior = np.asarray([0.0] + [1.0] * len(GROUPS))
    lam = ridge * len(networks)
    solution = np.linalg.solve(a.T @ a + lam * np.eye(len(prior)), a.T @ y + lam * prior)
    fitted = np.asarray(rows) @ solution + predictor.overhead_ratio
    measured = np.asarray(targets) + predictor.overhead_ratio
    errors = (fitted - measured) / measured
    return {"coef": [float(v) for v in solution[1:]], "intercept": float(solution[0]), "networks": len(networks),
            "ridge": ridge, "fit_abs_error_max": float(np.max(np.abs(errors))),
            "fit_abs_error_mean": float(np.mean(np.abs(errors)))}


def _booster_json(booster: Any) -> str:
    """The booster's XGBoost JSON model, as one compact string (the file's indentation would triple its size)."""
    return bytes(booster.save_raw("json")).decode()


def _booster_from_json(value: Any, source: str) -> Any:
    import xgboost as xgb

    try:
        model = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        model = None
    if not isinstance(model, Mapping) or "learner" not in model:
        raise HwnasError(f"{source}: expected an XGBoost JSON model")
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(json.dumps(model).encode()))
    except xgb.core.XGBoostError as exc:
        raise HwnasError(f"{source}: corrupt XGBoost model ({str(exc).splitlines()[0][:120]})") from None
    return booster
