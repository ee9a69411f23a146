"""MnasNet's factorized hierarchical space (Tan et al., CVPR 2019): 7 blocks, each choosing its own op.

After a fixed 3x3 stem (32 channels, stride 2), each of 7 blocks chooses, for all of its layers at once:

* the conv op: regular conv (``conv``), depthwise-separable (``dwsep``), MBConv with expansion 3 or 6 (``mb3``,
  ``mb6``);
* kernel 3 or 5; squeeze-and-excite (ratio 0.25) or not (``_se``); an identity skip where a layer keeps its shape
  (``_skip``) or none;
* the number of layers: base - 1, base or base + 1 (at least 1): the layers beyond it are absent;
* a width multiplier 0.75, 1.0 or 1.25 of the block's base output channels (rounded to a multiple of 4).

Bases (MnasNet-A1's): output channels 16, 24, 40, 80, 112, 160, 320; layers 1, 2, 3, 4, 2, 3, 1; strides 1, 2, 2, 2,
1, 2, 1. Then a 1x1 conv to 1280, pooling and the classifier. A choice is named e.g. ``mb6_k5_se_skip_d3_w125``.

A block's first layer takes the previous block's width, so its op depends on the previous block's choice: the space
is not ``context_free``. ``layer.candidates`` are each block's ops after a previous block of width multiplier 1.0;
:meth:`SearchSpace.layer_specs` gives the exact ops of an architecture, and
:meth:`SearchSpace.linearized_costs` the per-block costs the decoders and the losses use.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field
from typing import Callable

from hwnas.errors import HwnasError
from hwnas.ops import BlockSpec, ConvSpec, LinearSpec, MnasLayerSpec, OpSpec, PoolSpec
from hwnas.ops.spec_base import make_divisible
from hwnas.spaces.base import Architecture, SearchableLayer, SearchSpace, Stage
from hwnas.spaces.registry import register_space

BLOCKS = ((16, 1, 1), (24, 2, 2), (40, 3, 2), (80, 4, 2), (112, 2, 1), (160, 3, 2), (320, 1, 1))
"""(output channels, layers, stride) of each block at width 1.0 and base depth."""
OPS = {"conv": (0, 1), "dwsep": (1, 1), "mb3": (2, 3), "mb6": (2, 6)}  # name -> (MnasLayerSpec t, e)
KERNELS = (3, 5)
WIDTHS = {"w075": 0.75, "w100": 1.0, "w125": 1.25}
STEM, HEAD, ACT = 32, 1280, "relu"
_NAME = re.compile(r"(conv|dwsep|mb3|mb6)_k(\d)(_se)?(_skip)?_d(\d)_(w\d{3})")


@dataclass(frozen=True)
class BlockChoice:
    """One block's choice: op, kernel, SE, skip, depth, width."""

    op: str
    k: int
    se: bool
    skip: bool
    depth: int
    width: str

    @property
    def name(self) -> str:
        return (f"{self.op}_k{self.k}" + ("_se" if self.se else "") + ("_skip" if self.skip else "")
                + f"_d{self.depth}_{self.width}")

    @classmethod
    def parse(cls, name: str) -> BlockChoice:
        match = _NAME.fullmatch(name)
        if match is None:
            raise HwnasError(f"mnasnet choice {name!r}: expected e.g. 'mb6_k5_se_skip_d3_w125'")
        op, k, se, skip, depth, width = match.groups()
        if width not in WIDTHS:
            raise HwnasError(f"mnasnet choice {name!r}: width must be one of {' '.join(WIDTHS)}")
        return cls(op, int(k), bool(se), bool(skip), int(depth), width)

    def layers(self, cin: int, cout: int, size: int, stride: int) -> BlockSpec:
        t, e = OPS[self.op]
        specs: list[OpSpec] = []
        for position in range(self.depth):
            c, s = (cin, stride) if position == 0 else (cout, 1)
            res = int(self.skip and s == 1 and c == cout)
            specs.append(MnasLayerSpec(c, cout, size, t=t, e=e, k=self.k, s=s, se=int(self.se), res=res, act=ACT))
            size = specs[-1].out_size
        return BlockSpec(tuple(specs))


def block_width(block: int, width: str) -> int:
    """Output channels of ``block`` at a width multiplier name."""
    return make_divisible(BLOCKS[block][0] * WIDTHS[width], 4)


