"""DreamBooth steps/s, full fine-tune and LoRA: conceptlab vs a loop built the way diffusers'
examples/dreambooth/train_dreambooth.py works (VAE and text encoder run at every step), and vs the floor
(UNet forward+backward and the optimizer step on cached latents and text embeddings). Peak memory of each.
The reference steps torch's default AdamW, as the example does; ours and the floor the training loop's
(make_optimizer: the fused kernel).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import PeakRSS, Result
from conceptlab.models.tiny import build_pipeline
from conceptlab.training.data import load_concept_images, prepare_image, to_pixels
from conceptlab.training.diffusion import denoising_loss
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig, instance_prompt
from conceptlab.training.loop import make_optimizer
from conceptlab.world.export import export_images

CASES = {"tiny": ("tiny", 32, 2, 10), "sd15-shaped @256px": ("sd15", 256, 1, 3)}


def _method(shape, size, folder, lora):
    pipe = build_pipeline(shape, image_size=size)
    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(folder), "monster")], lora=lora, rank=4, resolution=size)
    method = DreamBooth(pipe, cfg)
    ours = make_optimizer(list(method.parameters()), 1e-5, 1e-2)  # the training loop's optimizer
    reference = torch.optim.AdamW(method.parameters(), lr=1e-5, weight_decay=1e-2)  # the example script's
    reference.state = ours.state  # timing only: one set of moments serves both, no second copy in memory
    return method, ours, reference


def _ours(method, opt, batch, gen):
    method.loss(batch, gen).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


class ReferenceDreamBooth:
    """A loop built the way diffusers' examples/dreambooth/train_dreambooth.py works, with its multi-subject
    variant (research_projects/multi_subject_dreambooth): at every step each image goes through the VAE and each
    prompt through the text encoder; one fixed prompt per subject ("a tuki monster"); with class images, each
    instance is paired with one of its class ("a monster") and loss = instance + prior_weight x class (the
    script's --prior_loss_weight, default 1.0); gradients clipped to max_grad_norm (the script's 1.0; 0: not
    clipped, as the step-time benchmark, whose other loops do not clip either); torch's default AdamW.

    `method` (a DreamBooth) only sets which weights train and holds the pipeline; `pixels` per subject
    (N, 3, H, W); `class_pixels` per subject too (None: no prior preservation)."""

    def __init__(self, method: DreamBooth, pixels: list[torch.Tensor], opt: torch.optim.Optimizer,
                 class_pixels: list[torch.Tensor] | None = None, prior_weight: float = 1.0,
                 max_grad_norm: float = 1.0):
        self.m, self.pipe, self.opt = method, method.pipe, opt
        self.pixels, self.class_pixels, self.prior_weight = pixels, class_pixels, prior_weight
        self.max_grad_norm = max_grad_norm
        self.prompts = [instance_prompt(s) for s in method.cfg.subjects]
        self.class_prompts = [f"a {s.class_word}" for s in method.cfg.subjects]

    def _latents(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        vae = self.pipe.vae
        with torch.no_grad():
            return vae.encode(images).latent_dist.sample(generator=gen) * vae.config.scaling_factor

    def step(self, batch: int, gen: torch.Generator) -> float:
        pool = [(s, k) for s, px in enumerate(self.pixels) for k in range(len(px))]  # the concatenated datasets
        drawn = [pool[int(i)] for i in torch.randint(0, len(pool), (batch,), generator=gen)]
        images = torch.cat([self.pixels[s][k:k + 1] for s, k in drawn])
        texts = [self.prompts[s] for s, _ in drawn]
        if self.class_pixels is not None:
            picks = [int(torch.randint(0, len(self.class_pixels[s]), (1,), generator=gen)) for s, _ in drawn]
            images = torch.cat([images, *(self.class_pixels[s][k:k + 1] for (s, _), k in zip(drawn, picks))])
            texts += [self.class_prompts[s] for s, _ in drawn]
        latents = self._latents(images, gen)
        with contextlib.nullcontext() if self.m.cfg.train_text_encoder else torch.no_grad():
            cond = self.m._encode(texts)  # the text encoder at every step, as the script
        per_sample = denoising_loss(self.pipe.unet, self.m.scheduler, latents, cond.hidden, gen, reduction="none",
                                    added_cond_kwargs=cond.added)
        loss = per_sample[:batch].mean()
        if self.class_pixels is not None:
            loss = loss + self.prior_weight * per_sample[batch:].mean()
        loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.m.parameters(), self.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def _floor(method, opt, batch, gen, cond):
    latents = method.instance[0].sample(torch.zeros(batch, dtype=torch.long), gen)
    denoising_loss(method.pipe.unet, method.scheduler, latents, cond.hidden, gen,
                   added_cond_kwargs=cond.added).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _one(name, shape, size, batch, steps, folder, lora: bool) -> list[Result]:
    method, opt, ref_opt = _method(shape, size, folder, lora)
    pixels = to_pixels([prepare_image(im, size) for im in load_concept_images(folder, "bench")])
    with torch.no_grad():
        cond = method.encode([instance_prompt(method.cfg.subjects[0])] * batch)
    gen = torch.Generator().manual_seed(0)
    reference = ReferenceDreamBooth(method, [pixels], ref_opt, max_grad_norm=0)
    fns = {"ours": lambda: _ours(method, opt, batch, gen),
           "reference": lambda: reference.step(batch, gen),
           "floor": lambda: _floor(method, opt, batch, gen, cond)}
    times, rise = {k: [] for k in fns}, {}
    with PeakRSS() as held:  # the first step also allocates the optimizer's state
        fns["ours"]()
    for k, fn in fns.items():  # warm-up; then the memory one more step adds on top of what is held
        fn()
        with PeakRSS() as mem:
            fn()
        rise[k] = mem.rise
    for _ in range(steps):  # interleaved, so machine load hits all three alike
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    kind = "LoRA" if lora else "full"
    target = "ratio <= 0.77 (>= 1.3x)" if lora else "ratio <= 0.83 (>= 1.2x)"
    print(f"  dreambooth {kind} {name}: {held.peak:.0f} MB resident after the first step (model, optimizer); "
          f"one step adds at peak: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rise.items()))
    return [Result(f"dreambooth {kind} {name}: s/step vs reference", med["ours"], med["reference"], "s/step", target),
            Result(f"dreambooth {kind} {name}: s/step vs floor", med["ours"], med["floor"], "s/step", "ratio <= 1.1")]


def _case(name, shape, size, batch, steps, folder) -> list[Result]:
    """Each method in a fresh process, so that one's memory (never all handed back to the OS) is not
    counted in the next one's."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out = []
    for lora in (False, True):
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            out += pool.submit(_one, name, shape, size, batch, steps, folder, lora).result()
    return out


def run(quick: bool = False) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "subject"
        export_images(folder, 4, seed=0, size=64, only={"object": {"monster"}, "individual": {"tuki"}})
        out = []
        for name, (shape, size, batch, steps) in CASES.items():
            out += _case(name, shape, size, batch, 2 if quick else steps, folder)
        return out
