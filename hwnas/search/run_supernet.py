"""The supernet search of a run: warm-up (weight steps on sampled paths), then epochs alternating weight steps and
the strategy's architecture steps, resumable after every epoch; data-parallel under torchrun
(:mod:`hwnas.search.distributed`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from hwnas.data import DataSplits
from hwnas.latency.estimator import LatencyEstimator
from hwnas.search import distributed
from hwnas.search.checkpoint import rng_state, set_rng_state
from hwnas.search.progress import Progress
from hwnas.search.run_config import SearchConfig
from hwnas.search.run_train import (evaluate, format_batch, restore_state, seeded_generator, snapshot_state,
                                   weight_optimizer, weight_step)
from hwnas.search.strategies import ArchStep, get_strategy, strategy_parameters
from hwnas.search.supernet import SuperNet


UNTRAINED_MARGIN = 0.2
"""The supernet counts as trained when its last epoch's accuracy (of sampled paths, or of the argmax path) is at least
this fraction of the way from chance to 1."""


def untrained_note(history: list[dict[str, Any]], num_classes: int) -> str | None:
    """One line when the supernet's last epoch stayed near chance: its architecture parameters then followed the
    latency loss alone, and the run's choice is no better than a pick of its latency (None when it learned)."""
    if not history:
        return None
    last, chance = history[-1], 1.0 / max(num_classes, 1)
    accuracy = max(last.get("weight_accuracy", 0.0), last.get("argmax_arch_accuracy", 0.0))
    if accuracy >= chance + UNTRAINED_MARGIN * (1.0 - chance):
        return None
    return (f"the supernet did not learn (accuracy {accuracy:.3f} in its last epoch, chance {chance:.3f}): the "
            "architecture followed the latency model alone (more epochs, --warmup-epochs and --epochs, can help; "
            "docs/mnasnet.md on a space where they do not)")


def _strategy_kwargs(config: SearchConfig, target_ms: float) -> dict[str, Any]:
    """The config's architecture-step settings that strategy ``config.strategy`` takes (its ``config_class``'s
    fields; a registered strategy without one is given them all): a loss for gradient strategies, a reward for
    sampling ones."""
    params = dict(config.loss_params)
    if config.loss == "mul#log" and "unit_ms" not in params:
        params["unit_ms"] = target_ms / 80.0
    offered = {"lr": config.arch_lr, "betas": tuple(config.arch_betas) if config.arch_betas else None,
               "eps": config.arch_eps, "seed": config.seed + 2, "loss": config.loss, "loss_params": params,
               "reward": config.reward, "reward_params": dict(config.reward_params), "samples": config.mnas_samples,
               "baseline_momentum": config.mnas_baseline_momentum, "entropy_weight": config.mnas_entropy_weight}
    taken = strategy_parameters(config.strategy)
    return {k: v for k, v in offered.items() if v is not None and (taken is None or k in taken)}


class _Cycle:
    """Endless batches from passes over a shuffled loader, resumable: its state is the generator's state at the
    start of the current pass and the number of batches taken in it (a resumed pass skips them)."""

    def __init__(self, loader: Any, generator: torch.Generator) -> None:
        self._loader, self.seeded_generator = loader, generator
        self._start, self._taken, self._iter = generator.get_state(), 0, None

    def __next__(self) -> Any:
        if self._iter is None:
            self._start, self._taken, self._iter = self.seeded_generator.get_state(), 0, iter(self._loader)
        try:
            batch = next(self._iter)
        except StopIteration:
            self._iter = None
            return next(self)
        self._taken += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"start": self._start, "taken": self._taken, "started": self._iter is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seeded_generator.set_state(state["start"])
        self._iter = None
        if state["started"]:
            self._iter = iter(self._loader)
            for _ in range(state["taken"]):
                next(self._iter)
            self._taken = state["taken"]


def _mean_logs(logs: list[dict[str, float]]) -> dict[str, float]:
    keys = logs[0].keys() if logs else ()
    return {f"arch_{k}": float(np.mean([entry[k] for entry in logs])) for k in keys}


