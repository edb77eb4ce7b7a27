"""Training jobs: each runs the CLI itself in its own process, one at a time, recorded in the workspace.

Three kinds: textual inversion (`conceptlab train ti`, TrainSettings), DreamBooth, LoRA or full fine-tune
(`conceptlab train dreambooth`, DreamBoothSettings) and pivotal tuning, a new token with a LoRA (`conceptlab
train pivotal`, PivotalSettings); all write the shared loop's run folder.

A job is a folder jobs/ID/ with job.json (status, settings, command, pid, times) and log.txt (the process's
output), and a run folder runs/ID/ (the command's --out: checkpoints/, previews/, the learned files). A crash
or an out-of-memory in training ends that process, never the studio; a studio that died leaves job.json
saying "running", and the next one finds the pid gone and marks the job interrupted (resumable from its
last checkpoint), or finds the process still alive and watches it again.

    queued -> running -> done | failed | cancelled | interrupted
    failed | cancelled | interrupted -> queued  (resume: the same command with --resume)
    queued -> cancelled
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conceptlab.errors import InputError
from conceptlab.io import atomic_write_json
from conceptlab.studio.workspace import Workspace, check_name, check_token, slug

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
TRANSITIONS = {
    "queued": {"running", "cancelled"},
    "running": {"done", "failed", "cancelled", "interrupted"},
    "done": set(),
    "failed": {"queued"},
    "cancelled": {"queued"},
    "interrupted": {"queued"},
}
RESUMABLE = ("failed", "cancelled", "interrupted")
# what `conceptlab train` returns after a stop that saved a checkpoint: 130 after SIGINT, 143 after SIGTERM
INTERRUPTED_EXITS = (130, 143)


@dataclass
class Advanced:
    """The settings every kind of job shares beyond the form's first rows: what a GPU, an SDXL model, captioned
    pictures and checkpoint choice need (the CLI's flags of the same names; defaults are TrainConfig's)."""

    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (--mixed-precision)
    gradient_checkpointing: bool = False
    gradient_accumulation: int = 1
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    buckets: bool = False  # aspect-ratio buckets (--buckets): pictures train whole, not centre-cropped
    captions: str = ""  # WORD: train on each picture's caption with WORD replaced by the token ("" = a template)
    timestep_bias: str = "none"  # DreamBooth and pivotal tuning (--timestep-bias)
    timestep_bias_multiplier: float = 2.0  # TimestepBias's default
    select_by: str = ""  # keep the checkpoint best by these metrics (--select-by; "" = the last step)
    validate_every: int = 100
    report_to: str = "none"  # "none" or "tensorboard"
    optimizer: str = "adamw"  # "adafactor" (a fraction of AdamW's memory) or "adamw8bit" (a quarter) (--optimizer)
    class_steps: int = 30  # DreamBooth, pivotal: sampling steps per class image (--class-steps; DreamBoothConfig's)

    def flags(self, kind: str) -> list[str]:
        """The CLI flags that differ from the defaults (captions go into --concept/--subject instead)."""
        d, out = Advanced(), []
        for name in ("mixed_precision", "gradient_accumulation", "lr_schedule", "warmup_steps", "report_to",
                     "optimizer"):
            if getattr(self, name) != getattr(d, name):
                out += [f"--{name.replace('_', '-')}", str(getattr(self, name))]
        out += ["--gradient-checkpointing"] * self.gradient_checkpointing + ["--buckets"] * self.buckets
        if kind != "ti" and self.timestep_bias != "none":
            out += ["--timestep-bias", self.timestep_bias, "--timestep-bias-multiplier",
                    repr(float(self.timestep_bias_multiplier))]
        if kind != "ti" and self.class_steps != d.class_steps:
            out += ["--class-steps", str(self.class_steps)]
        if self.select_by.strip():
            out += ["--select-by", self.select_by.strip(), "--validate-every", str(self.validate_every)]
        return out


def check_advanced(a: Advanced, kind: str, folder: Path, subjects=None, concepts=None) -> None:
    """The checks the CLI makes on these flags before it loads a model; `subjects` or `concepts` (the library's
    configs) let checkpoint selection check its metrics as `--select-by` does."""
    from conceptlab.training.diffusion import TimestepBias, check_timestep_bias
    from conceptlab.training.loop import AUTOCAST, LR_SCHEDULES, OPTIMIZERS, TrainConfig
    from conceptlab.validation import BATCH, COUNT0, SAMPLING_STEPS, TRAIN_STEPS, choice

    choice("mixed precision", a.mixed_precision, AUTOCAST)
    choice("learning-rate schedule", a.lr_schedule, LR_SCHEDULES)
    choice("report to", a.report_to, ("none", "tensorboard"))
    choice("optimizer", a.optimizer, OPTIMIZERS)
    BATCH.check("gradient accumulation", a.gradient_accumulation)
    COUNT0.check("warmup steps", a.warmup_steps)
    # what the loop itself checks: a tracker whose package is missing, among the rest; its warnings (a CPU
    # without bf16) are the job's to print, in the job's log
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TrainConfig(lr_schedule=a.lr_schedule, warmup_steps=a.warmup_steps, mixed_precision=a.mixed_precision,
                    report_to=a.report_to, optimizer=a.optimizer, gradient_accumulation=a.gradient_accumulation).check()
    if kind == "ti" and a.timestep_bias != "none":
        raise InputError("timestep bias", a.timestep_bias, "textual inversion does not take one",
                         "Set it to none, or train DreamBooth or pivotal tuning")
    if kind == "ti" and a.class_steps != Advanced.class_steps:
        raise InputError("class steps", a.class_steps, "textual inversion draws no class images",
                         f"Leave it at {Advanced.class_steps}, or train DreamBooth or pivotal tuning with prior "
                         "preservation")
    SAMPLING_STEPS.check("class steps", a.class_steps)
    if a.timestep_bias != "none":
        from conceptlab.validation import TIMESTEP_MULTIPLIER

        TIMESTEP_MULTIPLIER.check("bias multiplier", a.timestep_bias_multiplier)
        check_timestep_bias(TimestepBias(a.timestep_bias, a.timestep_bias_multiplier))
    if a.captions.strip():
        if any(c in a.captions for c in ",=") or len(a.captions.split()) != 1:
            raise InputError("captions word", a.captions, "is not one word", "e.g. cat, the word each caption uses")
        _check_captions(folder, a.captions.strip(), "captions word")
    if a.select_by.strip():
        from conceptlab.training.selection import make_selection

        TRAIN_STEPS.check("validate every", a.validate_every)
        make_selection(a.select_by.strip(), a.validate_every, subjects=subjects, concepts=concepts)


@dataclass
class TrainSettings:
    """A textual-inversion job as a person fills it in; defaults are the library's (TextualInversionConfig)."""

    token: str
    images: str  # an uploads/ folder name
    init: str = ""  # a word the token starts from; "" = random
    steps: int = 500
    lr: float = 5e-3
    batch_size: int = 4
    vectors: int = 1
    seed: int = 0
    model: str = ""  # "" = the shipped base model
    checkpoint_every: int = 50
    preview_every: int = 50
    preview_prompt: str = "a sticker of a {}"  # {} is the token
    name: str = ""  # the run's name; "" = made from the token
    advanced: Advanced = field(default_factory=Advanced)

    @classmethod
    def defaults(cls) -> TrainSettings:
        """The library's own defaults, so the form and `conceptlab train ti` agree."""
        from conceptlab.training.textual_inversion import TextualInversionConfig

        train = TextualInversionConfig().train
        return cls(token="", images="", steps=train.steps, lr=train.lr, batch_size=train.batch_size, seed=train.seed)


