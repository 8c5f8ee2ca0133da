"""whaleid core: hook specs, plugin manager, config, metric, retrieval and the training runner.

`core` owns no model; every swappable part is a plugin (see `plugins/`).
"""

__version__ = "0.1.0"
