"""Write a synthetic beluga survey in the competition layout.

    python -m tools.synthesize --preset {tiny,bench,small,full} --out DIR [--variant NAME] [--seed N] [--workers N]
    python -m tools.synthesize --list-variants                  # the named looks and their knobs
    python -m tools.synthesize --sheet sheet.png [--seed N]     # a contact sheet to judge by eye

Writes ``DIR/train/`` (images + metadata with identities), ``DIR/test/`` (what the runtime mounts at
``/code_execution/data``: images, metadata without identities, scenario files), and
``DIR/test_labels.csv`` (query_id, database_image_id) beside it. Test whales never appear in
training. Same seed, same bytes: every image's randomness comes from (seed, image number) alone.

How a whale is drawn: each individual has a *pelt*, a grey map in body coordinates (u along the
body head to tail, v around it: -1 the left flank's waterline, 0 the dorsal ridge, +1 the right
flank's) carrying its scars, rake marks, spots, blowhole and ridge nicks. A top view shows the band
|v| < 0.65 from above; a lateral view shows one flank from the ridge to the waterline, so marks near
the ridge are seen from above and, compressed, from the side; the flanks differ. Marks may appear in a
later year. Photos add water, glare, submersion, blur, scale, rotation, light, detector-box
triangles and JPEG quality; encounters are bursts of frames minutes apart.

Variants (``--variant``) turn the knobs that make photo-identification hard: mark size and
contrast, marks per whale, rotation of the body in the frame, photos per whale and number of
whales, a background pattern shared by every photo of an encounter, resolution and blur, and the
share of lateral views. ``base`` is the original look, byte for byte.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

PELT_U, PELT_V = 512, 192  # pelt resolution: along the body, around it (v from -1 to 1)
YEARS = (2017, 2018, 2019)


@dataclass(frozen=True)
class Preset:
    train_whales: int
    test_whales: int
    mean_images: float  # mean photos per whale (long-tailed, 1 to max_images)
    max_images: int
    top_share: float
    scale: float  # photo size relative to a full-size crop (top crops about 200 x 520 px)
    max_queries: int | None  # per scenario, in the test set


PRESETS = {
    "tiny": Preset(24, 12, 6.0, 14, 0.85, 0.6, 40),
    "bench": Preset(150, 60, 5.5, 30, 0.86, 1.0, 200),  # the size of a small real survey, for tools.bench.quality
    "small": Preset(260, 90, 5.8, 40, 0.90, 1.0, 300),
    "full": Preset(788, 420, 7.5, 106, 0.92, 1.0, 900),
}


@dataclass(frozen=True)
class Variant:
    """Knobs of a survey's look; the defaults are the original generator's."""

    mark_scale: float = 1.0  # length and stroke width of scars, rakes, spots and nicks
    mark_contrast: float = 1.0  # how much darker than the skin a mark is (multiplier, capped at 0.95)
    marks: tuple[int, int] = (3, 8)  # marks per whale, inclusive range (ridge nicks and later scars come on top)
    rotation: float = 10.0  # heading of the body per encounter: s.d. in degrees; 180 or more: any angle
    photos_per_whale: float | None = None  # mean photos per whale (None: the preset's)
    whale_factor: float = 1.0  # multiplies the preset's number of train and test whales
    encounter_pattern: float = 0.0  # strength of a water pattern that every photo of an encounter shares
    resolution: float = 1.0  # multiplies photo size (marks shrink with it)
    blur: float = 1.4  # largest Gaussian blur radius, pixels
    lateral_share: float | None = None  # share of lateral views (None: the preset's)


VARIANTS = {
    "base": Variant(),
    "small_marks": Variant(mark_scale=0.55, mark_contrast=0.7),
    "few_marks": Variant(marks=(1, 3)),
    "any_angle": Variant(rotation=180.0),
    "few_photos": Variant(photos_per_whale=2.5, whale_factor=1.6),
    "encounter_water": Variant(encounter_pattern=0.15),
    "low_res": Variant(resolution=0.55, blur=2.5),
    "lateral": Variant(lateral_share=0.35),
    # several at once, like the surveys rendered by other code in issue #7
    "hard": Variant(mark_scale=0.6, mark_contrast=0.8, rotation=180.0, encounter_pattern=0.15),
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


# ----------------------------------------------------------------------------------- individuals
@dataclass
class Mark:
    kind: str  # scar | rake | spot | nick
    u: float
    v: float
    size: float  # length or radius, pelt pixels
    angle: float
    width: float  # stroke width, pelt pixels
    dark: float  # 0..1, how much darker than the skin
    year_from: int = 0


@dataclass
class Whale:
    whale_id: str
    ratio: float  # body width / length seen from above
    birth_year: int
    skin: float  # adult skin brightness 0..1
    blowhole: tuple[float, float]  # width, curvature
    marks: list[Mark] = field(default_factory=list)


def make_whale(whale_id: str, rng: np.random.Generator, variant: Variant = Variant()) -> Whale:
    w = Whale(whale_id, ratio=float(rng.uniform(0.27, 0.36)), birth_year=int(rng.integers(2000, 2019)),
              skin=float(rng.uniform(0.78, 0.97)), blowhole=(float(rng.uniform(12, 26)), float(rng.uniform(-0.6, 0.6))))
    k, c = variant.mark_scale, variant.mark_contrast
    n_marks = int(rng.integers(variant.marks[0], variant.marks[1] + 1))
    for _ in range(n_marks):
        kind = rng.choice(["scar", "scar", "rake", "spot", "spot"])
        w.marks.append(Mark(kind, u=float(rng.uniform(0.18, 0.9)), v=float(rng.uniform(-0.95, 0.95)),
                            size=float(rng.uniform(22, 70) if kind != "spot" else rng.uniform(6, 14)) * k,
                            angle=float(rng.uniform(0, math.pi)), width=float(rng.uniform(5, 10)) * k,
                            dark=min(0.95, float(rng.uniform(0.35, 0.7)) * c)))
    for _ in range(int(rng.integers(0, 4))):  # nicks on the dorsal ridge
        w.marks.append(Mark("nick", u=float(rng.uniform(0.35, 0.75)), v=0.0, size=float(rng.uniform(5, 11)) * k,
                            angle=0.0, width=float(rng.uniform(6, 12)) * k, dark=min(0.95, float(rng.uniform(0.4, 0.7)) * c)))
    if rng.random() < 0.35:  # a scar gained in a later survey year
        w.marks.append(Mark("scar", u=float(rng.uniform(0.2, 0.85)), v=float(rng.uniform(-0.6, 0.6)),
                            size=float(rng.uniform(30, 60)) * k, angle=float(rng.uniform(0, math.pi)),
                            width=float(rng.uniform(6, 10)) * k, dark=min(0.95, float(rng.uniform(0.4, 0.7)) * c),
                            year_from=int(rng.choice(YEARS[1:]))))
    return w


def skin_tone(whale: Whale, year: int) -> float:
    """Belugas whiten with age: grey calves, white adults by about ten years."""
    age = max(0, year - whale.birth_year)
    grey = 0.45
    return grey + (whale.skin - grey) * min(1.0, age / 10.0)


def pelt(whale: Whale, year: int) -> np.ndarray:
    """float32 [PELT_V, PELT_U] skin brightness with the marks of ``year`` drawn on."""
    img = Image.new("L", (PELT_U, PELT_V), 255)
    draw = ImageDraw.Draw(img)

    def xy(u, v):
        return u * PELT_U, (v + 1) / 2 * PELT_V

    bw, curve = whale.blowhole
    cx, cy = xy(0.1, 0.0)
    draw.arc([cx - 6, cy - bw / 2, cx + 6 + 14 * curve, cy + bw / 2], 270 - 80, 270 + 80 if curve >= 0 else 90,
             fill=70, width=5)
    for m in whale.marks:
        if m.year_from and year < m.year_from:
            continue
        x, y = xy(m.u, m.v)
        tone = int(255 * (1 - m.dark))
        dx, dy = math.cos(m.angle) * m.size / 2, math.sin(m.angle) * m.size / 2
        if m.kind == "scar":
            draw.line([x - dx, y - dy, x + dx * 0.3, y + dy * 0.6, x + dx, y + dy], fill=tone, width=max(1, int(m.width)), joint="curve")
        elif m.kind == "rake":
            nx, ny = -math.sin(m.angle) * m.width * 1.8, math.cos(m.angle) * m.width * 1.8
            for k in (-1, 0, 1):
                draw.line([x - dx + k * nx, y - dy + k * ny, x + dx + k * nx, y + dy + k * ny], fill=tone,
                          width=max(1, min(3, int(m.width)), int(m.width * 0.7)))
        elif m.kind == "spot":
            draw.ellipse([x - m.size, y - m.size * 0.8, x + m.size, y + m.size * 0.8], fill=tone)
        elif m.kind == "nick":
            draw.rectangle([x - m.width / 2, y - m.size, x + m.width / 2, y + m.size], fill=tone)
    return np.asarray(img, np.float32) / 255.0 * skin_tone(whale, year)


# ---------------------------------------------------------------------------------------- photos
@dataclass
class PhotoStyle:
    """Photographic variation of one frame; ``neutral()`` switches it all off."""

    water: tuple[float, float, float] = (0.32, 0.38, 0.36)
    water_texture: float = 0.0
    glare: float = 0.0
    submerged: float = 0.0  # fraction of the body length under murky water
    blur: float = 0.0
    light: float = 1.0
    rotate: float = 0.0  # degrees
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    triangle: int = -1  # corner with a detector-box white triangle, -1 none
    quality: int = 95
    pattern: float = 0.0  # strength of the encounter's own water pattern
    pattern_seed: int = 0  # the encounter's: every photo of it shows the same pattern

    @staticmethod
    def neutral() -> "PhotoStyle":
        return PhotoStyle()


def random_style(rng: np.random.Generator, encounter: dict, blur: float = 1.4) -> PhotoStyle:
    return PhotoStyle(
        water=tuple(np.clip(np.asarray(encounter["water"]) + rng.normal(0, 0.015, 3), 0, 1)),
        water_texture=float(rng.uniform(0.02, 0.08)),
        glare=float(rng.uniform(0, 0.5) if rng.random() < 0.35 else 0.0),
        submerged=float(rng.uniform(0.05, 0.35) if rng.random() < 0.3 else 0.0),
        blur=float(rng.uniform(0, blur)),
        light=float(encounter["light"] * rng.uniform(0.93, 1.07)),
        rotate=float(encounter["heading"] + rng.normal(0, 4)),
        scale=float(rng.uniform(0.82, 1.05)),
        shift=(float(rng.normal(0, 0.04)), float(rng.normal(0, 0.04))),
        triangle=int(rng.integers(0, 4)) if rng.random() < 0.1 else -1,
        quality=int(rng.integers(60, 96)),
        pattern=float(encounter.get("pattern", 0.0)),
        pattern_seed=int(encounter.get("pattern_seed", 0)),
    )


def _water(h: int, w: int, style: PhotoStyle, rng: np.random.Generator) -> np.ndarray:
    base = np.broadcast_to(np.asarray(style.water, np.float32), (h, w, 3)).copy()
    if style.water_texture > 0:
        coarse = rng.normal(0, 1, (max(2, h // 24), max(2, w // 24))).astype(np.float32)
        coarse = np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.BICUBIC))
        fine = rng.normal(0, 0.4, (h, w)).astype(np.float32)
        base += style.water_texture * (coarse + fine)[..., None]
    if style.pattern > 0:  # the encounter's water: same seed, same pattern in every photo of it
        prng = np.random.default_rng(style.pattern_seed)
        grid = prng.normal(0, 1, (4, 8, 8)).astype(np.float32)  # swell in brightness, a faint tint per channel
        swell, *tint = [np.asarray(Image.fromarray(g, "F").resize((w, h), Image.BICUBIC)) for g in grid]
        base += style.pattern * (swell[..., None] + 0.3 * np.stack(tint, axis=-1))
    return base


def _profile(u: np.ndarray) -> np.ndarray:
    """Half-width of the body (0..1) along u: a rounded head (u=0) tapering to the tail stock."""
    u = np.clip(u, 0, 1)
    return np.where(u < 1, (np.sin(np.pi * np.clip(u * 0.92 + 0.04, 0, 1)) ** 0.7) * (1 - 0.45 * u), 0)


def render(whale: Whale, year: int, view: str, style: PhotoStyle, size: tuple[int, int], seed: int) -> Image.Image:
    """One photo of ``whale`` from ``view`` (top/left/right) as an RGB image of ``size`` = (w, h)."""
    rng = np.random.default_rng(seed)
    w, h = size
    skin = pelt(whale, year)
    img = _water(h, w, style, rng)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2 + style.shift[0] * w, h / 2 + style.shift[1] * h
    theta = math.radians(style.rotate)
    dx, dy = xs - cx, ys - cy
    if view == "top":  # body along the crop's height, head up
        length = 0.86 * h * style.scale
        along = -dx * math.sin(theta) + dy * math.cos(theta)
        across = dx * math.cos(theta) + dy * math.sin(theta)
        u = along / length + 0.5
        half = _profile(u) * whale.ratio * length / 2
        inside = (np.abs(across) < half) & (u >= 0) & (u <= 1)
        t = np.where(inside, across / np.maximum(half, 1e-3), 0)
        v = np.arcsin(np.clip(t, -1, 1)) * (2 / np.pi) * 0.65
        shade = 0.72 + 0.28 * np.sqrt(np.clip(1 - t ** 2, 0, 1))
    else:  # body along the crop's width above a waterline; right view: head to the right
        length = 0.9 * w * style.scale
        sign = 1.0 if view == "right" else -1.0
        along = (dx * math.cos(theta) + dy * math.sin(theta)) * sign
        up = -(-dx * math.sin(theta) + dy * math.cos(theta)) + 0.18 * h  # height above the waterline
        u = 0.5 - along / length
        height = _profile(u) * 0.34 * length / 1.5
        nicks = np.zeros_like(u)
        for m in whale.marks:
            if m.kind == "nick" and not (m.year_from and year < m.year_from):
                nicks += (np.abs(u - m.u) * length < m.width * length / PELT_U * 0.9) * m.size * length / PELT_U * 0.6
        height = np.maximum(height - nicks, 0)
        inside = (up > 0) & (up < height) & (u >= 0) & (u <= 1)
        t = np.where(inside, 1 - up / np.maximum(height, 1e-3), 0)  # 0 at the ridge, 1 at the waterline
        v = sign * np.sin(t * np.pi / 2) * 0.95
        shade = 0.8 + 0.2 * (1 - t)
    pu = np.clip((u * PELT_U).astype(np.int32), 0, PELT_U - 1)
    pv = np.clip(((v + 1) / 2 * PELT_V).astype(np.int32), 0, PELT_V - 1)
    body = skin[pv, pu] * shade
    body_rgb = np.stack([body * 0.97, body, body * 0.99], axis=-1)
    alpha = inside.astype(np.float32)
    if style.submerged > 0:
        cut = 1 - style.submerged
        alpha *= np.where(u > cut, np.clip(1 - (u - cut) / max(style.submerged, 1e-3) * 1.6, 0.15, 1), 1)
    img = img * (1 - alpha[..., None]) + body_rgb * alpha[..., None]
    if style.glare > 0:
        gx, gy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.2, 0.5) * min(w, h)
        img += style.glare * np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * r * r))[..., None]
    img = np.clip(img * style.light, 0, 1)
    out = Image.fromarray((img * 255).astype(np.uint8), "RGB")
    if style.blur > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(style.blur))
    if style.triangle >= 0:
        draw = ImageDraw.Draw(out)
        s = int(min(w, h) * 0.25)
        corners = [[(0, 0), (s, 0), (0, s)], [(w, 0), (w - s, 0), (w, s)], [(0, h), (s, h), (0, h - s)],
                   [(w, h), (w - s, h), (w, h - s)]]
        draw.polygon(corners[style.triangle], fill=(255, 255, 255))
    return out


# ---------------------------------------------------------------------------------------- survey
def photo_size(view: str, rng: np.random.Generator, scale: float) -> tuple[int, int]:
    """(width, height) of a crop: tall for top views, wide for lateral ones, times ``scale``."""
    if view == "top":
        h = rng.uniform(440, 560)
        w = h * rng.uniform(0.36, 0.46)
    else:
        w = rng.uniform(420, 540)
        h = w * rng.uniform(0.3, 0.4)
    return max(32, int(w * scale)), max(32, int(h * scale))


def plan_survey(preset: Preset, n_whales: int, prefix: str, seed: int, id_offset: int,
                variant: Variant = Variant()) -> tuple[list[Whale], list[dict]]:
    """Whales and one row per photo (everything needed to render it), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    whales = [make_whale(f"whale{id_offset + i:04d}", rng, variant) for i in range(n_whales)]
    sigma = 1.0
    mean_images = preset.mean_images if variant.photos_per_whale is None else variant.photos_per_whale
    mu = math.log(max(1.0, mean_images)) - sigma ** 2 / 2
    rows = []
    lateral_share = 1 - preset.top_share if variant.lateral_share is None else variant.lateral_share
    for wi, whale in enumerate(whales):
        n = int(np.clip(round(rng.lognormal(mu, sigma)), 1, preset.max_images))
        while n > 0:
            burst = int(min(n, rng.integers(1, 6)))
            year = int(rng.choice(YEARS))
            start = pd.Timestamp(year=year, month=int(rng.integers(6, 10)), day=int(rng.integers(1, 29)),
                                 hour=int(rng.integers(8, 18)), minute=int(rng.integers(0, 60)))
            vessel = rng.random() < lateral_share * 1.6 / (1 + 0.6 * lateral_share)
            encounter = {"water": (rng.uniform(0.25, 0.45), rng.uniform(0.32, 0.48), rng.uniform(0.28, 0.42)),
                         "light": rng.uniform(0.85, 1.1),
                         "heading": rng.normal(0, variant.rotation) if variant.rotation < 180 else rng.uniform(-180, 180)}
            if variant.encounter_pattern > 0:
                encounter.update(pattern=variant.encounter_pattern, pattern_seed=int(rng.integers(2 ** 31)))
            side = str(rng.choice(["left", "right"]))
            minute = 0.0
            for _ in range(burst):
                view = "top"
                if vessel and rng.random() < 0.6:
                    view = side if rng.random() < 0.85 else ("left" if side == "right" else "right")
                when = start + pd.Timedelta(minutes=minute)
                minute += float(rng.uniform(0.5, 8))
                rows.append({"whale": wi, "whale_id": whale.whale_id, "viewpoint": view, "year": year,
                             "date": when.strftime("%Y-%m-%d"), "timestamp": when.strftime("%Y-%m-%d %H:%M:%S"),
                             "encounter_id": f"{whale.whale_id}_{start.strftime('%Y%m%d%H%M')}",
                             "style": random_style(rng, encounter, variant.blur), "size": None})
            n -= burst
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    for k, row in enumerate(rows):
        row["image_id"] = f"{prefix}{k:05d}"
        row["path"] = f"images/{row['image_id']}.jpg"
        row["size"] = photo_size(row["viewpoint"], np.random.default_rng([seed, k, 7]), preset.scale * variant.resolution)
        row["seed"] = [seed, k]
    return whales, rows


