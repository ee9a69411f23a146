"""The search run, phase by phase: set up (device, space, data, latency model, target), search the supernet,
close the loop on the device, train the derived network (and the baseline) from scratch, measure them, write the
run folder.

A run folder holds ``arch.json`` (the architecture), ``model.pt`` (trained weights, config and architecture,
loadable with ``torch.load(weights_only=True)``), ``report.json`` (:class:`~hwnas.search.run_report.RunReport`)
and ``search.png`` (latency and accuracy per epoch; the final architecture). Every hyper-parameter lives in
:class:`~hwnas.search.run_config.SearchConfig`. Each phase has its own module: :mod:`~hwnas.search.run_train`
(supernet search, training), :mod:`~hwnas.search.closed_loop`, :mod:`~hwnas.search.verdict` (final
measurement), :mod:`~hwnas.search.run_report`; :mod:`~hwnas.search.checkpoint` makes every phase resumable.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

import hwnas
from hwnas.data import DataSplits, load_dataset
from hwnas.devices import DeviceProfile, load_device
from hwnas.latency.estimator import LatencyEstimator, TableEstimator
from hwnas.latency.lookup import table_for_search
from hwnas.latency.table import foreign_table_note
from hwnas.outputs import check_run_folder, mark_run_folder
from hwnas.runtimes.machine_state import one_warning
from hwnas.search.aim import Choice, aim_target, choose_estimator, refits
from hwnas.search.checkpoint import RunCheckpoint
from hwnas.search.closed_loop import (baseline_arch, baseline_candidates, baseline_on_device, meet_on_device,
                                      search_on_device)
from hwnas.search.decode import latency_range
from hwnas.search.decode_memory import bounded_target, refuse_unreachable_target
from hwnas.search.distributed import follow_rank_zero
from hwnas.search.decoders import Decoder, EvolutionDecoder, ProbsDecoder, shared_weight_accuracy
from hwnas.search.losses import get_reward
from hwnas.search.memory_bound import MemoryBound
from hwnas.search.measure import latency_independent_of_weights, measure_networks, quietest_per_network
from hwnas.search.progress import Progress
from hwnas.search.records import LoopStep, TrainedNetwork, last_step_of
from hwnas.search.run_config import DEFAULT_DEVICE, SearchConfig
from hwnas.search.pareto import ParetoPoint
from hwnas.search.random_baselines import baseline_rows, random_in_band
from hwnas.search.run_pareto import run_points, write_run_pareto
from hwnas.search.run_targets import load_supernet, run_targets, save_supernet
from hwnas.search.run_report import (BaselineReport, RunReport, peak_rss_mb, plot_search, save_model, versions,
                                     write_report)
from hwnas.search.run_supernet import search_supernet, untrained_note
from hwnas.search.run_train import torch_settings, train_checkpointed
from hwnas.search.supernet import SuperNet
from hwnas.search.verdict import closed_loop_drift, final_verdict, warn_if_drifted
from hwnas.spaces import Architecture, SearchSpace, get_space, space_info
from hwnas.spaces.footprint import arch_footprint

__all__ = ["SearchConfig", "baseline_arch", "baseline_candidates", "closed_loop_drift", "default_target_ms",
           "latency_independent_of_weights", "load_estimator", "measure_networks", "meet_on_device",
           "quietest_per_network", "run_search"]


def default_target_ms(space: SearchSpace, estimator: LatencyEstimator, fraction: float) -> tuple[float, float, float]:
    """``(T, fastest, slowest)``: T at ``fraction`` of the way from the fastest to the slowest architecture."""
    span = latency_range(space, estimator)
    return span.target_at(fraction), span.fastest_ms, span.slowest_ms


def load_estimator(device: DeviceProfile, space: SearchSpace, config: SearchConfig, progress: bool) -> TableEstimator:
    """The table estimator for ``space`` on ``device`` (:func:`~hwnas.latency.lookup.table_for_search`: a table that
    lacks ops, the head included, is completed by profiling them when the runtime is available here, else one that
    covers the space is used, else a one-line error says how to make it)."""
    table = table_for_search(device, space, config.table, config.profile_missing, progress)
    note = foreign_table_note(table)
    if note:
        print(f"hwnas: warning: {note}", file=sys.stderr)
    return TableEstimator(table, space, config.overhead)


def run_search(config: SearchConfig | None = None, progress: bool = True, *,
               latency_model: Any = None, supernet_file: Path | None = None) -> dict[str, Any]:
    """Run a whole search as ``config`` says and write the run folder (see the module docstring).

    ``latency_model``: the latency model object to aim with, for Python callers (a predictor of any kind, a space
    predictor, or a :class:`~hwnas.latency.estimator.LatencyEstimator` such as a ``TableEstimator``), checked as a
    loaded file is (space, device; one ``latency_model: ...`` line); None: ``config.predictor`` chooses.

    Returns a summary (:meth:`RunReport.summary`): the architecture, target, estimated and measured latency,
    accuracy, the baseline when computed, timings, ``out`` and the paths of the files. ``progress``: tqdm bars
    when stderr is a terminal, else a few summary lines (:class:`~hwnas.search.progress.Progress`).

    ``config.targets`` (``--targets``): one network per target from one supernet training, each in
    ``out/target-<i>`` (:mod:`~hwnas.search.run_targets`); returns ``{"targets": [...], "out", "files"}``.
    ``supernet_file``: a trained supernet to load instead of training one, written there after training when it
    does not exist yet.

    The run checkpoints its work in ``out/checkpoint.pt`` (:mod:`hwnas.search.checkpoint`); the same config with
    the same ``out`` resumes it: finished epochs are not redone, measured architectures not measured again. An
    interruption re-raises ``KeyboardInterrupt`` with a message saying where the work is and how to resume.
    """
    config = config or SearchConfig()
    follow_rank_zero(config)  # under torchrun, ranks >= 1 train the supernet with rank 0, then exit
    out = Path(config.out) if config.out else Path("runs") / f"search-{datetime.now():%Y%m%d-%H%M%S}"
    if config.targets:
        return run_targets(config, out, run_search, progress, latency_model)
    checkpoint = RunCheckpoint(out, config.to_dict())
    try:
        return _run_search(config, out, Progress.to_stderr(progress), checkpoint, latency_model, supernet_file)
    except KeyboardInterrupt:
        if not checkpoint.path.is_file():
            raise KeyboardInterrupt(f"no epoch finished yet; rerun with --out {out} to start again") from None
        raise KeyboardInterrupt(f"finished epochs and measurements are saved in {checkpoint.path}; rerun with "
                                f"--out {out} and the same config to resume") from None


@dataclass
class _Setup:
    """What the phases share: the device, space, data, latency model and target."""

    device: DeviceProfile
    space: SearchSpace
    data: DataSplits
    table: TableEstimator
    choice: Choice
    target_ms: float
    fastest_ms: float
    slowest_ms: float
    memory: MemoryBound | None = None  # --max-memory-mb, --max-params-mb


def _set_up(config: SearchConfig, out: Path, progress: Progress, checkpoint: RunCheckpoint,
            latency_model: Any = None) -> _Setup:
    """Check the inputs and ``out`` before any work, open the checkpoint, read the data, choose the latency model
    and the target."""
    device = load_device(config.device or DEFAULT_DEVICE)
    if config.device_threads is not None:
        device = dataclasses.replace(device, threads=config.device_threads)
    resolution = config.resolution or space_info(config.space).default_resolution
    get_space(config.space, resolution)  # a bad space or resolution fails before the data are read
    check_run_folder(out)  # an --out that cannot take the run (or holds the user's files) fails now
    opened = RunCheckpoint.open(out, config.to_dict())
    checkpoint.state, checkpoint.resumed_from = opened.state, opened.resumed_from
    if checkpoint.resumed_from is not None:
        print(f"hwnas: {checkpoint.describe()}", file=sys.stderr)
    data = load_dataset(config.data, resolution, config.seed, config.arch_fraction, config.test_fraction,
                        config.max_per_split)
    space = get_space(config.space, resolution, data.num_classes)
    memory = MemoryBound.of(space, config.max_memory_mb, config.max_params_mb)  # refuses one no network meets
    table = load_estimator(device, space, config, progress.bars)
    mark_run_folder(out)  # a predictor built for the run is written into out before the first checkpoint
    choice = choose_estimator(device, space, table, config, out, progress.bars, latency_model)
    target_ms, fastest_ms, slowest_ms = aim_target(space, choice, table, config)  # refuses T under the fastest
    if memory is not None and config.target_ms is None:  # the default target: of the architectures within memory
        target_ms, fastest_ms, slowest_ms = bounded_target(space, choice.estimator, memory, config.target_fraction)
    refuse_unreachable_target(space, choice.estimator, target_ms, memory)  # ... and under the fastest within memory
    return _Setup(device, space, data, table, choice, target_ms, fastest_ms, slowest_ms, memory)


def _decode_note(space: SearchSpace, estimator: LatencyEstimator, decoder: Decoder, target_ms: float,
                 fastest_ms: float, strategy: str) -> str:
    """How the architecture was derived; warns when no architecture meets the target in the table."""
    if estimator.latency_ms(decoder.fastest(estimator)) <= target_ms:
        if strategy == "evolution":
            return "evolutionary search within the target (shared-weight accuracy), then the closed loop"
        return "most probable architecture within the target (decode_under_target), then the closed loop"
    note = (f"fastest architecture: none meets the target {target_ms:.4g} ms in the table (the fastest takes "
            f"{fastest_ms:.4g} ms)")
    print(f"hwnas: warning: {note}", file=sys.stderr)
    return note


def _span(space: SearchSpace, estimator: LatencyEstimator) -> tuple[float, float]:
    span = latency_range(space, estimator)
    return span.fastest_ms, span.slowest_ms


def _accuracy_of(setup: _Setup, config: SearchConfig, supernet: SuperNet) -> Callable[[Architecture], float]:
    """An architecture's accuracy with the supernet's shared weights on the validation split."""
    return shared_weight_accuracy(supernet, setup.data, config.evolution_images, config.eval_batch_size,
                                  config.channels_last)


def _decoder(setup: _Setup, config: SearchConfig, supernet: SuperNet, progress: Progress) -> Decoder:
    """What the closed loop decodes with: the learned distribution's mode, or (``evolution``) an evolutionary
    search on the supernet's shared weights."""
    if config.strategy != "evolution":
        log_probs = [torch.log_softmax(a.detach().double(), dim=0).tolist() for a in supernet.arch_parameters()]
        return ProbsDecoder(setup.space, log_probs, setup.memory)
    from hwnas.search.evolution import EvolutionConfig

    accuracy_of = _accuracy_of(setup, config, supernet)
    evolution = EvolutionConfig(population=config.evolution_population, generations=config.evolution_generations,
                                seed=config.seed)
    return EvolutionDecoder(setup.space, accuracy_of, get_reward(config.reward, **config.reward_params), evolution,
                            progress.say, setup.memory)


