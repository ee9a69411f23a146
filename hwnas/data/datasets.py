"""Data sets as in-memory tensor splits for the search: ``weights``, ``arch`` and ``test``.

ProxylessNAS trains the supernet weights on one part of the training data and updates the architecture
parameters on a held-out part; here those are the ``weights`` and ``arch`` splits. ``train`` is their union
(what the derived network is trained on from scratch) and ``test`` is kept for the final evaluation only.
Splits are stratified by class and depend only on the seed. Images are resized to the search space's
resolution (bilinear), made 3-channel, and normalised per channel with the training pool's mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from hwnas.data.readers import RawData, RawPool, read_any
from hwnas.errors import HwnasError

SPLITS = ("weights", "arch", "train", "test")


class _TensorBatches(Dataset):
    """Indexable by a list of indices, returning a whole batch at once (no per-sample collation)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(index, dtype=torch.long)
        return self.images[idx], self.labels[idx]


@dataclass
class DataSplits:
    """A data set split for the search; tensors are NCHW float32 (normalised) and int64 labels."""

    name: str
    classes: list[str]
    resolution: int
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(repr=False)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``weights``, ``arch``, ``train`` (= weights + arch) or ``test``."""
        if name == "train":
            (wx, wy), (ax, ay) = self.tensors["weights"], self.tensors["arch"]
            return torch.cat([wx, ax]), torch.cat([wy, ay])
        if name not in self.tensors:
            raise HwnasError(f"unknown data split {name!r}: expected one of {', '.join(SPLITS)}")
        return self.tensors[name]

    def size(self, name: str) -> int:
        return len(self.split(name)[1])

    def loader(self, split: str, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
               drop_last: bool = False) -> DataLoader:
        """A DataLoader over one split that slices whole batches out of memory; ``generator`` seeds shuffling."""
        images, labels = self.split(split)
        dataset = _TensorBatches(images, labels)
        base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        drop = drop_last and len(dataset) > batch_size
        batches = BatchSampler(base, batch_size=max(1, batch_size), drop_last=drop)
        return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=0)

    def summary(self) -> dict[str, object]:
        return {"name": self.name, "num_classes": self.num_classes, "resolution": self.resolution,
                **{f"{s}_size": self.size(s) for s in ("weights", "arch", "test")}}


def _stratified_split(labels: np.ndarray, fractions: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Split indices per class into consecutive parts of the given fractions (the last part takes the rest)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for i, fraction in enumerate(fractions):
            count = int(round(len(members) * fraction))
            parts[i].append(members[start:start + count])
            start += count
        parts[-1].append(members[start:])
    return [rng.permutation(np.concatenate(p)) for p in parts]


def _resize(images: np.ndarray, resolution: int, chunk: int = 2048) -> torch.Tensor:
    """NCHW float images to ``resolution`` (bilinear, antialiased when shrinking), 3 channels."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    if tensor.shape[-1] == resolution and tensor.shape[-2] == resolution:
        return tensor.contiguous()
    shrink = tensor.shape[-1] > resolution
    return torch.cat([F.interpolate(part, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                    antialias=shrink) for part in tensor.split(chunk)])


def _pools(raw: RawData, seed: int, arch_fraction: float, test_fraction: float) -> dict[str, RawPool]:
    rng = np.random.default_rng(seed)
    if "all" in raw.pools:
        pool = raw.pools["all"]
        fractions = [test_fraction, arch_fraction * (1 - test_fraction)]
        test_idx, arch_idx, weights_idx = _stratified_split(pool.labels, fractions, rng)
        picked = {"weights": weights_idx, "arch": arch_idx, "test": test_idx}
        return {k: RawPool(pool.images[v], pool.labels[v]) for k, v in picked.items()}
    train = raw.pools["train"]
    arch_idx, weights_idx = _stratified_split(train.labels, [arch_fraction], rng)
    return {"weights": RawPool(train.images[weights_idx], train.labels[weights_idx]),
            "arch": RawPool(train.images[arch_idx], train.labels[arch_idx]), "test": raw.pools["test"]}


def _limit(pool: RawPool, limit: int | None) -> RawPool:
    return pool if limit is None or len(pool.labels) <= limit else RawPool(pool.images[:limit], pool.labels[:limit])


def load_dataset(spec: str | None, resolution: int, seed: int, arch_fraction: float = 0.2,
                 test_fraction: float = 0.2, max_per_split: int | None = None) -> DataSplits:
    """Load a data set and split it deterministically.

    Args:
        spec: None or ``"digits"`` (the embedded default), a CIFAR folder, or an ImageFolder tree.
        resolution: side of the square images the search space expects.
        seed: seeds the split (the same seed gives the same split).
        arch_fraction: share of the training pool held out for architecture updates.
        test_fraction: share held out for testing when the data set has no test split of its own.
        max_per_split: keep at most this many images per split (after shuffling), for quick runs.
    """
    if not 0 < arch_fraction < 1 or not 0 < test_fraction < 1:
        raise HwnasError(f"data split fractions must be in (0, 1), got arch {arch_fraction}, test {test_fraction}")
    raw = read_any(spec, resolution)
    pools = {k: _limit(v, max_per_split) for k, v in _pools(raw, seed, arch_fraction, test_fraction).items()}
    for name, pool in pools.items():
        if len(pool.labels) == 0:
            raise HwnasError(f"{spec}: too few images to make a non-empty {name!r} split")
    images = {k: _resize(v.images, resolution) for k, v in pools.items()}
    train = torch.cat([images["weights"], images["arch"]])
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)
    tensors = {k: (((x - mean[None, :, None, None]) / std[None, :, None, None]).contiguous(),
                   torch.from_numpy(pools[k].labels)) for k, x in images.items()}
    return DataSplits(raw.name, raw.classes, resolution, tensors, tuple(mean.tolist()), tuple(std.tolist()))
