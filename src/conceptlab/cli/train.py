"""`conceptlab train base|ti`: the base model, and textual inversion (DreamBooth joins here)."""

from __future__ import annotations

from conceptlab.cli.common import add_model_flags, flag


def add_train_flags(p) -> None:
    """Flags of the shared training loop; None means 'not given' so config files are not overridden."""
    flag(p, "--config", default=None, help="JSON/TOML config file (flags override it)")
    flag(p, "--out", required=True)
    flag(p, "--steps", type=int)
    flag(p, "--lr", type=float)
    flag(p, "--scale-lr", action="store_const", const=True, help="lr *= batch size * accumulation * processes")
    flag(p, "--lr-schedule", help="constant, constant_with_warmup, linear, cosine")
    flag(p, "--warmup-steps", type=int)
    flag(p, "--batch-size", type=int)
    flag(p, "--gradient-accumulation", type=int)
    flag(p, "--mixed-precision", help="no or bf16")
    flag(p, "--gradient-checkpointing", action="store_const", const=True)
    flag(p, "--seed", type=int)
    flag(p, "--checkpoint-every", type=int)
    flag(p, "--validation-prompt", dest="preview_prompts", action="append", help="repeatable; {} is not filled in")
    flag(p, "--preview-every", type=int)
    flag(p, "--resume", action="store_true", help="continue from the newest checkpoint in --out")


def train_overrides(args) -> dict:
    names = ("steps", "lr", "scale_lr", "lr_schedule", "warmup_steps", "batch_size", "gradient_accumulation",
             "mixed_precision", "gradient_checkpointing", "seed", "checkpoint_every", "preview_prompts",
             "preview_every")
    return {n: getattr(args, n) for n in names}


def add_parser(sub):
    p = sub.add_parser("train", help="train models and concepts")
    tsub = p.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    b = tsub.add_parser("base", help="train the sticker-world base model from scratch (resumable)")
    flag(b, "--config", default=None, help="JSON/TOML file with BaseModelConfig fields")
    flag(b, "--out", required=True, help="where the pipeline folder is written")
    flag(b, "--work", default=None, help="checkpoints and logs (default: OUT.work)")
    b.set_defaults(run=run_base)
    t = tsub.add_parser("ti", help="textual inversion: learn new tokens from 3-12 images, several concepts jointly")
    add_model_flags(t)
    flag(t, "--concept", action="append", default=None,
         help="TOKEN=DIR[,init=WORD|FILE][,vectors=K][,template=object|style|FILE][,captions=WORD]; repeat for "
              "several concepts. captions=WORD trains on each image's own caption (metadata.jsonl or NAME.txt) with WORD "
              "replaced by the token")
    flag(t, "--resolution", type=int)
    flag(t, "--random-crop", dest="center_crop", action="store_const", const=False)
    flag(t, "--no-flip", dest="flip", action="store_const", const=False)
    add_train_flags(t)
    t.set_defaults(run=run_ti)
    d = tsub.add_parser("dreambooth", help="DreamBooth on subjects (full fine-tune or --lora), with prior preservation")
    add_model_flags(d)
    flag(d, "--subject", action="append", default=None,
         help="ID=DIR,class=WORD[,template=...][,captions=WORD][,masks=DIR]; repeat for several. captions=WORD trains "
              "on each image's own caption (metadata.jsonl or NAME.txt) with WORD replaced by 'ID CLASS'; masks=DIR "
              "holds a mask per image, named like it (white = subject), and weights the loss toward the subject")
    flag(d, "--lora", action="store_const", const=True)
    flag(d, "--rank", type=int)
    flag(d, "--train-text-encoder", action="store_const", const=True)
    flag(d, "--prior-preservation", action="store_const", const=True)
    flag(d, "--class-images", type=int)
    flag(d, "--prior-weight", type=float)
    flag(d, "--class-dir", help="default: OUT/class-images/<class word>")
    flag(d, "--class-prompts", choices=("class", "captions"),
         help="class: class images from 'a CLASS' (default); captions: also from each subject's captions with the "
              "identifier dropped, each trained with its prompt, so the prior keeps the emotions and scenes they name")
    flag(d, "--resolution", type=int)
    flag(d, "--offset-noise", type=float)
    flag(d, "--min-snr-gamma", type=float)
    flag(d, "--mask-weight", type=float,
         help="for subjects given masks=DIR: a subject pixel's loss weight against a background pixel's (default 5)")
    flag(d, "--no-flip", dest="flip", action="store_const", const=False)
    add_train_flags(d)
    d.set_defaults(run=run_dreambooth)
    return p


