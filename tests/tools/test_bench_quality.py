"""The quality benchmark: the bare loop trains on exactly the runner's images for as many steps."""

import json

import pandas as pd
import pytest

from tools.bench import quality as bench_quality


def test_bench_quality_end_to_end_on_tiny(tmp_path, capsys):
    out = tmp_path / "bench"
    bench_quality.main(["--preset", "tiny", "--config", "configs/smoke.yaml", "--variants", "base", "--epochs", "2",
                        "--data-dir", str(tmp_path / "data"), "--out", str(out), "--threads", "1"])
    table = capsys.readouterr().out
    assert "| base | 1 |" in table and "ours / bare ImageNet" in table
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    ours = next(r for r in rows if r["kind"] == "ours")
    bare = next(r for r in rows if r["kind"] == "bare" and r["arm"] == "scratch")
    imagenet = next(r for r in rows if r["kind"] == "bare" and r["arm"] == "pretrained")
    assert ours["bare_key"] == bare["key"] and imagenet["key"] == bare["key"] + "/pretrained"
    assert imagenet["steps"] == bare["steps"] and imagenet["images"] == bare["images"]
    assert 0 <= ours["mAP"] <= 1 and 0 <= bare["mAP"] <= 1 and ours["random_mAP"] > 0
    assert 0 <= ours["fused_mAP"] <= 1 and ours["fusion"]["a"] >= 0 and "ours + local_match" in table
    # identical training images and steps
    run = out / "runs" / "default-base-s0"
    split = pd.read_csv(run / "split.csv", dtype=str)
    files, labels = bench_quality.bare_inputs(tmp_path / "data" / "tiny" / "base", run)
    meta = pd.read_csv(tmp_path / "data" / "tiny" / "base" / "train" / "metadata.csv", dtype=str)
    train_ids = list(split[split.role == "train"].image_id)
    assert [f.split("/")[-1] for f in files] == [p.split("/")[-1] for p in meta.set_index("image_id").loc[train_ids, "path"]]
    assert bare["images"] == len(train_ids) == len(files)
    whale_of_class = pd.Series(list(split[split.role == "train"].whale_id), index=labels)
    assert whale_of_class.groupby(level=0).nunique().max() == 1  # one whale per class index
    assert bare["steps"] == ours["steps"] > 0
    # a second call finds both results and trains nothing
    bench_quality.main(["--preset", "tiny", "--config", "configs/smoke.yaml", "--variants", "base", "--epochs", "2",
                        "--data-dir", str(tmp_path / "data"), "--out", str(out), "--threads", "1"])
    assert len((out / "results.jsonl").read_text().splitlines()) == 3


def test_bench_quality_scores_the_global_ranking_beside_a_config_that_fuses(tmp_path, capsys):
    """A config naming local_match (the default's chain) is fitted by the runner; the bench scores the same
    weights without it beside it, so its two columns keep their meaning."""
    out = tmp_path / "bench"
    chain = "postprocess=[{name: knn, top_k: 25}, {name: local_match, shortlist: 25, top_k: 20, max_side: 256}]"
    bench_quality.main(["--preset", "tiny", "--config", "configs/smoke.yaml", "--variants", "base", "--epochs", "2",
                        "--data-dir", str(tmp_path / "data"), "--out", str(out), "--threads", "1", "--no-bare",
                        "--label", "fused", "--set", chain])
    ours = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()][0]
    assert 0 <= ours["mAP"] <= 1 and 0 <= ours["fused_mAP"] <= 1
    run = out / "runs" / "fused-base-s0"
    assert (run / "postprocess_fit.json").is_file() and (run / "submission_global.zip").is_file()
    import zipfile

    manifest = json.loads(zipfile.ZipFile(run / "submission_global.zip").read("manifest.json"))
    assert [s["name"] for s in manifest["postprocess"]] == ["knn"] and manifest["postprocess"][0]["top_k"] == 20


def test_the_local_fusion_arms_rank_one_trained_run_each_way_and_resume(smoke_run, tiny_survey, tmp_path, capsys):
    """``tools.bench.local_fusion`` on a bench of one trained run: the global arm and a fitted SIFT arm, each
    packed for this installation and scored on the test whales; run again, it scores nothing twice."""
    import json
    import shutil

    from tools.bench import local_fusion

    bench = tmp_path / "bench"
    shutil.copytree(smoke_run, bench / "runs" / "default-base-s0", ignore=shutil.ignore_patterns("checkpoint"))
    (bench / "results.jsonl").write_text(json.dumps({"kind": "ours", "label": "default", "variant": "base",
                                                     "seed": 0}) + "\n")
    (tmp_path / "data" / "bench").mkdir(parents=True)
    (tmp_path / "data" / "bench" / "base").symlink_to(tiny_survey, target_is_directory=True)
    argv = ["--bench", str(bench), "--data-dir", str(tmp_path / "data"), "--arms", "global", "sift",
            "--shortlist", "10"]
    assert local_fusion.main(argv) == 0
    rows = [json.loads(line) for line in (bench / "local_fusion.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["global", "sift"] and all(0 < r["mAP"] <= 1 for r in rows)
    assert rows[1]["ms_per_pair"] > 0 and rows[1]["fusion"]["b"] >= 0 and "fusion" not in rows[0]
    printed = capsys.readouterr().out
    ratio = rows[1]["mAP"] / rows[0]["mAP"]
    assert f"| base | sift | 1 | {rows[1]['mAP']:.4f} | {ratio:.3f}x |" in printed, printed
    assert local_fusion.main(argv) == 0  # everything scored already: nothing is fitted or checked again
    assert len((bench / "local_fusion.jsonl").read_text().splitlines()) == 2
    with pytest.raises(SystemExit) as said:  # no trained run of that label: said, with what to run first
        local_fusion.main(argv[:2] + ["--label", "other"])
    assert said.value.code == 2 and "tools.bench.quality first" in capsys.readouterr().err
