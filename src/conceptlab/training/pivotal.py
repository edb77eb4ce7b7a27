"""Pivotal tuning: new tokens (textual inversion) trained together with a UNet LoRA (DreamBooth), as diffusers'
advanced DreamBooth-LoRA scripts do with --train_text_encoder_ti and cloneofsimo's lora_pti does in two phases.

What it trains: the subjects' new tokens in every text encoder of the family (TextualInversion's TokenSplices;
SDXL: both encoders) and LoRA adapters on the UNet's attention (DreamBooth's); with `train_text_encoder`, LoRA
adapters on the text encoders' attention too (OneTrainer trains an embedding beside a text-encoder LoRA this way;
diffusers' advanced script allows only one of the two); nothing else. With `lora=False` (`--full-fine-tune`) every
UNet weight trains beside the tokens instead of a LoRA, and every text-encoder weight with `train_text_encoder`
(OneTrainer's fine-tune with additional embeddings); the result is a whole pipeline whose tokenizer holds the tokens.
Its loss: DreamBooth's (instance images + each subject's prior weight x its class images), with prompts that
name the new token ("a <tuki> monster"), so the gradient reaches the token vectors and the LoRA alike.
Schedule: the tokens alone for `token_steps` (lora_pti's inversion phase), then both; the tokens stop after
`token_frac` of the steps (diffusers' --train_text_encoder_ti_frac, 0.5 there; 1.0 here: to the end).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from conceptlab.errors import InputError
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, check_subjects
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig

BUNDLE_NAME = "bundle.safetensors"


@dataclass
class PivotalConfig(DreamBoothConfig):
    """`conceptlab train pivotal` settings: DreamBooth-LoRA's, each subject's identifier a new token ('<tuki>')
    that starts from its class word's embedding (diffusers' --initializer_concept)."""

    lora: bool = True  # False: every UNet weight (and text-encoder weight with train_text_encoder) beside the tokens
    # train_text_encoder (DreamBooth's field): a LoRA on the text encoders as well, at the LoRA's learning rate
    # unless text_encoder_lr sets its own
    vectors: int = 1  # embedding vectors per token (diffusers' --num_new_tokens_per_abstraction; 2 there)
    token_lr: float = 5e-3  # the tokens' learning rate (textual inversion's); the LoRA's is train.lr
    token_steps: int = 0  # steps that train the tokens alone before the LoRA joins (0: together from the start)
    token_frac: float = 1.0  # share of the steps after which the tokens stop (diffusers' ti_frac)
    token_init: str = "class"  # each token's start: "class" (its class word), "random" (diffusers' default), a word


def check_pivotal(cfg: PivotalConfig) -> None:
    """Raises InputError for a setting pivotal tuning cannot train, before a model loads."""
    from conceptlab.validation import FRACTION, LR, TRAIN_STEPS, VECTORS, Bound

    check_subjects(cfg)
    VECTORS.check("--vectors", cfg.vectors)
    LR.check("--token-lr", cfg.token_lr)
    FRACTION.check("--token-frac", cfg.token_frac)
    Bound(0, TRAIN_STEPS.high, integer=True).check("--token-steps", cfg.token_steps)
    if cfg.token_steps >= cfg.train.steps:
        raise InputError("--token-steps", cfg.token_steps, f"leaves none of the {cfg.train.steps} steps to the LoRA",
                         "Use fewer --token-steps than --steps, or `train ti` for tokens alone")
    if cfg.token_steps and token_until(cfg) <= cfg.token_steps:
        raise InputError("--token-frac", cfg.token_frac, f"stops the tokens at step {token_until(cfg)}, before the "
                         f"LoRA joins at step {cfg.token_steps}", "Raise --token-frac, or lower --token-steps")
    check_token_init(cfg)
    for s in cfg.subjects:
        if not (s.identifier.startswith("<") and s.identifier.endswith(">")):
            raise InputError("--subject", s.identifier, "is not written as a new token",
                             f"Write it in angle brackets, e.g. --subject '<{s.identifier}>=DIR,class={s.class_word}'")


def token_until(cfg: PivotalConfig) -> int:
    """The step after which the tokens stop training (diffusers: int(ti_frac * epochs))."""
    return cfg.train.steps if cfg.token_frac >= 1 else int(cfg.token_frac * cfg.train.steps)


def token_config(cfg: PivotalConfig) -> TextualInversionConfig:
    """Textual inversion's settings for the subjects' tokens, each starting from --token-init."""
    concepts = [ConceptConfig(s.identifier, s.folder, init=token_start(cfg, s.class_word), vectors=cfg.vectors)
                for s in cfg.subjects]
    return TextualInversionConfig(model=cfg.model, concepts=concepts, resolution=cfg.resolution,
                                  center_crop=cfg.center_crop, flip=cfg.flip, train=cfg.train)


def check_token_init(cfg: PivotalConfig, tokenizer=None) -> None:
    """--token-init is class, random or a word (with `tokenizer`: one it reads), never a file path."""
    from conceptlab.training.textual_inversion import _looks_like_path
    from conceptlab.validation import text

    text("--token-init", cfg.token_init, example="random")
    if cfg.token_init.startswith("-"):
        raise InputError("--token-init", cfg.token_init, "starts with '-', which reads as a flag",
                         "Use class, random or a word such as creature")
    if cfg.token_init not in ("class", "random") and _looks_like_path(cfg.token_init):
        raise InputError("--token-init", cfg.token_init, "looks like a file; it takes a word",
                         "Use class, random or a word such as creature")
    for s in cfg.subjects if tokenizer is not None else ():
        word = token_start(cfg, s.class_word)
        if word is not None and not tokenizer(word, add_special_tokens=False).input_ids:
            raise InputError("--token-init", word, "tokenizes to nothing", "Use class, random or a word such as creature")


def token_start(cfg: PivotalConfig, class_word: str) -> str | None:
    """The word a token's vectors start from; None draws them at random, scaled like the vocabulary's."""
    return {"class": class_word, "random": None}.get(cfg.token_init, cfg.token_init)


def dreambooth_config(cfg: PivotalConfig) -> DreamBoothConfig:
    """DreamBooth-LoRA's settings: every field the two configs share."""
    return DreamBoothConfig(**{f.name: getattr(cfg, f.name) for f in fields(DreamBoothConfig)})


