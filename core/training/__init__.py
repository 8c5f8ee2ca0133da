"""The training package: everything ``core/run.py`` trains and evaluates with, and nothing a bundle needs.

``core/`` holds the inference core (config, plugins, hook specs, data, images, model, weights, retrieval,
scenarios, metric, inference, logs, progress): what ``submission/main.py`` runs in the competition's
runtime. This package sits beside it and is never bundled: no inference module imports it (a test checks
the import graph), and ``submission.build`` refuses a bundled file that does.

- ``loop``: the train step, one epoch, the optimizer and its parameter groups, the lr schedule.
- ``checkpoint``: the crash-safe checkpoint protocol and resuming.
- ``evaluate``: validation with the competition metric, and the random baseline.
- ``health``: is a run learning?
- ``sampling``: training order and augmentation as functions of (seed, epoch, sample).
- ``runs``: run folders, written and read back (config, split, history, metrics, oof, cv.json, seeds.json).
"""
