"""Supernet training past one process: a real ``torchrun --nproc_per_node 2`` (gloo, CPU) against one process with
the same global batch, identical weights on both ranks, an interrupted two-process run that resumes, a batch that
does not split. This file is also the worker script torchrun starts (``python tests/test_distributed.py OUT ...``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

RUN = {"space": "tiny", "resolution": 16, "data": "digits", "max_per_split": 128, "warmup_epochs": 1,
       "search_epochs": 2, "batch_size": 32, "arch_batch_size": 32, "weight_sharing": "nested", "arch_grad": "two",
       "num_threads": 1, "seed": 3}
# Against one process the comparison runs in float64: two ranks sum their shards' gradients and BatchNorm sums
# (another order of additions than one process), a difference of rounding only, ~1e-16 relative per step in float64;
# measured after the 3 epochs: 7e-15. In float32 the same rounding (~1e-7) grows to ~1e-2 in these 3 epochs
# (measured: 1e-6 after the first 4 steps, then amplified by SGD at lr 0.05 through BatchNorm over 2x2 maps and
# by Adam's sign-like first steps on alpha), too close to what a real error gives to tell them apart. A per-rank
# BatchNorm (16 images instead of 32), a wrong shard or gradient scale differs by 1e-3 and more after one step.
ATOL_FLOAT64 = 1e-9


def _worker(out: Path, strategies: list[str], stop_after: int, dtype: str) -> None:
    """Train the supernet of each strategy (checkpointed in ``out/<strategy>``, resumed from there) in ``dtype``;
    rank 0 kills its process with SIGKILL right after the checkpoint of epoch ``stop_after`` (0: never). Writes each
    rank's weights, history and training seconds."""
    from hwnas.data import load_dataset
    from hwnas.search import distributed
    from hwnas.search.checkpoint import RunCheckpoint
    from hwnas.search.progress import Progress
    from hwnas.search.run_config import SearchConfig
    from hwnas.search.run_supernet import search_supernet
    from hwnas.search.run_train import torch_settings
    from hwnas.search.supernet import SuperNet
    from hwnas.spaces import get_space

    ranks = distributed.join()
    rank = ranks.rank if ranks else 0
    for strategy in strategies:
        config = SearchConfig(**RUN, strategy=strategy, out=str(out / strategy))
        data = load_dataset("digits", RUN["resolution"], config.seed, max_per_split=RUN["max_per_split"])
        space = get_space("tiny", RUN["resolution"], data.num_classes)
        from test_search_core import _estimator  # the synthetic table the single-process tests use

        estimator = _estimator(space)
        if dtype == "float64":
            torch.set_default_dtype(torch.float64)
            data.tensors = {k: (x.double(), y) for k, (x, y) in data.tensors.items()}
        torch.manual_seed(config.seed)
        supernet = SuperNet(space, config.arch_grad, config.weight_sharing).to(getattr(torch, dtype))
        supernet = supernet.to(memory_format=torch.channels_last)
        checkpoint = RunCheckpoint.open(out / strategy, config.to_dict())  # every rank reads it; rank 0's is used

        def on_epoch(state: dict, checkpoint: RunCheckpoint = checkpoint) -> None:
            checkpoint.update("search", state)
            if state["epoch"] == stop_after:
                os.kill(os.getpid(), signal.SIGKILL)

        start = time.perf_counter()
        with torch_settings(config):
            history = search_supernet(supernet, data, estimator, 1.0, config, Progress(), checkpoint.state["search"],
                                      on_epoch)
        seconds = time.perf_counter() - start
        torch.save({"state": supernet.state_dict(), "history": history, "seconds": seconds},
                   out / strategy / f"final-{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, strategies: list[str], processes: int, stop_after: int = 0,
            dtype: str = "float32") -> subprocess.CompletedProcess:
    args = [str(Path(__file__)), str(out), ",".join(strategies), str(stop_after), dtype]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port())] + args
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)


def _final(folder: Path, rank: int = 0) -> dict:
    return torch.load(folder / f"final-{rank}.pt", weights_only=True)


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path: Path) -> None:
    """Proxyless (sharded arch batch, averaged alpha gradients) and mnas (replicated arch steps), in float64 (see
    ATOL_FLOAT64): two ranks reach the weights and architecture parameters of one process at the same global batch,
    identical on both ranks; a two-process run killed after epoch 2's checkpoint resumes and ends bit for bit where
    the uninterrupted run ends, on both ranks. Prints the training time of 1 and 2 processes."""
    for processes in (1, 2):
        done = _launch(tmp_path / str(processes), ["proxyless", "mnas"], processes, dtype="float64")
        assert done.returncode == 0, done.stderr[-3000:]
    for strategy in ("proxyless", "mnas"):
        single, rank0, rank1 = (_final(tmp_path / "1" / strategy), _final(tmp_path / "2" / strategy),
                                _final(tmp_path / "2" / strategy, 1))
        assert _max_difference(rank0["state"], rank1["state"]) == 0.0
        difference = _max_difference(single["state"], rank0["state"])
        print(f"{strategy}: max |w_1 process - w_2 processes| = {difference:.1e}; 3 epochs in "
              f"{single['seconds']:.2f} s (1 process), {rank0['seconds']:.2f} s (2 processes)")
        assert difference < ATOL_FLOAT64
        assert [h["epoch"] for h in rank0["history"]] == [1, 2, 3]
        assert abs(single["history"][-1]["weight_loss"] - rank0["history"][-1]["weight_loss"]) < ATOL_FLOAT64

    killed = _launch(tmp_path / "resumed", ["proxyless"], 2, stop_after=2, dtype="float64")
    assert killed.returncode != 0 and not (tmp_path / "resumed" / "proxyless" / "final-0.pt").exists()
    assert torch.load(tmp_path / "resumed" / "proxyless" / "checkpoint.pt", weights_only=True)["search"]["epoch"] == 2
    resumed = _launch(tmp_path / "resumed", ["proxyless"], 2, dtype="float64")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted = _final(tmp_path / "2" / "proxyless")
    for rank in (0, 1):
        final = _final(tmp_path / "resumed" / "proxyless", rank)
        assert _max_difference(final["state"], uninterrupted["state"]) == 0.0
        assert [h["epoch"] for h in final["history"]] == [1, 2, 3]
        assert final["history"][-1]["weight_loss"] == uninterrupted["history"][-1]["weight_loss"]


def test_batch_not_divisible_is_refused() -> None:
    """A global batch that does not split into equal shards: one line naming the setting, before any training."""
    from hwnas.errors import HwnasError
    from hwnas.search.distributed import Ranks, check_batches

    check_batches(Ranks(0, 2), {"--set batch_size": 32})
    with pytest.raises(HwnasError, match=r"--set batch_size 30: not divisible by the 4 torchrun processes"):
        check_batches(Ranks(1, 4), {"--set batch_size": 30})


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4])
