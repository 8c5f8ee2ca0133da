"""From ranked photos to named whales: a photo-ID catalogue in one SQLite file (``store``), identity-level
matching (``match``) and calibrated "same whale" probabilities with open-set scores for "new whale" decisions
(``calibrate``). Built on the inference core; never part of a submission bundle."""