def _search(setup: _Setup, config: SearchConfig, progress: Progress, checkpoint: RunCheckpoint,
            supernet_file: Path | None = None) -> tuple[SuperNet, list[dict[str, Any]], float]:
    """Search the supernet (resuming finished epochs), or load it from ``supernet_file`` when that exists (and save
    it there after the search when it does not); returns it, its epoch history and when the search phase started
    (on the ``perf_counter`` clock, moved back by the resumed or loaded epochs' seconds)."""
    supernet = SuperNet(setup.space, arch_grad=config.arch_grad, weight_sharing=config.weight_sharing)
    if config.channels_last:
        supernet = supernet.to(memory_format=torch.channels_last)
    if supernet_file is not None and supernet_file.is_file():
        history = load_supernet(supernet_file, supernet, config)
        progress.say(f"supernet loaded from {supernet_file} ({len(history)} epochs)")
        return supernet, history, time.perf_counter() - sum(h["seconds"] for h in history)
    resumed = checkpoint.state["search"]["history"] if checkpoint.state["search"] else []
    started = time.perf_counter() - sum(h["seconds"] for h in resumed)
    history = search_supernet(supernet, setup.data, setup.choice.estimator, setup.target_ms, config, progress,
                              checkpoint.state["search"], lambda state: checkpoint.update("search", state))
    if supernet_file is not None:
        save_supernet(supernet_file, supernet, history, config)
    return supernet, history, started


