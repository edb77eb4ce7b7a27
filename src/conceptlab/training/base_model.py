"""Trains the shipped base model from scratch on the sticker world: data, VAE, then UNet + text encoder.

Stages run in order and each one resumes from its last checkpoint: `render` (a fixed image set), `vae`
(an autoencoder, 64x64x3 -> 16x16x8), `latents` (the image set encoded once), `decoder` (optionally, the
decoder fine-tuned on those latents with the encoder frozen), `unet` (UNet and CLIP text
encoder trained jointly on cached latents, with EMA, caption dropout and min-SNR weighting), `export` (a
StableDiffusionPipeline folder with the EMA weights, a loss curve and a model card).

The three training stages are TrainingMethods of the shared loop (training/loop.py): each trains in
work/<stage>/ (checkpoints, loss curve) and leaves its result in work/<stage>.ckpt.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from conceptlab.errors import InputError
from conceptlab.io import atomic_save_torch, load_torch_checkpoint
from conceptlab.models.base import HeldOut
from conceptlab.models.tiny import SHAPES, build_text_encoder, build_unet, build_vae, sticker_tokenizer
from conceptlab.training.data import CachedLatents
from conceptlab.training.diffusion import denoising_loss
from conceptlab.training.loop import EMA, TrainConfig, Trainer, TrainingStopped, every
from conceptlab.world import StickerSpec, face_box, render, sample_spec
from conceptlab.world.attributes import caption


@dataclass
class BaseModelConfig:
    """Settings of `conceptlab train base`; saved beside the model it produces."""

    shape: str = "base"
    images: int = 30000  # the fixed training set, rendered once
    seed: int = 0
    held_out: HeldOut = field(default_factory=HeldOut)
    # VAE: plain reconstruction + image-gradient loss (keeps faces' strokes sharp) + a tiny KL
    vae_steps: int = 1200
    # a vae.ckpt, or a pipeline folder (e.g. the shipped model), whose VAE starts this one where shapes overlap;
    # with vae_steps=0 the folder's VAE is used as it is
    vae_init: str | None = None
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6  # on the latent means only: keeps their scale in check
    vae_edge_weight: float = 0.5
    # Fine-tuning a vae_init (vae_steps > 0) for images its encoder loses detail on: images of rare-face
    # objects that keep their face are drawn vae_rare_face_boost times as often, faces weigh
    # (1 + vae_face_weight) in the pixel loss, and every other image's latent mean is held to the initial
    # encoder's (vae_anchor_weight x MSE / variance of the old means), so a UNet trained on the old
    # latents needs only a short catch-up on the re-encoded ones.
    vae_rare_face_boost: float = 1.0
    vae_face_weight: float = 0.0
    vae_anchor_weight: float = 0.0
    # VAE decoder fine-tune on the cached latents (encoder frozen, so the UNet's latents do not move): sharper
    # images, faces weighted (1 + decoder_face_weight) in the pixel loss
    decoder_steps: int = 0
    decoder_batch: int = 32
    decoder_lr: float = 3e-4
    decoder_face_weight: float = 2.0
    # UNet + text encoder
    unet_steps: int = 3500
    unet_batch: int = 32
    unet_lr: float = 4e-4
    unet_warmup: int = 300
    unet_init: str | None = None  # a unet.ckpt or a pipeline folder whose UNet and text encoder start this run;
    # with unet_steps=0 they are used as they are
    # SD's beta_end=0.012 leaves sqrt(alpha_bar_T)=0.068 of the image at t=T; on a 16x16 latent an object's
    # colour survives that noise, so the v0 model learned to take colour from the seed instead of the
    # prompt. 0.02 leaves 0.015 (terminal SNR 2.3e-4), and offset noise hides the per-channel mean too.
    noise_beta_end: float = 0.02
    offset_noise: float = 0.05
    caption_dropout: float = 0.1  # empty prompt, for classifier-free guidance (Ho & Salimans 2022)
    attribute_dropout: float = 0.15  # each optional attribute left out of a caption
    min_snr_gamma: float = 5.0  # Hang et al. 2023, arXiv 2303.09556
    # Faces are ~6x6 of the 16x16 latent pixels and carry the emotion; v1 drew them at chance. The error
    # on the face's latent pixels counts (1 + face_loss_weight) times (0 = plain MSE).
    face_loss_weight: float = 0.0
    # images of rare-face objects that kept their face are drawn this many times as often (1 = uniform)
    unet_rare_face_boost: float = 1.0
    ema_decay: float = 0.999
    bf16: bool = True
    checkpoint_every: int = 250

    @classmethod
    def from_dict(cls, d: dict) -> BaseModelConfig:
        from conceptlab.config import dataclass_from_dict

        return dataclass_from_dict(cls, d)


# ------------------------------------------------------------------ stage: render


def training_specs(cfg: BaseModelConfig) -> list[StickerSpec]:
    """The base model's training set: random stickers with the held-out parts removed."""
    exclude = {"style": set(cfg.held_out.styles)}
    specs, seed = [], cfg.seed * 10_000_000
    while len(specs) < cfg.images:
        spec = sample_spec(seed, exclude=exclude, individual_rate=0.0)
        seed += 1
        if not cfg.held_out.keeps_face(spec, random.Random(seed).random()):
            spec = replace(spec, emotion="none")
        if cfg.held_out.allows(spec):
            specs.append(spec)
    return specs


