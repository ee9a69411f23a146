"""Elastic weight sharing for block choices of several layers (the ``mnasnet`` space; Once-for-All, Cai et al.,
ICLR 2020, slices weights the same way).

A mnasnet block has 192-288 choices (op, kernel, SE, skip, depth, width), each a
:class:`~hwnas.ops.BlockSpec` of 1 to 5 layers: one module per choice would take gigabytes. Instead one
:class:`ElasticBlock` holds the block's weights once, and every choice is an :class:`ElasticCandidate` that runs
slices of them:

* per layer position ``p`` (up to the deepest choice) and op family (conv, dwsep, mbconv): convolution weights at the
  widest input (over every width of the previous block), the widest output, the largest kernel, the largest
  expansion and squeeze-excite at the widest; a choice of ``cin`` input, ``mid`` inner and ``cout`` output channels
  uses the first ``cin``/``mid``/``cout`` (a narrower input is the same as zero-padding it to the widest), and a
  ``k x k`` kernel is the centred window of the largest;
* BatchNorm per (position, op family, expansion) at the widest channels, sliced the same way (its running
  statistics too): the statistics of a 3x3 and a 5x5 slice are close, those of e3 and e6 are not;
* for the last block, the head 1x1 conv (its choices end with it), its input sliced.

A choice of depth ``d`` runs positions ``0 .. d-1`` (absent layers do not run); the identity skip is added exactly
where the layer's :class:`~hwnas.ops.MnasLayerSpec` says ``res`` 1. The input's channel count (the previous block's
sampled width) selects the exact spec of the choice in that context. Both ``weight_sharing`` modes use this: one
module per choice is not an option here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import HwnasError
from hwnas.ops import BlockSpec, ConvSpec, MnasLayerSpec, OpSpec
from hwnas.ops.blocks import MNAS_OPS
from hwnas.ops.modules import activation
from hwnas.spaces import Architecture, ArchNet

if TYPE_CHECKING:
    from hwnas.search.supernet import SuperNet

Candidates = Sequence[tuple[str, OpSpec]]
_NORMS = {0: ("conv",), 1: ("dw", "project"), 2: ("expand", "dw", "project")}
"""BatchNorm layers of each op family (``MnasLayerSpec.t``)."""


def is_elastic_layer(candidates: Candidates) -> bool:
    """True when every candidate is a block of ``mnas`` layers (optionally ending with a conv: the head)."""
    return bool(candidates) and all(_is_mnas_block(spec) for _, spec in candidates)


def _is_mnas_block(spec: OpSpec) -> bool:
    if not isinstance(spec, BlockSpec) or not isinstance(spec.parts[0], MnasLayerSpec):
        return False
    return (all(isinstance(p, MnasLayerSpec) for p in spec.parts[:-1])
            and isinstance(spec.parts[-1], (MnasLayerSpec, ConvSpec)))


def _norm_channels(spec: MnasLayerSpec) -> dict[str, int]:
    """Channels of each BatchNorm of a layer."""
    channels = {"conv": spec.cout, "expand": spec.mid, "dw": spec.mid, "project": spec.cout}
    return {name: channels[name] for name in _NORMS[spec.t]}


class _LayerWeights(nn.Module):
    """One (position, op family)'s convolutions at their widest; ``nn.Conv2d`` for the default initialisation, never
    called: the candidates slice ``.weight`` (and the SE's ``.bias``)."""

    def __init__(self, t: int, cin: int, mid: int, cout: int, k: int, se: int) -> None:
        super().__init__()
        if t == 0:
            self.conv = nn.Conv2d(cin, cout, k, bias=False)
        else:
            if t == 2:
                self.expand = nn.Conv2d(cin, mid, 1, bias=False)
            self.dw = nn.Conv2d(mid, mid, k, groups=mid, bias=False)
            self.project = nn.Conv2d(mid, cout, 1, bias=False)
        if se:
            gated = cout if t == 0 else mid
            self.se_reduce = nn.Conv2d(gated, se, 1)
            self.se_expand = nn.Conv2d(se, gated, 1)


def _widest(parts: Sequence[MnasLayerSpec]) -> dict[str, int]:
    se = [p.se_channels for p in parts if p.se]
    return {"cin": max(p.cin for p in parts), "mid": max(p.mid for p in parts), "cout": max(p.cout for p in parts),
            "k": max(p.k for p in parts), "se": max(se, default=0)}


def _window(weight: torch.Tensor, rows: int, cols: int, k: int) -> torch.Tensor:
    """The first ``rows`` x ``cols`` filters' centred ``k x k`` window."""
    start = (weight.shape[-1] - k) // 2
    return weight[:rows, :cols, start:start + k, start:start + k]


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn`` on its first ``x.shape[1]`` channels, as ``nn.BatchNorm2d`` computes it. The running statistics are
    never handed to autograd (a copy in eval mode; updated under ``no_grad`` when training): the choices of a block
    share them, and the arch gradient's recomputation of another choice (then restoring them) in the backward must
    not invalidate what the active path saved."""
    c = x.shape[1]
    mean, var = bn.running_mean[:c], bn.running_var[:c]  # type: ignore[index]
    if not bn.training:
        return F.batch_norm(x, mean.clone(), var.clone(), bn.weight[:c], bn.bias[:c], False, 0.0, bn.eps)
    out = F.batch_norm(x, None, None, bn.weight[:c], bn.bias[:c], True, 0.0, bn.eps)
    with torch.no_grad():
        batch_var, batch_mean = torch.var_mean(x, dim=(0, 2, 3), correction=1 if x.numel() > c else 0)
        mean.lerp_(batch_mean, bn.momentum or 0.1)
        var.lerp_(batch_var, bn.momentum or 0.1)
        bn.num_batches_tracked.add_(1)  # type: ignore[union-attr]
    return out


class ElasticBlock(nn.Module):
    """The shared weights of one block (module docstring), for every spec in ``specs`` (all contexts)."""

    def __init__(self, specs: Sequence[BlockSpec]) -> None:
        super().__init__()
        slots: dict[tuple[int, int], list[MnasLayerSpec]] = {}
        norms: dict[str, dict[str, int]] = {}
        heads: list[OpSpec] = []
        acts = set()
        for block in specs:
            for p, part in enumerate(block.parts):
                acts.add(getattr(part, "act", "none"))
                if not isinstance(part, MnasLayerSpec):
                    heads.append(part)
                    continue
                slots.setdefault((p, part.t), []).append(part)
                widest = norms.setdefault(_norm_key(p, part), {})
                for name, channels in _norm_channels(part).items():
                    widest[name] = max(widest.get(name, 0), channels)
        self.layers = nn.ModuleDict({_slot_key(p, t): _LayerWeights(t, **_widest(parts))
                                     for (p, t), parts in sorted(slots.items())})
        self.norms = nn.ModuleDict({key: nn.ModuleDict({name: nn.BatchNorm2d(c) for name, c in widest.items()})
                                    for key, widest in sorted(norms.items())})
        self.head = _head(heads)
        self._acts = {name: activation(name) for name in acts}

    def run(self, block: BlockSpec, x: torch.Tensor) -> torch.Tensor:
        """``block``'s layers (one choice in one context) on slices of the shared weights."""
        for p, part in enumerate(block.parts):
            x = self._layer(p, part, x) if isinstance(part, MnasLayerSpec) else self._head(part, x)
        return x

    def _layer(self, p: int, spec: MnasLayerSpec, x: torch.Tensor) -> torch.Tensor:
        w, bn, act = self.layers[_slot_key(p, spec.t)], self.norms[_norm_key(p, spec)], self._acts[spec.act]
        pad, mid = spec.k // 2, spec.mid
        if spec.t == 0:
            h = act(_batch_norm(bn["conv"], F.conv2d(x, _window(w.conv.weight, spec.cout, spec.cin, spec.k),
                                                     stride=spec.s, padding=pad)))
            h = self._excite(w, spec, h, spec.cout) if spec.se else h
            return h + x if spec.res else h
        h = act(_batch_norm(bn["expand"], F.conv2d(x, w.expand.weight[:mid, :spec.cin]))) if spec.t == 2 else x
        h = act(_batch_norm(bn["dw"], F.conv2d(h, _window(w.dw.weight, mid, 1, spec.k), stride=spec.s,
                                               padding=pad, groups=mid)))
        if spec.se:
            h = self._excite(w, spec, h, mid)
        h = _batch_norm(bn["project"], F.conv2d(h, w.project.weight[:spec.cout, :mid]))
        h = act(h) if spec.t == 1 else h
        return h + x if spec.res else h

    @staticmethod
    def _excite(w: nn.Module, spec: MnasLayerSpec, h: torch.Tensor, gated: int) -> torch.Tensor:
        """Squeeze-and-excite on the first ``gated`` channels with ``spec.se_channels`` reduced ones."""
        r = spec.se_channels
        s = F.relu(F.conv2d(h.mean((2, 3), keepdim=True), w.se_reduce.weight[:r, :gated], w.se_reduce.bias[:r]))
        return h * F.hardsigmoid(F.conv2d(s, w.se_expand.weight[:gated, :r], w.se_expand.bias[:gated]))

    def _head(self, spec: OpSpec, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise HwnasError(f"elastic block: no head conv for {spec.key()}")
        conv = F.conv2d(x, _window(self.head.conv.weight, spec.cout, spec.cin, spec.k), stride=spec.s)
        return self._acts[spec.act](_batch_norm(self.head.bn, conv))  # type: ignore[attr-defined]

    # -- copying a choice's slices into the standalone network's modules ---------------------------------
    def export(self, block: BlockSpec, module: nn.Sequential) -> None:
        """Copy ``block``'s slices into ``module`` (``build_op(block)``: MnasLayer modules, then the head)."""
        with torch.no_grad():
            for p, (part, target) in enumerate(zip(block.parts, module)):
                if isinstance(part, MnasLayerSpec):
                    self._export_layer(p, part, target.body)
                else:
                    conv, bn = self.head.conv, self.head.bn  # type: ignore[union-attr]
                    target[0].weight.copy_(_window(conv.weight, part.cout, part.cin, part.k))
                    _copy_bn(target[1], bn)

    def _export_layer(self, p: int, spec: MnasLayerSpec, body: nn.Sequential) -> None:
        w, norms = self.layers[_slot_key(p, spec.t)], self.norms[_norm_key(p, spec)]
        convs = [m for m in body if not hasattr(m, "reduce")]  # the ConvBNAct layers, in order
        names = _NORMS[spec.t]
        mid = spec.mid
        sources = {"conv": _window(w.conv.weight, spec.cout, spec.cin, spec.k) if spec.t == 0 else None,
                   "expand": w.expand.weight[:mid, :spec.cin] if spec.t == 2 else None,
                   "dw": _window(w.dw.weight, mid, 1, spec.k) if spec.t else None,
                   "project": w.project.weight[:spec.cout, :mid] if spec.t else None}
        for name, target in zip(names, convs):
            target[0].weight.copy_(sources[name])
            _copy_bn(target[1], norms[name])
        for se in (m for m in body if hasattr(m, "reduce")):
            gated, r = (spec.cout if spec.t == 0 else mid), spec.se_channels
            se.reduce.weight.copy_(w.se_reduce.weight[:r, :gated])
            se.reduce.bias.copy_(w.se_reduce.bias[:r])
            se.expand.weight.copy_(w.se_expand.weight[:gated, :r])
            se.expand.bias.copy_(w.se_expand.bias[:gated])


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d) -> None:
    c = target.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).copy_(getattr(source, name)[:c])
    target.num_batches_tracked.copy_(source.num_batches_tracked)  # type: ignore[union-attr]


