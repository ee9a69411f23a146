"""The calibrated table: a space's table sum plus a correction learned from end-to-end measurements.

The additive part (a per-layer cost model, so the decoder and the differentiable loss stay exact)::

    LIN(a) = s * (overhead + sum_ops t(op)) + b + w . sum_ops f(op)

where ``t(op)`` is the op's isolated table latency (overhead counted once), ``s`` the table's level on the
measurements (the median of measured / table sum), ``f(op)`` the per-op features of
:mod:`hwnas.latency.predictors.features` and ``b, w`` a ridge fit of the scaled table's error on the measured networks
(weights ``1/y^2``: relative errors count, not milliseconds; the penalty is chosen by generalized cross-
validation), so with no measurements the predictor *is* the table. Without a table (a CSV of another device),
``t = 0`` and the features gain one indicator per (layer, candidate): a per-layer table learned from data.

The optional non-additive part (gradient-boosted trees, XGBoost) multiplies it::

    LAT(a) = LIN(a) * exp(g(n(a)))

with ``g`` fitted on ``log(y / LIN)`` over network features ``n(a)`` (weight bytes against the caches, arithmetic
intensity, depth, ...). Both are cross-validated on the training rows and the better one is used (``selected``);
both figures are kept in ``meta.training``; so is the scaled table alone (``w = 0, b = 0``), which replaces the
ridge correction when it cross-validates at least as well. For search, ``g`` is evaluated at an anchor architecture (the
current most probable one), so ``expected_latency_ms = exp(g(anchor)) * E[LIN]`` is differentiable, and equals
``latency_ms`` exactly for one-hot probabilities.

A space that is not context free (``mnasnet``: a block's ops depend on the previous block's width) has no exact
per-layer ``LIN``; ``LIN(a)`` sums the per-op linear cost ``s * t(op) + w . f(op)`` over ``a``'s exact ops (plus
the per-layer indicators, if any), and ``anchored(a)`` is its first-order model at ``a``
(:meth:`~hwnas.spaces.SearchSpace.linearized_costs`: exact at ``a`` and its one-block changes) times ``exp(g)`` at
``a``; ``expected_latency_ms`` uses it at the most probable architecture, with or without trees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.io import now_iso
from hwnas.latency.estimator import AnchorCache, LatencyEstimator, LinearizedView, TableEstimator, most_probable
from hwnas.latency.predictors.base import (AnchoredView, PredictorMeta, SpacePredictor, booster_from_json,
                                          booster_to_json, register_predictor)
from hwnas.latency.predictors.calibrated_fit import cross_validate, design, fit_trees, ridge, scale, table_sum
from hwnas.latency.predictors.features import NET_FEATURES, OP_FEATURES, Caches, FeatureCache
from hwnas.latency.table import LatencyTable
from hwnas.ops import OpSpec
from hwnas.spaces import Architecture, SearchSpace

RESIDUAL_CHOICES = ("auto", "linear", "xgb")


@dataclass(frozen=True)
class TrainingRow:
    """One network the predictor learned from: its choices, latency (at the predictor's reference level), weight."""

    choices: tuple[str, ...]
    latency_ms: float
    weight: float = 1.0
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"arch": " ".join(self.choices), "latency_ms": self.latency_ms, "weight": self.weight,
                "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingRow:
        return cls(tuple(str(data["arch"]).split()), float(data["latency_ms"]), float(data.get("weight", 1.0)),
                   str(data.get("source", "")))


class _EmbeddedTable:
    """Op latencies carried inside the predictor file (the table it was fitted with), keyed by canonical key."""

    def __init__(self, op_ms: Mapping[str, float], overhead_ms: float, reference_ms: float | None = None,
                 scale: float = 1.0) -> None:
        self.ops, self.overhead_ms, self.reference_ms = dict(op_ms), float(overhead_ms), reference_ms
        self.scale = scale

    def op_ms(self, spec: OpSpec) -> float:
        return 0.0 if spec.is_free else self.ops[spec.key()] * self.scale

    @property
    def scaled_overhead_ms(self) -> float:
        return self.overhead_ms * self.scale

    def at_level(self, reference_ms: float | None) -> _EmbeddedTable:
        """The same table brought to another reference level (when both levels are known: a table profiled
        paired with the reference, a predictor fitted on a measurement set), else unchanged."""
        scale = reference_ms / self.reference_ms if reference_ms and self.reference_ms else 1.0
        return _EmbeddedTable(self.ops, self.overhead_ms, self.reference_ms, scale)

    @classmethod
    def from_table(cls, table: LatencyTable, space: SearchSpace) -> _EmbeddedTable:
        estimator = TableEstimator(table, space, "once")
        reference = (table.reference or {}).get("median_ms")
        return cls({s.key(): estimator.op_ms(s) for s in space.all_specs() if not s.is_free}, table.overhead_ms,
                   float(reference) if reference else None)


@register_predictor
class CalibratedPredictor(SpacePredictor):
    """See the module docstring. Build with :func:`fit_calibrated`; refit with :meth:`with_rows`."""

    kind = "calibrated"
    supports_refit = True
    fits_networks = True

    @classmethod
    def fit_networks(cls, data: Any, *, table: Any = None, prior: Any = None, residual: str = "auto",
                     seed: int = 0) -> CalibratedPredictor:
        from hwnas.latency.predictors.fit import fit_calibrated_networks

        return fit_calibrated_networks(data, table, residual, seed)

    def __init__(self, meta: PredictorMeta, space: SearchSpace, table: _EmbeddedTable | None,
                 rows: list[TrainingRow], coef: np.ndarray, intercept: float, booster: Any | None,
                 selected: str, options: Mapping[str, Any], table_scale: float = 1.0) -> None:
        super().__init__(meta)  # copies the meta; rows and coefficients are copied too: the caller's are not aliased
        meta = self.meta
        self.space, self.table, self.rows = space, table, list(rows)
        self.coef, self.intercept = np.array(coef, dtype=float), float(intercept)
        self.booster, self.selected = booster, selected
        self.options, self.table_scale = dict(options), float(table_scale)
        table = table.at_level(meta.reference_ms) if table is not None else None
        self.features = FeatureCache(space, Caches.from_fingerprint(meta.fingerprint), table)
        self._onehot_offsets = np.cumsum([0] + [len(layer.names) for layer in space.layers])
        n_op = len(OP_FEATURES)
        w_op, w_hot = self.coef[:n_op], self.coef[n_op:]
        base = [self.table_scale * c[:, 0] if table is not None else np.zeros(len(c)) for c in self.features.layer]
        self._lin_layer = [b + c @ w_op + (w_hot[self._onehot_offsets[l]:self._onehot_offsets[l + 1]]
                                           if len(w_hot) else 0.0)
                           for l, (b, c) in enumerate(zip(base, self.features.layer))]
        self._lin_fixed = (self.intercept + float(self.features.fixed @ w_op)
                           + (self.table_scale * (self.features.fixed[0] + table.scaled_overhead_ms)
                              if table is not None else 0.0))
        self._w_op = w_op
        self._hot = [w_hot[self._onehot_offsets[l]:self._onehot_offsets[l + 1]] if len(w_hot) else None
                     for l in range(len(space.layers))]
        self._anchors = AnchorCache()

    def spec_linear_ms(self, spec: OpSpec) -> float:
        """The additive model's cost of one op or block: ``s * t(op) + w . f(op)`` (the per-layer indicators apart)."""
        features = self.features.of(spec)
        return (self.table_scale * float(features[0]) if self.table is not None else 0.0) + float(features @ self._w_op)

    def _with_indicators(self, index: int, row: list[float]) -> list[float]:
        hot = self._hot[index]
        return row if hot is None else [c + float(h) for c, h in zip(row, hot)]

    # -- estimator interface ------------------------------------------------------------------------------
    def linear_ms(self, arch: Architecture) -> float:
        """``LIN(arch)``: exact for every space (each block's ops in their context)."""
        if not self.space.context_free:
            total = self._lin_fixed + sum(self.spec_linear_ms(spec) for spec in self.space.layer_specs(arch))
            return total + sum(float(hot[i]) for hot, i in zip(self._hot, self.features.indices(arch))
                               if hot is not None)
        return self._lin_fixed + sum(float(self._lin_layer[l][i]) for l, i in enumerate(self.features.indices(arch)))

    def context_costs_ms(self, index: int, previous: str | None) -> list[float]:
        if self.space.context_free:
            return super().context_costs_ms(index, previous)
        row = [self.spec_linear_ms(spec) for _, spec in self.space.candidates_after(index, previous)]
        return self._with_indicators(index, row)

    def factor(self, arch: Architecture) -> float:
        """``exp(g(n(a)))``: the non-additive correction (1 when the linear model is selected)."""
        if self.selected != "xgb" or self.booster is None:
            return 1.0
        import xgboost

        x = self.features.network(arch, self.linear_ms(arch))[None, :]
        return float(math.exp(self.booster.predict(xgboost.DMatrix(x, feature_names=list(NET_FEATURES)))[0]))

    def latency_ms(self, arch: Architecture) -> float:
        return float(self.linear_ms(arch) * self.factor(arch))  # a python float: it reaches JSON and checkpoints

    def anchored(self, arch: Architecture | None) -> LatencyEstimator:
        """A read-only view whose :meth:`layer_costs_ms`, :meth:`fixed_ms` and :meth:`expected_latency_ms` carry
        the non-additive factor evaluated at ``arch`` (None: factor 1); ``latency_ms`` stays this predictor's.
        The predictor itself is not changed: its own costs are the linear model (factor 1). For a space that is not
        context free, the costs are also linearized at ``arch`` (module docstring)."""
        if self.space.context_free or arch is None:
            return AnchoredView(self, self.factor(arch) if arch is not None else 1.0)

        def linearize() -> LatencyEstimator:
            costs = self.space.linearized_costs(self.spec_linear_ms, arch)
            return LinearizedView(self, [self._with_indicators(l, row) for l, row in enumerate(costs)],
                                  self._lin_fixed, self.factor(arch))

        return self._anchors.get(arch, linearize)

    def layer_costs_ms(self) -> list[list[float]]:
        return [[float(v) for v in costs] for costs in self._lin_layer]

    def terms(self, arch: Architecture) -> list[dict[str, Any]]:
        """The additive terms of ``arch`` (see :meth:`SpacePredictor.terms`); for a space that is not context free,
        each layer's exact op in its context, all times the factor at ``arch`` (no linearization needed)."""
        if self.space.context_free:
            return super().terms(arch)
        factor, specs = self.factor(arch), self.space.layer_specs(arch)
        terms = [{"type": "fixed", "key": "stem, fixed blocks, head, runtime overhead", "ms": self._lin_fixed * factor}]
        for l, (layer, choice, spec) in enumerate(zip(self.space.layers, arch.choices, specs)):
            hot = self._hot[l]
            cost = self.spec_linear_ms(spec) + (float(hot[layer.names.index(choice)]) if hot is not None else 0.0)
            terms.append({"type": f"layer{layer.index}:{choice}", "key": spec.key(), "ms": cost * factor})
        return terms

    def fixed_ms(self) -> float:
        return self._lin_fixed

    def expected_latency_ms(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``exp(g(anchor)) * E[LIN]`` with the anchor at the most probable architecture (differentiable)."""
        if (self.selected == "xgb" and self.booster is not None) or not self.space.context_free:
            return self.anchored(most_probable(self.space, probs)).expected_latency_ms(probs)
        return super().expected_latency_ms(probs)

    # -- refitting ----------------------------------------------------------------------------------------
    def with_rows(self, archs: Sequence[Architecture], latencies_ms: Sequence[float], *, weight: float = 1.0,
                  source: str = "added") -> CalibratedPredictor:
        """A new predictor fitted on this one's rows plus these (e.g. the closed loop's measurements)."""
        rows = self.rows + [TrainingRow(a.choices, float(y), weight, source) for a, y in zip(archs, latencies_ms)]
        return _fit(self.meta, self.space, self.table, rows, self.options)

    # -- file ---------------------------------------------------------------------------------------------
    def model_to_dict(self) -> dict[str, Any]:
        return {
            "table": None if self.table is None else {"op_ms": self.table.ops, "overhead_ms": self.table.overhead_ms,
                                                      "reference_ms": self.table.reference_ms},
            "rows": [r.to_dict() for r in self.rows],
            "linear": {"features": list(OP_FEATURES), "onehot": self.table is None, "coef": self.coef.tolist(),
                       "intercept": self.intercept},
            "residual": None if self.booster is None else
            {"features": list(NET_FEATURES), "booster": booster_to_json(self.booster)},
            "selected": self.selected,
            "options": self.options,
            "table_scale": self.table_scale,
        }

    @classmethod
    def expected_features(cls, meta: PredictorMeta) -> list[str] | None:
        return list(OP_FEATURES) + list(NET_FEATURES)

    @classmethod
    def model_from_dict(cls, meta: PredictorMeta, data: Mapping[str, Any], source: str) -> CalibratedPredictor:
        space = cls.space_of(meta, source)
        table = None if data["table"] is None else _EmbeddedTable(
            data["table"]["op_ms"], data["table"]["overhead_ms"], data["table"].get("reference_ms"))
        if table is not None:
            missing = [s.key() for s in space.all_specs() if not s.is_free and s.key() not in table.ops]
            if missing:
                raise HwnasError(f"{source}: corrupt predictor: its table lacks op {missing[0]}")
        booster = None
        if data["residual"] is not None:
            booster = booster_from_json(data["residual"]["booster"], f"{source}: model.residual.booster")
        coef = np.asarray(data["linear"]["coef"], dtype=float)
        expected = len(OP_FEATURES) + (0 if table is not None else sum(len(layer.names) for layer in space.layers))
        if coef.shape != (expected,):
            raise HwnasError(f"{source}: corrupt predictor: {coef.size} coefficients, expected {expected}")
        if data["selected"] not in ("linear", "xgb"):
            raise HwnasError(f"{source}: field 'model.selected': expected 'linear' or 'xgb'")
        rows = [TrainingRow.from_dict(r) for r in data["rows"]]
        return cls(meta, space, table, rows, coef, float(data["linear"]["intercept"]), booster, data["selected"],
                   data.get("options", {}), float(data.get("table_scale", 1.0)))


# -- fitting ---------------------------------------------------------------------------------------------------
def fit_calibrated(space: SearchSpace, archs: Sequence[Architecture], latencies_ms: Sequence[float], *,
                   table: LatencyTable | None, meta: PredictorMeta, residual: str = "auto", seed: int = 0,
                   sources: Sequence[str] | None = None) -> CalibratedPredictor:
    """Fit on measured networks (may be none: then the predictor reproduces the table).

    Args:
        residual: ``"linear"`` (additive only), ``"xgb"`` (always add the trees) or ``"auto"`` (the trees when
            they cross-validate better by at least 5% relative MAPE, and at least 30 rows exist).
        meta: device, fingerprint, reference and training sources; space, features and training figures are set
            here.
    """
    if residual not in RESIDUAL_CHOICES:
        raise HwnasError(f"predictor fit: residual must be one of {', '.join(RESIDUAL_CHOICES)}, got {residual!r}")
    if table is None and not archs:
        raise HwnasError("predictor fit: a calibrated predictor needs a table, measurements, or both")
    embedded = _EmbeddedTable.from_table(table, space) if table is not None else None
    rows = [TrainingRow(a.choices, float(y), 1.0, (sources[i] if sources else ""))
            for i, (a, y) in enumerate(zip(archs, latencies_ms))]
    meta = replace(meta, space=space.name, resolution=space.resolution, num_classes=space.num_classes,
                   features=list(OP_FEATURES) + list(NET_FEATURES))
    return _fit(meta, space, embedded, rows, {"residual": residual, "seed": seed})


def _fit(meta: PredictorMeta, space: SearchSpace, table: _EmbeddedTable | None, rows: list[TrainingRow],
         options: Mapping[str, Any]) -> CalibratedPredictor:
    leveled = table.at_level(meta.reference_ms) if table is not None else None
    features = FeatureCache(space, Caches.from_fingerprint(meta.fingerprint), leveled)
    archs = [space.arch(r.choices) for r in rows]
    y = np.array([r.latency_ms for r in rows])
    weights = np.array([r.weight for r in rows])
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise HwnasError("predictor fit: latencies must be positive and finite")
    x = design(features, archs, table is None)
    raw = table_sum(features, archs, leveled)
    table_scale = scale(raw, y) if rows and table is not None else 1.0
    base = table_scale * raw
    n_coef = x.shape[1]
    coef, intercept = (np.zeros(n_coef), 0.0) if not rows else ridge(x, y - base, weights / y**2)
    booster, selected, cv = None, "linear", {}
    residual = options.get("residual", "auto")
    if len(rows) >= 10:
        cv = cross_validate(features, archs, y, weights, leveled, int(options.get("seed", 0)))
    correction = "ridge" if rows else "none"
    if "scale" in cv and cv["scale"]["mape"] <= cv["linear"]["mape"]:  # the scaled table alone generalizes better
        coef, intercept, correction = np.zeros(n_coef), 0.0, "scale only"
    if rows and residual != "linear" and (residual == "xgb" or len(rows) >= 30):
        linear_pred = base + x @ coef + intercept
        booster = fit_trees(features, archs, y, linear_pred, weights, int(options.get("seed", 0)))
        additive = min(cv["linear"]["mape"], cv.get("scale", cv["linear"])["mape"]) if cv else 0.0
        if residual == "xgb" or (cv and cv["xgb"]["mape"] < 0.95 * additive):
            selected = "xgb"
        else:
            booster = None  # not used: the file keeps only the cross-validated figures of the trees
    meta = replace(meta, training={**meta.training, "n": len(rows), "fitted_at": now_iso(), "selected": selected,
                                   "cv": cv, "table_scale": table_scale, "correction": correction,
                                   "sources": sorted({r.source for r in rows if r.source})})
    return CalibratedPredictor(meta, space, table, rows, coef, intercept, booster, selected, options, table_scale)
