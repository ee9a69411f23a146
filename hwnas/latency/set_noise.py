"""Noise gates of measurement sets: the disturbed rows re-measured at the end of ``hwnas measure``, and the check
``hwnas predictor fit`` makes of a set's own re-measure agreement against what its runtime reaches.

**Re-measure.** A paired measurement drops the pairs whose turn was interrupted and takes them again
(:mod:`hwnas.runtimes.paired`), so its ratio uses clean turns; but a row that had to drop many was measured while
the machine was busy, when even the clean turns share caches and memory bandwidth with another process. After the
planned rows and the repeats, the rows that discarded at least :data:`DISTURBED_SHARE` of their pairs, or are
flagged noisy, are measured once more, most disturbed first, at most as many as the set repeats (``--repeat``: a
set without a noise floor, e.g. the search's own, takes no longer). The row keeps the less disturbed of its two
measurements (not noisy first, then the smaller discarded share; the first on a tie); the other is kept as
evidence (``disturbed_first``: first measurements replaced; ``disturbed_again``: re-measures not used), and the
ids in ``remeasured_disturbed`` are not measured again when the set is resumed.

**Gate.** A set whose re-measured networks agree within +-5% (``noise.paired.within5_pct``) more than
:data:`MARGIN_POINTS` below what its runtime reaches on a quiet machine (:data:`EXPECTED_WITHIN5_PCT`) teaches a
predictor its noise; ``predictor fit`` refuses it in one line unless allowed (``--allow-noisy``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

from hwnas.errors import HwnasError

if TYPE_CHECKING:
    from hwnas.latency.sets import MeasurementSet, SetRow
    from hwnas.runtimes.paired import PairedStats

DISTURBED_SHARE = 0.2
"""A row is disturbed when its interrupted pairs are at least this share of all its pairs (clean + discarded)."""

EXPECTED_WITHIN5_PCT: dict[str, float] = {"onnxruntime": 95.0, "torch": 95.0, "litert": 90.0}
"""What a set's re-measured networks reach within +-5% on a quiet machine, by backend: the shipped sets' ``noise``
(latency_tables/sets, docs/predictors.md): ONNX Runtime 90-100% at 32-224 (one held-out set at 128: 70%), eager
PyTorch 100%, LiteRT 100% at 224 and 55-60% at 32 (0.37 ms networks, two runs per turn: a noisy day there).
Backends without shipped sets get :data:`DEFAULT_EXPECTED_WITHIN5_PCT`."""
DEFAULT_EXPECTED_WITHIN5_PCT = 90.0
MARGIN_POINTS = 30.0
""""Far below": more than this many points under the runtime's figure (ONNX Runtime: below 65%, the issue's 5 of 10
refused; every shipped training set passes)."""
MIN_NETWORKS = 5
"""Fewer re-measured networks give no verdict: one network would move the share by 25 points or more."""


# -- re-measuring the disturbed rows -----------------------------------------------------------------------------
def discarded_share(paired: PairedStats) -> float:
    """The share of a measurement's pairs that were dropped as interrupted: discarded / (clean + discarded)."""
    total = paired.network.n + paired.discarded
    return paired.discarded / total if total else 0.0


def is_disturbed(paired: PairedStats) -> bool:
    return paired.noisy or discarded_share(paired) >= DISTURBED_SHARE


def _disturbance(paired: PairedStats) -> tuple[bool, float]:
    """Order of how disturbed a measurement was: noisy ones above all, then by discarded share."""
    return paired.noisy, discarded_share(paired)


def pick_disturbed(mset: MeasurementSet) -> list[int]:
    """The rows still to re-measure, most disturbed first (ties in plan order), within the set's bound (as many as
    its repeats) less those already re-measured: a resumed set picks the same rows as the run it resumes."""
    done = set(mset.remeasured_disturbed)
    budget = max(0, len(mset.repeat_ids) - len(done))
    candidates = [i for i in sorted(mset.rows) if i not in done and is_disturbed(mset.rows[i].paired)]
    candidates.sort(key=lambda i: _disturbance(mset.rows[i].paired), reverse=True)
    return candidates[:budget]


class _KeepLessDisturbed(dict):  # type: ignore[type-arg]
    """The store a re-measure is recorded in (before the set is saved): the set's row becomes the re-measure when
    that was less disturbed; the measurement not used is kept as evidence."""

    def __init__(self, mset: MeasurementSet) -> None:
        super().__init__()
        self.mset = mset

    def __setitem__(self, i: int, again: SetRow) -> None:
        super().__setitem__(i, again)
        first = self.mset.rows[i]
        if _disturbance(again.paired) < _disturbance(first.paired):
            self.mset.rows[i] = again
            self.mset.disturbed_first[i] = first
        else:
            self.mset.disturbed_again[i] = again


def remeasure_disturbed(mset: MeasurementSet, measure_rows: Callable[[list[int], dict[int, Any]], None],
                        bar: Any = None) -> int:
    """Re-measure the set's disturbed rows (:func:`pick_disturbed`) with ``measure_rows(ids, store)`` (which records
    each row in ``store`` and saves the set); returns how many rows of the set have been re-measured in all."""
    ids = pick_disturbed(mset)
    if ids:
        if bar is not None:
            bar.total += len(ids)
            bar.refresh()
        measure_rows(ids, _KeepLessDisturbed(mset))
    return len(mset.remeasured_disturbed)


# -- the gate of predictor fit -----------------------------------------------------------------------------------
def expected_within5_pct(mset: MeasurementSet) -> float:
    return EXPECTED_WITHIN5_PCT.get(str(mset.device.get("backend", "")), DEFAULT_EXPECTED_WITHIN5_PCT)


def noise_shortfall(mset: MeasurementSet) -> str | None:
    """The figures, in one line, when the set's own re-measure agrees far below its runtime's figure; None when it
    does not, or cannot tell (no repeats, or fewer than :data:`MIN_NETWORKS` re-measured)."""
    noise = mset.noise()
    if not noise or noise["n"] < MIN_NETWORKS:
        return None
    share, expected = float(noise["paired"]["within5_pct"]), expected_within5_pct(mset)
    if share >= expected - MARGIN_POINTS:
        return None
    return (f"{mset.path}: its re-measured networks agree within ±5% for {share:.0f}% ({noise['n']} networks); "
            f"{mset.device_name} sets reach {expected:.0f}% on a quiet machine (refused below "
            f"{expected - MARGIN_POINTS:.0f}%)")


def check_noise(sets: Sequence[MeasurementSet], allow_noisy: bool = False, flag: str = "--allow-noisy") -> list[str]:
    """Refuse (one line, :class:`HwnasError`) the first set too noisy to learn from, unless ``allow_noisy``: then
    one warning line on stderr per such set. Returns the sets' figures (:func:`noise_shortfall`)."""
    notes = [note for note in (noise_shortfall(mset) for mset in sets) if note]
    if notes and not allow_noisy:
        raise HwnasError(f"{notes[0]}: re-measure on a quieter machine, or pass {flag}")
    for note in notes:
        print(f"hwnas: warning: {note}: fitted anyway ({flag})", file=sys.stderr)
    return notes


__all__ = ["DISTURBED_SHARE", "EXPECTED_WITHIN5_PCT", "MARGIN_POINTS", "MIN_NETWORKS", "check_noise",
           "discarded_share", "is_disturbed", "noise_shortfall", "pick_disturbed", "remeasure_disturbed"]
