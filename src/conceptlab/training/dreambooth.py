"""DreamBooth (Ruiz et al. 2023, arXiv 2208.12242): fine-tune on a subject with a rare identifier, several
subjects at once, with prior preservation; full fine-tune or LoRA (Hu et al. 2021, arXiv 2106.09685) via peft.

What it trains: the UNet (all weights, or LoRA adapters on its attention), and the text encoder when asked.
Its loss: the denoising loss on instance images + prior_weight x the same on class images, paired per batch.
Images go through the VAE once; prompts go through the text encoder once unless the text encoder trains.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from conceptlab.errors import InputError
from conceptlab.training.buckets import (
    BucketConfig,
    bucketing_for,
    check_bucket_config,
    draw_bucket_items,
    run_record,
)
from conceptlab.training.data import (
    CachedLatents,
    check_image_folder,
    check_resolution,
    load_concept_folder,
    mask_weights,
    prepare_image,
    prepare_images,
    read_masks,
    substituted_captions,
)
from conceptlab.training.diffusion import (
    TimestepBias,
    check_timestep_bias,
    denoising_loss,
    timestep_weights,
    training_scheduler,
)
from conceptlab.training.loop import TrainConfig

COMMON_WORDS = {"a", "the", "dog", "cat", "man", "woman", "photo", "sticker", "monster", "happy", "red", "blue"}
LORA_UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class SubjectConfig:
    """One subject: its identifier ('tuki'), its image folder and its class word ('monster')."""

    identifier: str
    folder: str
    class_word: str
    template: str = "a {identifier} {class_word}"
    # each image's own caption (metadata.jsonl 'text' or NAME.txt) with this word replaced by "ID CLASS":
    # scenes, emotions and styles stay with their words instead of sticking to the identifier
    captions: str | None = None
    # a folder of masks named like the images (white = the subject): the loss counts the subject's pixels
    # DreamBoothConfig.mask_weight times as much as the background's
    masks: str | None = None
    # this subject's prior: its class images' loss weight and the prompts they are drawn from ("class",
    # "captions" or a text file of prompts, one a line); None takes DreamBoothConfig.prior_weight / class_prompts
    prior_weight: float | None = None
    class_prompts: str | None = None


@dataclass
class DreamBoothConfig:
    """`conceptlab train dreambooth` settings; stored in the files it writes."""

    model: str | None = None
    subjects: list[SubjectConfig] = field(default_factory=list)
    lora: bool = False
    rank: int = 4
    train_text_encoder: bool = False
    # the text encoders' own learning rate (kohya's --text_encoder_lr, diffusers' advanced script's); None: --lr
    text_encoder_lr: float | None = None
    prior_preservation: bool = False
    # subjects with captions: the share of their examples trained on the bare instance prompt ('a tuki monster')
    # instead (kohya's --caption_dropout_rate, which drops to an empty caption), so the identifier alone must carry
    # the subject while the captions keep the emotion and scene words working
    caption_dropout: float = 0.0
    class_images: int = 50
    class_steps: int = 30  # sampling steps per class image (diffusers' script samples them at its pipeline's default)
    prior_weight: float = 1.0
    class_dir: str | None = None  # default: OUT/class-images/<class word>
    # "class": every class image from "a CLASS". "captions": also from each captioned subject's captions with
    # the identifier dropped ("a sticker of a happy monster at the beach"), each image trained with its own
    # prompt, so the prior keeps how the base model draws what the captions name (emotions, scenes)
    class_prompts: str = "class"
    resolution: int | None = None
    center_crop: bool = True
    flip: bool = True
    offset_noise: float = 0.0  # 0.05-0.1 lets the model learn very dark or light images
    min_snr_gamma: float | None = None  # e.g. 5.0
    timestep_bias: TimestepBias = field(default_factory=TimestepBias)  # timesteps drawn evenly unless a strategy is set
    mask_weight: float = 5.0  # subjects with masks: a subject pixel's loss weight against a background pixel's
    # 0: off. e.g. 0.99: the saved (and returned) weights are an exponential moving average of the trained ones,
    # with diffusers' EMAModel warm-up, which smooths a full fine-tune's step-to-step wandering
    ema_decay: float = 0.0
    buckets: BucketConfig = field(default_factory=BucketConfig)  # aspect-ratio buckets instead of square crops
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=1, lr=1e-4))


SUBJECT_OPTIONS = ("class", "template", "captions", "masks", "prior_weight", "class_prompts")


def parse_subject(text: str) -> SubjectConfig:
    """'tuki=DIR,class=monster[,template=...][,prior_weight=W][,class_prompts=class|captions|FILE]' -> SubjectConfig."""
    head, *opts = text.split(",")
    ident, sep, folder = head.partition("=")
    kw = dict(o.partition("=")[::2] for o in opts)
    unknown = set(kw) - set(SUBJECT_OPTIONS)
    if not sep or not ident or not folder or unknown:
        raise InputError("--subject", text, f"expected ID=DIR,class=WORD[,OPTION=VALUE] (options: {', '.join(SUBJECT_OPTIONS)})",
                         "e.g. --subject 'tuki=data/tuki,class=monster,prior_weight=0.5'")
    if not kw.get("class"):
        raise InputError("--subject", text, "has no class word", "Add class=WORD, e.g. class=monster")
    weight = kw.get("prior_weight") or None
    if weight is not None:
        from conceptlab.validation import NONNEG

        weight = float(NONNEG.check(f"--subject {ident},prior_weight", weight))
    return SubjectConfig(ident, folder, kw["class"], kw.get("template", "a {identifier} {class_word}"),
                         kw.get("captions") or None, kw.get("masks") or None, weight, kw.get("class_prompts") or None)


def check_text_encoder_lr(cfg: DreamBoothConfig) -> None:
    """--text-encoder-lr is a learning rate, and only means something when the text encoder trains."""
    from conceptlab.validation import LR

    if cfg.text_encoder_lr is None:
        return
    LR.check("--text-encoder-lr", cfg.text_encoder_lr)
    if not cfg.train_text_encoder:
        raise InputError("--text-encoder-lr", cfg.text_encoder_lr, "is set but the text encoder does not train",
                         "Add --train-text-encoder, or drop --text-encoder-lr")


def check_subjects(cfg: DreamBoothConfig) -> None:
    """Raises InputError for any bad setting or subject, before a model is loaded or a file written."""
    from conceptlab.validation import COUNT0, EMA_DECAY, NONNEG, RANK, SAMPLING_STEPS, SHARE, Bound

    if not cfg.subjects:
        raise InputError("--subject", None, "no subject given", "Add --subject 'ID=DIR,class=WORD'")
    check_resolution(cfg.resolution)
    check_bucket_config(cfg.buckets, cfg.resolution)
    RANK.check("--rank", cfg.rank)
    COUNT0.check("--class-images", cfg.class_images)
    SAMPLING_STEPS.check("--class-steps", cfg.class_steps)
    if cfg.prior_preservation and cfg.class_images < 1:
        raise InputError("--class-images", cfg.class_images, "must be >= 1 with --prior-preservation",
                         "Use e.g. --class-images 50, or drop --prior-preservation")
    NONNEG.check("--prior-weight", cfg.prior_weight)
    Bound(0, 1, hint="0.05-0.1 is usual").check("--offset-noise", cfg.offset_noise)
    if cfg.min_snr_gamma is not None:
        Bound(0, 1000, low_open=True, hint="5 is usual").check("--min-snr-gamma", cfg.min_snr_gamma)
    Bound(0, 1000, low_open=True, hint="5 is usual").check("--mask-weight", cfg.mask_weight)
    check_timestep_bias(cfg.timestep_bias)
    EMA_DECAY.check("--ema-decay", cfg.ema_decay)
    check_text_encoder_lr(cfg)
    SHARE.check("--caption-dropout", cfg.caption_dropout)
    if cfg.caption_dropout and not any(s.captions for s in cfg.subjects):
        raise InputError("--caption-dropout", cfg.caption_dropout, "needs subjects trained on captions",
                         "Add captions=WORD to a --subject, or drop --caption-dropout")
    for s in cfg.subjects:
        _check_subject(s)
    if cfg.class_prompts not in ("class", "captions"):
        raise InputError("--class-prompts", cfg.class_prompts, "is not a known choice", "Use class or captions")
    if not cfg.mask_weight > 0:
        raise InputError("--mask-weight", cfg.mask_weight, "must be > 0",
                         "Use 1 for a plain loss, more than 1 to stress the masked subject (e.g. 5)")
    if cfg.lora and cfg.rank < 1:
        raise InputError("--rank", cfg.rank, "must be >= 1", "Use --rank 4 (or 8, 16)")
    seen = set()
    for s in cfg.subjects:
        if s.identifier in seen:
            raise InputError("--subject", s.identifier, "is used by two subjects", "Give every subject its own identifier")
        seen.add(s.identifier)
        if s.identifier.lower() in COMMON_WORDS:
            warnings.warn(f"identifier {s.identifier!r} is a common word: the model already means something by it. "
                          "A rare token such as 'sks', 'tuki' or 'bnh' works better", stacklevel=2)
        _check_class_prompts(cfg, s)
        if "{identifier}" not in s.template:
            raise InputError("--subject", s.template, "template lacks {identifier}",
                             "e.g. template='a {identifier} {class_word}'")


def _check_subject(s: SubjectConfig) -> None:
    from conceptlab.validation import input_dir, text

    where = f"--subject {s.identifier}"
    text("--subject", s.identifier, example="tuki")
    if any(c.isspace() for c in s.identifier):
        raise InputError("--subject", s.identifier, "contains spaces", "Use one rare word, e.g. tuki or sks")
    text(f"{where},class", s.class_word, example="monster")
    check_image_folder(where, s.folder)
    if s.masks:
        input_dir(f"{where},masks", s.masks, "folder of masks named like the images")


def _check_class_prompts(cfg: DreamBoothConfig, s: SubjectConfig) -> None:
    """A subject's class prompts: 'class', 'captions' (it must have captions) or a file of prompts."""
    setting, argument = _class_prompt_setting(cfg, s)
    if setting == "captions" and not s.captions:
        raise InputError(argument, "captions", f"subject {s.identifier!r} has no captions to draw class prompts from",
                         f"Add captions=WORD to --subject {s.identifier}, or use class prompts 'class'")
    if setting not in ("class", "captions"):
        _prompt_file(setting, argument)


