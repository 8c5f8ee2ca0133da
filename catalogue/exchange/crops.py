"""Cutting an annotation's animal out of its photo, as Wild Me's exports describe it.

A Wild Me annotation (WildMeOrg/wildbook-ia ``wbia/other/detectcore.py``, ``export_to_coco``) gives ``bbox``
``[x, y, width, height]`` *before* rotation and ``theta``, the rotation in radians about the box's centre (its
corners are turned by the rotation matrix ``[[cos, -sin], [sin, cos]]`` in image coordinates, y down, as
``vtool.rotation_around_bbox_mat3x3``); ``segmentation`` is the rotated box as a polygon and ``segmentation_bbox``
its outer, axis-aligned box clipped to the photo. Two ways to crop a rotated annotation (``--rotated``):

- ``upright`` (the default): the photo turned about the box's centre by ``-theta`` and the box cut out, widened by
  the margin, so the crop holds the animal upright and whole (corners outside the photo are black);
- ``outer``: the rotated box's outer axis-aligned box, widened by the margin and clipped to the photo (the whole
  animal, with its surroundings, unrotated).
"""

from __future__ import annotations

import math
import re
from typing import Optional

ROTATED = ("upright", "outer")


def parse_bbox(value) -> Optional[list]:
    """[x, y, w, h] floats from a list or a "x,y,w,h" / "x y w h" string; None for none; ValueError if malformed."""
    if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value)):
        return None
    parts = value if isinstance(value, (list, tuple)) else re.split(r"[,\s;]+", str(value).strip(" []()"))
    nums = [float(p) for p in parts]
    if len(nums) != 4 or not all(math.isfinite(n) for n in nums):
        raise ValueError(f"bbox {value!r} is not four finite numbers x, y, width, height")
    if nums[2] <= 0 or nums[3] <= 0:
        raise ValueError(f"bbox {value!r} has no area")
    return nums


def parse_theta(value) -> float:
    """A rotation in radians (0 for none); ValueError if it is not a finite number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0.0
    theta = float(value)
    if not math.isfinite(theta):
        raise ValueError(f"theta {value!r} is not a finite number of radians")
    return theta


def crop_box(bbox, size, margin: float):
    """The crop (left, top, right, bottom) of ``bbox`` widened by ``margin`` and clipped to the photo of ``size``;
    None when the box lies wholly outside it."""
    width, height = size
    x, y, w, h = bbox
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return None
    left, top = max(0, math.floor(x - margin * w)), max(0, math.floor(y - margin * h))
    right, bottom = min(width, math.ceil(x + w + margin * w)), min(height, math.ceil(y + h + margin * h))
    return (left, top, right, bottom) if right - left >= 2 and bottom - top >= 2 else None


def corners(bbox, theta: float) -> list:
    """The four corners (x, y) of ``bbox`` turned by ``theta`` about its centre, as Wild Me draws them."""
    x, y, w, h = bbox
    cx, cy, c, s = x + w / 2, y + h / 2, math.cos(theta), math.sin(theta)
    return [(cx + c * (px - cx) - s * (py - cy), cy + s * (px - cx) + c * (py - cy))
            for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h))]


def outer_box(bbox, theta: float) -> list:
    """[x, y, w, h] of the axis-aligned box around the rotated ``bbox`` (Wild Me's ``segmentation_bbox``, unclipped)."""
    pts = corners(bbox, theta)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def crop_rotated(photo, bbox, theta: float, margin: float):
    """The rotated ``bbox`` of the PIL ``photo`` turned upright and cut out, widened by ``margin``; None when the
    rotated box lies wholly outside the photo. Only the region around the box is turned (a large photo costs what
    its box costs)."""
    from PIL import Image

    ox, oy, ow, oh = outer_box(bbox, theta)
    if ox >= photo.size[0] or oy >= photo.size[1] or ox + ow <= 0 or oy + oh <= 0:
        return None
    x, y, w, h = bbox
    cx, cy = x + w / 2, y + h / 2
    W, H = w * (1 + 2 * margin), h * (1 + 2 * margin)
    r = math.ceil(math.hypot(W, H) / 2) + 2
    left, top = math.floor(cx) - r, math.floor(cy) - r
    region = photo.crop((left, top, left + 2 * r, top + 2 * r))  # outside the photo: black
    # PIL turns counter-clockwise on screen for a positive angle; Wild Me's theta turns the box clockwise (y down)
    upright = region.rotate(math.degrees(theta), resample=Image.BICUBIC, center=(cx - left, cy - top))
    a, b = cx - left - W / 2, cy - top - H / 2
    return upright.crop((math.floor(a), math.floor(b), math.ceil(a + W), math.ceil(b + H)))
