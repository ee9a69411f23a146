"""``clutter``: an embedded, procedural image classification task on which architectures differ.

On the embedded digits every network of a space scores 0.97-0.99, so a search cannot be told from a random pick.
Here each image holds one letter-like glyph (10 classes: stroke drawings with jittered control points and stroke
width) at a random scale, rotation, shear and position, over textured colour clutter: oriented colour gratings,
smooth colour blobs, at most one smaller, fainter fragment of another glyph (a half-plane cut of it, so a fragment
of an ``E`` can look like an ``F``) and pixel noise. The glyph is light on dark or dark on light, so no pixel
template finds it (a linear model on pixels stays far below a small CNN), while near classes (E/F, C/O, P/F, H/N)
must be told apart. The difficulty is sized for a search's budget: a random proxyless network at 32x32, trained as
``hwnas search`` trains its derived network (SGD, lr 0.05, batch 64), is well above chance after ~200 steps but far
from the ceiling, so architectures differ (benchmarks/clutter_spread.py; figures in docs/).

The set is fixed: every random draw comes from :data:`CLUTTER_SEED`, never from the run seed, and the draws do
not depend on the resolution (only the rendering does). Rendering is batched ``grid_sample`` of pre-drawn glyph
templates, numpy/torch only: the whole set renders in a few seconds on one core. Images are rendered natively up to
:data:`MAX_NATIVE` pixels; larger resolutions are rendered at :data:`MAX_NATIVE` and resized by the loader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.data.readers import RawData, RawPool

CLUTTER_SEED = 20240519
"""Seeds every draw of the set: the data set is fixed, whatever the run's seed."""
MAX_NATIVE = 64
_TEMPLATE = 64  # side of the rendered glyph templates
_Stroke = list[tuple[float, float]]
CLASSES = ("A", "C", "E", "F", "H", "L", "N", "O", "P", "T")
"""The default set's classes (of :data:`GLYPHS`): 10 keep it learnable in a search's budget, with near pairs."""


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, n: int = 10) -> _Stroke:
    """Points of an elliptic arc, angles in degrees (0 right, 90 down: image coordinates)."""
    return [(cx + rx * math.cos(math.radians(t)), cy + ry * math.sin(math.radians(t)))
            for t in np.linspace(start, stop, n)]