def _class_prompt_setting(cfg: DreamBoothConfig, s: SubjectConfig) -> tuple[str, str]:
    """(the subject's class-prompt setting, the argument it came from)."""
    if s.class_prompts:
        return s.class_prompts, f"--subject {s.identifier},class_prompts"
    return cfg.class_prompts, "--class-prompts"


def _prompt_file(path: str, argument: str) -> list[str]:
    """The prompts of a text file, one a line; InputError for a missing or empty file."""
    from conceptlab.validation import input_file

    lines = [x.strip() for x in input_file(argument, path, "text file of class prompts").read_text().splitlines()]
    if not any(lines):
        raise InputError(argument, path, "holds no prompt", "Write one class prompt a line, e.g. 'a happy monster'")
    return [x for x in lines if x]


def checked_masks(s: SubjectConfig, names: list[str], sizes: list[tuple[int, int]]):
    """The subject's masks, one per image (`names`, of `sizes`), each the size of its image."""
    masks = read_masks(s.masks, names, f"--subject {s.identifier},masks")
    for name, mask, size in zip(names, masks, sizes):
        if mask.size != size:
            raise InputError(f"--subject {s.identifier},masks", f"{s.masks}/{name}",
                             f"mask is {mask.size[0]}x{mask.size[1]} but its image is {size[0]}x{size[1]}",
                             "Make each mask the size of its image")
    return masks


