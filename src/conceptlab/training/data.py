"""Concept images for personalization: loading, checks, and latents cached once through the VAE."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.imaging import IMAGE_SUFFIXES, open_rgb


def check_resolution(resolution: int | None, factor: int = 8) -> None:
    """A training resolution is a positive multiple of the VAE's factor, as `generate --width` requires."""
    from conceptlab.validation import SIZE

    if resolution is not None and SIZE.check("--resolution", resolution) % factor:
        raise InputError("--resolution", resolution, f"is not a multiple of the VAE's factor {factor}",
                         f"Use {max(factor, round(resolution / factor) * factor)}")


def check_image_folder(argument: str, folder) -> None:
    """A training folder exists and holds at least one file named like an image (read fully later)."""
    from conceptlab.validation import input_dir

    path = input_dir(argument, folder, "folder of training images")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
        raise InputError(argument, str(path), "holds no images", "Add 3-12 pictures (.png, .jpg, ...)")


def load_concept_images(folder: str | Path, argument: str) -> list[Image.Image]:
    """RGB images of a concept folder; unreadable files are listed and skipped, none left is an error."""
    return load_concept_folder(folder, argument)[0]


def load_concept_folder(folder: str | Path, argument: str) -> tuple[list[Image.Image], list[str]]:
    """(images, file names) of a concept folder; unreadable files are listed and skipped, none left is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(argument, str(folder), "is not a folder", "Pass a folder with 3-12 pictures of the concept")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name not in ("metadata.jsonl", "generations.jsonl", "manifest.json"))
    images, names, bad = [], [], []
    stems = {p.stem for p in files if p.suffix.lower() != ".txt"}
    for p in files:
        if p.suffix.lower() == ".txt" and p.stem in stems:  # a kohya-style caption beside its image
            continue
        try:
            images.append(open_rgb(p))
            names.append(p.name)
        except Exception:  # noqa: BLE001 - any unreadable file is skipped and reported
            bad.append(p.name)
    if bad:
        warnings.warn(f"{argument}: skipped {len(bad)} files that are not readable images: {bad[:8]}", stacklevel=2)
    if not images:
        raise InputError(argument, str(folder), "holds no readable images",
                         f"Add pictures ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
    return images, names


def read_captions(folder: str | Path, names: list[str], argument: str) -> list[str]:
    """Each image's caption: the `text` column of metadata.jsonl (Hugging Face imagefolder), else NAME.txt
    beside the image (kohya). A missing caption is an error naming the file."""
    from conceptlab.world.export import read_metadata

    folder = Path(folder)
    rows = read_metadata(folder) if (folder / "metadata.jsonl").is_file() else []
    table = {r["file_name"]: r.get("text") or r.get("caption") for r in rows if "file_name" in r}
    out = []
    for name in names:
        txt = folder / (Path(name).stem + ".txt")
        caption = table.get(name) or (txt.read_text().strip() if txt.is_file() else None)
        if not caption:
            raise InputError(argument, str(folder / name), "has no caption",
                             "Add a 'text' column to metadata.jsonl or a .txt file beside the image, or drop captions=")
        out.append(caption)
    return out


def prepare_images(images: list[Image.Image], resolution: int, center_crop: bool = True, seed: int = 0,
                   name: str = "") -> list[Image.Image]:
    """One concept's images (`name`, e.g. "of <tuki>") resized and cropped square (prepare_image): at the centre,
    or with center_crop False at a place drawn once per image from `seed` and `name`, so that a second call with
    the same arguments (the subject's masks, a resumed run) crops alike."""
    rng = None if center_crop else random.Random(f"crop:{seed}:{name}")
    return [prepare_image(im, resolution, name=name, rng=rng) for im in images]


def prepare_image(image: Image.Image, resolution: int, *, name: str = "",
                  rng: random.Random | None = None) -> Image.Image:
    """Resized so the short side is `resolution` (upscaled with a warning if smaller), then cropped square: at
    the centre, or at a place drawn from `rng` (random crops, as diffusers' DreamBooth script's)."""
    w, h = image.size
    if min(w, h) < resolution:
        what = f"image {name}" if name else "an image"
        warnings.warn(f"{what} is {w}x{h}, smaller than the resolution {resolution}; upscaling it", stacklevel=2)
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                         Image.Resampling.BICUBIC)
    w, h = image.size
    left = (w - resolution) // 2 if rng is None else rng.randint(0, w - resolution)
    top = (h - resolution) // 2 if rng is None else rng.randint(0, h - resolution)
    return image.crop((left, top, left + resolution, top + resolution))


