"""How well latency estimates match measurements: the agreement figures and the estimated-vs-measured plot that
tables (``hwnas validate``), predictors and measurement sets are all judged by."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats


def agreement(estimated: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """Share within +-5% / +-10%, Kendall tau, Spearman, MAPE (%) and RMSE of ``estimated`` against ``truth``."""
    est, ref = np.asarray(estimated, dtype=float), np.asarray(truth, dtype=float)
    rel = (est - ref) / ref
    many = len(est) > 1
    return {"n": int(len(est)), "acc5": float(np.mean(np.abs(rel) <= 0.05)),
            "acc10": float(np.mean(np.abs(rel) <= 0.10)),
            "kendall": float(scipy_stats.kendalltau(est, ref).statistic) if many else float("nan"),
            "spearman": float(scipy_stats.spearmanr(est, ref).statistic) if many else float("nan"),
            "mape": float(100 * np.mean(np.abs(rel))), "rmse": float(np.sqrt(np.mean((est - ref) ** 2))),
            "bias_pct": float(100 * np.mean(rel))}


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
