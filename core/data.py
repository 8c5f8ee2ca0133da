"""Image tables in the competition layout, and the datasets that embed them.

``read_metadata`` checks a ``metadata.csv`` and names the file and row of anything wrong.
``WhaleData`` is what a dataset plugin returns (see ``core.hookspecs``).
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch.utils.data import Dataset

from core.images import IMAGENET_MEAN, IMAGENET_STD, ImageError, load_rgb, portrait, squash_to_tensor

log = logging.getLogger(__name__)

VIEWPOINTS = ("top", "left", "right")
BASE_COLUMNS = ("image_id", "path", "viewpoint")
IDENTITY_COLUMNS = ("whale_id",)


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file (and row)."""


def read_csv(path: str | Path, required: Sequence[str], what: str = "") -> pd.DataFrame:
    """Read a CSV with string columns, failing clearly when it is missing, empty or lacks columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what or 'file'} not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot parse CSV: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    for col in required:
        empty = df.index[df[col].str.strip() == ""]
        if len(empty):
            raise DataError(f"{path}: row {int(empty[0]) + 2} has an empty '{col}'")
    return df


def read_metadata(root: str | Path, require_identity: bool) -> pd.DataFrame:
    """``root/metadata.csv`` with absolute ``file`` paths added; identities required for training.

    Rows are checked: unique image ids, known viewpoints (top/left/right) and, for training, a
    ``whale_id``. ``encounter_id`` defaults to whale and date when absent.
    """
    root = Path(root)
    path = root / "metadata.csv"
    required = BASE_COLUMNS + (IDENTITY_COLUMNS if require_identity else ())
    df = read_csv(path, required, "metadata")
    dup = df.index[df["image_id"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: row {int(dup[0]) + 2} repeats image_id {df.image_id[dup[0]]!r}")
    bad = df.index[~df["viewpoint"].isin(VIEWPOINTS)]
    if len(bad):
        raise DataError(
            f"{path}: row {int(bad[0]) + 2} has unknown viewpoint {df.viewpoint[bad[0]]!r}; expected one of {VIEWPOINTS}"
        )
    if "date" not in df.columns:
        df["date"] = ""
    if require_identity and "encounter_id" not in df.columns:
        df["encounter_id"] = df["whale_id"] + "_" + df["date"]
    df["file"] = [str(root / p) for p in df["path"]]
    return df


def check_files_exist(df: pd.DataFrame, source: str) -> None:
    missing = [f for f in df["file"] if not Path(f).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{source}: image file not found: {missing[0]}{more}")


class EvalImages(Dataset):
    """Yields ``(float32 [3, h, w], position, ok)`` for each file.

    With ``on_error="raise"`` a bad image stops the run naming the file; with ``"blank"`` it is
    logged and replaced by a zero image with ``ok`` False (a flag, so it survives worker processes).
    """

    def __init__(self, files: Sequence[str], image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, on_error="raise",
                 rotate_landscape: bool = False):
        self.files = list(files)
        self.size = (int(image_size[0]), int(image_size[1]))
        self.mean, self.std, self.on_error = mean, std, on_error
        self.rotate_landscape = bool(rotate_landscape)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            img = load_rgb(self.files[i])
        except ImageError as exc:
            if self.on_error == "raise":
                raise
            log.warning("%s; using a blank image in its place", exc)
            return torch.zeros(3, *self.size), i, False
        if self.rotate_landscape:
            img = portrait(img)
        return squash_to_tensor(img, self.size, self.mean, self.std), i, True


class WhaleData(abc.ABC):
    """What a dataset plugin returns: the image table, a fold split, and torch datasets."""

    def __init__(self, root: str | Path, image_size, metadata: pd.DataFrame, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 rotate_landscape: bool = False):
        self.root = Path(root)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.metadata = metadata
        self.mean, self.std = tuple(mean), tuple(std)
        self.rotate_landscape = bool(rotate_landscape)  # data.rotate_landscape: set by the runner

    @abc.abstractmethod
    def split(self, num_folds: int, fold: int, holdout_whales: bool, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(train rows, validation rows) of ``metadata`` for fold ``fold`` of ``num_folds``."""

    @abc.abstractmethod
    def train_dataset(self, df: pd.DataFrame, labels: Sequence[int]) -> Dataset:
        """Augmented training images of ``df`` yielding ``(float32 [3, h, w], class index)``."""

    def eval_dataset(self, df: pd.DataFrame, on_error: str = "raise") -> Dataset:
        return EvalImages(df["file"], self.image_size, self.mean, self.std, on_error, self.rotate_landscape)