class _LoraOnTrainedTokens(DreamBooth):
    """DreamBooth (a LoRA, or every weight with lora=False) whose prompts hold tokens that train: their conditioning
    changes every step, so it is encoded each time, with gradients (DreamBooth caches it while the text encoders are
    frozen)."""

    def encode(self, texts: list[str], sizes=None):
        # a token of K vectors is K words ('<tuki> <tuki>_1'), as the pipeline itself expands it; `sizes`: the
        # images' SDXL size conditioning when buckets are on
        return self._encode([self.pipe.maybe_convert_prompt(t, self.pipe.tokenizer) for t in texts], sizes)

    def metadata(self, steps: int | None, loss: float | None) -> dict:
        # what a full fine-tune writes beside its pipeline (conceptlab_dreambooth.json) and the bundle's header start
        return {**super().metadata(steps, loss), "method": "pivotal"}


class PhaseClock:
    """After-step hook that tells the method which step comes next; checkpointed, so a resumed run continues
    in the same phase."""

    def __init__(self, method: PivotalTuning):
        self.method = method

    def __call__(self, trainer) -> None:
        self.method.step = trainer.step

    def state_dict(self) -> dict:
        return {"step": self.method.step}

    def load_state_dict(self, state: dict) -> None:
        self.method.step = int(state["step"])


