"""Few-shot latency transfer: a new device's per-layer table from other devices' tables and k of its networks.

Prior (other devices d = 1..D, thousands of networks each): a per-layer additive table per device, the least
squares fit of latency on one-hot op-per-layer features,

    LAT_d(a) ~ c_d + sum_l T_d[l, a_l].

Target (k measured networks a_1..a_k, latencies y_i), in two steps:

1. Combination.  Features f_d(a) = c_d + sum_l T_d[l, a_l] (each prior table's prediction). The mix

       (b, w) = argmin_{b, w >= 0} sum_i rho_H((y_i - b - sum_d w_d f_d(a_i)) / sigma)

   is non-negative least squares under Huber's loss rho_H (threshold 1.345 robust standard deviations sigma,
   sigma = 1.4826 x median absolute deviation of the residuals), solved by iteratively reweighted NNLS. Few
   networks and noisy phones: one outlying measurement among ten would otherwise pick the mix. Ridge shrinkage
   of w (towards 0 or towards covariance weights) was tried and ranked worse at k = 10 (docs/predictors_fewshot.md).
2. Residual.  A per-layer one-hot correction delta[l, i] by ridge with strength mu chosen by cross-validation
   on the k networks alone (leave-one-out for k <= 50, 10-fold above; mu = infinity: none), which takes over
   when k is large enough to learn the device's own table.

The result is additive per layer: T[l, i] = sum_d w_d T_d[l, i] + delta[l, i] and fixed = b + sum_d w_d c_d,
so ``layer_costs_ms``/``fixed_ms`` are the model itself and the exact decoder and the differentiable
expectation E[LAT] = fixed + sum_l sum_i p_{l,i} T[l, i] need nothing else.
Each layer's costs are shifted so its cheapest candidate costs 0 (the shift goes to ``fixed``).

Related: HELP (Lee et al., NeurIPS 2021) meta-learns a predictor adapted from 10 networks of the new device;
on its FBNet devices a non-negative mix of other devices' per-layer tables already ranks better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from hwnas.errors import HwnasError
from hwnas.io import now_iso
from hwnas.latency.metrics import agreement
from hwnas.latency.predictors.base import PredictorMeta, SpacePredictor, register_predictor, versions
from hwnas.spaces import Architecture, SearchSpace

METHOD = "Huber non-negative mix of prior per-layer tables + ridge per-layer residual (additive)"
HUBER_K = 1.345  # Huber's threshold in robust standard deviations (95% efficiency under normal noise)
HUBER_ITERATIONS = 5
RESIDUAL_STRENGTHS = (3.0, 10.0, 30.0, 100.0, 300.0, 1e3, math.inf)  # below ~3, 10 networks interpolate
LEAVE_ONE_OUT_MAX = 50
FOLDS = 10


@dataclass(frozen=True)
class LayerTable:
    """An additive per-layer latency model: ``fixed_ms + sum_l costs_ms[l][index of a_l]``."""

    fixed_ms: float
    costs_ms: np.ndarray  # (layers, candidates); a layer with fewer candidates is padded with NaN

    def predict(self, onehot_index: np.ndarray) -> np.ndarray:
        """Latencies of architectures given as (n, layers) candidate indices."""
        layers = np.arange(self.costs_ms.shape[0])
        return self.fixed_ms + self.costs_ms[layers, onehot_index].sum(axis=1)

    def spread_ms(self) -> float:
        """Standard deviation of the prediction over uniformly random architectures."""
        return float(math.sqrt(sum(np.nanvar(row) for row in self.costs_ms)))

    def to_dict(self) -> dict[str, Any]:
        return {"fixed_ms": self.fixed_ms, "costs_ms": [[float(v) for v in row if not math.isnan(v)]
                                                        for row in self.costs_ms]}


def choice_indices(space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
    """(n, layers) index of each layer's chosen candidate, in the layer's candidate order."""
    positions = [{name: i for i, name in enumerate(layer.names)} for layer in space.layers]
    out = np.empty((len(archs), len(space.layers)), dtype=np.int64)
    for row, arch in enumerate(archs):
        space.validate(arch)
        out[row] = [positions[l][choice] for l, choice in enumerate(arch.choices)]
    return out


def _onehot(space: SearchSpace, index: np.ndarray) -> np.ndarray:
    width = max(len(layer.names) for layer in space.layers)
    features = np.zeros((index.shape[0], len(space.layers) * width))
    features[np.arange(index.shape[0])[:, None], np.arange(len(space.layers)) * width + index] = 1.0
    return features


def _table_from_weights(space: SearchSpace, intercept: float, weights: np.ndarray) -> LayerTable:
    """A canonical table: each layer's cheapest candidate costs 0, the shifts summed into ``fixed_ms``."""
    width = max(len(layer.names) for layer in space.layers)
    costs = np.full((len(space.layers), width), np.nan)
    fixed = float(intercept)
    for l, layer in enumerate(space.layers):
        row = weights[l * width:l * width + len(layer.names)]
        low = float(row.min())
        costs[l, :len(layer.names)] = row - low
        fixed += low
    return LayerTable(fixed, costs)


