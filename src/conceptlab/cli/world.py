"""`conceptlab world export`: labelled sticker renders as a Hugging Face imagefolder."""

from __future__ import annotations

from conceptlab.cli.common import flag


def add_parser(sub):
    p = sub.add_parser("world", help="the sticker world: render labelled stickers")
    wsub = p.add_subparsers(dest="world_command", required=True, metavar="ACTION")
    e = wsub.add_parser("export", help="write N renders with metadata.jsonl (imagefolder convention)")
    flag(e, "--n", "-n", dest="n", type=int, required=True)
    flag(e, "--out", required=True)
    flag(e, "--seed", type=int, default=0)
    flag(e, "--size", type=int, default=64)
    flag(e, "--only", nargs="*", action="extend", default=[], metavar="ATTR=V[,V]", help="keep only these values")
    flag(e, "--exclude", nargs="*", action="extend", default=[], metavar="ATTR=V[,V]", help="never these values")
    flag(e, "--individual-rate", type=float, default=0.3,
         help="chance that a monster is a named individual (default 0.3)")
    flag(e, "--format", default="png", help="png or jpg")
    flag(e, "--masks", nargs="?", const="silhouette", default=False, choices=("silhouette", "face"),
         help="also write a mask per image to OUT/masks/ for a masked loss: the object's silhouette (the default), "
              "or 'face': the face white, the rest of the object dark grey")
    e.set_defaults(run=run_export)
    return p


def run_export(args) -> int:
    from conceptlab.world.attributes import parse_filters
    from conceptlab.world.export import export_images

    path = export_images(
        args.out, args.n, seed=args.seed, size=args.size, only=parse_filters(args.only, "--only"),
        exclude=parse_filters(args.exclude, "--exclude"), individual_rate=args.individual_rate,
        fmt=args.format, masks=args.masks,
    )
    print(f"wrote {args.n} stickers and {path}")
    return 0
