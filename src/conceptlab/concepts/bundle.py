"""Bundles: a LoRA and the embeddings of its new tokens in one safetensors file, with the run's config inside.

The layout is kohya's LoRA keys plus `bundle_emb.TOKEN.*` embeddings, the convention OneTrainer writes and
A1111/ComfyUI read: one encoder's vectors under `bundle_emb.TOKEN.string_to_param.*` (K, D), SDXL's under
`bundle_emb.TOKEN.clip_l` (K, 768) and `bundle_emb.TOKEN.clip_g` (K, 1280). The metadata key "conceptlab"
holds the family, the tokens and the training config, so a bundle explains itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from conceptlab.concepts.formats import Embedding
from conceptlab.errors import InputError
from conceptlab.io import atomic_write_bytes

PREFIX = "bundle_emb."
SINGLE = "string_to_param.*"  # A1111's key of a one-encoder embedding's vectors


@dataclass
class Bundle:
    """The embeddings, the LoRA tensors (kohya keys) and the metadata of a bundle file."""

    path: Path
    embeddings: list[Embedding]
    lora: dict[str, torch.Tensor]
    meta: dict

    @property
    def family(self) -> str | None:
        """The family it was trained on: from its metadata, or its vectors' layout for a foreign file."""
        if "family" in self.meta:
            return self.meta["family"]
        return "sdxl" if any(e.extra for e in self.embeddings) else None


