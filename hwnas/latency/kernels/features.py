"""The features a kernel's latency model reads, computed from the :class:`Kernel` record alone.

Work and traffic (log MACs, log input/output/weight elements, arithmetic intensity), the raw sizes (channels,
spatial size, kernel, stride, groups) and what the blocked layout does to them (channels padded to the NCHWc
block, the padding waste), plus codes for the fused activation, residual sum and ORT op.
"""

from __future__ import annotations

import math

import numpy as np

from hwnas.latency.kernels.record import Kernel, padded

ACT_CODES = {"none": 0, "Relu": 1, "Clip": 2, "Sigmoid": 3, "Tanh": 4, "LeakyRelu": 5, "HardSigmoid": 6,
             "HardSwish": 7, "QuickGelu": 8,  # ORT's (and torch's, spelled the same); 9: any other
             "Silu": 10, "Gelu": 11, "Elu": 12,  # torch's own
             "RELU": 1, "RELU6": 2, "LOGISTIC": 3, "TANH": 4, "LEAKY_RELU": 5, "HARD_SWISH": 7,  # LiteRT's
             "RELU_N1_TO_1": 13, "ADD_CONST": 14, "SUB_CONST": 15, "MUL_CONST": 16, "DIV_CONST": 17}
FEATURES = ["log_macs", "log_in", "log_out", "log_weights", "log_intensity", "cin", "cout", "hin", "hout", "k", "s",
            "g_is_depthwise", "log_cin_per_group", "cin_padded", "cout_padded", "pad_waste", "act", "sum", "n",
            "bcast", "blocked", "op_hash"]


def kernel_features(kernel: Kernel, block: int) -> list[float]:
    """One row of :data:`FEATURES` for ``kernel`` on a machine with NCHWc block ``block``."""
    k = kernel
    macs, n_in, n_out, n_w = k.macs, k.input_elements, k.output_elements, k.weight_elements
    cin_p = padded(k.cin, block) if k.blocked else k.cin
    cout_p = padded(k.cout, block) if k.blocked else k.cout
    waste = (cin_p * cout_p) / max(k.cin * k.cout, 1)
    op_hash = sum(ord(ch) * (i + 1) for i, ch in enumerate(k.op)) % 997
    return [math.log1p(macs), math.log1p(n_in), math.log1p(n_out), math.log1p(n_w),
            math.log1p(macs / max(n_in + n_out + n_w, 1)), k.cin, k.cout, k.hin, k.hout, k.k, k.s,
            float(k.g > 1 and k.g == k.cin), math.log1p(k.cin / max(k.g, 1)), cin_p, cout_p, waste,
            ACT_CODES.get(k.act, 9), k.sum, k.n, k.bcast, float(k.blocked), op_hash]


def feature_matrix(kernels: list[Kernel], block: int) -> np.ndarray:
    return np.asarray([kernel_features(k, block) for k in kernels], dtype=np.float64).reshape(-1, len(FEATURES))


XGB_PARAMS = {"max_depth": 4, "eta": 0.15, "subsample": 0.9, "colsample_bytree": 0.9, "min_child_weight": 1,
              "objective": "reg:squarederror", "nthread": 1, "verbosity": 0}
XGB_ROUNDS = 150  # with depth 4: the shipped predictor stays ~1.5 MB


def fit_booster(features: np.ndarray, targets: np.ndarray, seed: int = 0, rounds: int = XGB_ROUNDS):  # noqa: ANN201
    """An XGBoost regressor of ``targets`` (log latency ratios) on ``features``."""
    import xgboost as xgb

    data = xgb.DMatrix(features, label=targets, feature_names=FEATURES)
    return xgb.train({**XGB_PARAMS, "seed": seed}, data, num_boost_round=rounds)


def predict_booster(booster, features: np.ndarray) -> np.ndarray:  # noqa: ANN001
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(features, feature_names=FEATURES))
