"""Readers for the supported data set formats, each returning raw images at their native size.

* ``digits``: scikit-learn's embedded 8x8 handwritten digits (1797 gray images, 10 classes; no download).
* ``clutter``: procedural glyphs over textured colour clutter (5000 colour images, 10 classes; no download), on
  which architectures differ; rendered at the resolution asked (see :mod:`hwnas.data.clutter`).
* CIFAR-10 / CIFAR-100 in torchvision's python format (``cifar-10-batches-py`` with ``data_batch_*`` and
  ``test_batch``; ``cifar-100-python`` with ``train`` and ``test``), read with a restricted unpickler that builds
  only numpy arrays, lists, dicts, strings and numbers: a pickle naming anything else (``os.system``, ``open``) is
  refused before it is called, so a data folder never runs code.
* An ImageFolder tree: one subfolder of images per class, optionally below ``train/`` and ``test/`` (or
  ``val/``) folders that fix the test split. Images are decoded with PIL and resized on reading.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import HwnasError
from hwnas.io import first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
EXPECTED = ("'digits', 'clutter', a CIFAR folder in torchvision's python format (cifar-10-batches-py with "
            "data_batch_* and test_batch), or an ImageFolder tree (one subfolder of images per class)")


@dataclass
class RawPool:
    """Images of one pool: ``images`` is NCHW float32 in [0, 1] (any size), ``labels`` int64 class indices."""

    images: np.ndarray
    labels: np.ndarray


@dataclass
class RawData:
    """A data set as read: its class names and its pools (``all``, or ``train`` and ``test``)."""

    name: str
    classes: list[str]
    pools: dict[str, RawPool]


def read_digits() -> RawData:
    """scikit-learn's digits, gray 8x8 scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    pool = RawPool(images, digits.target.astype(np.int64))
    return RawData("digits", [str(c) for c in digits.target_names], {"all": pool})


def find_cifar_dir(root: Path) -> Path | None:
    """The folder holding CIFAR pickles: ``root`` itself or its ``cifar-10-batches-py``/``cifar-100-python``."""
    for folder in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (folder / "test_batch").is_file() and any(folder.glob("data_batch_*")):
            return folder
        if (folder / "train").is_file() and (folder / "test").is_file():
            return folder
    return None


