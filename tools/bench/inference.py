"""Submission inference, measured against plain baselines side by side in one run.

    python -m tools.bench.inference --zip submission/submission.zip --data data/synthetic/full/test [--images 600]

1. Embedding: ``core.inference.embed_with_bundle`` (what main.py runs: DataLoader workers, flip TTA)
   against a bare loop over the same images (PIL open, squash resize, forward + flipped forward);
   both build their model inside the timing, read from a warm page cache after a warm-up pass, and
   alternate order over three rounds.
2. Retrieval and postprocess on a competition-shaped load (10 scenarios, 4,419 queries, 3,400 images,
   random 512-d unit embeddings): ``core.retrieval.predict`` with the knn step, against the seed's
   approach (a pandas DataFrame dot product, then a per-query sort of its row).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def bench_embedding(zip_path: Path, data: Path, max_images: int, workers: int, rounds: int = 3) -> dict:
    """Median images/s of main.py's embedding (model build included) and of a bare loop, alternating."""
    from core.bundle import opened
    from core.images import load_rgb, squash_to_tensor
    from core.inference import embed_with_bundle, image_files

    meta = pd.read_csv(data / "metadata.csv", dtype=str)
    files = image_files(data, list(meta.image_id[:max_images]))
    for f in files:  # both sides read from a warm page cache
        Path(f).read_bytes()
    with opened(zip_path) as unpacked:  # the zip's own plugin modules, on sys.path while it runs
        bundle, manifest = unpacked.folder, unpacked.manifest
        n_models = len(manifest["models"])
        unpacked.registries  # built once from the bundle's plugin modules; names any the working tree shadowed

        def ours(files=files) -> float:
            started = time.perf_counter()
            embed_with_bundle(bundle, manifest, files, torch.device("cpu"), workers)
            return len(files) * n_models / (time.perf_counter() - started)

        def bare(files=files) -> float:
            started = time.perf_counter()
            model, cfg = unpacked.model(0)
            size, batch = list(cfg.data.image_size), int(cfg.infer.batch_size)
            with torch.no_grad():
                for i in range(0, len(files), batch):
                    x = torch.stack([squash_to_tensor(load_rgb(f), size) for f in files[i:i + batch]])
                    model(x)
                    model(torch.flip(x, dims=[3]))
            return len(files) / (time.perf_counter() - started)

        ours(files[:64])  # warm-up: the first forward passes of a process are slower
        bare(files[:64])
        speeds = {"ours": [], "bare": []}
        for r in range(rounds):
            order = (("ours", ours), ("bare", bare)) if r % 2 == 0 else (("bare", bare), ("ours", ours))
            for name, fn in order:
                speeds[name].append(fn())
    o, b = float(np.median(speeds["ours"])), float(np.median(speeds["bare"]))
    return {"images": len(files), "models": n_models, "workers": workers, "ours_img_s": round(o, 1),
            "plugins_not_from_the_zip": unpacked.foreign,
            "bare_img_s_one_model": round(b, 1), "ratio": round(o / b, 3),
            "rounds": {k: [round(x, 1) for x in v] for k, v in speeds.items()}}


def competition_load(seed: int = 0, queries: int = 4419, images: int = 3400, scenarios: int = 10, dim: int = 512):
    """Scenarios shaped like the hidden test set, over random unit embeddings."""
    from core.scenarios import Scenario

    rng = np.random.default_rng(seed)
    ids = np.array([f"img{i:05d}" for i in range(images)], dtype=object)
    emb = rng.normal(size=(images, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out, per = [], np.diff(np.linspace(0, queries, scenarios + 1).astype(int))
    for s, nq in enumerate(per):
        db = ids[np.sort(rng.choice(images, int(rng.integers(int(images * 0.35), images)), replace=False))]
        q = rng.choice(db if s % 2 == 0 else ids, nq, replace=nq > len(ids))  # some queries sit in their database
        out.append(Scenario(f"scenario{s:02d}", pd.DataFrame({"query_id": [f"scenario{s:02d}-{x}-{k}" for k, x in enumerate(q)],
                                                              "query_image_id": q}),
                            pd.DataFrame({"database_image_id": db})))
    return out, emb, {img: i for i, img in enumerate(ids)}


def seed_retrieval(scenarios, emb: np.ndarray, index: dict) -> pd.DataFrame:
    """The seed's way: a pandas dot product per scenario, then each query's row sorted on its own."""
    frames = []
    table = pd.DataFrame(emb, index=list(index))
    for sc in scenarios:
        q = table.loc[sc.queries.query_image_id]
        q.index = sc.queries.query_id
        sims = q.dot(table.loc[sc.database.database_image_id].T)
        for qid, img in zip(sc.queries.query_id, sc.queries.query_image_id):
            row = sims.loc[qid]
            row = row[row.index != img].sort_values(ascending=False).head(20)
            frames.append(pd.DataFrame({"query_id": qid, "database_image_id": row.index,
                                        "score": np.clip((row.to_numpy() + 1) * 0.49, 0, 0.9999)}))
    return pd.concat(frames, ignore_index=True)


def bench_retrieval(rounds: int = 3) -> dict:
    from core.retrieval import predict
    from plugins.postprocess.knn import KnnStep

    scenarios, emb, index = competition_load()
    times = {"ours_torch": [], "ours_faiss": [], "seed_pandas": []}
    for _ in range(rounds):
        for name, fn in (("ours_torch", lambda: predict(scenarios, emb, index, [KnnStep(backend="torch")])),
                         ("ours_faiss", lambda: predict(scenarios, emb, index, [KnnStep(backend="faiss")])),
                         ("seed_pandas", lambda: seed_retrieval(scenarios, emb, index))):
            started = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - started)
            if name == "ours_torch":
                ours_rows = result
            if name == "seed_pandas":
                seed_rows = result
    same = (ours_rows.groupby("query_id").database_image_id.agg(frozenset)
            == seed_rows.groupby("query_id").database_image_id.agg(frozenset)).mean()
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"queries": int(sum(len(s.queries) for s in scenarios)), "images": len(index), "scenarios": len(scenarios),
            **{f"{k}_s": round(v, 3) for k, v in med.items()},
            "speedup_torch_vs_seed": round(med["seed_pandas"] / med["ours_torch"], 1),
            "speedup_faiss_vs_seed": round(med["seed_pandas"] / med["ours_faiss"], 1),
            "same_top20_share": round(float(same), 4)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--zip", type=Path, help="a built submission (skip the embedding part without it)")
    p.add_argument("--data", type=Path, help="test data folder for the embedding part")
    p.add_argument("--images", type=int, default=600, help="images to embed on each side")
    p.add_argument("--workers", type=int, default=None, help="main.py's image loading processes (default: its own)")
    args = p.parse_args(argv)
    out = {}
    if args.zip and args.data:
        out["embedding"] = bench_embedding(args.zip, args.data, args.images, args.workers)
        e = out["embedding"]
        print(f"embedding: main.py path {e['ours_img_s']} img/s vs bare forward {e['bare_img_s_one_model']} img/s "
              f"-> ratio {e['ratio']}")
    r = out["retrieval"] = bench_retrieval()
    print(f"retrieval ({r['scenarios']} scenarios, {r['queries']} queries, {r['images']} images): "
          f"ours torch {r['ours_torch_s']} s, ours faiss {r['ours_faiss_s']} s, seed pandas {r['seed_pandas_s']} s "
          f"-> {r['speedup_torch_vs_seed']}x / {r['speedup_faiss_vs_seed']}x faster; same top-20 {r['same_top20_share']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
