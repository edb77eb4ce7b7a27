"""Textual inversion (Gal et al. 2022, arXiv 2208.01618): learns only new word vectors, several concepts jointly.

What it trains: one TokenSplice holding the vectors of every concept's placeholder tokens.
Its loss: the denoising loss on the concept's images, captioned by templates that contain the token.
Images go through the VAE once (CachedLatents); the UNet, VAE and text encoder stay frozen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from conceptlab.concepts.formats import Embedding, load_embedding, safe_name, save_all_formats
from conceptlab.concepts.tokens import PlaceholderToken, TokenSplice, add_placeholder, init_vectors
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
    prepare_images,
    substituted_captions,
)
from conceptlab.training.diffusion import denoising_loss, training_scheduler
from conceptlab.training.loop import TrainConfig

OBJECT_TEMPLATES = (
    "a picture of a {}", "a sticker of a {}", "a {}", "a drawing of the {}", "a close-up picture of a {}",
    "a rendition of a {}", "a small {}", "a nice {}", "the {}", "an image of the {}", "a cute {}",
    "a clean picture of a {}", "a {} on its own", "one {}",
)
STYLE_TEMPLATES = (
    "a picture in the style of {}", "a sticker in the style of {}", "art in {} style", "a {} style picture",
    "a drawing in the style of {}", "an image in {} style", "a small picture in the style of {}",
    "a cute picture, {} style",
)


@dataclass
class ConceptConfig:
    """One concept: its placeholder token, its image folder and how it starts."""

    token: str
    folder: str
    init: str | None = None  # a word, or a saved embedding file to continue from
    vectors: int = 1
    template: str = "object"  # "object", "style", or a text file with one template per line, each with {}
    # caption each image with its own caption (metadata.jsonl 'text' or NAME.txt), this word replaced by the
    # token: what the captions name (an emotion, a scene) stays in those words instead of the token
    captions: str | None = None


@dataclass
class TextualInversionConfig:
    """`conceptlab train ti` settings; stored in every embedding file's metadata."""

    model: str | None = None
    concepts: list[ConceptConfig] = field(default_factory=list)
    resolution: int | None = None  # None: the model's native size
    center_crop: bool = True  # False: each picture cut at a place drawn once from the seed (within its bucket)
    flip: bool = True
    buckets: BucketConfig = field(default_factory=BucketConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=500, batch_size=4, lr=5e-3))


def parse_concept(text: str) -> ConceptConfig:
    """'<tok>=DIR,init=WORD,vectors=K,template=object,captions=WORD' -> ConceptConfig."""
    head, *opts = text.split(",")
    token, sep, folder = head.partition("=")
    if not sep or not token or not folder:
        raise InputError("--concept", text, "expected TOKEN=DIR[,init=WORD][,vectors=K][,template=...]",
                         "e.g. --concept '<broccoli>=data/broccoli,init=broccoli'")
    kw: dict = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if key not in ("init", "vectors", "template", "captions") or not sep:
            raise InputError("--concept", text, f"unknown option {opt!r}",
                             "Options are init=, vectors=, template=, captions=")
        kw[key] = int(value) if key == "vectors" and value.lstrip("-").isdigit() else value
    if "vectors" in kw and not isinstance(kw["vectors"], int):
        raise InputError("--concept", text, "vectors must be a whole number", "e.g. vectors=2")
    return ConceptConfig(token=token, folder=folder, **kw)


def load_templates(template: str, argument: str) -> tuple[str, ...]:
    if template == "object":
        return OBJECT_TEMPLATES
    if template == "style":
        return STYLE_TEMPLATES
    path = Path(template)
    if not path.is_file():
        raise InputError(argument, template, "is neither 'object', 'style' nor a file", "Pass template=object|style|FILE")
    lines = tuple(x.strip() for x in path.read_text().splitlines() if x.strip())
    bad = [x for x in lines if "{}" not in x]
    if not lines or bad:
        raise InputError(argument, template, f"has templates without '{{}}' ({bad[:1] or 'empty file'})",
                         "Write one template per line with {} where the token goes")
    return lines


def caption_with_token(concept: ConceptConfig, names: list[str]) -> list[str] | None:
    """The images' own captions with `concept.captions` (a whole word) replaced by the token; None without."""
    if not concept.captions:
        return None
    return substituted_captions(concept.folder, names, concept.captions, concept.token,
                                f"--concept {concept.token},captions={concept.captions}")


def check_concepts(concepts: list[ConceptConfig]) -> None:
    """Raises InputError for any bad concept (token, folder, init, vectors, template) before a model loads."""
    if not concepts:
        raise InputError("--concept", None, "no concept given", "Add --concept '<token>=DIR'")
    seen = set()
    for c in concepts:
        if c.token in seen:
            raise InputError("--concept", c.token, "is used by two concepts", "Give every concept its own token")
        seen.add(c.token)
        _check_concept(c)