def fit_prior_tables(space: SearchSpace, archs: Sequence[Architecture],
                     latencies_by_device: Mapping[str, np.ndarray]) -> dict[str, LayerTable]:
    """One per-layer table per prior device, fitted on that device's networks (one least squares solve for all
    devices; the minimum-norm one among the equivalent solutions)."""
    if not latencies_by_device:
        raise HwnasError("transfer: no prior device to transfer from")
    devices = list(latencies_by_device)
    targets = np.stack([_checked_latencies(latencies_by_device[d], len(archs), f"latencies of {d or 'the device'}")
                        for d in devices], axis=1)
    features = np.hstack([np.ones((len(archs), 1)), _onehot(space, choice_indices(space, archs))])
    solution = np.linalg.lstsq(features, targets, rcond=None)[0]
    return {d: _table_from_weights(space, solution[0, j], solution[1:, j]) for j, d in enumerate(devices)}


def _checked_latencies(latencies: np.ndarray, n: int, name: str) -> np.ndarray:
    latencies = np.asarray(latencies, dtype=np.float64)
    if latencies.shape != (n,):
        raise HwnasError(f"transfer: {name}: expected {n} latencies (one per network), got shape {latencies.shape}")
    if not np.all(np.isfinite(latencies)) or np.any(latencies <= 0):
        raise HwnasError(f"transfer: {name}: expected positive finite latencies in ms")
    return latencies


