"""Learned-embedding files: diffusers, A1111 (.pt and .safetensors), kohya, and NumPy; read by content.

Every file holds only the learned vectors (K, D) and metadata; pickle-based files are read with
`torch.load(weights_only=True)`, so a file that tries to run code is refused before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from conceptlab.errors import InputError
from conceptlab.io import atomic_save_torch, atomic_write_bytes

FORMATS = ("diffusers", "a1111-pt", "a1111-safetensors", "kohya", "numpy", "sdxl")
_SUFFIX = {"diffusers": ".safetensors", "a1111-pt": ".pt", "a1111-safetensors": ".safetensors",
           "kohya": ".safetensors", "numpy": ".npy", "sdxl": ".safetensors"}


@dataclass
class Embedding:
    """Learned vectors of one placeholder token, (K, D), with the metadata saved beside them.

    `vectors` belong to the first text encoder; a family with more encoders keeps theirs in `extra` by the
    key its files use (SDXL: vectors = clip_l (K, 768), extra = {"clip_g": (K, 1280)})."""

    token: str
    vectors: torch.Tensor  # (K, D)
    meta: dict = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        self.vectors = _as_matrix(self.vectors)
        self.extra = {k: _as_matrix(v) for k, v in self.extra.items()}

    def widths(self) -> tuple[int, ...]:
        return (self.dim, *(v.shape[1] for v in self.extra.values()))

    @property
    def num_vectors(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    return (t[None] if t.ndim == 1 else t).detach().float().cpu().contiguous()


def _str_meta(meta: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _safetensors_bytes(tensors: dict, meta: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=_str_meta(meta))


def save_embedding(emb: Embedding, path: str | Path, fmt: str) -> Path:
    """Writes `emb` in format `fmt` to `path` atomically."""
    path = Path(path)
    meta = {"token": emb.token, "vectors": emb.num_vectors, **emb.meta}
    if fmt == "sdxl":  # {clip_l, clip_g}: the SDXL layout A1111 and ComfyUI read (diffusers: one key per encoder)
        if "clip_g" not in emb.extra:
            raise InputError("--to", fmt, f"{emb.token} has no clip_g vectors (it was learned on a one-encoder model)",
                             "Use --to diffusers (or another single-encoder format)")
        tensors = {"clip_l": emb.vectors, **emb.extra}
        return atomic_write_bytes(_safetensors_bytes(tensors, {**meta, "format": fmt}), path)
    if emb.extra:
        raise InputError("--to", fmt, f"holds one text encoder's vectors, but {emb.token} has {len(emb.widths())}",
                         "Use --to sdxl for an SDXL embedding")
    if fmt == "diffusers":  # {token: (K, D)}: what pipe.load_textual_inversion reads
        return atomic_write_bytes(_safetensors_bytes({emb.token: emb.vectors}, meta), path)
    if fmt in ("a1111-safetensors", "kohya"):  # one key, emb_params; A1111 reads kohya's files too
        return atomic_write_bytes(_safetensors_bytes({"emb_params": emb.vectors}, {**meta, "format": fmt}), path)
    if fmt == "a1111-pt":  # A1111's textual_inversion .pt layout, plain tensors and strings only
        data = {"string_to_token": {"*": 265}, "string_to_param": {"*": emb.vectors}, "name": emb.token,
                "step": int(emb.meta.get("steps", 0)), "conceptlab_meta": json.dumps(meta)}
        return atomic_save_torch(data, path)
    if fmt == "numpy":  # the first seed project's format, but only the learned vectors
        import io

        buf = io.BytesIO()
        np.save(buf, emb.vectors.numpy(), allow_pickle=False)
        atomic_write_bytes(buf.getvalue(), path)
        atomic_write_bytes(json.dumps(meta, indent=2).encode(), path.with_suffix(".json"))
        return path
    raise InputError("--format", fmt, "unknown embedding format", f"Use one of {FORMATS}")


def save_all_formats(emb: Embedding, folder: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Writes every format into `folder`; the diffusers file is learned_embeds.safetensors."""
    folder = Path(folder)
    stem = stem or safe_name(emb.token)
    names = {"diffusers": "learned_embeds.safetensors", "a1111-pt": f"{stem}.a1111.pt",
             "a1111-safetensors": f"{stem}.a1111.safetensors", "kohya": f"{stem}.kohya.safetensors",
             "numpy": f"{stem}.npy"}
    if emb.extra:  # several encoders: the one layout that carries them all
        names = {"sdxl": "learned_embeds.safetensors"}
    return {fmt: save_embedding(emb, folder / name, fmt) for fmt, name in names.items()}


def safe_name(token: str) -> str:
    """A file-system-safe name for a token: '<happy-emoji>' -> 'happy-emoji'."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in token).strip("_") or "concept"


def _safetensors_keys(path: Path, head: bytes) -> set[str] | None:
    """The tensor names of a safetensors file (its 8-byte length, then a JSON object); None for any other file."""
    if len(head) < 8 or not 0 < (n := int.from_bytes(head, "little")) < 100_000_000:
        return None
    with open(path, "rb") as f:
        f.seek(8)
        header = f.read(n)
    try:
        parsed = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return set(parsed) - {"__metadata__"} if isinstance(parsed, dict) else None


def detect_format(path: str | Path, argument: str = "embedding") -> str:
    """The format of an embedding file, from its bytes (the extension is not trusted)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:6] == b"\x93NUMPY":
        return "numpy"
    # safetensors first: its first 8 bytes are the header's length, which may start with 0x80 like a pickle
    keys = _safetensors_keys(path, head)
    if keys is not None:
        if {"clip_l", "clip_g"} <= keys:
            return "sdxl"
        return "kohya" if keys == {"emb_params"} else "diffusers"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch zip archive, or a legacy pickle
        return "a1111-pt"
    raise InputError(argument, str(path), "is not an embedding file conceptlab can read",
                     f"Use one of the formats {FORMATS}")


