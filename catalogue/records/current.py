"""The catalogue as it stands now, for anything that writes it out: every photo with its identity after the
decision log's merges and the reviewed photos not applied yet (read through the store's methods)."""

from __future__ import annotations


def identities(cat):
    """The photos of catalogue ``cat`` with their identity now (no embeddings): the searchable photos and the
    reviewed photos not applied yet, ``current_whale`` following merges."""
    import pandas as pd

    table, _ = cat.photos()
    state, known = cat.state(), set(table["image_id"])
    table["current_whale"] = [state["alias"].get(w, w) for w in table["whale_id"]]
    decided = pd.DataFrame([{"image_id": q, "whale_id": None, "encounter_id": p["encounter_id"],
                             "viewpoint": p["viewpoint"], "date": p["date"], "path": p["path"], "batch": p["batch"],
                             "latitude": p["latitude"], "longitude": p["longitude"], "species": p.get("species"),
                             "current_whale": state["assigned"][q]}
                            for p in cat.proposals() for q in [p["image_id"]]
                            if q in state["assigned"] and q not in known])
    return pd.concat([table, decided], ignore_index=True) if len(decided) else table
