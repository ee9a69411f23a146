"""End-to-end measurement sets: sampled whole networks of a space, each measured paired with the reference.

A set is one JSON file: the device, fingerprint, space and resolution, the sampling seed, the planned
architectures, one row per measured network (its paired statistics, ``ratio`` and ``latency_ms``), the
re-measured subset and the noise floor computed from it. ``latency_ms = ratio x reference_ms`` where
``reference_ms`` is the reference's level over the whole set (the median of the reference's warm medians during
all pairs: ``hwnas bench``'s scale). The file is saved atomically after every network, so a killed run resumes with
no row lost.

The planned networks are sampled stratified over a latency proxy (:mod:`hwnas.latency.sampling`, re-exported
here), so a set covers the fastest and slowest networks rather than the middle only.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from tqdm import tqdm

from hwnas.checks import check_required, check_rules, matches
from hwnas.devices import DeviceProfile
from hwnas.errors import HwnasError
from hwnas.io import now_iso, write_json_atomic
from hwnas.latency.estimator import LatencyEstimator
from hwnas.latency.header import MeasuredFile
from hwnas.latency.metrics import agreement
from hwnas.latency.profile import artifacts_dir
from hwnas.latency.reference import prepare_reference, reference_arch, reference_module
from hwnas.latency.sampling import macs_proxy, sample_stratified
from hwnas.latency.set_noise import remeasure_disturbed
from hwnas.runtimes import get_runtime
from hwnas.runtimes.fingerprint import fingerprint_differences, full_fingerprint
from hwnas.runtimes.machine_state import LoadWatcher
from hwnas.runtimes.paired import WARM, PairedProtocol, PairedStats, measure_paired, turns_of
from hwnas.spaces import Architecture, SearchSpace, get_space

SCHEMA = "hwnas.measurement_set/1"


@dataclass
class SetRow:
    """One measured network: its index in the plan, architecture choices and paired statistics."""

    id: int
    choices: tuple[str, ...]
    paired: PairedStats
    measured_at: str = ""

    def to_dict(self, reference_ms: float | None) -> dict[str, Any]:
        data = {"id": self.id, "arch": " ".join(self.choices), "ratio": self.paired.ratio,
                "latency_ms": self.paired.ratio * reference_ms if reference_ms else None,
                "noisy": self.paired.noisy, "measured_at": self.measured_at}
        data["paired"] = self.paired.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str) -> SetRow:
        if not isinstance(data, dict):
            raise HwnasError(f"{source}: expected an object with id, arch and paired")
        check_required(data, ("id", "arch", "paired"), source)
        check_rules(data, [("id", lambda v: matches(v, int), "an int"),
                           ("arch", lambda v: isinstance(v, str), "op names separated by spaces")], source)
        return cls(int(data["id"]), tuple(data["arch"].split()), PairedStats.from_dict(data["paired"], source),
                   str(data.get("measured_at", "")))


@dataclass
class MeasurementSet(MeasuredFile):
    """Paired end-to-end measurements of sampled networks of one space on one device."""

    SCHEMA: ClassVar[str] = SCHEMA
    WHAT: ClassVar[str] = "measurement set"

    seed: int
    plan: list[tuple[str, ...]]
    rows: dict[int, SetRow] = field(default_factory=dict)
    repeats: dict[int, SetRow] = field(default_factory=dict)
    repeat_ids: list[int] = field(default_factory=list)
    proxy: str = "macs"
    disturbed_first: dict[int, SetRow] = field(default_factory=dict)  # replaced (and unused re-measures below):
    disturbed_again: dict[int, SetRow] = field(default_factory=dict)  # evidence of hwnas.latency.set_noise

    def space_obj(self) -> SearchSpace:
        return get_space(self.space, self.resolution, self.num_classes)

    @property
    def turns(self) -> str:
        """``"warm"`` (each turn's first run untimed: ``hwnas bench``'s scale) or ``"cold"`` (a set measured before
        warm turns, or with ``--protocol turn_warmup_runs=0``): :func:`~hwnas.runtimes.paired.turns_of`."""
        return turns_of(self.protocol)

    @property
    def reference_ms(self) -> float | None:
        """The reference's level: the median of its warm medians over every paired measurement, ``hwnas bench``'s
        scale at a typical moment (a set of cold turns, measured before warm turns, keeps its 10th percentile)."""
        medians = [r.paired.reference.median_ms for r in [*self.rows.values(), *self.repeats.values()]]
        return float(np.percentile(medians, 50 if self.turns == WARM else 10)) if medians else None

    @property
    def remeasured_disturbed(self) -> list[int]:  # rows re-measured at the end of hwnas measure
        return sorted({*self.disturbed_first, *self.disturbed_again})

    def archs(self) -> list[Architecture]:
        """The measured networks, in plan order."""
        space = self.space_obj()
        return [space.arch(self.rows[i].choices) for i in sorted(self.rows)]

    def latencies_ms(self) -> np.ndarray:
        return np.array([self.rows[i].paired.ratio * (self.reference_ms or 0.0) for i in sorted(self.rows)])

    def noise(self) -> dict[str, Any] | None:
        """The set's own noise floor: repeated networks against their first measurement, paired and raw, in the
        vocabulary of :func:`~hwnas.latency.metrics.agreement` (shares in percent). Computed from the rows each
        time: the file's ``noise`` field is written for people and never read back, so a file written when its
        shares were fractions (``acc5``, ``acc10``) is not misread."""
        ids = [i for i in self.repeat_ids if i in self.rows and i in self.repeats]
        if len(ids) < 3:
            return None
        first = [self.rows[i].paired for i in ids]
        second = [self.repeats[i].paired for i in ids]
        paired = agreement([p.ratio for p in second], [p.ratio for p in first])
        raw = agreement([p.network.median_ms for p in second], [p.network.median_ms for p in first])
        result = {"n": len(ids), "paired": paired, "raw": raw}
        all_runs = [[getattr(p, "ratio_all", None) for p in side] for side in (second, first)]
        if all(r is not None for side in all_runs for r in side):  # interrupted pairs kept: what detection bought
            result["all_runs"] = agreement(*all_runs)
        return result

    def to_dict(self) -> dict[str, Any]:
        ref = self.reference_ms
        arch = reference_arch(self.space_obj())
        return {
            **self.header_dict(), "seed": self.seed, "proxy": self.proxy, "created": self.created,
            "updated": self.updated,
            "reference": {"arch": " ".join(arch.choices), "median_ms": ref},
            "plan": [" ".join(c) for c in self.plan],
            "rows": [self.rows[i].to_dict(ref) for i in sorted(self.rows)],
            "repeat_ids": list(self.repeat_ids),
            "repeats": [self.repeats[i].to_dict(ref) for i in sorted(self.repeats)],
            "remeasured_disturbed": self.remeasured_disturbed,
            **{key: [rows[i].to_dict(ref) for i in sorted(rows)] for key, rows in
               (("disturbed_first", self.disturbed_first), ("disturbed_again", self.disturbed_again))},
            "noise": self.noise(),
        }

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise HwnasError("measurement set has no path to save to")
        self.updated = now_iso()
        write_json_atomic(target, self.to_dict())
        self.path = target
        return target

    @classmethod
    def from_dict(cls, data: Any, source: str) -> MeasurementSet:
        header = cls.check_header(data, source, {"seed": int, "plan": list, "rows": list})
        space = get_space(data["space"], data["resolution"], data["num_classes"])
        plan = []
        for i, text in enumerate(data["plan"]):
            if not isinstance(text, str):
                raise HwnasError(f"{source}: plan[{i}]: expected op names separated by spaces")
            arch = Architecture(space.name, space.resolution, tuple(text.split()), space.num_classes)
            plan.append(space.validate(arch, f"{source}: plan[{i}]").choices)
        rows = {}
        for i, raw in enumerate(data["rows"]):
            row = SetRow.from_dict(raw, f"{source}: rows[{i}]")
            if not 0 <= row.id < len(plan) or row.choices != plan[row.id]:
                raise HwnasError(f"{source}: rows[{i}]: id {row.id} does not match the plan's architecture")
            rows[row.id] = row
        repeats = {r.id: r for r in (SetRow.from_dict(raw, f"{source}: repeats[{i}]")
                                     for i, raw in enumerate(data.get("repeats", [])))}
        return cls(**header, seed=data["seed"], plan=plan, rows=rows, repeats=repeats,
                   repeat_ids=[int(i) for i in data.get("repeat_ids", [])], proxy=str(data.get("proxy", "macs")),
                   **{key: {r.id: r for r in (SetRow.from_dict(raw, f"{source}: {key}[{i}]")
                                              for i, raw in enumerate(data.get(key, [])))}
                      for key in ("disturbed_first", "disturbed_again")})


# -- measuring -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasureConfig:
    """Options of ``hwnas measure``.

    Attributes:
        n: networks in the set.
        seed: sampling seed (the plan is a function of space, resolution, n, seed and the proxy).
        repeat: networks measured a second time, after all others, for the set's noise floor (0: none).
        chunk: networks converted together (LiteRT converts in batches).
        protocol: :class:`PairedProtocol` fields to change.
        progress: progress bar on stderr.
    """

    n: int = 50
    seed: int = 0
    repeat: int = 10
    chunk: int = 8
    protocol: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass(frozen=True)
class MeasureResult:
    path: Path
    rows: int
    measured: int
    reused: int
    reference_ms: float | None
    noise: dict[str, Any] | None
    seconds: float
    machine: dict[str, Any] | None = None  # what the LoadWatcher saw (None where it is inert)
    remeasured_disturbed: int = 0  # rows of the set re-measured at its end (hwnas.latency.set_noise)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.path), "rows": self.rows, "measured": self.measured, "reused": self.reused,
                "reference_ms": self.reference_ms, "noise": self.noise, "seconds": round(self.seconds, 1),
                "remeasured_disturbed": self.remeasured_disturbed,
                **({"machine": self.machine} if self.machine is not None else {})}


def measure_set(device: DeviceProfile, space: SearchSpace, out: Path, config: MeasureConfig = MeasureConfig(),
                proxy: LatencyEstimator | None = None) -> MeasureResult:
    """Measure (or resume) the set at ``out``: every planned network paired with the reference, then repeats, then
    the disturbed rows again (:mod:`hwnas.latency.set_noise`).

    Converted models are kept in the device's artifact cache (:func:`~hwnas.latency.profile.artifacts_dir`), so
    repeats and resumed runs do not convert again."""
    start = time.perf_counter()
    if config.repeat < 0 or config.chunk < 1:
        raise HwnasError(f"measure: --repeat must be >= 0 and --chunk >= 1, got {config.repeat}, {config.chunk}")
    protocol = PairedProtocol.from_dict({**PairedProtocol().to_dict(), **config.protocol}, "--protocol")
    config = _capped(config, space)
    watcher = LoadWatcher("network")  # other processes' load and the reference's level: one line at the end
    # the bar shows from the start: planning and converting the reference take a while
    bar = tqdm(total=config.n + min(config.repeat, config.n), unit="net", disable=not config.progress,
               desc=f"measure {device.name} {space.name}@{space.resolution}", dynamic_ncols=True)
    bar.set_postfix_str("planning")
    with bar:
        runtime = get_runtime(device.backend, device.runtime_config(), artifacts_dir(device))
        fingerprint = full_fingerprint(runtime)
        mset = _open_set(Path(out), device, space, fingerprint, protocol, config, proxy)
        todo = [i for i in range(len(mset.plan)) if i not in mset.rows]
        repeats = [i for i in mset.repeat_ids if i not in mset.repeats]
        reused = len(mset.rows)
        bar.reset(total=len(mset.plan) + len(mset.repeat_ids))
        bar.update(reused + len(mset.repeats))
        bar.set_postfix_str("converting the reference network")
        module, shape, _ = reference_module(space)
        reference = prepare_reference(runtime, module, shape)
        try:
            for ids, store in ((todo, mset.rows), (repeats, mset.repeats)):
                _measure_rows(runtime, reference, mset, ids, store, protocol, config.chunk, bar, watcher)
            remeasured = remeasure_disturbed(mset, lambda ids, store: _measure_rows(
                runtime, reference, mset, ids, store, protocol, config.chunk, bar, watcher), bar)
        finally:
            reference.close()
    state = watcher.warn()  # after the bar is closed, so the line is not mangled
    return MeasureResult(mset.path or Path(out), len(mset.rows), len(todo), reused, mset.reference_ms, mset.noise(),
                         time.perf_counter() - start, state.to_dict() if state else None, remeasured)


def _capped(config: MeasureConfig, space: SearchSpace) -> MeasureConfig:
    """``config`` with ``n`` at most the space's distinct architectures, saying so in one line up front."""
    if config.n <= space.size:
        return config
    print(f"hwnas: note: --n {config.n}: the {space.name} space at {space.resolution} has only {space.size} distinct "
          f"architectures; measuring all {space.size}", file=sys.stderr)
    return dataclasses.replace(config, n=space.size)


