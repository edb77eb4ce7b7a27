"""`conceptlab train base|ti`: the base model, and textual inversion (DreamBooth joins here)."""

from __future__ import annotations

from conceptlab.cli.common import add_command, add_group, add_model_flags, flag
from conceptlab.validation import (
    BATCH,
    BUCKET_ASPECT,
    BUCKET_STEP,
    COUNT0,
    EMA_DECAY,
    FRACTION,
    IMAGES,
    LR,
    NONNEG,
    RANK,
    SAMPLING_STEPS,
    SEED,
    SHARE,
    SIZE,
    TIMESTEP_MULTIPLIER,
    TIMESTEP_PORTION,
    TRAIN_STEPS,
    VECTORS,
    Bound,
)

GAMMA = Bound(0, 1000, low_open=True, hint="5 is usual")


def add_train_flags(p) -> None:
    """Flags of the shared training loop; None means 'not given' so config files are not overridden."""
    flag(p, "--config", default=None, metavar="FILE",
         help="JSON/TOML file of this method's config (its dataclass fields; flags override it)")
    flag(p, "--out", required=True, help="run folder: checkpoints, previews, loss curve and the learned files")
    flag(p, "--steps", type=TRAIN_STEPS.arg,
         help="optimizer steps (default: 500 textual inversion, 400 DreamBooth and pivotal tuning)")
    flag(p, "--lr", type=LR.arg, help="learning rate (default: 5e-3 textual inversion, 1e-4 DreamBooth)")
    flag(p, "--scale-lr", action="store_const", const=True, help="lr *= batch size * accumulation * processes")
    flag(p, "--lr-schedule", choices=("constant", "constant_with_warmup", "linear", "cosine"),
         help="learning-rate schedule (default: constant)")
    flag(p, "--warmup-steps", type=COUNT0.arg, help="steps of linear warm-up (default: 0)")
    flag(p, "--batch-size", type=BATCH.arg, help="images per step (default: 4 textual inversion, 1 DreamBooth)")
    flag(p, "--gradient-accumulation", type=BATCH.arg, help="batches per optimizer step (default: 1)")
    flag(p, "--optimizer", choices=("adamw", "adafactor", "adamw8bit"),
         help="adamw (default); adafactor: a factored second moment, a fraction of AdamW's memory; adamw8bit: "
              "bitsandbytes' AdamW with 8-bit moments, a quarter of AdamW's memory for large weights (tensors under "
              "4096 weights, such as LoRA matrices, keep 32-bit ones; pip install bitsandbytes)")
    flag(p, "--mixed-precision", choices=("no", "fp16", "bf16"),
         help="autocast the frozen model's compute to this dtype (fp16 with a GradScaler), trainable weights stay "
              "float32; pair with --dtype float16|bfloat16 to store the frozen weights so. On a CPU bf16 is fast only "
              "with native bf16 and fp16 is slow (default: no)")
    flag(p, "--report-to", choices=("none", "tensorboard", "wandb"),
         help="also log step, loss, lr and validation scores through accelerate's tracker, into OUT/logs "
              "(tensorboard: pip install tensorboard; default: none, OUT/metrics.jsonl only)")
    flag(p, "--gradient-checkpointing", action="store_const", const=True, help="trade compute for memory")
    flag(p, "--seed", type=SEED.arg, help="seed of batches, noise, timesteps and --random-crop's places (default: 0)")
    flag(p, "--checkpoint-every", type=COUNT0.arg, help="steps between checkpoints; 0 = only at the end and on "
                                                        "Ctrl-C (default: 0)")
    flag(p, "--validation-prompt", dest="preview_prompts", action="append",
         help="a prompt rendered into the preview grids; repeatable")
    flag(p, "--preview-every", type=COUNT0.arg, help="steps between preview grids; 0 = none (default: 0)")
    flag(p, "--resume", action="store_true", help="continue from the newest intact checkpoint in --out")
    flag(p, "--overwrite", action="store_true", help="discard another run's checkpoints found in --out")


def add_crop_flag(p) -> None:
    flag(p, "--random-crop", dest="center_crop", action="store_const", const=False,
         help="crop each picture that is not square at a place drawn once per picture from --seed, instead of at "
              "the centre (with --buckets: within its bucket)")