def block_choices(block: int) -> list[BlockChoice]:
    """Every choice of ``block``, in a fixed order (op, kernel, SE, skip, depth, width)."""
    base = BLOCKS[block][1]
    depths = sorted({max(1, base - 1), base, base + 1})
    return [BlockChoice(op, k, se, skip, d, w) for op, k, se, skip, d, w in
            itertools.product(OPS, KERNELS, (False, True), (False, True), depths, WIDTHS)]


@dataclass
class MnasSpace(SearchSpace):
    """The MnasNet space (module docstring): block ``b``'s candidates depend on block ``b - 1``'s width."""

    variants: list[dict[int, tuple[tuple[str, OpSpec], ...]]] = field(default_factory=list)
    widths: list[dict[str, int]] = field(default_factory=list)  # per block: choice name -> output channels

    @property
    def context_free(self) -> bool:
        return False

    def candidates_after(self, index: int, previous: str | None) -> tuple[tuple[str, OpSpec], ...]:
        cin = self.prefix[-1].cout if index == 0 or previous is None else self.widths[index - 1][previous]
        return self.variants[index][cin]

    def layer_variants(self, index: int) -> list[tuple[tuple[str, OpSpec], ...]]:
        return list(self.variants[index].values())

    def all_specs(self) -> list[OpSpec]:
        """As :meth:`SearchSpace.all_specs`, computed once per resolution (1590 entries from 18,000 block layers)."""
        return list(_all_specs(self.resolution, self.num_classes, lambda: super(MnasSpace, self).all_specs()))

    def uniform_archs(self) -> list[Architecture]:
        """MnasNet's uniform baselines: the same op, kernel, SE, skip and width in every block, at depth base + 1,
        base and base - 1 (deeper first; a block whose base is 1 keeps 1 layer at base - 1)."""
        archs = []
        for offset in (1, 0, -1):
            for choice in block_choices(0):
                if choice.depth != 1:
                    continue
                archs.append(self.arch([BlockChoice(choice.op, choice.k, choice.se, choice.skip,
                                                    max(1, base + offset), choice.width).name
                                        for _, base, _ in BLOCKS]))
        return archs


_ALL_SPECS: dict[tuple[int, int], tuple[OpSpec, ...]] = {}


def _all_specs(resolution: int, num_classes: int, compute: Callable[[], list[OpSpec]]) -> tuple[OpSpec, ...]:
    if (resolution, num_classes) not in _ALL_SPECS:
        _ALL_SPECS[resolution, num_classes] = tuple(compute())
    return _ALL_SPECS[resolution, num_classes]


@functools.lru_cache(maxsize=64)
def _block_candidates(b: int, cin: int, size: int) -> tuple[tuple[str, OpSpec], ...]:
    """Block ``b``'s candidates after an input of ``cin`` channels; the last block carries the head conv (1x1 to
    1280), whose input is that block's width, so prefix and suffix stay fixed."""
    out = []
    for choice in block_choices(b):
        block = choice.layers(cin, block_width(b, choice.width), size, BLOCKS[b][2])
        if b == len(BLOCKS) - 1:
            head = ConvSpec(block.cout, HEAD, block.out_size, k=1, s=1, act=ACT)
            block = BlockSpec((*block.parts, head))
        out.append((choice.name, block))
    return tuple(out)


@register_space("mnasnet", default_resolution=224, default_num_classes=1000, total_stride=32,
                description="MnasNet factorized: 7 blocks x (op, kernel, SE, skip, depth, width), 192-288 "
                            "choices each")
def _mnasnet(resolution: int, num_classes: int) -> MnasSpace:
    stem = ConvSpec(3, STEM, resolution, k=3, s=2, act=ACT)
    size, inputs = stem.out_size, [STEM]
    layers, stages, variants, widths = [], [], [], []
    for b, (channels, _, stride) in enumerate(BLOCKS):
        by_input = {cin: _block_candidates(b, cin, size) for cin in inputs}
        default_cin = inputs[0] if b == 0 else block_width(b - 1, "w100")
        layers.append(SearchableLayer(b, b + 1, by_input[default_cin]))
        stages.append(Stage(b + 1, channels, stride, (b,)))
        variants.append(by_input)
        widths.append({c.name: block_width(b, c.width) for c in block_choices(b)})
        inputs = sorted({block_width(b, w) for w in WIDTHS})
        size = by_input[default_cin][0][1].out_size
    suffix: list[OpSpec] = [PoolSpec(HEAD, HEAD, size), LinearSpec(HEAD, num_classes, 1)]
    return MnasSpace("mnasnet", resolution, num_classes, [stem], layers, suffix, stages, variants, widths)
