"""The data layer: the embedded digits, a fake CIFAR-10 folder in torchvision's format, a tiny ImageFolder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.data import DataSplits, load_dataset
from hwnas.errors import HwnasError

CIFAR_CLASSES = ["airplane", "automobile", "bird"]


def _write_cifar_batch(path: Path, n: int, seed: int) -> None:
    """One torchvision-format CIFAR-10 pickle (bytes keys, as the Python 2 originals load)."""
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"fake", b"labels": [int(i % len(CIFAR_CLASSES)) for i in range(n)],
             b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    with path.open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)


@pytest.fixture
def fake_cifar(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _write_cifar_batch(folder / "data_batch_1", 12, 1)
    _write_cifar_batch(folder / "data_batch_2", 12, 2)
    _write_cifar_batch(folder / "test_batch", 9, 3)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}, handle, protocol=2)
    return tmp_path


def _write_images(folder: Path, count: int, color: tuple[int, int, int]) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (10 + i, 12), color).save(folder / f"{i}.png")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    _write_images(root / "cats", 6, (200, 10, 10))
    _write_images(root / "dogs", 6, (10, 10, 200))
    return root


def test_digits_default_splits() -> None:
    data = load_dataset(None, 16, seed=0)
    assert isinstance(data, DataSplits) and data.name == "digits" and data.num_classes == 10
    sizes = {s: data.size(s) for s in ("weights", "arch", "test")}
    assert sum(sizes.values()) == 1797 and min(sizes.values()) > 250
    assert data.size("train") == sizes["weights"] + sizes["arch"]
    images, labels = data.split("weights")
    assert images.shape[1:] == (3, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    train = data.split("train")[0]
    assert abs(float(train.mean())) < 1e-3 and abs(float(train.std()) - 1) < 1e-2
    assert set(labels.tolist()) == set(range(10))


def test_splits_are_deterministic_and_seeded() -> None:
    a, b, c = load_dataset("digits", 8, 3), load_dataset("digits", 8, 3), load_dataset("digits", 8, 4)
    for split in ("weights", "arch", "test"):
        assert torch.equal(a.split(split)[0], b.split(split)[0]) and torch.equal(a.split(split)[1], b.split(split)[1])
    assert not torch.equal(a.split("test")[1], c.split("test")[1])


def test_loader_batches_and_seeded_shuffle() -> None:
    data = load_dataset(None, 8, 0, max_per_split=100)
    seen = torch.cat([y for _, y in data.loader("test", 32)])
    assert torch.equal(seen, data.split("test")[1])
    first = [y for _, y in data.loader("weights", 32, True, torch.Generator().manual_seed(5))]
    second = [y for _, y in data.loader("weights", 32, True, torch.Generator().manual_seed(5))]
    assert all(torch.equal(p, q) for p, q in zip(first, second)) and [len(y) for y in first] == [32, 32, 32, 4]
    assert [len(y) for _, y in data.loader("weights", 32, True, drop_last=True)] == [32, 32, 32]
    with pytest.raises(HwnasError, match="unknown data split"):
        data.loader("validation", 8)


def test_fake_cifar(fake_cifar: Path) -> None:
    data = load_dataset(str(fake_cifar), 32, 0)
    assert data.name == "cifar10" and data.classes == CIFAR_CLASSES
    assert data.size("test") == 9 and data.size("train") == 24 and data.size("arch") == 6
    assert data.split("test")[0].shape == (9, 3, 32, 32)
    direct = load_dataset(str(fake_cifar / "cifar-10-batches-py"), 16, 0)
    assert direct.split("weights")[0].shape[1:] == (3, 16, 16)


def test_fake_cifar100(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 20), ("test", 6)):
        batch = {b"fine_labels": [i % 4 for i in range(n)], b"coarse_labels": [0] * n,
                 b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    data = load_dataset(str(tmp_path), 32, 0)
    assert data.name == "cifar100" and data.num_classes == 4 and data.size("test") == 6 and data.size("train") == 20


def test_corrupt_cifar_pickle(fake_cifar: Path) -> None:
    (fake_cifar / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(HwnasError, match="test_batch: not a CIFAR pickle"):
        load_dataset(str(fake_cifar), 32, 0)


def test_image_folder(image_folder: Path) -> None:
    data = load_dataset(str(image_folder), 16, 0)
    assert data.classes == ["cats", "dogs"] and data.split("train")[0].shape[1:] == (3, 16, 16)
    assert data.size("weights") + data.size("arch") + data.size("test") == 12
    images, labels = data.split("test")
    red_minus_blue = (images[:, 0] - images[:, 2]).mean(dim=(1, 2))
    assert torch.all((red_minus_blue > 0) == (labels == 0))


def test_image_folder_with_test_tree(tmp_path: Path) -> None:
    _write_images(tmp_path / "train" / "a", 4, (0, 0, 0))
    _write_images(tmp_path / "train" / "b", 4, (255, 255, 255))
    _write_images(tmp_path / "test" / "a", 2, (0, 0, 0))
    _write_images(tmp_path / "test" / "b", 1, (255, 255, 255))
    data = load_dataset(str(tmp_path), 8, 0)
    assert data.size("test") == 3 and data.size("train") == 8


@pytest.mark.parametrize("make", ["missing", "file", "empty", "no-images"])
def test_not_a_data_set_is_one_line_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "data"
    if make == "file":
        path.write_text("hello")
    elif make == "empty":
        path.mkdir()
    elif make == "no-images":
        (path / "cls").mkdir(parents=True)
        (path / "cls" / "notes.txt").write_text("x")
    with pytest.raises(HwnasError) as info:
        load_dataset(str(path), 32, 0)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "ImageFolder" in message
