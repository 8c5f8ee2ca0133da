"""Dataset ``belugas``: the competition layout (``metadata.csv`` + ``images/``), folds and the seed's augmentations.

Folds never split an encounter (photos of one whale less than an hour apart); with
``holdout_whales`` they never split a whale, as the test set's whales are unseen in training.

``cache`` keeps the training images decoded and squashed to the input size in memory (uint8), so
each epoch only augments; ``auto`` caches when that takes at most ``cache_max_gb``. The augmented
pixels are the same either way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from core.data import WhaleData, check_files_exist, read_metadata
from core.hookspecs import hookimpl
from core.images import IMAGENET_MEAN, IMAGENET_STD, load_rgb, portrait


class RandomJpeg:
    """Re-encode a PIL image as JPEG at a quality drawn from ``quality`` (inclusive), with PIL.

    torchvision's ``v2.JPEG`` does the same through ``torchvision.io``, whose codecs torchvision 0.29
    deprecates; the quality is drawn from torch's RNG so seeding covers it.
    """

    def __init__(self, quality=(80, 99)):
        self.low, self.high = int(quality[0]), int(quality[1])

    def __call__(self, img):
        import io

        from PIL import Image

        q = int(torch.randint(self.low, self.high + 1, ()).item())
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")


def seed_augmentations(image_size, mean, std, jpeg_quality=(80, 99), hflip=0.5, brightness=0.2, contrast=0.2,
                       hue=0.1, saturation=0.3, shift=0.2, scale=0.5, rotate=10.0, cutout_p=0.5, cutout_area=0.16,
                       presquashed=False):
    """The seed's training transforms in torchvision v2, applied after the squash resize.

    Takes a PIL image of any size, or with ``presquashed`` a uint8 [3, h, w] tensor already squashed
    to ``image_size`` (the cache). ``jpeg_quality: null``, zero strengths and ``cutout_p: 0`` switch
    steps off; the affine step is left out when rotate, shift and scale are all 0.

    Seed (albumentations): ImageCompression 80-99, HorizontalFlip, RandomBrightnessContrast 0.2,
    HueSaturationValue 40, ShiftScaleRotate(0.2, 0.5, 10), one 40% CoarseDropout. Hue/saturation 40
    on albumentations' 0-180 hue scale is mapped to ColorJitter's hue 0.1 / saturation 0.3; the
    cutout to a RandomErasing of up to ``cutout_area`` (0.4 x 0.4) of the image.
    """
    from torchvision.transforms import v2

    h, w = int(image_size[0]), int(image_size[1])
    steps = [] if presquashed else [squasher((h, w))]  # the squash first (on PIL), so the rest is cheap
    if jpeg_quality:
        steps += [v2.ToPILImage()] if presquashed else []
        steps.append(RandomJpeg(jpeg_quality))
    steps += [v2.ToImage(), v2.RandomHorizontalFlip(hflip)]
    if brightness or contrast or saturation or hue:
        steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue))
    if rotate or shift or scale:
        steps.append(v2.RandomAffine(degrees=rotate, translate=(shift, shift), scale=(max(0.05, 1 - scale), 1 + scale)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if cutout_p > 0:
        steps.append(v2.RandomErasing(p=cutout_p, scale=(0.02, cutout_area), ratio=(0.5, 2.0)))
    return v2.Compose(steps)


def squasher(size):
    from torchvision.transforms import v2

    return v2.Resize((int(size[0]), int(size[1])), antialias=True)


class TrainImages(Dataset):
    """``(float32 [3, h, w], class index)``; from ``cache`` (uint8 [N, 3, h, w], squashed) when given."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], transform, cache: torch.Tensor | None = None,
                 rotate_landscape: bool = False):
        self.files, self.labels, self.transform, self.cache = list(files), list(labels), transform, cache
        self.rotate_landscape = rotate_landscape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        if self.cache is not None:
            img = self.cache[i]
        else:
            img = load_rgb(self.files[i])
            img = portrait(img) if self.rotate_landscape else img
        return self.transform(img), int(self.labels[i])


