"""Writes renders as an image folder with metadata.jsonl (Hugging Face imagefolder convention)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw
from tqdm.auto import tqdm

from conceptlab.errors import InputError
from conceptlab.io import atomic_write_text
from conceptlab.world.attributes import ATTRIBUTES, allowed_values, sample_spec
from conceptlab.world.render import Rendered, face_box, render

MASK_BODY_GREY = 64  # the body's level in a face mask: 1/4 of the face's extra loss weight


def face_mask(r: Rendered) -> Image.Image:
    """White on the face box (within the silhouette), MASK_BODY_GREY on the rest of the object, black elsewhere."""
    body = r.mask.point(lambda v: MASK_BODY_GREY if v > 127 else 0)
    box = face_box(r.spec, r.mask.width)
    if box is None:  # drawn without a face: the body alone
        return body
    face = Image.new("L", r.mask.size, 0)
    ImageDraw.Draw(face).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=255)
    return ImageChops.lighter(body, ImageChops.multiply(face, r.mask.point(lambda v: 255 if v > 127 else 0)))


def export_images(out: str | Path, n: int, seed: int = 0, size: int = 64, only=None, exclude=None,
                  individual_rate: float = 0.3, fmt: str = "png", masks: bool | str = False,
                  progress: bool = True) -> Path:
    """Renders n stickers from seeds seed..seed+n-1 into `out`; returns the metadata.jsonl path.

    Each row holds file_name, text (the caption), every attribute as a string column, and bbox. With `masks`
    ("silhouette" or True, or "face"), a mask per image goes to out/masks/NAME.png, the layout a masked loss
    reads: the object's silhouette in white, or for "face" the face white and the rest of the object grey
    (MASK_BODY_GREY), so a masked loss weighs the face most, the body less, the background least.
    """
    out = Path(out)
    if n < 1:
        raise InputError("--n", n, "must be >= 1", "Ask for at least one image")
    if size < 16:
        raise InputError("--size", size, "is too small to read", "Use --size 16 or more (64 is the default)")
    if masks not in (False, True, "silhouette", "face"):
        raise InputError("--masks", masks, "unknown mask kind", "Use silhouette or face")
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
    for i in tqdm(range(seed, seed + n), desc="render", unit="img", disable=not progress):
        r = render(sample_spec(i, only, exclude, individual_rate), size)
        name = f"{i:06d}.{fmt}"
        r.image.save(out / name)
        if masks:
            (face_mask(r) if masks == "face" else r.mask).save(out / "masks" / f"{i:06d}.png")
        rows.append({"file_name": name, "text": r.caption, **r.labels, "bbox": list(r.bbox), "seed": i})
    return write_metadata(out, rows)


def export_balanced(out: str | Path, per_value: int, attribute: str, values, seed: int = 0, only=None,
                    **kwargs) -> Path:
    """`per_value` renders for each of `values` of `attribute` (seeds seed + 25 * k .. for the k-th value), into one
    folder with one metadata.jsonl: training pictures that show every state (each emotion, say) equally often."""
    if per_value > 25:
        raise InputError(f"renders per {attribute} (per_value)", per_value, "overlaps the next value's seeds",
                         f"Use at most 25 per {attribute}")
    rows = []
    for k, value in enumerate(values):
        export_images(out, per_value, seed=seed + 25 * k, only={**(only or {}), attribute: {value}}, **kwargs)
        rows += read_metadata(out)
    return write_metadata(out, rows)


def cover_cells(values: dict[str, list[str]], n: int) -> list[dict]:
    """`n` cells, one value of each attribute in `values`, that show every value about equally often and repeat no
    combination before all are used: each is the unused combination whose values were shown least so far (ties go
    to the earliest in the product's order). 12 cells over 4 emotions and 5 scenes: each emotion 3 times, each
    scene 2-3 times."""
    names = list(values)
    product = [dict(zip(names, combo)) for combo in itertools.product(*(values[a] for a in names))]
    shown = {a: dict.fromkeys(values[a], 0) for a in names}
    cells, unused = [], []
    for _ in range(n):
        unused = unused or list(product)  # every combination used: start over
        cell = min(unused, key=lambda c: sum(shown[a][c[a]] for a in names))  # min keeps the first of equals
        unused.remove(cell)
        cells.append(cell)
        for a in names:
            shown[a][cell[a]] += 1
    return cells


def cover_values(names: list[str], only=None, exclude=None) -> dict[str, list[str]]:
    """--cover's attributes with the values --only and --exclude leave (for `cover_cells`)."""
    values = {}
    for name in names:
        if name not in ATTRIBUTES or name in values:
            raise InputError("--cover", name, "is not an attribute" if name not in ATTRIBUTES else "is named twice",
                             f"Name each of {list(ATTRIBUTES)} at most once")
        values[name] = allowed_values(name, only, exclude)
        if not values[name]:
            raise InputError("--cover", name, "has no value left after --only/--exclude", "Loosen the filters")
    return values


def export_cells(out: str | Path, cells: list[dict], seed: int = 0, only=None, **kwargs) -> Path:
    """One render per cell (a dict of attribute values, e.g. {"emotion": "sad", "background": "beach"}; cell k from
    seed + k), into one folder with one metadata.jsonl: training pictures that cover chosen combinations of states,
    every scene as well as every emotion, say."""
    if not cells:
        raise InputError("cells", cells, "is empty", "Give at least one combination of attribute values")
    rows = []
    for k, cell in enumerate(tqdm(cells, desc="render", unit="img")):
        export_images(out, 1, seed=seed + k, only={**(only or {}), **{a: {v} for a, v in cell.items()}},
                      progress=False, **kwargs)
        rows += read_metadata(out)
    return write_metadata(out, rows)


def write_metadata(folder: str | Path, rows: list[dict]) -> Path:
    """Writes `rows` as the folder's metadata.jsonl (atomically, one JSON object per line); returns its path."""
    path = Path(folder) / "metadata.jsonl"
    atomic_write_text("".join(json.dumps(row) + "\n" for row in rows), path)
    return path


def read_metadata(folder: str | Path, argument: str = "metadata.jsonl") -> list[dict]:
    """The rows of a folder's metadata.jsonl; a malformed line or a row without file_name names its line."""
    from conceptlab.validation import read_jsonl

    return read_jsonl(argument, Path(folder) / "metadata.jsonl", required=("file_name",))
