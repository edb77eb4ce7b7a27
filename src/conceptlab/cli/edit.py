"""`conceptlab edit`, `conceptlab attention` and `conceptlab invert`: Prompt-to-Prompt from the command line."""

from __future__ import annotations

from conceptlab.cli.common import add_model_flags, flag


def _parse_reweight(items: list[str] | None) -> tuple[dict[str, float], list[float] | None]:
    """['blossom=-2,-1,0,1,2'] -> ({'blossom': -2.0}, [-2, -1, 0, 1, 2]) (a series renders a strip)."""
    from conceptlab.errors import InputError

    weights, series = {}, None
    for item in items or []:
        word, sep, values = item.partition("=")
        try:
            numbers = [float(v) for v in values.split(",")]
        except ValueError:
            numbers = []
        if not sep or not word or not numbers:
            raise InputError("--reweight", item, "expected WORD=SCALE or WORD=S1,S2,...", "e.g. --reweight flowers=2")
        weights[word] = numbers[0]
        if len(numbers) > 1:
            series = numbers
    return weights, series


REFINE_HELP = "first fit the image's latent to the decoder for N Adam steps (0 = off; ~100 lifts the VAE's ceiling)"


def add_parser(sub):
    e = sub.add_parser("edit", help="Prompt-to-Prompt: edit an image by editing its prompt")
    add_model_flags(e)
    flag(e, "--prompt", required=True, help="the source prompt")
    flag(e, "--to", action="append", default=None, help="a target prompt; repeat for several")
    flag(e, "--mode", default="auto", help="auto, replace or refine")
    flag(e, "--reweight", action="append", default=None, help="WORD=SCALE, or WORD=S1,S2,... for a strip")
    flag(e, "--reweight-attention-only", action="store_true",
         help="scale only the attention to the word's tokens (Hertz et al.), not its share of the other tokens' text "
              "states; small text encoders carry a word mostly in those")
    flag(e, "--blend", default=None, help="comma-separated words whose region may change (local blend)")
    flag(e, "--blend-mask", default="attention",
         help="attention (the --blend words' maps, as Hertz et al.) or difference (where source and edit drift apart; "
              "no words needed, tighter on small models)")
    flag(e, "--blend-threshold", type=float, default=None, help="share of the mask's range (default 0.3 attention, "
                                                                 "0.4 difference)")
    flag(e, "--blend-start", type=float, default=None,
         help="fraction of the steps run before blending starts; the difference mask is taken then (default 0.2 "
              "attention, 0.3 difference)")
    flag(e, "--cross-steps", type=float, default=0.8)
    flag(e, "--self-steps", type=float, default=0.4)
    flag(e, "--seed", type=int, default=0)
    flag(e, "-n", "--num-seeds", dest="n", type=int, default=1, help="edit this many seeds (seed, seed+1, ...)")
    flag(e, "--steps", type=int, default=30)
    flag(e, "--guidance", type=float, default=7.5)
    flag(e, "--from-image", default=None, help="edit a real image (inverted under --prompt)")
    flag(e, "--inversion", default="null-text", help="ddim, null-text or negative-prompt (with --from-image)")
    flag(e, "--refine-steps", type=int, default=0, help=REFINE_HELP)
    flag(e, "--out", required=True)
    e.set_defaults(run=run_edit)
    a = sub.add_parser("attention", help="a grid of per-word cross-attention maps over the image")
    add_model_flags(a)
    flag(a, "--prompt", required=True)
    flag(a, "--seed", type=int, default=0)
    flag(a, "--steps", type=int, default=30)
    flag(a, "--out", required=True)
    a.set_defaults(run=run_attention)
    i = sub.add_parser("invert", help="invert a real image and report its reconstruction PSNR")
    add_model_flags(i)
    flag(i, "image")
    flag(i, "--prompt", required=True)
    flag(i, "--method", default="null-text", help="ddim, null-text or negative-prompt")
    flag(i, "--steps", type=int, default=30)
    flag(i, "--guidance", type=float, default=7.5)
    flag(i, "--refine-steps", type=int, default=0, help=REFINE_HELP)
    flag(i, "--out", required=True)
    i.set_defaults(run=run_invert)
    return e


