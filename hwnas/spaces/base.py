"""Search spaces, architectures and the networks built from them.

A search space is a fixed prefix of ops (stem, fixed blocks), a list of searchable layers (each an ordered
set of named candidate ops with known shapes), and a fixed suffix (head conv, pool, classifier). An
:class:`Architecture` is plain JSON — the space, the resolution, one choice per searchable layer — that
round-trips to an ``nn.Module`` (:class:`ArchNet`) and to a one-line-per-stage human form.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from hwnas.checks import check_fields, check_required, field_error
from hwnas.errors import HwnasError
from hwnas.io import read_json_file, write_json_atomic
from hwnas.ops import ConvSpec, LinearSpec, OpSpec, PoolSpec, build_op, flat_specs

CandidateFactory = Callable[[int, int, int, int, int], list[tuple[str, OpSpec]]]
"""(position in stage, cin, cout, input size, stride) -> ordered (choice name, spec) candidates."""


@dataclass(frozen=True)
class SearchableLayer:
    """One searchable layer: its position, shapes and ordered candidates."""

    index: int
    stage: int
    candidates: tuple[tuple[str, OpSpec], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.candidates)

    def spec(self, choice: str) -> OpSpec:
        for name, spec in self.candidates:
            if name == choice:
                return spec
        raise HwnasError(f"layer {self.index}: unknown choice {choice!r}, expected one of {' '.join(self.names)}")


@dataclass(frozen=True)
class Stage:
    """A group of consecutive searchable layers with one output width (for the human form and plots)."""

    index: int
    channels: int
    stride: int
    layers: tuple[int, ...]


@dataclass(frozen=True)
class Architecture:
    """A discrete architecture: plain JSON ``{"space", "resolution", "choices", "num_classes"}``."""

    space: str
    resolution: int
    choices: tuple[str, ...]
    num_classes: int | None = None  # None: the space's default

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"space": self.space, "resolution": self.resolution, "choices": list(self.choices)}
        if self.num_classes is not None:
            data["num_classes"] = self.num_classes
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "architecture") -> Architecture:
        """Parse and type-check (not yet against the space: see :meth:`SearchSpace.validate`)."""
        if not isinstance(data, dict):
            raise HwnasError(f"{source}: expected a JSON object with space, resolution, choices")
        check_fields(data, _ARCH_FIELDS, source)
        check_required(data, ("space", "resolution", "choices"), source)
        num_classes = data.get("num_classes")
        if num_classes is not None and num_classes < 1:
            raise field_error(source, "num_classes", "a positive int", num_classes)
        return cls(data["space"], data["resolution"], tuple(data["choices"]), num_classes)

    def save(self, path: str | Path) -> Path:
        """Write the architecture's JSON atomically (a reader never sees half a file)."""
        path = Path(path)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        """Read an architecture file, or the ``arch`` of a report or run file that embeds one."""
        data = read_json_file(path, "architecture file")
        if isinstance(data, dict) and "arch" in data and isinstance(data["arch"], dict):
            data = data["arch"]  # a report or run file that embeds the architecture
        return cls.from_dict(data, source=str(path))


_ARCH_FIELDS: dict[str, Any] = {"space": str, "resolution": int, "choices": list[str], "num_classes": int | None}