def prepared_masks(s: SubjectConfig, names: list[str], sizes: list[tuple[int, int]], res: int, center_crop: bool,
                   seed: int):
    """The subject's masks, resized and cropped exactly as its images (`names`, of `sizes`) were."""
    masks = checked_masks(s, names, sizes)
    with warnings.catch_warnings():  # an upscaled image has already said so
        warnings.simplefilter("ignore")
        return prepare_images(masks, res, center_crop, seed, f"of {s.identifier}")


def instance_prompt(s: SubjectConfig) -> str:
    return s.template.format(identifier=s.identifier, class_word=s.class_word)


def class_prompt(s: SubjectConfig) -> str:
    return f"a {s.class_word}"


def prior_key(s: SubjectConfig) -> str:
    """The class-image pool a subject draws from: its class word's, shared by the subjects of that class, or
    its own ('monster/tuki') when it names its own class prompts."""
    return s.class_word if s.class_prompts is None else f"{s.class_word}/{s.identifier}"


def prior_weight_of(cfg: DreamBoothConfig, s: SubjectConfig) -> float:
    """The weight of the subject's class images in the loss: its own, or the run's."""
    return cfg.prior_weight if s.prior_weight is None else s.prior_weight


def subject_class_prompts(cfg: DreamBoothConfig, s: SubjectConfig) -> list[str]:
    """The prompts the subject's class images are drawn from (see SubjectConfig.class_prompts)."""
    setting, argument = _class_prompt_setting(cfg, s)
    if setting not in ("class", "captions"):
        return _prompt_file(setting, argument)
    prompts = [class_prompt(s)]
    if setting == "captions":
        names = load_concept_folder(s.folder, f"--subject {s.identifier}")[1]
        prompts += substituted_captions(s.folder, names, s.captions, s.class_word,
                                        f"--subject {s.identifier},captions={s.captions}")
    return prompts