def _render_one(spec: StickerSpec, size: int = 64) -> np.ndarray:
    return np.asarray(render(spec, size).image, dtype=np.uint8)


# renders per set from which two worker processes pay off: each spends ~12 s importing torch and diffusers, and a
# 64 px render takes ~0.05 s
POOL_FROM = 1000


def stage_render(cfg: BaseModelConfig, work: Path) -> np.ndarray:
    path = work / "images.npy"
    if path.exists():
        return np.load(path)
    import functools
    import multiprocessing as mp

    specs = training_specs(cfg)
    one = functools.partial(_render_one, size=SHAPES[cfg.shape].image_size)
    if len(specs) < POOL_FROM:  # a spawned worker's imports cost more than rendering a small set here
        arrays = [one(s) for s in tqdm(specs, desc="render")]
    else:
        with mp.get_context("spawn").Pool(2) as pool:
            arrays = list(tqdm(pool.imap(one, specs, chunksize=64), total=len(specs), desc="render"))
    images = np.stack(arrays)  # (N, 64, 64, 3) uint8
    np.save(work / "images.tmp.npy", images)
    (work / "images.tmp.npy").rename(path)
    return images


def _to_tensor(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W) in [-1, 1]


# ------------------------------------------------------------------ the training stages on the shared loop


class _Stage:
    """What the VAE, decoder and UNet stages share as TrainingMethods: no previews, their own random streams
    (`streams`), after-step `hooks`, a log.jsonl row every `log_every` steps, and work/<name>.ckpt, the stage's
    result that later stages, exports and warm starts read."""

    name, log_every = "", 50
    hooks: tuple = ()
    streams: dict  # set by each stage

    def preview(self, prompts, seed, steps) -> list:
        return []

    def save_outputs(self, out: Path, step: int, loss: float | None) -> None:
        atomic_save_torch({**self.result(), "step": step}, out.parent / f"{self.name}.ckpt")

    def result(self) -> dict:
        raise NotImplementedError

    def log_row(self, trainer: Trainer) -> dict:
        raise NotImplementedError