# What CIFAR pickles refer to: numpy's array and scalar reconstruction (``_reconstruct`` up to protocol 4, as in the
# Python 2 originals; ``_frombuffer`` at protocol 5), and ``_codecs.encode``, which Python 3 writes for ``bytes`` at
# protocol 2. Each builds data only; nothing else is looked up.
_CIFAR_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _Refused(pickle.UnpicklingError):
    """A pickle referred to something a CIFAR pickle never holds; raised before it is looked up, let alone called."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only :data:`_CIFAR_GLOBALS` (plain dicts, lists, bytes, strings and numbers need no
    global): a ``__reduce__`` payload refers to its callable by name, and that name is refused here."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise _Refused(f"{module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 renamed it; the old name warns
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """The dict a CIFAR pickle holds, read without executing anything (see :class:`_CifarUnpickler`)."""
    try:
        with path.open("rb") as handle:
            data = _CifarUnpickler(handle, encoding="bytes").load()
    except _Refused as exc:
        raise HwnasError(f"{path}: not a CIFAR pickle (it refers to {exc}; only numpy arrays, lists, dicts, strings "
                         "and numbers are read)") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, RecursionError) as exc:
        raise HwnasError(f"{path}: not a CIFAR pickle ({exc.__class__.__name__}: {first_line(exc)})") from None
    if not isinstance(data, dict):
        raise HwnasError(f"{path}: not a CIFAR pickle (expected a dict with 'data' and labels)")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _cifar_pool(paths: list[Path], label_key: str) -> RawPool:
    images, labels = [], []
    for path in paths:
        batch = _unpickle(path)
        if "data" not in batch or label_key not in batch:
            raise HwnasError(f"{path}: not a CIFAR pickle (expected keys 'data' and {label_key!r})")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise HwnasError(f"{path}: field 'data': expected N x 3072 uint8 rows, got shape {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return RawPool(np.concatenate(images).astype(np.float32) / 255.0, np.concatenate(labels))


def _names(meta_path: Path, key: str, count: int) -> list[str]:
    if meta_path.is_file():
        names = _unpickle(meta_path).get(key)
        if isinstance(names, list) and len(names) == count:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(count)]


def read_cifar(folder: Path) -> RawData:
    """CIFAR-10 (``data_batch_*``, ``test_batch``) or CIFAR-100 (``train``, ``test``) pickles in ``folder``."""
    if (folder / "test_batch").is_file():
        train = _cifar_pool(sorted(folder.glob("data_batch_*")), "labels")
        test = _cifar_pool([folder / "test_batch"], "labels")
        classes = _names(folder / "batches.meta", "label_names", int(max(train.labels.max(), test.labels.max())) + 1)
        return RawData("cifar10", classes, {"train": train, "test": test})
    train = _cifar_pool([folder / "train"], "fine_labels")
    test = _cifar_pool([folder / "test"], "fine_labels")
    classes = _names(folder / "meta", "fine_label_names", int(max(train.labels.max(), test.labels.max())) + 1)
    return RawData("cifar100", classes, {"train": train, "test": test})


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_image_folder(root: Path) -> bool:
    """True when ``root`` has class subfolders with images, or ``train/`` + ``test/``/``val/`` such trees."""
    split_root = _split_roots(root)
    if split_root is not None:
        return all(is_image_folder(p) for p in split_root)
    dirs = _class_dirs(root)
    return bool(dirs) and all(_image_files(d) for d in dirs)


def _split_roots(root: Path) -> tuple[Path, Path] | None:
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    return (root / "train", test) if test is not None and (root / "train").is_dir() else None


def _folder_pool(root: Path, classes: list[str], resolution: int) -> RawPool:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        for path in _image_files(folder) if folder.is_dir() else []:
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB").resize((resolution, resolution), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError) as exc:
                raise HwnasError(f"{path}: cannot read the image ({exc.__class__.__name__})") from None
            images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise HwnasError(f"{root}: no images found (expected one subfolder of images per class)")
    return RawPool(np.stack(images).astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int64))


def read_image_folder(root: Path, resolution: int) -> RawData:
    """An ImageFolder tree; images are resized to ``resolution`` x ``resolution`` (bilinear) as they are read."""
    split_root = _split_roots(root)
    if split_root is None:
        classes = [d.name for d in _class_dirs(root)]
        return RawData(root.name, classes, {"all": _folder_pool(root, classes, resolution)})
    train_root, test_root = split_root
    classes = [d.name for d in _class_dirs(train_root)]
    extra = sorted({d.name for d in _class_dirs(test_root)} - set(classes))
    if extra:
        raise HwnasError(f"{test_root}: class folder {extra[0]!r} is not in {train_root}")
    return RawData(root.name, classes, {"train": _folder_pool(train_root, classes, resolution),
                                        "test": _folder_pool(test_root, classes, resolution)})


def read_any(spec: str | None, resolution: int) -> RawData:
    """Dispatch on ``spec``: None or ``digits``, ``clutter``, a CIFAR folder, or an ImageFolder tree."""
    if spec is None or spec == "digits":
        return read_digits()
    if spec == "clutter":
        from hwnas.data.clutter import read_clutter  # imports this module: imported here, when asked for

        return read_clutter(resolution)
    root = Path(spec).expanduser()
    if not root.exists():
        raise HwnasError(f"{spec}: no such data set folder; expected {EXPECTED}")
    if not root.is_dir():
        raise HwnasError(f"{spec}: is a file, not a data set; expected {EXPECTED}")
    cifar = find_cifar_dir(root)
    if cifar is not None:
        return read_cifar(cifar)
    if is_image_folder(root):
        return read_image_folder(root, resolution)
    raise HwnasError(f"{spec}: not a data set; expected {EXPECTED}")
