"""The public Python API: the CLI tour as functions, objects in and typed results out (``import hwnas`` gives every
name below, loaded on first use).

``load_device`` and ``get_space`` make the objects the rest takes; ``profile`` measures a latency table,
``measure`` a set of whole networks, ``fit_predictor`` fits a predictor on sets (nothing written; ``.save(path)``
keeps it), ``load_predictor`` reads one by path or name; every predictor answers ``predict(model)``; ``search``
runs a latency-targeted search with any latency model and returns a :class:`SearchResult`; ``export`` writes,
verifies and measures its artifacts and returns an :class:`ExportReport`.

Modules: ``latency`` (devices, spaces, tables, sets, predictors), ``runs`` (search and export), ``results`` (the
typed results), ``_checks`` (the arguments, checked before any work: one :class:`~hwnas.errors.HwnasError` line
naming the function and the parameter). Progress bars are off unless ``progress=True``.
"""

from hwnas.api.latency import fit_predictor, get_space, load_device, load_predictor, measure, predictor_names, profile
from hwnas.api.results import ExportReport, SearchResult
from hwnas.api.runs import export, search

__all__ = ["ExportReport", "SearchResult", "export", "fit_predictor", "get_space", "load_device", "load_predictor",
           "measure", "predictor_names", "profile", "search"]