def check_settings(ws: Workspace, s: TrainSettings) -> None:
    """The checks `conceptlab train ti` makes before it loads a model, made now so the form shows them at once."""
    from conceptlab.training.textual_inversion import ConceptConfig, check_concepts
    from conceptlab.validation import BATCH, COUNT0, LR, SEED, TRAIN_STEPS, VECTORS, text

    check_token("token", s.token)
    check_name("images", s.images)
    if s.name:
        check_name("run name", s.name)
    if s.init:
        text("init word", s.init, example="broccoli")
        if any(c in s.init for c in ",=/\\"):
            raise InputError("init word", s.init, "is not a plain word", "e.g. broccoli")
    for argument, bound, value in (("steps", TRAIN_STEPS, s.steps), ("batch size", BATCH, s.batch_size),
                                   ("vectors", VECTORS, s.vectors), ("seed", SEED, s.seed),
                                   ("checkpoint every", COUNT0, s.checkpoint_every),
                                   ("preview every", COUNT0, s.preview_every)):
        bound.check(argument, value)
    LR.check("learning rate", s.lr)
    if s.preview_every and "{}" not in text("preview prompt", s.preview_prompt):
        raise InputError("preview prompt", s.preview_prompt, "has no {} for the token", "e.g. 'a sticker of a {}'")
    folder = ws.folder("uploads", s.images, "images")
    concept = ConceptConfig(token=s.token, folder=str(folder), init=s.init or None, vectors=s.vectors,
                            captions=s.advanced.captions.strip() or None)
    check_concepts([concept])
    check_advanced(s.advanced, "ti", folder, concepts=[concept])


