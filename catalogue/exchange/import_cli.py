"""``whaleid import coco|csv``: the command line of ``catalogue.exchange.importing``."""

from __future__ import annotations

from pathlib import Path

from catalogue.exchange.crops import ROTATED
from catalogue.exchange.importing import UNKNOWN_NAMES, VIEWS, parse_map, write_survey


def report(summary: dict, out: Path) -> str:
    lines = [f"{summary['source']}: {summary['records']} records: {summary['imported']} photos of {summary['whales']} "
             f"whales in {out}, {summary['unidentified']} of unknown individuals in {out / 'unidentified'}, "
             f"{len(summary['skipped'])} skipped (listed in {out / 'skipped.csv'})"]
    for s in summary["skipped"][:10]:
        lines.append(f"  skipped {s['source_row']}" + (f" ({s['source_image']})" if s["source_image"] else "")
                     + f": {s['reason']}")
    if len(summary["skipped"]) > 10:
        lines.append(f"  ... and {len(summary['skipped']) - 10} more in {out / 'skipped.csv'}")
    return "\n".join(lines)


def add_parser(sub) -> None:
    """``whaleid import coco|csv``."""
    from catalogue.exchange.coco import FIELDS, read_coco
    from catalogue.exchange.spreadsheet import TABLE_FIELDS, read_table

    def common(p):
        p.add_argument("--images", type=Path, required=True, help="the folder the photo paths are relative to")
        p.add_argument("--out", type=Path, required=True, help="the survey folder to write (new or empty)")
        p.add_argument("--margin", type=float, default=0.1, help="crop margin on each side, as a share of the box's "
                       "width and height (default 0.1)")
        p.add_argument("--viewpoint-map", help="LABEL=top|left|right,... before the built-in word rules")
        p.add_argument("--unmapped-viewpoint", choices=VIEWS, help="where a label mapping to none goes (default: "
                       "the record is skipped and named)")
        p.add_argument("--unknown", default=",".join(UNKNOWN_NAMES),
                       help="labels that name no individual, comma-separated, compared trimmed and ignoring case; "
                       "their photos go to SURVEY/unidentified/ (default: %(default)s, with the empty label)")
        p.add_argument("--species", help="import only this species' records (the others are named in skipped.csv)")
        p.add_argument("--rotated", choices=ROTATED, default="upright", help="a box with a rotation (theta): turned "
                       "upright and cut, or cut by its outer box (default upright)")

    imp = sub.add_parser("import", help="write a survey folder from a Wild Me COCO export or a spreadsheet")
    kinds = imp.add_subparsers(dest="kind", required=True)
    c = kinds.add_parser("coco", help="a Wild Me COCO export (annotations with bbox, name, viewpoint)")
    c.add_argument("annotations", type=Path, help="the COCO .json file")
    c.add_argument("--field", help="FIELD=KEY,... where the export names fields otherwise; fields and defaults: "
                   + ", ".join(f"{k}={v}" for k, v in FIELDS.items()))
    common(c)
    t = kinds.add_parser("csv", help="a plain table, one row per photo (or per box)")
    t.add_argument("table", type=Path, help="a .csv or tab-separated file")
    t.add_argument("--map", help="FIELD=COLUMN,... for " + ", ".join(TABLE_FIELDS) + " (default: same names); bbox is "
                   "one column 'x y width height'")
    t.add_argument("--keep", help="COLUMN,... other columns carried as they are into the survey's metadata.csv")
    common(t)

    def run(args) -> int:
        if args.kind == "coco":
            records = read_coco(args.annotations, parse_map(args.field, "--field"))
            src = args.annotations
        else:
            records = read_table(args.table, parse_map(args.map, "--map"),
                                 [c.strip() for c in (args.keep or "").split(",") if c.strip()])
            src = args.table
        summary = write_survey(records, args.images, args.out, args.margin, parse_map(args.viewpoint_map, "--viewpoint-map"),
                               args.unmapped_viewpoint, str(src), unknown=[u for u in args.unknown.split(",")] + [""],
                               species=args.species, rotated=args.rotated)
        print(report(summary, args.out))
        return 0 if summary["imported"] or summary["unidentified"] else 1

    imp.set_defaults(func=run)
