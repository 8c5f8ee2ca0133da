"""Postprocess ``database_augmentation``: DBA alone (Arandjelovic and Zisserman, CVPR 2012). Each database
embedding becomes the unit-length sum of itself and its ``k`` nearest other database embeddings weighted
by ``similarity ** alpha``; a query that is itself in the database starts from its augmented row. Place
before ``knn``. Cost: N x N similarities, computed 2,048 rows at a time. The same arithmetic as
``expand`` with ``query_k: 0``."""

from __future__ import annotations

import numpy as np

from core.hookspecs import hookimpl
from plugins.postprocess.expand import ExpandStep


class DatabaseAugmentation(ExpandStep):
    def __init__(self, k: int = 1, alpha: float = 3.0):
        if int(k) < 0:
            raise ValueError(f"postprocess 'database_augmentation' k must be >= 0, got {k}")
        super().__init__(db_k=int(k), query_k=0, alpha=float(alpha))


@hookimpl
def register_postprocess(register):
    register("database_augmentation", DatabaseAugmentation)
