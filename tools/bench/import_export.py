"""Photo-ID data in and out at scale: a 100,000-annotation Wild Me COCO import, and the catalogue's exports.

    python -m tools.bench.import_export [--annotations 100000] [--images 10000] [--size 96x64]

Writes ``--images`` synthetic JPEG photos and a COCO file with ``--annotations`` boxes over them (Wild Me's
fields: name, viewpoint, bbox, date_captured, gps), then times ``whaleid import coco`` on it (crops written) with
its peak resident memory; puts the imported rows into a catalogue (random 64-d embeddings: the export reads no
embedding) and times ``export --format csv``, ``wildbook`` and ``capture-history`` with their peak memory. One
table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def make_source(root: Path, annotations: int, images: int, size, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "photos").mkdir(parents=True)
    w, h = size
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    imgs = []
    for i in range(images):
        Image.fromarray(np.roll(base, i, axis=1)).save(root / "photos" / f"p{i:06d}.jpg", quality=90)
        imgs.append({"id": i, "file_name": f"photos/p{i:06d}.jpg", "width": w, "height": h,
                     "date_captured": f"20{17 + i % 5}-0{1 + i % 9}-1{i % 10} 12:00:00",
                     "gps_lat_captured": f"{60 + rng.random():.6f}", "gps_lon_captured": f"{-151 + rng.random():.6f}"})
    whales = max(1, annotations // 8)
    views = ("up", "left", "right", "upleft", "frontright")
    anns = [{"id": j, "image_id": int(j % images), "bbox": [int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2)),
                                                             w // 3, h // 3],
             "name": "____" if j % 50 == 0 else f"whale{int(rng.integers(0, whales)):06d}", "viewpoint": views[j % 5],
             "uuid": f"a{j:07d}"} for j in range(annotations)]
    path = root / "export.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": [{"id": 0, "name": "beluga"}]}))
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.bench.import_export", description=__doc__.split("\n\n")[0])
    p.add_argument("--annotations", type=int, default=100_000)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--size", default="96x64", help="photo width x height")
    args = p.parse_args(argv)

    from catalogue.exchange.coco import read_coco
    from catalogue.exchange.exporting import write
    from catalogue.exchange.importing import write_survey
    from catalogue.records.store import Catalogue
    from tools.bench.search import PeakRSS

    w, h = (int(v) for v in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="whaleid_import_bench_"))
    coco = make_source(root, args.annotations, args.images, (w, h))
    rows = []
    with PeakRSS() as mem:
        t = time.perf_counter()
        summary = write_survey(read_coco(coco), root, root / "survey", source=str(coco))
        took = time.perf_counter() - t
    rows.append(("import coco (crops written)", took, mem.peak, summary["imported"] + summary["unidentified"]))
    import pandas as pd

    meta = pd.read_csv(root / "survey" / "metadata.csv", dtype=str, keep_default_na=False)
    cat = Catalogue.create(root / "c.sqlite", "0" * 64, "bench", 64)
    emb = np.random.default_rng(0).standard_normal((len(meta), 64)).astype(np.float32)
    cat.add_photos(meta.to_dict(orient="records"), emb, "bench")
    for fmt, name in (("csv", "c.csv"), ("wildbook", "wildbook.csv"), ("capture-history", "ch.csv")):
        with PeakRSS() as mem:
            t = time.perf_counter()
            write(cat, root / name, fmt, **({"genus": "Delphinapterus", "species": "leucas"} if fmt == "wildbook" else {}))
            took = time.perf_counter() - t
        rows.append((f"export --format {fmt}", took, mem.peak, len(meta)))
    cat.close()
    print(f"{args.annotations:,} annotations over {args.images:,} photos of {w}x{h} px")
    print("| step | seconds | peak RSS MB | rows |")
    print("|---|---|---|---|")
    for name, secs, peak, n in rows:
        print(f"| {name} | {secs:.1f} | {peak / 2**20:.0f} | {n:,} |")
    result = {"annotations": args.annotations, "images": args.images,
              "steps": {name: {"seconds": secs, "peak_rss_mb": peak / 2**20, "rows": n} for name, secs, peak, n in rows}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