def run_base(args) -> int:
    from pathlib import Path

    from conceptlab.config import load_config_file
    from conceptlab.training.base_model import BaseModelConfig, train_base_model

    cfg = BaseModelConfig.from_dict(load_config_file(args.config)) if args.config else BaseModelConfig()
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.name + ".work")
    train_base_model(cfg, work, out)
    print(f"base model written to {out}; checkpoints and log.jsonl in {work}")
    return 0


def ti_config(args):
    from dataclasses import asdict

    from conceptlab.config import dataclass_from_dict, load_config_file, merge_overrides
    from conceptlab.training.textual_inversion import TextualInversionConfig, parse_concept

    base = asdict(TextualInversionConfig())
    if args.config:
        base = merge_overrides(base, load_config_file(args.config))
    concepts = [asdict(parse_concept(c)) for c in args.concept] if args.concept else None
    merged = merge_overrides(base, {"model": args.model, "resolution": args.resolution, "center_crop": args.center_crop,
                                    "flip": args.flip, "train": train_overrides(args)})
    if concepts is not None:
        merged["concepts"] = concepts
    return dataclass_from_dict(TextualInversionConfig, merged)


def run_ti(args) -> int:
    from dataclasses import asdict

    from conceptlab.models.loading import load_pipeline
    from conceptlab.training.loop import Trainer
    from conceptlab.training.textual_inversion import TextualInversion, check_concepts

    cfg = ti_config(args)
    check_concepts(cfg.concepts)
    cfg.train.check()
    pipe = load_pipeline(cfg.model, device=args.device, dtype=args.dtype)
    method = TextualInversion(pipe, cfg)
    result = Trainer(method, cfg.train, args.out, config_record=asdict(cfg)).train(resume=args.resume)
    if result.stopped == "interrupted":
        return 130
    tokens = ", ".join(c.token for c in cfg.concepts)
    print(f"learned {tokens} in {result.steps} steps (final loss {result.losses[-1]:.4f}); files in {args.out}/<token>/; "
          f"use them with: conceptlab generate --concepts {args.out} --prompt 'a {cfg.concepts[0].token} ...'")
    return 0


def dreambooth_config(args):
    from dataclasses import asdict

    from conceptlab.config import dataclass_from_dict, load_config_file, merge_overrides
    from conceptlab.training.dreambooth import DreamBoothConfig, parse_subject

    base = asdict(DreamBoothConfig())
    if args.config:
        base = merge_overrides(base, load_config_file(args.config))
    names = ("lora", "rank", "train_text_encoder", "prior_preservation", "class_images", "prior_weight", "class_dir",
             "class_prompts", "resolution", "offset_noise", "min_snr_gamma", "mask_weight", "flip")
    merged = merge_overrides(base, {"model": args.model, **{n: getattr(args, n) for n in names},
                                    "train": train_overrides(args)})
    if args.subject:
        merged["subjects"] = [asdict(parse_subject(s)) for s in args.subject]
    return dataclass_from_dict(DreamBoothConfig, merged)


def run_dreambooth(args) -> int:
    from pathlib import Path

    from conceptlab.training.dreambooth import train_dreambooth

    cfg = dreambooth_config(args)
    _, result = train_dreambooth(cfg, args.out, resume=args.resume, device=args.device, dtype=args.dtype)
    if result.stopped == "interrupted":
        return 130
    what = "LoRA in " + str(Path(args.out) / "lora") if cfg.lora else "pipeline in " + str(Path(args.out) / "pipeline")
    print(f"trained {', '.join(s.identifier for s in cfg.subjects)} for {result.steps} steps; {what}")
    return 0
