"""Nested weight sharing for the supernet's MBConv candidates (Single-Path NAS, Stamoulis et al., 2019;
Once-for-All, Cai et al., ICLR 2020).

The candidates of one searchable layer that differ only in kernel size ``k`` and expansion ``e`` (same input and
output channels, stride, activation, ``pw``; no groups, no squeeze-excite) share one set of convolution weights,
those of the largest candidate:

* expansion 1x1 ``[mid_max, cin]``: a candidate with ``mid = cin * e`` uses the first ``mid`` filters;
* depthwise ``[mid_max, 1, k_max, k_max]``: the first ``mid`` channels and the centred ``k x k`` window;
* projection 1x1 ``[cout, mid_max]``: the first ``mid`` input channels.

Each candidate keeps its own BatchNorm layers (private statistics and affine parameters, as switchable BN in
slimmable networks), since the statistics of a 3x3 and a 7x7 slice differ.

Why: with one module per candidate, a weight step trains one candidate of ``n`` per layer, so each candidate sees
``1/n`` of the steps. On small budgets (the default run: about 200 weight steps, 7 candidates) the supernet then
never leaves chance level, and the architecture gradient ``<dL/dout, o_j(x)>`` compares untrained candidates.
With nested sharing every step trains the shared weights, the supernet learns about as fast as one network, and
memory per step is unchanged (one path's activations). Candidates that do not fit (grouped convolutions,
squeeze-excite, skip, zero) remain separate modules.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.ops import MBConvSpec, OpSpec, build_op
from hwnas.ops.modules import activation


def _group_key(spec: OpSpec) -> tuple | None:
    """Candidates with the same key share weights; None: this candidate stays a separate module."""
    if not isinstance(spec, MBConvSpec) or spec.g != 1 or spec.se:
        return None
    return (spec.cin, spec.cout, spec.size, spec.s, spec.act, spec.pw)


class SharedMBConvWeights(nn.Module):
    """The largest candidate's convolution weights of one group of nested MBConv candidates."""

    def __init__(self, cin: int, cout: int, mid: int, k: int, pw: int) -> None:
        super().__init__()
        self.expand = nn.Parameter(torch.empty(mid, cin, 1, 1)) if pw else None
        self.depthwise = nn.Parameter(torch.empty(mid, 1, k, k))
        self.project = nn.Parameter(torch.empty(cout, mid, 1, 1))
        self.k = k
        for weight in (self.expand, self.depthwise, self.project):
            if weight is not None:  # nn.Conv2d's default initialisation
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


class NestedMBConv(nn.Module):
    """One MBConv candidate (``spec``) computed from slices of ``shared``, with its own BatchNorm layers."""

    def __init__(self, spec: MBConvSpec, shared: SharedMBConvWeights) -> None:
        super().__init__()
        self.spec = spec
        object.__setattr__(self, "_shared", shared)  # owned (and registered) by the mixed op, not by each candidate
        self.bn_expand = nn.BatchNorm2d(spec.mid) if spec.pw else None
        self.bn_depthwise = nn.BatchNorm2d(spec.mid)
        self.bn_project = nn.BatchNorm2d(spec.cout)
        self.act = activation(spec.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec, shared = self.spec, self._shared
        mid, k = spec.mid, spec.k
        h = x
        if shared.expand is not None:
            h = self.act(self.bn_expand(F.conv2d(h, shared.expand[:mid])))
        start = (shared.k - k) // 2
        kernel = shared.depthwise[:mid, :, start:start + k, start:start + k]
        h = self.act(self.bn_depthwise(F.conv2d(h, kernel, stride=spec.s, padding=k // 2, groups=mid)))
        h = self.bn_project(F.conv2d(h, shared.project[:, :mid]))
        return h + x if spec.residual else h


def build_candidates(specs: Sequence[OpSpec], share: bool) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``(candidate modules, shared weight holders)`` for one searchable layer. With ``share``, the MBConv
    candidates of each group (:func:`_group_key`) of two or more share one :class:`SharedMBConvWeights`."""
    groups: dict[tuple, list[int]] = {}
    if share:
        for i, spec in enumerate(specs):
            key = _group_key(spec)
            if key is not None:
                groups.setdefault(key, []).append(i)
    modules: list[nn.Module | None] = [None] * len(specs)
    holders = nn.ModuleList()
    for members in groups.values():
        if len(members) < 2:
            continue
        nested: list[MBConvSpec] = [specs[i] for i in members]  # type: ignore[misc]  # _group_key: MBConv only
        holder = SharedMBConvWeights(nested[0].cin, nested[0].cout, max(s.mid for s in nested),
                                     max(s.k for s in nested), nested[0].pw)
        holders.append(holder)
        for i, spec in zip(members, nested):
            modules[i] = NestedMBConv(spec, holder)
    return nn.ModuleList(m if m is not None else build_op(s) for m, s in zip(modules, specs)), holders