def class_prompts(cfg: DreamBoothConfig) -> dict[str, list[str]]:
    """The prompts class images are drawn from, per pool (prior_key: the class word unless a subject has its own)."""
    out: dict[str, list[str]] = {}
    for s in cfg.subjects:
        out.setdefault(prior_key(s), []).extend(subject_class_prompts(cfg, s))
    return {key: list(dict.fromkeys(prompts)) for key, prompts in out.items()}


class DreamBooth:
    """The DreamBooth training method for Trainer; LoRA when cfg.lora."""

    def __init__(self, pipe, cfg: DreamBoothConfig, class_latents: dict[str, CachedLatents] | None = None,
                 class_texts: dict[str, list[str]] | None = None):
        from conceptlab.models.families import require_family

        self.family = require_family(pipe, "DreamBooth", ("sd1", "sd2", "sdxl"))
        check_subjects(cfg)
        self.pipe, self.cfg = pipe, cfg
        # (attribute, encoder) per text encoder: SDXL's two train (and save) side by side
        self.text_encoders = [(slot.encoder, slot.parts(pipe)[1]) for slot in self.family.slots]
        self.res = res = cfg.resolution or self.family.native_size(pipe)
        self.bucketing = bucketing_for(pipe, cfg.buckets, res, cfg.center_crop, cfg.train.seed)
        images, self.captions, files, loaded_all = [], [], [], []
        for s in cfg.subjects:
            loaded, names = load_concept_folder(s.folder, f"--subject {s.identifier}")
            files.append((names, [im.size for im in loaded]))
            if self.bucketing is None:
                images.append(prepare_images(loaded, res, cfg.center_crop, cfg.train.seed, f"of {s.identifier}"))
            loaded_all.append(loaded)
            self.captions.append(None if not s.captions else substituted_captions(
                s.folder, names, s.captions, f"{s.identifier} {s.class_word}",
                f"--subject {s.identifier},captions={s.captions}"))
        for module in (pipe.vae, pipe.unet, *(te for _, te in self.text_encoders)):
            module.requires_grad_(False)
        self.instance = [CachedLatents.encode(pipe.vae, ims, cfg.flip) for ims in images]
        for s, latents, (names, sizes) in zip(cfg.subjects, self.instance, files):
            if s.masks:
                masks = prepared_masks(s, names, sizes, res, cfg.center_crop, cfg.train.seed)
                latents.weight = mask_weights(masks, tuple(latents.mean.shape[2:]), cfg.mask_weight, cfg.flip)
        # with buckets: per subject, {bucket (w, h): its images' latents and masks}; None keeps the square path
        self.buckets = None if self.bucketing is None else [
            self.bucketing.encode(pipe.vae, ims, cfg.flip, f"of {s.identifier}",
                                  checked_masks(s, names, sizes) if s.masks else None, cfg.mask_weight)
            for s, ims, (names, sizes) in zip(cfg.subjects, loaded_all, files)]
        self.classes = class_latents or {}
        self.class_texts = class_texts or {}  # per class word: each class image's prompt (default "a CLASS")
        if cfg.prior_preservation and any(prior_key(s) not in self.classes for s in cfg.subjects):
            raise InputError("--prior-preservation", True, "class images were not prepared",
                             "Call prepare_class_images first (the CLI does)")
        self._setup_trainable()
        from conceptlab.training.loop import EMA

        self.ema = EMA(self.parameters(), cfg.ema_decay) if cfg.ema_decay else None  # an after-step hook
        self.scheduler = training_scheduler(pipe)
        num = self.scheduler.config.num_train_timesteps
        check_timestep_bias(cfg.timestep_bias, num)
        self.t_weights = timestep_weights(cfg.timestep_bias, num)  # (num,) or None: an even draw
        self._cond_cache: dict[str, tuple] = {}
        if not cfg.train_text_encoder:
            self._warn_if_indistinct()

    def _warn_if_indistinct(self, limit: float = 0.995) -> None:
        """With the text encoder frozen, subjects whose prompts it encodes alike cannot be told apart."""
        subjects = self.cfg.subjects
        if len(subjects) < 2:
            return
        cond = self.encode([instance_prompt(s) for s in subjects]).hidden.flatten(1)  # (S, 77*D)
        sim = F.cosine_similarity(cond[:, None], cond[None], dim=-1)  # (S, S)
        for i in range(len(subjects)):
            for j in range(i + 1, len(subjects)):
                if sim[i, j] > limit:
                    warnings.warn(
                        f"subjects {subjects[i].identifier!r} and {subjects[j].identifier!r}: this text encoder gives "
                        f"their prompts nearly the same embedding (cosine {sim[i, j]:.4f}), so with it frozen the UNet "
                        "cannot tell them apart. Add --train-text-encoder, or pick identifiers the tokenizer knows "
                        "as distinct tokens", stacklevel=3)

    def _setup_trainable(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        unet, fam = self.pipe.unet, self.family
        encoders = [te for _, te in self.text_encoders] if self.cfg.train_text_encoder else []
        if self.cfg.lora:
            # peft draws the A matrices from torch's global generator (on the CPU, before moving them): seed it
            # from the run's seed, so a seed gives one starting LoRA, without touching the caller's random state
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.train.seed)
                unet.add_adapter(LoraConfig(r=self.cfg.rank, lora_alpha=self.cfg.rank, init_lora_weights="gaussian",
                                            target_modules=list(fam.lora_unet_targets)))
                for te in encoders:  # peft's own injection: transformers' add_adapter asks for a newer peft
                    inject_adapter_in_model(LoraConfig(r=self.cfg.rank, lora_alpha=self.cfg.rank,
                                                       init_lora_weights="gaussian",
                                                       target_modules=list(fam.lora_text_targets)), te)
        else:
            for module in (unet, *encoders):
                module.requires_grad_(True)
        if self.cfg.train.gradient_checkpointing:
            unet.enable_gradient_checkpointing()

    # ---------------------------------------------------------------- what the loop calls
    def parameters(self) -> list[torch.nn.Parameter]:
        modules = (self.pipe.unet, *(te for _, te in self.text_encoders))
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def param_groups(self) -> list[tuple[list[torch.nn.Parameter], float]]:
        return self.rate_groups(self._named_trainable())

    def rate_groups(self, named: dict[str, torch.nn.Parameter]) -> list[tuple[list[torch.nn.Parameter], float]]:
        """[(weights, factor of the loop's lr)] of `named` ('unet.*', 'text_encoder*.*'): one group at the lr, or
        the UNet's at the lr and the text encoders' at text_encoder_lr (scaled as the lr is)."""
        if self.cfg.text_encoder_lr is None:
            return [(list(named.values()), 1.0)]
        unet = [p for n, p in named.items() if n.startswith("unet.")]
        text = [p for n, p in named.items() if not n.startswith("unet.")]
        return [(unet, 1.0), (text, self.cfg.text_encoder_lr / self.cfg.train.lr)]

    def _named_trainable(self) -> dict[str, torch.nn.Parameter]:
        out = {}
        for prefix, module in (("unet", self.pipe.unet), *self.text_encoders):
            out.update({f"{prefix}.{n}": p for n, p in module.named_parameters() if p.requires_grad})
        return out

    def encode(self, texts: list[str], sizes=None):
        """The family's conditioning of `texts`; cached per prompt while the text encoders are frozen. `sizes` are
        the images' SDXL size conditioning (None: whole images at the training resolution)."""
        from conceptlab.models.families import Conditioning

        if self.cfg.train_text_encoder:
            return self._encode(texts, sizes)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cond_cache]
        if missing:
            with torch.no_grad():
                cond = self._encode(missing)
                pooled = cond.added["text_embeds"] if cond.added else [None] * len(missing)
                for k, t in enumerate(missing):
                    self._cond_cache[t] = (cond.hidden[k], pooled[k], cond.added["time_ids"][k] if cond.added else None)
        rows = [self._cond_cache[t] for t in texts]
        hidden = torch.stack([r[0] for r in rows])  # (B, 77, D)
        if rows[0][1] is None:
            return Conditioning(hidden)
        pooled = torch.stack([r[1] for r in rows])  # (B, P)
        time_ids = torch.stack([r[2] for r in rows]) if sizes is None else self.family.time_ids(sizes, pooled)
        return Conditioning(hidden, {"text_embeds": pooled, "time_ids": time_ids})

    def _encode(self, texts: list[str], sizes=None):
        return self.family.encode(self.pipe, texts, (self.res, self.res), sizes)

    def batch(self, batch_size: int, generator: torch.Generator, with_subjects: bool = False):
        """Instance latents and prompts, balanced across subjects; the paired class examples when enabled;
        `with_subjects` adds each item's subject index (B,) last."""
        n = len(self.cfg.subjects)
        offset = int(torch.randint(0, n, (1,), generator=generator))
        inst, inst_txt, inst_w, cls, cls_txt = [], [], [], [], []
        for i in range(batch_size):
            s = (offset + i) % n
            subject = self.cfg.subjects[s]
            idx = torch.randint(0, len(self.instance[s]), (1,), generator=generator)
            inst.append(self.instance[s].sample(idx, generator))
            inst_w.append(self.instance[s].pixel_weight(idx))
            own = self.captions[s]  # latents hold the images, then their mirror images
            inst_txt.append(self._instance_text(subject, own, int(idx) % len(own) if own else 0, generator))
            if self.cfg.prior_preservation:
                latents, text = self._class_example(subject, generator)
                cls.append(latents)
                cls_txt.append(text)
        drawn = torch.cat(inst), inst_txt, torch.cat(inst_w), (torch.cat(cls) if cls else None), cls_txt
        return (*drawn, (offset + torch.arange(batch_size)) % n) if with_subjects else drawn

    def _instance_text(self, subject: SubjectConfig, own: list[str] | None, row: int, generator) -> str:
        """Image `row`'s caption, or the bare instance prompt (without captions, and at the --caption-dropout
        rate; the draw only happens with a rate, so runs without one keep their random sequence)."""
        if not own:
            return instance_prompt(subject)
        rate = self.cfg.caption_dropout
        if rate and float(torch.rand((), generator=generator)) < rate:
            return instance_prompt(subject)
        return own[row]

    def _class_example(self, subject: SubjectConfig, generator: torch.Generator):
        """(latents (1, C, h, w), prompt) of a class image from the subject's prior pool."""
        pool = self.classes[prior_key(subject)]
        cidx = torch.randint(0, len(pool), (1,), generator=generator)
        latents = pool.sample(cidx, generator)
        texts = self.class_texts.get(prior_key(subject))  # latents: the images, then their mirrors
        return latents, (texts[int(cidx) % len(texts)] if texts else class_prompt(subject))

    def bucket_batch(self, batch_size: int, generator: torch.Generator):
        """As `batch(with_subjects=True)`, every instance from one bucket, plus each instance's SDXL size
        conditioning; the subjects with images in the bucket take turns."""
        inst, inst_txt, inst_w, cls, cls_txt, subjects, sizes = [], [], [], [], [], [], []
        for s, part, row in draw_bucket_items(self.buckets, batch_size, generator):
            subject, idx = self.cfg.subjects[s], torch.tensor([row])
            inst.append(part.latents.sample(idx, generator))  # (1, C, h, w) of the bucket
            inst_w.append(part.latents.pixel_weight(idx))
            inst_txt.append(self._instance_text(subject, self.captions[s], part.sources[row], generator))
            subjects.append(s)
            sizes.append(part.sizes[row])
            if self.cfg.prior_preservation:
                latents, text = self._class_example(subject, generator)
                cls.append(latents)
                cls_txt.append(text)
        return (torch.cat(inst), inst_txt, torch.cat(inst_w), (torch.cat(cls) if cls else None), cls_txt,
                torch.tensor(subjects), sizes)

    def _bucket_loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """The loss of a batch from one bucket. Class images are square: they share the instances' UNet call
        when the bucket is square too, else they get their own."""
        from conceptlab.models.families import SizeConditioning

        inst, inst_txt, inst_w, cls, cls_txt, subjects, sizes = self.bucket_batch(batch_size, generator)
        square = SizeConditioning((self.res, self.res), (0, 0), (self.res, self.res))
        cond = self.encode(inst_txt + cls_txt, sizes + [square] * len(cls_txt))
        masked = any(s.masks for s in self.cfg.subjects)
        calls = [(inst, inst_w if masked else None, cond.rows(0, batch_size))]  # (latents, pixel weight, cond)
        if cls is not None and cls.shape[1:] == inst.shape[1:]:
            weight = torch.cat([inst_w, torch.ones(len(cls), *inst_w.shape[1:])]) if masked else None
            calls = [(torch.cat([inst, cls]), weight, cond)]
        elif cls is not None:
            calls.append((cls, None, cond.rows(batch_size)))
        per_sample = torch.cat([denoising_loss(self.pipe.unet, self.scheduler, x, c.hidden, generator,
                                               self.cfg.offset_noise, self.cfg.min_snr_gamma, reduction="none",
                                               pixel_weight=w, added_cond_kwargs=c.added, t_weights=self.t_weights)
                                for x, w, c in calls])
        loss = per_sample[:batch_size].mean()
        if cls is not None:
            loss = loss + self.prior_term(per_sample[batch_size:], subjects)
        return loss

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        if self.buckets is not None:
            return self._bucket_loss(batch_size, generator)
        inst, inst_txt, inst_w, cls, cls_txt, subjects = self.batch(batch_size, generator, with_subjects=True)
        latents = inst if cls is None else torch.cat([inst, cls])
        weight = None  # (B, 1, h, w): the instances' mask weights, ones for class images
        if any(s.masks for s in self.cfg.subjects):
            weight = inst_w if cls is None else torch.cat([inst_w, torch.ones(len(cls), *inst_w.shape[1:])])
        cond = self.encode(inst_txt + cls_txt)
        per_sample = denoising_loss(self.pipe.unet, self.scheduler, latents, cond.hidden, generator,
                                    self.cfg.offset_noise, self.cfg.min_snr_gamma, reduction="none",
                                    pixel_weight=weight, added_cond_kwargs=cond.added, t_weights=self.t_weights)
        loss = per_sample[:batch_size].mean()
        if cls is not None:
            loss = loss + self.prior_term(per_sample[batch_size:], subjects)
        return loss

    def prior_term(self, class_losses: torch.Tensor, subjects: torch.Tensor) -> torch.Tensor:
        """mean_i w[s_i] * L_class_i: each class example weighted by its paired subject's prior weight (B,)."""
        weights = [prior_weight_of(self.cfg, s) for s in self.cfg.subjects]
        if len(set(weights)) == 1:  # one weight: the same arithmetic as before weights per subject
            return weights[0] * class_losses.mean()
        return (torch.tensor(weights, dtype=class_losses.dtype)[subjects] * class_losses).mean()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in self._named_trainable().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = self._named_trainable()
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v)

    def metadata(self, steps: int | None, loss: float | None) -> dict:
        from conceptlab import __version__

        return {"base_model": self.cfg.model or "sticker_base", "subjects": [s.identifier for s in self.cfg.subjects],
                "classes": [s.class_word for s in self.cfg.subjects], "rank": self.cfg.rank if self.cfg.lora else None,
                "lora": self.cfg.lora, "steps": steps, "final_loss": loss, "conceptlab_version": __version__}

    @contextlib.contextmanager
    def averaged(self):
        """Within it the trainable weights are their moving average (with --ema-decay; else as trained)."""
        if self.ema is None:
            yield
            return
        live = [p.detach().clone() for p in self.ema.params]
        self.use_average()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.ema.params], live)

    def use_average(self) -> None:
        """Puts the moving average into the trainable weights for good (the weights saved are the average)."""
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.ema.params], self.ema.shadow)

    def save_outputs(self, out: Path, step: int, loss: float | None) -> None:
        with self.averaged():
            self._save_outputs(out, step, loss)

    def _save_outputs(self, out: Path, step: int, loss: float | None) -> None:
        from conceptlab.concepts.lora import save_lora

        meta = {**self.metadata(step, loss), "ema_decay": self.cfg.ema_decay or None}
        _remove_other_mode(Path(out), self.cfg.lora)
        if self.cfg.lora:
            save_lora(self.pipe, Path(out) / "lora", meta)
        else:
            folder = Path(out) / "pipeline"
            self.pipe.save_pretrained(folder, safe_serialization=True)
            from conceptlab.io import atomic_write_json

            atomic_write_json(meta, folder / "conceptlab_dreambooth.json")

    @torch.no_grad()
    def preview(self, prompts: list[str], seed: int, steps: int) -> list:
        from conceptlab.generation.generate import seeded_generators

        generators = seeded_generators([seed] * len(prompts))
        return self.pipe(prompts, num_inference_steps=steps, generator=generators).images