def add_bucket_flags(p) -> None:
    """--buckets and its settings (training.buckets.BucketConfig); None means 'not given'."""
    flag(p, "--buckets", action="store_const", const=True,
         help="aspect-ratio buckets: each image trains at the bucket (about resolution^2 pixels) nearest its own shape "
              "instead of a square centre crop; on SDXL its real size and crop condition the UNet (default: off)")
    flag(p, "--bucket-step", type=BUCKET_STEP.arg,
         help="bucket sides are multiples of this many pixels (default: resolution / 16, e.g. 64 at 1024)")
    flag(p, "--bucket-max-aspect", type=BUCKET_ASPECT.arg,
         help="the longest bucket side over its shortest, at most (default: 4)")


def bucket_overrides(args) -> dict:
    return {"enabled": args.buckets, "step": args.bucket_step, "max_aspect": args.bucket_max_aspect}


def timestep_bias_overrides(args) -> dict:
    begin, end = args.timestep_bias_range or (None, None)
    return {"strategy": args.timestep_bias, "multiplier": args.timestep_bias_multiplier,
            "portion": args.timestep_bias_portion, "begin": begin, "end": end}


def train_overrides(args) -> dict:
    names = ("steps", "lr", "scale_lr", "lr_schedule", "warmup_steps", "batch_size", "gradient_accumulation",
             "optimizer", "mixed_precision", "gradient_checkpointing", "seed", "checkpoint_every", "preview_prompts",
             "preview_every", "report_to")
    return {n: getattr(args, n) for n in names}


def add_parser(sub):
    tsub = add_group(sub, "train", help="train models and concepts", dest="train_command")
    b = add_command(tsub, "base", help="train the sticker-world base model from scratch (resumable)", run=run_base,
                    config=False)
    flag(b, "--config", default=None, metavar="FILE", help="JSON/TOML file with BaseModelConfig fields (default: "
                                                          "the built-in defaults)")
    flag(b, "--out", required=True, help="where the pipeline folder is written")
    flag(b, "--work", default=None, help="checkpoints and logs (default: OUT.work)")
    flag(b, "--resume", action="store_true", help="continue the run in --work (it must have the same config)")
    t = add_command(tsub, "ti", help="textual inversion: learn new tokens from 3-12 images, several concepts jointly",
                    run=run_ti, config=False)
    add_model_flags(t)
    flag(t, "--concept", action="append", default=None,
         help="TOKEN=DIR[,init=WORD|FILE][,vectors=K][,template=object|style|FILE][,captions=WORD]; repeat for "
              "several concepts. captions=WORD trains on each image's own caption (metadata.jsonl or NAME.txt) with WORD "
              "replaced by the token")
    flag(t, "--resolution", type=SIZE.arg, help="training size in pixels (default: the model's native size)")
    add_crop_flag(t)
    flag(t, "--no-flip", dest="flip", action="store_const", const=False, help="do not add mirrored images")
    add_bucket_flags(t)
    add_train_flags(t)
    add_selection_flags(t)
    d = add_command(tsub, "dreambooth", help="DreamBooth on subjects (full fine-tune or --lora), with prior "
                    "preservation", run=run_dreambooth, config=False)
    add_model_flags(d)
    flag(d, "--lora", action="store_const", const=True, help="train LoRA adapters instead of every UNet weight")
    flag(d, "--train-text-encoder", action="store_const", const=True, help="also train the text encoder")
    add_subject_flags(d)
    add_bucket_flags(d)
    add_train_flags(d)
    add_selection_flags(d)
    pv = add_command(tsub, "pivotal", help="pivotal tuning: new tokens trained together with a UNet LoRA, saved as "
                     "one bundle and as embedding + LoRA files", run=run_pivotal, config=False)
    add_model_flags(pv)
    add_subject_flags(pv, example="'<tuki>'")
    flag(pv, "--vectors", type=VECTORS.arg, help="embedding vectors per token (default: 1)")
    flag(pv, "--token-lr", type=LR.arg, help="the tokens' learning rate; --lr is the LoRA's (default: 5e-3)")
    flag(pv, "--token-init", help="where each token's vectors start: class (its class word, the default), random "
                                   "(diffusers' advanced script without --initializer_concept) or a word")
    flag(pv, "--token-steps", type=COUNT0.arg, help="steps that train the tokens alone before the LoRA joins "
                                                    "(default: 0, together from the start)")
    flag(pv, "--token-frac", type=FRACTION.arg, help="share of the steps after which the tokens stop, as diffusers' "
                                                     "--train_text_encoder_ti_frac (default: 1.0, to the end)")
    flag(pv, "--train-text-encoder", action="store_const", const=True,
         help="also train a LoRA on the text encoders (at --lr), beside the tokens; with --full-fine-tune every "
              "text-encoder weight")
    flag(pv, "--full-fine-tune", dest="lora", action="store_const", const=False,
         help="train every UNet weight beside the tokens instead of a LoRA (OneTrainer's fine-tune with embeddings; "
              "use a lower --lr such as 1e-4); saves OUT/pipeline, its tokenizer holding the tokens, and no bundle")
    add_bucket_flags(pv)
    add_train_flags(pv)
    add_selection_flags(pv)
    return tsub