def _stage_train_configs(cfg: BaseModelConfig) -> dict[str, tuple[TrainConfig, dict[str, str]]]:
    """Each training stage's loop settings, with the BaseModelConfig key behind each (for error messages)."""
    configs = {}
    for stage, extra in (("vae", {"weight_decay": 0.0}), ("decoder", {"weight_decay": 0.0}),
                         # warm-up, then a cosine that decays to a tenth of the peak rate
                         ("unet", {"weight_decay": 1e-2, "warmup_steps": cfg.unet_warmup, "min_lr_ratio": 0.1})):
        keys = {"steps": f"{stage}_steps", "batch_size": f"{stage}_batch", "lr": f"{stage}_lr",
                "warmup_steps": f"{stage}_warmup", "seed": "seed", "checkpoint_every": "checkpoint_every"}
        train = TrainConfig(steps=getattr(cfg, keys["steps"]), batch_size=getattr(cfg, keys["batch_size"]),
                            lr=getattr(cfg, keys["lr"]), lr_schedule="cosine", max_grad_norm=1.0, seed=cfg.seed,
                            checkpoint_every=cfg.checkpoint_every, fused_adamw=False, **extra)
        configs[stage] = (train, keys)
    return configs


def check_stage_settings(cfg: BaseModelConfig) -> None:
    """Raises InputError naming the config key (e.g. `--config unet_lr`) of a stage setting that cannot train."""
    for train, keys in _stage_train_configs(cfg).values():
        if train.steps == 0:  # a stage with no steps trains nothing: its other settings do not matter
            continue
        try:
            train.check()
        except InputError as e:
            key = keys.get(e.argument.removeprefix("--").replace("-", "_"), e.argument)
            raise InputError(f"--config {key}", e.value, e.problem, e.fix) from None


def _finished(ckpt: Path, steps: int) -> dict | None:
    """The stage's result if it is finished; refuses an unfinished one that left no loop checkpoints to resume."""
    if not ckpt.exists():
        return None
    state = load_torch_checkpoint(ckpt)
    if state["step"] >= steps:
        return state
    if not (ckpt.with_suffix("") / "checkpoints").is_dir():
        raise InputError("--resume", str(ckpt), f"is at step {state['step']} of {steps} and has no loop checkpoints "
                         f"in {ckpt.with_suffix('')} to continue from (an earlier conceptlab wrote it)",
                         "Finish it with the conceptlab that started it, or start a new run in another folder")
    return None


def _run_stage(method: _Stage, cfg: BaseModelConfig, work: Path, log, stop_at: int | None = None) -> str:
    """Trains `method` on the shared loop in work/<name>, continuing its checkpoints; writes work/<name>.ckpt however
    the run ends. Returns 'done' or 'paused' (at `stop_at`); after SIGINT/SIGTERM, raises TrainingStopped."""
    train, _ = _stage_train_configs(cfg)[method.name]
    folder = work / method.name
    hooks = [*method.hooks, every(method.log_every, lambda t: log(method.log_row(t)))]
    trainer = Trainer(method, train, folder, config_record={"stage": method.name, **asdict(cfg)}, hooks=hooks,
                      streams=method.streams, desc=method.name)
    result = trainer.train(resume=(folder / "checkpoints").is_dir(), stop_at=stop_at)
    if result.stopped != "done" and trainer.acc.is_main_process:  # the loop writes it for a finished run only;
        method.save_outputs(folder, result.steps, None)  # export_from_checkpoints reads a stopped one's too
    if result.stopped in ("interrupted", "terminated"):
        raise TrainingStopped(result)
    return result.stopped


def _psnr(rec: torch.Tensor, x: torch.Tensor) -> float:
    return -10 * math.log10(F.mse_loss(rec / 2, x / 2).item() + 1e-12)


# ------------------------------------------------------------------ stage: vae


def _edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(x), dx(y)) + F.l1_loss(dy(x), dy(y))