def _remove_other_mode(out: Path, lora: bool) -> None:
    """A run folder trained again in the other mode (after --overwrite) keeps none of the first run's outputs: a
    LoRA run drops the pipeline a full fine-tune wrote (marked by its conceptlab_dreambooth.json), a full
    fine-tune drops lora/."""
    import shutil

    if lora and (out / "pipeline" / "conceptlab_dreambooth.json").is_file():
        shutil.rmtree(out / "pipeline")
    elif not lora and (out / "lora").is_dir():
        shutil.rmtree(out / "lora")


def refuse_ema_beside_selection(ema_decay: float, hooks) -> None:
    """--ema-decay and --select-by both decide which weights are kept; a run takes one of them."""
    from conceptlab.training.selection import CheckpointSelection

    if ema_decay and any(isinstance(h, CheckpointSelection) for h in hooks):
        raise InputError("--ema-decay", ema_decay, "and --select-by both decide which weights are kept: "
                         "selection scores the trained weights, the saved ones would be their average",
                         "Use one of --ema-decay and --select-by")


def prompt_folder(prompt: str) -> str:
    """A short, stable folder name for a prompt's class images."""
    import hashlib
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40]
    return f"{slug}-{hashlib.sha1(prompt.encode()).hexdigest()[:8]}"


