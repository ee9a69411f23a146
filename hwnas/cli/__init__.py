"""The ``hwnas`` command line: thin — parse arguments, call a layer, print (one JSON object with ``--json``).

- ``app``: :func:`main` and the error contract (one line on stderr, ``{"error": ...}`` on stdout with ``--json``,
  exit status 2; usage errors the same).
- ``parser``: the argument parser; each subcommand's handler is this package's ``cmd_NAME``.
- ``listing`` (devices, spaces, tables), ``profiling`` (profile, sample, bench, estimate, validate),
  ``predictors`` (measure, predictor fit|eval, predict), ``building`` (predictor build), ``search``, ``export``:
  one module per command group, each handler returning a dict (``_text`` is its human form).
- ``common``: what several commands share (``--protocol``, ``--threads``, progress bars, the foreign-table warning).
"""

from hwnas.cli.app import main
from hwnas.cli.building import cmd_predictor_build
from hwnas.cli.common import progress as _progress  # noqa: F401 (tests use it by its former name)
from hwnas.cli.export import cmd_export
from hwnas.cli.listing import cmd_devices, cmd_spaces, cmd_tables
from hwnas.cli.parser import build_parser
from hwnas.cli.predictors import cmd_measure, cmd_predict, cmd_predictor_eval, cmd_predictor_fit
from hwnas.cli.profiling import cmd_bench, cmd_estimate, cmd_profile, cmd_sample, cmd_validate
from hwnas.cli.search import _quietest, _verdict_text, attempt_spread, cmd_search  # noqa: F401 (tests use them)

__all__ = ["main", "build_parser", "cmd_bench", "cmd_devices", "cmd_estimate", "cmd_export", "cmd_measure",
           "cmd_predict", "cmd_predictor_build", "cmd_predictor_eval", "cmd_predictor_fit", "cmd_profile",
           "cmd_sample", "cmd_search", "cmd_spaces", "cmd_tables", "cmd_validate", "attempt_spread"]