def _pixel_loss(rec: torch.Tensor, x: torch.Tensor, w: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """L1 + L2 per pixel, weighted by w (B, 1, H, W) and normalised by its mean, + the image-gradient loss."""
    err = (rec - x).abs() + (rec - x).pow(2)
    return (err * w).mean() / w.mean() + edge_weight * _edge_loss(rec, x)


class _VaeTraining(_Stage):
    """The VAE on the rendered images: pixel + image-gradient loss on the decoded posterior mean, a tiny KL on the
    means, and, fine-tuning a vae_init, face weights, rare-face boost and an anchor to the initial latents."""

    name = "vae"

    def __init__(self, cfg: BaseModelConfig, images: np.ndarray, vae):
        self.cfg, self.images, self.vae = cfg, images, vae
        self.rng = np.random.default_rng(cfg.seed)
        self.streams = {"batches": self.rng}
        self.draw, self.weights, self.anchor, self.moved = _vae_targets(cfg, SHAPES[cfg.shape], len(images))
        self.last = None  # (reconstruction, images) of the last step, for the log's PSNR

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.vae.parameters())

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        idx = self.draw(self.rng, batch_size)
        x = _to_tensor(self.images[idx])  # (B, 3, H, W)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            post = self.vae.encode(x).latent_dist
            # decode the posterior mean: the encoder is made deterministic after training (see below)
            rec = self.vae.decode(post.mode()).sample
        rec = rec.float()
        loss = _pixel_loss(rec, x, self.weights[torch.from_numpy(idx)], cfg.vae_edge_weight)
        loss = loss + cfg.vae_kl_weight * post.mean.pow(2).mean()
        if self.anchor is not None:
            loss = loss + cfg.vae_anchor_weight * _anchor_loss(self.anchor, x, post.mean.float(), ~self.moved[idx])
        self.last = (rec.detach(), x)
        return loss

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.vae.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.vae.load_state_dict(state)

    def result(self) -> dict:
        return {"model": self.vae.state_dict()}

    def log_row(self, trainer: Trainer) -> dict:
        return {"stage": self.name, "step": trainer.step, "loss": trainer.losses[-1], "psnr": _psnr(*self.last)}


def stage_vae(cfg: BaseModelConfig, work: Path, images: np.ndarray, log, stop_at: int | None = None) -> torch.nn.Module:
    """The VAE with a deterministic encoder: trained on the shared loop (or paused at `stop_at`), or loaded from a
    finished work/vae.ckpt."""
    torch.manual_seed(cfg.seed)
    vae = build_vae(SHAPES[cfg.shape])
    ckpt = work / "vae.ckpt"
    if (finished := _finished(ckpt, cfg.vae_steps)) is not None:
        vae.load_state_dict(finished["model"])
    else:
        if cfg.vae_init:
            warm_start(vae, init_weights(cfg.vae_init, "vae"))
        if cfg.vae_steps:
            _run_stage(_VaeTraining(cfg, images, vae), cfg, work, log, stop_at)
        elif cfg.vae_init:  # used as it is: keep a checkpoint so later stages and exports find it
            atomic_save_torch({"model": vae.state_dict(), "step": 0}, ckpt)
    make_encoder_deterministic(vae)
    return vae.eval()


def _rare_faced(cfg: BaseModelConfig, specs: list[StickerSpec]) -> np.ndarray:
    """(N,) mask of the training images of rare-face objects that kept their face."""
    return np.array([s.object in cfg.held_out.rare_faces and s.emotion != "none" for s in specs], dtype=bool)


def _batch_sampler(boosted: np.ndarray, boost: float, n: int):
    """draw(rng, k) -> k indices into the N training images, the `boosted` ones `boost` times as likely."""
    if boost == 1 or not boosted.any():
        def draw(rng, k):
            return rng.integers(0, n, k)
    else:
        p = np.where(boosted, boost, 1.0)
        p = p / p.sum()

        def draw(rng, k):
            return rng.choice(n, size=k, p=p)
    return draw


