"""Prompt-to-Prompt cost: an edit of a 2-prompt batch vs plain generation of the same 2 prompts, and
negative-prompt inversion vs null-text inversion with the reference settings (10 inner steps per timestep).

Direct Inversion (Ju et al. 2024) on the shipped base model: its reconstruction PSNR against null-text
inversion's and its time against negative-prompt inversion's, the three run on the same sticker-world renders
in the same run (its reconstruction is the VAE's round trip by construction; the time is what it costs).
Null-text inversion dominates the run: about 7 minutes an image at 50 steps on a loaded 2-core CPU.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.common import Result, interleaved_best
from conceptlab.editing.edit import edit, shared_latents
from conceptlab.editing.inversion import invert, reconstruct
from conceptlab.models.tiny import build_pipeline
from conceptlab.world import StickerSpec, render

TITLE = "Prompt-to-Prompt and inversion"  # its table on docs/results/benchmarks.md (benchmarks/record.py)
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


INVERSIONS = ("null-text", "negative-prompt", "direct")


def _inversions(n_images: int, steps: int, speed_repeats: int = 5) -> list[Result]:
    """Each method on the same renders (seeds 9000+, as the edit proof's real-image set), reconstruction PSNR and
    inversion seconds per image; the methods take turns on each image, each image in a rotated order, so machine
    load hits them alike. The two fast methods are then timed `speed_repeats` more times per image, back to back,
    and compared by their medians (four null-text-length gaps between single samples measured the load)."""
    from conceptlab.evaluation.metrics import psnr
    from conceptlab.models.loading import load_pipeline
    from conceptlab.world import sample_spec

    pipe = load_pipeline(None)  # the shipped base model
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows = {m: {"psnr": [], "seconds": []} for m in INVERSIONS}
    timed = {"negative-prompt": [], "direct": []}  # seconds of the fast methods' back-to-back repeats
    invert(pipe, render(sample_spec(8999), size).image, "a sticker", "negative-prompt", 2)  # warm-up, not timed
    for k in range(n_images):
        r = render(sample_spec(9000 + k), size)
        for method in INVERSIONS[k % 3:] + INVERSIONS[: k % 3]:
            inv = invert(pipe, r.image, r.caption, method, steps, inner_steps=10)
            rows[method]["psnr"].append(psnr(r.image, reconstruct(pipe, inv)))
            rows[method]["seconds"].append(inv.seconds)
        for i in range(speed_repeats):  # the two fast methods again, alternately: enough samples to time them;
            for method in sorted(timed, reverse=bool(i % 2)):  # each goes first half the time (the second ran slower)
                timed[method].append(invert(pipe, r.image, r.caption, method, steps).seconds)
    torch.set_grad_enabled(True)
    mean = {m: {k: float(np.mean(v)) for k, v in rows[m].items()} for m in INVERSIONS}
    spread = {m: {k: float(np.std(v)) for k, v in rows[m].items()} for m in INVERSIONS}
    for m in INVERSIONS:
        print(f"  {m:<16} PSNR {mean[m]['psnr']:6.2f} +- {spread[m]['psnr']:4.2f} dB   "
              f"{mean[m]['seconds']:6.2f} +- {spread[m]['seconds']:4.2f} s/image   ({n_images} images, {steps} steps)")
    pairs = [d / n for d, n in zip(timed["direct"], timed["negative-prompt"])]
    if pairs:
        print(f"  direct / negative-prompt inversion time, {len(pairs)} back-to-back pairs: median "
              f"{np.median(pairs):.3f} ({min(pairs):.3f}-{max(pairs):.3f})")
    detail = {"images": n_images, "steps": steps, "per_image": rows, "mean": mean, "std": spread,
              "timed_pairs": timed}
    fast = {m: float(np.median(timed[m] or rows[m]["seconds"])) for m in timed}
    return [Result("inversion base: direct vs null-text, PSNR", mean["direct"]["psnr"], mean["null-text"]["psnr"],
                   "dB", "ours >= reference - 1 dB", detail),
            Result("inversion base: direct vs negative-prompt, time", fast["direct"], fast["negative-prompt"], "s",
                   "ratio <= 1.1 (median of back-to-back pairs)", detail)]


def run(quick: bool = False) -> list[Result]:
    out = []
    for name, (shape, size, steps, repeats) in CASES.items():
        out += _case(name, shape, size, 3 if quick else steps, 1 if quick else repeats)
    return out + _inversions(1 if quick else 4, 5 if quick else 50, 1 if quick else 5)  # 50 steps, as Ju et al. and Mokady et al.