def ti_command(ws: Workspace, s: TrainSettings, run_dir: Path, python: str | None = None) -> list[str]:
    """The `conceptlab train ti` command line of a job (what a person would type); `python` defaults to the
    interpreter running the studio."""
    python = python or sys.executable
    concept = f"{s.token}={ws.folder('uploads', s.images)}" + (f",init={s.init}" if s.init else "")
    concept += f",vectors={s.vectors}" if s.vectors != 1 else ""
    concept += f",captions={s.advanced.captions.strip()}" if s.advanced.captions.strip() else ""
    cmd = [python, "-m", "conceptlab.cli.main", "train", "ti", "--concept", concept, "--steps", str(s.steps),
           "--lr", repr(float(s.lr)), "--batch-size", str(s.batch_size), "--seed", str(s.seed),
           "--checkpoint-every", str(s.checkpoint_every), "--preview-every", str(s.preview_every)]
    if s.model:
        cmd += ["--model", s.model]
    if s.preview_every:
        cmd += ["--validation-prompt", s.preview_prompt.replace("{}", s.token)]
    return cmd + s.advanced.flags("ti") + ["--out", str(run_dir)]


@dataclass
class DreamBoothSettings:
    """A DreamBooth job (LoRA by default) as a person fills it in; defaults are the library's (DreamBoothConfig)."""

    identifier: str  # the rare word that names the subject, e.g. 'tuki'
    class_word: str  # what the subject is, e.g. 'broccoli'
    images: str  # an uploads/ folder name
    lora: bool = True  # LoRA adapters (a small file) instead of every UNet weight (a whole pipeline)
    rank: int = 4
    train_text_encoder: bool = False
    prior_preservation: bool = False
    class_images: int = 50
    prior_weight: float = 1.0
    steps: int = 400
    lr: float = 1e-4
    batch_size: int = 1
    seed: int = 0
    model: str = ""  # "" = the shipped base model
    checkpoint_every: int = 50
    preview_every: int = 50
    preview_prompt: str = "a sticker of a {}"  # {} is 'IDENTIFIER CLASS'
    name: str = ""  # the run's name; "" = made from the identifier
    ema_decay: float = 0.0  # a moving average of the weights (--ema-decay; 0 = off)
    advanced: Advanced = field(default_factory=Advanced)
    more_subjects: str = ""  # more subjects in the same run, one a line: 'ID=DATA SET,class=WORD[,OPTION=VALUE]'
    text_encoder_lr: float = 0.0  # with train_text_encoder: its own learning rate (--text-encoder-lr; 0 = lr's)
    caption_dropout: float = 0.0  # captioned subjects: the share trained on the bare prompt (--caption-dropout)

    @classmethod
    def defaults(cls) -> DreamBoothSettings:
        """The library's own defaults, so the form and `conceptlab train dreambooth` agree (LoRA aside: the
        form starts with it, the CLI without)."""
        from conceptlab.training.dreambooth import DreamBoothConfig

        lib = DreamBoothConfig()
        return cls(identifier="", class_word="", images="", rank=lib.rank, train_text_encoder=lib.train_text_encoder,
                   prior_preservation=lib.prior_preservation, class_images=lib.class_images,
                   prior_weight=lib.prior_weight, steps=lib.train.steps, lr=lib.train.lr,
                   batch_size=lib.train.batch_size, seed=lib.train.seed, text_encoder_lr=lib.text_encoder_lr or 0.0,
                   caption_dropout=lib.caption_dropout)

    @property
    def subject(self) -> str:
        return f"{self.identifier} {self.class_word}"


EXTRA_OPTIONS = ("class", "captions", "prior_weight", "class_prompts")  # none of them names a file
CLASS_WORD = r"[A-Za-z][A-Za-z -]{0,40}"  # a subject's class: a plain word or two


