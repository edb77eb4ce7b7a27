"""The validation layer: every value a user gives is checked here, once, where it enters.

The CLI uses these checks as argparse types (so a bad flag stops before any model loads) and the library's
public functions and config dataclasses call the same checks, so a Python user gets the same message.
Every failure is an `InputError` naming the argument, the value and the fix; the CLI exits with code 2.

- numbers: `Bound` (finite, whole where it must be, inside a range that can finish and fit);
- paths: `output_dir`, `output_file`, `input_file`, `input_dir` (checked before anything is written);
- files by content: `open_image` (truncated, 0-byte, decompression bombs), `safetensors_header`,
  `read_json_object`, `read_jsonl`;
- configs by schema: `check_type` (used by `conceptlab.config.dataclass_from_dict`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from conceptlab.errors import InputError

# ----------------------------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class Bound:
    """A numeric range with a reason: `Bound(1, 10_000, integer=True).check("--steps", v)` returns `v` or raises."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False  # low itself is not allowed (a learning rate must be > 0)
    hint: str = ""  # what a sensible value looks like, e.g. "30 is usual"

    def _fmt(self, x: float) -> str:
        return str(int(x)) if self.integer else f"{x:g}"

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        lo = "" if self.low is None else (f"> {self._fmt(self.low)}" if self.low_open else f">= {self._fmt(self.low)}")
        hi = "" if self.high is None else f"<= {self._fmt(self.high)}"
        return f"{kind} {' and '.join(x for x in (lo, hi) if x)}".strip()

    def check(self, argument: str, value):
        """Returns `value` (a str is parsed) if it is finite and in range; raises InputError otherwise."""
        number = self._parse(argument, value)
        fix = f"Pass {self.describe()}" + (f" ({self.hint})" if self.hint else "")
        if isinstance(number, float) and not math.isfinite(number):
            raise InputError(argument, value, "is not a finite number", fix)
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and number > self.high
        if too_low or too_high:
            limit = (f"is past the limit {self._fmt(self.high)}: larger values cannot finish or fit" if too_high
                     else "is out of range")
            raise InputError(argument, value, limit, fix)
        return number

    def _parse(self, argument: str, value):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InputError(argument, value, f"must be {self.describe()}", f"Pass {self.describe()}")
        if isinstance(value, str):
            try:
                value = float(value.strip()) if not self.integer else _parse_int(value)
            except ValueError:
                raise InputError(argument, value, f"is not {self.describe()}", f"Pass {self.describe()}") from None
        if self.integer:
            if isinstance(value, float):
                if not math.isfinite(value) or value != int(value):
                    raise InputError(argument, value, "is not a whole number", f"Pass {self.describe()}")
                value = int(value)
            return value
        return float(value)

    def arg(self, text: str):
        """The argparse `type=`: argparse prefixes the message with the flag's name and exits 2."""
        try:
            return self.check("value", text)
        except InputError as e:
            raise argparse.ArgumentTypeError(f"{text!r} {e.problem}. {e.fix}") from None


def _parse_int(text: str) -> int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        number = float(text)  # '1e3' is a whole number too; 'nan', '2.5' are refused by the caller
        if not math.isfinite(number) or number != int(number):
            raise ValueError(text) from None
        return int(number)


