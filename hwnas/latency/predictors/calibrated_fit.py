"""Fitting the calibrated predictor's parts (:mod:`hwnas.latency.predictors.calibrated`): the design matrix, the
table's level, the ridge correction, the trees, and the cross-validation that chooses between them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hwnas.latency.metrics import agreement
from hwnas.latency.predictors.features import NET_FEATURES, FeatureCache
from hwnas.spaces import Architecture

if TYPE_CHECKING:
    from hwnas.latency.predictors.calibrated import _EmbeddedTable

XGB_PARAMS = {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8,
              "colsample_bytree": 0.8, "reg_lambda": 2.0, "min_child_weight": 2}


def design(features: FeatureCache, archs: Sequence[Architecture], onehot: bool) -> np.ndarray:
    x = features.matrix(archs)
    if not onehot:
        return x
    sizes = [len(layer.names) for layer in features.space.layers]
    hot = np.zeros((len(archs), sum(sizes)))
    offsets = np.cumsum([0] + sizes)
    for row, arch in enumerate(archs):
        for l, i in enumerate(features.indices(arch)):
            hot[row, offsets[l] + i] = 1.0
    return np.hstack([x, hot])


def table_sum(features: FeatureCache, archs: Sequence[Architecture], table: _EmbeddedTable | None) -> np.ndarray:
    """The table's once-overhead sum per network (zeros without a table)."""
    if table is None:
        return np.zeros(len(archs))
    return features.matrix(archs)[:, 0] + table.scaled_overhead_ms


def scale(table_ms: np.ndarray, y: np.ndarray) -> float:
    """The table's level on the measurements: the median of measured / table sum (robust to a few outliers)."""
    return float(np.median(y / np.maximum(table_ms, 1e-12)))


def ridge(x: np.ndarray, target: np.ndarray, sample_weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge on standardized columns, penalty by generalized cross-validation; coefficients on raw columns."""
    from sklearn.linear_model import RidgeCV

    mean, std = x.mean(axis=0), x.std(axis=0)
    keep = std > 1e-12
    coef = np.zeros(x.shape[1])
    if not keep.any() or len(target) < 2:
        return coef, float(np.average(target, weights=sample_weight))
    z = (x[:, keep] - mean[keep]) / std[keep]
    model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(z, target, sample_weight=sample_weight)
    coef[keep] = model.coef_ / std[keep]
    return coef, float(model.intercept_ - (mean[keep] * coef[keep]).sum())


def fit_trees(features: FeatureCache, archs: Sequence[Architecture], y: np.ndarray, linear_pred: np.ndarray,
               weights: np.ndarray, seed: int) -> Any:
    import xgboost

    x = np.stack([features.network(a, p) for a, p in zip(archs, linear_pred)])
    target = np.log(y / np.maximum(linear_pred, 1e-9))
    data = xgboost.DMatrix(x, label=target, weight=weights, feature_names=list(NET_FEATURES))
    params = {"max_depth": XGB_PARAMS["max_depth"], "eta": XGB_PARAMS["learning_rate"],
              "subsample": XGB_PARAMS["subsample"], "colsample_bytree": XGB_PARAMS["colsample_bytree"],
              "lambda": XGB_PARAMS["reg_lambda"], "min_child_weight": XGB_PARAMS["min_child_weight"],
              "objective": "reg:squarederror", "seed": seed, "nthread": 1}
    return xgboost.train(params, data, num_boost_round=XGB_PARAMS["n_estimators"])


def cross_validate(features: FeatureCache, archs: Sequence[Architecture], y: np.ndarray, weights: np.ndarray,
                    table: _EmbeddedTable | None, seed: int, folds: int = 5) -> dict[str, dict[str, float]]:
    """K-fold figures of the additive model and of the additive model with trees (held-out folds only)."""
    import xgboost

    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(y)) % folds
    x, raw = design(features, archs, table is None), table_sum(features, archs, table)
    pred = {"linear": np.zeros(len(y)), "xgb": np.zeros(len(y))}
    if table is not None:
        pred["scale"] = np.zeros(len(y))
    for k in range(folds):
        train, test = fold != k, fold == k
        base = scale(raw[train], y[train]) * raw if table is not None else raw
        coef, intercept = ridge(x[train], (y - base)[train], weights[train] / y[train] ** 2)
        lin = base + x @ coef + intercept
        pred["linear"][test] = lin[test]
        if table is not None:
            pred["scale"][test] = base[test]
        booster = fit_trees(features, [a for a, t in zip(archs, train) if t], y[train], lin[train], weights[train],
                             seed)
        net = np.stack([features.network(a, p) for a, p, t in zip(archs, lin, test) if t])
        factor = np.exp(booster.predict(xgboost.DMatrix(net, feature_names=list(NET_FEATURES))))
        pred["xgb"][test] = lin[test] * factor
    return {name: agreement(p, y) for name, p in pred.items()}
