"""whaleid core: three kinds of module, told apart by who imports them.

- **The inference core**, which a submission bundle carries (``submission.build`` packs the modules ``main.py``
  and the bundled plugins import, by their imports, not by a list): ``config``, ``hookspecs``, ``plugins``,
  ``data``, ``images``, ``model``, ``weights``, ``retrieval``, ``search``, ``scenarios``, ``metric``,
  ``inference``, ``logistic`` (the local-match step's fit), ``compat`` (the 2022 runtime's torch), ``logs``
  and ``progress``. It runs on the 2022 runtime's packages.
- **Training**: ``core.training`` and the runner ``core/run.py`` (``accelerate launch core/run.py``), which no
  bundle carries (the builder refuses a bundle that would import them).
- **Helpers of the project around a bundle**, never shipped: ``bundle`` (the one opener of a bundle zip),
  ``contracts`` (the plugin contracts as code), ``imports`` (the one reader of import statements), ``ann`` (the
  catalogue's approximate index) and ``explain`` (pair heatmaps for the report and the review page).

``tests/test_structure.py`` holds these lines: the inference core reaches neither training nor the helpers.
``core`` owns no model; every swappable part is a plugin (see ``plugins/``).
"""

__version__ = "0.4.0"