def without_unset_priors(record: dict) -> dict:
    """A config record whose subjects leave out prior_weight and class_prompts while unset: runs checkpointed
    before subjects had them keep their fingerprint, so they still resume."""
    subjects = [{k: v for k, v in s.items() if not (k in ("prior_weight", "class_prompts") and v is None)}
                for s in record.get("subjects", [])]
    return {**record, "subjects": subjects}


def prepare_priors(cfg: DreamBoothConfig, pipe, out) -> tuple[dict[str, CachedLatents], dict[str, list[str]]]:
    """(class latents, each class image's prompt) per prior pool (prior_key); empty without prior preservation.

    Images are drawn once per prompt into OUT/class-images/CLASS (or --class-dir), a subject with its own class
    prompts in a subfolder named by its identifier, and reused while their manifest matches."""
    from conceptlab.models.families import family_of
    from conceptlab.training.class_images import prepare_class_images, weights_fingerprint

    classes: dict[str, CachedLatents] = {}
    texts: dict[str, list[str]] = {}
    if not cfg.prior_preservation:
        return classes, texts
    res = cfg.resolution or family_of(pipe).native_size(pipe)
    fingerprint = weights_fingerprint(pipe)  # once: every prompt folder's manifest checks the same weights
    owner = {prior_key(s): s for s in cfg.subjects}
    for key, prompts in class_prompts(cfg).items():
        s = owner[key]
        folder = Path(cfg.class_dir) if cfg.class_dir else Path(out) / "class-images" / s.class_word
        folder = folder / s.identifier if key != s.class_word else folder
        images, texts[key] = [], []
        for prompt in prompts:  # one folder (and manifest) per prompt beyond the plain class prompt
            sub = folder if len(prompts) == 1 else folder / prompt_folder(prompt)
            made = prepare_class_images(pipe, prompt, math.ceil(cfg.class_images / len(prompts)), sub,
                                        cfg.model or "sticker_base", steps=cfg.class_steps,
                                        replace_stale=not cfg.class_dir, fingerprint=fingerprint)
            images += made
            texts[key] += [prompt] * len(made)
        classes[key] = CachedLatents.encode(pipe.vae, [prepare_image(im, res) for im in images], cfg.flip)
    return classes, texts


