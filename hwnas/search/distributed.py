"""Supernet training past one process: data parallel under ``torchrun`` (gloo on CPU, NCCL on CUDA tensors).

With ``W`` processes every rank holds the same supernet, optimizers and generators, so each step every rank
samples the same paths and draws the same global batch of ``B`` images; rank ``r`` computes on its shard
``x[r B/W : (r+1) B/W]``. After the backward the weight gradients are averaged across ranks (one flattened
all-reduce, then ``/W``), so every rank takes the same optimizer step from the gradient of the global batch's mean
loss and the weights stay identical on every rank. Not :class:`~torch.nn.parallel.DistributedDataParallel` itself:
its reducer hooks fire on ``.backward()`` only (the architecture step uses ``torch.autograd.grad``), it needs
``find_unused_parameters`` for per-step paths, and it broadcasts rank 0's buffers at each forward, which would undo
:func:`~hwnas.search.supernet.frozen_buffers`; the all-reduce is the same collective DDP runs.

* BatchNorm: while training, every ``nn.BatchNorm2d`` normalises with the statistics of the global batch
  (:class:`GlobalBatchNorm2d`, a differentiable all-reduce of per-channel sums; ``nn.SyncBatchNorm`` refuses CPU
  tensors), so a step computes what one process computes on the whole batch, up to float rounding.
* Architecture steps: ``proxyless`` (:data:`SHARDED_STRATEGIES`) runs on its shard of the global ``arch`` batch with
  the ``alpha`` gradients averaged (its losses are ``a(LAT) CE + b(LAT)``, linear in CE, so the mean of the
  per-rank gradients is the global batch's gradient); any other strategy runs on the whole batch on every rank with
  local BatchNorm, identical everywhere, with no communication.
* Only rank 0 reports progress and writes; a resumed state and the latency model come from rank 0 to every rank.

One process alone (no ``torchrun``, or ``WORLD_SIZE`` 1) runs none of this: the code path of today, bit for bit.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from hwnas.errors import HwnasError

SHARDED_STRATEGIES = frozenset({"proxyless"})
# rank 0 sets up (reads data, may profile a table or fit a predictor) while the others wait in the first broadcast
TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the process group: ``rank`` of ``world`` (``world >= 2``)."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        """Rank 0: the one that reports progress and writes files."""
        return self.rank == 0

    def shard(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's equal slice of a global batch (:func:`check_batches` made the size divisible)."""
        x, y = batch
        size = len(y) // self.world
        part = slice(self.rank * size, (self.rank + 1) * size)
        return x[part], y[part]


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting its variables) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: str = "cpu") -> Ranks | None:
    """Initialise the default process group from torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``) once: backend ``nccl`` for ``device`` ``cuda``, else ``gloo``. None in one process."""
    if not launched():
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return current()


