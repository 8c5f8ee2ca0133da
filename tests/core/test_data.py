"""Dataset plugin and bad input: folds, missing files, malformed metadata, odd images."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data import DataError, EvalImages, read_metadata
from core.images import ImageError, load_rgb
from core.plugins import build_registries
from core.scenarios import build_scenarios


@pytest.fixture(scope="module")
def belugas():
    return build_registries()["dataset"].factory("belugas")


def copy_train(tiny_survey, tmp_path):
    dst = tmp_path / "train"
    shutil.copytree(tiny_survey / "train", dst)
    return dst


@pytest.mark.parametrize("holdout", [True, False])
def test_folds_never_split_encounters_or_held_out_whales(tiny_survey, belugas, holdout):
    data = belugas(str(tiny_survey / "train"), [32, 32])
    seen = []
    for fold in range(3):
        train, val = data.split(3, fold, holdout, seed=0)
        assert len(train) + len(val) == len(data.metadata)
        assert not set(train.encounter_id) & set(val.encounter_id)
        if holdout:
            assert not set(train.whale_id) & set(val.whale_id)
        seen += list(val.image_id)
    assert sorted(seen) == sorted(data.metadata.image_id)  # every image validated exactly once


def test_single_image_whale_does_not_crash_split_or_scenarios(tiny_survey, belugas, tmp_path):
    root = copy_train(tiny_survey, tmp_path)
    meta = pd.read_csv(root / "metadata.csv")
    meta.loc[0, "whale_id"] = "lonely"
    meta.to_csv(root / "metadata.csv", index=False)
    data = belugas(str(root), [32, 32])
    for fold in range(3):
        _, val = data.split(3, fold, True, seed=0)
        for sc in build_scenarios(val):
            assert meta.image_id[0] not in set(sc.queries.query_image_id)


def test_train_dataset_yields_augmented_tensors(tiny_survey, belugas):
    data = belugas(str(tiny_survey / "train"), [48, 40])
    ds = data.train_dataset(data.metadata.head(4), [0, 1, 2, 3])
    img, label = ds[1]
    assert img.shape == (3, 48, 40) and label == 1


def test_missing_image_is_named(tiny_survey, belugas, tmp_path):
    root = copy_train(tiny_survey, tmp_path)
    victim = sorted((root / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(DataError, match=victim.name):
        belugas(str(root), [32, 32])


def test_metadata_without_whale_id_for_training(tiny_survey, belugas, tmp_path):
    root = copy_train(tiny_survey, tmp_path)
    pd.read_csv(root / "metadata.csv").drop(columns=["whale_id"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata.csv: missing column\(s\) \['whale_id'\]"):
        belugas(str(root), [32, 32])
    assert "whale_id" not in read_metadata(root, require_identity=False).columns


def test_unknown_viewpoint_names_the_row(tiny_survey, belugas, tmp_path):
    root = copy_train(tiny_survey, tmp_path)
    meta = pd.read_csv(root / "metadata.csv")
    meta.loc[4, "viewpoint"] = "underwater"
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"row 6 has unknown viewpoint 'underwater'"):
        belugas(str(root), [32, 32])


def test_malformed_csv(tmp_path):
    (tmp_path / "metadata.csv").write_text('image_id,path,viewpoint\n"a,b\n')
    with pytest.raises(DataError, match="metadata.csv"):
        read_metadata(tmp_path, require_identity=False)


def test_empty_scenarios_are_skipped():
    df = pd.DataFrame({"image_id": ["a", "b"], "viewpoint": ["top", "top"], "date": ["2018-01-01"] * 2,
                       "whale_id": ["w1", "w2"]})
    assert build_scenarios(df) == []


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P", "LA"])
def test_odd_image_modes_load_as_rgb(tmp_path, mode):
    arr = (np.random.default_rng(0).random((10, 12)) * 200).astype(np.uint16 if mode == "I;16" else np.uint8)
    if mode == "I;16":
        img = Image.fromarray(arr * 300)
        assert img.mode.startswith("I;16")
    else:
        img = Image.fromarray(arr.astype(np.uint8), "L").convert(mode)
    path = tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg"
    img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (12, 10)


def test_corrupt_image_raises_or_blanks(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match="bad.jpg"):
        load_rgb(bad)
    ds = EvalImages([str(bad)], (16, 16), on_error="blank")
    img, pos, ok = ds[0]
    assert img.shape == (3, 16, 16) and float(img.abs().sum()) == 0 and pos == 0 and ok is False
    with pytest.raises(ImageError):
        EvalImages([str(bad)], (16, 16))[0]


def test_random_jpeg_recompresses_and_follows_torch_seed():
    import torch

    from plugins.datasets.belugas import RandomJpeg

    img = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    jpeg = RandomJpeg((10, 40))
    torch.manual_seed(3)
    a = np.asarray(jpeg(img))
    torch.manual_seed(3)
    b = np.asarray(jpeg(img))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, np.asarray(img))


@pytest.mark.parametrize("augment", [{}, {"jpeg_quality": None, "cutout_p": 0.0, "rotate": 0.0, "shift": 0.0, "scale": 0.0}])
def test_cached_training_images_augment_to_the_same_pixels(tiny_survey, belugas, augment):
    import torch

    rows = build_registries()  # noqa: F841  (registries load the plugin module)
    pixels = {}
    for cache in (True, False):
        data = belugas(str(tiny_survey / "train"), [48, 40], augment=augment, cache=cache)
        ds = data.train_dataset(data.metadata.head(5), [0, 1, 2, 3, 4])
        assert (ds.cache is not None) == cache
        torch.manual_seed(3)
        pixels[cache] = torch.stack([ds[i][0] for i in range(5)])
    assert torch.equal(pixels[True], pixels[False])
    with pytest.raises(ValueError, match="cache"):
        belugas(str(tiny_survey / "train"), [48, 40], cache="sometimes")


def test_cache_auto_respects_the_memory_limit(tiny_survey, belugas):
    data = belugas(str(tiny_survey / "train"), [64, 64], cache="auto", cache_max_gb=1e-4)  # about 105 kB: 8 images of 12 kB
    assert not data.use_cache(100) and data.use_cache(1)
    assert belugas(str(tiny_survey / "train"), [64, 64]).use_cache(10_000)