def _train_all(setup: _Setup, arch: Architecture, estimator: LatencyEstimator, config: SearchConfig,
               progress: Progress, checkpoint: RunCheckpoint
               ) -> tuple[dict[str, TrainedNetwork], dict[str, list[LoopStep]]]:
    """Train the derived network and, when asked, the uniform baseline (chosen on the device first) and the random
    baselines (:mod:`~hwnas.search.random_baselines`); returns them by name (``derived``, ``baseline``,
    ``random1``, ...) and the closed-loop steps that chose each baseline."""
    trained = {"derived": train_checkpointed(setup.space, arch, setup.data, config, progress, "train", checkpoint)}
    loops: dict[str, list[LoopStep]] = {}
    if config.baseline:
        baseline, loops["baseline"] = baseline_on_device(setup.space, estimator, setup.target_ms, setup.device,
                                                         config, checkpoint, progress)
        trained["baseline"] = train_checkpointed(setup.space, baseline, setup.data, config, progress, "baseline",
                                                 checkpoint)
    randoms = random_in_band(setup.space, estimator, setup.target_ms, setup.device, config, checkpoint, progress,
                             tuple(t.arch for t in trained.values()))
    for i, (random_arch, step) in enumerate(randoms, start=1):
        loops[f"random{i}"] = [step]
        trained[f"random{i}"] = train_checkpointed(setup.space, random_arch, setup.data, config, progress,
                                                   f"random{i}", checkpoint)
    return trained, loops