def add_subject_flags(d, example: str = "tuki") -> None:
    """The subject, LoRA-rank and prior-preservation flags `train dreambooth` and `train pivotal` share."""
    flag(d, "--subject", action="append", default=None,
         help=f"ID=DIR,class=WORD[,template=...][,captions=WORD][,masks=DIR][,prior_weight=W][,class_prompts=class|"
              f"captions|FILE]; repeat for several (ID e.g. {example}). captions=WORD trains on each image's own caption "
              "(metadata.jsonl or NAME.txt) with WORD replaced by 'ID CLASS'; masks=DIR holds a mask per image, named "
              "like it (white = subject), and weights the loss toward the subject; prior_weight and class_prompts set "
              "this subject's prior apart from --prior-weight and --class-prompts")
    flag(d, "--rank", type=RANK.arg, help="LoRA rank (default: 4)")
    flag(d, "--text-encoder-lr", type=LR.arg,
         help="with --train-text-encoder: the text encoders' own learning rate, e.g. a tenth of --lr (default: --lr)")
    flag(d, "--prior-preservation", action="store_const", const=True,
         help="also train on class images the base model draws, so the class keeps its meaning")
    flag(d, "--class-images", type=COUNT0.arg, help="class images to generate per class (default: 50)")
    flag(d, "--class-steps", type=SAMPLING_STEPS.arg, help="sampling steps per class image (default: 30)")
    flag(d, "--prior-weight", type=NONNEG.arg, help="weight of the class images' loss (default: 1.0)")
    flag(d, "--class-dir", help="folder of class images (default: OUT/class-images/<class word>)")
    flag(d, "--class-prompts", choices=("class", "captions"),
         help="class: class images from 'a CLASS' (default); captions: also from each subject's captions with the "
              "identifier dropped, each trained with its prompt, so the prior keeps the emotions and scenes they name")
    flag(d, "--resolution", type=SIZE.arg, help="training size in pixels (default: the model's native size)")
    flag(d, "--offset-noise", type=FRACTION.arg, help="offset noise strength, 0.05-0.1 for very dark or light "
                                                      "images (default: 0)")
    flag(d, "--min-snr-gamma", type=GAMMA.arg, help="Min-SNR loss weighting gamma, e.g. 5 (default: off)")
    flag(d, "--timestep-bias", choices=("none", "earlier", "later", "range"),
         help="draw training timesteps unevenly, as diffusers' SDXL scripts: earlier favours the low-noise ones (fine "
              "detail such as a face's marks), later the noisy ones (layout, colour), range --timestep-bias-range "
              "(default: none, every timestep equally)")
    flag(d, "--timestep-bias-multiplier", type=TIMESTEP_MULTIPLIER.arg,
         help="how many times as often the favoured timesteps are drawn (default: 2)")
    flag(d, "--timestep-bias-portion", type=TIMESTEP_PORTION.arg,
         help="earlier/later: the share of the timesteps favoured (default: 0.25)")
    flag(d, "--timestep-bias-range", type=COUNT0.arg, nargs=2, metavar=("BEGIN", "END"),
         help="range: favour timesteps BEGIN..END-1 (default: 0 1000)")
    flag(d, "--caption-dropout", type=SHARE.arg,
         help="for subjects trained on captions: the share of their examples trained on the bare prompt "
              "('a ID CLASS') instead, e.g. 0.3 (default: 0)")
    flag(d, "--mask-weight", type=GAMMA.arg,
         help="for subjects given masks=DIR: a subject pixel's loss weight against a background pixel's (default 5)")
    flag(d, "--ema-decay", type=EMA_DECAY.arg,
         help="save an exponential moving average of the weights (diffusers' EMAModel warm-up), e.g. 0.99; smooths "
              "a full fine-tune's step-to-step wandering (default 0: off; not with --select-by)")
    add_crop_flag(d)
    flag(d, "--no-flip", dest="flip", action="store_const", const=False, help="do not add mirrored images")