def squash_all(files: Sequence[str], image_size, rotate_landscape: bool = False) -> torch.Tensor:
    """Every image decoded and squashed to ``image_size``: uint8 [N, 3, h, w], with a progress bar."""
    from torchvision.transforms import v2
    from core.progress import progress

    resize, to_tensor = squasher(image_size), v2.PILToTensor()
    out = torch.empty((len(files), 3, int(image_size[0]), int(image_size[1])), dtype=torch.uint8)
    for i, f in enumerate(progress(files, desc="cache images", unit="img")):
        img = load_rgb(f)
        out[i] = to_tensor(resize(portrait(img) if rotate_landscape else img))
    return out


def assign_folds(groups: pd.Series, num_folds: int, seed: int) -> pd.Series:
    """Fold index per row; whole groups go to one fold, groups dealt largest first to the emptiest fold."""
    sizes = groups.value_counts()
    rng = np.random.default_rng(seed)
    order = sizes.index[np.lexsort((rng.random(len(sizes)), -sizes.to_numpy()))]
    load = np.zeros(num_folds, dtype=np.int64)
    fold_of = {}
    for g in order:
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += sizes[g]
    return groups.map(fold_of)


class Belugas(WhaleData):
    def __init__(self, root, image_size, metadata, mean, std, augment: dict, cache="auto", cache_max_gb=4.0,
                 min_images_per_whale=1):
        super().__init__(root, image_size, metadata, mean, std)
        self.augment, self.cache, self.cache_max_gb = augment, cache, float(cache_max_gb)
        self.min_images_per_whale = int(min_images_per_whale)

    def use_cache(self, n: int) -> bool:
        if self.cache == "auto":
            return n * 3 * self.image_size[0] * self.image_size[1] <= self.cache_max_gb * 2 ** 30
        return bool(self.cache)

    def split(self, num_folds, fold, holdout_whales, seed):
        meta = self.metadata
        if num_folds < 2:
            raise ValueError(f"data.num_folds must be at least 2 to hold out a validation fold, got {num_folds}")
        groups = meta["whale_id"] if holdout_whales else meta["encounter_id"]
        folds = assign_folds(groups, num_folds, seed)
        train, val = meta[folds != fold].reset_index(drop=True), meta[folds == fold].reset_index(drop=True)
        if self.min_images_per_whale > 1:  # 4th place's "key trick": rare whales leave training only
            counts = train["whale_id"].map(train["whale_id"].value_counts())
            kept = train[counts >= self.min_images_per_whale].reset_index(drop=True)
            if kept.empty:
                raise ValueError(f"dataset 'belugas' min_images_per_whale={self.min_images_per_whale} leaves no "
                                 f"training image in fold {fold} of {self.root}")
            train = kept
        return train, val

    def train_dataset(self, df, labels):
        cached = self.use_cache(len(df))
        transform = seed_augmentations(self.image_size, self.mean, self.std, presquashed=cached, **self.augment)
        cache = squash_all(list(df["file"]), self.image_size, self.rotate_landscape) if cached else None
        return TrainImages(df["file"], labels, transform, cache, self.rotate_landscape)


def build_belugas(root, image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, require_identity=True,
                  check_files=True, augment=None, cache="auto", cache_max_gb=4.0, min_images_per_whale=1):
    """Read ``root/metadata.csv`` (competition layout); ``augment`` overrides ``seed_augmentations`` options;
    ``cache`` is true, false or ``auto`` (cache training images when they take at most ``cache_max_gb``);
    ``min_images_per_whale`` drops whales with fewer training photos from training (never from validation:
    4th place trained on the whales with at least 4 photos, docs/winners.md)."""
    if cache not in (True, False, "auto"):
        raise ValueError(f"dataset 'belugas' cache must be true, false or auto, got {cache!r}")
    meta = read_metadata(root, require_identity=require_identity)
    if check_files:
        check_files_exist(meta, f"{root}/metadata.csv")
    augment = dict(augment or {})
    from core.plugins import check_options

    check_options(seed_augmentations, augment, "dataset 'belugas' augment")
    if "presquashed" in augment:
        raise ValueError("dataset 'belugas' augment: 'presquashed' is set by the cache, not by configs")
    if int(min_images_per_whale) < 1:
        raise ValueError(f"dataset 'belugas' min_images_per_whale must be at least 1, got {min_images_per_whale}")
    return Belugas(root, image_size, meta, mean, std, augment, cache, cache_max_gb, min_images_per_whale)


@hookimpl
def register_datasets(register):
    register("belugas", build_belugas)