def run_edit(args) -> int:
    from pathlib import Path

    from conceptlab.editing.edit import edit
    from conceptlab.errors import InputError
    from conceptlab.imaging import make_grid, save_image
    from conceptlab.io import atomic_write_json
    from conceptlab.models.loading import load_pipeline

    if not args.to:
        raise InputError("--to", None, "no target prompt", "Add --to 'the edited prompt'")
    weights, series = _parse_reweight(args.reweight)
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(mode=args.mode, cross_steps=args.cross_steps, self_steps=args.self_steps, steps=args.steps,
                    guidance=args.guidance, blend=[w for w in (args.blend or "").split(",") if w],
                    blend_mask=args.blend_mask, blend_threshold=args.blend_threshold, blend_start=args.blend_start,
                    reweight_text=not args.reweight_attention_only)
    inversion = None
    if args.from_image:
        from PIL import Image

        from conceptlab.editing.inversion import invert

        inversion = invert(pipe, Image.open(args.from_image), args.prompt, args.inversion, args.steps, args.guidance,
                           refine_steps=args.refine_steps)
    rows, strip = [], []
    for k in range(args.n):
        seed = args.seed + k
        if series:
            word = next(iter(weights))
            results = [edit(pipe, args.prompt, args.to, seed=seed, reweight={word: w}, inversion=inversion, **settings)
                       for w in series]
            strip += [results[0].images[0]] + [r.images[1] for r in results]
            result = results[0]
        else:
            result = edit(pipe, args.prompt, args.to, seed=seed, reweight=weights, inversion=inversion, **settings)
        names = [f"seed{seed}-source.png"] + [f"seed{seed}-edit{j + 1}.png" for j in range(len(args.to))]
        for name, im in zip(names, result.images):
            save_image(im, out / name, {**result.settings(), "seed": seed})
        if result.mask is not None:  # where the edits may differ from the source, white; one column per edit
            names.append(f"seed{seed}-blend-mask.png")
            _mask_image(result.mask, result.images[0].size).save(out / names[-1])
        rows.append({"seed": seed, "files": names, **result.settings()})
        strip = strip if series else strip + result.images
    cols = (len(series) + 1) if series else (1 + len(args.to))
    make_grid(strip, cols=cols, scale=2).save(out / "grid.png")
    atomic_write_json(rows, out / "edits.json")
    why = "words or phrases swapped one for one" if rows[0]["mode_used"] == "replace" else "words added or removed"
    print(f"mode: {rows[0]['mode_used']} ({why}); {len(rows)} edits in {out} (grid.png)")
    return 0


def _mask_image(mask, size):
    """(n, 1, h, w) local-blend mask -> the targets' masks side by side, upscaled to the image size."""
    from PIL import Image

    cols = [Image.fromarray((m[0].float().numpy() * 255).astype("uint8")).resize(size, Image.NEAREST)
            for m in mask[1:]]
    sheet = Image.new("L", (size[0] * len(cols), size[1]))
    for k, im in enumerate(cols):
        sheet.paste(im, (k * size[0], 0))
    return sheet


def run_attention(args) -> int:
    from pathlib import Path

    from conceptlab.editing.edit import attention_maps
    from conceptlab.models.loading import load_pipeline
    from conceptlab.plots import plot_attention

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    image, tokens, maps = attention_maps(pipe, args.prompt, args.seed, args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = plot_attention(image, tokens, maps, out / "attention.png")
    print(f"attention maps of {len(tokens)} tokens: {path}")
    return 0


def run_invert(args) -> int:
    from pathlib import Path

    from PIL import Image

    from conceptlab.editing.inversion import invert, reconstruct
    from conceptlab.evaluation.metrics import psnr
    from conceptlab.imaging import make_grid
    from conceptlab.io import atomic_write_json
    from conceptlab.models.loading import load_pipeline

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    inv = invert(pipe, Image.open(args.image), args.prompt, args.method, args.steps, args.guidance,
                 refine_steps=args.refine_steps)
    rec = reconstruct(pipe, inv)
    value = psnr(inv.image, rec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make_grid([inv.image, rec], cols=2, scale=4).save(out / "reconstruction.png")
    atomic_write_json({"method": args.method, "psnr_db": value, "seconds": inv.seconds, "steps": args.steps,
                       "refine_steps": args.refine_steps},
                      out / "inversion.json")
    print(f"{args.method} inversion: reconstruction PSNR {value:.2f} dB in {inv.seconds:.1f} s ({out})")
    return 0