# -- the two fitting steps --------------------------------------------------------------------------------------
def nnls_mix(features: np.ndarray, target: np.ndarray,
             sample_weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(weights >= 0, free intercept) of the (weighted) least squares fit y ~ b + features @ weights."""
    sample_weights = np.ones(len(target)) if sample_weights is None else sample_weights
    total = float(sample_weights.sum())
    mean_f, mean_y = sample_weights @ features / total, float(sample_weights @ target) / total
    root = np.sqrt(sample_weights)
    weights = nnls((features - mean_f) * root[:, None], (target - mean_y) * root,
                   maxiter=50 * features.shape[1])[0]
    return weights, float(mean_y - mean_f @ weights)


def robust_mix(features: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative mix with Huber's loss (IRLS): a few outlying measurements do not steer the mix."""
    sample_weights = np.ones(len(target))
    weights, intercept = nnls_mix(features, target)
    for _ in range(HUBER_ITERATIONS):
        residual = target - intercept - features @ weights
        scale = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        if scale <= 1e-12 * max(float(np.abs(target).max()), 1.0):
            break  # (nearly) exact fit: nothing to down-weight
        ratio = np.abs(residual) / (HUBER_K * scale)
        sample_weights = np.where(ratio <= 1.0, 1.0, 1.0 / np.maximum(ratio, 1e-300))
        weights, intercept = nnls_mix(features, target, sample_weights)
    return weights, intercept


def _folds(n: int, seed: int) -> list[np.ndarray]:
    if n <= LEAVE_ONE_OUT_MAX:
        return [np.array([i]) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [order[f::FOLDS] for f in range(FOLDS)]


def _held_out_mix(features: np.ndarray, target: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Held-out predictions of the robust mix."""
    held_out = np.empty_like(target)
    for fold in folds:
        keep = np.setdiff1d(np.arange(len(target)), fold)
        weights, intercept = robust_mix(features[keep], target[keep])
        held_out[fold] = intercept + features[fold] @ weights
    return held_out


def _ridge_path(onehot: np.ndarray, residual: np.ndarray,
                strengths: Sequence[float]) -> list[tuple[np.ndarray, float]]:
    """Ridge fits (weights, intercept) of ``residual`` on centred one-hot features for each finite strength.

    One eigendecomposition serves every strength: of the Gram matrix X X^T when there are fewer networks than
    features (the dual form), else of X^T X.
    """
    mean_x, mean_r = onehot.mean(axis=0), residual.mean()
    x, r = onehot - mean_x, residual - mean_r
    dual = x.shape[0] < x.shape[1]
    values, vectors = np.linalg.eigh(x @ x.T if dual else x.T @ x)
    values = np.clip(values, 0.0, None)
    projected = vectors.T @ (r if dual else x.T @ r)
    fits = []
    for strength in strengths:
        coefficients = vectors @ (projected / (values + strength))
        weights = x.T @ coefficients if dual else coefficients
        fits.append((weights, float(mean_r - mean_x @ weights)))
    return fits


def _ridge(onehot: np.ndarray, residual: np.ndarray, strength: float) -> tuple[np.ndarray, float]:
    return _ridge_path(onehot, residual, [strength])[0]


def _cv_residual(onehot: np.ndarray, residual: np.ndarray, folds: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """The residual ridge strength with the least held-out squared error (inf: no residual), and predictions."""
    strengths = [s for s in RESIDUAL_STRENGTHS if not math.isinf(s)]
    held_out = np.empty((len(strengths), len(residual)))
    for fold in folds:
        keep = np.setdiff1d(np.arange(len(residual)), fold)
        for j, (weights, intercept) in enumerate(_ridge_path(onehot[keep], residual[keep], strengths)):
            held_out[j, fold] = intercept + onehot[fold] @ weights
    best = (float(np.mean(residual ** 2)), math.inf, np.zeros_like(residual))
    for j, strength in enumerate(strengths):
        error = float(np.mean((held_out[j] - residual) ** 2))
        if error < best[0] - 1e-12:
            best = (error, strength, held_out[j])
    return best[1], best[2]


def _accuracy_figures(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """MAPE (%), share within +-10% in percent (``within10_pct``) and Spearman, in the vocabulary of
    :func:`~hwnas.latency.metrics.agreement` (the figures ``predictor eval`` prints); Spearman only where both
    sides vary."""
    figures = agreement(predicted, measured)
    kept = {"mape": figures["mape"], "within10_pct": figures["within10_pct"]}
    if len(measured) > 2 and np.ptp(measured) > 0 and np.ptp(predicted) > 0:
        kept["spearman"] = figures["spearman"]
    return kept


def fit_transfer_tables(space: SearchSpace, prior: Mapping[str, LayerTable], archs: Sequence[Architecture],
                        latencies: np.ndarray, *, seed: int = 0) -> tuple[LayerTable, dict[str, Any]]:
    """The target device's table from prior tables and its k networks, with the fit's record."""
    if len(archs) < 3:
        raise HwnasError(f"transfer: need at least 3 measured networks of the new device, got {len(archs)}")
    latencies = _checked_latencies(latencies, len(archs), "latencies")
    index = choice_indices(space, archs)
    devices = sorted(prior)
    spreads = np.array([max(prior[d].spread_ms(), 1e-12) for d in devices])
    features = np.stack([prior[d].predict(index) for d in devices], axis=1) / spreads
    folds = _folds(len(archs), seed)
    held_out = _held_out_mix(features, latencies, folds)
    weights, intercept = robust_mix(features, latencies)
    weights_per_ms = dict(zip(devices, weights / spreads))  # per ms of each prior device's prediction

    onehot = _onehot(space, index)
    residual = latencies - (intercept + features @ weights)
    residual_strength, residual_held_out = _cv_residual(onehot, latencies - held_out, folds)
    delta, delta0 = np.zeros(onehot.shape[1]), 0.0
    if not math.isinf(residual_strength):
        delta, delta0 = _ridge(onehot, residual, residual_strength)
        held_out = held_out + residual_held_out
    table = _mixed_table(space, prior, weights_per_ms, intercept + delta0, delta)
    record = {
        "n": len(archs), "prior_devices": devices, "method": METHOD, "seed": seed,
        "cross_validation": "leave-one-out" if len(archs) <= LEAVE_ONE_OUT_MAX else f"{FOLDS}-fold",
        "residual_strength": _json_number(residual_strength),
        "weights_per_ms": {d: float(w) for d, w in weights_per_ms.items()},
        "held_out": _accuracy_figures(held_out, latencies), "fitted": now_iso(),
    }
    return table, record


def _mixed_table(space: SearchSpace, prior: Mapping[str, LayerTable], weights_per_ms: Mapping[str, float],
                 intercept: float, delta: np.ndarray) -> LayerTable:
    """T[l, i] = sum_d w_d T_d[l, i] + delta[l, i] and fixed = intercept + sum_d w_d c_d, made canonical."""
    width = max(len(layer.names) for layer in space.layers)
    fixed = intercept + sum(w * prior[d].fixed_ms for d, w in weights_per_ms.items())
    layer_weights = delta.copy()
    for d, w in weights_per_ms.items():
        layer_weights += w * np.nan_to_num(prior[d].costs_ms.reshape(-1)[:len(delta)], nan=0.0)
    for l, layer in enumerate(space.layers):  # padding of short layers stays unused
        layer_weights[l * width + len(layer.names):(l + 1) * width] = 0.0
    return _table_from_weights(space, fixed, layer_weights)


def _json_number(value: float) -> float | None:
    return None if math.isinf(value) else float(value)


# -- the predictor --------------------------------------------------------------------------------------------
@register_predictor
class TransferPredictor(SpacePredictor):
    """An additive per-layer table of a new device, made by :func:`fit_transfer` (file kind ``transfer``)."""

    kind: ClassVar[str] = "transfer"
    fits_networks: ClassVar[bool] = True
    needs_prior: ClassVar[bool] = True

    @classmethod
    def fit_networks(cls, data: Any, *, table: Any = None, prior: Any = None, residual: str = "auto",
                     seed: int = 0) -> TransferPredictor:
        from hwnas.latency.predictors.fit import fit_transfer_networks

        return fit_transfer_networks(data, prior, seed)

    def __init__(self, meta: PredictorMeta, space: SearchSpace, table: LayerTable) -> None:
        super().__init__(meta)
        self.space = space
        self.table = table
        self._costs = [[float(v) for v in table.costs_ms[l, :len(layer.names)]]
                       for l, layer in enumerate(space.layers)]

    def layer_costs_ms(self) -> list[list[float]]:
        return self._costs

    def fixed_ms(self) -> float:
        return self.table.fixed_ms

    def model_to_dict(self) -> dict[str, Any]:
        return {"fixed_ms": self.table.fixed_ms, "layer_costs_ms": self._costs,
                "layer_names": [list(layer.names) for layer in self.space.layers]}

    @classmethod
    def model_from_dict(cls, meta: PredictorMeta, data: Mapping[str, Any], source: str) -> TransferPredictor:
        space = cls.space_of(meta, source)
        fixed = data["fixed_ms"]
        if isinstance(fixed, bool) or not isinstance(fixed, (int, float)) or not math.isfinite(fixed):
            raise HwnasError(f"{source}: field 'model.fixed_ms': expected a finite number, got {fixed!r}")
        costs, names = data["layer_costs_ms"], data["layer_names"]
        if not isinstance(costs, list) or len(costs) != len(space.layers) or names != [list(layer.names) for layer
                                                                                        in space.layers]:
            raise HwnasError(f"{source}: field 'model.layer_costs_ms': expected {len(space.layers)} layers with the "
                             f"candidates of {space.name} in order")
        width = max(len(layer.names) for layer in space.layers)
        table = np.full((len(space.layers), width), np.nan)
        for l, (row, layer) in enumerate(zip(costs, space.layers)):
            if (not isinstance(row, list) or len(row) != len(layer.names)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in row)):
                raise HwnasError(f"{source}: field 'model.layer_costs_ms[{l}]': expected {len(layer.names)} finite "
                                 "numbers")
            table[l, :len(row)] = row
        return cls(meta, space, LayerTable(float(fixed), table))


def fit_transfer(space: SearchSpace, prior_archs: Sequence[Architecture], prior_latencies: Mapping[str, np.ndarray],
                 archs: Sequence[Architecture], latencies: np.ndarray, *, device: str = "",
                 seed: int = 0) -> TransferPredictor:
    """Fit a new device's predictor from other devices' measurements and k measured networks of the device.

    ``meta.training`` records k, the prior devices, the method, the chosen shrinkage and the cross-validated
    figures on the k networks (``held_out``: MAPE in %, share within +-10% in % as ``within10_pct``, Spearman).
    """
    prior = fit_prior_tables(space, prior_archs, prior_latencies)
    table, record = fit_transfer_tables(space, prior, archs, latencies, seed=seed)
    record["prior_networks"] = len(prior_archs)
    meta = PredictorMeta(device=device, space=space.name, resolution=space.resolution, num_classes=space.num_classes,
                         features=[f"layer{layer.index}:{name}" for layer in space.layers for name in layer.names],
                         training=record, versions=versions())
    return TransferPredictor(meta, space, table)
