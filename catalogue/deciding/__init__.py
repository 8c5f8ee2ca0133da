"""Identify and its evidence: whale-level ranking of a photo's neighbours (``match``), keypoint evidence and its
fusion with the global score (``local``), the calibration fitted on held-out whales of every fold
(``out_of_fold``, ``calibration``, ``calibrators``), the verifier of a candidate whale (``verifier``), the
operating points that hold an error rate (``operating``), the open-set measures (``open_set``) and ``identify``
itself, a function of plain values that returns what the command prints. Uses the store (``records``) and the
vectors (``embedding``); the review server and the importers sit above it."""