def more_subjects(ws: Workspace, text: str, captions: str = "") -> list[tuple[str, object]]:
    """Each line of 'More subjects' ('ID=DATA SET,class=WORD[,captions=W][,prior_weight=W][,class_prompts=class|
    captions]') as (its --subject value, its SubjectConfig): the data set is an uploads/ folder of the workspace,
    and options that would name a file (masks, a template or class-prompt file) are refused, so a job reads
    only the workspace. `captions`: the Advanced captions word, for a line that names none."""
    from conceptlab.training.dreambooth import parse_subject

    out = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        head, *parts = [part.strip() for part in line.strip().split(",")]
        ident, sep, name = (x.strip() for x in head.partition("="))
        kw = {k.strip(): v.strip() for k, _, v in (o.partition("=") for o in parts if o)}
        opts = [f"{k}={v}" for k, v in kw.items()]
        if not sep or not ident or not name or set(kw) - set(EXTRA_OPTIONS):
            raise InputError("more subjects", line.strip(), f"expected ID=DATA SET,class=WORD[,OPTION=VALUE] "
                             f"(options: {', '.join(EXTRA_OPTIONS)})", "e.g. bnh=bnh-pictures,class=monster")
        if kw.get("class_prompts", "class") not in ("class", "captions"):
            raise InputError("more subjects", line.strip(), "class_prompts is class or captions here",
                             "Use class_prompts=class or class_prompts=captions")
        if not re.fullmatch(CLASS_WORD, kw.get("class", "")):
            raise InputError("more subjects", line.strip(), "needs class=WORD, a plain word", "e.g. class=monster")
        if "captions" in kw and len(kw["captions"].split()) != 1:
            raise InputError("more subjects", line.strip(), "captions= takes one word", "e.g. captions=monster")
        check_token("more subjects", ident)
        folder = ws.folder("uploads", check_name("more subjects", name), "more subjects")
        if not folder.is_dir():
            raise InputError("more subjects", name, "is not a data set of the workspace",
                             "Add the subject's pictures above first, then name their data set")
        value = f"{ident}={folder}" + "".join(f",{o}" for o in opts)
        value += f",captions={captions}" if captions and "captions" not in kw else ""
        try:
            out.append((value, parse_subject(value)))
        except InputError as e:  # named as the page names it, not as the command's --subject
            raise InputError("more subjects", line.strip(), e.problem, "e.g. bnh=bnh-pictures,class=monster,"
                             "prior_weight=0.3") from None
    return out


def _check_captions(folder: Path, word: str | None, argument: str) -> None:
    """Every picture in `folder` has a caption naming `word` (a missing caption, or one without it, named)."""
    from conceptlab.training.data import load_concept_folder, substituted_captions

    if word:
        _, names = load_concept_folder(folder, argument)
        substituted_captions(folder, names, word, "X", argument)


# what the library's check_subjects names by the flag, named as the form names it: (field, fix)
PAGE_FIELDS = {"--text-encoder-lr": ("text-encoder learning rate", "Tick the text-encoder box beside it, or set it "
                                                                   "to 0 (the learning rate's)"),
               "--caption-dropout": ("caption dropout", "Set a captions word under Advanced (or captions=WORD on a "
                                                        "'More subjects' line), or set it to 0")}


def check_dreambooth_settings(ws: Workspace, s: DreamBoothSettings) -> None:
    """The checks `conceptlab train dreambooth` makes before it loads a model (the library's check_subjects)."""
    from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, check_subjects
    from conceptlab.validation import BATCH, COUNT0, LR, SEED, SHARE, TRAIN_STEPS, text

    check_token("identifier", s.identifier)
    text("class word", s.class_word, example="broccoli")
    if not re.fullmatch(CLASS_WORD, s.class_word.strip()):
        raise InputError("class word", s.class_word, "is not a plain word", "e.g. broccoli")
    check_name("images", s.images)
    if s.name:
        check_name("run name", s.name)
    for argument, bound, value in (("steps", TRAIN_STEPS, s.steps), ("batch size", BATCH, s.batch_size),
                                   ("seed", SEED, s.seed), ("checkpoint every", COUNT0, s.checkpoint_every),
                                   ("preview every", COUNT0, s.preview_every)):
        bound.check(argument, value)
    LR.check("learning rate", s.lr)
    if s.text_encoder_lr:  # 0: the text encoders train at the learning rate
        LR.check("text-encoder learning rate", s.text_encoder_lr)
    SHARE.check("caption dropout", s.caption_dropout)
    if s.preview_every and "{}" not in text("preview prompt", s.preview_prompt):
        raise InputError("preview prompt", s.preview_prompt, "has no {} for the subject", "e.g. 'a sticker of a {}'")
    folder = ws.folder("uploads", s.images, "images")
    subject = SubjectConfig(s.identifier, str(folder), s.class_word.strip(), captions=s.advanced.captions.strip() or None)
    extra = [cfg for _, cfg in more_subjects(ws, s.more_subjects, s.advanced.captions.strip())]
    try:
        check_subjects(DreamBoothConfig(subjects=[subject, *extra], lora=s.lora, rank=s.rank, class_images=s.class_images,
                                        prior_preservation=s.prior_preservation, prior_weight=s.prior_weight,
                                        train_text_encoder=s.train_text_encoder,
                                        text_encoder_lr=s.text_encoder_lr or None, caption_dropout=s.caption_dropout))
    except InputError as e:  # without the text encoder, or without captions: named after the page's field
        if e.argument not in PAGE_FIELDS:
            raise
        raise InputError(PAGE_FIELDS[e.argument][0], e.value, e.problem, PAGE_FIELDS[e.argument][1]) from None
    for other in extra:
        _check_captions(Path(other.folder), other.captions, "more subjects")
    check_advanced(s.advanced, "dreambooth", folder, subjects=[subject, *extra])
    if s.ema_decay:
        from conceptlab.validation import EMA_DECAY

        EMA_DECAY.check("EMA decay", s.ema_decay)
        if s.advanced.select_by.strip():
            raise InputError("EMA decay", s.ema_decay, "and checkpoint selection both decide which weights are kept",
                             "Use one of the two: set EMA decay to 0, or clear 'select by'")


