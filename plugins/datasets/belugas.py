"""Dataset ``belugas``: the competition layout (``metadata.csv`` + ``images/``), folds and the seed's augmentations.

Folds never split an encounter (photos of one whale less than an hour apart); with
``holdout_whales`` they never split a whale, as the test set's whales are unseen in training.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from core.data import WhaleData, check_files_exist, read_metadata
from core.hookspecs import hookimpl
from core.images import IMAGENET_MEAN, IMAGENET_STD, load_rgb


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
                       hue=0.1, saturation=0.3, shift=0.2, scale=0.5, rotate=10.0, cutout_p=0.5, cutout_area=0.16):
    """The seed's training transforms in torchvision v2, applied after the squash resize.

    Seed (albumentations): ImageCompression 80-99, HorizontalFlip, RandomBrightnessContrast 0.2,
    HueSaturationValue 40, ShiftScaleRotate(0.2, 0.5, 10), one 40% CoarseDropout. Hue/saturation 40
    on albumentations' 0-180 hue scale is mapped to ColorJitter's hue 0.1 / saturation 0.3; the
    cutout to a RandomErasing of up to ``cutout_area`` (0.4 x 0.4) of the image.
    """
    from torchvision.transforms import v2

    h, w = int(image_size[0]), int(image_size[1])
    steps = [v2.Resize((h, w), antialias=True)]  # on the PIL image: the squash first, so the rest is cheap
    if jpeg_quality:
        steps.append(RandomJpeg(jpeg_quality))
    steps += [
        v2.ToImage(),
        v2.RandomHorizontalFlip(hflip),
        v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue),
        v2.RandomAffine(degrees=rotate, translate=(shift, shift), scale=(max(0.05, 1 - scale), 1 + scale)),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ]
    if cutout_p > 0:
        steps.append(v2.RandomErasing(p=cutout_p, scale=(0.02, cutout_area), ratio=(0.5, 2.0)))
    return v2.Compose(steps)


class TrainImages(Dataset):
    def __init__(self, files: Sequence[str], labels: Sequence[int], transform):
        self.files, self.labels, self.transform = list(files), list(labels), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.transform(load_rgb(self.files[i])), int(self.labels[i])


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
    def __init__(self, root, image_size, metadata, mean, std, augment: dict):
        super().__init__(root, image_size, metadata, mean, std)
        self.augment = augment

    def split(self, num_folds, fold, holdout_whales, seed):
        meta = self.metadata
        if num_folds < 2:
            raise ValueError(f"data.num_folds must be at least 2 to hold out a validation fold, got {num_folds}")
        groups = meta["whale_id"] if holdout_whales else meta["encounter_id"]
        folds = assign_folds(groups, num_folds, seed)
        return meta[folds != fold].reset_index(drop=True), meta[folds == fold].reset_index(drop=True)

    def train_dataset(self, df, labels):
        transform = seed_augmentations(self.image_size, self.mean, self.std, **self.augment)
        return TrainImages(df["file"], labels, transform)


def build_belugas(root, image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, require_identity=True,
                  check_files=True, augment=None):
    """Read ``root/metadata.csv`` (competition layout); ``augment`` overrides ``seed_augmentations`` options."""
    meta = read_metadata(root, require_identity=require_identity)
    if check_files:
        check_files_exist(meta, f"{root}/metadata.csv")
    augment = dict(augment or {})
    from core.plugins import check_options

    check_options(seed_augmentations, augment, "dataset 'belugas' augment")
    return Belugas(root, image_size, meta, mean, std, augment)


@hookimpl
def register_datasets(register):
    register("belugas", build_belugas)
