"""DreamBooth steps/s, full fine-tune and LoRA: conceptlab vs a loop built the way diffusers'
examples/dreambooth/train_dreambooth.py works (VAE and text encoder run at every step), and vs the floor
(UNet forward+backward and the optimizer step on cached latents and text embeddings). Peak memory of each.
The reference steps torch's default AdamW, as the example does; ours and the floor the training loop's
(make_optimizer: the fused kernel).
"""

from __future__ import annotations

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


def _reference(method, opt, pixels, batch, gen):
    """As the example script: encode the images and the prompt at every step."""
    pipe = method.pipe
    idx = torch.randint(0, len(pixels), (batch,), generator=gen)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels[idx]).latent_dist.sample(generator=gen) * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer([instance_prompt(method.cfg.subjects[0])] * batch, padding="max_length",
                             max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
        cond = pipe.text_encoder(ids)[0]
    denoising_loss(pipe.unet, method.scheduler, latents, cond, gen).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


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
    fns = {"ours": lambda: _ours(method, opt, batch, gen),
           "reference": lambda: _reference(method, ref_opt, pixels, batch, gen),
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
