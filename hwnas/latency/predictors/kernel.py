"""The kernel predictor: any ONNX model's latency as the sum of its kernels' predicted latencies (nn-Meter).

A model is split into the kernels ONNX Runtime really runs (:mod:`hwnas.latency.kernels.onnx_split`); each
kernel's cost is predicted by an XGBoost regressor of its type (log of the cost in reference units, from
:func:`kernel_features`), fitted on sampled kernels measured paired with the generic reference network. The
network's latency is

    ratio = overhead + b + sum_g a_g * sum_{kernels i of group g} cost_i,        ms = ratio * reference_ms

where ``overhead`` is one ``run()``'s fixed cost (paired ratio of a one-ReLU model), and ``a_g`` (groups: conv
kernels, memory-bound kernels) and ``b`` are the network-level correction. Predictors built since issue 16 use
the power form instead (``b = 0``)::

    ratio = overhead + c * (sum_g a_g * S_g) ** p

fitted (towards a = 1) on relative errors of a few whole networks' paired measurements: isolated kernels and
the same kernels inside a network do not cost the same, and the gap is not proportional. On the calibration
networks the sum of isolated kernels overshoots large networks and falls short of small ones; a linear fit with
a free ``b`` absorbed that curvature into ``b = 0.33`` reference units (0.66 ms, against ~2 us for a ``run()``),
which every network, a one-conv model included, then paid. The power form bends the same way and goes through
the measured overhead at zero; each kernel's term is its share of the corrected sum.

A search of a space aims with it through :meth:`KernelPredictor.for_space` (:mod:`.kernel_space`): each op of the space
split in its place in a network, the sum additive over layers, the power applied to it.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency.kernels.features import FEATURES, feature_matrix, fit_booster, predict_booster
from hwnas.latency.kernels.onnx_split import read_onnx, split_model
from hwnas.latency.kernels.record import Kernel
from hwnas.latency.predictors.base import (Predictor, PredictorMeta, booster_from_json, booster_to_json,
                                          register_predictor)
from hwnas.latency.predictors.prediction import Prediction, model_input, unsupported
from hwnas.spaces import SearchSpace

if TYPE_CHECKING:
    from hwnas.latency.predictors.kernel_space import KernelSpacePredictor

CONV_TYPES = ("conv", "pwconv", "dwconv", "gconv")
GROUPS = ("conv", "memory")
MIN_TYPE_ROWS = 20  # a kernel type with fewer measurements is predicted by the all-types model
POWER_RANGE = (0.5, 1.5)  # of the network-level correction: beyond, the fit is bending to noise


def kernel_group(kernel: Kernel) -> str:
    return "conv" if kernel.type in CONV_TYPES else "memory"


@register_predictor
class KernelPredictor(Predictor):
    """Per-kernel-type XGBoost models, the per-run overhead and a network-level correction (see module doc)."""

    kind: ClassVar[str] = "kernel"
    reads_onnx: ClassVar[bool] = True
    how_to_fit: ClassVar[str] = ("it learns from single kernels measured on the device: build one there with "
                                 "`hwnas predictor build --kind kernel --device DEVICE [--quick]` (minutes); "
                                 "`hwnas predict` finds it first")

    def __init__(self, meta: PredictorMeta, boosters: Mapping[str, Any], fallback: Any, overhead_ratio: float,
                 block: int, correction: Mapping[str, Any] | None = None, backend: str = "onnxruntime") -> None:
        super().__init__(meta)
        if not meta.reference_ms:
            raise HwnasError("kernel predictor: meta.reference_ms is required (latencies are ratio x reference)")
        self.boosters = dict(boosters)
        self.fallback = fallback
        self.overhead_ratio = float(overhead_ratio)
        self.block = int(block)
        self.backend = backend  # whose kernels: the runtime that splits the networks it predicts
        self._kernels: Any = None  # its KernelBackend, made when first needed
        self.correction = dict(correction or {"coef": [1.0] * len(GROUPS), "intercept": 0.0})
        self._op_splits: dict[tuple[str, tuple[bool, str], int], Any] = {}  # for_space: ops split in place

    # -- prediction ---------------------------------------------------------------------------------------------
    def kernel_costs(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Uncorrected cost of each kernel in reference units (free kernels cost 0)."""
        costs = np.zeros(len(kernels))
        free = self._backend().free_types
        rows_by_booster: dict[str, list[int]] = {}  # kernel type -> rows; "": the all-types fallback's rows
        for index, kernel in enumerate(kernels):
            if kernel.type not in free:
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
        scaled = [coef[kernel_group(kernel)] * float(cost) for kernel, cost in zip(kernels, costs, strict=True)]
        summed = sum(scaled)
        factor = _network_ratio(summed, self.correction) / summed if summed > 0 else 0.0
        terms = [{**kernel.to_dict(), "ms": ratio * factor * reference_ms} for kernel, ratio in zip(kernels, scaled)]
        total = self.overhead_ratio + float(self.correction.get("intercept", 0.0)) + summed * factor
        return total * reference_ms, terms

    def predict_onnx(self, path: str | Path) -> tuple[float, list[dict[str, Any]]]:
        """Latency (ms) of the model file (``.onnx``; ``.tflite`` for LiteRT) and its kernels' terms ``{type, key,
        op, input, output, ..., ms}``."""
        backend = self._backend()
        if Path(path).suffix not in backend.file_suffixes:
            raise HwnasError(f"{path}: a kernel predictor of {backend.name} reads "
                             f"{' or '.join(backend.file_suffixes)} files (what that runtime loads)")
        if self.backend == "onnxruntime":
            return self.predict_model(read_onnx(path), str(path))
        return self.predict_kernels(backend.split_file(Path(path), self.block))

    def predict_model(self, model: Any, source: str = "model") -> tuple[float, list[dict[str, Any]]]:
        """:meth:`predict_onnx` of a loaded ``onnx.ModelProto`` (``source`` names it in messages)."""
        if self.backend == "onnxruntime":
            return self.predict_kernels(split_model(model, self.block, source))
        import onnx

        with tempfile.TemporaryDirectory(prefix="hwnas-predict-") as tmp:
            onnx.save(model, str(Path(tmp) / "model.onnx"))
            return self.predict_onnx(Path(tmp) / "model.onnx")

    def predict_module(self, module: Any, input_shape: Sequence[int]) -> tuple[float, list[dict[str, Any]]]:
        """Latency (ms) of a torch module as the runtime runs it (exported or converted as hwnas's runtime does)."""
        with tempfile.TemporaryDirectory(prefix="hwnas-predict-") as tmp:
            kernels = self._backend().split_network(module.eval(), tuple(input_shape), Path(tmp), "model", self.block)
        return self.predict_kernels(kernels)

    def predict_arch(self, arch: Any) -> tuple[float, list[dict[str, Any]]]:
        """Latency (ms) of a search-space architecture: exported or converted like the runtime does, then split."""
        from hwnas.spaces import get_space

        space = get_space(arch.space, arch.resolution, arch.num_classes)
        return self.predict_module(space.build(arch), space.input_shape)

    def predict(self, model: Any, *, input_shape: Sequence[int] | None = None) -> Prediction:
        """:meth:`Predictor.predict`; a LiteRT predictor also reads ``.tflite`` files, and a torch or LiteRT one
        splits a torch module itself (its runtime's own kernels, not the ONNX export's)."""
        given = model_input(model, input_shape=input_shape, read_onnx=self.backend == "onnxruntime")
        if given.arch is not None:
            ms, terms = self.predict_arch(given.arch)
        elif given.path is not None and (self.backend != "onnxruntime" or given.onnx is None):
            ms, terms = self.predict_onnx(given.path)  # a LiteRT .tflite, or a file this runtime splits itself
        elif given.module is not None and self.backend != "onnxruntime":
            ms, terms = self.predict_module(given.module, given.input_shape or ())
        else:
            ms, terms = self.predict_model(given.onnx, given.source)
        return Prediction(ms, tuple(terms), self.overhead_ms, self.kind)

    def _predict_arch(self, arch: Any) -> Prediction:
        return self.predict(arch)

    def _predict_onnx(self, model: Any, source: str) -> Prediction:
        ms, terms = self.predict_model(model, source)
        return Prediction(ms, tuple(terms), self.overhead_ms, self.kind)

    def _backend(self) -> Any:
        if self._kernels is None:
            from hwnas.latency.kernels.backends import kernel_backend

            self._kernels = kernel_backend(self.backend)
        return self._kernels

    def for_space(self, space: SearchSpace) -> KernelSpacePredictor:
        """This predictor's latency of ``space``'s architectures as a search's estimator: each op exported and split
        alone, summed per layer, the power applied to the sum (:mod:`.kernel_space`). The ops' splits are kept (they
        depend on the op and ``block`` only), so another call costs only the kernels' predictions."""
        from hwnas.latency.predictors.kernel_space import build_space_predictor

        if not space.context_free:
            raise unsupported("kernel", f"cannot aim a search of {space.name}@{space.resolution} (a block's ops "
                              "depend on the previous block's width, and the estimator places each layer's candidate "
                              "ops once, in a fixed context); it still predicts whole architectures",
                              "aim with a calibrated predictor or the latency table of the space")
        if self.backend != "onnxruntime":
            raise unsupported(f"{self.backend} kernel", f"cannot aim a search of {space.name}@{space.resolution} "
                              "(ops are split in place for ONNX Runtime's layouts only)",
                              "the search builds a calibrated predictor of the space on this machine instead")
        return build_space_predictor(self, space, self._op_splits)

    @property
    def overhead_ms(self) -> float:
        fixed = self.overhead_ratio + float(self.correction.get("intercept", 0.0))
        return fixed * float(self.meta.reference_ms or 0.0)

    # -- file ---------------------------------------------------------------------------------------------------
    @classmethod
    def expected_features(cls, meta: PredictorMeta) -> list[str] | None:
        return list(FEATURES)

    def model_to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "block": self.block, "overhead_ratio": self.overhead_ratio,
                "correction": self.correction,
                "boosters": {name: booster_to_json(b) for name, b in self.boosters.items()},
                "fallback": booster_to_json(self.fallback)}

    @classmethod
    def model_from_dict(cls, meta: PredictorMeta, data: Mapping[str, Any], source: str) -> KernelPredictor:
        for name in ("block", "overhead_ratio", "correction", "boosters", "fallback"):
            if name not in data:
                raise HwnasError(f"{source}: field 'model.{name}': missing")
        correction = data["correction"]
        if not isinstance(correction, Mapping) or len(correction.get("coef", [])) != len(GROUPS):
            raise HwnasError(f"{source}: field 'model.correction': expected coef for {', '.join(GROUPS)}")
        for name in ("scale", "power") if "power" in correction else ():
            value = correction.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise HwnasError(f"{source}: field 'model.correction.{name}': expected a positive number, "
                                 f"got {value!r}")
        if not isinstance(data["boosters"], Mapping):
            raise HwnasError(f"{source}: field 'model.boosters': expected an object")
        boosters = {name: booster_from_json(value, f"{source}: model.boosters.{name}")
                    for name, value in data["boosters"].items()}
        ratio = data["overhead_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < math.inf:
            raise HwnasError(f"{source}: field 'model.overhead_ratio': expected a non-negative number")
        backend = data.get("backend", "onnxruntime")  # files before LiteRT and torch: ONNX Runtime's
        from hwnas.latency.kernels.backends import KERNEL_BACKENDS

        if backend not in KERNEL_BACKENDS:
            raise HwnasError(f"{source}: field 'model.backend': expected one of {', '.join(KERNEL_BACKENDS)}, "
                             f"got {backend!r}")
        return cls(meta, boosters, booster_from_json(data["fallback"], f"{source}: model.fallback"), ratio,
                   int(data["block"]), correction, backend)


def fit_kernel_predictor(
    kernels: Sequence[Kernel],
    costs: np.ndarray,
    meta: PredictorMeta,
    overhead_ratio: float,
    block: int,
    networks: Sequence[tuple[Sequence[Kernel], float]] = (),
    ridge: float = 0.05,
    seed: int = 0,
    backend: str = "onnxruntime",
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
    predictor = KernelPredictor(meta, boosters, fit_booster(x, y, seed), overhead_ratio, block, backend=backend)
    if networks:
        predictor.correction = _fit_correction(predictor, networks, ridge)
    return predictor


def _network_ratio(summed: float, correction: Mapping[str, Any]) -> float:
    """The corrected kernel sum of a network: ``c * T ** p`` (power form), ``T`` for the linear form."""
    if "power" not in correction:
        return summed
    return float(correction["scale"]) * summed ** float(correction["power"]) if summed > 0 else 0.0


def _fit_correction(predictor: KernelPredictor, networks: Sequence[tuple[Sequence[Kernel], float]],
                    ridge: float) -> dict[str, Any]:
    """Fit ``c * (sum_g a_g S_g) ** p`` to ``ratio - overhead`` on relative errors, ridge ``|a - 1|^2`` (it also
    fixes the scale that ``a`` and ``c`` share); no free intercept (see the module docstring)."""
    from scipy.optimize import least_squares

    sums, measured = [], []
    for kernels, ratio in networks:
        costs = predictor.kernel_costs(kernels)
        sums.append([sum(c for k, c in zip(kernels, costs, strict=True) if kernel_group(k) == g) for g in GROUPS])
        measured.append(ratio)
    s, y = np.asarray(sums, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    weight = math.sqrt(ridge * len(networks))

    def predict(x: np.ndarray) -> np.ndarray:
        return predictor.overhead_ratio + x[-2] * np.maximum(s @ x[:-2], 1e-12) ** x[-1]

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.concatenate([(predict(x) - y) / y, weight * (x[:-2] - 1.0)])

    start = np.asarray([1.0] * len(GROUPS) + [1.0, 1.0])
    bounds = ([0.0] * len(GROUPS) + [1e-3, POWER_RANGE[0]], [np.inf] * len(GROUPS) + [np.inf, POWER_RANGE[1]])
    x = least_squares(residuals, start, bounds=bounds).x
    errors = (predict(x) - y) / y
    return {"form": "power", "coef": [float(v) for v in x[:-2]], "scale": float(x[-2]), "power": float(x[-1]),
            "intercept": 0.0, "networks": len(networks), "ridge": ridge,
            "fit_abs_error_max": float(np.max(np.abs(errors))), "fit_abs_error_mean": float(np.mean(np.abs(errors)))}