def _subject_command(ws: Workspace, s, command: str, own: list[str], run_dir: Path, python: str | None) -> list[str]:
    """The command line of a `conceptlab train dreambooth|pivotal` job: the flags both share, and `own`."""
    subject = f"{s.identifier}={ws.folder('uploads', s.images)},class={s.class_word.strip()}"
    subject += f",captions={s.advanced.captions.strip()}" if s.advanced.captions.strip() else ""
    extra = [x for value, _ in more_subjects(ws, s.more_subjects, s.advanced.captions.strip())
             for x in ("--subject", value)]
    cmd = [python or sys.executable, "-m", "conceptlab.cli.main", "train", command, "--subject", subject, *extra, *own,
           "--steps", str(s.steps), "--lr", repr(float(s.lr)), "--batch-size", str(s.batch_size), "--seed", str(s.seed),
           "--checkpoint-every", str(s.checkpoint_every), "--preview-every", str(s.preview_every)]
    if s.prior_preservation:
        cmd += ["--prior-preservation", "--class-images", str(s.class_images), "--prior-weight", repr(float(s.prior_weight))]
    if s.model:
        cmd += ["--model", s.model]
    if s.preview_every:
        cmd += ["--validation-prompt", s.preview_prompt.replace("{}", s.subject)]
    return cmd + s.advanced.flags(command) + ["--out", str(run_dir)]


def dreambooth_command(ws: Workspace, s: DreamBoothSettings, run_dir: Path, python: str | None = None) -> list[str]:
    """The `conceptlab train dreambooth` command line of a job (what a person would type)."""
    own = (["--lora", "--rank", str(s.rank)] if s.lora else []) + (["--train-text-encoder"] if s.train_text_encoder else [])
    own += ["--ema-decay", repr(float(s.ema_decay))] if s.ema_decay else []
    return _subject_command(ws, s, "dreambooth", own + _shared_flags(s), run_dir, python)


def _shared_flags(s) -> list[str]:
    """DreamBooth's and pivotal tuning's flags that are only written when set: the text encoders' own learning
    rate and caption dropout."""
    return (["--text-encoder-lr", repr(float(s.text_encoder_lr))] if s.text_encoder_lr else []) + \
        (["--caption-dropout", repr(float(s.caption_dropout))] if s.caption_dropout else [])


@dataclass
class PivotalSettings:
    """A pivotal-tuning job: a new token ('<tuki>') trained with a UNet LoRA; defaults are PivotalConfig's."""

    identifier: str  # the new token, in angle brackets
    class_word: str  # what the subject is; the token starts from its embedding unless token_init says otherwise
    images: str  # an uploads/ folder name
    rank: int = 4
    prior_preservation: bool = False
    class_images: int = 50
    prior_weight: float = 1.0
    token_lr: float = 5e-3  # the token's learning rate; `lr` is the LoRA's
    token_steps: int = 0  # steps that train the token alone before the LoRA joins
    steps: int = 400
    lr: float = 1e-4
    batch_size: int = 1
    seed: int = 0
    model: str = ""
    checkpoint_every: int = 50
    preview_every: int = 50
    preview_prompt: str = "a sticker of a {}"  # {} is 'IDENTIFIER CLASS'
    name: str = ""
    train_text_encoder: bool = False  # a LoRA on the text encoders too (--train-text-encoder)
    advanced: Advanced = field(default_factory=Advanced)
    more_subjects: str = ""  # as DreamBoothSettings': each identifier a new token
    ema_decay: float = 0.0  # a moving average of the tokens and the LoRA (--ema-decay; 0 = off)
    full_fine_tune: bool = False  # every UNet weight beside the tokens instead of a LoRA (--full-fine-tune)
    token_init: str = "class"  # where the tokens start: class (the class word), random, or a word (--token-init)
    text_encoder_lr: float = 0.0  # as DreamBoothSettings': the text-encoder LoRA's own learning rate (0 = lr's)
    caption_dropout: float = 0.0  # as DreamBoothSettings'

    @classmethod
    def defaults(cls) -> PivotalSettings:
        from conceptlab.training.pivotal import PivotalConfig

        lib = PivotalConfig()
        return cls(identifier="", class_word="", images="", rank=lib.rank, prior_preservation=lib.prior_preservation,
                   class_images=lib.class_images, prior_weight=lib.prior_weight, token_lr=lib.token_lr,
                   token_steps=lib.token_steps, steps=lib.train.steps, lr=lib.train.lr,
                   batch_size=lib.train.batch_size, seed=lib.train.seed, text_encoder_lr=lib.text_encoder_lr or 0.0,
                   caption_dropout=lib.caption_dropout)

    @property
    def subject(self) -> str:
        return f"{self.identifier} {self.class_word}"