# The ranges every command shares; one place, so `generate --steps` and `edit --steps` cannot disagree.
SAMPLING_STEPS = Bound(1, 1000, integer=True, hint="20-50 is usual")
TRAIN_STEPS = Bound(1, 1_000_000, integer=True, hint="e.g. 500 for textual inversion")
EPOCHS = Bound(1, 10_000, integer=True)
IMAGES = Bound(1, 10_000, integer=True, hint="images to make")
COUNT0 = Bound(0, 100_000, integer=True)  # a count where 0 means none / off
BATCH = Bound(1, 4096, integer=True)
SEED = Bound(0, 2**63 - 1, integer=True, hint="any whole number from 0; image i uses seed + i")
GUIDANCE = Bound(0, 100, hint="7.5 is usual; 0-1 turns guidance off")
FRACTION = Bound(0, 1, hint="a share of the steps, e.g. 0.4")
SHARE = Bound(0, 1, hint="a share of the examples, e.g. 0.3")
LR = Bound(0, 1, low_open=True, hint="e.g. 5e-3 for textual inversion, 1e-4 for LoRA")
NONNEG = Bound(0, 1e6)
REFINE_STEPS = Bound(0, 10_000, integer=True, hint="0 is off; ~100 lifts the VAE's ceiling")
WEIGHT = Bound(-100, 100)
SCALE = Bound(-10, 10, hint="1.0 applies the LoRA as trained")
SIZE = Bound(8, 4096, integer=True, hint="pixels, a multiple of the model's VAE factor")
RANK = Bound(1, 1024, integer=True, hint="4-64 is usual")
VECTORS = Bound(1, 75, integer=True, hint="1-8 is usual; the text encoder has 77 positions")
RENDER_SIZE = Bound(16, 1024, integer=True, hint="64 is the base model's size")
CONFIDENCE = Bound(0, 1, hint="e.g. 0.8")
SPLIT = Bound(0, 0.9, low_open=True, hint="e.g. 0.2: a fifth of the images for validation")
TIMESTEP_MULTIPLIER = Bound(0, 100, low_open=True, hint="2-5 is usual; 1 draws evenly")
TIMESTEP_PORTION = Bound(0, 1, low_open=True, hint="0.25 favours a quarter of the timesteps")
FEATHER = Bound(0, 64, hint="pixels; 2 softens the seam, 0 is a hard edge")
EMA_DECAY = Bound(0, 0.9999, hint="0 is off; 0.99-0.999 is usual (1 would never move)")
BUCKET_STEP = Bound(1, 1024, integer=True, hint="pixels, a multiple of the model's VAE factor; 64 is usual at 1024 px")
BUCKET_ASPECT = Bound(1, 16, hint="4 is usual")


def check_seed_range(argument: str, seed: int, n: int) -> None:
    """Image i uses seed + i: the last one must still be a valid seed."""
    if seed + max(n, 1) - 1 > SEED.high:
        raise InputError(argument, seed, f"seed + {n - 1} is past the largest seed {SEED.high:g}", "Pass a smaller --seed")