# Glyphs as strokes (polylines) in the unit box, x right and y down.
GLYPHS: dict[str, list[_Stroke]] = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.25, 0.55), (0.75, 0.55)]],
    "C": [_arc(0.5, 0.5, 0.5, 0.5, -45, -315, 14)],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.7, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.7, 0.5)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.6)], [(0.3, 0.4), (1, 1)]],
    "L": [[(0, 0), (0, 1), (1, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "O": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 16)],
    "P": [[(0, 1), (0, 0), (0.5, 0), *_arc(0.5, 0.27, 0.45, 0.27, -90, 90, 8), (0, 0.54)]],
    "S": [_arc(0.5, 0.25, 0.5, 0.25, -20, -270, 9) + _arc(0.5, 0.75, 0.5, 0.25, -90, 160, 9)[1:]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "U": [[(0, 0), *_arc(0.5, 0.5, 0.5, 0.5, 180, 0, 12), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Z": [[(0, 0), (1, 0), (0, 1), (1, 1)]],
}


@dataclass(frozen=True)
class ClutterConfig:
    """What the set holds and how hard it is; the defaults make the ``clutter`` data set.

    Attributes:
        classes: the glyphs (keys of :data:`GLYPHS`) that are the classes, in label order.
        per_class: images per class in all (``test_share`` of them form the fixed test pool).
        variants: jittered drawings (templates) per class; each image warps one of them.
        jitter: std of the control points' jitter, in glyph boxes.
        stroke: range of stroke widths, in glyph boxes.
        scale: range of the glyph's height as a share of the image side.
        rotation: largest rotation, degrees (kept under 30 so that M/W, N/Z and the like stay apart).
        shear: largest shear.
        distractors: most distractor fragments per image (each image draws 0 to this many).
        distractor_scale: range of a fragment's height as a share of the image side.
        contrast: range of the glyph's luminance difference from the background's mean.
        distractor_contrast: the same for the fragments (lower: the glyph stays the most salient shape).
        noise: std of the additive pixel noise.
    """

    classes: tuple[str, ...] = CLASSES
    per_class: int = 500
    test_share: float = 0.2
    variants: int = 24
    jitter: float = 0.05
    stroke: tuple[float, float] = (0.12, 0.2)
    scale: tuple[float, float] = (0.6, 0.9)
    rotation: float = 10.0
    shear: float = 0.1
    distractors: int = 1
    distractor_scale: tuple[float, float] = (0.25, 0.45)
    contrast: tuple[float, float] = (0.3, 0.55)
    distractor_contrast: tuple[float, float] = (0.1, 0.25)
    noise: float = 0.03


def _segments(strokes: list[_Stroke], rng: np.random.Generator, jitter: float) -> np.ndarray:
    """(S, 4) segments (x0, y0, x1, y1) of the strokes, each control point jittered (shared where strokes meet)."""
    points = {p: p for stroke in strokes for p in stroke}
    moved = {p: (p[0] + rng.normal(0, jitter), p[1] + rng.normal(0, jitter)) for p in points}
    return np.array([(*moved[a], *moved[b]) for stroke in strokes for a, b in zip(stroke, stroke[1:])],
                    dtype=np.float32)


def _draw(segments: torch.Tensor, width: torch.Tensor, side: int) -> torch.Tensor:
    """Antialiased coverage (T, side, side) of T drawings: ``segments`` (T, S, 4) in the unit box (rows padded with
    zero-length copies), ``width`` (T,) in glyph boxes. The box fills the middle 70% of the template."""
    coords = ((torch.arange(side, dtype=torch.float32) + 0.5) / side - 0.15) / 0.7  # template pixel -> glyph box
    py, px = (c.reshape(1, 1, -1) for c in torch.meshgrid(coords, coords, indexing="ij"))  # (1, 1, P)
    ax, ay, bx, by = (segments[..., i, None] for i in range(4))  # (T, S, 1)
    dx, dy = bx - ax, by - ay
    t = (((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy).clamp_min(1e-8)).clamp(0, 1)  # (T, S, P)
    ex, ey = px - ax - t * dx, py - ay - t * dy
    dist = (ex * ex + ey * ey).amin(dim=1).sqrt()  # (T, P)
    pixel = 1.0 / (0.7 * side)
    alpha = ((width[:, None] / 2 - dist) / pixel + 0.5).clamp(0, 1)
    return alpha.reshape(-1, side, side)


def _templates(config: ClutterConfig, rng: np.random.Generator) -> torch.Tensor:
    """(classes, variants, T, T) glyph coverage templates."""
    drawings = [_segments(GLYPHS[name], rng, config.jitter) for name in config.classes for _ in range(config.variants)]
    longest = max(len(d) for d in drawings)
    padded = np.stack([np.concatenate([d, np.repeat(d[-1:], longest - len(d), axis=0)]) for d in drawings])
    width = rng.uniform(*config.stroke, size=len(drawings)).astype(np.float32)
    alpha = _draw(torch.from_numpy(padded), torch.from_numpy(width), _TEMPLATE)
    return alpha.reshape(len(config.classes), config.variants, _TEMPLATE, _TEMPLATE)


def _poses(rng: np.random.Generator, n: int, scale: tuple[float, float], rotation: float, shear: float,
           spread: float) -> np.ndarray:
    """(n, 2, 3) affine maps from output to template coordinates (both in grid_sample's [-1, 1]); ``spread``: how
    far the centre may move, as a share of the room the glyph leaves."""
    height = rng.uniform(*scale, size=n)
    zoom = height / 0.7  # the glyph box is 0.7 of the template
    angle = np.radians(rng.uniform(-rotation, rotation, size=n))
    sh = rng.uniform(-shear, shear, size=n)
    centre = rng.uniform(-1, 1, size=(n, 2)) * ((1 - height) * spread)[:, None]
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    shears = np.stack([np.stack([np.ones(n), sh], -1), np.stack([np.zeros(n), np.ones(n)], -1)], -2)
    linear = (rot @ shears) / zoom[:, None, None]
    offset = -(linear @ centre[..., None])[..., 0]
    return np.concatenate([linear, offset[..., None]], axis=-1).astype(np.float32)


@dataclass
class _Draws:
    """Every random choice of the set, drawn once (independent of the resolution)."""

    labels: np.ndarray  # (N,)
    variants: np.ndarray  # (N,)
    poses: np.ndarray  # (N, 2, 3)
    colours: np.ndarray  # (N, 3)
    base: np.ndarray  # (N, 3) background colour
    gratings: np.ndarray  # (N, G, 3): angle, cycles per image, phase
    grating_colours: np.ndarray  # (N, G, 3) amplitude per channel
    blobs: np.ndarray  # (N, 3, 4, 4) smooth colour noise, upsampled
    fragment_classes: np.ndarray  # (N, D)
    fragment_variants: np.ndarray  # (N, D)
    fragment_poses: np.ndarray  # (N, D, 2, 3)
    fragment_colours: np.ndarray  # (N, D, 3)
    fragment_cuts: np.ndarray  # (N, D, 3): cut normal (x, y) and offset; D-slots past the image's count are off
    fragment_on: np.ndarray  # (N, D) bool


def _contrasting(rng: np.random.Generator, background: np.ndarray, contrast: tuple[float, float]) -> np.ndarray:
    """Colours whose luminance differs from ``background``'s (N, 3) by a draw from ``contrast``."""
    weights = np.array([0.299, 0.587, 0.114])
    luma = background.clip(0, 1) @ weights
    sign = np.where(luma < 0.5, 1.0, -1.0)
    sign = np.where(rng.random(len(luma)) < 0.25, -sign, sign)  # sometimes the side with less room
    target = (luma + sign * rng.uniform(*contrast, size=len(luma))).clip(0.05, 0.95)
    tint = rng.uniform(-0.25, 0.25, size=(len(luma), 3))
    tint -= (tint @ weights)[:, None]
    return (target[:, None] + tint).clip(0, 1)


def _draw_all(config: ClutterConfig, rng: np.random.Generator) -> _Draws:
    k, n, slots = len(config.classes), config.per_class * len(config.classes), config.distractors
    labels = rng.permutation(np.repeat(np.arange(k), config.per_class))
    base = rng.uniform(0.15, 0.85, size=(n, 3))
    blobs = rng.normal(0, 0.15, size=(n, 3, 4, 4))
    mean_background = base + blobs.mean(axis=(2, 3))
    gratings = np.stack([rng.uniform(0, np.pi, (n, 2)), rng.uniform(2, 7, (n, 2)),
                         rng.uniform(0, 2 * np.pi, (n, 2))], axis=-1)
    count = rng.integers(0, slots + 1, size=n)
    other = (labels[:, None] + rng.integers(1, k, size=(n, slots))) % k  # a fragment is never of the glyph's class
    normal = rng.uniform(0, 2 * np.pi, size=(n, slots))
    cuts = np.stack([np.cos(normal), np.sin(normal), rng.uniform(-0.3, 0.3, size=(n, slots))], axis=-1)
    fragment_poses = _poses(rng, n * slots, config.distractor_scale, 180.0, config.shear, 1.1)
    fragment_colours = _contrasting(rng, np.repeat(mean_background, slots, axis=0), config.distractor_contrast)
    return _Draws(
        labels=labels, variants=rng.integers(0, config.variants, size=n),
        poses=_poses(rng, n, config.scale, config.rotation, config.shear, 0.9),
        colours=_contrasting(rng, mean_background, config.contrast), base=base, gratings=gratings,
        grating_colours=rng.uniform(-0.15, 0.15, size=(n, 2, 3)), blobs=blobs, fragment_classes=other,
        fragment_variants=rng.integers(0, config.variants, size=(n, slots)),
        fragment_poses=fragment_poses.reshape(n, slots, 2, 3), fragment_colours=fragment_colours.reshape(n, slots, 3),
        fragment_cuts=cuts, fragment_on=np.arange(slots)[None, :] < count[:, None])


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _background(d: _Draws, rows: slice, side: int) -> torch.Tensor:
    """(B, 3, side, side): base colour + two oriented colour gratings + smooth colour blobs."""
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    g = _t(d.gratings[rows])  # (B, G, 3)
    angle, cycles, phase = (g[..., i, None, None] for i in range(3))
    waves = torch.sin(math.pi * cycles * (x * torch.cos(angle) + y * torch.sin(angle)) + phase)  # (B, G, H, W)
    amplitude = _t(d.grating_colours[rows])[..., None, None]  # (B, G, 3, 1, 1)
    image = F.interpolate(_t(d.blobs[rows]), size=(side, side), mode="bilinear", align_corners=False)
    image += _t(d.base[rows])[..., None, None]
    for wave in range(waves.shape[1]):
        image += amplitude[:, wave] * waves[:, wave, None]
    return image


def _paste(image: torch.Tensor, templates: torch.Tensor, poses: torch.Tensor, colours: torch.Tensor,
           cuts: torch.Tensor | None = None) -> torch.Tensor:
    """Composite warped ``templates`` (B, T, T) in ``colours`` (B, 3) over ``image``; ``cuts`` (B, 3) keeps the side
    of a line (normal, offset in template coordinates) of each, making it a fragment. ``image`` is changed in
    place. The grid is ``affine_grid``'s (align_corners=False), written out: it is cheaper than its batched matmul."""
    side = image.shape[-1]
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1
    a = poses[..., None, None]  # (B, 2, 3, 1, 1)
    grid = torch.stack([a[:, 0, 0] * coords[None, :] + a[:, 0, 1] * coords[:, None] + a[:, 0, 2],
                        a[:, 1, 0] * coords[None, :] + a[:, 1, 1] * coords[:, None] + a[:, 1, 2]], dim=-1)
    alpha = F.grid_sample(templates[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cuts is not None:
        kept = grid[..., 0] * cuts[:, 0, None, None] + grid[..., 1] * cuts[:, 1, None, None] - cuts[:, 2, None, None]
        alpha *= (kept[:, None] / 0.05 + 0.5).clamp(0, 1)
    image += alpha * (colours[..., None, None] - image)
    return image


def _render(d: _Draws, templates: torch.Tensor, rows: slice, side: int, noise: float,
            generator: torch.Generator) -> np.ndarray:
    """uint8 (B, 3, side, side) images of ``rows``."""
    image = _background(d, rows, side)
    for slot in range(d.fragment_on.shape[1]):
        on = torch.from_numpy(d.fragment_on[rows, slot]).float()[:, None, None]
        frags = templates[d.fragment_classes[rows, slot], d.fragment_variants[rows, slot]] * on
        image = _paste(image, frags, _t(d.fragment_poses[rows, slot]), _t(d.fragment_colours[rows, slot]),
                       _t(d.fragment_cuts[rows, slot]))
    glyphs = templates[d.labels[rows], d.variants[rows]]
    image = _paste(image, glyphs, _t(d.poses[rows]), _t(d.colours[rows]))
    image += noise * torch.randn(image.shape, generator=generator)
    return (image.clamp_(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def render_clutter(side: int, config: ClutterConfig = ClutterConfig(), chunk: int = 512) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """(uint8 images (N, 3, side, side), int64 labels (N,)) of the whole set, the same on every call."""
    rng = np.random.default_rng(CLUTTER_SEED)
    templates = _templates(config, rng)
    draws = _draw_all(config, rng)
    generator = torch.Generator().manual_seed(CLUTTER_SEED)
    n = len(draws.labels)
    images = np.concatenate([_render(draws, templates, slice(i, min(i + chunk, n)), side, config.noise, generator)
                             for i in range(0, n, chunk)])
    return images, draws.labels.astype(np.int64)


def read_clutter(resolution: int, config: ClutterConfig = ClutterConfig()) -> RawData:
    """The ``clutter`` set rendered at ``resolution`` (at most :data:`MAX_NATIVE`; the loader resizes beyond), split
    into a fixed ``train`` pool and a fixed ``test`` pool (the last ``test_share`` of each class)."""
    side = max(8, min(int(resolution), MAX_NATIVE))
    images, labels = render_clutter(side, config)
    test = np.zeros(len(labels), dtype=bool)
    for cls in range(len(config.classes)):
        members = np.flatnonzero(labels == cls)
        test[members[len(members) - int(round(len(members) * config.test_share)):]] = True
    pools = {name: RawPool(images[mask].astype(np.float32) / 255.0, labels[mask])
             for name, mask in (("train", ~test), ("test", test))}
    return RawData("clutter", list(config.classes), pools)