def _slot_key(p: int, t: int) -> str:
    return f"p{p}_{MNAS_OPS[t]}"


def _norm_key(p: int, spec: MnasLayerSpec) -> str:
    return f"{_slot_key(p, spec.t)}_e{spec.e}"


def _head(heads: Sequence[OpSpec]) -> nn.Module | None:
    """The head conv at its widest input (every block choice ends with the same conv, its input the choice's width)."""
    if not heads:
        return None
    shapes = {(h.kind, h.cout, getattr(h, "k", 0), getattr(h, "s", 0), getattr(h, "g", 1)) for h in heads}
    if len(shapes) != 1 or not isinstance(heads[0], ConvSpec) or heads[0].g != 1:
        raise HwnasError(f"elastic block: the layers after a block's mnas layers must be one plain conv, got {shapes}")
    head = heads[0]
    module = nn.Module()
    module.conv = nn.Conv2d(max(h.cin for h in heads), head.cout, head.k, bias=False)
    module.bn = nn.BatchNorm2d(head.cout)
    return module


class ElasticCandidate(nn.Module):
    """One block choice: no parameters of its own, it runs the shared :class:`ElasticBlock` (held by the mixed op,
    not registered here, so ``state_dict`` does not repeat it per choice). ``specs``: the choice's exact spec per
    input channel count (one per width of the previous block)."""

    def __init__(self, name: str, specs: dict[int, BlockSpec], block: ElasticBlock) -> None:
        super().__init__()
        self.name = name
        self.specs = dict(specs)
        object.__setattr__(self, "_block", block)

    def spec_for(self, cin: int) -> BlockSpec:
        """The exact spec after an input of ``cin`` channels."""
        if cin not in self.specs:
            raise HwnasError(f"elastic choice {self.name}: input of {cin} channels, expected one of "
                             f"{sorted(self.specs)}")
        return self.specs[cin]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._block.run(self.spec_for(x.shape[1]), x)

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        """The shared block's buffers (BatchNorm statistics): what running this choice can change, so
        ``frozen_buffers(candidate)`` restores them. (The parent's ``buffers()`` and ``state_dict`` do not call this:
        they walk registered modules, where the block appears once.)"""
        return self._block.buffers(recurse)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The shared block's parameters: what running this choice trains (a slice of them)."""
        return self._block.parameters(recurse)

    def export_into(self, module: nn.Sequential, cin: int) -> None:
        """Copy this choice's weight slices after a ``cin``-channel input into ``build_op(spec_for(cin))``."""
        self._block.export(self.spec_for(cin), module)