def parse_numbers(argument: str, text: str, bound: Bound) -> list[float]:
    """'0,0.25,0.5' -> [0.0, 0.25, 0.5], each checked by `bound`."""
    parts = [p for p in str(text).split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise InputError(argument, text, "expected numbers separated by commas", "e.g. 0,0.25,0.5,0.75,1")
    return [bound.check(argument, p) for p in parts]


def choice(argument: str, value, options) -> str:
    """`value` if it is one of `options`, else an error listing them."""
    if value not in tuple(options):
        raise InputError(argument, value, "is not a known choice", f"Use one of: {', '.join(map(str, options))}")
    return value


def text(argument: str, value, *, allow_empty: bool = False, max_chars: int = 4000, example: str = "") -> str:
    """A prompt or name: a string, not blank unless allowed, of a length a tokenizer can take."""
    if not isinstance(value, str):
        raise InputError(argument, value, "must be text", f"Pass a string{', e.g. ' + example if example else ''}")
    if not allow_empty and not value.strip():
        raise InputError(argument, value, "is empty", f"Pass some text{', e.g. ' + example if example else ''}")
    if len(value) > max_chars:
        raise InputError(argument, value[:40] + "...", f"is {len(value)} characters long", f"Keep it under {max_chars}")
    if "\x00" in value:
        raise InputError(argument, value, "contains a NUL character", "Remove it")
    return value


# ------------------------------------------------------------------------------------------------- paths


def _existing_ancestor(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _probe_writable(argument: str, path: Path, folder: Path) -> None:
    """Creates and removes a temporary file in `folder`: os.access says yes to root on read-only or immutable
    folders, so only a real write tells."""
    try:
        fd, name = tempfile.mkstemp(prefix=".conceptlab-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise InputError(argument, str(path), f"cannot be written ({folder}: {e.strerror or e})",
                         "Choose a folder you can write to") from None


def _given(argument: str, path, fix: str) -> Path:
    """`path` as a Path, or an error when it is missing or blank."""
    if path is None or str(path).strip() == "":
        raise InputError(argument, path, "is empty", fix)
    return Path(path)


def output_dir(argument: str, path, *, empty: bool = False) -> Path:
    """A folder to write into: may exist (as a folder) or be creatable; nothing is created here."""
    path = _given(argument, path, "Pass a folder path (it is created if missing)")
    if path.exists() and not path.is_dir():
        raise InputError(argument, str(path), "is a file, not a folder", "Pass a folder path (it is created if missing)")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise InputError(argument, str(path), f"{ancestor} is a file, so no folder can be made below it",
                         "Pass a folder path")
    if empty and path.is_dir() and any(path.iterdir()):
        raise InputError(argument, str(path), "is not empty", "Choose a new folder or empty this one")
    _probe_writable(argument, path, ancestor)
    return path


def output_file(argument: str, path, *, suffixes: tuple[str, ...] = ()) -> Path:
    """A file to write: not an existing folder, its folder creatable and writable."""
    path = _given(argument, path, "Pass a file path")
    if path.is_dir():
        raise InputError(argument, str(path), "is a folder, not a file", f"Pass a file path, e.g. {path / 'out'}"
                         + (suffixes[0] if suffixes else ""))
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(argument, str(path), f"has the suffix {path.suffix or '(none)'!r}",
                         f"Use one of {', '.join(suffixes)}")
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise InputError(argument, str(path), f"{ancestor} is a file, so no folder can be made below it",
                         "Pass a path inside a folder")
    _probe_writable(argument, path, ancestor)
    return path


def input_file(argument: str, path, what: str = "file") -> Path:
    """An existing, non-empty, readable file."""
    path = _given(argument, path, f"Pass the path of a {what}")
    if not path.exists():
        raise InputError(argument, str(path), "does not exist", f"Pass the path of an existing {what}")
    if path.is_dir():
        raise InputError(argument, str(path), "is a folder", f"Pass the path of a {what}")
    if path.stat().st_size == 0:
        raise InputError(argument, str(path), "is an empty (0-byte) file", f"Pass a complete {what}")
    if not os.access(path, os.R_OK):
        raise InputError(argument, str(path), "is not readable", "Check its permissions")
    return path


def input_dir(argument: str, path, what: str = "folder") -> Path:
    """An existing folder."""
    path = _given(argument, path, f"Pass a {what}")
    if not path.is_dir():
        problem = "is a file" if path.exists() else "does not exist"
        raise InputError(argument, str(path), problem, f"Pass an existing {what}")
    return path


def not_inside(argument: str, out: Path, source: Path, source_argument: str) -> None:
    """Commands never write into their input folders: `out` must not be `source` or below it."""
    out_abs, src_abs = out.resolve(), source.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents:
        raise InputError(argument, str(out), f"is inside the input folder {source_argument}={str(source)!r}",
                         f"Write somewhere else, e.g. --out {source.name}-out")


# ----------------------------------------------------------------------------------------- files by content

MAX_IMAGE_PIXELS = 40_000_000  # a 6,300 px square; far past any training photo, far below a bomb


def open_image(argument: str, path) -> Image.Image:  # noqa: F821 - PIL is imported lazily
    """Opens an image file as 8-bit RGB, or raises an InputError saying what is wrong with the file."""
    from PIL import Image, UnidentifiedImageError

    from conceptlab.imaging import open_rgb

    path = input_file(argument, path, "image")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise InputError(argument, str(path), f"is {w}x{h} pixels (a decompression bomb or far too large)",
                                 f"Use an image under {MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            im.verify()
        return open_rgb(path)
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise InputError(argument, str(path), f"is not a readable image ({type(e).__name__})",
                         "Pass a PNG, JPEG or WebP file") from None
    except (OSError, SyntaxError, ValueError, struct.error) as e:
        raise InputError(argument, str(path), f"is damaged or truncated ({e})", "Pass a complete image file") from None


def safetensors_header(argument: str, path) -> dict:
    """The parsed header of a .safetensors file, checked against the file's size before any tensor is read."""
    path = input_file(argument, path, ".safetensors file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise InputError(argument, str(path), "is too short to be a safetensors file", "Pass a complete file")
        n = struct.unpack("<Q", head)[0]
        if n < 2 or 8 + n > size or n > 100_000_000:
            hint = " (it looks like a pickle: refused)" if head[:2] in (b"\x80\x02", b"\x80\x04", b"PK") else ""
            raise InputError(argument, str(path), f"is not a valid safetensors file{hint}",
                             "Pass a file written by safetensors (diffusers, kohya, A1111)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(argument, str(path), "has a damaged safetensors header", "Pass a complete file") from None
    if not isinstance(header, dict):
        raise InputError(argument, str(path), "has a damaged safetensors header", "Pass a complete file")
    data = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data):
            raise InputError(argument, str(path), f"is truncated or damaged (tensor {key!r} lies past its end)",
                             "Pass a complete file (download or copy it again)")
    return header


def read_json_object(argument: str, path) -> dict:
    """A JSON file holding an object (a config, a record), with errors naming the file and line."""
    path = input_file(argument, path, "JSON file")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise InputError(argument, str(path), "is not a text file", "Pass a JSON file") from None
    except json.JSONDecodeError as e:
        raise InputError(argument, str(path), f"is not valid JSON (line {e.lineno}: {e.msg})", "Fix the file") from None
    if not isinstance(data, dict):
        raise InputError(argument, str(path), f"holds a {type(data).__name__}, not an object",
                         'Write the settings as one JSON object: {"key": value, ...}')
    return data


def read_jsonl(argument: str, path, required: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a JSON-lines file; a malformed line or a row missing a `required` key names its line."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(argument, str(path), "is not a text file", "Write one JSON object per line") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(argument, f"{path}:{number}", f"is not valid JSON ({e.msg})",
                             "Write one JSON object per line") from None
        if not isinstance(row, dict):
            raise InputError(argument, f"{path}:{number}", "is not a JSON object", "Write one JSON object per line")
        missing = [k for k in required if k not in row]
        if missing:
            raise InputError(argument, f"{path}:{number}", f"has no {missing[0]!r} column",
                             f"Every row needs {', '.join(required)}")
        rows.append(row)
    return rows


def finite_tensor(argument: str, tensor, what: str = "tensor") -> None:
    """Refuses NaN or inf values (a damaged embedding or LoRA would otherwise give black images)."""
    import torch

    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise InputError(argument, what, "holds NaN or infinite values", "The file is damaged; train or download it again")


# ------------------------------------------------------------------------------------------- configs by schema


def check_type(where: str, value, hint):
    """`value` if it fits the annotation `hint` (int, float, str, bool, X | None, list[X], tuple, Literal);
    ints are accepted for floats; anything else raises InputError naming `where`."""
    if hint is typing.Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return check_type(where, value, option)
            except InputError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else _type_error(where, value, hint)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _type_error(where, value, hint)
        if origin is list and args:
            return [check_type(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value)]
        return value
    if origin is typing.Literal:
        return choice(where, value, args)
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(where, value, hint)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, value, hint)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(where, value, hint)
        if not math.isfinite(value):
            raise InputError(where, value, "is not a finite number", "Pass a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(where, value, hint)
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise _type_error(where, value, hint)
        return value
    return value


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false", dict: "an object"}


def _type_error(where: str, value, hint) -> InputError:
    want = _TYPE_NAMES.get(hint) or str(hint).replace("typing.", "")
    return InputError(where, value, f"has the wrong type ({type(value).__name__})", f"Use {want}")
