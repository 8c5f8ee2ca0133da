"""Reading photos of any mode into RGB, and the eval transform (squash resize + normalise).

Kept free of torchvision so the submission's inference path needs only torch, numpy and PIL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(OSError):
    """An image is missing or cannot be decoded; the message names the file."""


def load_rgb(path: str | Path) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image, whatever its mode (L, LA, P, RGBA, CMYK, I;16, I, F)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0) if hi > 0 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def portrait(img: Image.Image) -> Image.Image:
    """A landscape image (width > height) rotated 90 degrees clockwise; others unchanged (1st place's
    preprocessing of lateral photos, docs/winners.md). ``data.rotate_landscape`` applies it in
    training and at inference alike."""
    # Image.Transpose arrived in Pillow 9.1; the 2022 runtime had 8.2, where the constant sits on Image
    return img.transpose(getattr(Image, "Transpose", Image).ROTATE_270) if img.width > img.height else img


def squash_to_tensor(img: Image.Image, size: tuple[int, int], mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Resize ``img`` to ``size`` = (height, width) ignoring aspect ratio; float32 [3, h, w], normalised.

    Each channel is resized as a 32-bit float image: Pillow's 8-bit resampling rounds differently between
    releases (the 2022 runtime's Pillow 8.2 and today's differ by one level on about 12% of pixels),
    its float resampling agrees to 1e-7, so a bundle sees the same pixels in the runtime as here."""
    h, w = int(size[0]), int(size[1])
    arr = np.stack([np.asarray(band.convert("F").resize((w, h), Image.BILINEAR))
                    for band in img.convert("RGB").split()], axis=2) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