def check_pivotal_settings(ws: Workspace, s: PivotalSettings) -> None:
    """The checks `conceptlab train pivotal` makes before it loads a model (the library's check_pivotal)."""
    from conceptlab.training.dreambooth import SubjectConfig
    from conceptlab.training.loop import TrainConfig
    from conceptlab.training.pivotal import PivotalConfig, check_pivotal, check_token_init

    check_dreambooth_settings(ws, DreamBoothSettings(**{k: getattr(s, k) for k in DreamBoothSettings.__dataclass_fields__
                                                          if hasattr(s, k)}))
    subject = SubjectConfig(s.identifier, str(ws.folder("uploads", s.images, "images")), s.class_word.strip())
    extra = [cfg for _, cfg in more_subjects(ws, s.more_subjects, s.advanced.captions.strip())]
    for argument, ident in (("token", s.identifier), *(("more subjects", x.identifier) for x in extra)):
        if not (ident.startswith("<") and ident.endswith(">")):
            raise InputError(argument, ident, "is not written as a new token", f"Write it in angle brackets: <{ident}>")
    try:
        check_token_init(PivotalConfig(subjects=[subject], token_init=s.token_init))
    except InputError as e:  # named after the page's field
        raise InputError("token starts from", e.value, e.problem, e.fix.replace("Use class", "Pick class")) from None
    check_pivotal(PivotalConfig(subjects=[subject, *extra], lora=not s.full_fine_tune, rank=s.rank,
                                class_images=s.class_images,
                                prior_preservation=s.prior_preservation, prior_weight=s.prior_weight,
                                token_lr=s.token_lr, token_steps=s.token_steps, token_init=s.token_init,
                                train=TrainConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr)))


def pivotal_command(ws: Workspace, s: PivotalSettings, run_dir: Path, python: str | None = None) -> list[str]:
    """The `conceptlab train pivotal` command line of a job."""
    own = ["--rank", str(s.rank), "--token-lr", repr(float(s.token_lr)), "--token-steps", str(s.token_steps)]
    own += ["--train-text-encoder"] if s.train_text_encoder else []
    own += ["--ema-decay", repr(float(s.ema_decay))] if s.ema_decay else []
    own += ["--full-fine-tune"] if s.full_fine_tune else []
    own += ["--token-init", s.token_init] if s.token_init != "class" else []
    return _subject_command(ws, s, "pivotal", own + _shared_flags(s), run_dir, python)


# each kind of job: its settings' class, their check, its command line, the field its run is named after
KINDS = {"ti": (TrainSettings, check_settings, ti_command, "token"),
         "dreambooth": (DreamBoothSettings, check_dreambooth_settings, dreambooth_command, "identifier"),
         "pivotal": (PivotalSettings, check_pivotal_settings, pivotal_command, "identifier")}


def kind_of(settings) -> str:
    for kind, (cls, *_) in KINDS.items():
        if isinstance(settings, cls):
            return kind
    raise TypeError(f"not a job's settings: {type(settings).__name__}")


@dataclass
class Job:
    """One training job as recorded in jobs/ID/job.json."""

    id: str
    kind: str
    settings: dict
    command: list[str]
    run_dir: str  # relative to the workspace
    status: str = "queued"
    pid: int | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    message: str = ""
    resumes: int = 0
    cancel_requested: bool = False

    def move(self, status: str, message: str = "") -> None:
        """Changes the status along an allowed transition; anything else is a bug or a stale button."""
        if status not in TRANSITIONS[self.status]:
            raise InputError("job", self.id, f"cannot go from {self.status} to {status}",
                             "Refresh the page: the job has moved on")
        self.status, self.message = status, message


