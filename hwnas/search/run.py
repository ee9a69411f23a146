"""The search run: supernet warm-up, alternating weight/architecture steps, target-aware decoding, training the
derived network from scratch, end-to-end measurement on the device, and the run folder.

A run folder holds ``arch.json`` (the architecture), ``model.pt`` (trained weights, config and architecture,
loadable with ``torch.load(weights_only=True)``), ``report.json`` (latencies, accuracy, timings, versions,
config, per-epoch history) and ``search.png`` (latency and accuracy per epoch; the final architecture).
Every hyper-parameter lives in :class:`~hwnas.search.run_config.SearchConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import hwnas
from hwnas.data import DataSplits, load_dataset
from hwnas.devices import DeviceProfile, load_device
from hwnas.errors import HwnasError, RuntimeUnavailable
from hwnas.latency.estimator import LatencyEstimator, TableEstimator
from hwnas.latency.predictors.calibrated import CalibratedPredictor
from hwnas.latency.profile import ProfileConfig, device_protocol, profile_device
from hwnas.latency.table import LatencyTable, default_table_path, foreign_table_note, user_table_path
from hwnas.outputs import check_out_folder
from hwnas.runtimes import get_runtime, runtime_class
from hwnas.runtimes.paired import PairedProtocol
from hwnas.runtimes.protocol import measure
from hwnas.search.aim import PairedMeter, aim_on_device, choose_estimator
from hwnas.search.checkpoint import RunCheckpoint
from hwnas.search.decode import decode_under_target, fastest_arch, slowest_arch
from hwnas.search.run_config import DEFAULT_DEVICE, SearchConfig
from hwnas.search.run_report import plot_search, save_model, write_report
from hwnas.search.run_train import search_supernet, torch_settings, train_derived
from hwnas.search.supernet import SuperNet
from hwnas.spaces import Architecture, SearchSpace, get_space, space_info

__all__ = ["SearchConfig", "baseline_arch", "baseline_candidates", "closed_loop_drift", "default_target_ms",
           "load_estimator", "measure_networks", "meet_on_device", "pick_attempt", "run_search", "weights_free"]


def default_target_ms(space: SearchSpace, estimator: LatencyEstimator, fraction: float) -> tuple[float, float, float]:
    """``(T, fastest, slowest)``: T at ``fraction`` of the way from the fastest to the slowest architecture."""
    fastest = estimator.latency_ms(fastest_arch(space, estimator))
    slowest = estimator.latency_ms(slowest_arch(space, estimator))
    return fastest + fraction * (slowest - fastest), fastest, slowest


def baseline_candidates(space: SearchSpace) -> list[Architecture]:
    """Uniform MobileNetV2-like architectures: the same op in every layer, at every uniform depth ``d``.

    Ops: every non-zero op shared by all layers. Depth ``d``: the first ``d`` layers of each stage keep the op;
    later layers that offer ``zero`` are skipped (Once-for-All's elastic depth).
    """
    shared = [n for n in space.layers[0].names if n != "zero" and all(n in layer.names for layer in space.layers)]
    depth = max((len(stage.layers) for stage in space.stages), default=len(space.layers))
    position = {i: p for stage in space.stages for p, i in enumerate(stage.layers)}
    archs = []
    for d in range(depth, 0, -1):  # deeper first: kept on latency ties
        for op in shared:
            archs.append(space.arch([op if position.get(layer.index, 0) < d or "zero" not in layer.names else "zero"
                                     for layer in space.layers]))
    return archs


def _slowest_within(archs: list[Architecture], estimator: LatencyEstimator, target_ms: float) -> Architecture | None:
    fitting = [a for a in archs if estimator.latency_ms(a) <= target_ms]
    return max(fitting, key=estimator.latency_ms) if fitting else None


def baseline_arch(space: SearchSpace, estimator: LatencyEstimator, target_ms: float) -> Architecture | None:
    """The same-budget uniform baseline: the slowest of :func:`baseline_candidates` whose table latency is
    <= ``target_ms`` (deeper first on ties), None if none fits. The search run then corrects it on the device
    with the same closed loop as the searched architecture."""
    return _slowest_within(baseline_candidates(space), estimator, target_ms)


def load_estimator(device: DeviceProfile, space: SearchSpace, config: SearchConfig, progress: bool) -> TableEstimator:
    """The table estimator for ``space`` on ``device``; profiles the table first when it is missing or lacks ops
    (and the runtime is available here), else raises a one-line error saying how to make it."""
    path = Path(config.table) if config.table else default_table_path(device.name, space.name, space.resolution)
    needed = {spec.key() for spec in space.all_specs() if not spec.is_free}
    table = LatencyTable.load(path) if path.is_file() else None
    missing = len(needed - set(table.entries)) if table is not None else len(needed)
    if missing:
        what = f"lacks {missing} of {len(needed)} ops" if table is not None else "does not exist"
        how = (f"`hwnas profile --device {device.name} --space {space.name} --resolution {space.resolution} "
               f"--num-classes {space.num_classes}" + (f" --out {path}`" if config.table else "`"))
        reason = runtime_class(device.backend).unavailable_reason(device.runtime_config())
        if reason is not None or not config.profile_missing:
            why = f"the {device.backend} runtime is unavailable here ({reason})" if reason else "profiling is off"
            raise HwnasError(f"{path}: latency table {what} and {why}; run {how} where the device is reachable")
        if not config.table:  # new tables go to the user's folder, never over a shipped one
            path = user_table_path(device.name, space.name, space.resolution)
        print(f"hwnas: latency table {path} {what}; profiling it now ({how})", file=sys.stderr)
        profile_device(device, space, path, ProfileConfig(progress=progress))
        table = LatencyTable.load(path)
    note = foreign_table_note(table)
    if note:
        print(f"hwnas: warning: {note}", file=sys.stderr)
    return TableEstimator(table, space, config.overhead)


def measure_networks(device: DeviceProfile, nets: dict[str, nn.Module], input_shape: tuple[int, ...],
                     config: SearchConfig, progress: bool, attempts: int = 1, *,
                     prior: dict[str, list[dict[str, Any]]] | None = None, controls: dict[str, str] | None = None,
                     enough: Callable[[dict[str, dict[str, Any]]], bool] | None = None,
                     extra: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure networks end to end on ``device`` (its runtime and measurement protocol, rounds interleaved across
    the networks); returns (statistics per name, the runtime's description).

    The set is measured ``attempts`` times, ``config.retry_pause_s`` apart, and again while some network comes out
    ``noisy`` or ``enough(chosen)`` is false, at most ``config.noisy_retries + extra`` more times;
    :func:`pick_attempt` (with ``prior`` and ``controls``) chooses each network's statistics, which then carry
    ``attempts`` (median, noisy flag and source of every attempt) and ``source`` (where the kept one comes from).
    """
    protocol = device_protocol(device, config.protocol)
    with tempfile.TemporaryDirectory(prefix="hwnas-search-") as tmp:
        runtime = get_runtime(device.backend, device.runtime_config(), Path(tmp))
        prepared = {}
        try:
            for name, net in nets.items():
                prepared[name] = runtime.prepare(net.eval(), input_shape, name)
            done: list[dict[str, Any]] = []
            while len(done) < attempts + config.noisy_retries + extra:
                if done:
                    time.sleep(config.retry_pause_s)
                label = f"measure on {device.name}" + (f" (attempt {len(done) + 1})" if done else "")
                with tqdm(total=len(nets), desc=label, unit="net", disable=not progress, dynamic_ncols=True) as bar:
                    stats = measure(prepared, protocol, on_done=lambda *_: bar.update(1))
                done.append({name: s.to_dict() for name, s in stats.items()})
                if len(done) < attempts or any(s.noisy for s in stats.values()):
                    continue
                if enough is None or enough(pick_attempt(done, prior, controls, protocol.noise_threshold)):
                    break
        finally:
            for model in prepared.values():
                model.close()
        return pick_attempt(done, prior, controls, protocol.noise_threshold), runtime.describe()


def weights_free(attempts: list[dict[str, dict[str, Any]]], controls: dict[str, str], threshold: float) -> bool:
    """Whether every network in ``controls`` (name -> name of its untrained copy, measured in the same attempts)
    ran no slower than its copy: the median over attempts of network/copy medians is at most 1 + ``threshold``."""
    for name, control in controls.items():
        ratios = [a[name]["median_ms"] / a[control]["median_ms"] for a in attempts if a[control]["median_ms"] > 0]
        if not ratios or float(np.median(ratios)) > 1.0 + threshold:
            return False
    return True


def pick_attempt(attempts: list[dict[str, dict[str, Any]]], prior: dict[str, list[dict[str, Any]]] | None = None,
                 controls: dict[str, str] | None = None, threshold: float = 0.1) -> dict[str, dict[str, Any]]:
    """Each network's statistics from repeated measurements of the same networks: its attempt with the lowest
    median among those where it was not noisy (else among all). On a shared CPU interference only adds time,
    and its bursts last seconds to minutes, so the quietest of attempts spread in time is the best estimate of
    the network's own latency.

    ``prior`` holds earlier measurements per network (the closed loop's, of an untrained copy of the same
    architecture); they compete with the attempts only when :func:`weights_free` holds for ``controls`` (the
    trained networks ran no slower than their untrained copies, so the weights do not change the latency and an
    earlier quiet measurement tells as much as a later one). Each kept entry gets ``source`` ("closed loop" or
    "final") and ``attempts``: ``[{"median_ms", "noisy", "source"}, ...]``, prior ones first, in order."""
    use_prior = bool(prior) and weights_free(attempts, controls or {}, threshold)
    chosen = {}
    for name in attempts[0]:
        earlier = [{**s, "source": "closed loop"} for s in (prior or {}).get(name, [])] if use_prior else []
        history = earlier + [{**a[name], "source": "final"} for a in attempts]
        quiet = [s for s in history if not s["noisy"]] or history
        best = min(quiet, key=lambda s: s["median_ms"])
        chosen[name] = {**best, "attempts": [{"median_ms": s["median_ms"], "noisy": s["noisy"], "source": s["source"]}
                                             for s in history]}
    return chosen


@dataclass
class _Trained:
    """A network trained from scratch and evaluated on the ``test`` split."""

    arch: Architecture
    net: nn.Module
    accuracy: float
    history: list[dict[str, float]]
    seconds: float
    measured: dict[str, Any] | None = field(default=None)


def _train(space: SearchSpace, arch: Architecture, data: DataSplits, config: SearchConfig, progress: bool,
           label: str, checkpoint: RunCheckpoint) -> _Trained:
    """Train ``arch`` (``label``: ``train`` or ``baseline``), checkpointed per epoch; a network the checkpoint
    holds as trained is loaded instead."""
    done = checkpoint.state["trained"].get(label)
    if done is not None and done["arch"] == list(arch.choices):
        net = space.build(arch)
        net.load_state_dict(done["state_dict"])
        return _Trained(arch, net, done["accuracy"], done["history"], done["seconds"])
    resume = checkpoint.state["train"].get(label)
    if resume is not None and resume["arch"] != list(arch.choices):
        resume = None
    start = time.perf_counter() - (resume["seconds"] if resume else 0.0)
    net, accuracy, history = train_derived(
        space, arch, data, config, progress, label, resume,
        lambda state: checkpoint.update("train", {**state, "arch": list(arch.choices),
                                                  "seconds": time.perf_counter() - start}, label))
    seconds = time.perf_counter() - start
    checkpoint.state["train"].pop(label, None)
    checkpoint.update("trained", {"arch": list(arch.choices), "accuracy": accuracy, "history": history,
                                  "seconds": seconds, "state_dict": net.state_dict()}, label)
    return _Trained(arch, net, accuracy, history, seconds)


def _decode_note(space: SearchSpace, estimator: LatencyEstimator, log_probs: list[list[float]], target_ms: float,
                 fastest_ms: float) -> str:
    """How the architecture was derived; warns when no architecture meets the target in the table."""
    if decode_under_target(space, log_probs, estimator, target_ms) is not None:
        return "most probable architecture within the target (decode_under_target), then the closed loop"
    note = (f"fastest architecture: none meets the target {target_ms:.4g} ms in the table (the fastest takes "
            f"{fastest_ms:.4g} ms)")
    print(f"hwnas: warning: {note}", file=sys.stderr)
    return note


def meet_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float,
                   decode: Callable[[float], Architecture | None], fastest: Architecture, ceiling_ms: float,
                   device: DeviceProfile, config: SearchConfig, *, known: dict[str, dict[str, Any]] | None = None,
                   on_measured: Callable[[str, dict[str, Any]], None] | None = None
                   ) -> tuple[Architecture, list[dict[str, Any]]]:
    """Closed loop before training (latency does not depend on the weights): find the table target whose decoded
    architecture (``decode(table_target)``, None when nothing fits) measures on the device just under T.

    The aim is ``measured <= (1 - margin) * T``; a result within ``2 * margin`` below the aim is accepted. Over
    the aim, the table target is scaled down by aim/measured; far under it, up by the same ratio (a step that
    decodes the same architecture again is doubled); once a target over and one under are known, the next lies
    between them. A table target under what ``fastest`` needs tries ``fastest``; one at or over ``ceiling_ms``
    (from there on every target decodes the same) ends the loop. At most ``config.closed_loop_steps``
    measurements (an architecture is measured once). Returns the slowest architecture measured under the aim (the
    first decoded one when nothing was measured, the fastest measured one when none was under the aim) and one
    record per decoded architecture (consecutive repeats once; the statistics of its measurement under
    ``measured``). ``known`` (architecture string -> statistics) replays an interrupted loop's measurements
    instead of measuring again; ``on_measured(arch, statistics)`` is told of each new one (the run's checkpoint).
    """
    steps = config.closed_loop_steps if config.measure else 0
    aim = target_ms * (1.0 - config.closed_loop_margin)
    good_enough = aim * (1.0 - 2.0 * config.closed_loop_margin)
    measured: dict[tuple[str, ...], dict[str, Any]] = {}
    under: tuple[float, Architecture] | None = None
    low = high = None  # the loosest table target decoded under the aim, the tightest decoded over it
    table_target, stretch, previous, log = target_ms, 1.0, None, []
    arch = decode(target_ms) or fastest
    for _ in range(4 * steps):
        if arch.choices not in measured:
            if len(measured) == steps:
                break
            key = " ".join(arch.choices)
            if known and key in known:
                measured[arch.choices] = known[key]
            else:
                try:
                    stats, _ = measure_networks(device, {"candidate": space.build(arch)}, space.input_shape, config,
                                                False)
                except RuntimeUnavailable:
                    break
                measured[arch.choices] = stats["candidate"]
                if on_measured is not None:
                    on_measured(key, stats["candidate"])
        ms = measured[arch.choices]["median_ms"]
        if arch != previous:
            log.append({"table_target_ms": table_target, "estimated_ms": estimator.latency_ms(arch), "measured_ms": ms,
                        "arch": " ".join(arch.choices), "measured": measured[arch.choices]})
        if ms <= aim:
            low = table_target if low is None else max(low, table_target)
            if under is None or ms > under[0]:
                under = (ms, arch)
            if ms >= good_enough or table_target >= ceiling_ms:
                break
        else:
            high = table_target if high is None else min(high, table_target)
        stretch = min(stretch * 2.0, 16.0) if arch == previous else 1.0
        proposal = table_target * (aim / ms) ** stretch
        if low is not None and high is not None:
            if high / low < 1.002:
                break
            if not low < proposal < high:
                proposal = math.sqrt(low * high)
        previous, table_target = arch, proposal
        decoded = decode(table_target)
        if decoded is None:  # tighter than the fastest architecture: try that one
            decoded, table_target = fastest, estimator.latency_ms(fastest)
            if decoded.choices in measured:
                break
        arch = decoded
    if under is not None:
        return under[1], log
    if measured:
        quickest = min(measured, key=lambda choices: measured[choices]["median_ms"])
        return space.arch(list(quickest)), log
    return arch, log


