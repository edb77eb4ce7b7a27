"""`conceptlab edit`, `conceptlab attention` and `conceptlab invert`: Prompt-to-Prompt from the command line."""

from __future__ import annotations

from conceptlab.cli.common import add_command, add_model_flags, flag, load_model
from conceptlab.validation import FEATHER, FRACTION, GUIDANCE, IMAGES, REFINE_STEPS, SAMPLING_STEPS, SEED


def _parse_reweight(items: list[str] | None) -> tuple[dict[str, float], list[float] | None]:
    """['blossom=-2,-1,0,1,2'] -> ({'blossom': -2.0}, [-2, -1, 0, 1, 2]) (a series renders a strip)."""
    from conceptlab.errors import InputError
    from conceptlab.validation import WEIGHT, parse_numbers

    weights, series = {}, None
    for item in items or []:
        word, sep, values = item.partition("=")
        if not sep or not word.strip() or not values.strip():
            raise InputError("--reweight", item, "expected WORD=SCALE or WORD=S1,S2,...", "e.g. --reweight flowers=2")
        numbers = parse_numbers("--reweight", values, WEIGHT)
        weights[word] = numbers[0]
        if len(numbers) > 1:
            if series is not None:
                raise InputError("--reweight", item, "only one word may take a series", "Give the others one scale")
            series = numbers
    return weights, series


REFINE_HELP = "first fit the image's latent to the decoder for N Adam steps (0 = off; ~100 lifts the VAE's ceiling)"
INVERSIONS = ("ddim", "null-text", "negative-prompt", "direct")
INVERSION_HELP = ("ddim (fast, loose), null-text (exact, slow), negative-prompt (fast, close) or direct (fast: the source "
                  "branch is put back on the inversion's trajectory at every step, Ju et al. 2024)")