def _run_search(config: SearchConfig, out: Path, progress: Progress, checkpoint: RunCheckpoint,
                latency_model: Any = None, supernet_file: Path | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    with one_warning("searching"):  # its predictor's set, the closed loop, the verdict: one line if it was busy
        return _measured_run(config, out, progress, checkpoint, latency_model, started, supernet_file)


def _measured_run(config: SearchConfig, out: Path, progress: Progress, checkpoint: RunCheckpoint,
                  latency_model: Any, started: float, supernet_file: Path | None) -> dict[str, Any]:
    setup = _set_up(config, out, progress, checkpoint, latency_model)
    space, target_ms = setup.space, setup.target_ms
    with torch_settings(config):
        supernet, history, search_start = _search(setup, config, progress, checkpoint, supernet_file)
        decoder = _decoder(setup, config, supernet, progress)
        decode_note = _decode_note(space, setup.choice.estimator, decoder, target_ms, setup.fastest_ms,
                                   config.strategy)
        untrained = untrained_note(history, space.num_classes)
        if untrained:
            print(f"hwnas: warning: {untrained}", file=sys.stderr)
            decode_note += f" ({untrained})"
        if setup.memory is not None:
            decode_note += f" (every decode within {setup.memory.describe()})"
        arch, closed_loop, estimator = search_on_device(space, setup.choice.estimator, target_ms, setup.slowest_ms,
                                                        decoder, setup.device, config, checkpoint, progress)
        search_seconds = time.perf_counter() - search_start
        trained, loops = _train_all(setup, arch, estimator, config, progress, checkpoint)
        loops["derived"] = closed_loop
        measure_start = time.perf_counter()
        verdict = final_verdict(setup.device, trained, space, estimator, config, target_ms, loops, checkpoint,
                                progress)
        measure_seconds = time.perf_counter() - measure_start
        points = run_points(space, decoder, estimator, _accuracy_of(setup, config, supernet), config.strategy,
                            loops, trained,
                            _span(space, estimator))
    derived = trained["derived"]
    drift = closed_loop_drift(closed_loop, arch, derived.measured)
    warn_if_drifted(drift, derived.measured)
    baseline = None
    if "baseline" in trained:
        base = trained["baseline"]
        baseline = BaselineReport(base, space.human(base.arch), estimator.latency_ms(base.arch), target_ms,
                                  loops.get("baseline", []))
    probs = [p.detach().tolist() for p in supernet.probs()]
    default_note = f"default: {config.target_fraction:.0%} of the way from the fastest to the slowest architecture"
    report = RunReport(
        arch=arch, arch_human=space.human(arch), device=setup.device.name, space=space.name,
        resolution=space.resolution, num_classes=space.num_classes, data=setup.data.summary(), target_ms=target_ms,
        target_source="config" if config.target_ms is not None else default_note, fastest_ms=setup.fastest_ms,
        slowest_ms=setup.slowest_ms, estimated_ms=estimator.latency_ms(arch), measured=derived.measured,
        measured_untrained=verdict.untrained, measurement=verdict.how, decode=decode_note, closed_loop=closed_loop,
        closed_loop_drift=drift, accuracy=derived.accuracy, baseline=baseline, search_seconds=search_seconds,
        train_seconds=derived.seconds, measure_seconds=measure_seconds, total_seconds=0.0, peak_rss_mb=0.0,
        seed=config.seed, table=str(setup.table.table.path), overhead_mode=config.overhead,
        versions=versions(verdict.runtime),
        latency_model={**setup.choice.to_dict(), "rows": len(getattr(estimator, "rows", []))},
        probs=[dict(zip(layer.names, p)) for layer, p in zip(space.layers, probs)], config=config.to_dict(),
        history=history, train_history=derived.history, files={}, resumed_from=checkpoint.resumed_from,
        evolution=getattr(decoder, "runs", None), baselines=baseline_rows(trained, target_ms, space),
        memory_mb=arch_footprint(space, arch).to_dict(), max_memory_mb=config.max_memory_mb,
        max_params_mb=config.max_params_mb)
    _write_run(out, report, derived, estimator, setup, probs, started, points)
    checkpoint.remove()  # report.json marks the run complete
    return report.summary(out)


def _write_run(out: Path, report: RunReport, derived: TrainedNetwork, estimator: LatencyEstimator, setup: _Setup,
               probs: list[list[float]], started: float, points: list[ParetoPoint]) -> None:
    """Write ``arch.json``, ``model.pt``, ``search.png``, ``pareto.json`` and ``pareto.png``, the predictor (when
    one was refitted) and, last, ``report.json`` (with the total time and peak memory)."""
    out.mkdir(parents=True, exist_ok=True)
    arch, space, data = report.arch, setup.space, setup.data
    report.files = {"arch": str(arch.save(out / "arch.json")), "model": str(out / "model.pt"),
                    "report": str(out / "report.json"), "plot": str(out / "search.png")}
    save_model(out / "model.pt", derived.net, arch, report.config,
               {"accuracy": derived.accuracy, "classes": list(data.classes), "mean": list(data.mean),
                "std": list(data.std), "hwnas_version": hwnas.__version__})
    measured_ms = report.measured_ms
    title = (f"{space.name}@{space.resolution} on {report.device}: T {report.target_ms:.3g} ms, "
             f"est {report.estimated_ms:.3g} ms" + (f", meas {measured_ms:.3g} ms" if measured_ms is not None else "")
             + f", acc {derived.accuracy:.3f}")
    chosen = last_step_of(report.closed_loop, arch)
    plot_search(out / "search.png", report.history, space, arch, probs, report.target_ms, title,
                chosen.table_target_ms if chosen else None)
    report.files.update(write_run_pareto(out, points, f"{space.name}@{space.resolution} on {report.device}: "
                                         f"{report.config['strategy']}", report.target_ms))
    report.pareto = report.files["pareto"]
    if refits(estimator):  # the closed loop refitted it: the predictor with the loop's rows
        report.files["predictor"] = str(estimator.save(out / "predictor.json"))
    report.total_seconds, report.peak_rss_mb = time.perf_counter() - started, peak_rss_mb()
    write_report(out / "report.json", report)
