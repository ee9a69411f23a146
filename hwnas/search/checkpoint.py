"""The resumable state of a search run: ``OUT/checkpoint.pt``, so that an interrupted search loses no work.

The file holds only tensors and plain lists, dicts, numbers and strings (``torch.load(weights_only=True)`` reads it;
:func:`loadable_state` checks each save, so a numpy scalar or another object can never make a checkpoint that the
rerun cannot read) and is replaced atomically (temporary file, then ``os.replace``), so a kill at any moment leaves
the previous complete checkpoint or the new one. It is written after every supernet epoch (weights and architecture
parameters, optimizer and scheduler states, the strategy's state, the generators and the global RNG states, the
epoch history), after every closed-loop measurement (keyed by architecture, replayed on resume), after every epoch
of training a derived network, when a derived network is trained, and after the final measurement (its verdict, so
that a kill while the run folder is written does not measure again). Rerunning the same command with the same
``--out`` continues from it; ``report.json`` marks a complete run, and the checkpoint is then removed.
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.io import atomic_path, first_line

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1
IGNORED_FIELDS = ("out",)  # the same folder may be given as another path
_PLAIN = (str, bytes, bool, int, float, type(None))  # exact types: a str enum or an int subclass pickles its class
_TORCH_LEAVES = (torch.Tensor, torch.dtype, torch.device)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+)")


def loadable_state(value: Any, where: str = "state") -> Any:
    """``value`` as ``torch.load(weights_only=True)`` reads it back: numpy scalars and subclasses of str, int and
    float become their plain value, tensors, plain containers and plain values stay; anything else is a bug of the
    code that put it there.

    Raises:
        TypeError: naming the key path (``state['search']['history'][0]['x']``) and the type of the first value
            that a weights-only load would refuse (a numpy array, a dataclass, ...).
    """
    if isinstance(value, np.generic):  # before the leaves: numpy.float64 is a float subclass, pickled as numpy's
        return value.item()
    if type(value) in _PLAIN or isinstance(value, _TORCH_LEAVES):
        return value
    for plain in (str, int, float):  # a subclass (torch.__version__ is a TorchVersion) pickles its class: its value
        if isinstance(value, plain):
            return getattr(plain, f"__{plain.__name__}__")(value)
    if type(value) in (dict, OrderedDict):
        return type(value)((loadable_state(key, f"{where} key {key!r}"), loadable_state(item, f"{where}[{key!r}]"))
                           for key, item in value.items())
    if type(value) in (list, tuple, torch.Size):
        return type(value)(loadable_state(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise TypeError(f"checkpoint {where}: a {type(value).__module__}.{type(value).__qualname__} cannot be saved for "
                    "torch.load(weights_only=True); convert it to tensors or plain values where it is made")


def _load_error(exc: Exception) -> str:
    """One clean line for an unreadable checkpoint: torch's weights-only refusal is several lines with terminal
    escape codes; its gist is the global it refused."""
    text = _ANSI.sub("", str(exc))
    refused = _UNSUPPORTED.search(text)
    if refused:
        return f"it holds a {refused.group(1)}, not only tensors and plain values"
    return f"{exc.__class__.__name__}: {first_line(text)}" if text.strip() else exc.__class__.__name__


def rng_state() -> dict[str, Any]:
    """The global torch, numpy and python RNG states as tensors and plain lists."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
            "python": [version, list(internal), gauss_next]}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first config field (in ``current``'s order) whose value differs, ignoring :data:`IGNORED_FIELDS`."""
    for key in list(current) + [k for k in saved if k not in current]:
        if key not in IGNORED_FIELDS and saved.get(key) != current.get(key):
            return key
    return None


class RunCheckpoint:
    """The checkpoint of one run folder. ``state`` keys: ``format``, ``config`` (plain JSON), ``search`` (the
    supernet state after its last finished epoch, None before the first), ``measured`` (loop name -> architecture
    string -> statistics), ``train`` (label -> state after its last finished training epoch) and ``trained``
    (label -> the trained network's weights, accuracy, history, seconds), ``verdict`` (None until the final
    measurement is done, then the architectures it measured and :class:`~hwnas.search.verdict.Verdict`'s JSON)."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        self.path = Path(out) / CHECKPOINT_NAME
        self.state: dict[str, Any] = {"format": FORMAT, "config": config, "search": None, "measured": {},
                                      "train": {}, "trained": {}, "verdict": None}
        self.resumed_from: dict[str, Any] | None = None

    @classmethod
    def open(cls, out: Path, config: dict[str, Any]) -> RunCheckpoint:
        """The run folder's checkpoint when it holds one for ``config``, else a new empty one.

        Raises:
            HwnasError: one line when the folder holds a complete run (``report.json``), an unreadable checkpoint,
                or one of another config (naming the first differing field).
        """
        out = Path(out)
        if (out / "report.json").is_file():
            raise HwnasError(f"--out {out}: this run is complete (report.json is there); give another --out to "
                             "search again")
        checkpoint = cls(out, config)
        if not checkpoint.path.is_file():
            return checkpoint
        try:
            state = torch.load(checkpoint.path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
            raise HwnasError(f"{checkpoint.path}: cannot read the checkpoint ({_load_error(exc)}); remove it or give "
                             "another --out") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise HwnasError(f"{checkpoint.path}: not a search checkpoint of this hwnas version; give another --out")
        field = first_difference(state["config"], config)
        if field is not None:
            raise HwnasError(f"--out {out}: holds an interrupted search with another config (field {field!r}: "
                             f"{state['config'].get(field)!r} there, {config.get(field)!r} now); rerun it with the "
                             "same config or give another --out")
        checkpoint.state = {"verdict": None, **state}  # checkpoints from before the verdict was saved lack it
        checkpoint.resumed_from = checkpoint.summary()
        return checkpoint

    def summary(self) -> dict[str, Any]:
        """What the checkpoint holds: finished supernet epochs, closed-loop measurements, training epochs."""
        search = self.state["search"]
        return {"epoch": search["epoch"] if search else 0,
                "measured": {name: len(records) for name, records in self.state["measured"].items()},
                "train_epochs": {label: s["epoch"] for label, s in self.state["train"].items()},
                "trained": sorted(self.state["trained"])}

    def describe(self) -> str:
        """One line for stderr: ``resuming from epoch k (...)``."""
        s = self.summary()
        parts = [f"{n} closed-loop measurement{'s' * (n != 1)} ({name})" for name, n in s["measured"].items()]
        parts += [f"{label} trained" for label in s["trained"]]
        parts += [f"{label} at training epoch {e}" for label, e in s["train_epochs"].items()]
        parts += ["final measurement done"] if self.state["verdict"] is not None else []
        return f"resuming from epoch {s['epoch']}" + (f" ({', '.join(parts)})" if parts else "") + f" of {self.path}"

    def measured(self, loop: str) -> dict[str, dict[str, Any]]:
        """The recorded measurements of ``loop`` (architecture string -> statistics); filled as the loop runs."""
        return self.state["measured"].setdefault(loop, {})

    def record(self, loop: str, arch: str, stats: dict[str, Any]) -> None:
        self.measured(loop)[arch] = stats
        self.save()

    def update(self, key: str, value: Any, label: str | None = None) -> None:
        """Set ``state[key]`` (or ``state[key][label]``; None removes it) and save."""
        if label is None:
            self.state[key] = value
        elif value is None:
            self.state[key].pop(label, None)
        else:
            self.state[key][label] = value
        self.save()

    def save(self) -> None:
        """Write atomically: a kill leaves the old or the new complete file; only what a weights-only load reads
        back (:func:`loadable_state`)."""
        state = loadable_state(self.state)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
