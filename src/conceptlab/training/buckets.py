"""Aspect-ratio buckets: images keep their shape instead of being centre-cropped to a square.

The scheme kohya sd-scripts, OneTrainer and ai-toolkit use (NovelAI 2022, "Aspect ratio bucketing"): a set of
(width, height) buckets of about the training area, each image resized to cover the bucket whose aspect ratio
is nearest its own and cropped to it, every batch drawn from one bucket. On SDXL each image's size before
resizing and its crop become the UNet's size conditioning (Podell et al. 2023, arXiv 2307.01952, sec. 2.2).
Latents are still cached once per image (CachedLatents, one per bucket), so the crop is chosen once per image:
the centre, or a random place drawn from the run's seed.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass

import torch
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.models.families import SizeConditioning
from conceptlab.training.data import CachedLatents, mask_weights
from conceptlab.validation import BUCKET_ASPECT, BUCKET_STEP

Size = tuple[int, int]  # (width, height) in pixels, PIL's order


@dataclass
class BucketConfig:
    """`--buckets`: aspect-ratio buckets instead of a square centre crop (off by default, see the guide)."""

    # off: every image is resized and cropped to a resolution x resolution square, as before buckets existed, so
    # runs and published numbers do not move; on: each image trains at the bucket of its own aspect ratio
    enabled: bool = False
    # bucket sides are multiples of this many pixels; None: resolution / 16 (kohya's 64 px at SDXL's 1024),
    # rounded to what the UNet divides (VAE factor x its downsamplings) and to a divisor of the resolution
    step: int | None = None
    # the longest bucket side over its shortest, at most (kohya's defaults, 256..1024 px, give 4)
    max_aspect: float = 4.0


def check_bucket_config(cfg: BucketConfig, resolution: int | None = None, factor: int | None = None) -> None:
    """Raises InputError for a bad step or aspect limit, and for a resolution they cannot form buckets from.

    Without `resolution` and `factor` (before a model is loaded) only what can be checked without them is."""
    BUCKET_ASPECT.check("--bucket-max-aspect", cfg.max_aspect)
    if cfg.step is not None:
        BUCKET_STEP.check("--bucket-step", cfg.step)
        if factor and cfg.step % factor:
            raise InputError("--bucket-step", cfg.step, f"is not a multiple of the VAE's factor {factor}",
                             f"Use {max(factor, round(cfg.step / factor) * factor)}")
    if not cfg.enabled and (cfg.step is not None or cfg.max_aspect != BucketConfig.max_aspect):
        given = "--bucket-step" if cfg.step is not None else "--bucket-max-aspect"
        raise InputError(given, cfg.step if cfg.step is not None else cfg.max_aspect, "has no effect without --buckets",
                         f"Add --buckets, or drop {given}")
    if not cfg.enabled or resolution is None or cfg.step is None:
        return
    if resolution % cfg.step:
        near = max(cfg.step, round(resolution / cfg.step) * cfg.step)
        raise InputError("--resolution", resolution, f"is not a multiple of --bucket-step {cfg.step}, so it cannot "
                         "form buckets", f"Use --resolution {near}, or a --bucket-step that divides {resolution}")
    if len(bucket_sizes(resolution, cfg.step, cfg.max_aspect)) < 2:
        raise InputError("--resolution", resolution, f"forms only a square bucket with --bucket-step {cfg.step} and "
                         f"--bucket-max-aspect {cfg.max_aspect:g}",
                         f"Use --resolution {2 * cfg.step} or more, a smaller --bucket-step, or drop --buckets")


def unet_multiple(pipe) -> int:
    """The pixel multiple a UNet takes without padding: the VAE's factor x 2 per UNet downsampling."""
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def default_step(resolution: int, unit: int, factor: int) -> int:
    """resolution / 16 (64 px at 1024) as a multiple of `unit` that divides the resolution; else the largest
    multiple of the VAE `factor` that does, so a resolution that is a multiple of the factor always works."""
    target = max(unit, resolution // 16)
    fits = [s for s in range(factor, target + 1, factor) if resolution % s == 0]
    return max([s for s in fits if s % unit == 0] or fits)


def bucket_sizes(resolution: int, step: int, max_aspect: float) -> list[Size]:
    """(width, height) buckets: sides multiples of `step`, area at most resolution^2 and more than
    resolution^2 - longest side x step, aspect within `max_aspect`; ordered from the tallest to the widest."""
    area = resolution * resolution
    out = set()
    for w in range(step, math.isqrt(int(area * max_aspect)) + step, step):
        h = area // w // step * step  # the tallest multiple of step with w * h <= area
        if h >= step and max(w / h, h / w) <= max_aspect:
            out |= {(w, h), (h, w)}  # portrait and landscape get the same treatment
    return sorted(out, key=lambda s: (s[0] / s[1], -s[0] * s[1]))


def nearest_bucket(size: Size, buckets: list[Size]) -> Size:
    """The bucket whose aspect ratio is nearest the image's, measured in log space (2:1 and 1:2 are as far
    from 1:1); a tie goes to the larger bucket."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


@dataclass(frozen=True)
class Placement:
    """How one image fills its bucket: resized to `resized` (covering the bucket), then cropped at (left, top)."""

    original: Size
    resized: Size
    left: int
    top: int
    bucket: Size

    def apply(self, image: Image.Image) -> Image.Image:
        """The image (or its mask) resized and cropped to the bucket, (bucket w, bucket h) pixels."""
        (bw, bh), (x, y) = self.bucket, (self.left, self.top)
        return image.resize(self.resized, Image.Resampling.BICUBIC).crop((x, y, x + bw, y + bh))

    def size_conditioning(self, mirrored: bool = False) -> SizeConditioning:
        """SDXL's original size, crop top-left and target size, all (h, w), as diffusers' SDXL scripts compute
        them: the crop is in the resized image; a mirror image's crop is where it lies in the mirrored image."""
        (w, h), (bw, bh) = self.original, self.bucket
        left = self.resized[0] - bw - self.left if mirrored else self.left
        return SizeConditioning((h, w), (self.top, left), (bh, bw))


def place(size: Size, bucket: Size, rng: random.Random | None = None) -> Placement:
    """Resize to cover `bucket` (the scale of the tighter side), then crop: centred as diffusers' SDXL scripts
    (round((H - h) / 2)), or at a place drawn from `rng`."""
    (w, h), (bw, bh) = size, bucket
    scale = max(bw / w, bh / h)
    rw, rh = max(bw, int(w * scale + 0.5)), max(bh, int(h * scale + 0.5))  # halves round up, as kohya's
    if rng is None:
        top, left = max(0, int(round((rh - bh) / 2.0))), max(0, int(round((rw - bw) / 2.0)))
    else:
        top, left = rng.randint(0, rh - bh), rng.randint(0, rw - bw)
    return Placement(size, (rw, rh), left, top, bucket)


def place_images(sizes: list[Size], buckets: list[Size], center_crop: bool, seed: int, name: str) -> list[Placement]:
    """Each image's placement in its nearest bucket; random crops come from `seed`, so a resumed run (and a
    second run with the same seed) crops alike. Warns for images that must be upscaled."""
    rng = None if center_crop else random.Random(f"buckets:{seed}:{name}")
    out = []
    for k, size in enumerate(sizes):
        placement = place(size, nearest_bucket(size, buckets), rng)
        if placement.resized[0] > size[0]:
            warnings.warn(f"image {k + 1} {name} is {size[0]}x{size[1]}, smaller than its bucket "
                          f"{placement.bucket[0]}x{placement.bucket[1]}; upscaling it", stacklevel=3)
        out.append(placement)
    return out


@dataclass
class BucketLatents:
    """One concept's images in one bucket: cached latents (the images, then their mirrors when flips are on),
    each row's index among the concept's images, and each row's SDXL size conditioning."""

    latents: CachedLatents  # (N, C, h, w) with h, w the bucket's size over the VAE factor
    sources: list[int]
    sizes: list[SizeConditioning]


def encode_buckets(vae, images: list[Image.Image], placements: list[Placement], flip: bool,
                   masks: list[Image.Image] | None = None, mask_weight: float = 1.0) -> dict[Size, BucketLatents]:
    """The images grouped by bucket and encoded once; masks, when given, are cropped exactly as their images."""
    groups: dict[Size, list[int]] = {}
    for k, p in enumerate(placements):
        groups.setdefault(p.bucket, []).append(k)
    out = {}
    for bucket, rows in sorted(groups.items()):
        latents = CachedLatents.encode(vae, [placements[k].apply(images[k]) for k in rows], flip)
        if masks is not None:
            cropped = [placements[k].apply(masks[k]) for k in rows]
            latents.weight = mask_weights(cropped, tuple(latents.mean.shape[2:]), mask_weight, flip)
        sizes = [placements[k].size_conditioning() for k in rows]
        if flip:
            sizes += [placements[k].size_conditioning(mirrored=True) for k in rows]
        out[bucket] = BucketLatents(latents, rows * (2 if flip else 1), sizes)
    return out


@dataclass(frozen=True)
class Bucketing:
    """One run's buckets and how its images are cropped into them."""

    sizes: tuple[Size, ...]  # (w, h) of every bucket, from bucket_sizes
    center_crop: bool
    seed: int  # the run's seed: random crops are drawn from it

    def encode(self, vae, images: list[Image.Image], flip: bool, name: str, masks: list[Image.Image] | None = None,
               mask_weight: float = 1.0) -> dict[Size, BucketLatents]:
        """The images (of the concept `name`) placed in their buckets and encoded once; see encode_buckets."""
        placements = place_images([im.size for im in images], list(self.sizes), self.center_crop, self.seed, name)
        return encode_buckets(vae, images, placements, flip, masks, mask_weight)


def bucketing_for(pipe, cfg: BucketConfig, resolution: int, center_crop: bool, seed: int) -> Bucketing | None:
    """The run's buckets at `resolution` (None when they are off), its settings checked against the model."""
    if not cfg.enabled:
        return None
    factor = pipe.vae_scale_factor
    step = cfg.step or default_step(resolution, unet_multiple(pipe), factor)
    check_bucket_config(BucketConfig(True, step, cfg.max_aspect), resolution, factor)
    return Bucketing(tuple(bucket_sizes(resolution, step, cfg.max_aspect)), center_crop, seed)


def draw_bucket(pools: list[dict[Size, BucketLatents]], generator: torch.Generator) -> Size:
    """A bucket, drawn with probability proportional to its images (every concept's): one image's bucket."""
    keys = sorted(set().union(*pools))
    counts = torch.tensor([sum(len(p[k].latents) for p in pools if k in p) for k in keys])
    pick = torch.randint(0, int(counts.sum()), (1,), generator=generator)
    return keys[int(torch.searchsorted(counts.cumsum(0), pick, right=True))]


def draw_bucket_items(pools: list[dict[Size, BucketLatents]], batch_size: int,
                      generator: torch.Generator) -> list[tuple[int, BucketLatents, int]]:
    """(concept, its part of the bucket, row) for a batch from one bucket; the concepts that have images in the
    bucket take turns from a random offset, as they do in a square batch. Every draw is from the loop's
    generator, whose state checkpoints save, so a resumed run draws the same batches."""
    bucket = draw_bucket(pools, generator)
    members = [c for c, pool in enumerate(pools) if bucket in pool]
    offset = int(torch.randint(0, len(members), (1,), generator=generator))
    items = []
    for i in range(batch_size):
        c = members[(offset + i) % len(members)]
        part = pools[c][bucket]
        items.append((c, part, int(torch.randint(0, len(part.latents), (1,), generator=generator))))
    return items


def run_record(record: dict) -> dict:
    """A config record without the bucket settings while buckets are off: runs checkpointed before buckets
    existed keep the fingerprint they were made with, so they still resume."""
    buckets = record.get("buckets")
    if isinstance(buckets, dict) and not buckets.get("enabled"):
        record = {k: v for k, v in record.items() if k != "buckets"}
    return record
