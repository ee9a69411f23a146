"""How well latency estimates match measurements: the agreement figures and the estimated-vs-measured plot that
tables (``hwnas validate``), predictors and measurement sets are all judged by.

One vocabulary, the keys of :func:`agreement`, used by every figure hwnas returns, prints and writes (validate,
predictor eval, the cross-validated figures of a fit, a set's noise floor, the tools and benchmarks):

* ``n``: networks compared;
* ``within5_pct``, ``within10_pct``: share of them estimated within +-5% / +-10% of the truth, in percent (0..100);
* ``mape``: mean absolute percentage error (%); ``bias_pct``: mean signed relative error (%);
* ``kendall``, ``spearman``: rank correlations (-1..1); ``rmse_ms``: root mean square error (ms).

Files written before this vocabulary stored the shares as fractions (0..1) under other names (``acc5``/``acc10``
in predictors' ``meta.training`` and sets' ``noise``, ``within_5pct``/``within_10pct`` in ``validation.json``):
the old names are the format marker, and :func:`figures_in_percent` reads them in today's vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

# old name -> (today's name, factor to today's unit); every old share was a fraction
LEGACY_NAMES: dict[str, tuple[str, float]] = {
    "acc5": ("within5_pct", 100.0), "acc10": ("within10_pct", 100.0),
    "within_5pct": ("within5_pct", 100.0), "within_10pct": ("within10_pct", 100.0),
    "rmse": ("rmse_ms", 1.0), "kendall_tau": ("kendall", 1.0), "mean_bias_pct": ("bias_pct", 1.0),
    "mape_pct": ("mape", 1.0),
}


def agreement(estimated: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """The figures of ``estimated`` against ``truth`` in the module's vocabulary (shares in percent)."""
    est, ref = np.asarray(estimated, dtype=float), np.asarray(truth, dtype=float)
    rel = (est - ref) / ref
    many = len(est) > 1
    return {"n": int(len(est)), "within5_pct": float(100 * np.mean(np.abs(rel) <= 0.05)),
            "within10_pct": float(100 * np.mean(np.abs(rel) <= 0.10)),
            "kendall": float(scipy_stats.kendalltau(est, ref).statistic) if many else float("nan"),
            "spearman": float(scipy_stats.spearmanr(est, ref).statistic) if many else float("nan"),
            "mape": float(100 * np.mean(np.abs(rel))), "rmse_ms": float(np.sqrt(np.mean((est - ref) ** 2))),
            "bias_pct": float(100 * np.mean(rel))}


def figures_in_percent(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Figures read back from a file, in today's vocabulary: a file written before it (the old names,
    :data:`LEGACY_NAMES`) has its shares turned from fractions into percent, so 0.79 is never read as 0.79%;
    today's names and any other key pass through unchanged. Pure unit conversion, nothing re-measured."""
    converted: dict[str, Any] = {}
    for key, value in figures.items():
        name, factor = LEGACY_NAMES.get(key, (key, 1.0))
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        converted[name] = value * factor if numeric and factor != 1.0 else value
    return converted


def training_in_percent(training: Mapping[str, Any]) -> dict[str, Any]:
    """A predictor's ``meta.training`` with its stored figures (``cv``: one set per model; ``held_out``) in
    today's vocabulary (:func:`figures_in_percent`)."""
    converted = dict(training)
    cv = converted.get("cv")
    if isinstance(cv, Mapping):
        converted["cv"] = {name: figures_in_percent(f) if isinstance(f, Mapping) else f for name, f in cv.items()}
    if isinstance(converted.get("held_out"), Mapping):
        converted["held_out"] = figures_in_percent(converted["held_out"])
    return converted


def plot_against_measured(measured: np.ndarray, series: Mapping[str, np.ndarray], path: Path, *, title: str,
                          xlabel: str, ylabel: str, limits: tuple[float, float], alpha: float = 0.7) -> Path:
    """Estimated vs measured scatter, one series per legend label (markers ``o ^ s v`` in order), with the y = x
    line and a +-10% band drawn over ``limits`` (ms); saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for (label, values), marker in zip(series.items(), "o^sv"):
        ax.scatter(measured, values, s=14, marker=marker, alpha=alpha, label=label)
    line = np.linspace(limits[0], limits[1], 10)
    ax.plot(line, line, "k-", lw=1)
    ax.fill_between(line, line * 0.9, line * 1.1, color="gray", alpha=0.15, label="±10%")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
