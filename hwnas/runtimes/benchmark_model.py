"""Parsing what TFLite/LiteRT's ``benchmark_model`` prints: TFLite 1.x to LiteRT 2025 formats.

The tool prints aggregate statistics only (no per-run times): a ``count=... avg=...`` line per phase (warm-up,
timed runs), summary lines in microseconds or, in newer versions, milliseconds, and memory footprints. The adb
runtime (:mod:`hwnas.runtimes.adb_rt`) runs it on a phone; ``tests/fixtures/`` holds real outputs.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hwnas.errors import HwnasError
from hwnas.io import first_line

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf)"
_PHASE_RE = re.compile(r"Running benchmark for at least \d+ iterations")
_STATS_RE = re.compile(r"\bcount=(\d+)((?:\s+[a-z0-9_]+=" + _NUMBER + r")*)")
_PAIR_RE = re.compile(r"([a-z0-9_]+)=" + _NUMBER)
_SUMMARY_RE = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
    rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}"
)
# TFLite 1.x: "Average inference timings in us: Warmup: W, Init: I, no stats: A" (A is the timed average).
_OLD_SUMMARY_RE = re.compile(rf"Average inference timings in us: Warmup: {_NUMBER}, Init: {_NUMBER}, [^:]+: {_NUMBER}")
_SESSION_RE = re.compile(rf"Initialized session in {_NUMBER} ?ms")
_MODEL_SIZE_RE = re.compile(rf"The input model file size \(MB\): {_NUMBER}")
_MEMORY_RES = (
    (re.compile(rf"Peak memory footprint \(MB\): init={_NUMBER} overall={_NUMBER}"), ("init_mb", "overall_mb")),
    (re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init={_NUMBER} overall={_NUMBER}"),
     ("init_mb", "overall_mb")),
    (re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}"), ("peak_mb",)),
    (re.compile(rf"Init footprint:\s+{_NUMBER} MB"), ("init_mb",)),
    (re.compile(rf"Overall footprint:\s+{_NUMBER} MB"), ("overall_mb",)),
    (re.compile(rf"Peak memory usage:\s+{_NUMBER} MB"), ("peak_mb",)),
)
# LiteRT's newer results block, rounded to 0.01 ms: used only where the microsecond lines are missing.
_MS_RES = {
    "init_us": re.compile(rf"Model initialization:\s+{_NUMBER} ms"),
    "first_inference_us": re.compile(rf"Warmup \(first\):\s+{_NUMBER} ms"),
    "warmup_avg_us": re.compile(rf"Warmup \(avg\):\s+{_NUMBER} ms"),
    "inference_avg_us": re.compile(rf"Inference \(avg\):\s+{_NUMBER} ms"),
}


def parse_benchmark_model_output(text: str) -> dict[str, Any]:
    """Parse the statistics ``benchmark_model`` prints (TFLite 1.x to LiteRT 2025 formats).

    Returns ``warmup`` and ``timed`` (each ``{"count": int, "first_us", "curr_us", "min_us", "max_us", "avg_us",
    "std_us", and "p5_us"/"median_us"/"p95_us" where printed}``; a one-run phase has only ``count`` and
    ``curr_us``; ``warmup`` is None when absent), ``init_us``, ``first_inference_us``, ``warmup_avg_us``,
    ``inference_avg_us`` (the timed average: the value to use), ``model_size_mb`` and ``memory``
    (``init_mb``/``overall_mb``/``peak_mb`` where printed). Values the tool omits are None. Operator-profiling
    tables (``Timings (microseconds): count=...``) are ignored. Large values may be printed with six significant
    digits (``avg=2.95034e+06``), so averages are exact only to that precision.

    Raises:
        HwnasError: one line, when the text has no timing lines (e.g. benchmark_model failed).
    """
    warmup, timed = _phase_stats(text)
    summary = _floats(_SUMMARY_RE.search(text))
    old = _floats(_OLD_SUMMARY_RE.search(text))
    ms = {key: _floats(pattern.search(text)) for key, pattern in _MS_RES.items()}
    ms_us = {key: (values[0] * 1000.0 if values else None) for key, values in ms.items()}
    session = _floats(_SESSION_RE.search(text))

    # The count= lines come first: their min/max/first are exact integers and they exist in every version.
    inference_avg = _first(
        timed and timed.get("avg_us"), timed and _single(timed), summary and summary[3], old and old[2],
        ms_us["inference_avg_us"],
    )
    if inference_avg is None:
        raise HwnasError(f"benchmark_model output has no timing lines{_failure_hint(text)}")
    memory: dict[str, float] = {}
    for pattern, keys in _MEMORY_RES:
        values = _floats(pattern.search(text))
        if values:
            memory.update((key, value) for key, value in zip(keys, values, strict=True) if key not in memory)
    size = _floats(_MODEL_SIZE_RE.search(text))
    return {
        "warmup": warmup,
        "timed": timed if timed is not None else {"count": None, "avg_us": inference_avg},
        "init_us": _first(summary and summary[0], old and old[1], session and session[0] * 1000.0, ms_us["init_us"]),
        "first_inference_us": _first(
            warmup and warmup.get("first_us"), warmup and _single(warmup), summary and summary[1],
            ms_us["first_inference_us"],
        ),
        "warmup_avg_us": _first(
            warmup and warmup.get("avg_us"), warmup and _single(warmup), summary and summary[2], old and old[0],
            ms_us["warmup_avg_us"],
        ),
        "inference_avg_us": inference_avg,
        "model_size_mb": size[0] if size else None,
        "memory": memory,
    }


def _phase_stats(text: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The ``count=`` statistics of the warm-up and the timed phase (None where absent): the last two phases'
    (a phase's is the first such line after its "Running benchmark for at least N iterations"), else, where no
    phase is announced, the last two such lines."""
    phases: list[dict[str, Any] | None] = []
    unphased: list[dict[str, Any]] = []
    for line in text.splitlines():
        if _PHASE_RE.search(line):
            phases.append(None)
            continue
        match = _STATS_RE.search(line)
        if match is None or "Timings (microseconds)" in line or "Memory (bytes)" in line:
            continue
        stats = _parse_stats(match.group(0))
        if phases and phases[-1] is None:
            phases[-1] = stats
        elif not phases:
            unphased.append(stats)
    found = [stats for stats in phases if stats is not None] or unphased
    return (found[-2], found[-1]) if len(found) >= 2 else (None, found[0] if found else None)


def _parse_stats(text: str) -> dict[str, Any]:
    """``count=50 first=... avg=...`` -> ``{"count": 50, "first_us": ..., "avg_us": ...}``."""
    stats: dict[str, Any] = {}
    for key, value in _PAIR_RE.findall(text):
        if key == "count":
            stats["count"] = int(float(value))
        else:
            stats[f"{key}_us"] = float(value)
    return stats


def _single(stats: dict[str, Any]) -> float | None:
    """The one time of a one-run phase (printed as ``count=1 curr=T``)."""
    return stats.get("curr_us") if stats.get("count") == 1 else None


def _floats(match: re.Match[str] | None) -> list[float] | None:
    return [float(group) for group in match.groups()] if match else None


def _first(*values: Any) -> float | None:
    """The first value that is a finite number (skips None, False and NaN)."""
    for value in values:
        if isinstance(value, float) and math.isfinite(value):
            return value
    return None


def _failure_hint(text: str) -> str:
    for line in text.splitlines():
        if "ERROR" in line or "failed" in line.lower():
            return f" ({line.strip()[:160]})"
    first = first_line(text, empty="")
    return f" (output starts: {first[:160]!r})" if first else " (empty output)"


__all__ = ["parse_benchmark_model_output"]