def search_supernet(supernet: SuperNet, data: DataSplits, estimator: LatencyEstimator | None, target_ms: float,
                    config: SearchConfig, progress: Progress, resume: dict[str, Any] | None = None,
                    on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Warm-up (weight steps only), then epochs alternating weight steps (``weights`` split) and architecture
    steps (``arch`` split); returns one history record per epoch.

    After each epoch ``on_epoch`` gets the whole state (tensors and plain values: supernet, optimizers,
    scheduler, strategy, generators, global RNGs, history); given as ``resume``, it continues after that epoch
    exactly as the uninterrupted search would have.

    Under torchrun (:mod:`hwnas.search.distributed`) every rank calls it: rank 0's ``estimator``, ``target_ms``,
    ``resume``, weights and RNG states are used on every rank, each rank computes on its shard of the global
    batch, and only rank 0 shows progress and gets ``on_epoch``."""
    ranks = distributed.current()
    if ranks is None:
        return _search_epochs(_SearchLoop.start(supernet, data, estimator, target_ms, config, None), progress,
                              resume, on_epoch)
    distributed.check_batches(ranks, {"--set batch_size": config.batch_size} | (
        {"--set arch_batch_size": config.arch_batch_size} if config.strategy in distributed.SHARDED_STRATEGIES
        else {}))
    estimator, target_ms, resume, rng = distributed.share((estimator, target_ms, resume, rng_state()))
    if resume is None:
        distributed.broadcast_state(supernet)
        set_rng_state(rng)
    if not ranks.main:
        progress, on_epoch = Progress(), None
    with distributed.global_batch_norm(supernet):
        loop = _SearchLoop.start(supernet, data, estimator, target_ms, config, ranks)
        return _search_epochs(loop, progress, resume, on_epoch)


@dataclass
class _SearchLoop:
    """What the epochs of :func:`search_supernet` share; ``ranks``: None in one process."""

    supernet: SuperNet
    data: DataSplits
    estimator: LatencyEstimator
    target_ms: float
    config: SearchConfig
    ranks: distributed.Ranks | None
    strategy: ArchStep
    params: list[nn.Parameter]
    stateful: dict[str, Any]

    @classmethod
    def start(cls, supernet: SuperNet, data: DataSplits, estimator: LatencyEstimator, target_ms: float,
              config: SearchConfig, ranks: distributed.Ranks | None) -> _SearchLoop:
        """The strategy, optimizer, cosine schedule and generators of a fresh search."""
        strategy = get_strategy(config.strategy, **_strategy_kwargs(config, target_ms))
        params = supernet.weight_parameters()
        optimizer = weight_optimizer(params, config, config.weight_lr)
        epochs = config.warmup_epochs + config.search_epochs
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        arch_generator = seeded_generator(config.seed + 4)
        arch_batches = _Cycle(data.loader("arch", config.arch_batch_size, True, arch_generator, True),
                              arch_generator)
        stateful = {"supernet": supernet, "optimizer": optimizer, "scheduler": scheduler,
                    "paths": seeded_generator(config.seed + 1), "shuffle": seeded_generator(config.seed + 3),
                    "arch_batches": arch_batches}
        return cls(supernet, data, estimator, target_ms, config, ranks, strategy, params, stateful)

    def shard(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch if self.ranks is None else self.ranks.shard(batch)

    def arch_step(self) -> dict[str, float]:
        """One step of the strategy: on this rank's shard with averaged ``alpha`` gradients when the strategy is
        data parallel, else on the whole batch (every rank alike, local BatchNorm statistics)."""
        supernet, config, strategy = self.supernet, self.config, self.strategy
        batch = next(self.stateful["arch_batches"])
        if self.ranks is None:
            return strategy.step(supernet, format_batch(batch, config.channels_last), self.estimator, self.target_ms)
        if config.strategy in distributed.SHARDED_STRATEGIES:
            with distributed.averaged_grads(supernet.arch_parameters(), self.ranks):
                return strategy.step(supernet, format_batch(self.ranks.shard(batch), config.channels_last),
                                     self.estimator, self.target_ms)
        with distributed.local_batch_norm(supernet):
            return strategy.step(supernet, format_batch(batch, config.channels_last), self.estimator, self.target_ms)


def _search_epochs(loop: _SearchLoop, progress: Progress, resume: dict[str, Any] | None,
                   on_epoch: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """The epochs of :func:`search_supernet` after those ``resume`` holds."""
    config, supernet = loop.config, loop.supernet
    epochs = config.warmup_epochs + config.search_epochs
    history: list[dict[str, Any]] = []
    if resume is not None:
        history = restore_state(resume, loop.stateful)
        loop.strategy.load_state_dict(resume["strategy"], supernet)
    steps = len(loop.data.loader("weights", config.batch_size, drop_last=True))
    bar = tqdm(total=epochs * steps, initial=len(history) * steps, desc="search", unit="step",
               disable=not progress.bars, dynamic_ncols=True)
    for epoch in range(len(history), epochs):
        phase = "warmup" if epoch < config.warmup_epochs else "search"
        start = time.perf_counter()
        record = {"epoch": epoch + 1, "phase": phase, **_search_epoch(loop, phase, bar)}
        with distributed.local_batch_norm(supernet):  # every rank evaluates the whole split
            record.update(_supernet_state(supernet, loop.data, loop.estimator, config))
        history.append({**record, "seconds": time.perf_counter() - start})
        summary = (f"{phase} E[lat] {record['expected_latency_ms']:.4g} ms "
                   f"acc {record['argmax_arch_accuracy']:.3f}")
        bar.set_postfix_str(summary)
        progress.say(f"search epoch {epoch + 1}/{epochs}: {summary}, weight loss {record['weight_loss']:.3f}")
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, "history": list(history), "strategy": loop.strategy.state_dict(),
                      **snapshot_state(loop.stateful)})
    bar.close()
    return history


def _search_epoch(loop: _SearchLoop, phase: str, bar: Any) -> dict[str, float]:
    """One epoch's weight steps (and architecture steps in the search phase); its mean losses and logs, averaged
    over the ranks."""
    config, supernet, optimizer = loop.config, loop.supernet, loop.stateful["optimizer"]
    losses, accs, arch_logs = [], [], []
    for i, batch in enumerate(loop.data.loader("weights", config.batch_size, True, loop.stateful["shuffle"],
                                               drop_last=True)):
        supernet.train()
        supernet.set_mode("weight")
        supernet.sample_paths(loop.stateful["paths"])
        loss, acc = weight_step(supernet, loop.shard(batch), optimizer, loop.params, config, loop.ranks)
        losses.append(loss)
        accs.append(acc)
        if phase == "search" and (i + 1) % config.arch_update_every == 0:
            arch_logs += [loop.arch_step() for _ in range(config.arch_steps)]
        bar.update(1)
        bar.set_postfix_str(f"{phase} loss {loss:.3f}")
    loop.stateful["scheduler"].step()
    means = {"weight_loss": float(np.mean(losses)), "weight_accuracy": float(np.mean(accs)), **_mean_logs(arch_logs)}
    return means if loop.ranks is None else distributed.average_values(means, loop.ranks)


def _supernet_state(supernet: SuperNet, data: DataSplits, estimator: LatencyEstimator,
                    config: SearchConfig) -> dict[str, float]:
    """Expected latency, and the argmax architecture's latency and accuracy on the ``arch`` split."""
    with torch.no_grad():
        expected = float(estimator.expected_latency_ms(supernet.probs()))
    argmax = supernet.argmax_arch()
    supernet.set_arch(argmax)
    return {"expected_latency_ms": expected, "argmax_latency_ms": estimator.latency_ms(argmax),
            "argmax_arch_accuracy": evaluate(supernet, data.loader("arch", config.eval_batch_size),
                                             config.channels_last, batch_statistics=True)}