class JobStore:
    """jobs/ID/job.json files: read, written atomically, listed oldest first."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.root = ws.root / "jobs"

    def folder(self, job_id: str) -> Path:
        return self.ws.folder("jobs", job_id, "job")

    def log_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "log.txt"

    def save(self, job: Job) -> None:
        atomic_write_json(asdict(job), self.folder(job.id) / "job.json")

    def load(self, job_id: str) -> Job:
        path = self.folder(job_id) / "job.json"
        if not path.is_file():
            raise InputError("job", job_id, "does not exist", "Pick a job from the list")
        data = json.loads(path.read_text())
        return Job(**{k: v for k, v in data.items() if k in Job.__dataclass_fields__})

    def all(self) -> list[Job]:
        jobs = []
        for p in self.root.iterdir():
            if (p / "job.json").is_file():
                try:
                    jobs.append(self.load(p.name))
                except (InputError, ValueError, TypeError):  # a damaged record is skipped, not fatal
                    continue
        return sorted(jobs, key=lambda j: (j.created, j.id))


def pid_alive(pid: int | None, marker: str = "") -> bool:
    """Whether process `pid` runs and (on Linux) its command line holds `marker`, so a reused pid is not taken
    for the job's process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if marker and cmdline.exists():
        try:
            return marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
    try:  # a zombie child (ended, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def outcome_from_log(log: Path) -> tuple[str, str]:
    """The status and message of a finished run whose exit code nobody saw, read from its log's last lines."""
    lines = [ln for ln in _tail(log, 40).splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("learned ", "trained ")):  # train ti's and train dreambooth's last line
            return "done", line
        if "error:" in line and line.startswith("conceptlab "):
            return "failed", line.split("error:", 1)[1].strip()
    return "interrupted", "the training process ended without finishing; resume continues from its last checkpoint"


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log as a terminal shows them: a progress bar's redraws (\\r) collapsed to
    their last state, escape codes dropped."""
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 400 * lines))
        text = ANSI.sub("", f.read().decode(errors="replace"))
    shown = [line.rstrip("\r").split("\r")[-1] for line in text.rstrip("\n").split("\n")]
    return "\n".join(shown[-lines:])


def _tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 200 * lines))
        text = f.read().decode(errors="replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


class JobRunner:
    """Starts queued jobs one at a time as child processes, watches them, cancels and resumes them."""

    def __init__(self, ws: Workspace, python: str | None = None, poll_seconds: float = 0.5,
                 env: dict | None = None, device: str | None = None, dtype: str | None = None, on_start=None):
        self.ws, self.store = ws, JobStore(ws)
        self.device = device  # every job trains there (the studio's --device); None: the CLI's default
        self.dtype = dtype  # and stores its frozen weights so (the studio's --dtype); None: as saved
        self.on_start = on_start  # called before a job's process starts (the studio frees its GPU pipeline)
        self.python, self.poll_seconds = python or sys.executable, poll_seconds
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.recover()

    # ---------------------------------------------------------------- what the UI calls
    def submit(self, settings: TrainSettings | DreamBoothSettings | PivotalSettings) -> Job:
        """Checks the settings, records a queued job and its run folder name; the runner starts it in turn."""
        kind = kind_of(settings)
        _, check, command, named_after = KINDS[kind]
        check(self.ws, settings)
        with self._lock:
            job_id = self.ws.unique_name("jobs", settings.name or slug(getattr(settings, named_after).strip("<>"),
                                                                               "concept"))
            while (self.ws.root / "runs" / job_id).exists():
                job_id = self.ws.unique_name("jobs", job_id + "-1")
            run_dir = self.ws.folder("runs", job_id)
            cmd = command(self.ws, settings, run_dir, self.python) + (["--device", self.device] if self.device else []) \
                + (["--dtype", self.dtype] if self.dtype else [])
            job = Job(id=job_id, kind=kind, settings=asdict(settings), command=cmd, run_dir=self.ws.relative(run_dir))
            self.store.folder(job.id).mkdir(parents=True)
            self.store.save(job)
        self.poll()
        return job

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one gets SIGTERM (it saves a checkpoint, then exits);
        cancelling it again while it is still stopping sends SIGKILL."""
        with self._lock:
            job = self.store.load(job_id)
            if job.status == "queued":
                job.move("cancelled", "cancelled before it started")
            elif job.status == "running":
                sig = signal.SIGKILL if job.cancel_requested else signal.SIGTERM
                job.cancel_requested, job.message = True, "stopping: saving a checkpoint"
                _signal(job.pid, sig)
            else:
                raise InputError("job", job_id, f"is {job.status}", "Only a queued or running job can be cancelled")
            self.store.save(job)
            return job

    def resume(self, job_id: str) -> Job:
        """Queues the same command again with --resume: it continues from the newest intact checkpoint."""
        with self._lock:
            job = self.store.load(job_id)
            if job.status not in RESUMABLE:
                raise InputError("job", job_id, f"is {job.status}", "Only a failed, cancelled or interrupted job resumes")
            if "--resume" not in job.command:
                job.command = [*job.command, "--resume"]
            job.move("queued", "queued to resume")
            job.resumes += 1
            job.pid, job.returncode, job.ended, job.cancel_requested = None, None, None, False
            self.store.save(job)
        self.poll()
        return job

    def jobs(self) -> list[Job]:
        return self.store.all()

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, 2 after it, ...; None when the job is not queued."""
        queued = [j.id for j in self.jobs() if j.status == "queued"]
        return queued.index(job_id) + 1 if job_id in queued else None

    # ---------------------------------------------------------------- the watcher
    def recover(self) -> None:
        """After a restart: a 'running' job whose process is gone was interrupted (or finished unseen)."""
        with self._lock:
            for job in self.store.all():
                if job.status == "running" and job.id not in self._procs and not pid_alive(job.pid, self._marker(job)):
                    status, message = outcome_from_log(self.store.log_path(job.id))
                    self._finish(job, None, status, message)

    def _marker(self, job: Job) -> str:
        """What the job's command line holds and no other run's does: its --out path, then the argument's end."""
        return f"--out {self.ws.root / job.run_dir} "

    def poll(self) -> None:
        """Reaps a finished process, then starts the oldest queued job if none is running."""
        with self._lock:
            jobs = self.store.all()
            for job in (j for j in jobs if j.status == "running"):
                proc = self._procs.get(job.id)
                if proc is not None:
                    code = proc.poll()
                    if code is not None:
                        self._procs.pop(job.id)
                        self._finish(job, code, *self._judge(job, code))
                elif not pid_alive(job.pid, self._marker(job)):  # a process another studio started, now gone
                    self._finish(job, None, *outcome_from_log(self.store.log_path(job.id)))
            if any(j.status == "running" for j in self.store.all()):
                return
            queued = [j for j in self.store.all() if j.status == "queued"]
            if queued:
                self._start(queued[0])

    def _judge(self, job: Job, code: int) -> tuple[str, str]:
        if code == 0:
            return "done", outcome_from_log(self.store.log_path(job.id))[1]
        if job.cancel_requested:
            return "cancelled", "cancelled; resume continues from the checkpoint it saved"
        if code in INTERRUPTED_EXITS:
            return "interrupted", "stopped by a signal; resume continues from the checkpoint it saved"
        status, message = outcome_from_log(self.store.log_path(job.id))
        if status == "failed":
            return status, message
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return "failed", f"killed by {name}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
        return "failed", f"exited with code {code}; see the log"

    def _start(self, job: Job) -> None:
        if self.on_start is not None:
            self.on_start(job)
        log_path = self.store.log_path(job.id)
        with open(log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n[{stamp}] $ {' '.join(job.command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.ws.root, env=self.env, start_new_session=True)
        self._procs[job.id] = proc
        job.move("running", "resuming" if "--resume" in job.command else "starting")
        job.pid, job.started, job.ended, job.returncode = proc.pid, time.time(), None, None
        self.store.save(job)

    def _finish(self, job: Job, code: int | None, status: str, message: str) -> None:
        job.move(status, message)
        job.returncode, job.ended = code, time.time()
        self.store.save(job)

    def start(self) -> JobRunner:
        """Polls in a background thread until stop()."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="conceptlab-jobs", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001 - the watcher must outlive one bad job record
                print(f"conceptlab studio: job watcher: {type(e).__name__}: {e}", file=sys.stderr)

    def wait(self, job_id: str, timeout: float = 300) -> Job:
        """Polls until the job has ended (done, failed, cancelled, interrupted); for tests and scripts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            job = self.store.load(job_id)
            if job.status not in ("queued", "running"):
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {self.store.load(job_id).status} after {timeout} s")

    def stop(self, stop_jobs: bool = True, grace: float = 60) -> None:
        """Stops the watcher; with `stop_jobs`, a running child gets SIGTERM (it saves a checkpoint) and is
        recorded as interrupted, so the next studio offers to resume it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if not stop_jobs:
            return
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(grace)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                self._procs.pop(job_id)
                job = self.store.load(job_id)
                if job.status == "running":
                    code = proc.returncode
                    status, message = ("done", "finished") if code == 0 else \
                        ("interrupted", "the studio stopped; resume continues from the checkpoint it saved")
                    self._finish(job, code, status, message)


def _signal(pid: int | None, sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
