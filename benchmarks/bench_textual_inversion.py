"""Textual inversion steps/s: conceptlab vs a loop built the way diffusers' examples/textual_inversion.py works.

The reference encodes the images through the VAE at every step, puts the whole token-embedding matrix in
AdamW and copies the other rows back after each step. Ours samples cached VAE posteriors and trains only
the new vectors. The floor is a bare UNet forward+backward to the text embeddings on cached latents.
Both loops draw the same random numbers in the same order, so their loss curves must agree (no gradient
clipping in either: the reference's norm would include the rows of ordinary words, which it then restores).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Result
from conceptlab.models.tiny import build_pipeline
from conceptlab.training.data import to_pixels
from conceptlab.training.diffusion import denoising_loss
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
from conceptlab.world.export import export_images

CASES = {  # name: (shape, image size, batch, timed steps)
    "tiny": ("tiny", 32, 4, 20),
    "sd15-shaped @256px": ("sd15", 256, 1, 3),
}


class ReferenceTI:
    """diffusers' example loop: VAE every step, whole embedding matrix in AdamW, other rows restored."""

    def __init__(self, method: TextualInversion, images: list, lr: float):
        self.m, self.pipe = method, method.pipe
        pixels = to_pixels(images)
        self.pixels = torch.cat([pixels, pixels.flip(-1)])  # the same index order as the cached latents
        emb = self.pipe.text_encoder.get_input_embeddings()
        method.splice.write_into_embedding()
        method.splice.remove()
        emb.weight.requires_grad_(True)
        self.weight = emb.weight
        self.keep = torch.ones(len(emb.weight), dtype=torch.bool)
        self.keep[method.splice.ids] = False
        self.original = emb.weight.detach().clone()
        self.opt = torch.optim.AdamW([emb.weight], lr=lr, weight_decay=1e-2)

    def step(self, batch: int, gen: torch.Generator) -> float:
        m, vae = self.m, self.pipe.vae
        torch.randint(0, 1, (1,), generator=gen)  # the concept offset ours draws (one concept here)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        import random

        rng, latents, texts = random.Random(seed), [], []
        for _ in range(batch):
            idx = torch.randint(0, len(self.pixels), (1,), generator=gen)
            dist = vae.encode(self.pixels[idx]).latent_dist
            latents.append(dist.sample(generator=gen) * vae.config.scaling_factor)
            texts.append(self.pipe.maybe_convert_prompt(rng.choice(m.templates[0]).format(m.placeholders[0].token),
                                                        self.pipe.tokenizer))
        cond = m.encode(texts)
        loss = denoising_loss(self.pipe.unet, m.scheduler, torch.cat(latents), cond.hidden, gen,
                              added_cond_kwargs=cond.added)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.weight[self.keep] = self.original[self.keep]
        return loss.item()


def _ours_step(method: TextualInversion, opt, batch: int, gen) -> float:
    loss = method.loss(batch, gen)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _floor_step(method: TextualInversion, batch: int, gen, cond) -> None:
    latents = method.latents[0].sample(torch.zeros(batch, dtype=torch.long), gen)
    c = cond.hidden[:batch].detach().requires_grad_(True)  # gradient flows to the text embeddings and stops
    denoising_loss(method.pipe.unet, method.scheduler, latents, c, gen).backward()


def _setup(shape: str, size: int, folder: Path):
    pipe = build_pipeline(shape, image_size=size)
    cfg = TextualInversionConfig(concepts=[ConceptConfig("<bench>", str(folder), init="broccoli")],
                                 resolution=size)
    return pipe, TextualInversion(pipe, cfg)


def _interleaved(fns: dict, steps: int) -> tuple[dict, dict]:
    """Median seconds per step of each function, timed in alternation so machine load hits all alike."""
    import statistics

    times, outputs = {k: [] for k in fns}, {k: [] for k in fns}
    for k, fn in fns.items():  # warm-up
        outputs[k].append(fn())
    for _ in range(steps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outputs[k].append(fn())
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outputs


def _case(name: str, shape: str, size: int, batch: int, steps: int, folder: Path) -> list[Result]:
    from conceptlab.training.data import load_concept_images, prepare_image

    lr = 5e-3
    _, ours = _setup(shape, size, folder)
    opt = torch.optim.AdamW(ours.parameters(), lr=lr, weight_decay=1e-2)
    _, base = _setup(shape, size, folder)
    images = [prepare_image(im, size) for im in load_concept_images(folder, "bench")]
    ref = ReferenceTI(base, images, lr)
    with torch.no_grad():
        cond = ours.encode(["a sticker of a <bench>"] * batch)
    gens = {k: torch.Generator().manual_seed(0) for k in ("ours", "reference", "floor")}
    secs, outs = _interleaved({
        "ours": lambda: _ours_step(ours, opt, batch, gens["ours"]),
        "reference": lambda: ref.step(batch, gens["reference"]),
        "floor": lambda: _floor_step(ours, batch, gens["floor"], cond),
    }, steps)
    diff = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(outs["ours"], outs["reference"]))
    print(f"  {name}: same seed, loss curves differ by at most {diff:.2e} (relative) over {len(outs['ours'])} steps")
    return [
        Result(f"textual inversion {name}: s/step vs reference", secs["ours"], secs["reference"], "s/step",
               "ratio <= 0.74 (>= 1.35x the steps/s)"),
        Result(f"textual inversion {name}: s/step vs floor", secs["ours"], secs["floor"], "s/step", "ratio <= 1.1"),
    ]


def run(quick: bool = False) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "concept"
        export_images(folder, 4, seed=0, size=64, only={"object": {"broccoli"}})
        results = []
        for name, (shape, size, batch, steps) in CASES.items():
            results += _case(name, shape, size, batch, 2 if quick else steps, folder)
        return results