def _vae_targets(cfg: BaseModelConfig, shape, n: int):
    """What the VAE stage trains towards: a batch sampler, (N, 1, H, W) pixel weights, the frozen initial
    VAE whose latents are kept (None without an anchor) and an (N,) mask of the images allowed to move."""
    specs = training_specs(cfg) if (cfg.vae_face_weight or cfg.vae_anchor_weight or cfg.vae_rare_face_boost != 1) else []
    moved = _rare_faced(cfg, specs)
    draw = _batch_sampler(moved, cfg.vae_rare_face_boost, n)
    if cfg.vae_face_weight:
        weights = face_weights(specs, shape.image_size, shape.image_size, cfg.vae_face_weight)
    else:
        weights = torch.ones(n, 1, 1, 1)
    anchor = None
    if cfg.vae_anchor_weight:
        if not cfg.vae_init:
            raise ValueError("vae_anchor_weight needs vae_init: the latents to keep come from that VAE")
        anchor = build_vae(shape)
        warm_start(anchor, init_weights(cfg.vae_init, "vae"))
        anchor.eval().requires_grad_(False)
    return draw, weights, anchor, moved if len(moved) else np.zeros(n, dtype=bool)


def _anchor_loss(anchor, x: torch.Tensor, mean: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """MSE between the new and the frozen initial encoder's latent means over the kept images, in units of
    the old means' variance."""
    if not keep.any():
        return mean.new_zeros(())
    keep = torch.from_numpy(keep)
    with torch.no_grad():
        old = anchor.encode(x[keep]).latent_dist.mean  # (b, C, h, w)
    return F.mse_loss(mean[keep], old) / old.var().clamp_min(1e-8)


def init_weights(source: str | Path, part: str) -> dict[str, torch.Tensor]:
    """The state dict of `part` ("vae", "unet" or "te") from a diffusers pipeline folder or a checkpoint of
    this trainer (vae.ckpt, unet.ckpt)."""
    source = Path(source)
    if (source / "model_index.json").exists():
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        cls, sub = {"vae": (AutoencoderKL, "vae"), "unet": (UNet2DConditionModel, "unet"),
                    "te": (CLIPTextModel, "text_encoder")}[part]
        return cls.from_pretrained(source / sub).state_dict()
    state = load_torch_checkpoint(source)
    return state["model"] if part == "vae" else state[part]


@torch.no_grad()
def warm_start(model: torch.nn.Module, state: dict) -> None:
    """Copies `state` into `model`, tensor by tensor, over the overlapping slice where shapes differ."""
    own = model.state_dict()
    for name, value in state.items():
        if name in own:
            target = own[name]
            if target.ndim != value.ndim:
                continue
            region = tuple(slice(0, min(a, b)) for a, b in zip(target.shape, value.shape))
            target[region] = value[region]


@torch.no_grad()
def make_encoder_deterministic(vae, logvar: float = -20.0) -> None:
    """Sets the posterior's log-variance to a constant, so latent_dist.sample() is the mean to ~1e-4.

    The VAE is trained on its posterior mean (sampling with a barely-regularised variance slows training
    a lot); fixing the variance keeps every consumer that samples (diffusers' scripts do) exact.
    """
    c = vae.config.latent_channels
    vae.quant_conv.weight[c:] = 0
    vae.quant_conv.bias[c:] = logvar


# ------------------------------------------------------------------ stage: latents


@torch.no_grad()
def stage_latents(cfg: BaseModelConfig, work: Path, images: np.ndarray, vae) -> tuple[torch.Tensor, float]:
    path = work / "latents.pt"
    if path.exists():
        state = load_torch_checkpoint(path)
        return state["moments"], state["scaling_factor"]
    moments = []
    for i in tqdm(range(0, len(images), 256), desc="encode"):
        moments.append(vae.encode(_to_tensor(images[i:i + 256])).latent_dist.parameters)  # (B, 2*C, h, w)
    moments = torch.cat(moments)
    mean = moments[:, : moments.shape[1] // 2]
    scaling_factor = float(1.0 / mean.std())
    atomic_save_torch({"moments": moments, "scaling_factor": scaling_factor}, path)
    return moments, scaling_factor


# ------------------------------------------------------------------ stage: decoder


class _DecoderTraining(_VaeTraining):
    """The decoder (post_quant_conv + decoder) mapping the cached latent means back to the images, faces weighted
    (1 + decoder_face_weight) in the pixel loss."""

    name = "decoder"

    def __init__(self, cfg: BaseModelConfig, images: np.ndarray, moments: torch.Tensor, vae):
        shape = SHAPES[cfg.shape]
        self.cfg, self.images, self.vae = cfg, images, vae
        self.weights = face_weights(training_specs(cfg), shape.image_size, shape.image_size, cfg.decoder_face_weight)
        self.mean = moments[:, : moments.shape[1] // 2]  # (N, C, h, w) unscaled latent means
        self.rng = np.random.default_rng(cfg.seed + 17)
        self.streams = {"batches": self.rng}
        self.last = None

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.vae.post_quant_conv.parameters()) + list(self.vae.decoder.parameters())

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        idx = self.rng.integers(0, len(self.images), batch_size)
        x, w = _to_tensor(self.images[idx]), self.weights[torch.from_numpy(idx)]  # (B, 3, H, W), (B, 1, H, W)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16):
            rec = self.vae.decode(self.mean[torch.from_numpy(idx)]).sample
        rec = rec.float()
        self.last = (rec.detach(), x)
        return _pixel_loss(rec, x, w, self.cfg.vae_edge_weight)


def stage_decoder(cfg: BaseModelConfig, work: Path, images: np.ndarray, moments: torch.Tensor, vae, log,
                  stop_at: int | None = None):
    """Fine-tunes the decoder (post_quant_conv + decoder) to map the cached latent means back to the images.

    The encoder is untouched, so the latents the UNet learns from stay exactly the same; only how they are
    drawn improves. Resumes from the stage's checkpoints; returns the VAE with the fine-tuned decoder.
    """
    if (finished := _finished(work / "decoder.ckpt", cfg.decoder_steps)) is not None:
        vae.load_state_dict(finished["model"])
        return vae.eval()
    vae.train()
    _run_stage(_DecoderTraining(cfg, images, moments, vae), cfg, work, log, stop_at)
    return vae.eval()


# ------------------------------------------------------------------ stage: unet


def face_weights(specs: list[StickerSpec], image_size: int, latent_size: int, extra: float) -> torch.Tensor:
    """(N, 1, h, w) loss weights: 1 everywhere, 1 + extra on the latent pixels under each sticker's face."""
    weights = torch.ones(len(specs), 1, latent_size, latent_size)
    f = image_size / latent_size
    for i, spec in enumerate(specs):
        box = face_box(spec, image_size)
        if box is not None:
            x0, y0, x1, y1 = box
            weights[i, 0, int(y0 // f):math.ceil(y1 / f), int(x0 // f):math.ceil(x1 / f)] += extra
    return weights


class _Captioner:
    def __init__(self, specs, tokenizer, cfg: BaseModelConfig):
        self.specs, self.tok, self.cfg = specs, tokenizer, cfg

    def __call__(self, idx: np.ndarray, rng: random.Random) -> torch.Tensor:
        texts = []
        for i in idx:
            if rng.random() < self.cfg.caption_dropout:
                texts.append("")
            else:
                texts.append(caption(self.specs[i], rng=rng, drop=self.cfg.attribute_dropout))
        return self.tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


class _UNetTraining(_Stage):
    """UNet and text encoder jointly on the cached latents: the denoising loss with offset noise, min-SNR weighting,
    caption and attribute dropout, optional face weights and rare-face boost; an EMA of both."""

    name, log_every = "unet", 25

    def __init__(self, cfg: BaseModelConfig, unet, te, tok, moments: torch.Tensor, scaling: float):
        from diffusers import DDPMScheduler

        from conceptlab.models.tiny import sd_scheduler_config

        self.cfg, self.unet, self.te = cfg, unet, te
        self.params = list(unet.parameters()) + list(te.parameters())
        sched_cfg = sd_scheduler_config(beta_end=cfg.noise_beta_end)
        self.noise = DDPMScheduler(**{k: v for k, v in sched_cfg.items() if k != "set_alpha_to_one"})
        mean, logvar = moments.chunk(2, dim=1)  # (N, C, 16, 16) each
        self.cached = CachedLatents(mean, logvar, scaling)
        specs = training_specs(cfg)
        self.captioner = _Captioner(specs, tok, cfg)
        self.weights = (face_weights(specs, SHAPES[cfg.shape].image_size, mean.shape[-1], cfg.face_loss_weight)
                        if cfg.face_loss_weight else None)
        self.draw = _batch_sampler(_rare_faced(cfg, specs), cfg.unet_rare_face_boost, len(moments))
        self.rng_np, self.rng_py = np.random.default_rng(cfg.seed * 7), random.Random(cfg.seed * 11)
        self.gen = torch.Generator().manual_seed(cfg.seed * 13)
        self.streams = {"batches": self.rng_np, "captions": self.rng_py, "noise": self.gen}
        self.ema = EMA(self.params, cfg.ema_decay)
        self.hooks = [self.ema]

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.params

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        idx = torch.from_numpy(self.draw(self.rng_np, batch_size))
        latents = self.cached.sample(idx, self.gen)  # (B, C, 16, 16)
        ids = self.captioner(idx.numpy(), self.rng_py)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            return denoising_loss(self.unet, self.noise, latents, self.te(ids)[0], self.gen,
                                  offset_noise=cfg.offset_noise, min_snr_gamma=cfg.min_snr_gamma,
                                  pixel_weight=None if self.weights is None else self.weights[idx])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {**{f"unet.{k}": v for k, v in self.unet.state_dict().items()},
                **{f"te.{k}": v for k, v in self.te.state_dict().items()}}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for prefix, module in (("unet.", self.unet), ("te.", self.te)):
            module.load_state_dict({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})

    def result(self) -> dict:
        return {"unet": self.unet.state_dict(), "te": self.te.state_dict(), "ema": self.ema.shadow}

    def log_row(self, trainer: Trainer) -> dict:
        return {"stage": self.name, "step": trainer.step, "loss": trainer.losses[-1], "lr": trainer.last_lr}


def stage_unet(cfg: BaseModelConfig, work: Path, moments: torch.Tensor, scaling: float, log,
               stop_at: int | None = None) -> str:
    """Trains to cfg.unet_steps (or pauses at `stop_at`, checkpointed); resumes exactly. Returns 'done' or 'paused'."""
    if _finished(work / "unet.ckpt", cfg.unet_steps) is not None:
        return "done"
    shape, tok = SHAPES[cfg.shape], sticker_tokenizer()
    torch.manual_seed(cfg.seed)
    te, unet = build_text_encoder(shape, len(tok)), build_unet(shape, shape.text_hidden)
    if cfg.unet_init:
        warm_start(unet, init_weights(cfg.unet_init, "unet")), warm_start(te, init_weights(cfg.unet_init, "te"))
    method = _UNetTraining(cfg, unet, te, tok, moments, scaling)
    if cfg.unet_steps:
        return _run_stage(method, cfg, work, log, stop_at)
    if cfg.unet_init:  # used as it is (e.g. a decoder-only update): keep a checkpoint for the export
        method.save_outputs(work / method.name, 0, None)
    return "done"


# ------------------------------------------------------------------ stage: export


def export_pipeline(cfg: BaseModelConfig, work: Path, out: Path, vae, scaling: float):
    """Writes a StableDiffusionPipeline folder with the EMA weights of the latest UNet checkpoint."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from conceptlab.models.tiny import sd_scheduler_config

    shape, tok = SHAPES[cfg.shape], sticker_tokenizer()
    te, unet = build_text_encoder(shape, len(tok)), build_unet(shape, shape.text_hidden)
    st = load_torch_checkpoint(work / "unet.ckpt")
    params = list(unet.parameters()) + list(te.parameters())
    with torch.no_grad():
        for p, e in zip(params, st["ema"]):
            p.copy_(e)
    vae.register_to_config(scaling_factor=scaling)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
        scheduler=DDIMScheduler(**sd_scheduler_config(beta_end=cfg.noise_beta_end)), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out.with_name(out.name + ".tmp")
    # float32: a plain from_pretrained keeps the saved dtype, and float16 does not run on a CPU
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "conceptlab_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return st["step"]


def export_from_checkpoints(cfg: BaseModelConfig, work: Path, out: Path) -> int:
    """Exports the latest checkpoints of a run (e.g. one stopped early); returns the UNet step exported."""
    vae = build_vae(SHAPES[cfg.shape])
    vae.load_state_dict(load_torch_checkpoint(work / "vae.ckpt")["model"])
    make_encoder_deterministic(vae)
    if (work / "decoder.ckpt").exists():
        vae.load_state_dict(load_torch_checkpoint(work / "decoder.ckpt")["model"])
    scaling = load_torch_checkpoint(work / "latents.pt")["scaling_factor"]
    return export_pipeline(cfg, work, out, vae.eval(), scaling)


def check_inits(cfg: BaseModelConfig) -> None:
    """A warm start names an earlier run's folder or checkpoint: it must exist before hours of work begin."""
    for key in ("vae_init", "unet_init"):
        value = getattr(cfg, key)
        if value and not Path(value).exists():
            raise InputError(f"--config {key}", value, "does not exist (this config warm-starts from an earlier run)",
                             "Train that run first (configs/history/ holds each earlier config), or point it at a "
                             "pipeline folder such as src/conceptlab/models/sticker_base")


def check_work_folder(cfg: BaseModelConfig, work: Path, resume: bool) -> None:
    """A work folder holding a run is continued only with resume=True, and only with the same config."""
    record = work / "config.json"
    if not record.is_file():
        return
    if not resume:
        raise InputError("--work", str(work), "holds a base-model run already",
                         "Pass --resume to continue it, or choose another --out/--work")
    old = json.loads(record.read_text())
    new = json.loads(json.dumps(asdict(cfg)))  # as config.json holds it: held_out's tuples read back as lists
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        pairs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise InputError("--resume", str(work), f"was started with other settings ({pairs})",
                         "Resume with the config it was started with, or start a new run in another folder")


def train_base_model(cfg: BaseModelConfig, work: Path, out: Path | None = None, stages=None,
                     stop_at: int | None = None) -> None:
    """Runs the stages in order; each resumes where it stopped. Logs go to work/log.jsonl.

    `stop_at` pauses the UNet stage at that step (checkpointed); a later call continues exactly. Ctrl-C or SIGTERM
    saves the running stage's step and raises TrainingStopped (a KeyboardInterrupt); a later call continues it.
    """
    check_stage_settings(cfg)
    if cfg.bf16:
        from conceptlab.hardware import warn_if_slow_bf16

        warn_if_slow_bf16("bf16=true")
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    with (work / "log.jsonl").open("a") as log_file:

        def log(row):
            log_file.write(json.dumps({**row, "time": time.time()}) + "\n")
            log_file.flush()

        stages = stages or ("render", "vae", "latents", "decoder", "unet", "export")
        images = stage_render(cfg, work)
        needs_vae = {"vae", "latents", "decoder", "export"} & set(stages)
        vae = stage_vae(cfg, work, images, log) if needs_vae else None
        moments, scaling = stage_latents(cfg, work, images, vae)
        if cfg.decoder_steps and ("decoder" in stages or "export" in stages):
            vae = stage_decoder(cfg, work, images, moments, vae, log)
        if "unet" in stages and stage_unet(cfg, work, moments, scaling, log, stop_at) == "paused":
            return
        if "export" in stages and out is not None:
            export_pipeline(cfg, work, out, vae, scaling)
