"""Typed records that cross between the rooms of a search run: a network's measurement (with where it comes from
and every attempt), a closed-loop step, a trained network. Each serializes to the JSON keys of ``report.json``
(:meth:`to_dict`) and reads them back (``from_dict``), which is also how the run's checkpoint stores them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from torch import nn

from hwnas.runtimes.protocol import Stats
from hwnas.spaces import Architecture


def arch_id(arch: Architecture) -> str:
    """How the closed loop's log and the checkpoint name an architecture: its choices joined by spaces."""
    return " ".join(arch.choices)


@dataclass(frozen=True)
class Attempt:
    """One measurement attempt of a network: its median, whether its rounds disagreed, where it comes from
    (``closed loop``, ``final``, ``final (paired)``)."""

    median_ms: float
    noisy: bool
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "noisy": self.noisy, "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(float(data["median_ms"]), bool(data["noisy"]), str(data["source"]))


@dataclass
class Measurement:
    """A network's end-to-end latency as the search keeps it: the statistics of its quietest attempt, where that
    attempt comes from, and every attempt in order (the evidence for the choice).

    JSON: the :class:`~hwnas.runtimes.protocol.Stats` keys, then ``source`` and ``attempts``.
    """

    stats: Stats
    source: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return self.stats.median_ms

    @property
    def noisy(self) -> bool:
        return self.stats.noisy

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats.to_dict(), "source": self.source, "attempts": [a.to_dict() for a in self.attempts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        stats = {k: v for k, v in data.items() if k not in ("source", "attempts")}
        return cls(Stats.from_dict(stats, "measurement"), str(data["source"]),
                   [Attempt.from_dict(a) for a in data.get("attempts", [])])


@dataclass
class PairedMeasurement:
    """A network's latency from one paired measurement against the reference network
    (:class:`~hwnas.search.measure.PairedMeter`): ``median_ms = ratio x reference_ms``; ``paired`` holds the pairs'
    statistics.

    JSON: ``median_ms``, ``noisy``, ``source``, ``ratio``, ``reference_ms``, ``paired``, ``attempts``.
    """

    median_ms: float
    noisy: bool
    source: str
    ratio: float
    reference_ms: float
    paired: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "noisy": self.noisy, "source": self.source, "ratio": self.ratio,
                "reference_ms": self.reference_ms, "paired": self.paired,
                "attempts": [a.to_dict() for a in self.attempts]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairedMeasurement:
        return cls(float(data["median_ms"]), bool(data["noisy"]), str(data["source"]), float(data["ratio"]),
                   float(data["reference_ms"]), dict(data["paired"]),
                   [Attempt.from_dict(a) for a in data.get("attempts", [])])


AnyMeasurement = Union[Measurement, PairedMeasurement]


def measurement_from_dict(data: Mapping[str, Any]) -> AnyMeasurement:
    """The record a measurement's JSON describes: paired when it carries a ``ratio``."""
    return PairedMeasurement.from_dict(data) if "ratio" in data else Measurement.from_dict(data)


def as_measurement(value: AnyMeasurement | Mapping[str, Any]) -> AnyMeasurement:
    """``value`` as a record: a record stays, its JSON (a checkpoint's, written by this version or an earlier one;
    a meter's that answers in JSON) is read back."""
    return value if isinstance(value, (Measurement, PairedMeasurement)) else measurement_from_dict(value)


@dataclass
class LoopStep:
    """One architecture the closed loop decoded and measured: the latency target it decoded under (the table's,
    or the predictor's), the estimate and the measurement. JSON: ``table_target_ms``, ``estimated_ms``,
    ``measured_ms``, ``arch`` (:func:`arch_id`), ``measured``."""

    table_target_ms: float
    estimated_ms: float
    arch: str
    measured: AnyMeasurement

    @property
    def measured_ms(self) -> float:
        return self.measured.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {"table_target_ms": self.table_target_ms, "estimated_ms": self.estimated_ms,
                "measured_ms": self.measured_ms, "arch": self.arch, "measured": self.measured.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopStep:
        return cls(float(data["table_target_ms"]), float(data["estimated_ms"]), str(data["arch"]),
                   as_measurement(data["measured"]))


def last_step_of(loop: list[LoopStep], arch: Architecture) -> LoopStep | None:
    """The closed loop's step that measured ``arch`` (the last: an architecture is measured once, the log may
    repeat it), or None when the loop did not measure it."""
    matches = [step for step in loop if step.arch == arch_id(arch)]
    return matches[-1] if matches else None


@dataclass
class TrainedNetwork:
    """A network trained from scratch and evaluated on the ``test`` split; ``measured`` once the final measurement
    has run."""

    arch: Architecture
    net: nn.Module
    accuracy: float
    history: list[dict[str, float]]
    seconds: float
    measured: AnyMeasurement | None = None

    @property
    def measured_ms(self) -> float | None:
        return self.measured.median_ms if self.measured is not None else None
