"""A second survey renderer, sharing no code with ``tools.synthesize``: a check that a recipe chosen on one
generator's surveys is not fitted to that generator.

    python -m tools.outline_survey --preset {tiny,bench} --variant {calm,choppy} --out DIR [--seed N]
    python -m tools.outline_survey --sheet sheet.png                 # one row per whale, to judge by eye

Writes the competition layout (``DIR/train``, ``DIR/test`` with scenario files, ``DIR/test_labels.csv``),
like ``tools.synthesize``, but draws whales another way:

- **body**: an outline from a length, a width, a melon bulge and a tail taper per whale; seen from above it
  is the body's two edges, from the side the dorsal ridge over a waterline;
- **marks**: scars as polylines (darker or lighter than the skin) and pock marks, drawn on a map in body
  coordinates per side (back, left flank, right flank); *nicks* are notches cut into the outline: into
  the edges seen from above, into the ridge seen from the side; a scar may appear in a later year;
- **light, water, camera**: a sun direction per encounter shades the body (Lambert on a round
  cross-section); water is a tinted field of crossing swells with glints; the body sinks into it toward
  the tail; the camera rotates per encounter, blurs along a motion direction, adds sensor noise, a white
  balance and a JPEG quality.

It is used only to confirm a choice made on ``tools.synthesize``'s variants, never to make one.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import zlib
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

MAP_U, MAP_S = 240, 80  # mark-map resolution: along the body, across it


@dataclass(frozen=True)
class Look:
    swell: float = 0.10  # brightness amplitude of the water's swells
    glints: float = 0.002  # share of water pixels that glint
    mark_tone: tuple = (0.18, 0.40)  # how far a scar is from the skin tone
    submerge: tuple = (0.0, 0.35)  # share of the body, from the tail, under water
    blur: float = 2.0  # longest motion blur, pixels
    noise: float = 0.02  # sensor noise, s.d. on [0, 1]
    rotation: float = 12.0  # heading per encounter, s.d. in degrees


VARIANTS = {
    "calm": Look(),
    "choppy": Look(swell=0.22, glints=0.01, mark_tone=(0.10, 0.25), submerge=(0.1, 0.5), blur=4.0, noise=0.04,
                   rotation=25.0),
}
PRESETS = {"tiny": (16, 8, 4.0), "bench": (150, 60, 5.5)}  # train whales, test whales, mean photos per whale
YEARS = (2017, 2018, 2019)


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make_whale(seed: int, number: int, look: Look) -> dict:
    r = rng_for("whale", seed, number)
    whale = {"length": r.uniform(0.85, 1.0), "width": r.uniform(0.16, 0.24), "melon": r.uniform(0.0, 0.3),
             "taper": r.uniform(1.2, 2.2), "tone": r.uniform(0.72, 0.9), "marks": {}, "nicks": {}}
    for side in ("back", "left", "right"):
        scars = []
        for _ in range(r.integers(2, 6)):
            pts = [(r.uniform(0.1, 0.85), r.uniform(0.1, 0.9))]
            heading = r.uniform(0, 2 * math.pi)
            for _ in range(r.integers(2, 5)):
                heading += r.normal(0, 0.6)
                step = r.uniform(0.03, 0.09)
                pts.append((pts[-1][0] + step * math.cos(heading), pts[-1][1] + 2.5 * step * math.sin(heading)))
            sign = 1 if r.random() < 0.35 else -1
            year = YEARS[0] if r.random() < 0.8 else int(r.choice(YEARS[1:]))
            scars.append(("line", pts, r.uniform(1.5, 4.0), sign * r.uniform(*look.mark_tone), year))
        for _ in range(r.integers(0, 6)):
            c = (r.uniform(0.1, 0.9), r.uniform(0.1, 0.9))
            scars.append(("dot", [c], r.uniform(2, 5), -r.uniform(*look.mark_tone), YEARS[0]))
        whale["marks"][side] = scars
    for edge in ("left", "right", "ridge"):
        whale["nicks"][edge] = [(r.uniform(0.2, 0.85), r.uniform(0.015, 0.04), r.uniform(0.12, 0.35))
                                for _ in range(r.integers(0, 4))]
    return whale


def mark_map(whale: dict, side: str, year: int) -> np.ndarray:
    """Signed tone offsets [MAP_S, MAP_U] in (across, along) body coordinates for the marks seen by ``year``."""
    img = Image.new("F", (MAP_U, MAP_S), 0.0)
    draw = ImageDraw.Draw(img)
    for kind, pts, width, tone, since in whale["marks"][side]:
        if since > year:
            continue
        xy = [(u * MAP_U, s * MAP_S) for u, s in pts]
        if kind == "line":
            draw.line(xy, fill=float(tone), width=max(1, int(round(width))))
        else:
            (x, y), rad = xy[0], width
            draw.ellipse([x - rad, y - rad * 0.7, x + rad, y + rad * 0.7], fill=float(tone))
    a = np.asarray(img, np.float32)
    a = (np.roll(a, 1, 0) + 2 * a + np.roll(a, -1, 0)) / 4  # soften the strokes' edges
    return (np.roll(a, 1, 1) + 2 * a + np.roll(a, -1, 1)) / 4


def notch(u: np.ndarray, nicks) -> np.ndarray:
    """How far each outline position is cut in (share of the half-width or of the ridge height)."""
    cut = np.zeros_like(u)
    for centre, half, depth in nicks:
        t = (u - centre) / half
        cut = np.maximum(cut, np.where(np.abs(t) < 1, depth * (1 - t * t), 0.0))
    return cut


def water(h: int, w: int, r: np.random.Generator, look: Look, tint) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros((h, w), np.float32)
    for _ in range(3):
        a, f, ph = r.uniform(0, math.pi), r.uniform(0.02, 0.09), r.uniform(0, 2 * math.pi)
        field += np.sin((xx * math.cos(a) + yy * math.sin(a)) * f + ph).astype(np.float32)
    level = 0.30 + look.swell * field / 3
    level[r.random((h, w)) < look.glints] = 0.95
    return np.clip(level[..., None] * np.asarray(tint, np.float32), 0, 1)


def render(whale: dict, view: str, year: int, enc: dict, r: np.random.Generator, look: Look) -> Image.Image:
    """One photo: the canonical frame (top: head up; lateral: head left), rotated and cropped."""
    top = view == "top"
    h, w = (int(560 * whale["length"]), 240) if top else (260, int(640 * whale["length"]))
    along = h if top else w
    u = np.clip((np.arange(along, dtype=np.float32) - 0.05 * along) / (0.9 * along), 0, 1)
    profile = np.clip(np.clip(np.sin(math.pi * u), 0, 1) ** (1 / whale["taper"]) + whale["melon"] * np.exp(-((u - 0.12) / 0.08) ** 2), 0, 1.3)
    inside_u = (np.arange(along) >= 0.05 * along) & (np.arange(along) <= 0.95 * along)
    sun = np.asarray([math.cos(enc["sun"]), math.sin(enc["sun"]), 0.8])
    sun /= np.linalg.norm(sun)
    canvas = water(h, w, r, look, enc["tint"])
    if top:
        half = whale["width"] * 240 * 1.6 * profile
        cx = w / 2
        xs = np.arange(w, dtype=np.float32)[None, :]
        s = (xs - cx) / np.maximum(half[:, None], 1e-3)  # -1 left edge, +1 right edge
        left, right = 1 - notch(u, whale["nicks"]["left"]), 1 - notch(u, whale["nicks"]["right"])
        body = inside_u[:, None] & (s > -left[:, None]) & (s < right[:, None])
        marks = mark_map(whale, "back", year)
        mi = np.clip((u[:, None] * (MAP_U - 1)).astype(int), 0, MAP_U - 1) + 0 * xs.astype(int)
        mj = np.clip(((s + 1) / 2 * (MAP_S - 1)).astype(int), 0, MAP_S - 1)
        normal_x, normal_y = s, 0 * s
        depth_u = u[:, None] + 0 * s
    else:
        flank = enc["flank"]
        height = whale["width"] * 240 * 1.3 * profile * (1 - notch(u, whale["nicks"]["ridge"]))
        waterline = 0.78 * h
        ys = np.arange(h, dtype=np.float32)[:, None]
        ridge = waterline - height[None, :]
        s = (ys - ridge) / np.maximum(height[None, :], 1e-3)  # 0 at the ridge, 1 at the waterline
        body = inside_u[None, :] & (s >= 0) & (s <= 1)
        marks = mark_map(whale, flank, year)
        ui = u if flank == "left" else u[::-1]  # the right flank is seen head right: mirror the body axis
        mi = np.clip((ui[None, :] * (MAP_U - 1)).astype(int), 0, MAP_U - 1) + 0 * ys.astype(int)
        mj = np.clip((s * (MAP_S - 1)).astype(int), 0, MAP_S - 1)
        normal_x, normal_y = 0 * s, s - 1
        depth_u = ui[None, :] + 0 * s
        if flank == "right":
            body, s = body[:, ::-1], s[:, ::-1]
    nz = np.sqrt(np.clip(1 - normal_x ** 2 - normal_y ** 2, 0.05, 1))
    light = np.clip(0.55 + 0.45 * (normal_x * sun[0] + normal_y * sun[1] + nz * sun[2]), 0.3, 1.1)
    skin = np.clip((whale["tone"] + marks[mj, mi]) * light, 0, 1)
    sunk = np.clip((depth_u - (1 - enc["submerge"])) / 0.15, 0, 1) if top else np.clip((s - 0.85) / 0.15, 0, 1)
    alpha = (body * (1 - 0.8 * sunk))[..., None].astype(np.float32)
    canvas = canvas * (1 - alpha) + skin[..., None] * np.asarray(enc["balance"], np.float32) * alpha
    canvas = np.clip(canvas + r.normal(0, look.noise, canvas.shape).astype(np.float32), 0, 1)
    img = Image.fromarray((canvas * 255).astype(np.uint8), "RGB")
    img = img.rotate(enc["heading"] + r.normal(0, 2.0), resample=Image.BILINEAR, expand=False, fillcolor=(40, 70, 80))
    if look.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(r.uniform(0, look.blur) / 2))
    dx, dy = r.uniform(-0.06, 0.06) * w, r.uniform(-0.06, 0.06) * h
    img = img.crop((int(max(0, dx)), int(max(0, dy)), int(min(w, w + dx)), int(min(h, h + dy))))
    scale = enc["scale"]
    return img.resize((max(32, int(img.width * scale)), max(32, int(img.height * scale))), Image.BILINEAR)


def plan(seed: int, n_whales: int, mean_photos: float, first: int, split: str, look: Look) -> list[dict]:
    rows = []
    for k in range(n_whales):
        number = first + k
        r = rng_for("plan", seed, number)
        n = int(np.clip(round(r.lognormal(math.log(mean_photos) - 0.3, 0.75)), 2, 30))
        encounters = []
        while sum(e["photos"] for e in encounters) < n:
            year = int(r.choice(YEARS))
            encounters.append({"photos": int(r.integers(1, 5)), "date": f"{year}-{r.integers(6, 10):02d}-{r.integers(1, 29):02d}",
                               "hour": int(r.integers(8, 18))})
        encounters[-1]["photos"] -= sum(e["photos"] for e in encounters) - n  # exactly n photos
        for e_no, enc in enumerate(encounters):
            enc_id = f"whale{number:04d}_{enc['date'].replace('-', '')}{enc['hour']:02d}{e_no}"
            for p in range(enc["photos"]):
                rows.append({"whale_id": f"whale{number:04d}", "encounter_id": enc_id, "date": enc["date"],
                             "timestamp": f"{enc['date']} {enc['hour']:02d}:{p * 2:02d}:00",
                             "viewpoint": "top" if r.random() < 0.85 else ("left" if r.random() < 0.5 else "right"), "number": number,
                             "encounter": (number, e_no), "split": split})
    return rows


def _render_row(job) -> None:
    seed, look, out, i, row = job
    whale = make_whale(seed, row["number"], look)
    e = rng_for("encounter", seed, row["encounter"])
    enc = {"sun": e.uniform(0, 2 * math.pi), "tint": (e.uniform(0.5, 0.8), e.uniform(0.8, 1.0), e.uniform(0.8, 1.0)),
           "balance": (e.uniform(0.92, 1.05), 1.0, e.uniform(0.9, 1.08)), "heading": e.normal(0, look.rotation),
           "submerge": e.uniform(*look.submerge), "flank": "left" if e.random() < 0.5 else "right",
           "scale": e.uniform(0.75, 1.0)}
    r = rng_for("photo", seed, i)
    view = "top" if row["viewpoint"] == "top" else "lateral"
    if view == "lateral":
        enc["flank"] = row["viewpoint"]  # the competition's viewpoint names the flank: left or right
    img = render(whale, view, int(row["date"][:4]), enc, r, look)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(r.integers(55, 93)))
    (Path(out) / row["path"]).write_bytes(buf.getvalue())


def survey(preset: str, out: str | Path, variant: str = "calm", seed: int = 0, workers: int | None = None) -> dict:
    """Write the survey in the competition layout; returns its counts."""
    from core.scenarios import build_scenarios, write_scenarios

    if preset not in PRESETS or variant not in VARIANTS:
        raise SystemExit(f"choose --preset from {sorted(PRESETS)} and --variant from {sorted(VARIANTS)}")
    n_train, n_test, mean = PRESETS[preset]
    look, out = VARIANTS[variant], Path(out)
    tables = {}
    jobs = []
    for split, n, first in (("train", n_train, 0), ("test", n_test, n_train)):
        rows = plan(seed, n, mean, first, split, look)
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        for k, row in enumerate(rows):
            row.update(image_id=f"{split}{k:05d}", path=f"images/{split}{k:05d}.jpg")
            jobs.append((seed, look, str(out / split), len(jobs), row))
        tables[split] = rows
    with get_context("fork").Pool(workers or os.cpu_count() or 1) as pool:
        pool.map(_render_row, jobs, chunksize=16)
    for split, rows in tables.items():
        df = pd.DataFrame(rows)
        sizes = [Image.open(out / split / p).size for p in df.path]
        df["width"], df["height"] = [s[0] for s in sizes], [s[1] for s in sizes]
        tables[split] = df
    cols = ["image_id", "path", "height", "width", "viewpoint", "date"]
    tables["train"][cols + ["timestamp", "whale_id", "encounter_id"]].to_csv(out / "train" / "metadata.csv", index=False)
    tables["test"][cols].to_csv(out / "test" / "metadata.csv", index=False)
    kinds = ("top_all", "top_same_year", "top_later_vs_earlier", "top_vs_lateral", "lateral_vs_top")
    scenarios = build_scenarios(tables["test"], kinds=kinds, max_queries=200, seed=seed)
    write_scenarios(scenarios, out / "test").to_csv(out / "test_labels.csv", index=False)
    return {"train_images": len(tables["train"]), "test_images": len(tables["test"]),
            "scenarios": [s.name for s in scenarios]}


def sheet(path: str | Path, variant: str = "calm", seed: int = 0, whales: int = 4) -> None:
    look = VARIANTS[variant]
    rows = []
    for n in range(whales):
        whale = make_whale(seed, n, look)
        enc = {"sun": 1.0, "tint": (0.6, 0.9, 0.95), "balance": (1, 1, 1), "heading": 0.0, "submerge": 0.1,
               "flank": "left", "scale": 0.5}
        views = [render(whale, "top", y, enc, rng_for(n, y), look) for y in (2017, 2019)]
        views += [render(whale, "lateral", 2017, {**enc, "flank": f}, rng_for(n, f), look) for f in ("left", "right")]
        rows.append(views)
    width = max(sum(v.width for v in row) for row in rows)
    height = sum(max(v.height for v in row) for row in rows)
    canvas, y = Image.new("RGB", (width, height), "white"), 0
    for row in rows:
        x = 0
        for v in row:
            canvas.paste(v, (x, y))
            x += v.width
        y += max(v.height for v in row)
    canvas.save(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.outline_survey", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--preset", choices=sorted(PRESETS), default="bench")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="calm")
    p.add_argument("--out", type=Path, help="survey folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--sheet", type=Path, help="write a contact sheet PNG instead of a survey")
    args = p.parse_args(argv)
    if args.sheet:
        sheet(args.sheet, args.variant, args.seed)
    elif args.out:
        print(survey(args.preset, args.out, args.variant, args.seed, args.workers))
    else:
        p.error("give --out DIR or --sheet FILE.png")


if __name__ == "__main__":
    main()
