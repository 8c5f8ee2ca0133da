"""The benchmarks' baselines compute what they claim to, so their ratios compare like with like."""

import numpy as np

from core.metric import validate_predictions
from core.retrieval import predict
from plugins.postprocess.knn import KnnStep
from tools.bench.inference import competition_load, seed_retrieval


def test_seed_style_retrieval_matches_ours_on_a_small_load():
    scenarios, emb, index = competition_load(seed=1, queries=60, images=300, scenarios=3, dim=16)
    ours = predict(scenarios, emb, index, [KnnStep(backend="torch")])
    seed = seed_retrieval(scenarios, emb, index)
    validate_predictions(ours)
    validate_predictions(seed)
    a = ours.groupby("query_id").database_image_id.agg(frozenset)
    b = seed.groupby("query_id").database_image_id.agg(frozenset)
    assert (a == b).all() and len(a) == 60
    assert np.allclose(np.sort(ours.score.to_numpy()), np.sort(seed.score.to_numpy()), atol=1e-5)


def test_bench_train_runs_one_tiny_round(capsys):
    from tools.bench.train_step import main

    main(["--size", "32", "--batch", "4", "--steps", "1", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "ratio ours/bare" in out


def test_the_local_match_cost_bench_prints_detectors_side_by_side(tiny_survey, capsys):
    from tools.bench import local_match

    local_match.main(["--data", str(tiny_survey / "test"), "--photos", "6", "--pairs", "10", "--detector", "sift",
                      "orb", "--max-side", "256"])
    out = capsys.readouterr().out
    assert "| stage | sift | orb | orb / sift |" in out and "keypoints a photo: sift" in out
    row = next(line for line in out.splitlines() if line.startswith("| a pair, 2 threads"))
    sift, orb, ratio = (float(c.strip().rstrip("x")) for c in row.strip("|").split("|")[1:])
    assert sift > 0 and orb > 0  # the cells are rounded to 0.01, the ratio taken before rounding
    assert (orb - 0.005) / (sift + 0.005) - 0.005 <= ratio <= (orb + 0.005) / max(sift - 0.005, 1e-9) + 0.005
