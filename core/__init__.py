"""whaleid core: the inference core (config, hook specs, plugin manager, data, model, retrieval, metric,
inference) that a submission bundle carries, and beside it ``core.training`` and the runner ``core/run.py``,
which no bundle carries.

`core` owns no model; every swappable part is a plugin (see `plugins/`).
"""

__version__ = "0.4.0"
