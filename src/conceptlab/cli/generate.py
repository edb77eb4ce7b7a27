"""`conceptlab generate`: prompt -> N seeded images with their settings, optionally a grid."""

from __future__ import annotations

from conceptlab.cli.common import add_command, add_model_flags, flag, load_model
from conceptlab.validation import BATCH, GUIDANCE, IMAGES, SAMPLING_STEPS, SEED, SIZE


def add_parser(sub):
    p = add_command(sub, "generate", help="generate images from a prompt with reproducible seeds", run=run)
    add_model_flags(p)
    flag(p, "--prompt", required=True, help="what to draw, e.g. 'a sticker of a happy green apple on a beach'")
    flag(p, "--negative-prompt", default="", help="what to steer away from (default: none)")
    flag(p, "-n", "--num-images", dest="n", type=IMAGES.arg, default=4, help="number of images")
    flag(p, "--seed", type=SEED.arg, default=0, help="image i uses seed + i, so any image can be made again alone")
    flag(p, "--steps", type=SAMPLING_STEPS.arg, default=30, help="denoising steps")
    flag(p, "--guidance", type=GUIDANCE.arg, default=7.5, help="classifier-free guidance scale")
    flag(p, "--scheduler", default=None, help="ddim, euler, euler_a, dpm++, ... (default: the model's own)")
    flag(p, "--width", type=SIZE.arg, default=None, help="pixels (default: the model's native size)")
    flag(p, "--height", type=SIZE.arg, default=None, help="pixels (default: the model's native size)")
    flag(p, "--format", default="png", choices=("png", "jpg"), help="image file format")
    flag(p, "--batch-size", type=BATCH.arg, default=4,
         help="images per pipeline call (moves a pixel by at most one level of 255: float rounding)")
    flag(p, "--concepts", nargs="*", action="extend", default=[], metavar="PATH",
         help="embedding files, `train ti` output folders, or `train pivotal` bundles (a bundle.safetensors or its "
              "run folder: tokens and LoRA) whose tokens the prompt may use")
    flag(p, "--lora", action="append", default=[], metavar="FILE[:SCALE]",
         help="a LoRA file (diffusers or kohya) applied at SCALE (default 1.0); repeat for several")
    flag(p, "--grid", action="store_true", help="also write grid.png")
    flag(p, "--out", required=True, help="output folder (created if missing; images are added to it)")
    return p


def run(args) -> int:
    from pathlib import Path

    from conceptlab.concepts.lora import parse_lora_specs
    from conceptlab.generation.generate import GenerationConfig, check_config, run_generation
    from conceptlab.validation import check_seed_range, output_dir

    cfg = GenerationConfig(
        prompt=args.prompt, negative_prompt=args.negative_prompt, n=args.n, seed=args.seed, steps=args.steps,
        guidance=args.guidance, scheduler=args.scheduler, width=args.width, height=args.height,
        format=args.format, batch_size=args.batch_size, grid=args.grid,
    )
    check_config(cfg)  # fail on bad flags before loading a model
    check_seed_range("--seed", args.seed, args.n)
    loras = parse_lora_specs(args.lora)
    output_dir("--out", args.out)
    pipe = load_model(args)
    if args.concepts or loras:
        from conceptlab.concepts.bundle import add_learned

        print("\n".join(add_learned(pipe, args.concepts, loras)))
    from conceptlab.models.loading import model_label

    rows = run_generation(pipe, cfg, args.out, model=model_label(args.model))
    if rows:
        print(f"wrote {len(rows)} images to {args.out} (seeds {rows[0]['seed']}..{rows[-1]['seed']}); "
              f"settings in {Path(args.out) / 'generations.jsonl'}")
    return 0
