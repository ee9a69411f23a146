"""Where a predictor belongs: the machine and runtime it was fitted on, against the device it is used for here.

Every predictor file carries the fingerprint of its training data (``meta.fingerprint``: a measurement set's, the
kernel build's machine and runtime; ``{}`` when unknown, e.g. fitted from a CSV). Two answers follow from it:

* **refused** (one line, :func:`check_origin` raises): a predictor of another device or of another runtime than
  the device's: another backend (a LiteRT predictor for an ONNX Runtime device), or another release line of the
  runtime's own library (:func:`~hwnas.runtimes.fingerprint.version_family`): its kernels are other kernels;
* **foreign** (one warning line, worded as a table's, from the same comparison:
  :func:`~hwnas.runtimes.fingerprint.foreign_differences`): another CPU, caches, CPU features or core count, other
  library versions of the same line, other threads or precision. The figures may not hold here; it is used.
* **another scale** (one warning line too: :func:`scale_note`): a predictor of this machine whose training networks
  were paired with cold turns (every turn's first run timed: fitted before warm turns existed, or on purpose with
  ``turn_warmup_runs=0``), so its figures sit above ``hwnas bench``'s warm ones, by a different amount per network.

``hwnas predict`` and the search (a predictor named by path) both go through :func:`check_origin`, so they say the
same thing; the search's ``auto`` lookup and ``predict``'s default lookup prefer a predictor of this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hwnas.errors import HwnasError
from hwnas.latency.predictors.meta import PredictorMeta

if TYPE_CHECKING:
    from hwnas.devices import DeviceProfile
    from hwnas.spaces import SearchSpace

RUNTIME_FIELDS = ("device", "threads", "precision")  # a device profile's side of a runtime fingerprint


def refusals(meta: PredictorMeta, device: DeviceProfile, runtime: Mapping[str, Any] | None = None) -> list[str]:
    """Why a predictor of ``meta`` cannot predict ``device``: another device, backend or runtime release line
    (``runtime``: this runtime's fingerprint section when known, else the libraries installed here)."""
    from hwnas.runtimes.fingerprint import runtime_library, version_family

    reasons = []
    stored = meta.fingerprint.get("runtime") or {}
    if stored.get("runtime") and stored["runtime"] != device.backend:
        reasons.append(f"fitted with runtime {stored['runtime']!r}, device {device.name!r} runs {device.backend!r}")
    if meta.device and meta.device != device.name:
        reasons.append(f"fitted for device {meta.device!r}, not {device.name!r}")
    library = runtime_library(stored) if not reasons else None
    if library is not None:
        package, version = library
        here = _library_here(package, runtime)
        if here is not None and version_family(version) != version_family(here):
            reasons.append(f"fitted with {package} {version}, {here} here (another release line)")
    return reasons


def differences(meta: PredictorMeta, device: DeviceProfile, runtime: Mapping[str, Any] | None = None) -> list[str]:
    """How the machine and runtime ``meta`` was fitted on differ from this machine and ``device``'s runtime (empty
    when they match or the file does not say): the table's comparison, plus the runtime settings."""
    from hwnas.runtimes.fingerprint import fingerprint_differences, foreign_differences

    stored = meta.fingerprint.get("runtime") or {}
    if runtime is None:  # no runtime built here: the libraries installed and the device profile's settings
        found = foreign_differences(meta.fingerprint)
        found += [f"runtime.{name}: {stored[name]!r} -> {getattr(device, name)!r}" for name in RUNTIME_FIELDS
                  if name in stored and stored[name] != getattr(device, name)]
        return found
    found = foreign_differences({"machine": meta.fingerprint.get("machine") or {}})
    if stored:
        found += [line for line in fingerprint_differences({"runtime": stored}, {"runtime": runtime})
                  if not line.startswith("runtime.runtime:")]  # another backend is a refusal
    return found


def check_origin(meta: PredictorMeta, where: str | Path, device: DeviceProfile,
                 runtime: Mapping[str, Any] | None = None) -> str | None:
    """The warning line for a predictor of ``meta`` (named ``where``) used for ``device`` here, None when it was
    fitted here or the file does not say; a predictor of another device or runtime raises one line."""
    reasons = refusals(meta, device, runtime)
    if reasons:
        raise HwnasError(f"{where}: predictor of another device or runtime ({'; '.join(reasons)}); use a predictor "
                         f"of {device.name}")
    found = differences(meta, device, runtime)
    notes = [f"fitted on another machine or runtime ({'; '.join(found)})"] if found else []
    notes += [scale_note(meta)] if scale_note(meta) else []
    return f"{where}: {'; '.join(notes)}" if notes else None


def scale_note(meta: PredictorMeta) -> str | None:
    """Why a predictor's figures are not on ``hwnas bench``'s warm scale (None: they are, or the file cannot say:
    no fingerprint, e.g. fitted from a CSV)."""
    from hwnas.runtimes.paired import WARM

    if not meta.fingerprint or meta.turns == WARM:
        return None
    return ("its training networks were timed with cold turns (the first run after the reference's turn; fitted "
            "before warm turns or with turn_warmup_runs=0), not on hwnas bench's warm scale")


def fits_here(path: Path, device: DeviceProfile) -> bool:
    """Whether the predictor file at ``path`` was fitted for ``device`` on this machine (or does not say where);
    False for a file that cannot be read (loading it then says why)."""
    try:
        meta = read_meta(path)
        return check_origin(meta, path, device) is None
    except HwnasError:
        return False


def read_meta(path: Path) -> PredictorMeta:
    """A predictor file's ``meta`` alone (the model is not built: a kernel predictor's boosters take a while)."""
    from hwnas.io import read_json_file

    data = read_json_file(path, "predictor file")
    if not isinstance(data, dict):
        raise HwnasError(f"{path}: not a predictor (expected a JSON object)")
    return PredictorMeta.from_dict(data.get("meta"), str(path))


def how_to_build(device: str, space: SearchSpace | None) -> str:
    """The commands that make ``device`` a predictor on this machine: for an architecture of ``space``, a
    measurement set and a calibrated predictor fitted on it where the default lookup finds it; for any model, a
    kernel predictor."""
    kernel = f"`hwnas predictor build --kind kernel --device {device}`"
    if space is None:
        return f"build one for this machine with {kernel}"
    from hwnas.latency.predictors.locate import user_predictor_path
    from hwnas.spaces import get_space

    flags = f"--space {space.name} --resolution {space.resolution}"
    if space.num_classes != get_space(space.name, space.resolution).num_classes:
        flags += f" --num-classes {space.num_classes}"
    out = user_predictor_path(device, "calibrated", space)
    return (f"fit one on this machine with `hwnas measure --device {device} {flags} --out SET.json && hwnas "
            f"predictor fit {flags} --set SET.json --out {out}` (or {kernel} for any model)")


def _library_here(package: str, runtime: Mapping[str, Any] | None) -> str | None:
    """The version of the runtime's own ``package`` here: ``runtime``'s when given, else the installed one (None:
    not installed, so the release line is not compared; predicting does not run the runtime)."""
    from importlib import metadata

    from hwnas.runtimes.fingerprint import runtime_library

    if runtime is not None:
        library = runtime_library(runtime)
        return library[1] if library is not None and library[0] == package else None
    try:
        return metadata.version(package)
    except (metadata.PackageNotFoundError, ValueError):
        return None