def _baseline_on_device(space: SearchSpace, estimator: LatencyEstimator, target_ms: float, device: DeviceProfile,
                        config: SearchConfig, checkpoint: RunCheckpoint) -> tuple[Architecture, list[dict[str, Any]]]:
    """The uniform baseline chosen by the same closed loop as the searched architecture (see :func:`baseline_arch`)."""
    uniform = baseline_candidates(space)
    by_latency = sorted(uniform, key=estimator.latency_ms)
    return meet_on_device(space, estimator, target_ms, lambda t: _slowest_within(uniform, estimator, t),
                          by_latency[0], estimator.latency_ms(by_latency[-1]), device, config,
                          **_replay(checkpoint, "baseline"))


def _replay(checkpoint: RunCheckpoint, loop: str) -> dict[str, Any]:
    """The closed loop's arguments that replay ``loop``'s recorded measurements and record new ones."""
    return {"known": dict(checkpoint.measured(loop)),
            "on_measured": lambda arch, stats: checkpoint.record(loop, arch, stats)}


def _measure(device: DeviceProfile, trained: dict[str, _Trained], space: SearchSpace, config: SearchConfig,
             progress: bool, target_ms: float,
             loops: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """Fill ``measured`` of each trained network; returns (what was done, the runtime's description, the
    statistics of an untrained copy of the derived architecture measured in the same interleaved rounds and
    attempts).

    The untrained copy is the control: when the derived network runs no slower than it, the weights do not
    change the latency and the closed loop's measurement of each architecture (``loops``: name -> its closed-loop
    records) counts as one more attempt; otherwise a slower machine state and a weight-dependent latency are told
    apart attempt by attempt through the ``attempts`` lists. Attempts are added (``config.final_extra_attempts``)
    while a network's quietest measurement is over ``target_ms``."""
    if not config.measure:
        return "off (config.measure is false)", None, None
    nets = {k: t.net for k, t in trained.items()}
    nets["derived_untrained"] = space.build(trained["derived"].arch)
    entries = {name: _loop_entry(loops.get(name, []), t.arch) for name, t in trained.items()}
    prior = {name: [entry["measured"]] if entry else [] for name, entry in entries.items()}
    try:
        stats, runtime = measure_networks(
            device, nets, space.input_shape, config, progress, config.final_attempts, prior=prior,
            controls={"derived": "derived_untrained"}, extra=config.final_extra_attempts,
            enough=lambda chosen: all(chosen[name]["median_ms"] <= target_ms for name in trained))
    except RuntimeUnavailable as exc:
        print(f"hwnas: warning: not measured on {device.name}: {exc}", file=sys.stderr)
        return f"skipped: {exc}", None, None
    for name, t in trained.items():
        t.measured = stats[name]
    return f"end to end on {device.name} ({device.backend})", runtime, stats["derived_untrained"]


def _aim(space: SearchSpace, predictor: CalibratedPredictor, target_ms: float, log_probs: list[list[float]],
         device: DeviceProfile, config: SearchConfig,
         checkpoint: RunCheckpoint) -> tuple[Architecture, list[dict[str, Any]], CalibratedPredictor]:
    """The closed loop with a predictor (:func:`hwnas.search.aim.aim_on_device`), paired measurements."""
    if not config.measure or config.closed_loop_steps == 0:
        decoded = decode_under_target(space, log_probs, predictor, target_ms * (1.0 - config.closed_loop_margin))
        return decoded or fastest_arch(space, predictor), [], predictor
    protocol = PairedProtocol.from_dict({**PairedProtocol().to_dict(), **config.paired}, "search config: paired")
    with PairedMeter(device, space, float(predictor.meta.reference_ms), protocol) as meter:
        return aim_on_device(space, predictor, target_ms, log_probs, meter, config, **_replay(checkpoint, "derived"))


def _measure_paired(device: DeviceProfile, trained: dict[str, _Trained], space: SearchSpace,
                    predictor: CalibratedPredictor, config: SearchConfig) -> tuple[str, dict[str, Any] | None, None]:
    """The final verdict with a predictor: one paired measurement of each trained network against the reference,
    ``latency = ratio x reference_ms`` at the predictor's reference level."""
    if not config.measure:
        return "off (config.measure is false)", None, None
    protocol = PairedProtocol.from_dict({**PairedProtocol().to_dict(), **config.paired}, "search config: paired")
    try:
        with PairedMeter(device, space, float(predictor.meta.reference_ms), protocol) as meter:
            records = meter.measure({name: t.net for name, t in trained.items()}, "final (paired)")
            runtime = meter.describe()
    except RuntimeUnavailable as exc:
        print(f"hwnas: warning: not measured on {device.name}: {exc}", file=sys.stderr)
        return f"skipped: {exc}", None, None
    for name, t in trained.items():
        t.measured = records[name]
    return (f"end to end on {device.name} ({device.backend}), paired with the reference network "
            f"(latency = ratio x {predictor.meta.reference_ms:.4g} ms)"), runtime, None


DRIFT_WARNING = 1.25


def _loop_entry(loop: list[dict[str, Any]], arch: Architecture) -> dict[str, Any] | None:
    """The closed loop's record of ``arch`` (the last one: an architecture is measured once, the log may repeat
    it), or None when the loop did not measure it."""
    matches = [entry for entry in loop if entry["arch"] == " ".join(arch.choices)]
    return matches[-1] if matches else None


def closed_loop_drift(loop: list[dict[str, Any]], arch: Architecture, measured: dict[str, Any] | None) -> float | None:
    """The closed loop's measurement of ``arch`` over its final verdict (None when either is missing). Well over 1:
    the device was busier during the closed loop than at its quietest, so the loop saw ``arch`` nearer the aim than
    it is and the result lies further under the target than it had to."""
    entry = _loop_entry(loop, arch)
    if entry is None or not measured or measured["median_ms"] <= 0:
        return None
    return entry["measured_ms"] / measured["median_ms"]


def _ms(trained: _Trained) -> float | None:
    return trained.measured["median_ms"] if trained.measured else None


def _ratio(value: float | None, target_ms: float) -> float | None:
    return None if value is None else value / target_ms


def _versions(runtime: dict[str, Any] | None) -> dict[str, Any]:
    return {"hwnas": hwnas.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "runtime": runtime}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_search(config: SearchConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Run a whole search as ``config`` says and write the run folder (see the module docstring).

    Returns a summary: the architecture, target, estimated and measured latency, accuracy, the baseline when
    computed, timings, ``out`` and the paths of the files.

    The run checkpoints its work in ``out/checkpoint.pt`` (:mod:`hwnas.search.checkpoint`); the same config with
    the same ``out`` resumes it: finished epochs are not redone, measured architectures not measured again. An
    interruption re-raises ``KeyboardInterrupt`` with a message saying where the work is and how to resume.
    """
    config = config or SearchConfig()
    out = Path(config.out) if config.out else Path("runs") / f"search-{datetime.now():%Y%m%d-%H%M%S}"
    checkpoint = RunCheckpoint(out, config.to_dict())
    try:
        return _run_search(config, out, progress, checkpoint)
    except KeyboardInterrupt:
        if not checkpoint.path.is_file():
            raise KeyboardInterrupt(f"no epoch finished yet; rerun with --out {out} to start again") from None
        raise KeyboardInterrupt(f"finished epochs and measurements are saved in {checkpoint.path}; rerun with "
                                f"--out {out} and the same config to resume") from None


def _run_search(config: SearchConfig, out: Path, progress: bool, checkpoint: RunCheckpoint) -> dict[str, Any]:
    started = time.perf_counter()
    device = load_device(config.device or DEFAULT_DEVICE)
    if config.device_threads is not None:
        device = dataclasses.replace(device, threads=config.device_threads)
    resolution = config.resolution or space_info(config.space).default_resolution
    get_space(config.space, resolution)  # a bad space or resolution fails before the data are read
    check_out_folder(out)  # an --out that cannot take the run fails now, not after the search
    opened = RunCheckpoint.open(out, config.to_dict())
    checkpoint.state, checkpoint.resumed_from = opened.state, opened.resumed_from
    if checkpoint.resumed_from is not None:
        print(f"hwnas: {checkpoint.describe()}", file=sys.stderr)
    data = load_dataset(config.data, resolution, config.seed, config.arch_fraction, config.test_fraction,
                        config.max_per_split)
    space = get_space(config.space, resolution, data.num_classes)
    table_estimator = load_estimator(device, space, config, progress)
    choice = choose_estimator(device, space, table_estimator, config, out, progress)
    estimator = choice.estimator
    default_t, fastest_ms, slowest_ms = default_target_ms(space, estimator, config.target_fraction)
    target_ms = config.target_ms if config.target_ms is not None else default_t
    with torch_settings(config):
        supernet = SuperNet(space, arch_grad=config.arch_grad, weight_sharing=config.weight_sharing)
        if config.channels_last:
            supernet = supernet.to(memory_format=torch.channels_last)
        resumed = checkpoint.state["search"]["history"] if checkpoint.state["search"] else []
        search_start = time.perf_counter() - sum(h["seconds"] for h in resumed)  # counts the resumed epochs
        history = search_supernet(supernet, data, estimator, target_ms, config, progress, checkpoint.state["search"],
                                  lambda state: checkpoint.update("search", state))
        log_probs = [torch.log_softmax(a.detach().double(), dim=0).tolist() for a in supernet.arch_parameters()]
        decode_note = _decode_note(space, estimator, log_probs, target_ms, fastest_ms)
        decode = lambda t: decode_under_target(space, log_probs, estimator, t)  # noqa: E731
        fastest = fastest_arch(space, estimator)
        ceiling_ms = estimator.latency_ms(decode(slowest_ms) or fastest)
        if isinstance(estimator, CalibratedPredictor):
            arch, closed_loop, estimator = _aim(space, estimator, target_ms, log_probs, device, config, checkpoint)
        else:
            arch, closed_loop = meet_on_device(space, estimator, target_ms, decode, fastest, ceiling_ms, device,
                                               config, **_replay(checkpoint, "derived"))
        search_seconds = time.perf_counter() - search_start
        trained = {"derived": _train(space, arch, data, config, progress, "train", checkpoint)}
        baseline_loop: list[dict[str, Any]] = []
        if config.baseline:
            if isinstance(estimator, CalibratedPredictor):
                baseline = baseline_arch(space, estimator, target_ms * (1.0 - config.closed_loop_margin)) or min(
                    baseline_candidates(space), key=estimator.latency_ms)
            else:
                baseline, baseline_loop = _baseline_on_device(space, estimator, target_ms, device, config, checkpoint)
            trained["baseline"] = _train(space, baseline, data, config, progress, "baseline", checkpoint)
        measure_start = time.perf_counter()
        if isinstance(estimator, CalibratedPredictor):
            measurement, runtime, untrained = _measure_paired(device, trained, space, estimator, config)
        else:
            measurement, runtime, untrained = _measure(device, trained, space, config, progress, target_ms,
                                                       {"derived": closed_loop, "baseline": baseline_loop})
        measure_seconds = time.perf_counter() - measure_start
    derived = trained["derived"]
    drift = closed_loop_drift(closed_loop, arch, derived.measured)
    if drift is not None and drift > DRIFT_WARNING:
        print(f"hwnas: warning: the closed loop measured this architecture {drift:.2f}x slower than its quietest "
              f"measurement ({drift * derived.measured['median_ms']:.4g} vs {derived.measured['median_ms']:.4g} ms): "
              "the device was busy then, so the result lies further under the target than needed; search again "
              "when it is quiet", file=sys.stderr)
    probs = [p.detach().tolist() for p in supernet.probs()]
    estimated_ms, measured_ms = estimator.latency_ms(arch), _ms(derived)
    baseline_result = None
    if "baseline" in trained:
        base = trained["baseline"]
        baseline_result = {"arch": base.arch.to_dict(), "arch_human": space.human(base.arch),
                           "estimated_ms": estimator.latency_ms(base.arch), "measured_ms": _ms(base),
                           "measured_over_target": _ratio(_ms(base), target_ms), "accuracy": base.accuracy,
                           "train_seconds": base.seconds, "closed_loop": baseline_loop, "measured": base.measured}

    out.mkdir(parents=True, exist_ok=True)
    files = {"arch": str(arch.save(out / "arch.json")), "model": str(out / "model.pt"),
             "report": str(out / "report.json"), "plot": str(out / "search.png")}
    save_model(out / "model.pt", derived.net, arch, config.to_dict(),
               {"accuracy": derived.accuracy, "classes": list(data.classes), "mean": list(data.mean),
                "std": list(data.std), "hwnas_version": hwnas.__version__})
    title = (f"{space.name}@{space.resolution} on {device.name}: T {target_ms:.3g} ms, est {estimated_ms:.3g} ms"
             + (f", meas {measured_ms:.3g} ms" if measured_ms is not None else "") + f", acc {derived.accuracy:.3f}")
    chosen = _loop_entry(closed_loop, arch)
    plot_search(out / "search.png", history, space, arch, probs, target_ms, title,
                chosen["table_target_ms"] if chosen else None)
    default_note = f"default: {config.target_fraction:.0%} of the way from the fastest to the slowest architecture"
    report = {
        "arch": arch.to_dict(), "arch_human": space.human(arch), "device": device.name, "space": space.name,
        "resolution": space.resolution, "num_classes": space.num_classes, "data": data.summary(),
        "target_ms": target_ms, "target_source": "config" if config.target_ms is not None else default_note,
        "fastest_ms": fastest_ms, "slowest_ms": slowest_ms, "estimated_ms": estimated_ms, "measured_ms": measured_ms,
        "estimated_over_target": estimated_ms / target_ms, "measured_over_target": _ratio(measured_ms, target_ms),
        "measured": derived.measured, "measured_untrained": untrained, "measurement": measurement,
        "decode": decode_note, "closed_loop": closed_loop, "closed_loop_drift": drift,
        "accuracy": derived.accuracy, "baseline": baseline_result, "search_seconds": search_seconds,
        "train_seconds": derived.seconds, "measure_seconds": measure_seconds,
        "total_seconds": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb(), "seed": config.seed,
        "table": str(table_estimator.table.path), "overhead_mode": config.overhead, "versions": _versions(runtime),
        "latency_model": {**choice.to_dict(), "rows": len(getattr(estimator, "rows", []))},
        "probs": [dict(zip(layer.names, p)) for layer, p in zip(space.layers, probs)], "config": config.to_dict(),
        "history": history, "train_history": derived.history, "files": files,
        "resumed_from": checkpoint.resumed_from,
    }
    if isinstance(estimator, CalibratedPredictor):
        files["predictor"] = str(estimator.save(out / "predictor.json"))  # with the closed loop's rows
    write_report(out / "report.json", report)
    checkpoint.remove()  # report.json marks the run complete
    keys = ("arch", "arch_human", "device", "space", "resolution", "target_ms", "estimated_ms", "measured_ms",
            "measured_over_target", "measured", "accuracy", "baseline", "decode", "closed_loop", "latency_model",
            "search_seconds",
            "train_seconds", "total_seconds")
    return {**{k: report[k] for k in keys}, "out": str(out), "files": files}