def train_dreambooth(cfg: DreamBoothConfig, out, resume: bool = False, device=None, dtype=None, pipe=None, hooks=(),
                     **train_kwargs):
    """Loads the model (unless `pipe` is given), prepares class images when prior preservation is on, trains.

    Returns (pipe, TrainResult); the pipeline holds the trained weights (LoRA adapters attached), with
    `ema_decay` their moving average, as saved.
    """
    from dataclasses import asdict

    from conceptlab.models.loading import load_pipeline
    from conceptlab.training.loop import Trainer

    check_subjects(cfg)
    cfg.train.check()
    pipe = pipe if pipe is not None else load_pipeline(cfg.model, device=device, dtype=dtype)
    classes, texts = prepare_priors(cfg, pipe, out)
    method = DreamBooth(pipe, cfg, classes, texts)
    if method.ema is not None:
        refuse_ema_beside_selection(cfg.ema_decay, hooks)
        hooks = [method.ema, *hooks]  # first: later hooks see this step's average
    record = run_record(without_unset_priors(asdict(cfg)))
    result = Trainer(method, cfg.train, out, config_record=record, hooks=hooks).train(resume=resume,
                                                                                        **train_kwargs)
    if method.ema is not None:
        method.use_average()  # the returned pipeline holds what was saved
    return pipe, result
