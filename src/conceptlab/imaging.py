"""Image helpers: saving with embedded settings, reading them back, contact sheets."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, PngImagePlugin

METADATA_KEY = "conceptlab"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def open_rgb(path: Path) -> Image.Image:
    """Opens any image as 8-bit RGB (RGBA on white, grayscale, CMYK, 16-bit all converted)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            im = im.point(lambda v: v / 256).convert("L")
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, im)
        return im.convert("RGB")


def save_image(image: Image.Image, path: str | Path, settings: dict | None = None) -> Path:
    """Saves PNG or JPEG (by suffix) atomically, with `settings` as a PNG text chunk or a JPEG comment."""
    path = Path(path)
    text = json.dumps(settings or {}, sort_keys=True)
    kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"cannot save {path.suffix!r}; use .png or .jpg")
    # a temporary name of its own, so concurrent savers of one path never write into the same file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "xb") as f:
            if kind == "PNG":
                info = PngImagePlugin.PngInfo()
                info.add_text(METADATA_KEY, text)
                if settings and "prompt" in settings:  # the key A1111 and most viewers show
                    info.add_text("parameters", _a1111_parameters(settings))
                image.save(f, format="PNG", pnginfo=info)
            else:
                image.convert("RGB").save(f, format="JPEG", quality=95, comment=text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the pixels do
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # left only by a failed write, e.g. on a full disk
    return path


def _a1111_parameters(s: dict) -> str:
    neg = f"\nNegative prompt: {s['negative_prompt']}" if s.get("negative_prompt") else ""
    return (f"{s['prompt']}{neg}\nSteps: {s.get('steps')}, Sampler: {s.get('scheduler') or 'default'}, "
            f"CFG scale: {s.get('guidance')}, Seed: {s.get('seed')}, Size: {s.get('width')}x{s.get('height')}, "
            f"Model: {s.get('model')}")


def read_settings(path: str | Path) -> dict:
    """The settings stored by save_image, from a PNG text chunk or a JPEG comment ({} if none)."""
    with Image.open(path) as im:
        raw = im.info.get(METADATA_KEY) or im.info.get("comment")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}


def make_grid(images: list[Image.Image], cols: int | None = None, labels: list[str] | None = None,
              scale: int = 1, pad: int = 2) -> Image.Image:
    """A contact sheet: images in rows of `cols`, optionally upscaled and captioned underneath."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    w, h = w * scale, h * scale
    label_h = 12 if labels else 0
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + label_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + label_h + pad)
        sheet.paste(im.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (x, y))
        if labels:
            draw.text((x + 1, y + h), str(labels[i])[: max(4, w // 6)], fill=(40, 40, 40))
    return sheet
