"""The held-out photos calibration is fitted on: time-aware open sets of a run's held-out whales.

``fold_split`` makes one fold's open set as WildlifeDatasets' time-aware splits do: the fold's held-out photos
from their latest year are queries, every other photo of the catalogue (embedded by that fold's model, which
never trained on the fold's whales) the reference, so a held-out whale first seen in that year is "new" and one
seen before is "known". ``pooled`` pools the folds' open sets, with each query's fold, keypoint inliers and
keypoint count (with local evidence) and the verifier's feature rows. ``encounter_groups`` and
``pool_by_encounter`` pool the queries by encounter as ``whaleid identify`` does, for the fit that identify uses
when it decides by encounter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from catalogue.deciding.match import rank_whales
from catalogue.deciding.open_set import NEW


def last_year_cut(dates) -> str:
    """The first day of the latest year among ``dates`` (YYYY-...): photos from then on are the open set's queries."""
    years = sorted({str(d)[:4] for d in dates if str(d)[:4].isdigit()})
    if len(years) < 2:
        raise ValueError(f"a time-aware split needs photos from two years or more; found {years or 'no dates'}")
    return f"{years[-1]}-01-01"


def open_set(table, emb: np.ndarray, query_mask: np.ndarray, how: str = "max", top_n: int = 5,
             viewpoints: bool = True) -> dict:
    """Queries = rows of ``query_mask``, reference = every other row: per query, its ranked candidates, its truth
    (its whale when the reference has it, else NEW), its real whale id and its viewpoint. ``viewpoints=False``
    ignores viewpoints (with ``how="max"``: the plain top-1 cosine baseline)."""
    q, ref = np.flatnonzero(query_mask), np.flatnonzero(~query_mask)
    known = set(table["whale_id"].iloc[ref])
    ranked = rank_whales(emb[q], list(table["viewpoint"].iloc[q]) if viewpoints else None, emb[ref],
                         list(table["whale_id"].iloc[ref]),
                         list(table["image_id"].iloc[ref]), list(table["viewpoint"].iloc[ref]), how=how, top_n=top_n)
    real = list(table["whale_id"].iloc[q])
    return {"ranked": ranked, "real": real, "truth": [w if w in known else NEW for w in real],
            "views": list(table["viewpoint"].iloc[q]), "image_ids": list(table["image_id"].iloc[q])}


def fold_split(table, emb: np.ndarray, held_out: set, source: str, how: str = "max") -> dict:
    """One fold's time-aware open set: its held-out photos from their latest year are queries, every other photo
    of the catalogue (embedded by ``emb``, that fold's model) the reference."""
    in_fold = table["image_id"].isin(held_out).to_numpy()
    if not in_fold.any():
        raise ValueError(f"the catalogue holds none of the {len(held_out)} held-out photos of {source or 'the run'}: "
                         "build it from the run's training data")
    cut = last_year_cut(table["date"][in_fold])
    mask = in_fold & (table["date"].astype(str) >= cut).to_numpy()
    split = open_set(table, emb, mask, how=how)
    split["plain"] = open_set(table, emb, mask, how="max", viewpoints=False)["ranked"]  # top-1 cosine baseline
    split["dates"] = list(table["date"].astype(str)[mask])
    encounters = table["encounter_id"][mask] if "encounter_id" in table else [None] * int(mask.sum())
    split["encounters"] = [str(e) if pd.notna(e) and str(e) != "" else None for e in encounters]
    split["reference"] = table[~mask]
    split["cut"], split["source"] = cut, source
    return split


def pooled(table, folds: list, how: str = "max", evidence=None) -> dict:
    """The folds' open sets pooled (``fold_split`` per fold; ``folds``: ``(source, embeddings of the catalogue by
    that fold's model, that fold's held-out photo ids)``), with the fold of each query, the inliers of every
    candidate and each query's keypoint count (with ``evidence``), and the verifier's feature rows."""
    from catalogue.deciding import verifier as vf

    splits = [fold_split(table, emb, held_out, source, how) for source, emb, held_out in folds]
    split = {k: [x for s in splits for x in s[k]] for k in ("ranked", "real", "truth", "views", "image_ids", "plain",
                                                              "dates", "encounters")}
    split["fold"] = [k for k, s in enumerate(splits) for _ in s["truth"]]
    split["splits"], split["counts"], split["keypoints"] = splits, None, None
    if evidence is not None:
        from catalogue.deciding.local import evidence_for

        path_of = dict(zip(table["image_id"].astype(str), table["path"]))
        files = [path_of.get(i) for i in split["image_ids"]]
        split["counts"] = evidence_for(evidence, split["ranked"], files, split["views"], table)
        split["keypoints"] = evidence.keypoint_counts(files)
    rows, start, counts, keypoints = [], 0, split["counts"], split["keypoints"]
    for s in splits:  # each fold's candidates described against that fold's reference photos
        size = len(s["truth"])
        rows += vf.features(s["ranked"], counts[start:start + size] if counts is not None else None, s["views"],
                            s["dates"], vf.Context(s["reference"]), keypoints[start:start + size] if keypoints else None)
        start += size
    split["rows"], split["groups"] = rows, vf.default_groups(len(split["truth"]), split["fold"])
    return split


def encounter_groups(split: dict) -> list:
    """The pooled queries' indices per encounter (within a fold: a fold's model scores its own queries), when every
    query has an encounter id and some encounter has two or more of them; else [] (pooling would change nothing)."""
    encounters = split.get("encounters") or []
    if not encounters or any(e is None for e in encounters):
        return []
    groups: dict = {}
    for i, (fold, e) in enumerate(zip(split["fold"], encounters)):
        groups.setdefault((fold, e), []).append(i)
    return list(groups.values()) if any(len(g) > 1 for g in groups.values()) else []


def pool_by_encounter(ranked, groups: list) -> list:
    """``ranked`` with each query's candidates replaced by its encounter's (``pool_encounter``), as identify pools."""
    from catalogue.deciding.match import pool_encounter

    out = list(ranked)
    for idx in groups:
        pooled = pool_encounter([ranked[i] for i in idx], top_n=max(len(ranked[i]) for i in idx))
        for i in idx:
            out[i] = pooled
    return out