@dataclass
class SearchSpace:
    """A staged search space; concrete spaces are instances made by registered factories."""

    name: str
    resolution: int
    num_classes: int
    prefix: list[OpSpec]
    layers: list[SearchableLayer]
    suffix: list[OpSpec]
    stages: list[Stage] = field(default_factory=list)

    # -- architectures ----------------------------------------------------------------------------------
    def validate(self, arch: Architecture, source: str = "architecture") -> Architecture:
        """Check an architecture belongs to this space; returns it unchanged."""
        if arch.space != self.name:
            raise field_error(source, "space", repr(self.name), arch.space)
        if arch.resolution != self.resolution:
            raise field_error(source, "resolution", f"{self.resolution} (this space's)", arch.resolution)
        if len(arch.choices) != len(self.layers):
            raise field_error(source, "choices", f"one op for each of {self.name}'s {len(self.layers)} searchable "
                              "layers", len(arch.choices))
        for layer, choice in zip(self.layers, arch.choices):
            if choice not in layer.names:
                offered = " ".join(layer.names) if len(layer.names) <= 12 else (
                    f"one of its {len(layer.names)} choices, e.g. {' '.join(layer.names[:3])}; `hwnas spaces` "
                    f"describes {self.name}")
                raise HwnasError(f"{source}: field 'choices': layer {layer.index} has no op {choice!r} "
                                 f"(expected {offered})")
        if arch.num_classes not in (None, self.num_classes):
            raise field_error(source, "num_classes", f"{self.num_classes} (this space's) or none", arch.num_classes)
        return arch

    def arch(self, choices: Sequence[str]) -> Architecture:
        return self.validate(Architecture(self.name, self.resolution, tuple(choices), self.num_classes))

    def random_arch(self, rng: random.Random) -> Architecture:
        return self.arch([rng.choice(layer.names) for layer in self.layers])

    def uniform_archs(self) -> list[Architecture]:
        """Uniform MobileNetV2-like architectures (the baselines): the same op in every layer, at every uniform
        depth ``d``. Ops: every non-zero op shared by all layers. Depth ``d``: the first ``d`` layers of each stage
        keep the op; later layers that offer ``zero`` are skipped (Once-for-All's elastic depth). Deeper first."""
        shared = [n for n in self.layers[0].names if n != "zero" and all(n in layer.names for layer in self.layers)]
        depth = max((len(stage.layers) for stage in self.stages), default=len(self.layers))
        position = {i: p for stage in self.stages for p, i in enumerate(stage.layers)}
        return [self.arch([op if position.get(layer.index, 0) < d or "zero" not in layer.names else "zero"
                           for layer in self.layers]) for d in range(depth, 0, -1) for op in shared]

    @property
    def size(self) -> int:
        """How many distinct architectures the space has (the product of the layers' candidate counts)."""
        return math.prod(len(layer.names) for layer in self.layers)

    def sample_archs(self, n: int, rng: random.Random) -> list[Architecture]:
        """``n`` distinct architectures drawn uniformly (without replacement); every one of them when ``n`` is the
        space's :attr:`size`. A larger ``n`` is an error: there are not that many."""
        if n > self.size:
            raise HwnasError(f"space {self.name}@{self.resolution} has {self.size} distinct architectures, not {n}")
        if n == self.size:
            every = [self.arch(choices) for choices in itertools.product(*(layer.names for layer in self.layers))]
            rng.shuffle(every)
            return every
        seen: dict[tuple[str, ...], Architecture] = {}
        while len(seen) < n:
            arch = self.random_arch(rng)
            seen.setdefault(arch.choices, arch)
        return list(seen.values())

    # -- context: a layer whose ops depend on the previous layer's choice ------------------------------------
    @property
    def context_free(self) -> bool:
        """True when each layer's candidates are fixed (every built-in space but ``mnasnet``, whose blocks take the
        previous block's width): then ``layer.candidates`` are exact and latency is additive over layers."""
        return True

    def candidates_after(self, index: int, previous: str | None) -> tuple[tuple[str, OpSpec], ...]:
        """Layer ``index``'s candidates when the layer before it chose ``previous`` (None: the first layer)."""
        return self.layers[index].candidates

    def layer_variants(self, index: int) -> list[tuple[tuple[str, OpSpec], ...]]:
        """Every distinct candidate set layer ``index`` can have (one per context)."""
        return [self.layers[index].candidates]

    def layer_specs(self, arch: Architecture) -> list[OpSpec]:
        """The exact op of each searchable layer of ``arch`` (in the context of its previous choices)."""
        self.validate(arch)
        if self.context_free:
            return [layer.spec(choice) for layer, choice in zip(self.layers, arch.choices)]
        return [dict(self.candidates_after(i, arch.choices[i - 1] if i else None))[choice]
                for i, choice in enumerate(arch.choices)]

    def linearized_costs(self, spec_cost: Callable[[OpSpec], float], anchor: Architecture | None) -> list[list[float]]:
        """Per layer, per candidate: the cost of the architecture ``anchor`` with that one layer changed, less the
        anchor's other layers, for a cost that sums ``spec_cost`` over the exact ops. Exact for a context-free space;
        otherwise a first-order model exact at ``anchor`` and at every one-layer change of it (layer ``l``'s op in
        the anchor's context, plus what its choice changes in layer ``l + 1``). ``anchor`` None: the plain costs of
        ``layer.candidates``."""
        if self.context_free or anchor is None:
            return [[spec_cost(spec) for _, spec in layer.candidates] for layer in self.layers]
        choices, last = self.validate(anchor).choices, len(self.layers) - 1
        costs: list[list[float]] = []
        for i, layer in enumerate(self.layers):
            row = [spec_cost(spec) for _, spec in self.candidates_after(i, choices[i - 1] if i else None)]
            if i < last:
                following = choices[i + 1]
                base = spec_cost(dict(self.candidates_after(i + 1, choices[i]))[following])
                row = [c + spec_cost(dict(self.candidates_after(i + 1, name))[following]) - base
                       for c, name in zip(row, layer.names)]
            costs.append(row)
        return costs

    def arch_specs(self, arch: Architecture) -> list[OpSpec]:
        """Every op of the network in order: prefix, one chosen op per layer, suffix."""
        return [*self.prefix, *self.layer_specs(arch), *self.suffix]

    def all_specs(self) -> list[OpSpec]:
        """Every distinct op a network of this space can contain (what a latency table needs), in order; a block
        of several layers (:class:`~hwnas.ops.BlockSpec`) counts as its layers."""
        seen: dict[str, OpSpec] = {}
        variants = (s for i in range(len(self.layers)) for v in self.layer_variants(i) for _, s in v)
        for spec in [*self.prefix, *variants, *self.suffix]:
            for part in flat_specs(spec):
                seen.setdefault(part.key(), part)
        return list(seen.values())

    def build(self, arch: Architecture) -> ArchNet:
        return ArchNet(self, arch)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.prefix[0].cin if self.prefix else self.layers[0].candidates[0][1].cin,
                self.resolution, self.resolution)

    # -- human form -------------------------------------------------------------------------------------
    def human(self, arch: Architecture) -> str:
        """One line per stage, e.g. ``stage2 c24 s2: k3_e3 k5_e6 zero zero``; :meth:`from_human` inverts it."""
        self.validate(arch)
        lines = [f"{self.name}@{self.resolution}/{self.num_classes}"]
        for stage in self.stages:
            ops = " ".join(arch.choices[i] for i in stage.layers)
            lines.append(f"stage{stage.index} c{stage.channels} s{stage.stride}: {ops}")
        return "\n".join(lines)

    def from_human(self, text: str) -> Architecture:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        header = f"{self.name}@{self.resolution}/{self.num_classes}"
        if not lines or lines[0] != header:
            raise HwnasError(f"human architecture: first line must be {header!r}, got {lines[0] if lines else ''!r}")
        choices: list[str] = []
        for line in lines[1:]:
            if ":" not in line:
                raise HwnasError(f"human architecture: line {line!r} has no ':' before the ops")
            choices += line.split(":", 1)[1].split()
        return self.arch(choices)