_WHALES: dict = {}


def _render_row(args) -> None:
    key, out_dir, row = args
    whale = _WHALES[key][row["whale"]]
    img = render(whale, row["year"], row["viewpoint"], row["style"], row["size"], seed=row["seed"])
    path = Path(out_dir) / row["path"]
    tmp = path.with_suffix(".tmp")
    img.save(tmp, format="JPEG", quality=row["style"].quality)
    os.replace(tmp, path)


def _init_worker(whales):
    _WHALES.update(whales)


def render_all(jobs: list[tuple], whales: dict, workers: int) -> None:
    from tqdm.auto import tqdm

    if workers <= 1:
        _init_worker(whales)
        for job in tqdm(jobs, desc="render", unit="img"):
            _render_row(job)
        return
    with get_context("fork").Pool(workers, initializer=_init_worker, initargs=(whales,)) as pool:
        for _ in tqdm(pool.imap_unordered(_render_row, jobs, chunksize=16), total=len(jobs), desc="render", unit="img"):
            pass


def synthesize(preset_name: str, out: str | Path, seed: int = 0, workers: int | None = None,
               variant: str = "base") -> dict:
    """Write the survey; returns counts and images per second."""
    from core.scenarios import build_scenarios, write_scenarios

    if preset_name not in PRESETS:
        raise SystemExit(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    preset, look = PRESETS[preset_name], get_variant(variant)
    out = Path(out)
    started = time.time()
    n_train = max(2, round(preset.train_whales * look.whale_factor))
    n_test = max(2, round(preset.test_whales * look.whale_factor))
    train_whales, train_rows = plan_survey(preset, n_train, "train", seed * 2 + 1, 0, look)
    test_whales, test_rows = plan_survey(preset, n_test, "test", seed * 2 + 2, n_train, look)
    jobs = []
    for split, rows in (("train", train_rows), ("test", test_rows)):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        jobs += [(split, str(out / split), r) for r in rows]
    render_all(jobs, {"train": train_whales, "test": test_whales}, workers or os.cpu_count() or 1)

    def table(rows):
        return pd.DataFrame([{"image_id": r["image_id"], "path": r["path"], "height": r["size"][1],
                              "width": r["size"][0], "viewpoint": r["viewpoint"], "date": r["date"],
                              "timestamp": r["timestamp"], "whale_id": r["whale_id"],
                              "encounter_id": r["encounter_id"]} for r in rows])

    train, test = table(train_rows), table(test_rows)
    train.to_csv(out / "train" / "metadata.csv", index=False)
    test[["image_id", "path", "height", "width", "viewpoint", "date"]].to_csv(out / "test" / "metadata.csv", index=False)
    kinds = ("top_all", "top_same_year", "top_later_vs_earlier", "top_vs_lateral", "lateral_vs_top")
    scenarios = build_scenarios(test, kinds=kinds, max_queries=preset.max_queries, seed=seed)
    labels = write_scenarios(scenarios, out / "test")
    labels.to_csv(out / "test_labels.csv", index=False)
    seconds = time.time() - started
    n = len(train) + len(test)
    return {"preset": preset_name, "variant": variant, "train_images": len(train), "train_whales": int(train.whale_id.nunique()),
            "test_images": len(test), "test_whales": int(test.whale_id.nunique()),
            "queries": int(sum(len(s.queries) for s in scenarios)), "scenarios": [s.name for s in scenarios],
            "seconds": round(seconds, 1), "images_per_second": round(n / seconds, 1)}


def contact_sheet(path: str | Path, seed: int = 0, n_whales: int = 4) -> None:
    """A grid: one row per whale; top views in two years, the left and the right flank, neutral and photographed."""
    rng = np.random.default_rng(seed)
    whales = [make_whale(f"whale{i}", rng) for i in range(n_whales)]
    for w in whales:  # show a later-year scar on the first whale
        w.birth_year = min(w.birth_year, 2012)
    whales[0].marks.append(Mark("scar", 0.55, 0.1, 50, 0.8, 8, 0.6, year_from=2019))
    cell_w, cell_h = 230, 240
    columns = [("top", 2017, True), ("top", 2019, True), ("top", 2019, False), ("left", 2019, False),
               ("right", 2019, False), ("right", 2019, True)]
    left, head = 90, 36  # room for the row and column labels
    sheet = Image.new("RGB", (left + cell_w * len(columns), head + cell_h * n_whales), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, (view, year, neutral) in enumerate(columns):
        label = f"{view} {year}\n{'neutral' if neutral else 'photographed'}"
        draw.multiline_text((left + c * cell_w + 8, 2), label, fill=(0, 0, 0), spacing=2)
    for r, whale in enumerate(whales):
        draw.text((6, head + r * cell_h + cell_h // 2 - 6), whale.whale_id, fill=(0, 0, 0))
        for c, (view, year, neutral) in enumerate(columns):
            style = PhotoStyle.neutral() if neutral else random_style(rng, {"water": (0.33, 0.4, 0.36), "light": 1.0, "heading": 0})
            size = (200, 480) if view == "top" else (480, 170)
            img = render(whale, year, view, style, size, seed=[seed, r, c])
            img.thumbnail((cell_w - 10, cell_h - 10))
            sheet.paste(img, (left + c * cell_w + 5, head + r * cell_h + 5))
    sheet.save(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.synthesize", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="survey size (default: small)")
    p.add_argument("--variant", choices=list(VARIANTS), default="base",
                   help="the survey's look (default: base, the original); see --list-variants")
    p.add_argument("--list-variants", action="store_true", help="print each variant's knobs and exit")
    p.add_argument("--out", help="output folder (gets train/, test/, test_labels.csv)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--sheet", help="write a contact sheet PNG instead of (or as well as) a survey")
    args = p.parse_args(argv)
    if args.list_variants:
        from dataclasses import asdict

        base = asdict(Variant())
        for name, v in VARIANTS.items():
            changed = {k: val for k, val in asdict(v).items() if val != base[k]}
            print(f"{name:16s} {changed or '(the original look)'}")
        return
    if not args.out and not args.sheet:
        p.error("give --out DIR and/or --sheet FILE.png")
    if args.sheet:
        contact_sheet(args.sheet, args.seed)
        print(f"contact sheet written to {args.sheet}")
    if args.out:
        import json

        print(json.dumps(synthesize(args.preset, args.out, args.seed, args.workers, args.variant)))


if __name__ == "__main__":
    main()
