"""Query/database scenarios like the competition's, built from a table with identities.

Used for validation (scenarios from the held-out fold) and by the synthetic survey's test set.
Kinds: ``top_all`` (top vs top), ``top_same_year`` (top vs top within the latest year),
``top_later_vs_earlier`` (top views of the latest year against earlier years), ``top_vs_lateral``,
``lateral_vs_top`` and ``lateral_vs_lateral``. A query without any true match in its database is
dropped; a scenario left without queries is skipped and the reason logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

LATERAL = ("left", "right")
DEFAULT_KINDS = ("top_all", "top_same_year", "top_later_vs_earlier", "top_vs_lateral", "lateral_vs_top",
                 "lateral_vs_lateral")


@dataclass
class Scenario:
    name: str
    queries: pd.DataFrame  # query_id, query_image_id
    database: pd.DataFrame  # database_image_id
    labels: pd.DataFrame | None = None  # query_id, database_image_id: every true match


def distinct(sc: Scenario) -> tuple[pd.DataFrame, list[str]]:
    """A scenario's queries and database ids, each listed once (first occurrence kept)."""
    return sc.queries.drop_duplicates("query_id"), list(dict.fromkeys(sc.database["database_image_id"]))


def _year(df: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(df["date"], errors="coerce").dt.year


def _pick(df: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    top, lat = df[df.viewpoint == "top"], df[df.viewpoint.isin(LATERAL)]
    if kind == "top_all":
        return top, top
    if kind == "lateral_vs_lateral":
        return lat, lat
    if kind == "top_vs_lateral":
        return top, lat
    if kind == "lateral_vs_top":
        return lat, top
    years = _year(top)
    if years.isna().all():
        return top.iloc[:0], top.iloc[:0]
    latest = years.max()
    if kind == "top_same_year":
        same = top[years == latest]
        return same, same
    if kind == "top_later_vs_earlier":
        return top[years == latest], top[years < latest]
    raise ValueError(f"unknown scenario kind {kind!r}; known: {', '.join(DEFAULT_KINDS)}")


def build_scenarios(df: pd.DataFrame, kinds=DEFAULT_KINDS, max_queries: int | None = None,
                    seed: int = 0, min_queries: int = 1) -> list[Scenario]:
    """Scenarios from ``df`` (image_id, viewpoint, date, whale_id). ``max_queries`` samples queries."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        q, db = _pick(df, kind)
        db_by_whale = db.groupby("whale_id")["image_id"].agg(list)
        rows_q, rows_l = [], []
        for img, whale in zip(q["image_id"], q["whale_id"]):
            matches = [m for m in db_by_whale.get(whale, []) if m != img]
            if matches:
                rows_q.append(img)
                rows_l.append(matches)
        if len(rows_q) < min_queries:
            log.info("scenario %s skipped: %d queries with a true match in the database", kind, len(rows_q))
            continue
        order = np.arange(len(rows_q))
        if max_queries is not None and len(order) > max_queries:
            order = np.sort(rng.choice(order, max_queries, replace=False))
        qids = [f"{kind}-{rows_q[i]}" for i in order]
        queries = pd.DataFrame({"query_id": qids, "query_image_id": [rows_q[i] for i in order]})
        labels = pd.DataFrame([(qid, m) for qid, i in zip(qids, order) for m in rows_l[i]],
                              columns=["query_id", "database_image_id"])
        database = pd.DataFrame({"database_image_id": list(db["image_id"])})
        out.append(Scenario(kind, queries, database, labels))
    return out


def write_scenarios(scenarios: list[Scenario], root: str | Path) -> pd.DataFrame:
    """Write the competition's ``query_scenarios.csv``, ``queries/<s>.csv``, ``databases/<s>.csv``;
    returns all labels (query_id, database_image_id)."""
    root = Path(root)
    (root / "queries").mkdir(parents=True, exist_ok=True)
    (root / "databases").mkdir(parents=True, exist_ok=True)
    rows = []
    for sc in scenarios:
        sc.queries.to_csv(root / "queries" / f"{sc.name}.csv", index=False)
        sc.database.to_csv(root / "databases" / f"{sc.name}.csv", index=False)
        rows.append((sc.name, f"queries/{sc.name}.csv", f"databases/{sc.name}.csv"))
    pd.DataFrame(rows, columns=["scenario_id", "queries_path", "database_path"]).to_csv(
        root / "query_scenarios.csv", index=False)
    labels = [sc.labels for sc in scenarios if sc.labels is not None]
    return pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(columns=["query_id", "database_image_id"])


def read_scenarios(root: str | Path, skip_broken: bool = False) -> list[Scenario]:
    """Read the competition's scenario files under ``root`` (errors name the file). With
    ``skip_broken`` a scenario whose queries or database file is missing or malformed is logged and
    left out; ``query_scenarios.csv`` itself must be readable."""
    from core.data import DataError, read_csv

    root = Path(root)
    index = read_csv(root / "query_scenarios.csv", ["scenario_id", "queries_path", "database_path"], "query_scenarios")
    out = []
    for row in index.itertuples():
        try:
            queries = read_csv(root / row.queries_path, ["query_id", "query_image_id"], "queries")
            database = read_csv(root / row.database_path, ["database_image_id"], "database")
        except DataError as exc:
            if not skip_broken:
                raise
            log.error("scenario %s left out: %s", row.scenario_id, exc)
            continue
        out.append(Scenario(row.scenario_id, queries, database))
    return out


def random_predictions(scenarios: list[Scenario], seed: int = 0, top_k: int = 20) -> pd.DataFrame:
    """A random-ranking baseline: for each query, ``top_k`` random database images, random scores."""
    rng = np.random.default_rng(seed)
    rows = []
    for sc in scenarios:
        db = sc.database["database_image_id"].to_numpy()
        for qid, img in zip(sc.queries["query_id"], sc.queries["query_image_id"]):
            cand = db[db != img]
            pick = rng.choice(cand, min(top_k, len(cand)), replace=False) if len(cand) else []
            rows += [(qid, d, float(s)) for d, s in zip(pick, rng.random(len(pick)))]
    return pd.DataFrame(rows, columns=["query_id", "database_image_id", "score"])
