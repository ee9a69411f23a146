"""Aiming with a latency model: choose it, set the target, and the closed loop's refit policy.

Any latency model serves the search; what the one closed loop (:func:`hwnas.search.closed_loop.close_loop`) and the
verdict do with it follows from what the model can do (its capabilities, never its class):

* a kind that refits (``supports_refit``) at a known reference level (:func:`refits`): the loop *learns*
  (:class:`RefitPolicy`). Every architecture it measures (paired with the reference, so a drifting machine does not
  move the figure) is added to the predictor's training rows with weight ``closed_loop_weight`` and the predictor is
  refitted before the next decode, so its error near the searched architectures shrinks with every step and the
  next decode under ``(1 - margin) T`` lands nearer;
* any other model (a table, a transfer or kernel predictor) cannot tell which architecture lands near T, so the
  loop steps its target around it by trial (:class:`hwnas.search.closed_loop.StepPolicy`).

Where the model's predictions are a multiple of a reference network's latency (:func:`latency_level`: a predictor
fitted on measurement sets of this space), the loop and the final verdict measure paired,
``latency = ratio x reference_ms`` at the model's reference level, one measurement per network; elsewhere they
measure end to end in milliseconds.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hwnas.devices import DeviceProfile
from hwnas.errors import HwnasError
from hwnas.latency.estimator import LatencyEstimator, TableEstimator
from hwnas.latency.predictors import check_device, load_predictor
from hwnas.latency.predictors.base import Predictor, SpacePredictor
from hwnas.latency.predictors.locate import find_predictor, user_predictor_path
from hwnas.runtimes import get_runtime, runtime_class
from hwnas.runtimes.fingerprint import full_fingerprint
from hwnas.search.decode import fastest_arch, latency_range, most_probable_arch
from hwnas.search.decoders import as_decoder
from hwnas.search.measure import PairedMeter  # noqa: F401 (tools and benchmarks import it from here)
from hwnas.search.records import LoopStep
from hwnas.search.run_config import SearchConfig
from hwnas.spaces import Architecture, SearchSpace


def default_predictor_path(device: str, space: SearchSpace) -> Path:
    """The device's calibrated predictor of ``space`` as ``auto`` finds it: the user's file, else the shipped one
    (:func:`~hwnas.latency.predictors.locate.find_predictor`); where neither exists, the user's path (where one
    written for the device would be found first)."""
    return find_predictor(device, "calibrated", space) or user_predictor_path(device, "calibrated", space)


def latency_level(estimator: Any) -> float | None:
    """The reference network's latency that ``estimator``'s predictions are a multiple of, when known (a predictor
    fitted on measurement sets of this space): its closed loop and verdict then measure paired at that level. None
    for a table, a predictor fitted from a CSV, and the kernel predictor's estimator of a space (plain ms)."""
    level = getattr(estimator, "reference_ms", None)
    return float(level) if level else None


def refits(estimator: Any) -> bool:
    """Whether the closed loop refits ``estimator`` with its paired measurements (:func:`aim_on_device`): a kind
    with ``supports_refit`` at a known :func:`latency_level`. Any other model steps its target instead."""
    return bool(getattr(estimator, "supports_refit", False)) and latency_level(estimator) is not None


@dataclass
class Choice:
    """The latency model a search aims with, and why."""

    estimator: LatencyEstimator
    kind: str  # "table", a predictor kind ("calibrated", "transfer", "kernel"), or "estimator" (an object given)
    path: str | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "note": self.note}

    def describe(self) -> str:
        """How messages name the model: ``latency table``, ``calibrated predictor``, ..."""
        return {"table": "latency table", "estimator": "given latency model"}.get(self.kind, f"{self.kind} predictor")


