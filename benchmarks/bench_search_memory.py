"""Search memory of the binarized supernet against one path and an all-paths (DARTS-style) mixture.

For a synthetic staged space with k = 2, 3, 5, 7 MBConv candidates per layer, prints the bytes of activations
autograd saves (``saved_tensors_hooks``, each storage once, parameters excluded) for one training step of:

* ``path``: the largest single path (every layer at its largest candidate), as a plain network;
* ``weight``: a supernet weight step (mode ``weight``, one sampled path);
* ``arch full_v2`` / ``arch two``: a supernet architecture step with binary gates;
* ``weight nested`` / ``arch two nested``: the search run's default, candidates sharing nested weights;
* ``darts``: the softmax mixture ``sum_j p_j o_j(x)`` with every candidate computed and stored;

and the peak RSS growth of the same forward + backward run in a forked child (the full_v2 column includes the
backward's transient recomputation). The supernet's sampled path is pinned to the largest candidate, so the
binarized columns are their worst case. Usage: ``python benchmarks/bench_search_memory.py [--resolution 64 ...]``.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import resource
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from hwnas.ops import MBConvSpec, OpSpec
from hwnas.search.supernet import SavedTensorMeter, SuperNet
from hwnas.spaces.base import ArchNet, SearchSpace, staged_space

# (kernel, expansion), largest first so every k shares the same largest path
_KE = ((7, 6), (3, 3), (5, 3), (3, 6), (7, 3), (5, 6), (3, 4))


@dataclass
class BenchConfig:
    """Defaults sized to run in well under a minute on 2 CPU cores."""

    resolution: int = 64
    batch: int = 8
    counts: tuple[int, ...] = (2, 3, 5, 7)
    threads: int = 1
    seed: int = 0
    rss: bool = True


def bench_space(k: int, resolution: int) -> SearchSpace:
    """Stem, three stages of two layers with ``k`` MBConv candidates each, head."""

    def candidates(position: int, cin: int, cout: int, size: int, stride: int) -> list[tuple[str, OpSpec]]:
        return [(f"k{kk}_e{e}", MBConvSpec(cin, cout, size, e=e, k=kk, s=stride)) for kk, e in _KE[:k]]

    return staged_space(f"bench-k{k}", resolution, 10, stem=(16, 3, 2, "relu6"), fixed=[],
                        stages=[(24, 2, 2), (40, 2, 2), (80, 2, 2)], candidates=candidates, head=(256, "relu6"))


def _darts_forward(net: SuperNet, x: torch.Tensor) -> torch.Tensor:
    x = net.prefix(x)
    for m in net.mixed_ops:
        p = m.probs()
        x = sum(p[j] * op(x) for j, op in enumerate(m.ops))
    return net.suffix(x)


def _steps(space: SearchSpace, seed: int) -> dict[str, tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]]:
    """Each column's network and forward; supernet paths pinned to candidate 0 (the largest)."""
    torch.manual_seed(seed)
    largest = space.arch([layer.names[0] for layer in space.layers])
    path = ArchNet(space, largest)
    steps: dict[str, tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]] = {"path": (path, path)}
    for column, mode, arch_grad, sharing in (("weight", "weight", "full_v2", "none"),
                                             ("arch full_v2", "arch", "full_v2", "none"),
                                             ("arch two", "arch", "two", "none"),
                                             ("weight nested", "weight", "two", "nested"),
                                             ("arch two nested", "arch", "two", "nested")):
        net = SuperNet(space, arch_grad, sharing)
        net.set_mode(mode)
        for m in net.mixed_ops:
            m.set_path(0)
        steps[column] = (net, net)
    darts = SuperNet(space)
    steps["darts"] = (darts, lambda x, net=darts: _darts_forward(net, x))
    return steps


def _train_step(module: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                y: torch.Tensor) -> int:
    module.train()
    with SavedTensorMeter(exclude=list(module.parameters())) as meter:
        loss = F.cross_entropy(forward(x), y)
    loss.backward()
    module.zero_grad(set_to_none=True)
    return meter.nbytes


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_rss_delta(module: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor) -> int:
    """Peak RSS growth (bytes) of one forward + backward, run in a forked child: the child resets its peak
    (``/proc/self/clear_refs``), runs the step and reports ``VmHWM - VmRSS`` through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, exit without cleanup
        code = 1
        try:
            os.close(read_end)
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            start = _status_kib("VmRSS")
            _train_step(module, forward, x, y)
            os.write(write_end, str((_status_kib("VmHWM") - start) * 1024).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as handle:
        report = handle.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not report:
        raise RuntimeError(f"benchmark child exited with status {status}")
    return int(report)


def _unpooled_malloc() -> None:
    """Make glibc map every allocation over 64 KiB on its own and unmap it when freed, so freed activations
    leave the RSS (no-op where glibc's ``mallopt`` is missing)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (fixed, disables the dynamic threshold)
    libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD: return freed heap top at once


def run(config: BenchConfig) -> list[dict[str, object]]:
    torch.set_num_threads(config.threads)
    if config.rss:
        _unpooled_malloc()
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.randn(config.batch, 3, config.resolution, config.resolution, generator=generator)
    y = torch.randint(0, 10, (config.batch,), generator=generator)
    rows = []
    for k in config.counts:
        for column, (module, forward) in _steps(bench_space(k, config.resolution), config.seed).items():
            saved = _train_step(module, forward, x, y)  # also the warm-up of the RSS run
            rss = _peak_rss_delta(module, forward, x, y) if config.rss else None
            rows.append({"k": k, "step": column, "saved_bytes": saved, "rss_bytes": rss})
    return rows


def _table(rows: list[dict[str, object]], key: str, title: str) -> str:
    columns = list(dict.fromkeys(str(r["step"]) for r in rows))
    counts = list(dict.fromkeys(int(r["k"]) for r in rows))
    value = {(int(r["k"]), str(r["step"])): r[key] for r in rows}
    lines = [title, "k  " + "".join(f"{c:>16}" for c in columns)]
    for k in counts:
        base = value[(k, "path")]
        cells = []
        for c in columns:
            v = value[(k, c)]
            cells.append(f"{v / 2**20:8.2f} ({v / base:4.1f}x)" if base else f"{v / 2**20:15.2f}")
        lines.append(f"{k:<3}" + "".join(f"{cell:>16}" for cell in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = BenchConfig()
    parser.add_argument("--resolution", type=int, default=defaults.resolution)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--counts", type=int, nargs="+", default=list(defaults.counts))
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-rss", dest="rss", action="store_false")
    args = parser.parse_args(argv)
    config = dataclasses.replace(defaults, **{**vars(args), "counts": tuple(args.counts)})
    rows = run(config)
    print(f"synthetic space: 6 searchable layers, resolution {config.resolution}, batch {config.batch}, "
          f"torch {torch.__version__}, {config.threads} thread(s); MiB (ratio to the largest single path)")
    print(_table(rows, "saved_bytes", "saved activations (saved_tensors_hooks)"))
    if config.rss:
        print(_table(rows, "rss_bytes", "peak RSS growth of forward + backward (forked child, noisy)"))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
