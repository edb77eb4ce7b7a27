"""`conceptlab concepts inspect|convert|mix|soup`: learned-embedding files in every format, and weight soups of runs."""

from __future__ import annotations

from conceptlab.cli.common import add_command, add_group, add_model_flags, flag, load_model
from conceptlab.validation import SAMPLING_STEPS, SEED

FORMAT_CHOICES = ("diffusers", "a1111-pt", "a1111-safetensors", "kohya", "numpy", "all")


def add_parser(sub):
    csub = add_group(sub, "concepts", help="inspect, convert and mix learned embeddings; soup fine-tuned runs",
                     dest="concepts_command")
    i = add_command(csub, "inspect", help="format, token, shape and metadata of embedding files", run=run_inspect)
    flag(i, "files", nargs="+", help="embedding files in any supported format (read by content, not by suffix)")
    c = add_command(csub, "convert", help="write an embedding in another format", run=run_convert)
    flag(c, "file", help="the embedding file to convert")
    flag(c, "--to", required=True, choices=FORMAT_CHOICES, help="the format to write; all writes every one")
    flag(c, "--out", required=True, help="output file (a folder with --to all)")
    flag(c, "--token", default=None, help="rename the token, e.g. '<my-broccoli>' (default: keep the file's)")
    m = add_command(csub, "mix", help="blend concepts into a new token (the seed's 'percentage of emoji')", run=run_mix)
    flag(m, "files", nargs="+", help="two or more embedding files of the same shape")
    flag(m, "--weight", default=None,
         help="share of the second concept (two concepts), or one weight per concept summing to 1 (default: equal)")
    flag(m, "--method", default="lerp", choices=("lerp", "slerp"), help="linear or spherical interpolation")
    flag(m, "--name", required=True, help="the new token, e.g. '<broccoli-emoji>'")
    flag(m, "--out", required=True, help="folder for the mixed embedding (all formats)")
    flag(m, "--sweep", default=None, help="shares of the second concept to render as a strip, e.g. 0,0.25,0.5,0.75,1")
    flag(m, "--prompt", default="a sticker of a {}", help="prompt of the strip; {} is the mixed token")
    flag(m, "--seed", type=SEED.arg, default=0, help="seed of the strip's first row")
    flag(m, "--steps", type=SAMPLING_STEPS.arg, default=30, help="denoising steps of the strip")
    add_model_flags(m)
    s = add_command(csub, "soup", help="the weighted mean of fine-tuned runs of one base model (a model soup; LoRA runs "
                    "by their products)",
                    run=run_soup)
    flag(s, "runs", nargs="+", help="two or more finished `train dreambooth` --out folders (e.g. one per --seed), all full "
         "fine-tunes or all --lora")
    flag(s, "--out", required=True, help="new run folder for the soup (pipeline/ or lora/, and training.json)")
    flag(s, "--weights", default=None, help="one weight per run, e.g. 2,1,1 (scaled to sum 1; default: equal)")
    return csub


def run_soup(args) -> int:
    from conceptlab.concepts.lora import DIFFUSERS_NAME
    from conceptlab.concepts.soup import soup_runs
    from conceptlab.validation import NONNEG, parse_numbers

    weights = parse_numbers("--weights", args.weights, NONNEG) if args.weights else None
    out = soup_runs(args.runs, args.out, weights)
    use = f"--lora {out / 'lora' / DIFFUSERS_NAME}" if (out / "lora").is_dir() else f"--model {out / 'pipeline'}"
    print(f"soup of {len(args.runs)} runs: {out} (generate with {use})")
    return 0


def run_inspect(args) -> int:
    from conceptlab.concepts.formats import detect_format, load_embedding

    embs = [(f, load_embedding(f, argument="files")) for f in args.files]  # all checked before any is printed
    for f, emb in embs:
        norms = ", ".join(f"{n:.3f}" for n in emb.vectors.norm(dim=-1).tolist())
        print(f"{f}: format {detect_format(f)}, token {emb.token!r}, {emb.num_vectors} x {emb.dim} (norms {norms})")
        for k, v in sorted(emb.meta.items()):
            print(f"    {k}: {v}")
    return 0


def run_convert(args) -> int:
    from dataclasses import replace

    from conceptlab.concepts.formats import load_embedding, save_all_formats, save_embedding
    from conceptlab.validation import output_dir, output_file, text

    emb = load_embedding(args.file, argument="file")
    if args.token is not None:
        emb = replace(emb, token=text("--token", args.token, example="'<my-concept>'"))
    if args.to == "all":
        written = save_all_formats(emb, output_dir("--out", args.out))
        print("\n".join(f"{fmt}: {path}" for fmt, path in written.items()))
    else:
        print(save_embedding(emb, output_file("--out", args.out), args.to))
    return 0


def run_mix(args) -> int:
    from conceptlab.concepts.formats import load_embedding, save_all_formats
    from conceptlab.concepts.mixing import mix_embeddings, parse_weights
    from conceptlab.errors import InputError
    from conceptlab.validation import FRACTION, output_dir, parse_numbers, text

    text("--name", args.name, example="'<broccoli-emoji>'")
    embs = [load_embedding(f, argument="files") for f in args.files]
    mixed = mix_embeddings(embs, parse_weights(args.weight, len(embs)), args.name, args.method)
    ts = parse_numbers("--sweep", args.sweep, FRACTION) if args.sweep else None
    if ts is not None:  # everything the strip needs is checked before the first file is written
        if len(embs) != 2:
            raise InputError("--sweep", args.sweep, "needs exactly two concepts", "Pass two embedding files")
        if "{}" not in text("--prompt", args.prompt):
            raise InputError("--prompt", args.prompt, "has no {} for the mixed token", "e.g. --prompt 'a sticker of a {}'")
    out = output_dir("--out", args.out)
    written = save_all_formats(mixed, out)
    print(f"mixed {[e.token for e in embs]} into {args.name}: {written['diffusers']}")
    if ts is not None:
        from conceptlab.concepts.sweep import render_sweep

        pipe = load_model(args)
        path = render_sweep(pipe, embs, ts, args.method, args.prompt, args.seed, args.steps, out)
        print(f"interpolation strip: {path}")
    return 0
