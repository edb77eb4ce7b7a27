"""`conceptlab world export`: labelled sticker renders as a Hugging Face imagefolder."""

from __future__ import annotations

from conceptlab.cli.common import add_command, add_group, flag
from conceptlab.validation import FRACTION, RENDER_SIZE, SEED, Bound

RENDERS = Bound(1, 1_000_000, integer=True, hint="how many stickers to render")


def add_parser(sub):
    wsub = add_group(sub, "world", help="the sticker world: render labelled stickers", dest="world_command")
    e = add_command(wsub, "export", help="write N renders with metadata.jsonl (imagefolder convention)", run=run_export)
    flag(e, "--n", "-n", dest="n", type=RENDERS.arg, required=True, help="number of stickers")
    flag(e, "--out", required=True, help="output folder (images, metadata.jsonl)")
    flag(e, "--seed", type=SEED.arg, default=0, help="sticker i is drawn from seed + i")
    flag(e, "--size", type=RENDER_SIZE.arg, default=64, help="pixels per side")
    flag(e, "--only", nargs="*", action="extend", default=[], metavar="ATTR=V[,V]",
         help="keep only these values, e.g. object=broccoli emotion=happy,sad")
    flag(e, "--exclude", nargs="*", action="extend", default=[], metavar="ATTR=V[,V]", help="never these values")
    flag(e, "--cover", nargs="+", default=[], metavar="ATTR",
         help="spread the N renders over these attributes' values (those --only allows): each value about equally "
              "often, no combination twice before all are used, e.g. --cover emotion background for training "
              "pictures that show every emotion and every scene")
    flag(e, "--individual-rate", type=FRACTION.arg, default=0.3, help="chance that a monster is a named individual")
    flag(e, "--format", default="png", choices=("png", "jpg"), help="image file format")
    flag(e, "--masks", nargs="?", const="silhouette", default=False, choices=("silhouette", "face"),
         help="also write a mask per image to OUT/masks/ for a masked loss: the object's silhouette (the default), "
              "or 'face': the face white, the rest of the object dark grey")
    o = add_command(wsub, "offworld", help="write the out-of-world test set: pictures drawn unlike the sticker world, "
                    "with the region each edit may change (masks/) and metadata.jsonl", run=run_offworld)
    flag(o, "--n", "-n", dest="n", type=RENDERS.arg, default=40, help="pictures, half faces and half objects")
    flag(o, "--seed", type=SEED.arg, default=0, help="the set is drawn from this seed")
    flag(o, "--out", required=True, help="output folder (images, masks/, metadata.jsonl)")
    return wsub


def run_offworld(args) -> int:
    from conceptlab.evaluation.offworld import OffworldConfig, export_offworld
    from conceptlab.validation import output_dir

    output_dir("--out", args.out)
    path = export_offworld(args.out, OffworldConfig(n=args.n, seed=args.seed))
    print(f"wrote {args.n} pictures, their masks and {path}")
    return 0


def run_export(args) -> int:
    from conceptlab.validation import output_dir
    from conceptlab.world.attributes import parse_filters
    from conceptlab.world.export import cover_cells, cover_values, export_cells, export_images

    only, exclude = parse_filters(args.only, "--only"), parse_filters(args.exclude, "--exclude")
    output_dir("--out", args.out)
    options = dict(size=args.size, exclude=exclude, individual_rate=args.individual_rate, fmt=args.format,
                   masks=args.masks)
    if args.cover:
        cells = cover_cells(cover_values(args.cover, only, exclude), args.n)
        path = export_cells(args.out, cells, seed=args.seed, only=only, **options)
    else:
        path = export_images(args.out, args.n, seed=args.seed, only=only, **options)
    print(f"wrote {args.n} stickers and {path}")
    return 0