def current() -> Ranks | None:
    """The ranks of the initialised process group; None when there is none or it has one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Ranks(dist.get_rank(), dist.get_world_size())


def leave() -> None:
    """Destroy the default process group (when one is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batches(ranks: Ranks, sizes: dict[str, int]) -> None:
    """Every global batch splits into ``world`` equal shards (``sizes``: flag -> batch size), checked up front."""
    for flag, size in sizes.items():
        if size % ranks.world:
            raise HwnasError(f"{flag} {size}: not divisible by the {ranks.world} torchrun processes; give a "
                             f"multiple of {ranks.world}")


def share(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (pickled broadcast): the latency model, the target, a resumed state."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _flat_groups(tensors: Sequence[torch.Tensor]) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """``tensors`` grouped by dtype, each group with one flat contiguous copy (one collective per group)."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    for group in groups.values():
        yield group, torch.cat([t.reshape(-1) for t in group])


def _unflatten(group: list[torch.Tensor], flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view(t.shape))
            offset += t.numel()


def broadcast_state(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (as DDP does when it wraps a module)."""
    for group, flat in _flat_groups(list(module.state_dict().values())):
        dist.broadcast(flat, src=0)
        _unflatten(group, flat)


def average_gradients(params: Sequence[nn.Parameter], ranks: Ranks) -> None:
    """Replace each ``.grad`` by its mean over the ranks; every rank sampled the same paths, so the same
    parameters have a gradient everywhere."""
    grads = [p.grad for p in params if p.grad is not None]
    for group, flat in _flat_groups(grads):
        dist.all_reduce(flat)
        _unflatten(group, flat.div_(ranks.world))


def average_values(values: dict[str, float], ranks: Ranks) -> dict[str, float]:
    """The mean over the ranks of each value (epoch losses and accuracies: the global batch's mean)."""
    if not values:
        return values
    flat = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(flat)
    return dict(zip(values, (flat / ranks.world).tolist()))


@contextmanager
def averaged_grads(params: Sequence[torch.Tensor], ranks: Ranks) -> Iterator[None]:
    """While open, every gradient computed for ``params`` (``backward`` or ``torch.autograd.grad``) is replaced by
    its mean over the ranks: the architecture step's ``alpha`` gradients."""
    def mean(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad.div_(ranks.world)

    handles = [p.register_hook(mean) for p in params]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _SumOverRanks(torch.autograd.Function):
    """``sum_r t_r`` on every rank; its backward is the same sum of the ranks' gradients (each rank's loss depends
    on every rank's ``t``)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics are the global batch's: ``mean = sum_r S_r / N`` and
    ``var = sum_r Q_r / N`` with ``S_r``, ``Q_r`` rank ``r``'s per-channel sum and sum of squared deviations from
    ``mean``, ``N`` the global batch's pixels per channel, through a differentiable all-reduce (its backward
    all-reduces the gradients, so the statistics' gradient reaches every rank's inputs). Running statistics are
    updated as ``nn.BatchNorm2d`` does (unbiased variance, ``momentum`` or the cumulative average). Eval mode:
    unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.track_running_stats:
            return super().forward(x)
        shape = (1, -1, 1, 1)
        count = x.numel() // x.shape[1] * dist.get_world_size()  # equal shards (check_batches)
        mean = _SumOverRanks.apply(x.sum(dim=(0, 2, 3))) / count
        centered = x - mean.view(shape)
        var = _SumOverRanks.apply(centered.square().sum(dim=(0, 2, 3))) / count
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        self._update_running(mean.detach(), var.detach(), count)
        return out

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            self.running_var.mul_(1 - factor).add_(var * count / max(count - 1, 1), alpha=factor)


def follow_rank_zero(config: Any) -> None:
    """Under torchrun, on ranks >= 1: :func:`follow`, then exit the process with status 0 (rank 0 alone writes
    the run and prints its summary). On rank 0 and in one process: returns at once."""
    ranks = join()
    if ranks is None or ranks.main:
        return
    follow(config)
    raise SystemExit(0)


def follow(config: Any) -> dict[str, Any]:
    """Ranks >= 1 of ``hwnas search`` under torchrun: build the same data and supernet from ``config`` (a
    :class:`~hwnas.search.run_config.SearchConfig`), train the supernet with rank 0 (which sends the latency
    model, the target and a resumed state), then leave; rank 0 alone does the rest of the run (closed loop on the
    device, training the derived network, the run folder). Returns what this rank did."""
    from hwnas.data import load_dataset
    from hwnas.search.progress import Progress
    from hwnas.search.run_supernet import search_supernet
    from hwnas.search.run_train import torch_settings
    from hwnas.search.supernet import SuperNet
    from hwnas.spaces import get_space, space_info

    ranks = current()
    resolution = config.resolution or space_info(config.space).default_resolution
    data = load_dataset(config.data, resolution, config.seed, config.arch_fraction, config.test_fraction,
                        config.max_per_split)
    supernet = SuperNet(get_space(config.space, resolution, data.num_classes), arch_grad=config.arch_grad,
                        weight_sharing=config.weight_sharing)
    if config.channels_last:
        supernet = supernet.to(memory_format=torch.channels_last)
    with torch_settings(config):
        history = search_supernet(supernet, data, None, 0.0, config, Progress())
    leave()
    return {"rank": ranks.rank if ranks else 0, "world": ranks.world if ranks else 1, "epochs": len(history),
            "role": "supernet training; rank 0 writes the run"}


def _swap(model: nn.Module, old: type, new: type) -> list[nn.Module]:
    swapped = [m for m in model.modules() if type(m) is old]
    for m in swapped:
        m.__class__ = new
    return swapped


@contextmanager
def global_batch_norm(model: nn.Module) -> Iterator[None]:
    """Every ``nn.BatchNorm2d`` of ``model`` a :class:`GlobalBatchNorm2d` while open (same parameters and buffers,
    the class only is swapped, and swapped back after)."""
    swapped = _swap(model, nn.BatchNorm2d, GlobalBatchNorm2d)
    try:
        yield
    finally:
        for m in swapped:
            m.__class__ = nn.BatchNorm2d


@contextmanager
def local_batch_norm(model: nn.Module) -> Iterator[None]:
    """Inside :func:`global_batch_norm`: per-rank statistics again, for work every rank does on the same data
    (evaluation, replicated architecture steps), which then needs no communication."""
    swapped = _swap(model, GlobalBatchNorm2d, nn.BatchNorm2d)
    try:
        yield
    finally:
        for m in swapped:
            m.__class__ = GlobalBatchNorm2d


__all__ = ["GlobalBatchNorm2d", "Ranks", "SHARDED_STRATEGIES", "average_gradients", "average_values",
           "averaged_grads", "broadcast_state", "check_batches", "current", "global_batch_norm", "join", "launched",
           "follow", "follow_rank_zero", "leave", "local_batch_norm", "share"]