class ArchNet(nn.Module):
    """The network of one architecture: the chosen ops in sequence. ``config`` rebuilds it (Once-for-All style)."""

    def __init__(self, space: SearchSpace, arch: Architecture) -> None:
        super().__init__()
        self.arch = space.validate(arch)
        self.specs = space.arch_specs(arch)
        self.ops = nn.Sequential(*(build_op(spec) for spec in self.specs))

    @property
    def config(self) -> dict[str, Any]:
        return self.arch.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ArchNet:
        from hwnas.spaces import get_space

        arch = Architecture.from_dict(config)
        return cls(get_space(arch.space, arch.resolution, arch.num_classes), arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)


def staged_space(
    name: str,
    resolution: int,
    num_classes: int,
    *,
    stem: tuple[int, int, int, str],
    fixed: Sequence[Callable[[int, int], OpSpec]],
    stages: Sequence[tuple[int, int, int]],
    candidates: CandidateFactory,
    head: tuple[int, str],
    in_channels: int = 3,
) -> SearchSpace:
    """Build a space from a stem (channels, kernel, stride, act), fixed blocks ((cin, size) -> spec),
    stages (channels, layers, stride), a candidate factory and a head (channels, act)."""
    stem_ch, stem_k, stem_s, stem_act = stem
    prefix: list[OpSpec] = [ConvSpec(in_channels, stem_ch, resolution, k=stem_k, s=stem_s, act=stem_act)]
    for make in fixed:
        prefix.append(make(prefix[-1].cout, prefix[-1].out_size))
    cin, size = prefix[-1].cout, prefix[-1].out_size
    layers: list[SearchableLayer] = []
    stage_list: list[Stage] = []
    for stage_index, (channels, count, stride) in enumerate(stages, start=1):
        members = []
        for position in range(count):
            s = stride if position == 0 else 1
            layer = SearchableLayer(len(layers), stage_index, tuple(candidates(position, cin, channels, size, s)))
            members.append(layer.index)
            layers.append(layer)
            cin, size = channels, layer.candidates[0][1].out_size
        stage_list.append(Stage(stage_index, channels, stride, tuple(members)))
    head_ch, head_act = head
    head_conv = ConvSpec(cin, head_ch, size, k=1, s=1, act=head_act)
    suffix: list[OpSpec] = [head_conv, PoolSpec(head_ch, head_ch, size), LinearSpec(head_ch, num_classes, 1)]
    return SearchSpace(name, resolution, num_classes, prefix, layers, suffix, stage_list)
