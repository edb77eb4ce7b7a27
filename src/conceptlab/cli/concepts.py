"""`conceptlab concepts inspect|convert|mix`: learned-embedding files in every format."""

from __future__ import annotations

from conceptlab.cli.common import add_model_flags, flag


def add_parser(sub):
    p = sub.add_parser("concepts", help="inspect, convert and mix learned embeddings")
    csub = p.add_subparsers(dest="concepts_command", required=True, metavar="ACTION")
    i = csub.add_parser("inspect", help="format, token, shape and metadata of embedding files")
    flag(i, "files", nargs="+")
    i.set_defaults(run=run_inspect)
    c = csub.add_parser("convert", help="write an embedding in another format")
    flag(c, "file")
    flag(c, "--to", required=True, help="diffusers, a1111-pt, a1111-safetensors, kohya, numpy, or all")
    flag(c, "--out", required=True, help="output file (or folder with --to all)")
    flag(c, "--token", default=None, help="rename the token")
    c.set_defaults(run=run_convert)
    m = csub.add_parser("mix", help="blend concepts into a new token (the seed's 'percentage of emoji')")
    flag(m, "files", nargs="+", help="two or more embedding files")
    flag(m, "--weight", default=None, help="share of the second concept (two concepts), or one weight per concept")
    flag(m, "--method", default="lerp", help="lerp or slerp")
    flag(m, "--name", required=True, help="the new token, e.g. '<broccoli-emoji>'")
    flag(m, "--out", required=True, help="folder for the mixed embedding (all formats)")
    flag(m, "--sweep", default=None, help="e.g. 0,0.25,0.5,0.75,1: render an interpolation strip")
    flag(m, "--prompt", default="a sticker of a {}", help="prompt of the strip; {} is the mixed token")
    flag(m, "--seed", type=int, default=0)
    flag(m, "--steps", type=int, default=30)
    add_model_flags(m)
    m.set_defaults(run=run_mix)
    return p


def run_inspect(args) -> int:
    from conceptlab.concepts.formats import detect_format, load_embedding

    for f in args.files:
        emb = load_embedding(f)
        norms = ", ".join(f"{n:.3f}" for n in emb.vectors.norm(dim=-1).tolist())
        print(f"{f}: format {detect_format(f)}, token {emb.token!r}, {emb.num_vectors} x {emb.dim} (norms {norms})")
        for k, v in sorted(emb.meta.items()):
            print(f"    {k}: {v}")
    return 0


def run_convert(args) -> int:
    from dataclasses import replace

    from conceptlab.concepts.formats import FORMATS, load_embedding, save_all_formats, save_embedding
    from conceptlab.errors import InputError

    emb = load_embedding(args.file)
    if args.token:
        emb = replace(emb, token=args.token)
    if args.to == "all":
        written = save_all_formats(emb, args.out)
        print("\n".join(f"{fmt}: {path}" for fmt, path in written.items()))
    elif args.to in FORMATS:
        print(save_embedding(emb, args.out, args.to))
    else:
        raise InputError("--to", args.to, "unknown format", f"Use one of {FORMATS} or all")
    return 0


def run_mix(args) -> int:
    from pathlib import Path

    from conceptlab.concepts.formats import load_embedding, save_all_formats
    from conceptlab.concepts.mixing import mix_embeddings, parse_weights

    embs = [load_embedding(f) for f in args.files]
    mixed = mix_embeddings(embs, parse_weights(args.weight, len(embs)), args.name, args.method)
    written = save_all_formats(mixed, args.out)
    print(f"mixed {[e.token for e in embs]} into {args.name}: {written['diffusers']}")
    if args.sweep:
        from conceptlab.concepts.sweep import render_sweep

        ts = [float(x) for x in args.sweep.split(",")]
        path = render_sweep(args.model, embs, ts, args.method, args.prompt, args.seed, args.steps, Path(args.out))
        print(f"interpolation strip: {path}")
    return 0
