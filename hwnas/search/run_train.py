"""Training of the search run: training a network from scratch (the derived one, the baselines), one weight step,
evaluation, seeding and torch settings; the supernet search that uses them is :mod:`hwnas.search.run_supernet`."""

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
from hwnas.ops.modules import zero_init_residuals
from hwnas.search import distributed
from hwnas.search.checkpoint import RunCheckpoint, rng_state, set_rng_state
from hwnas.search.progress import Progress
from hwnas.search.records import TrainedNetwork
from hwnas.search.run_config import SearchConfig
from hwnas.search.supernet import frozen_buffers
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


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def weight_optimizer(params: list[nn.Parameter], config: SearchConfig, lr: float) -> torch.optim.Optimizer:
    if config.weight_optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0,
                           weight_decay=config.weight_decay)


def format_batch(batch: tuple[torch.Tensor, torch.Tensor], channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def weight_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
                 params: list[nn.Parameter], config: SearchConfig,
                 ranks: distributed.Ranks | None = None) -> tuple[float, float]:
    """One SGD step on the weights; returns (loss, batch accuracy). With ``ranks``, ``batch`` is this rank's shard
    and the gradients are averaged over the ranks before clipping and the step."""
    x, y = format_batch(batch, config.channels_last)
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if ranks is not None:
        distributed.average_gradients(params, ranks)
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
            x, y = format_batch(batch, channels_last)
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    return correct / max(total, 1)


def restore_state(resume: dict[str, Any], stateful: dict[str, Any]) -> list[dict[str, Any]]:
    """Load ``resume`` (a state :func:`snapshot_state` took) into ``stateful``'s modules, optimizers, schedulers and
    generators and the global RNGs; returns the epoch history it holds."""
    for key, thing in stateful.items():
        if isinstance(thing, torch.Generator):
            thing.set_state(resume[key])
        else:
            thing.load_state_dict(resume[key])
    set_rng_state(resume["rng"])
    return list(resume["history"])


def snapshot_state(stateful: dict[str, Any]) -> dict[str, Any]:
    """The states of ``stateful`` (generators' and ``state_dict()`` of the rest) and the global RNGs."""
    return {**{key: thing.get_state() if isinstance(thing, torch.Generator) else thing.state_dict()
               for key, thing in stateful.items()}, "rng": rng_state()}


def train_derived(space: SearchSpace, arch: Architecture, data: DataSplits, config: SearchConfig, progress: Progress,
                  label: str = "train", resume: dict[str, Any] | None = None,
                  on_epoch: Callable[[dict[str, Any]], None] | None = None
                  ) -> tuple[nn.Module, float, list[dict[str, float]]]:
    """Train ``space.build(arch)`` from scratch on the ``train`` split; returns (net, test accuracy, history).
    ``on_epoch`` and ``resume``: the state after each epoch, as in :func:`search_supernet`."""
    torch.manual_seed(config.seed)
    net = space.build(arch)
    zero_init_residuals(net)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = list(net.parameters())
    optimizer = weight_optimizer(params, config, config.train_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.train_epochs, 1))
    shuffle = seeded_generator(config.seed + 5)
    steps = len(data.loader("train", config.train_batch_size, drop_last=True))
    stateful = {"net": net, "optimizer": optimizer, "scheduler": scheduler, "shuffle": shuffle}
    history: list[dict[str, float]] = restore_state(resume, stateful) if resume is not None else []
    bar = tqdm(total=config.train_epochs * steps, initial=len(history) * steps, desc=label, unit="step",
               disable=not progress.bars, dynamic_ncols=True)
    for epoch in range(len(history), config.train_epochs):
        net.train()
        losses, accs = [], []
        for batch in data.loader("train", config.train_batch_size, True, shuffle, drop_last=True):
            loss, acc = weight_step(net, batch, optimizer, params, config)
            losses.append(loss)
            accs.append(acc)
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f}")
        scheduler.step()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_accuracy": float(np.mean(accs))})
        progress.say(f"{label} epoch {epoch + 1}/{config.train_epochs}: loss {history[-1]['loss']:.3f}, "
                     f"train accuracy {history[-1]['train_accuracy']:.3f}")
        if on_epoch is not None:
            on_epoch({"epoch": epoch + 1, "history": list(history), **snapshot_state(stateful)})
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
