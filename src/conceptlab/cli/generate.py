"""`conceptlab generate`: prompt -> N seeded images with their settings, optionally a grid."""

from __future__ import annotations

from conceptlab.cli.common import add_model_flags, flag, model_label


def add_parser(sub):
    p = sub.add_parser("generate", help="generate images from a prompt with reproducible seeds")
    add_model_flags(p)
    flag(p, "--concepts", nargs="*", action="extend", default=[], help="embedding files or `train ti` output folders to load")
    flag(p, "--prompt", required=True)
    flag(p, "--negative-prompt", default="")
    flag(p, "-n", "--num-images", dest="n", type=int, default=4, help="number of images (default 4)")
    flag(p, "--seed", type=int, default=0, help="image i uses seed + i (default 0)")
    flag(p, "--steps", type=int, default=30)
    flag(p, "--guidance", type=float, default=7.5)
    flag(p, "--scheduler", default=None, help="ddim, euler, euler_a, dpm++, ... (default: the model's)")
    flag(p, "--width", type=int, default=None)
    flag(p, "--height", type=int, default=None)
    flag(p, "--format", default="png", help="png or jpg")
    flag(p, "--batch-size", type=int, default=4)
    flag(p, "--grid", action="store_true", help="also write grid.png")
    flag(p, "--out", required=True, help="output folder")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from conceptlab.generation.generate import GenerationConfig, check_config, check_output_dir, run_generation
    from conceptlab.models.loading import load_pipeline

    cfg = GenerationConfig(
        prompt=args.prompt, negative_prompt=args.negative_prompt, n=args.n, seed=args.seed, steps=args.steps,
        guidance=args.guidance, scheduler=args.scheduler, width=args.width, height=args.height,
        format=args.format, batch_size=args.batch_size, grid=args.grid,
    )
    check_config(cfg)  # fail on bad flags before loading a model
    check_output_dir(Path(args.out))
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    if args.concepts:
        from conceptlab.concepts.tokens import load_concept_paths

        loaded = load_concept_paths(pipe, args.concepts)
        print("loaded concepts: " + ", ".join(f"{e.token} ({e.num_vectors} vectors)" for e in loaded))
    rows = run_generation(pipe, cfg, args.out, model=model_label(args.model))
    if rows:
        print(f"wrote {len(rows)} images to {args.out} (seeds {rows[0]['seed']}..{rows[-1]['seed']}); "
              f"settings in {Path(args.out) / 'generations.jsonl'}")
    return 0