def load_embedding(path: str | Path, token: str | None = None, argument: str = "embedding") -> Embedding:
    """Reads an embedding file of any supported format into an Embedding (token from the file if not given).

    The file is checked by content first: a damaged, truncated or foreign file, a pickle that would run code,
    or vectors that are not a finite (K, D) float tensor are refused with an InputError naming `argument`."""
    from conceptlab.validation import input_file

    path = input_file(argument, path, "embedding file")
    fmt = detect_format(path, argument)
    extra = {}
    if fmt == "numpy":
        token, vectors, meta = _read_numpy(path, token, argument)
    elif fmt == "a1111-pt":
        token, vectors, meta = _read_a1111_pt(path, token, argument)
    else:
        token, vectors, meta, extra = _read_safetensors(path, fmt, token, argument)
    return Embedding(token, _checked_vectors(vectors, path, argument), meta, extra)


def _read_numpy(path: Path, token: str | None, argument: str):
    try:
        vectors = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refused
        raise InputError(argument, str(path), f"was refused: {e}", "Save only a float array (np.save of the vectors)") from None
    except (OSError, EOFError) as e:
        raise InputError(argument, str(path), f"is damaged ({e})", "Pass a complete .npy file") from None
    side = path.with_suffix(".json")
    meta = _json_meta(side.read_text(), side, argument) if side.is_file() else {}
    if not np.issubdtype(vectors.dtype, np.floating):
        raise InputError(argument, str(path), f"holds {vectors.dtype} values", "Save the float vectors")
    return token or meta.get("token") or path.stem, torch.from_numpy(np.array(vectors)), meta


def _read_a1111_pt(path: Path, token: str | None, argument: str):
    data = _safe_torch_load(path, argument)
    params = data.get("string_to_param") if isinstance(data, dict) else None
    if not isinstance(params, dict) or "*" not in params:
        raise InputError(argument, str(path), "is a torch file without string_to_param['*']",
                         "Pass an A1111 textual-inversion embedding")
    meta = _json_meta(data.get("conceptlab_meta", "{}"), path, argument)
    name = data.get("name")
    return token or (name if isinstance(name, str) else None) or path.stem, params["*"], meta


def _read_safetensors(path: Path, fmt: str, token: str | None, argument: str):
    from safetensors import safe_open

    from conceptlab.validation import safetensors_header

    safetensors_header(argument, path)
    with safe_open(str(path), framework="pt") as f:
        raw_meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = {k: _maybe_json(v) for k, v in raw_meta.items()}
    if fmt == "sdxl":
        extra = {"clip_g": _checked_vectors(tensors["clip_g"], path, argument)}
        return token or meta.get("token") or path.stem, tensors["clip_l"], meta, extra
    if any(k.startswith(("lora_", "unet.", "text_encoder.")) for k in tensors):
        raise InputError(argument, str(path), "is a LoRA file, not an embedding", "Load it with --lora instead")
    if fmt == "kohya":
        return token or meta.get("token") or path.stem, tensors["emb_params"], meta, {}
    if len(tensors) != 1:
        raise InputError(argument, str(path), f"holds {len(tensors)} tensors", "A diffusers embedding holds exactly one")
    (name, vectors), = tensors.items()
    return token or name, vectors, meta, {}


def _checked_vectors(vectors, path: Path, argument: str) -> torch.Tensor:
    """A finite float (K, D) tensor, or a clear refusal (a 0-d tensor, a string, NaN would break generation)."""
    from conceptlab.validation import finite_tensor

    if not isinstance(vectors, torch.Tensor):
        raise InputError(argument, str(path), f"holds a {type(vectors).__name__} where the vectors should be",
                         "Pass a file whose vectors are a tensor")
    if vectors.ndim not in (1, 2) or vectors.numel() == 0 or not vectors.is_floating_point():
        raise InputError(argument, str(path), f"holds a {vectors.dtype} tensor of shape {tuple(vectors.shape)}",
                         "An embedding is a float tensor of shape (vectors, width), e.g. (1, 768)")
    finite_tensor(argument, vectors, str(path))
    return vectors


def _json_meta(raw, where: Path, argument: str) -> dict:
    try:
        meta = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise InputError(argument, str(where), "has metadata that is not valid JSON", "The file is damaged") from None
    if not isinstance(meta, dict):
        raise InputError(argument, str(where), "has metadata that is not an object", "The file is damaged")
    return meta


def _maybe_json(v: str):
    try:
        return json.loads(v)
    except (json.JSONDecodeError, TypeError):
        return v


def _safe_torch_load(path: Path, argument: str = "embedding"):
    """torch.load of plain tensors only: a pickle that would run code is refused, a damaged archive named so."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever a hostile or damaged file raises, it is refused
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise InputError(argument, str(path), "was refused: it holds more than plain tensors (possibly code)",
                             f"Only load files you trust; convert it to .safetensors elsewhere ({reason})") from None
        raise InputError(argument, str(path), f"is damaged or truncated ({reason})",
                         "Pass a complete file (copy or download it again)") from None
