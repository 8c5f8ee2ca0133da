"""From ranked photos to named whales: a photo-ID catalogue in one SQLite file, in rooms by job, each importing
only the rooms below it (``tests/test_structure.py`` holds the order):

- ``records``: the store and its log (all of the catalogue's SQL);
- ``embedding``: vectors from a bundle, re-embedding, the approximate index;
- ``deciding``: identify and its evidence (ranking, keypoints, calibration, verifier, operating points);
- ``review`` and ``exchange``: the review server; import from and export to the tools users come from;
- ``cli``: the ``whaleid`` console command over all of them.

Built on the inference core; never part of a submission bundle."""
