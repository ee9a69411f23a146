"""A data folder never runs code (issue #16): CIFAR pickles are read by an unpickler that admits only numpy's array
reconstruction, so a ``data_batch_1`` with a ``__reduce__`` payload is refused in one line before its payload is
called, by ``search`` and ``export`` alike, while real CIFAR-10/100 files (numpy arrays and lists) still read."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.spaces import get_space


class _OpenPayload:
    """Unpickled by ``pickle.load``, this creates (truncates) ``marker``: ``open(marker, 'w')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


class _SystemPayload(_OpenPayload):
    """Unpickled by ``pickle.load``, this runs ``touch marker`` through the shell."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _batch(n: int, seed: int, protocol: int) -> bytes:
    """A CIFAR-10 batch as torchvision reads it: bytes keys, a uint8 numpy array, python lists."""
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"batch_label": b"fake", b"labels": [i % 3 for i in range(n)],
                         b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         b"filenames": [f"img{i}.png".encode() for i in range(n)]}, protocol=protocol)


def _payload_folder(root: Path, payload: _OpenPayload) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2))
    return root


@pytest.mark.parametrize("payload", [_OpenPayload, _SystemPayload])
def test_payload_pickle_is_refused_by_search_and_nothing_runs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              payload: type[_OpenPayload]) -> None:
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(payload(marker)))  # the independent check: plain pickle runs the payload
    assert marker.exists()
    marker.unlink()
    data = _payload_folder(tmp_path / "data", payload(marker))
    code = main(["search", "--device", "cpu-torch", "--space", "tiny", "--resolution", "32", "--data", str(data),
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not marker.exists()
    callee = "open" if payload is _OpenPayload else "system"
    assert "\n" not in err and "data_batch_1: not a CIFAR pickle (it refers to " in err
    assert f".{callee}; only numpy arrays, lists, dicts, strings and numbers are read)" in err


def test_payload_pickle_is_refused_by_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "payload-ran"
    data = _payload_folder(tmp_path / "data", _OpenPayload(marker))
    arch = get_space("tiny", 32).random_arch(random.Random(0)).save(tmp_path / "arch.json")
    code = main(["export", str(arch), "--data", str(data), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not marker.exists()
    assert "\n" not in err and "not a CIFAR pickle (it refers to " in err and not (tmp_path / "out").exists()


def test_payload_in_the_meta_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(_batch(6, 0, 2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": _OpenPayload(marker)}, protocol=2))
    with pytest.raises(HwnasError, match=r"batches.meta: not a CIFAR pickle \(it refers to .*open;"):
        load_dataset(str(tmp_path), 32, 0)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_valid_cifar10_folder_still_reads_with_its_names(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(_batch(20, 1, protocol))
    (folder / "data_batch_2").write_bytes(_batch(20, 2, protocol))
    (folder / "test_batch").write_bytes(_batch(9, 3, protocol))
    names = [b"airplane", b"automobile", b"bird"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_cases_per_batch": np.int64(20),
                                                        b"num_vis": 3072}, protocol=protocol))
    data = load_dataset(str(tmp_path), 32, 0)
    assert data.name == "cifar10" and data.classes == ["airplane", "automobile", "bird"]
    assert data.size("test") == 9 and data.size("train") == 40  # "train" is the whole training pool


def test_python2_style_module_names_read(tmp_path: Path) -> None:
    """The original CIFAR files name ``numpy.core.multiarray``: still admitted under numpy 2's ``numpy._core``."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 12), ("test", 5)):
        rng = np.random.default_rng(n)
        raw = pickle.dumps({b"fine_labels": [i % 4 for i in range(n)], b"coarse_labels": [0] * n,
                            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}, protocol=2)
        (folder / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a", "b", "c", "d"]}, protocol=2))
    data = load_dataset(str(tmp_path), 32, 0)
    assert data.name == "cifar100" and data.classes == ["a", "b", "c", "d"] and data.size("test") == 5