def add_parser(sub):
    e = add_command(sub, "edit", help="Prompt-to-Prompt: edit an image by editing its prompt", run=run_edit)
    add_model_flags(e)
    flag(e, "--prompt", required=True, help="the source prompt (with --from-image: what the picture shows)")
    flag(e, "--to", action="append", default=None, help="a target prompt; repeat for several")
    flag(e, "--mode", default="auto", choices=("auto", "replace", "refine"),
         help="replace swaps words one for one, refine adds or removes words; auto picks and says which")
    flag(e, "--reweight", action="append", default=None,
         help="WORD=SCALE, or WORD=S1,S2,... for a strip of edits (1 = unchanged, 0 = off, negative = the opposite)")
    flag(e, "--reweight-attention-only", action="store_true",
         help="scale only the attention to the word's tokens (Hertz et al.), not its share of the other tokens' text "
              "states; small text encoders carry a word mostly in those")
    flag(e, "--blend", default=None, help="comma-separated words whose region may change (local blend)")
    flag(e, "--blend-mask", default="attention", choices=("attention", "difference"),
         help="attention (the --blend words' maps, as Hertz et al.) or difference (where source and edit drift apart; "
              "no words needed, tighter on small models)")
    flag(e, "--mask", default=None, metavar="FILE",
         help="a picture of the region that may change (white; black is kept from the source at every step from "
              "--blend-start, default 0), resized to the image; instead of --blend or the difference mask")
    flag(e, "--mask-noise", type=FRACTION.arg, default=0.0,
         help="share of fresh noise the edits start from inside --mask (0: the source's own noise; 1: fresh, so a "
              "new subject draws its own layout there instead of the source's, e.g. an added learned subject)")
    flag(e, "--mask-paste", type=FEATHER.arg, default=None, metavar="PX",
         help="after decoding, take the source's pixels outside --mask, the seam softened over PX pixels (2 is "
              "usual): the kept region is then exact, which a small model's decoder alone does not keep")
    flag(e, "--blend-threshold", type=FRACTION.arg, default=None,
         help="share of the mask's range (default 0.3 attention, 0.4 difference)")
    flag(e, "--blend-start", type=FRACTION.arg, default=None,
         help="fraction of the steps run before blending starts; the difference mask is taken then (default 0.2 "
              "attention, 0.3 difference)")
    flag(e, "--cross-steps", type=FRACTION.arg, default=0.8,
         help="fraction of the steps whose cross-attention comes from the source (more keeps more of the layout)")
    flag(e, "--self-steps", type=FRACTION.arg, default=0.4,
         help="fraction of the steps whose self-attention comes from the source (more keeps more of the look)")
    flag(e, "--seed", type=SEED.arg, default=0, help="seed of the first source image (image i uses seed + i)")
    flag(e, "-n", "--num-images", dest="n", type=IMAGES.arg, default=1,
         help="source images to edit, from seeds seed, seed+1, ... (ignored with --from-image)")
    flag(e, "--steps", type=SAMPLING_STEPS.arg, default=30, help="denoising steps")
    flag(e, "--guidance", type=GUIDANCE.arg, default=7.5, help="classifier-free guidance scale")
    flag(e, "--from-image", default=None,
         help="edit this picture instead of a generated one: it is inverted under --prompt (best at the model's "
              "native size, on a plain background, drawn like the model's own images)")
    flag(e, "--method", "--inversion", dest="method", default="direct", choices=INVERSIONS,
         help="how --from-image is inverted (default direct: an exact source at negative-prompt's speed, as the "
              "studio edits): " + INVERSION_HELP)
    flag(e, "--refine-steps", type=REFINE_STEPS.arg, default=0, help=REFINE_HELP)
    flag(e, "--concepts", nargs="*", action="extend", default=[], metavar="PATH",
         help="embedding files, `train ti` output folders or `train pivotal` bundles (tokens and LoRA) whose tokens "
              "the prompts may use, e.g. --to 'a <tuki> monster on a beach' (an added token is an inserted word: "
              "refine mode)")
    flag(e, "--lora", action="append", default=[], metavar="FILE[:SCALE]",
         help="a LoRA file (diffusers or kohya) applied at SCALE (default 1.0) to every branch, the source and its "
              "inversion too; the target names its subject's word. Repeat for several")
    flag(e, "--format", default="png", choices=("png", "jpg"), help="image file format")
    flag(e, "--out", required=True, help="output folder for the images, grid.png and edits.json")
    a = add_command(sub, "attention", help="a grid of per-word cross-attention maps over the image", run=run_attention)
    add_model_flags(a)
    flag(a, "--prompt", required=True, help="the prompt whose words' maps are drawn")
    flag(a, "--seed", type=SEED.arg, default=0, help="seed of the image")
    flag(a, "--steps", type=SAMPLING_STEPS.arg, default=30, help="denoising steps")
    flag(a, "--out", required=True, help="output folder for attention.png")
    i = add_command(sub, "invert", help="invert a real image and report its reconstruction PSNR", run=run_invert)
    add_model_flags(i)
    flag(i, "image", help="the picture to invert (PNG/JPEG; resized to the model's size)")
    flag(i, "--prompt", required=True, help="what the picture shows, e.g. 'a sticker of a happy emoji'")
    flag(i, "--method", "--inversion", dest="method", default="null-text", choices=INVERSIONS, help=INVERSION_HELP)
    flag(i, "--steps", type=SAMPLING_STEPS.arg, default=30, help="DDIM steps")
    flag(i, "--guidance", type=GUIDANCE.arg, default=7.5, help="guidance the inversion is fitted for")
    flag(i, "--refine-steps", type=REFINE_STEPS.arg, default=0, help=REFINE_HELP)
    flag(i, "--out", required=True, help="output folder for reconstruction.png and inversion.json")
    return e


def _edit_settings(args) -> dict:
    return dict(mode=args.mode, cross_steps=args.cross_steps, self_steps=args.self_steps, steps=args.steps,
                guidance=args.guidance, blend=[w for w in (args.blend or "").split(",") if w.strip()],
                blend_mask=args.blend_mask, blend_threshold=args.blend_threshold, blend_start=args.blend_start,
                mask=args.mask, mask_noise=args.mask_noise, mask_paste=args.mask_paste,
                reweight_text=not args.reweight_attention_only)


