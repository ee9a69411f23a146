"""The images every artifact is calibrated and verified on: the run's data set, ``--data``, or the embedded digits.

Calibration batches come from the train split, verification batches from the test split, both as a prefix
of the split the search used (same seed and fractions), normalised the way the model was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.export.config import ExportConfig
from hwnas.export.source import Source


@dataclass
class ExportData:
    """NCHW float32 batches: ``calibration`` for int8 PTQ, ``verification`` at the export batch size."""

    description: str
    calibration: list[np.ndarray]
    verification: list[np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.description, "calibration_images": sum(len(b) for b in self.calibration),
                "verification_images": sum(len(b) for b in self.verification)}


def export_data(source: Source, config: ExportConfig) -> ExportData:
    """Load and split the data set for ``source`` (see the module docstring)."""
    from hwnas.data import load_dataset

    run_data = source.meta.get("data") if isinstance(source.meta.get("data"), dict) else None
    # the run's split settings also apply to --data (e.g. the same CIFAR copy in another folder)
    kwargs: dict[str, Any] = {k: run_data[k] for k in ("seed", "arch_fraction", "test_fraction")
                              if run_data and k in run_data}
    kwargs.setdefault("seed", config.seed)
    if config.data is not None:
        spec, origin = config.data, "--data"
    elif run_data is not None:
        spec, origin = run_data.get("data"), "the run's data set"
    else:
        spec, origin = None, "default"
    needed = max(config.calibration_batches * config.calibration_batch_size, config.verify_samples)
    limit = run_data.get("max_per_split") if run_data else None
    kwargs["max_per_split"] = needed if limit is None else min(needed, int(limit))
    try:
        data = load_dataset(spec, source.space.resolution, **kwargs)
    except HwnasError as error:
        hint = "; pass --data to calibrate and verify on another copy" if origin == "the run's data set" else ""
        raise HwnasError(f"{error}{hint}") from None
    train, _ = data.split("train")
    test, _ = data.split("test")
    train, test = _renormalise(train, data, source.meta), _renormalise(test, data, source.meta)
    calibration = [train[i:i + config.calibration_batch_size].numpy()
                   for i in range(0, min(len(train), config.calibration_batches * config.calibration_batch_size),
                                  config.calibration_batch_size)]
    whole = (min(config.verify_samples, len(test)) // config.batch) * config.batch
    if whole == 0:
        raise HwnasError(f"data set {spec or 'digits'}: its test split has {len(test)} images, fewer than one "
                         f"batch of {config.batch}")
    verification = [test[i:i + config.batch].numpy() for i in range(0, whole, config.batch)]
    description = f"{spec or 'digits (embedded)'} ({origin}, seed {kwargs['seed']})"
    return ExportData(description, calibration, verification)


def _renormalise(images: torch.Tensor, data: Any, meta: dict[str, Any]) -> torch.Tensor:
    """Undo this split's normalisation and apply the model's (``mean``/``std`` saved in model.pt), if known."""
    mean, std = meta.get("mean"), meta.get("std")
    if not mean or not std or len(mean) != images.shape[1] or len(std) != images.shape[1]:
        return images.contiguous()
    shape = (1, -1, 1, 1)
    raw = images * torch.tensor(data.std).view(shape) + torch.tensor(data.mean).view(shape)
    return ((raw - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)).float().contiguous()