def read_masks(folder: str | Path, names: list[str], argument: str) -> list[Image.Image]:
    """Each image's mask (grayscale, white = the subject) from FOLDER/<image stem>.<any image suffix>.

    The layout kohya's masked loss reads; a missing or unreadable mask is an error naming the image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(argument, str(folder), "is not a folder", "Pass a folder of masks named like the images")
    by_stem = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    out = []
    for name in names:
        path = by_stem.get(Path(name).stem)
        if path is None:
            raise InputError(argument, str(folder), f"has no mask for {name}",
                             f"Add {Path(name).stem}.png (white = subject, black = background)")
        try:
            with Image.open(path) as im:
                out.append(im.convert("L"))
        except Exception:  # noqa: BLE001 - reported with the file's name
            raise InputError(argument, str(path), "is not a readable image", "Replace the mask file") from None
    return out


def mask_weights(masks: list[Image.Image], latent_size: tuple[int, int], weight: float, flip: bool) -> torch.Tensor:
    """Per-latent-pixel loss weights (N, 1, h, w): `weight` on the subject, 1 elsewhere, each map's mean 1.

    Masks are area-averaged to the latent grid, so a latent pixel half on the subject gets half the extra weight;
    the mean of 1 keeps the loss's scale (and the learning rate's meaning) whatever share of the picture the
    subject fills. The mirror images' maps follow the images' order in CachedLatents (images, then mirrors).
    """
    m = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in masks]) / 255.0)[:, None]  # (N, 1, H, W)
    if flip:
        m = torch.cat([m, m.flip(-1)])
    m = F.interpolate(m, size=latent_size, mode="area")  # (N, 1, h, w) in [0, 1]
    w = 1 + (weight - 1) * m
    return w / w.mean(dim=(2, 3), keepdim=True)


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1
    return torch.from_numpy(arr).permute(0, 3, 1, 2)  # (B, 3, H, W) in [-1, 1]


def substituted_captions(folder: str | Path, names: list[str], word: str, replacement: str, argument: str) -> list[str]:
    """Each image's caption (read_captions) with `word`, a whole word, replaced; a caption without it is an error."""
    import re

    pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
    out = []
    for name, caption in zip(names, read_captions(folder, names, argument)):
        if not pattern.search(caption):
            raise InputError(argument, caption, f"the caption of {name} does not contain {word!r}",
                             "Name the word the token stands for in every caption")
        out.append(pattern.sub(replacement, caption))
    return out


@dataclass
class CachedLatents:
    """The VAE posterior of every image (and its mirror image when flips are on), computed once.

    Sampling from the stored mean and log-variance each step gives the same distribution as encoding
    every step, which is what diffusers' example scripts do at the price of a VAE forward per step.
    """

    mean: torch.Tensor  # (N, C, h, w)
    logvar: torch.Tensor  # (N, C, h, w)
    scaling_factor: float
    weight: torch.Tensor | None = None  # (N, 1, h, w) per-pixel loss weights (mask_weights); None: uniform

    @classmethod
    @torch.no_grad()
    def encode(cls, vae, images: list[Image.Image], flip: bool) -> CachedLatents:
        pixels = to_pixels(images)
        if flip:
            pixels = torch.cat([pixels, pixels.flip(-1)])
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        return cls(dist.mean.float().cpu(), dist.logvar.float().cpu(), vae.config.scaling_factor)

    def sample(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, logvar = self.mean[idx], self.logvar[idx]
        noise = torch.randn(mean.shape, generator=generator)
        return (mean + torch.exp(0.5 * logvar) * noise) * self.scaling_factor  # (B, C, h, w)

    def pixel_weight(self, idx: torch.Tensor) -> torch.Tensor:
        """The loss weights of the images at `idx` (B, 1, h, w); ones when no masks were given."""
        if self.weight is None:
            return torch.ones(len(idx), 1, *self.mean.shape[2:])
        return self.weight[idx]

    def __len__(self) -> int:
        return len(self.mean)
