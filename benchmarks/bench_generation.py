"""Generation through conceptlab vs a plain diffusers pipeline call on the same pipeline and settings."""

from __future__ import annotations

import torch

from benchmarks.common import Result, interleaved_best
from conceptlab.generation import GenerationConfig, generate
from conceptlab.models.tiny import build_pipeline

CASES = {
    # name: (shape, image size, steps, images, repeats)
    "tiny": ("tiny", 32, 20, 4, 5),
    "sd15-shaped @128px": ("sd15", 128, 4, 1, 2),
}


def _case(name, shape, size, steps, n, repeats) -> Result:
    pipe = build_pipeline(shape, image_size=size)
    cfg = GenerationConfig(prompt="a sticker of a happy green apple", n=n, seed=0, steps=steps,
                           width=size, height=size, batch_size=n)

    def ours():
        generate(pipe, cfg, progress=False)

    def reference():
        gens = [torch.Generator().manual_seed(i) for i in range(n)]
        pipe([cfg.prompt] * n, num_inference_steps=steps, guidance_scale=cfg.guidance, height=size,
             width=size, generator=gens)

    a, b = interleaved_best(ours, reference, repeats=repeats)
    return Result(f"generate {name}: {n} img x {steps} steps", a, b, "s", "ratio <= 1.02")


def run(quick: bool = False) -> list[Result]:
    return [_case(name, shape, size, steps, n, 1 if quick else repeats)
            for name, (shape, size, steps, n, repeats) in CASES.items()]
