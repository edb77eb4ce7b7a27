"""Writes renders as an image folder with metadata.jsonl (Hugging Face imagefolder convention)."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from conceptlab.errors import InputError
from conceptlab.io import atomic_write_text
from conceptlab.world.attributes import sample_spec
from conceptlab.world.render import render


def export_images(out: str | Path, n: int, seed: int = 0, size: int = 64, only=None, exclude=None,
                  individual_rate: float = 0.3, fmt: str = "png", masks: bool = False) -> Path:
    """Renders n stickers from seeds seed..seed+n-1 into `out`; returns the metadata.jsonl path.

    Each row holds file_name, text (the caption), every attribute as a string column, and bbox. With `masks`,
    each object's silhouette goes to out/masks/NAME.png (white = object), the layout a masked loss reads.
    """
    out = Path(out)
    if n < 1:
        raise InputError("--n", n, "must be >= 1", "Ask for at least one image")
    if size < 16:
        raise InputError("--size", size, "is too small to read", "Use --size 16 or more (64 is the default)")
    if fmt not in ("png", "jpg"):
        raise InputError("--format", fmt, "unknown image format", "Use png or jpg")
    if out.exists() and not out.is_dir():
        raise InputError("--out", str(out), "is a file", "Pass a folder path")
    try:
        sample_spec(seed, only, exclude, individual_rate)
    except ValueError as e:
        raise InputError("--only/--exclude", {"only": only, "exclude": exclude}, str(e), "Loosen the filters") from None
    out.mkdir(parents=True, exist_ok=True)
    if masks:
        (out / "masks").mkdir(exist_ok=True)
    rows = []
    for i in tqdm(range(seed, seed + n), desc="render", unit="img"):
        r = render(sample_spec(i, only, exclude, individual_rate), size)
        name = f"{i:06d}.{fmt}"
        r.image.save(out / name)
        if masks:
            r.mask.save(out / "masks" / f"{i:06d}.png")
        rows.append({"file_name": name, "text": r.caption, **r.labels, "bbox": list(r.bbox), "seed": i})
    path = out / "metadata.jsonl"
    atomic_write_text("".join(json.dumps(row) + "\n" for row in rows), path)
    return path


def read_metadata(folder: str | Path) -> list[dict]:
    """The rows of a folder's metadata.jsonl."""
    path = Path(folder) / "metadata.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