def build_elastic_candidates(variants: Sequence[Candidates]) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``(candidates, [the shared block])`` of one layer from its candidate sets in every context
    (``space.layer_variants``: the same names, each set after one width of the previous block)."""
    names = [name for name, _ in variants[0]]
    specs: dict[str, dict[int, BlockSpec]] = {name: {} for name in names}
    for variant in variants:
        if [name for name, _ in variant] != names:
            raise HwnasError("elastic block: every context must offer the same choices in the same order")
        for name, spec in variant:
            specs[name][spec.cin] = spec  # type: ignore[assignment]  # is_elastic_layer: BlockSpecs
    block = ElasticBlock([s for by_cin in specs.values() for s in by_cin.values()])
    return nn.ModuleList(ElasticCandidate(name, specs[name], block) for name in names), nn.ModuleList([block])


def export_arch(supernet: SuperNet, arch: Architecture) -> ArchNet:
    """The standalone network of ``arch`` with the supernet's weights: the fixed ops' as they are, each block choice's
    slices (:meth:`ElasticCandidate.export_into`); a plain candidate module's own weights."""
    space = supernet.space
    net = space.build(arch)
    fixed = len(space.prefix)
    with torch.no_grad():
        for i, module in enumerate(supernet.prefix):
            net.ops[i].load_state_dict(module.state_dict())
        for i, (mixed, choice, spec) in enumerate(zip(supernet.mixed_ops, arch.choices, space.layer_specs(arch))):
            candidate = mixed.ops[mixed.names.index(choice)]
            if isinstance(candidate, ElasticCandidate):
                candidate.export_into(net.ops[fixed + i], spec.cin)
            else:
                net.ops[fixed + i].load_state_dict(candidate.state_dict())
        for i, module in enumerate(supernet.suffix):
            net.ops[fixed + len(space.layers) + i].load_state_dict(module.state_dict())
    return net