def add_selection_flags(p) -> None:
    """Checkpoint selection: validate every N steps, keep the best by a metric (training/selection.py)."""
    flag(p, "--select-by", default=None, metavar="SPEC",
         help="keep the checkpoint that scores best by a metric (identity, emotion, scene, object, colour, classifier, "
              "clip-t, clip-i, dino; per subject as identity/NAME) or a weighted sum such as identity=1,emotion=0.5; "
              "its files go to OUT/selected (default: off)")
    flag(p, "--validate-every", type=TRAIN_STEPS.arg, default=50,
         help="steps between validations with --select-by; the last step is validated too")
    flag(p, "--validation-seeds", type=IMAGES.arg, default=2,
         help="seeds per validation prompt (2 emotions x 2 scenes per subject or concept)")
    flag(p, "--judge", default=None, metavar="PATH", help="judge for the judged metrics (default: the shipped one)")
    flag(p, "--classifier", default=None, metavar="PATH", help="a `classify train` folder: adds the classifier metric")
    flag(p, "--clip-model", default=None, metavar="PATH", help="a local CLIPModel folder: adds clip-t and clip-i")
    flag(p, "--dino-model", default=None, metavar="PATH", help="a local DINO ViT folder: adds dino")


def run_base(args) -> int:

    from conceptlab.config import load_config_file
    from conceptlab.training.base_model import BaseModelConfig, check_inits, check_work_folder, train_base_model
    from conceptlab.validation import output_dir

    cfg = BaseModelConfig.from_dict(load_config_file(args.config)) if args.config else BaseModelConfig()
    out = output_dir("--out", args.out)
    work = output_dir("--work", args.work) if args.work else out.with_name(out.name + ".work")
    check_inits(cfg)
    check_work_folder(cfg, work, args.resume)
    train_base_model(cfg, work, out)
    print(f"base model written to {out}; checkpoints and log.jsonl in {work}")
    return 0


def _method_config(cls, args, flags: dict, lists: dict):
    """defaults < --config file < flags, for a method config dataclass; the file is checked on its own first,
    so an error names the file's key rather than a merged value."""
    from dataclasses import asdict

    from conceptlab.config import dataclass_from_dict, load_config_file, merge_overrides

    base = asdict(cls())
    if args.config:
        base = asdict(dataclass_from_dict(cls, merge_overrides(base, load_config_file(args.config)),
                                          where=f"--config {args.config}"))
    merged = merge_overrides(base, {**flags, "train": train_overrides(args)})
    merged.update({k: v for k, v in lists.items() if v is not None})
    return dataclass_from_dict(cls, merged)


def ti_config(args):
    from dataclasses import asdict

    from conceptlab.training.textual_inversion import TextualInversionConfig, parse_concept

    concepts = [asdict(parse_concept(c)) for c in args.concept] if args.concept else None
    return _method_config(TextualInversionConfig, args, {"model": args.model, "resolution": args.resolution,
                                                         "center_crop": args.center_crop, "flip": args.flip,
                                                         "buckets": bucket_overrides(args)},
                          {"concepts": concepts})


def _stopped_code(result) -> int:
    """A run the loop stopped with a checkpoint (it said how to resume): 143 after SIGTERM, 130 after Ctrl-C."""
    return 143 if result.stopped == "terminated" else 130


def _single_file_pipe(args, cfg):
    """The pipeline when --model-config describes a single-file --model; otherwise the library loads it."""
    if getattr(args, "model_config", None) is None:
        return None
    from conceptlab.models.loading import load_pipeline

    return load_pipeline(cfg.model, device=args.device, dtype=args.dtype, config=args.model_config)


def selection_hooks(args, subjects=None, concepts=None) -> list:
    """The checkpoint-selection hook --select-by asks for (none without it); every error comes before a model loads."""
    if not args.select_by:
        return []
    from conceptlab.training.selection import make_selection

    if not (subjects if subjects is not None else concepts):
        return []  # the library refuses the missing --subject / --concept with its own message
    return [make_selection(args.select_by, args.validate_every, subjects=subjects, concepts=concepts,
                           seeds=args.validation_seeds, judge=args.judge, classifier=args.classifier,
                           clip_model=args.clip_model, dino_model=args.dino_model)]


def _train(args, cfg, train, **selection):
    """Runs a library train function with the flags every train command shares; returns its TrainResult."""
    from conceptlab.validation import output_dir

    output_dir("--out", args.out)  # the library checks every setting before it loads the model
    hooks = selection_hooks(args, **selection)
    _, result = train(cfg, args.out, resume=args.resume, device=args.device, dtype=args.dtype,
                      overwrite=args.overwrite, pipe=_single_file_pipe(args, cfg), hooks=hooks)
    return result


