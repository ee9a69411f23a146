"""The ``hwnas`` argument parser: one subcommand per command, each with ``--json``, built fresh for every call."""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any, Callable, Iterator

from hwnas import __version__
from hwnas.checks import MAX_THREADS
from hwnas.errors import HwnasError
from hwnas.registry import LOSSES, PREDICTORS, REWARDS, SPACES, STRATEGIES, Registry

Handler = Callable[[argparse.Namespace], dict[str, Any]]
MAX_SAMPLED = 100_000  # `sample --n`: one file per architecture; more is a typo, not a plan
MAX_MEASURED = 10_000  # `measure`/`validate --n`: each network takes a second or more on the device


def build_parser() -> argparse.ArgumentParser:
    """The parser; each subcommand's ``handler`` is ``hwnas.cli.cmd_NAME``, looked up when the parser is built so
    that replacing that name replaces the command."""
    import hwnas.cli as commands

    parser = _Parser(prog="hwnas", description="Hardware-aware neural architecture search.", epilog=_FOLDERS_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_commands in (_add_listing_commands, _add_table_commands, _add_predictor_commands, _add_search_command,
                         _add_predict_command, _add_export_command):  # in this order in `hwnas --help`
        add_commands(sub, commands)
    return parser


def _command(sub: Any, name: str, handler: Handler, help_text: str,
             description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand of ``sub`` that runs ``handler`` and takes ``--json``."""
    p = sub.add_parser(name, help=help_text, description=description or help_text)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=handler)
    return p


def _add_listing_commands(sub: Any, commands: ModuleType) -> None:
    """``devices``, ``tables``, ``spaces``."""
    p = _command(sub, "devices", commands.cmd_devices, "list device profiles and whether their runtime is available "
                 "here; `devices add FILE` adds a device file to your own, `devices show NAME` prints a resolved "
                 "profile")
    p.add_argument("action", nargs="?", choices=["add", "show"], help="add a device file, or show one profile")
    p.add_argument("target", nargs="?", help="the device file to add, or the name (or path) to show")
    p.add_argument("--replace", action="store_true", help="with add: replace your device of the same name")
    _command(sub, "tables", commands.cmd_tables,
             "list the latency tables hwnas can see (yours first, then the shipped ones)")
    _command(sub, "spaces", commands.cmd_spaces, "list registered search spaces")


def _add_table_commands(sub: Any, commands: ModuleType) -> None:
    """``profile``, ``sample``, ``bench``, ``estimate``, ``validate``."""
    p = _command(sub, "profile", commands.cmd_profile,
                 "measure every op of a search space on a device into a latency table")
    p.add_argument("--device", required=True, help="device profile name or path")
    _add_space_args(p)
    p.add_argument("--out", help="table path (default: latency_tables/DEVICE__SPACE__RES.json)")
    p.add_argument("--chunk", type=_count(1), default=12, help="ops converted and measured together (interleaved)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads_arg(p)
    _add_protocol_arg(p)

    p = _command(sub, "sample", commands.cmd_sample, "write K random architectures of a space as JSON files")
    _add_space_args(p)
    p.add_argument("--n", type=_count(1, MAX_SAMPLED, " (one JSON file each)"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = _command(sub, "bench", commands.cmd_bench, "measure a network end to end on a device")
    p.add_argument("--device", required=True)
    p.add_argument("target", help="architecture .json, .onnx or .tflite file, or torchvision:NAME")
    _add_threads_arg(p)
    _add_protocol_arg(p)

    p = _command(sub, "estimate", commands.cmd_estimate, "a latency table's estimate for an architecture")
    p.add_argument("--table", help="latency table file, or a table's name as `hwnas tables` lists it")
    p.add_argument("--device", help="instead of --table: the device's table for the architecture's space and "
                   "resolution (yours, else the shipped one)")
    p.add_argument("--overhead", choices=["once", "per-op", "none"], default="once",
                   help="count the runtime's per-invocation overhead once (default), per op, or not at all")
    p.add_argument("arch")

    p = _command(sub, "validate", commands.cmd_validate,
                 "compare a table's estimates with end-to-end measurements")
    p.add_argument("--table", required=True,
                   help="latency table file, or a table's name as `hwnas tables` lists it (DEVICE__SPACE__RES.json)")
    p.add_argument("--device", help="device (default: the table's)")
    p.add_argument("--n", type=_count(1, MAX_MEASURED, " (each one measured on the device)"), default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for validation.json and validation.png")
    p.add_argument("--quiet", action="store_true")
    _add_threads_arg(p)
    _add_protocol_arg(p)


def _add_predictor_commands(sub: Any, commands: ModuleType) -> None:
    """``measure``, ``predictor fit``, ``predictor eval``, ``predictor build``."""
    p = _command(sub, "measure", commands.cmd_measure, "measure sampled whole networks of a space end to end, each "
                 "paired with the reference network, into a resumable measurement set")
    p.add_argument("--device", required=True, help="device profile name or path")
    _add_space_args(p)
    p.add_argument("--n", type=_count(1, MAX_MEASURED, " (each one measured on the device)"), default=50,
                   help="networks (stratified over the table's latency range)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=_count(0), default=10, help="networks measured twice for the set's noise floor")
    p.add_argument("--chunk", type=_count(1), default=8, help="networks converted together")
    p.add_argument("--table", help="table whose estimates stratify the sample (default: the device's, else MACs)")
    p.add_argument("--out", required=True, help="set file (.json); rerun the same command to resume")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--protocol", action="append", metavar="FIELD=VALUE",
                   help="override a paired-protocol field, e.g. --protocol pairs=60")

    predictor = sub.add_parser("predictor", help="fit, evaluate or build a learned latency predictor",
                               description="fit, evaluate or build a learned latency predictor")
    predictor_sub = predictor.add_subparsers(dest="predictor_command", required=True)
    p = _command(predictor_sub, "fit", commands.cmd_predictor_fit, "fit a predictor",
                 description="fit a predictor of a space's networks")
    _add_space_args(p)
    p.add_argument("--table", help="latency table (default with --set: the set's device's table when it exists)")
    p.add_argument("--set", action="append", help="measurement set (repeatable)")
    p.add_argument("--measurements", help="CSV: column 'arch' (op names in layer order), latency columns in ms")
    p.add_argument("--column", help="the CSV's latency column")
    p.add_argument("--prior", help="CSV of other devices' measurements (all its latency columns), for --kind transfer")
    p.add_argument("--kind", **_registered(PREDICTORS, "KIND"),
                   help="predictor kind: %(choices)s (default: transfer with --prior, else calibrated)")
    p.add_argument("--residual", default="auto", choices=["auto", "linear", "xgb"],
                   help="calibrated: additive only, with XGBoost trees, or whichever cross-validates better")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-noisy", action="store_true",
                   help="fit a set whose own re-measure agrees far below its runtime's (one warning line)")
    p.add_argument("--out", required=True, help="predictor file (.json)")
    p = _command(predictor_sub, "eval", commands.cmd_predictor_eval, "evaluate a predictor on held-out measurements")
    p.add_argument("--predictor", required=True)
    p.add_argument("--set", action="append", help="measurement set (repeatable)")
    p.add_argument("--measurements", help="CSV of measurements")
    p.add_argument("--column", help="the CSV's latency column")
    p.add_argument("--space", **_registered(SPACES, "SPACE"),
                   help="with --measurements and a kernel predictor: the space of the CSV's op names")
    p.add_argument("--resolution", type=int, help="with --space: input resolution (default: the space's)")
    p.add_argument("--num-classes", type=int, help="with --space: classifier outputs (default: the space's)")
    p.add_argument("--plot", help="predicted vs measured with the ±10%% band (.png, .pdf or .svg)")
    p = _command(predictor_sub, "build", commands.cmd_predictor_build, "build a device's kernel predictor here",
                 description="measure kernels and calibration networks on this machine and fit the device's kernel "
                 "predictor (any ONNX model); rerun the same command to resume after a kill")
    p.add_argument("--kind", default="kernel", **_registered(PREDICTORS, "KIND"),
                   help="kernel (the other kinds learn from measured networks: `predictor fit`)")
    p.add_argument("--device", required=True, help="device profile name or path (ONNX Runtime on the CPU)")
    p.add_argument("--quick", action="store_true", help="a few minutes: about 650 kernels and 10 calibration "
                   "networks instead of about 2200 and 24")
    p.add_argument("--out", help="predictor file (default: your predictor folder's DEVICE__kernel.json, which "
                   "`hwnas predict` finds first); its measurements file is written beside it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_search_command(sub: Any, commands: ModuleType) -> None:
    """``search``."""
    p = _command(sub, "search", commands.cmd_search,
                 "search an architecture for a latency target on a device, train and measure it")
    p.add_argument("--device", help="device profile name or path (default: cpu-onnxruntime)")
    p.add_argument("--space", **_registered(SPACES, "SPACE"), help="search space: %(choices)s (default: proxyless)")
    p.add_argument("--resolution", type=int, help="input resolution (default: 32)")
    p.add_argument("--target-ms", type=float, help="latency target in ms (default: 40%% of the way from the fastest "
                   "to the slowest architecture)")
    p.add_argument("--targets", type=_targets, metavar="T1,T2,...", help="several latency targets (ms): one network "
                   "per target from one supernet training, each in OUT/target-<i>")
    p.add_argument("--max-memory-mb", type=float, metavar="M", help="bound the network's peak activation memory "
                   "(batch 1, MiB): no op whose own peak exceeds M is chosen, by any strategy (MemNet)")
    p.add_argument("--max-params-mb", type=float, metavar="P", help="bound the network's parameter bytes (MiB): a "
                   "second budget beside latency")
    p.add_argument("--data", help="'digits' (embedded, the default), 'clutter' (embedded, generated: glyphs on "
                   "textured clutter, where architectures differ), a CIFAR folder or an ImageFolder tree")
    p.add_argument("--epochs", type=int, help="search epochs (alternating weight and architecture steps)")
    p.add_argument("--warmup-epochs", type=int, help="supernet warm-up epochs (weight steps only)")
    p.add_argument("--train-epochs", type=int, help="epochs training the derived network from scratch")
    p.add_argument("--loss", **_registered(LOSSES, "LOSS"),
                   help="latency loss of the proxyless strategy: %(choices)s (default: add#abs)")
    p.add_argument("--strategy", **_registered(STRATEGIES, "STRATEGY"),
                   help="search strategy: %(choices)s (default: proxyless, gradient; mnas is REINFORCE; evolution "
                   "searches the trained supernet under the latency bound)")
    p.add_argument("--reward", **_registered(REWARDS, "REWARD"),
                   help="reward of mnas and evolution: %(choices)s (default: soft, MnasNet's ACC (LAT/T)^-0.07; "
                   "hard: -1 over T, 0 under; abs: TuNAS's)")
    p.add_argument("--predictor", help="latency model: a predictor file of any kind, 'auto' (the device's calibrated "
                   "predictor if it fits this machine, else one built now) or 'none' (the table) (default: auto)")
    p.add_argument("--seed", type=int)
    p.add_argument("--baseline", action="store_true", help="also train and measure a same-budget uniform network")
    p.add_argument("--random-baselines", type=_count(0), metavar="N", help="also train and measure N random "
                   "architectures measured in the searched network's band [0.85 T, T] (the same budget each)")
    p.add_argument("--config", help="JSON or TOML file of search config fields (flags override it)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any search config field (repeatable; VALUE is JSON, else a string), "
                   "e.g. --set arch_lr=0.01 --set weight_sharing=none")
    p.add_argument("--out", help="run folder (default: runs/search-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threads_arg(p)


def _add_predict_command(sub: Any, commands: ModuleType) -> None:
    """``predict``."""
    p = _command(sub, "predict", commands.cmd_predict, "predict a model's latency on a device (kernel predictor for "
                 "any ONNX model; an architecture uses the device's calibrated predictor of its space when there is "
                 "one)")
    p.add_argument("--device", required=True, help="device profile name or path")
    p.add_argument("--predictor", help="predictor file (default: the device's in latency_tables/predictors/, yours "
                   "first: for an architecture DEVICE__SPACE__RES__calibrated.json, then __transfer.json; else "
                   "DEVICE__kernel.json)")
    p.add_argument("target", help="architecture .json or .onnx file")


def _add_export_command(sub: Any, commands: ModuleType) -> None:
    """``export``."""
    p = _command(sub, "export", commands.cmd_export, "export a searched model or an architecture to ONNX, TFLite or "
                 "TensorRT, verify it against PyTorch and measure it")
    p.add_argument("source", help="search run folder, model.pt written by search, or architecture .json "
                   "(random weights)")
    p.add_argument("--format", help="comma-separated: onnx, tflite, tensorrt "
                   "(default: onnx,tflite)")
    p.add_argument("--out", required=True, help="output folder (artifacts and export.json)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="TFLite/TensorRT precision: fp32 (default), fp16 weights, or full-integer int8 "
                   "(calibrated)")
    p.add_argument("--device", help="device profile to measure the format its backend loads on "
                   "(default: cpu-onnxruntime, cpu-litert, cuda-tensorrt)")
    p.add_argument("--batch", type=int, help="static batch size of the exported input (default: 1)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: 17)")
    p.add_argument("--nhwc", action="store_true", help="TFLite input channel-last (NHWC)")
    p.add_argument("--data", help="data set for calibration and verification (default: the run's, else digits)")
    p.add_argument("--seed", type=int, help="random weights of an architecture JSON, data split (default: 0)")
    p.add_argument("--random-weights", action="store_true",
                   help="export a run folder without model.pt with random weights (default: refuse it)")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 when a TensorRT engine cannot be built here (default: exit 3 with the reason)")
    _add_protocol_arg(p)


def _add_space_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", required=True, **_registered(SPACES, "SPACE"),
                        help="search space: %(choices)s (`hwnas spaces` describes them)")
    parser.add_argument("--resolution", type=int, default=None, help="input resolution (default: the space's)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the space's); a "
                        "table holds every head profiled into it: profiling another one measures just that op")


def _add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_count(1, MAX_THREADS, " (as in device files)"),
                        help="runtime threads (default: the device profile's)")


def _add_protocol_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", action="append", metavar="FIELD=VALUE",
                        help="override a measurement-protocol field, e.g. --protocol rounds=5")


class UsageError(Exception):
    """A command-line mistake found by argparse; ``usage`` is the usage text of the (sub)command."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse whose errors go through :func:`main`: with ``--json`` anywhere in the command line a usage error
    is one line on stderr and ``{"error": ...}`` on stdout (exit 2), without it argparse's usage and the line."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}", self.format_usage())


class _Names:
    """argparse ``choices`` read from a registry when argparse needs them (a --help, a usage error), not when the
    parser is built: the names of the built-ins are known without importing them, so ``hwnas --help`` stays light;
    plugins (:mod:`hwnas.registry`) are loaded then."""

    def __init__(self, registry: Registry[Any]) -> None:
        self._registry = registry

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.names())


def _registered(registry: Registry[Any], metavar: str) -> dict[str, Any]:
    """``add_argument`` keywords of a flag that names an entry of ``registry``: its choices, listed in the help, and
    a check whose error is the registry's one line (``unknown search space 'x': expected one of ...``)."""
    def parse(text: str) -> str:
        if text not in registry:
            try:
                registry.get(text)
            except HwnasError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    parse.__name__ = registry.what
    return {"type": parse, "choices": _Names(registry), "metavar": metavar}


def _targets(text: str) -> list[float]:
    """An argparse type: comma-separated distinct positive milliseconds."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not v > 0 or v != v or v == float("inf") for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected comma-separated distinct positive milliseconds, got {text!r}")
    return values


def _count(minimum: int, maximum: int | None = None, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (and at most ``maximum``, for the reason ``why``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected an integer of at most {maximum}{why}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


_FOLDERS_HELP = """data folders (environment variables):
  HWNAS_DATA     your own tables and device files: profile and search write tables to HWNAS_DATA/latency_tables,
                 `hwnas devices add` writes HWNAS_DATA/devices; yours override shipped files of the same name
                 (default: $XDG_DATA_HOME/hwnas, else ~/.local/share/hwnas)
  HWNAS_TABLES   replaces the folder of shipped tables, predictors/ and sets/ (default: the installed package's)
  HWNAS_DEVICES  replaces the folder of shipped device files (default: the installed package's)
  HWNAS_CACHE    converted models and lock files (default: $XDG_CACHE_HOME/hwnas, else ~/.cache/hwnas)"""