def run_edit(args) -> int:

    from conceptlab.concepts.lora import parse_lora_specs
    from conceptlab.editing.edit import EditConfig, check_edit, edit
    from conceptlab.errors import InputError
    from conceptlab.imaging import make_grid
    from conceptlab.io import atomic_write_json
    from conceptlab.validation import check_seed_range, open_image, output_dir

    if not args.to:
        raise InputError("--to", None, "no target prompt", "Add --to 'the edited prompt'")
    weights, series = _parse_reweight(args.reweight)
    settings = _edit_settings(args)
    check_edit(EditConfig(source=args.prompt, targets=args.to, reweight=weights, seed=args.seed, **settings))
    check_seed_range("--seed", args.seed, args.n)
    picture = open_image("--from-image", args.from_image) if args.from_image else None
    loras = parse_lora_specs(args.lora)
    out = output_dir("--out", args.out)
    pipe = load_model(args)
    _add_learned(pipe, args.concepts, loras)  # before inversion: the source is inverted with the LoRA applied
    inversion = None
    if picture is not None:
        from conceptlab.editing.inversion import invert

        inversion = invert(pipe, picture, args.prompt, args.method, args.steps, args.guidance,
                           refine_steps=args.refine_steps)
    out.mkdir(parents=True, exist_ok=True)
    rows, strip, labels = [], [], []
    for seed in range(args.seed, args.seed + (1 if inversion is not None else args.n)):
        if series:
            word = next(iter(weights))
            results = [edit(pipe, args.prompt, args.to, seed=seed, reweight={**weights, word: w}, inversion=inversion,
                            **settings) for w in series]
            strip += [results[0].images[0]] + [r.images[1] for r in results]
            labels += ["source"] + [f"{word} x{w:g}" for w in series]
        else:
            results = [edit(pipe, args.prompt, args.to, seed=seed, reweight=weights, inversion=inversion, **settings)]
            strip += results[0].images
            labels += ["source"] + [f"edit {j + 1}" for j in range(len(args.to))]
        rows += _save_edits(results, series, seed, out, args.format)
    cols = (len(series) + 1) if series else (1 + len(args.to))
    make_grid(strip, cols=cols, labels=labels, scale=2).save(out / "grid.png")
    atomic_write_json(rows, out / "edits.json")
    why = "words or phrases swapped one for one" if rows[0]["mode_used"] == "replace" else "words added or removed"
    print(f"mode: {rows[0]['mode_used']} ({why}); {len(rows)} edits in {out} (grid.png)")
    return 0


def _add_learned(pipe, concepts: list[str], loras: list) -> None:
    """Loads the --concepts and applies the --lora files (parsed before the model loaded) the prompts may use."""
    from conceptlab.concepts.bundle import add_learned

    if concepts or loras:  # embeddings, pivotal bundles (tokens and LoRA) and LoRA files, applied together
        print("\n".join(add_learned(pipe, concepts, loras)))


def _save_edits(results, series, seed: int, out, fmt: str) -> list[dict]:
    """Writes each result's images (and blend mask) named by seed (and weight); returns their rows."""
    from conceptlab.imaging import save_image

    rows = []
    for k, result in enumerate(results):
        tag = f"-w{series[k]:g}" if series else ""
        names = [f"seed{seed}-source.{fmt}"] + [f"seed{seed}-edit{j + 1}{tag}.{fmt}" for j in range(len(result.images) - 1)]
        for name, im in zip(names, result.images):
            save_image(im, out / name, {**result.settings(), "seed": seed})
        if result.mask is not None:  # where the edits may differ from the source, white; one column per edit
            names.append(f"seed{seed}-blend-mask{tag}.png")
            _mask_image(result.mask, result.images[0].size).save(out / names[-1])
        rows.append({"seed": seed, "files": names, **result.settings()})
    return rows


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
    from conceptlab.plots import plot_attention
    from conceptlab.validation import output_dir, text

    text("--prompt", args.prompt, example="'a sticker of a happy red star on a beach'")
    output_dir("--out", args.out)
    pipe = load_model(args)
    image, tokens, maps = attention_maps(pipe, args.prompt, args.seed, args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = plot_attention(image, tokens, maps, out / "attention.png")
    print(f"attention maps of {len(tokens)} tokens: {path}")
    return 0


def run_invert(args) -> int:
    from pathlib import Path

    from conceptlab.editing.inversion import check_inversion, invert, reconstruct
    from conceptlab.evaluation.metrics import psnr
    from conceptlab.imaging import make_grid
    from conceptlab.io import atomic_write_json
    from conceptlab.models.loading import model_label
    from conceptlab.validation import open_image, output_dir

    check_inversion(args.prompt, args.steps, args.guidance, args.refine_steps)
    picture = open_image("image", args.image)
    output_dir("--out", args.out)
    pipe = load_model(args)
    inv = invert(pipe, picture, args.prompt, args.method, args.steps, args.guidance,
                 refine_steps=args.refine_steps)
    rec = reconstruct(pipe, inv)
    value = psnr(inv.image, rec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make_grid([inv.image, rec], cols=2, scale=4).save(out / "reconstruction.png")
    atomic_write_json({"method": args.method, "psnr_db": value, "seconds": inv.seconds, "image": str(args.image),
                       "model": model_label(args.model), "model_config": args.model_config, "dtype": args.dtype,
                       "prompt": args.prompt, "steps": args.steps, "guidance": args.guidance,
                       "refine_steps": args.refine_steps}, out / "inversion.json")
    print(f"{args.method} inversion: reconstruction PSNR {value:.2f} dB in {inv.seconds:.1f} s ({out})")
    return 0