class PivotalTuning:
    """The pivotal-tuning method for Trainer: a TextualInversion (the tokens) and a DreamBooth LoRA (the UNet)
    on one pipeline. Pass `hooks=method.hooks()` to the Trainer (train_pivotal does)."""

    def __init__(self, pipe, cfg: PivotalConfig, class_latents=None, class_texts=None):
        check_pivotal(cfg)
        self.pipe, self.cfg = pipe, cfg
        # the tokens first: they must be in the tokenizers before DreamBooth reads its prompts
        self.tokens = TextualInversion(pipe, token_config(cfg))
        part = dreambooth_config(cfg)
        part.ema_decay = 0.0  # the one average below covers the DreamBooth part: no second copy of its weights
        self.lora = _LoraOnTrainedTokens(pipe, part, class_latents, class_texts)
        part.ema_decay = cfg.ema_decay  # what its saves record, as they hold that average
        self.family = self.tokens.family
        self.token_params = self.tokens.parameters()  # (K, D_i) per text encoder
        # the UNet's LoRA A and B matrices (every UNet weight with lora=False), by name: DreamBooth names only what
        # requires grad, and a phase freezes them for a while. Their checkpoint keys say 'lora.' either way.
        self.lora_named = self.lora._named_trainable()
        self.lora_params = list(self.lora_named.values())
        self.step = 0  # the steps done; PhaseClock keeps it current
        self.clock = PhaseClock(self)
        # --ema-decay: one moving average over the tokens and the LoRA together; the DreamBooth part saves through
        # it (its averaged() and use_average() read .ema)
        self.ema = None
        if cfg.ema_decay:
            from conceptlab.training.loop import EMA

            self.ema = self.lora.ema = EMA(self.parameters(), cfg.ema_decay)

    def hooks(self) -> list:
        """The after-step hooks the Trainer needs: the moving average first (later hooks see this step's), then
        the phase clock."""
        return [self.ema, self.clock] if self.ema is not None else [self.clock]

    # ---------------------------------------------------------------- what the loop calls
    def parameters(self) -> list[torch.nn.Parameter]:
        return self.token_params + self.lora_params

    def param_groups(self) -> list[tuple[list[torch.nn.Parameter], float]]:
        """The LoRA's groups as DreamBooth's (its text-encoder part at text_encoder_lr when set), then the tokens at
        token_lr; all scaled with the lr under --scale-lr."""
        return [*self.lora.rate_groups(self.lora_named), (self.token_params, self.cfg.token_lr / self.cfg.train.lr)]

    def phase(self, step: int) -> tuple[bool, bool]:
        """(tokens train, LoRA trains) at the step after `step` steps are done."""
        return step < token_until(self.cfg), step >= self.cfg.token_steps

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        # a frozen part gets no gradient (grad None), and AdamW leaves a tensor without one untouched: no update,
        # no weight decay, no moment change
        tokens_on, lora_on = self.phase(self.step)
        for p in self.token_params:
            p.requires_grad_(tokens_on)
        for p in self.lora_params:
            p.requires_grad_(lora_on)
        return self.lora.loss(batch_size, generator)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {**{f"tokens.{k}": v for k, v in self.tokens.trainable_state().items()},
                **{f"lora.{k}": p.detach().clone() for k, p in self.lora_named.items()}}

    @torch.no_grad()
    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.tokens.load_trainable_state({k[7:]: v for k, v in state.items() if k.startswith("tokens.")})
        for k, p in self.lora_named.items():
            p.copy_(state[f"lora.{k}"])

    def save_outputs(self, out: Path, step: int, loss: float | None) -> None:
        """OUT/<token>/ (the embedding in every format), OUT/lora/ (diffusers and kohya files) and OUT/bundle.safetensors
        (both in one file, with this config inside); with lora=False OUT/pipeline/ instead of the LoRA and the bundle:
        the whole fine-tuned pipeline, the tokens written into its text encoders and tokenizers."""
        from conceptlab.concepts.bundle import save_bundle

        with self.lora.averaged():  # with --ema-decay, tokens and LoRA are saved as their moving average
            if not self.cfg.lora:
                return self._save_full(Path(out), step, loss)
            self.tokens.save_outputs(out, step, loss)  # also writes the vectors into the embedding matrices
            self.lora._save_outputs(out, step, loss)
            meta = {**self.lora.metadata(step, loss), "family": self.family.name, "method": "pivotal",
                    "config": asdict(self.cfg), "ema_decay": self.cfg.ema_decay or None}
            save_bundle(Path(out) / BUNDLE_NAME, self.tokens.embeddings(step, loss), Path(out) / "lora", meta)

    def _save_full(self, out: Path, step: int, loss: float | None) -> None:
        """A full fine-tune's outputs: the pipeline with the tokens written into its embedding rows, and the
        embedding files, each marked with that pipeline (concepts.tokens.load_concepts refuses them elsewhere); a
        LoRA run's bundle left in OUT by an earlier run goes (DreamBooth drops its lora/)."""
        self.tokens.save_outputs(out, step, loss, meta={"full_fine_tune_pipeline": str(out / "pipeline")})
        self.lora._save_outputs(out, step, loss)
        (out / BUNDLE_NAME).unlink(missing_ok=True)

    @torch.no_grad()
    def preview(self, prompts: list[str], seed: int, steps: int) -> list:
        return self.lora.preview(prompts, seed, steps)


def train_pivotal(cfg: PivotalConfig, out, resume: bool = False, device=None, dtype=None, pipe=None, hooks=(),
                  **train_kwargs):
    """Checks every setting, loads the model (unless `pipe` is given), prepares class images when prior
    preservation is on, trains; returns (pipe, TrainResult). `hooks`: more after-step hooks (e.g. selection)."""
    from conceptlab.models.loading import load_pipeline
    from conceptlab.training.dreambooth import prepare_priors, refuse_ema_beside_selection
    from conceptlab.training.loop import Trainer

    check_pivotal(cfg)
    cfg.train.check()
    pipe = pipe if pipe is not None else load_pipeline(cfg.model, device=device, dtype=dtype)
    check_token_init(cfg, pipe.tokenizer)  # before class images take minutes
    classes, texts = prepare_priors(cfg, pipe, out)  # before the tokens exist: class prompts never hold them
    method = PivotalTuning(pipe, cfg, classes, texts)
    refuse_ema_beside_selection(cfg.ema_decay, hooks)
    trainer = Trainer(method, cfg.train, out, config_record=asdict(cfg), hooks=[*method.hooks(), *hooks])
    result = trainer.train(resume=resume, **train_kwargs)
    if method.ema is not None:
        method.lora.use_average()  # the returned pipeline holds what was saved
    return pipe, result
