"""Whales recovered from a competition's ``test_labels.csv``, for scoring on data whose metadata carries no
``whale_id``: a query and its database matches are one whale (the groups joined by union-find)."""

from __future__ import annotations

from pathlib import Path


def identities_from_labels(test_dir, labels_csv) -> dict:
    """image id -> whale id for the photos of a competition test set, from its ``test_labels.csv``: a query and
    its database matches are one whale (the groups joined by union-find); a photo that no label links is a whale
    of its own. The ids are neutral, ``test-whale-<n>`` numbered in the order of the groups' first image ids:
    nothing in a whale's name points at one of its photos."""
    import pandas as pd

    from core.data import read_csv
    from core.scenarios import read_scenarios

    test_dir = Path(test_dir)
    images = read_csv(test_dir / "metadata.csv", ["image_id"], "metadata")["image_id"].astype(str)
    labels = read_csv(Path(labels_csv), ["query_id", "database_image_id"], "labels")
    query_image = pd.concat([s.queries for s in read_scenarios(test_dir)]).drop_duplicates("query_id")
    image_of = dict(zip(query_image["query_id"].astype(str), query_image["query_image_id"].astype(str)))
    parent = {i: i for i in images}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for row, (q, d) in enumerate(zip(labels["query_id"].astype(str), labels["database_image_id"].astype(str))):
        a = image_of.get(q)
        if a is None or a not in parent or d not in parent:
            raise ValueError(f"{labels_csv}: row {row + 2} names {q if a is None or a not in parent else d}, "
                             f"which is not in {test_dir}")
        ra, rb = root(a), root(d)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = sorted({root(i) for i in images})
    width = len(str(len(roots)))
    number = {r: f"test-whale-{n:0{width}d}" for n, r in enumerate(roots, 1)}
    return {i: number[root(i)] for i in images}