def network_items(space: SearchSpace, plan: Sequence[tuple[str, ...]],
                  ids: Sequence[int]) -> list[tuple[str, Any, Any]]:
    """``(name, module, input shape)`` of planned networks for :meth:`Runtime.prepare_many`: weights seeded by the
    architecture and a name unique to it, so a converted file in the artifact cache is found again (a repeat, a
    resumed set, or :mod:`tools.preconvert_set` converting ahead on another core)."""
    items = []
    for i in ids:
        choices = plan[i]
        tag = f"{zlib.crc32(' '.join(choices).encode()):08x}"
        with torch.random.fork_rng():
            torch.manual_seed(int(tag, 16))
            module = space.build(space.arch(choices)).eval()
        items.append((f"net{i}-{space.name}{space.resolution}-{tag}", module, space.input_shape))
    return items


def _measure_rows(runtime: Any, reference: Any, mset: MeasurementSet, ids: list[int], store: dict[int, SetRow],
                  protocol: PairedProtocol, chunk: int, bar: tqdm, watcher: LoadWatcher | None = None) -> None:
    space = mset.space_obj()
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        prepared = runtime.prepare_many(network_items(space, mset.plan, part))

        def record(key: str, stats: PairedStats) -> None:
            i = int(key.split("-", 1)[0].removeprefix("net"))
            store[i] = SetRow(i, mset.plan[i], stats, now_iso())
            mset.save()
            bar.update(1)
            bar.set_postfix_str(f"ratio {stats.ratio:.3f}" + (" noisy" if stats.noisy else ""))
            if watcher is not None:
                watcher.note(stats)

        try:
            measure_paired(prepared, reference, protocol, on_done=record)
        finally:
            for model in prepared.values():
                model.close()