def _check_concept(c: ConceptConfig) -> None:
    from conceptlab.validation import VECTORS, text

    text("--concept", c.token, example="'<broccoli>'")
    if any(ch.isspace() for ch in c.token):
        raise InputError("--concept", c.token, "contains spaces", "Use one new word, e.g. '<my-concept>'")
    check_image_folder(f"--concept {c.token}", c.folder)
    VECTORS.check(f"--concept {c.token},vectors", c.vectors)
    load_templates(c.template, f"--concept {c.token},template")
    if c.captions is not None:
        text(f"--concept {c.token},captions", c.captions, example="broccoli")
    if c.init is not None:
        text(f"--concept {c.token},init", c.init, example="broccoli")
        if _looks_like_path(c.init):
            load_embedding(c.init, argument=f"--concept {c.token},init")


def _looks_like_path(init: str) -> bool:
    """A mistyped path must not silently become an init word made of the path's BPE pieces."""
    return Path(init).is_file() or "/" in init or "\\" in init or Path(init).suffix.lower() in (
        ".safetensors", ".pt", ".bin", ".npy", ".ckpt")


class TextualInversion:
    """The textual-inversion training method for Trainer (see training/loop.py).

    Every text encoder of the model's family learns its own vectors for the token (SDXL: 768 and 1280 wide
    ones in its two encoders), each spliced in by its own TokenSplice."""

    def __init__(self, pipe, cfg: TextualInversionConfig):
        from conceptlab.models.families import require_family

        self.family = require_family(pipe, "textual inversion", ("sd1", "sd2", "sdxl"))
        check_concepts(cfg.concepts)
        check_resolution(cfg.resolution, pipe.vae_scale_factor)
        self.pipe, self.cfg = pipe, cfg
        self.templates = [load_templates(c.template, f"--concept {c.token} template") for c in cfg.concepts]
        self.res = cfg.resolution or self.family.native_size(pipe)
        self.bucketing = bucketing_for(pipe, cfg.buckets, self.res, cfg.center_crop, cfg.train.seed)
        self.latents, self.captions, loaded_all = [], [], []
        for c in cfg.concepts:  # load and check every folder before touching the model
            loaded, names = load_concept_folder(c.folder, f"--concept {c.token}")
            if self.bucketing is None:
                self.latents.append(prepare_images(loaded, self.res, cfg.center_crop, cfg.train.seed, f"of {c.token}"))
            loaded_all.append(loaded)
            self.captions.append(caption_with_token(c, names))
        for module in (pipe.unet, pipe.vae, *(slot.parts(pipe)[1] for slot in self.family.slots)):
            module.requires_grad_(False)
        self.latents = [CachedLatents.encode(pipe.vae, ims, cfg.flip) for ims in self.latents]
        # with buckets: per concept, {bucket (w, h): its images' latents}; None keeps the square path above
        self.buckets = None if self.bucketing is None else [
            self.bucketing.encode(pipe.vae, ims, cfg.flip, f"of {c.token}") for c, ims in zip(cfg.concepts, loaded_all)]
        inits = [self._init(c) for c in cfg.concepts]
        self.placeholders = [PlaceholderToken(c.token, vectors) for c, (vectors, _) in zip(cfg.concepts, inits)]
        self.splices = [self._splice(k, inits) for k in range(len(self.family.slots))]
        self.splice = self.splices[0]  # the first encoder's: what SD 1.x/2.x code and tests know
        self.scheduler = training_scheduler(pipe)

    def _init(self, c: ConceptConfig):
        """(number of vectors, init) of a concept: a word, an Embedding from a file, or None."""
        init = load_embedding(c.init) if c.init and _looks_like_path(c.init) else c.init
        if isinstance(init, Embedding):
            from conceptlab.concepts.tokens import check_fits

            check_fits(self.pipe, init, f"--concept {c.token},init")
        return (init.num_vectors if isinstance(init, Embedding) and c.vectors == 1 else c.vectors), init

    def _splice(self, k: int, inits) -> TokenSplice:
        """The placeholders added to text encoder k, with their starting vectors spliced in."""
        from conceptlab.concepts.tokens import slot_vectors

        slot = self.family.slots[k]
        tok, te = slot.parts(self.pipe)
        ids, start = [], []
        draws = torch.Generator().manual_seed(0)  # one sequence: tokens started at random each get their own draw
        for c, ph, (vectors, init) in zip(self.cfg.concepts, self.placeholders, inits):
            if isinstance(init, Embedding):
                init = Embedding(init.token, slot_vectors(init, self.family)[k])
            start.append(init_vectors(tok, te, init, vectors, draws))
            ids += add_placeholder(tok, te, ph, f"--concept {c.token}")
        return TokenSplice(te.get_input_embeddings(), ids, torch.cat(start))

    # ---------------------------------------------------------------- what the loop calls
    def parameters(self) -> list[torch.nn.Parameter]:
        return [s.vectors for s in self.splices]

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """Latents and captions, balanced across concepts: item i is concept (offset + i) mod n."""
        n = len(self.placeholders)
        offset = int(torch.randint(0, n, (1,), generator=generator))
        latents, texts = [], []
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        rng = random.Random(seed)
        for i in range(batch_size):
            c = (offset + i) % n
            idx = torch.randint(0, len(self.latents[c]), (1,), generator=generator)
            latents.append(self.latents[c].sample(idx, generator))
            if self.captions[c] is not None:  # latents hold the images, then their mirror images
                text = self.captions[c][int(idx) % len(self.captions[c])]
            else:
                text = rng.choice(self.templates[c]).format(self.placeholders[c].token)
            texts.append(self.pipe.maybe_convert_prompt(text, self.pipe.tokenizer))
        return torch.cat(latents), texts

    def bucket_batch(self, batch_size: int, generator: torch.Generator):
        """(latents (B, C, h, w) of one bucket, captions, each image's SDXL size conditioning); the concepts
        with images in the bucket take turns, as in `batch`."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        rng = random.Random(seed)
        latents, texts, sizes = [], [], []
        for c, part, row in draw_bucket_items(self.buckets, batch_size, generator):
            latents.append(part.latents.sample(torch.tensor([row]), generator))
            sizes.append(part.sizes[row])
            if self.captions[c] is not None:
                text = self.captions[c][part.sources[row]]
            else:
                text = rng.choice(self.templates[c]).format(self.placeholders[c].token)
            texts.append(self.pipe.maybe_convert_prompt(text, self.pipe.tokenizer))
        return torch.cat(latents), texts, sizes

    def encode(self, texts: list[str], sizes=None):
        """The family's conditioning of `texts`, with gradients reaching the spliced vectors; `sizes` are the
        images' SDXL size conditioning (None: whole images at the training resolution)."""
        return self.family.encode(self.pipe, texts, (self.res, self.res), sizes)

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        if self.buckets is None:
            latents, texts, sizes = *self.batch(batch_size, generator), None
        else:
            latents, texts, sizes = self.bucket_batch(batch_size, generator)
        cond = self.encode(texts, sizes)
        return denoising_loss(self.pipe.unet, self.scheduler, latents, cond.hidden, generator,
                              added_cond_kwargs=cond.added)

    def _state_keys(self) -> list[str]:
        # the first encoder keeps the key older checkpoints use
        return ["vectors"] + [f"vectors_{slot.key}" for slot in self.family.slots[1:]]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: s.vectors.detach().clone() for k, s in zip(self._state_keys(), self.splices)}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, s in zip(self._state_keys(), self.splices):
                s.vectors.copy_(state[k])

    def embeddings(self, steps: int | None = None, loss: float | None = None) -> list[Embedding]:
        out, start = [], 0
        for c, ph in zip(self.cfg.concepts, self.placeholders):
            rows = [s.vectors[start:start + ph.num_vectors] for s in self.splices]
            start += ph.num_vectors
            meta = {"base_model": self.cfg.model or "sticker_base", "family": self.family.name, "token": ph.token,
                    "vectors": ph.num_vectors, "init": str(c.init or ""), "steps": steps, "final_loss": loss,
                    "conceptlab_version": _version()}
            extra = {slot.key: r for slot, r in zip(self.family.slots[1:], rows[1:])}
            out.append(Embedding(ph.token, rows[0], meta, extra))
        return out

    def save_outputs(self, out: Path, step: int, loss: float | None, meta: dict | None = None) -> None:
        """Every token's files in OUT/<token>/ (`meta`: more keys for each file's metadata)."""
        for splice in self.splices:
            splice.write_into_embedding()
        for emb in self.embeddings(step, loss):
            emb.meta.update(meta or {})
            save_all_formats(emb, Path(out) / safe_name(emb.token))

    @torch.no_grad()
    def preview(self, prompts: list[str], seed: int, steps: int) -> list:
        from conceptlab.generation.generate import seeded_generators

        generators = seeded_generators([seed] * len(prompts))
        return self.pipe(prompts, num_inference_steps=steps, generator=generators).images


def _version() -> str:
    from conceptlab import __version__

    return __version__


def train_textual_inversion(cfg: TextualInversionConfig, out, resume: bool = False, device=None, dtype=None,
                            pipe=None, hooks=(), **train_kwargs):
    """Checks every setting, loads the model (unless `pipe` is given) and trains; returns (pipe, TrainResult).

    The learned tokens are written to out/<token>/ in every format (see concepts.formats)."""
    from dataclasses import asdict

    from conceptlab.models.loading import load_pipeline
    from conceptlab.training.loop import Trainer

    check_concepts(cfg.concepts)
    check_resolution(cfg.resolution)
    check_bucket_config(cfg.buckets, cfg.resolution)
    cfg.train.check()
    pipe = pipe if pipe is not None else load_pipeline(cfg.model, device=device, dtype=dtype)
    method = TextualInversion(pipe, cfg)
    record = run_record(asdict(cfg))
    result = Trainer(method, cfg.train, out, config_record=record, hooks=hooks).train(resume=resume,
                                                                                        **train_kwargs)
    return pipe, result
