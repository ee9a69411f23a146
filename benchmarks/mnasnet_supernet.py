"""How fast the mnasnet supernet learns when its sampled paths vary in one choice at a time.

    python -m benchmarks.mnasnet_supernet [--steps 80] [--only single,depth,...] [--mix-warmup N]

Each row trains a fresh supernet (mnasnet@32, digits, 10 classes) with sampled paths, as the search's weight steps
do (SGD 0.05, Nesterov momentum, gradient norm clipped at 5, batch 64), but with every block restricted to the
choices of one row (the others' alpha at -1e9), and prints the mean training loss of each 10 steps. Chance is
ln 10 = 2.30. Rows: one architecture (MBConv6 k3, base depth, width 1.0, no SE, no skip); then the same varying
one choice: width, kernel, depth without skip, depth with skip; the deepest plain architecture; the whole space.
Then the rows that locate the op family (conv, dwsep, MBConv) as what stops learning: with skip on, the whole space,
each of width / kernel and SE / op family added to sampled depth; one family alone; two families mixed.

``--mix-warmup N``: for the first N steps each block runs every op family of its sampled choice (the same kernel, SE,
skip, depth and width) and averages their outputs, as a DARTS-style mixture, then samples one path as before (an
experiment: the families' separate weights then learn channels the next block reads the same way).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from hwnas.data.datasets import load_dataset
from hwnas.search.supernet import MixedOp, SuperNet
from hwnas.spaces import get_space
from hwnas.spaces.mnasnet import BLOCKS, BlockChoice

Keep = Callable[[BlockChoice, int], bool]  # (choice, the block's base depth) -> whether it may be sampled


def _plain(c: BlockChoice) -> bool:
    return c.op == "mb6" and c.k == 3 and not c.se


ROWS: dict[str, Keep] = {
    "single": lambda c, d: _plain(c) and not c.skip and c.width == "w100" and c.depth == d,
    "width": lambda c, d: _plain(c) and not c.skip and c.depth == d,
    "kernel": lambda c, d: c.op == "mb6" and not c.se and not c.skip and c.width == "w100" and c.depth == d,
    "depth": lambda c, d: _plain(c) and not c.skip and c.width == "w100",
    "depth+skip": lambda c, d: _plain(c) and c.skip and c.width == "w100",
    "deepest": lambda c, d: _plain(c) and not c.skip and c.width == "w100" and c.depth == d + 1,
    "space": lambda c, d: True,
    "space+skip": lambda c, d: c.skip,
    "skip+width": lambda c, d: _plain(c) and c.skip,
    "skip+kse": lambda c, d: c.op == "mb6" and c.skip and c.width == "w100",
    "skip+op": lambda c, d: c.k == 3 and not c.se and c.skip and c.width == "w100",
    "conv": lambda c, d: c.op == "conv" and c.k == 3 and not c.se and c.skip and c.width == "w100",
    "dwsep": lambda c, d: c.op == "dwsep" and c.k == 3 and not c.se and c.skip and c.width == "w100",
    "conv+dwsep": lambda c, d: c.op in ("conv", "dwsep") and c.k == 3 and not c.se and c.skip and c.width == "w100",
}


def _family_mix(mixed: MixedOp, x: torch.Tensor) -> torch.Tensor:
    """A weight-mode block running every allowed op family of its sampled choice and averaging them."""
    rest = mixed.names[mixed.active].split("_", 1)[1]  # the choice without its op family
    siblings = [i for i, n in enumerate(mixed.names) if n.split("_", 1)[1] == rest and mixed.alpha[i] > -1e8]
    return sum(mixed.ops[i](x) for i in siblings) / len(siblings)


def train(keep: Keep, steps: int, seed: int = 0, mix_warmup: int = 0) -> list[float]:
    """Mean loss per 10 steps of a supernet whose sampled paths ``keep`` allows."""
    space = get_space("mnasnet", 32, 10)
    data = load_dataset("digits", 32, seed)
    torch.manual_seed(seed)
    net = SuperNet(space, "two", "nested")
    net.set_mode("weight")
    with torch.no_grad():
        for b, mixed in enumerate(net.mixed_ops):
            for i, name in enumerate(mixed.names):
                if not keep(BlockChoice.parse(name), BLOCKS[b][1]):
                    mixed.alpha[i] = -1e9
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, nesterov=True)
    generator, losses = torch.Generator().manual_seed(seed), []
    net.train()
    while len(losses) < steps:
        for x, y in data.loader("train", 64, shuffle=True, generator=generator):
            net.sample_paths(generator)
            mixing = len(losses) < mix_warmup
            loss = F.cross_entropy(net(x) if not mixing else _mixed_forward(net, x), y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return [sum(losses[i:i + 10]) / len(losses[i:i + 10]) for i in range(0, steps, 10)]


def _mixed_forward(net: SuperNet, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` with every block's forward :func:`_family_mix` (this call only)."""
    original = MixedOp.forward
    MixedOp.forward = _family_mix  # type: ignore[method-assign]  # a benchmark-only experiment
    try:
        return net(x)
    finally:
        MixedOp.forward = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--only", default=",".join(ROWS), help="comma-separated rows")
    parser.add_argument("--mix-warmup", type=int, default=0, help="steps that average the op families (docstring)")
    args = parser.parse_args()
    print(f"mean training loss per 10 steps (chance {math.log(10):.2f})")
    for name in args.only.split(","):
        start = time.perf_counter()
        means = train(ROWS[name], args.steps, mix_warmup=args.mix_warmup)
        print(f"{name:11s} " + " ".join(f"{m:.2f}" for m in means) + f"   ({time.perf_counter() - start:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