def save_bundle(path: str | Path, embeddings: list[Embedding], lora_folder: str | Path, meta: dict) -> Path:
    """Writes the kohya LoRA file in `lora_folder` (see concepts.lora.save_lora) and `embeddings` as one file."""
    from safetensors import safe_open
    from safetensors.torch import save

    from conceptlab.concepts.lora import KOHYA_NAME

    with safe_open(str(Path(lora_folder) / KOHYA_NAME), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        kohya_meta = f.metadata() or {}
    for emb in embeddings:
        if "." in emb.token:
            raise InputError("--subject", emb.token, "holds a '.', which a bundle's keys cannot", "Rename the token")
        if emb.extra:  # SDXL: one matrix per encoder, by the key its files use
            tensors.update({f"{PREFIX}{emb.token}.clip_l": emb.vectors,
                            **{f"{PREFIX}{emb.token}.{k}": v for k, v in emb.extra.items()}})
        else:
            tensors[f"{PREFIX}{emb.token}.{SINGLE}"] = emb.vectors
    header = {**kohya_meta, "conceptlab": json.dumps({**meta, "tokens": [e.token for e in embeddings]}, default=str)}
    return atomic_write_bytes(save({k: v.contiguous() for k, v in tensors.items()}, metadata=header), Path(path))


def is_bundle(path: str | Path) -> bool:
    """True for a safetensors file that holds bundled embeddings (read from its header only)."""
    from conceptlab.validation import safetensors_header

    path = Path(path)
    if not path.is_file() or path.suffix != ".safetensors":
        return False
    return any(k.startswith(PREFIX) for k in safetensors_header("--concepts", path))


def read_bundle(path: str | Path, argument: str = "--concepts") -> Bundle:
    """The bundle at `path`, its vectors checked finite; InputError for a file that is not one."""
    from safetensors import safe_open

    from conceptlab.validation import finite_tensor, safetensors_header

    safetensors_header(argument, path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        raw = f.metadata() or {}
    try:
        meta = json.loads(raw.get("conceptlab", "{}"))
    except ValueError:
        raise InputError(argument, str(path), "has unreadable conceptlab metadata", "Pass a bundle conceptlab wrote") from None
    rows: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(PREFIX):
            token, _, part = key[len(PREFIX):].partition(".")
            finite_tensor(argument, value, f"{path} ({key})")
            rows.setdefault(token, {})[part] = value
    if not rows:
        raise InputError(argument, str(path), "holds no bundled embedding", "Pass a `train pivotal` bundle")
    embeddings = [_embedding(path, token, parts, meta, argument) for token, parts in rows.items()]
    lora = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    return Bundle(Path(path), embeddings, lora, meta)


def _embedding(path, token: str, parts: dict[str, torch.Tensor], meta: dict, argument: str) -> Embedding:
    if SINGLE in parts:
        return Embedding(token, parts[SINGLE], meta)
    if {"clip_l", "clip_g"} <= parts.keys():
        return Embedding(token, parts["clip_l"], meta, {"clip_g": parts["clip_g"]})
    raise InputError(argument, str(path), f"holds embedding {token!r} with parts {sorted(parts)}",
                     f"Expected {SINGLE} (one text encoder) or clip_l and clip_g (SDXL)")


def check_bundle_family(pipe, bundle: Bundle, argument: str = "--concepts") -> None:
    """Refuses a bundle trained on another model family, naming both."""
    from conceptlab.models.families import family_of

    mine = family_of(pipe).name
    if bundle.family is not None and bundle.family != mine:
        raise InputError(argument, str(bundle.path), f"is a {bundle.family} bundle, but this model is {mine}",
                         f"Load it with a {bundle.family} model (--model), or train a bundle on this one")


def load_bundle(pipe, path: str | Path, adapter_name: str, argument: str = "--concepts") -> Bundle:
    """Adds the bundle's tokens to the pipeline and loads its LoRA as adapter `adapter_name` (not yet active:
    the caller sets the adapters, see concepts.lora.apply_loras)."""
    from conceptlab.concepts.tokens import load_concepts

    bundle = read_bundle(path, argument)
    check_bundle_family(pipe, bundle, argument)
    load_concepts(pipe, bundle.embeddings, argument)
    if bundle.lora:
        try:
            pipe.load_lora_weights(dict(bundle.lora), adapter_name=adapter_name)
        except (ValueError, KeyError) as e:  # diffusers cannot map the keys onto this pipeline's layers
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise InputError(argument, str(path), f"its LoRA cannot be loaded into this model ({reason})",
                             "Use a bundle trained for this model") from None
    return bundle


def bundle_file(path: str | Path) -> Path | None:
    """The bundle a --concepts path names: the file itself, or a `train pivotal` folder's bundle.safetensors."""
    path = Path(path)
    candidate = path / "bundle.safetensors" if path.is_dir() else path
    return candidate if is_bundle(candidate) else None


def load_concepts_and_bundles(pipe, paths: list[str | Path], argument: str = "--concepts"):
    """Loads every path of --concepts: bundles (tokens and LoRA) and embeddings (files or `train ti` folders).

    Returns (embeddings loaded, bundles loaded, the bundles' adapter names): activate the adapters with
    concepts.lora.apply_loras(pipe, loras, keep=names), so that --lora files and bundles apply together."""
    from conceptlab.concepts.tokens import load_concept_paths

    bundles = [(p, f) for p in paths if (f := bundle_file(p)) is not None]
    plain = [p for p in paths if bundle_file(p) is None]
    embeddings = load_concept_paths(pipe, plain) if plain else []
    loaded = [load_bundle(pipe, f, adapter_name=f"bundle{k}", argument=argument) for k, (_, f) in enumerate(bundles)]
    names = tuple(f"bundle{k}" for k, b in enumerate(loaded) if b.lora)
    return embeddings, loaded, names


def add_learned(pipe, concepts: list[str | Path], loras: list[tuple[Path, float]]) -> list[str]:
    """Loads --concepts (embeddings and bundles) and applies --lora files (parsed already) together; returns
    the lines that say what was loaded."""
    from conceptlab.concepts.lora import apply_loras

    lines, adapters = [], ()
    if concepts:
        loaded, bundles, adapters = load_concepts_and_bundles(pipe, concepts)
        loaded += [e for b in bundles for e in b.embeddings]
        lines.append("loaded concepts: " + ", ".join(f"{e.token} ({e.num_vectors} vectors)" for e in loaded)
                     + "".join(f"; bundle {b.path} (tokens and LoRA)" for b in bundles))
    if loras or adapters:
        apply_loras(pipe, loras, keep=adapters)
    if loras:
        lines.append("applied LoRAs: " + ", ".join(f"{path} x{scale:g}" for path, scale in loras))
    return lines