def run_ti(args) -> int:
    from conceptlab.training.textual_inversion import train_textual_inversion

    cfg = ti_config(args)
    result = _train(args, cfg, train_textual_inversion, concepts=cfg.concepts)
    if result.stopped != "done":
        return _stopped_code(result)
    from pathlib import Path

    from conceptlab.concepts.formats import safe_name

    tokens = ", ".join(c.token for c in cfg.concepts)
    folders = ", ".join(str(Path(args.out) / safe_name(c.token)) for c in cfg.concepts)
    print(f"learned {tokens} in {result.steps} steps (final loss {result.losses[-1]:.4f}); files in {folders}; "
          f"use them with: conceptlab generate --concepts {args.out} --prompt 'a {cfg.concepts[0].token} ...'")
    return 0


# DreamBooth's and pivotal's
SUBJECT_FIELDS = ("lora", "rank", "train_text_encoder", "prior_preservation", "class_images", "class_steps",
                  "prior_weight", "class_dir", "class_prompts", "resolution", "offset_noise", "min_snr_gamma",
                  "mask_weight", "center_crop", "flip", "ema_decay", "text_encoder_lr", "caption_dropout")
TOKEN_FIELDS = ("vectors", "token_lr", "token_init", "token_steps", "token_frac")  # pivotal's own


def _subjects_config(cls, args, names: tuple[str, ...]):
    """A config of the methods that train --subject folders (DreamBooth, pivotal tuning) from the flags `names`."""
    from dataclasses import asdict

    from conceptlab.training.dreambooth import parse_subject

    subjects = [asdict(parse_subject(s)) for s in args.subject] if args.subject else None
    return _method_config(cls, args, {"model": args.model, **{n: getattr(args, n) for n in names},
                                      "buckets": bucket_overrides(args),
                                      "timestep_bias": timestep_bias_overrides(args)},
                          {"subjects": subjects})


def dreambooth_config(args):
    from conceptlab.training.dreambooth import DreamBoothConfig

    return _subjects_config(DreamBoothConfig, args, SUBJECT_FIELDS)


def run_dreambooth(args) -> int:
    from pathlib import Path

    from conceptlab.training.dreambooth import train_dreambooth

    cfg = dreambooth_config(args)
    result = _train(args, cfg, train_dreambooth, subjects=cfg.subjects)
    if result.stopped != "done":
        return _stopped_code(result)
    what = "LoRA in " + str(Path(args.out) / "lora") if cfg.lora else "pipeline in " + str(Path(args.out) / "pipeline")
    print(f"trained {', '.join(s.identifier for s in cfg.subjects)} for {result.steps} steps; {what}")
    return 0


def pivotal_config(args):
    from conceptlab.training.pivotal import PivotalConfig

    return _subjects_config(PivotalConfig, args, SUBJECT_FIELDS + TOKEN_FIELDS)


def run_pivotal(args) -> int:
    from pathlib import Path

    from conceptlab.training.pivotal import BUNDLE_NAME, train_pivotal

    cfg = pivotal_config(args)
    result = _train(args, cfg, train_pivotal, subjects=cfg.subjects)
    if result.stopped != "done":
        return _stopped_code(result)
    tokens = ", ".join(s.identifier for s in cfg.subjects)
    if not cfg.lora:
        pipeline = Path(args.out) / "pipeline"
        print(f"trained {tokens} (tokens + every UNet{' and text-encoder' * bool(cfg.train_text_encoder)} weight) for "
              f"{result.steps} steps; pipeline in {pipeline} (its tokenizer holds the tokens), embeddings in "
              f"{args.out}/<token>/; use it with: conceptlab generate --model {pipeline} --prompt 'a sticker of a "
              f"{cfg.subjects[0].identifier} {cfg.subjects[0].class_word}'")
        return 0
    bundle = Path(args.out) / BUNDLE_NAME
    what = "tokens + UNet and text-encoder LoRA" if cfg.train_text_encoder else "tokens + LoRA"
    print(f"trained {tokens} ({what}) for {result.steps} steps; bundle "
          f"{bundle}, embeddings in {args.out}/<token>/, LoRA in {Path(args.out) / 'lora'}; use them with: conceptlab "
          f"generate --concepts {bundle} --prompt 'a sticker of a {cfg.subjects[0].identifier} "
          f"{cfg.subjects[0].class_word}'")
    return 0
