"""Training loops of the search run: the supernet search (warm-up, then alternating weight and architecture
steps, ProxylessNAS style) and training the derived network from scratch; seeding and torch settings."""

from __future__ import annotations

import random
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from hwnas.data import DataSplits
from hwnas.latency.estimator import LatencyEstimator
from hwnas.search.checkpoint import RunCheckpoint, rng_state, set_rng_state
from hwnas.search.progress import Progress
from hwnas.search.records import TrainedNetwork
from hwnas.search.run_config import SearchConfig
from hwnas.search.strategies import get_strategy, strategy_parameters
from hwnas.search.supernet import SuperNet, frozen_buffers
from hwnas.spaces import Architecture, SearchSpace


@contextmanager
def torch_settings(config: SearchConfig) -> Iterator[None]:
    """Seed python/numpy/torch, fix threads, enable deterministic algorithms; restore torch's settings after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.num_threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weight_optimizer(params: list[nn.Parameter], config: SearchConfig, lr: float) -> torch.optim.Optimizer:
    if config.weight_optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0,
                           weight_decay=config.weight_decay)


def _format(batch: tuple[torch.Tensor, torch.Tensor], channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def _weight_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
                 params: list[nn.Parameter], config: SearchConfig) -> tuple[float, float]:
    """One SGD step on the weights; returns (loss, batch accuracy)."""
    x, y = _format(batch, config.channels_last)
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimizer.step()
    return loss.item(), (logits.argmax(dim=1) == y).float().mean().item()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, channels_last: bool = False, batch_statistics: bool = False) -> float:
    """Top-1 accuracy of ``model`` over ``loader``, in eval mode; with ``batch_statistics``, BatchNorm normalises
    with each batch's statistics (buffers left unchanged): a supernet's running statistics mix every path's
    inputs, so a path evaluated with them scores near chance (default run on digits: the argmax path scored 0.098
    with running statistics while the supernet's training accuracy was 0.96)."""
    model.train(batch_statistics)
    correct = total = 0
    with frozen_buffers(model) if batch_statistics else nullcontext():
        for batch in loader:
            x, y = _format(batch, channels_last)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    return correct / max(total, 1)


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
        self._loader, self._generator = loader, generator
        self._start, self._taken, self._iter = generator.get_state(), 0, None

    def __next__(self) -> Any:
        if self._iter is None:
            self._start, self._taken, self._iter = self._generator.get_state(), 0, iter(self._loader)
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
        self._generator.set_state(state["start"])
        self._iter = None
        if state["started"]:
            self._iter = iter(self._loader)
            for _ in range(state["taken"]):
                next(self._iter)
            self._taken = state["taken"]


def _restore(resume: dict[str, Any], stateful: dict[str, Any]) -> list[dict[str, Any]]:
    """Load ``resume`` (a state :func:`_snapshot` took) into ``stateful``'s modules, optimizers, schedulers and
    generators and the global RNGs; returns the epoch history it holds."""
    for key, thing in stateful.items():
        if isinstance(thing, torch.Generator):
            thing.set_state(resume[key])
        else:
            thing.load_state_dict(resume[key])
    set_rng_state(resume["rng"])
    return list(resume["history"])


def _snapshot(stateful: dict[str, Any]) -> dict[str, Any]:
    """The states of ``stateful`` (generators' and ``state_dict()`` of the rest) and the global RNGs."""
    return {**{key: thing.get_state() if isinstance(thing, torch.Generator) else thing.state_dict()
               for key, thing in stateful.items()}, "rng": rng_state()}


def _mean_logs(logs: list[dict[str, float]]) -> dict[str, float]:
    keys = logs[0].keys() if logs else ()
    return {f"arch_{k}": float(np.mean([entry[k] for entry in logs])) for k in keys}


def search_supernet(supernet: SuperNet, data: DataSplits, estimator: LatencyEstimator, target_ms: float,
                    config: SearchConfig, progress: Progress, resume: dict[str, Any] | None = None,
                    on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Warm-up (weight steps only), then epochs alternating weight steps (``weights`` split) and architecture
    steps (``arch`` split); returns one history record per epoch.

    After each epoch ``on_epoch`` gets the whole state (tensors and plain values: supernet, optimizers,
    scheduler, strategy, generators, global RNGs, history); given as ``resume``, it continues after that epoch
    exactly as the uninterrupted search would have."""
    strategy = get_strategy(config.strategy, **_strategy_kwargs(config, target_ms))
    params = supernet.weight_parameters()
    optimizer = _weight_optimizer(params, config, config.weight_lr)
    epochs = config.warmup_epochs + config.search_epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    paths, shuffle = _generator(config.seed + 1), _generator(config.seed + 3)
    arch_generator = _generator(config.seed + 4)
    arch_batches = _Cycle(data.loader("arch", config.arch_batch_size, True, arch_generator, True), arch_generator)
    steps = len(data.loader("weights", config.batch_size, drop_last=True))
    stateful = {"supernet": supernet, "optimizer": optimizer, "scheduler": scheduler, "paths": paths,
                "shuffle": shuffle, "arch_batches": arch_batches}
    history: list[dict[str, Any]] = []
    if resume is not None:
        history = _restore(resume, stateful)
        strategy.load_state_dict(resume["strategy"], supernet)
    bar = tqdm(total=epochs * steps, initial=len(history) * steps, desc="search", unit="step",
               disable=not progress.bars, dynamic_ncols=True)
    for epoch in range(len(history), epochs):
        phase = "warmup" if epoch < config.warmup_epochs else "search"
        start, losses, accs, arch_logs = time.perf_counter(), [], [], []
        for i, batch in enumerate(data.loader("weights", config.batch_size, True, shuffle, drop_last=True)):
            supernet.train()
            supernet.set_mode("weight")
            supernet.sample_paths(paths)
            loss, acc = _weight_step(supernet, batch, optimizer, params, config)
            losses.append(loss)
            accs.append(acc)
            if phase == "search" and (i + 1) % config.arch_update_every == 0:
                arch_logs += [strategy.step(supernet, _format(next(arch_batches), config.channels_last), estimator,
                                            target_ms)
                              for _ in range(config.arch_steps)]
            bar.update(1)
            bar.set_postfix_str(f"{phase} loss {loss:.3f}")
        scheduler.step()
        record = {"epoch": epoch + 1, "phase": phase, "weight_loss": float(np.mean(losses)),
                  "weight_accuracy": float(np.mean(accs)), **_supernet_state(supernet, data, estimator, config)}
        history.append({**record, **_mean_logs(arch_logs), "seconds": time.perf_counter() - start})
        summary = (f"{phase} E[lat] {record['expected_latency_ms']:.4g} ms "
                   f"acc {record['argmax_arch_accuracy']:.3f}")
        bar.set_postfix_str(summary)
        progress.say(f"search epoch {epoch + 1}/{epochs}: {summary}, weight loss {record['weight_loss']:.3f}")
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, "history": list(history), "strategy": strategy.state_dict(),
                      **_snapshot(stateful)})
    bar.close()
    return history


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


def train_derived(space: SearchSpace, arch: Architecture, data: DataSplits, config: SearchConfig, progress: Progress,
                  label: str = "train", resume: dict[str, Any] | None = None,
                  on_epoch: Callable[[dict[str, Any]], None] | None = None
                  ) -> tuple[nn.Module, float, list[dict[str, float]]]:
    """Train ``space.build(arch)`` from scratch on the ``train`` split; returns (net, test accuracy, history).
    ``on_epoch`` and ``resume``: the state after each epoch, as in :func:`search_supernet`."""
    torch.manual_seed(config.seed)
    net = space.build(arch)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = list(net.parameters())
    optimizer = _weight_optimizer(params, config, config.train_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.train_epochs, 1))
    shuffle = _generator(config.seed + 5)
    steps = len(data.loader("train", config.train_batch_size, drop_last=True))
    stateful = {"net": net, "optimizer": optimizer, "scheduler": scheduler, "shuffle": shuffle}
    history: list[dict[str, float]] = _restore(resume, stateful) if resume is not None else []
    bar = tqdm(total=config.train_epochs * steps, initial=len(history) * steps, desc=label, unit="step",
               disable=not progress.bars, dynamic_ncols=True)
    for epoch in range(len(history), config.train_epochs):
        net.train()
        losses, accs = [], []
        for batch in data.loader("train", config.train_batch_size, True, shuffle, drop_last=True):
            loss, acc = _weight_step(net, batch, optimizer, params, config)
            losses.append(loss)
            accs.append(acc)
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f}")
        scheduler.step()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_accuracy": float(np.mean(accs))})
        progress.say(f"{label} epoch {epoch + 1}/{config.train_epochs}: loss {history[-1]['loss']:.3f}, "
                     f"train accuracy {history[-1]['train_accuracy']:.3f}")
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, "history": list(history), **_snapshot(stateful)})
    bar.close()
    accuracy = evaluate(net, data.loader("test", config.eval_batch_size), config.channels_last)
    return net.to(memory_format=torch.contiguous_format), accuracy, history


def train_checkpointed(space: SearchSpace, arch: Architecture, data: DataSplits, config: SearchConfig,
                       progress: Progress, label: str, checkpoint: RunCheckpoint) -> TrainedNetwork:
    """Train ``arch`` (``label``: ``train`` or ``baseline``) with :func:`train_derived`, checkpointed per epoch; a
    network the checkpoint holds as trained is loaded instead."""
    done = checkpoint.state["trained"].get(label)
    if done is not None and done["arch"] == list(arch.choices):
        net = space.build(arch)
        net.load_state_dict(done["state_dict"])
        return TrainedNetwork(arch, net, done["accuracy"], done["history"], done["seconds"])
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
    return TrainedNetwork(arch, net, accuracy, history, seconds)