def choose_estimator(device: DeviceProfile, space: SearchSpace, table: TableEstimator, config: SearchConfig,
                     out: Path, progress: bool, latency_model: Any = None) -> Choice:
    """``latency_model`` when given (:func:`given_model`), else the predictor ``config.predictor`` names (any kind),
    else (``auto``) the device's calibrated predictor found like its tables (user folder first, then shipped), else
    a new one built in ``out``, else the table; see :class:`~hwnas.search.run_config.SearchConfig`."""
    if latency_model is not None:
        if config.predictor != "auto":
            raise HwnasError(f"latency_model: given together with config.predictor={config.predictor!r}; give one "
                             "of them (leave config.predictor at 'auto')")
        return given_model(latency_model, device, space)
    if config.predictor == "none" or not config.measure and config.predictor == "auto":
        return Choice(table, "table", str(table.table.path), f"predictor={config.predictor!r}" +
                      ("" if config.measure else " and measure is off"))
    reason, fingerprint = _runtime_here(device)
    if config.predictor != "auto":
        predictor = load_predictor(config.predictor)
        return Choice(_checked(predictor, device, space, fingerprint, strict=False), predictor.kind,
                      config.predictor, "given")
    path = find_predictor(device.name, "calibrated", space)
    if path is not None:
        try:
            predictor = load_predictor(path)
            return Choice(_checked(predictor, device, space, fingerprint, strict=True), predictor.kind, str(path),
                          "the device's predictor")
        except HwnasError as exc:
            print(f"hwnas: warning: not using {path}: {str(exc).split(': ', 1)[-1]}", file=sys.stderr)
    if reason is not None or config.predictor_networks == 0:
        why = f"the runtime is unavailable ({reason})" if reason else "predictor_networks is 0"
        return Choice(table, "table", str(table.table.path), f"no fitting predictor and {why}")
    built = _build(device, space, table, config, out, progress)
    return Choice(built, "calibrated", str(out / "predictor.json"),
                  f"built from {config.predictor_networks} networks measured now")


def given_model(model: Any, device: DeviceProfile, space: SearchSpace) -> Choice:
    """A latency model object given by a Python caller (``run_search(latency_model=...)``), checked as a loaded
    file is (its space, its device): a predictor of any kind (its estimator of ``space``, through ``for_space``),
    or a :class:`LatencyEstimator` such as a :class:`TableEstimator`; anything else is one line."""
    if isinstance(model, Predictor):
        estimator = _checked(model, device, space, _runtime_here(device)[1], strict=False, where="latency_model")
        return Choice(estimator, model.kind, str(model.path) if model.path else None, "given (latency_model)")
    if not isinstance(model, LatencyEstimator):
        raise HwnasError(f"latency_model: expected a Predictor, a SpacePredictor or a LatencyEstimator (such as a "
                         f"TableEstimator), got {type(model).__name__}")
    ours, theirs = model.space, space
    if (ours.name, ours.resolution, ours.num_classes) != (theirs.name, theirs.resolution, theirs.num_classes):
        raise HwnasError(f"latency_model: estimates {ours.name}@{ours.resolution}/{ours.num_classes} classes, the "
                         f"search is of {theirs.name}@{theirs.resolution}/{theirs.num_classes} classes")
    table = getattr(model, "table", None)
    table_device = getattr(table, "device_name", None)
    if table_device and table_device != device.name:
        raise HwnasError(f"latency_model: a table of device {table_device!r}, the search is on {device.name!r}")
    path = getattr(table, "path", None)
    return Choice(model, "table" if table is not None else "estimator", str(path) if path else None,
                  "given (latency_model)")


def _runtime_here(device: DeviceProfile) -> tuple[str | None, dict[str, Any] | None]:
    """Why ``device``'s runtime is unavailable here (None: it is), and its full fingerprint when it is."""
    reason = runtime_class(device.backend).unavailable_reason(device.runtime_config())
    if reason is not None:
        return reason, None
    with tempfile.TemporaryDirectory(prefix="hwnas-fp-") as tmp:
        return None, full_fingerprint(get_runtime(device.backend, device.runtime_config(), Path(tmp)))


def aim_target(space: SearchSpace, choice: Choice, table: TableEstimator, config: SearchConfig
               ) -> tuple[float, float, float]:
    """``(T, fastest, slowest)`` by the latency model the search aims with, before the search: T is
    ``config.target_ms``, else ``target_fraction`` of the way from the fastest to the slowest architecture.

    A T under the fastest architecture is refused (no architecture meets it: the search could only return the
    fastest one, whatever it learned). A T over the slowest is searched, with one warning line (and the report's
    ``target_note``): every architecture meets it, so latency constrains nothing. Refusing it would turn away a
    legitimate question ("the most accurate network, it is fast enough anyway") and scripts sweeping targets; the
    closed loop still measures the result against T, since the estimate is a model.
    """
    span = latency_range(space, choice.estimator, table if choice.estimator is not table else None)
    if span.note:
        choice.note += f"; {span.note}"
        print(f"hwnas: warning: {span.note}", file=sys.stderr)
    if config.target_ms is None:
        return span.target_at(config.target_fraction), span.fastest_ms, span.slowest_ms
    target = config.target_ms
    model = choice.describe()
    if target < span.fastest_ms:
        raise HwnasError(f"target {target:.4g} ms is below the fastest architecture of {space.name}@"
                         f"{space.resolution} (est. {span.fastest_ms:.4g} ms by the {model}): no architecture meets "
                         f"it; give --target-ms {_round_up(span.fastest_ms)} or more")
    note = span.target_note(target)
    if note:
        print(f"hwnas: warning: {note}", file=sys.stderr)
    return target, span.fastest_ms, span.slowest_ms


