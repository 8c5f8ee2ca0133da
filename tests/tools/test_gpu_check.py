"""tools.bench.gpu_check: the GPU check's every stage runs on the CPU at tiny sizes (--dry), so it cannot rot before a
GPU is lent; its help says what it measures and how long it may take."""

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_gpu_check_help_says_what_and_how_long():
    out = subprocess.run([sys.executable, "-m", "tools.bench.gpu_check", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    for words in ("images/s", "peak GPU memory", "--multi_gpu", "4,419 queries", "--time-limit", "default 600", "--dry"):
        assert words in " ".join(out.split()), words


def test_gpu_check_refuses_a_machine_without_cuda_unless_dry(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, "-m", "tools.bench.gpu_check", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--dry" in proc.stderr


def test_gpu_check_dry_runs_every_stage(tmp_path):
    from tools.bench.gpu_check import recipe_configs

    proc = subprocess.run([sys.executable, "-m", "tools.bench.gpu_check", "--dry", "--out", str(tmp_path), "--time-limit", "900"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["dry"] and data["stages"]["env"]["torch"]
    rows = {r["config"]: r for r in data["stages"]["recipes"]}
    assert set(rows) == {str(p.relative_to(ROOT)) for p in recipe_configs()} and len(rows) == 9
    for row in rows.values():
        assert "error" not in row and row["losses_finite"] and row["images_per_s"] > 0, row
        assert row["projected_training_h"] > 0 and row["image_size"] == [32, 32]
    bundle = data["stages"]["bundle"]
    assert bundle["problems"] == [] and bundle["format"] == "valid" and len(bundle["embed_s_per_model"]) == 3
    assert bundle["rank_s"] is not None and bundle["queries"] == 60
    assert "multi_gpu" in data["skipped"]
    cat = data["stages"]["catalogue"]
    assert cat["cpu_photos_per_s"] > 0 and cat["cpu_all_read"] and cat["device"] == "cpu"
    table = (tmp_path / "gpu_check.md").read_text()
    assert "seed_3rd_place/convnext_large.yaml" in table and "dry run" in table
