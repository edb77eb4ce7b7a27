"""Labelled image folders: metadata.jsonl (imagefolder convention) or one subfolder per class."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from conceptlab.errors import InputError
from conceptlab.imaging import IMAGE_SUFFIXES, open_rgb  # noqa: F401 (re-exported)
from conceptlab.validation import read_jsonl


@dataclass
class LabelledImages:
    """Readable images with their labels; `skipped` lists files that could not be read."""

    paths: list[Path]
    labels: list[str]
    skipped: list[str]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


def read_labelled_folder(folder: str | Path, label: str | None, argument: str = "--data", min_images: int = 2) -> LabelledImages:
    """Reads `folder` labelled by column `label` of metadata.jsonl, or by class subfolder names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(argument, str(folder), "is not a folder", "Pass a folder of images")
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        rows = read_jsonl(argument, meta, required=("file_name",))
        if label is None or not rows or label not in rows[0]:
            cols = sorted(k for k in (rows[0] if rows else {}) if k not in ("file_name", "text"))
            raise InputError("--label", label, f"is not a column of {meta}", f"Use one of {cols}")
        lacking = next((i for i, r in enumerate(rows) if label not in r), None)
        if lacking is not None:
            raise InputError(argument, f"{meta} row {lacking + 1}", f"has no {label!r} value",
                             f"Give every row a {label!r} column")
        pairs = [(folder / Path(str(r["file_name"])).name, str(r[label])) for r in rows]
    else:
        pairs = [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir()
                 for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pairs:
        raise InputError(argument, str(folder), "holds no labelled images",
                         "Add metadata.jsonl (file_name + label columns) or one subfolder of images per class")
    good, skipped = [], []
    for path, lab in pairs:
        (good if path.is_file() and _readable(path) else skipped).append((path, lab))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable images: {[str(p) for p, _ in skipped[:5]]}", stacklevel=2)
    if len(good) < min_images:
        raise InputError(argument, str(folder), f"only {len(good)} readable images remain", "Add more images")
    return LabelledImages([p for p, _ in good], [lab for _, lab in good], [str(p) for p, _ in skipped])


def list_images(folder: str | Path, argument: str = "--images") -> tuple[list[Path], list[str]]:
    """Readable image files of a folder (not recursive), and the unreadable ones skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(argument, str(folder), "is not a folder", "Pass a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    good = [p for p in files if _readable(p)]
    bad = [str(p) for p in files if p not in good]
    if not good:
        raise InputError(argument, str(folder), "holds no readable images", "Point it at a folder of .png/.jpg files")
    return good, bad