def _round_up(ms: float, digits: int = 4) -> float:
    """``ms`` rounded up to ``digits`` significant digits: a figure the user can pass back that is not refused."""
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(ms)))
    return math.ceil(ms * scale) / scale


def _checked(predictor: Predictor, device: DeviceProfile, space: SearchSpace, fingerprint: dict[str, Any] | None,
             strict: bool, where: str | None = None) -> SpacePredictor:
    """``predictor``'s estimator of ``space`` (``for_space``: one line when it has none, e.g. another space), when
    it belongs to ``device``; ``where`` names it in messages. A predictor of another device or runtime is refused
    (:func:`~hwnas.latency.predictors.base.check_device`, as ``hwnas predict`` does); one of another machine
    (``fingerprint``: this runtime's, when built here) is refused when ``strict`` (``auto`` then looks further),
    else the one warning line ``predict`` gives: a predictor the user names is used, since the closed loop and the
    verdict measure on this machine."""
    named = str(predictor.path or "predictor")
    where = where or named
    try:
        estimator = predictor.for_space(space)
    except HwnasError as exc:
        raise HwnasError(f"{where}: {str(exc).removeprefix(named + ': ')}") from None
    try:
        note = check_device(predictor, device, (fingerprint or {}).get("runtime"))
    except HwnasError as exc:
        raise HwnasError(f"{where}: {str(exc).removeprefix(named + ': ')}") from None
    if note:
        note = f"{where}: {note.removeprefix(named + ': ')}"
        if strict:
            raise HwnasError(note)
        print(f"hwnas: warning: {note}", file=sys.stderr)
    return estimator


def _build(device: DeviceProfile, space: SearchSpace, table: TableEstimator, config: SearchConfig, out: Path,
           progress: bool) -> SpacePredictor:
    from hwnas.latency.predictors.fit import fit_predictor
    from hwnas.latency.sets import MeasureConfig, measure_set

    set_path, predictor_path = out / "predictor_set.json", out / "predictor.json"
    doing = "completing the measurement set of" if set_path.is_file() else "measuring"  # a resumed run keeps its set
    print(f"hwnas: no predictor for {device.name} {space.name}@{space.resolution} fits this machine; {doing} "
          f"{config.predictor_networks} networks to build one (set predictor=none to use the table alone)",
          file=sys.stderr)
    measure_set(device, space, set_path, MeasureConfig(n=config.predictor_networks, seed=config.seed, repeat=0,
                                                       protocol=dict(config.paired), progress=progress), table)
    fit_predictor(space=space, out=predictor_path, table=table.table.path, sets=[set_path])
    return _checked(load_predictor(predictor_path), device, space, None, strict=True)


