"""Prompt-to-Prompt cost: an edit of a 2-prompt batch vs plain generation of the same 2 prompts, and
negative-prompt inversion vs null-text inversion with the reference settings (10 inner steps per timestep).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import Result, interleaved_best
from conceptlab.editing.edit import edit, shared_latents
from conceptlab.editing.inversion import invert
from conceptlab.models.tiny import build_pipeline
from conceptlab.world import StickerSpec, render

CASES = {"tiny": ("tiny", 32, 20, 3), "sd15-shaped @256px": ("sd15", 256, 5, 1)}


def _case(name, shape, size, steps, repeats) -> list[Result]:
    pipe = build_pipeline(shape, image_size=size)
    prompts = ["a sticker of a happy red star", "a sticker of a happy red apple"]
    latents = shared_latents(pipe, 2, 0, size, size)

    def ours():
        edit(pipe, prompts[0], prompts[1], steps=steps, seed=0)

    def plain():
        pipe(prompts, num_inference_steps=steps, latents=latents)

    a, b = interleaved_best(ours, plain, repeats=repeats)
    image = render(StickerSpec(object="emoji", seed=1), size).image
    t0 = time.perf_counter()
    invert(pipe, image, "a sticker of a happy yellow emoji", "negative-prompt", steps)
    neg = time.perf_counter() - t0
    t0 = time.perf_counter()
    invert(pipe, image, "a sticker of a happy yellow emoji", "null-text", steps, inner_steps=10)
    null = time.perf_counter() - t0
    torch.set_grad_enabled(True)
    return [Result(f"edit {name}: 2-prompt edit vs plain generation", a, b, "s", "ratio <= 1.15"),
            Result(f"inversion {name}: negative-prompt vs null-text", neg, null, "s", "ratio <= 0.2 (>= 5x faster)")]


def run(quick: bool = False) -> list[Result]:
    out = []
    for name, (shape, size, steps, repeats) in CASES.items():
        out += _case(name, shape, size, 3 if quick else steps, 1 if quick else repeats)
    return out