def _open_set(path: Path, device: DeviceProfile, space: SearchSpace, fingerprint: dict[str, Any],
              protocol: PairedProtocol, config: MeasureConfig, proxy: LatencyEstimator | None) -> MeasurementSet:
    if path.exists():
        mset = MeasurementSet.load(path)
        if (mset.space, mset.resolution, mset.num_classes) != (space.name, space.resolution, space.num_classes):
            raise HwnasError(f"{path}: set is for {mset.space}@{mset.resolution}/{mset.num_classes}, not "
                             f"{space.name}@{space.resolution}/{space.num_classes}; pass another --out")
        if mset.device_name != device.name:
            raise HwnasError(f"{path}: set is for device {mset.device_name!r}, not {device.name!r}")
        if (mset.seed, len(mset.plan)) != (config.seed, config.n):
            raise HwnasError(f"{path}: set was planned with --seed {mset.seed} --n {len(mset.plan)}; rerun with those "
                             f"to resume, or pass another --out")
        differences = fingerprint_differences(mset.fingerprint, fingerprint)
        if differences:
            raise HwnasError(f"{path}: refusing to measure into a set from another machine or runtime "
                             f"({'; '.join(differences)}); pass another --out")
        if mset.turns != turns_of(protocol.to_dict()):
            raise HwnasError(f"{path}: the set was measured with {mset.turns} turns, this run would time "
                             f"{turns_of(protocol.to_dict())} turns (another scale); pass another --out")
        stored_s = float((mset.protocol or {}).get("turn_warmup_s", 0.0))
        if mset.turns == WARM and stored_s != protocol.turn_warmup_s:
            raise HwnasError(f"{path}: the set's turns were warmed for turn_warmup_s {stored_s:g} s, this run's for "
                             f"{protocol.turn_warmup_s:g} s (a sub-millisecond network's scale differs); pass "
                             f"--protocol turn_warmup_s={stored_s:g} to resume it, or another --out")
        return mset
    plan = [a.choices for a in sample_stratified(space, config.n, config.seed, proxy)]
    step = max(1, len(plan) // max(config.repeat, 1))
    repeat_ids = list(range(0, len(plan), step))[:config.repeat] if config.repeat else []
    mset = MeasurementSet(device=device.to_dict(), space=space.name, resolution=space.resolution,
                          num_classes=space.num_classes, fingerprint=fingerprint, protocol=protocol.to_dict(),
                          seed=config.seed, plan=plan, repeat_ids=repeat_ids,
                          proxy="table" if proxy is not None else "macs")
    mset.save(path)
    return mset


__all__ = ["MeasureConfig", "MeasureResult", "MeasurementSet", "SetRow", "macs_proxy", "measure_set", "network_items",
           "sample_stratified"]