class RefitPolicy:
    """The refit choice of the next target and estimator (module docstring), a
    :class:`~hwnas.search.closed_loop.LoopPolicy`: each step decodes the most probable architecture predicted within
    the predictor target (the aim at first, :func:`_decode_aimed`). A new measurement outside the accepted band joins
    the predictor's rows with weight ``closed_loop_weight`` and the refitted predictor (any kind with
    ``supports_refit``) decodes the next architecture under the aim; nothing more once the budget is spent. When an
    architecture measured before is decoded again, the predictor target is scaled by ``aim / measured`` of it, so the
    loop never stalls; the fastest one decoded again over the aim ends the loop."""

    logs_repeats = False

    def __init__(self, space: SearchSpace, predictor: SpacePredictor, decoder: Any, aim_ms: float,
                 config: SearchConfig) -> None:
        self.space, self.estimator, self.aim = space, predictor, aim_ms
        self.decoder = as_decoder(space, decoder)  # a Decoder, or the search's log-probabilities
        self.margin, self.weight = config.closed_loop_margin, config.closed_loop_weight
        self.target_ms = aim_ms
        self.refused = 0  # refits not taken (:meth:`_refit`)

    def first(self) -> tuple[float, Architecture]:
        return self.target_ms, _decode_aimed(self.decoder, self.estimator, self.target_ms, self.margin)

    def next(self, target_ms: float, arch: Architecture, measured_ms: float, new: bool,
             meter: Any) -> tuple[float, Architecture] | None:
        if new and self._refit(arch, measured_ms):
            self.target_ms = self.aim
            if meter.spent:
                return None
        elif new and meter.spent:
            return None
        elif arch == self.decoder.fastest(self.estimator) and measured_ms > self.aim:
            return None
        else:
            self.target_ms *= self.aim / measured_ms
        return self.first()

    def fallback(self) -> Architecture:
        return self.decoder.under(self.estimator, self.aim) or self.decoder.fastest(self.estimator)

    def _refit(self, arch: Architecture, measured_ms: float) -> bool:
        """Refit on the new measurement, unless the refit estimates some architecture of the space at <= 0 ms (a
        correction fitted on few, noisy networks extrapolating at the ends of the space): then the previous fit is
        kept, with one warning line, and the step scales the target instead (as for a repeat)."""
        refit = self.estimator.with_rows([arch], [measured_ms], weight=self.weight,
                                         source="closed loop").for_space(self.space)
        fastest_ms = refit.latency_ms(fastest_arch(self.space, refit))
        if fastest_ms > 0 and math.isfinite(fastest_ms):
            self.estimator = refit
            return True
        if not self.refused:
            print(f"hwnas: warning: closed loop: refitting the predictor on a network measured at {measured_ms:.4g} "
                  f"ms puts the fastest architecture at {fastest_ms:.4g} ms (a latency is never <= 0); the loop keeps "
                  "the previous fit and steps its target instead", file=sys.stderr)
        self.refused += 1
        return False


def aim_on_device(space: SearchSpace, predictor: SpacePredictor, target_ms: float, decoder: Any, meter: Any,
                  config: SearchConfig, *,
                  known: Mapping[str, Any] | None = None, on_measured: Callable[[str, Any], None] | None = None
                  ) -> tuple[Architecture, list[LoopStep], SpacePredictor]:
    """:func:`~hwnas.search.closed_loop.close_loop` with the :class:`RefitPolicy`, measured paired by ``meter``
    (:class:`~hwnas.search.measure.PairedMeter`'s ``measure(nets, source)``), at most ``config.closed_loop_steps``
    measurements: returns the slowest architecture measured under the aim ``(1 - margin) T`` (else the fastest
    measured), one step per measured architecture, and the refitted predictor. ``known`` and ``on_measured``:
    :class:`~hwnas.search.closed_loop.LoopMeter`'s (an interrupted loop's records replayed, new ones told)."""
    from hwnas.search.closed_loop import LoopMeter, close_loop, device_measure, loop_aim  # it imports this module

    policy = RefitPolicy(space, predictor, decoder, loop_aim(target_ms, config.closed_loop_margin), config)
    loop_meter = LoopMeter(device_measure(space, None, config, meter), config.closed_loop_steps, known=known,
                           on_measured=on_measured)
    return close_loop(policy, loop_meter, target_ms, config.closed_loop_margin)


def _decode_aimed(decoder: Any, predictor: LatencyEstimator, target_ms: float, margin: float) -> Architecture:
    """The best architecture (the most probable, or the fittest) predicted under ``target``, when it is predicted
    within the band the loop accepts (``(1 - 2 margin) target`` and up); else the best one predicted in the upper
    half of that band (an aim, so a small prediction error still lands in it); else the fastest. Under ``target``
    alone the decode keeps the search's mode wherever it lies under T (a broad distribution has E[LAT] = T with its
    mode far faster: LiteRT searches ended at 0.49 and 0.69 T that way), and the loop could never leave it."""
    under = decoder.under(predictor, target_ms)
    if under is not None and predictor.latency_ms(under) >= (1.0 - 2.0 * margin) * target_ms:
        return under
    return (decoder.in_band(predictor, (1.0 - margin) * target_ms, target_ms) or under
            or decoder.fastest(predictor))


def fastest_decoded(space: SearchSpace, log_probs: Sequence[Sequence[float]], predictor: LatencyEstimator
                    ) -> Architecture:
    """The fastest architecture by the model's costs linearized where the decoder linearizes them (at the most
    probable architecture; an additive model, a table, is its own linearization)."""
    return fastest_arch(space, predictor.anchored(most_probable_arch(space, log_probs)))
