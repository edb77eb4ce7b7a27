"""The concepts library: every learned token and LoRA in the workspace, found by the files the CLI writes.

    runs/RUN/TOKEN/learned_embeds.safetensors     a textual-inversion run's token (train ti)
    runs/RUN/lora/pytorch_lora_weights.safetensors  a DreamBooth-LoRA run's adapters (train dreambooth --lora)
    concepts/NAME/learned_embeds.safetensors      a mix, a renamed copy or a checked upload
    concepts/NAME/pytorch_lora_weights.safetensors  an uploaded LoRA
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from conceptlab.errors import InputError
from conceptlab.studio.workspace import Workspace, check_name, check_token

EMBEDDING = "learned_embeds.safetensors"
LORA = "pytorch_lora_weights.safetensors"


@dataclass
class Concept:
    """One learned file: a token's embedding or a LoRA, with its metadata and a picture of it."""

    kind: str  # "embedding" or "lora"
    name: str  # 'runs/RUN/TOKEN' or 'concepts/NAME': unique, and what the UI lists
    file: Path
    token: str = ""
    meta: dict = field(default_factory=dict)
    preview: Path | None = None

    @property
    def folder(self) -> Path:
        return self.file.parent

    def summary(self) -> dict:
        """One row of the library's table."""
        m = self.meta
        return {"name": self.name, "kind": self.kind, "token": self.token,
                "base model": Path(str(m.get("base_model") or "")).name or "shipped base model",
                "steps": m.get("steps", ""), "final loss": _round(m.get("final_loss")),
                "init": m.get("init", "") or ", ".join(m.get("mixed_from", []) or [])}


def _round(value):
    return round(value, 4) if isinstance(value, float) else ("" if value is None else value)


def list_concepts(ws: Workspace) -> list[Concept]:
    """Every embedding and LoRA in runs/ and concepts/, runs newest first; unreadable files are skipped."""
    found = []
    for kind_root in ("runs", "concepts"):
        root = ws.root / kind_root
        for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
            for file in sorted(folder.glob(EMBEDDING)) + sorted(folder.glob(f"*/{EMBEDDING}")):
                found.append(_embedding(ws, file))
            for file in sorted(folder.glob(LORA)) + sorted(folder.glob(f"*/{LORA}")):
                found.append(_lora(ws, file))
    return [c for c in found if c is not None]


def _embedding(ws: Workspace, file: Path) -> Concept | None:
    from conceptlab.concepts.formats import load_embedding

    try:
        emb = load_embedding(file)
    except InputError:
        return None
    return Concept("embedding", ws.relative(file.parent), file, emb.token, emb.meta, _preview(ws, file))


def _lora(ws: Workspace, file: Path) -> Concept | None:
    from conceptlab.validation import safetensors_header

    try:
        meta = safetensors_header("lora", file).get("__metadata__", {}) or {}
        record = json.loads(meta.get("conceptlab", "{}"))
    except (InputError, ValueError):
        return None
    record = record if isinstance(record, dict) else {}
    # a DreamBooth LoRA's words to prompt with ('tuki broccoli'), as its metadata records them
    words = ", ".join(f"{i} {c}" for i, c in zip(record.get("subjects") or [], record.get("classes") or []))
    return Concept("lora", ws.relative(file.parent), file, words, record, _preview(ws, file))


def _preview(ws: Workspace, file: Path) -> Path | None:
    """The newest preview grid of the run that made `file`, or a mix's interpolation strip."""
    for folder in (file.parent, file.parent.parent):
        if folder == ws.root or ws.root not in folder.parents:
            break
        previews = sorted((folder / "previews").glob("step-*.png")) if (folder / "previews").is_dir() else []
        for candidate in (*reversed(previews), folder / "sweep.png", folder / "loss.png"):
            if candidate.is_file():
                return candidate
    return None


def find(ws: Workspace, name: str, kind: str | None = None) -> Concept:
    """The concept listed as `name`; an InputError names the choices when there is none."""
    concepts = list_concepts(ws)
    for c in concepts:
        if c.name == name and (kind is None or c.kind == kind):
            return c
    listed = ", ".join(c.name for c in concepts if kind is None or c.kind == kind)[:300] or "none yet"
    raise InputError(kind or "concept", name, "is not in the workspace's library", f"Choose one of: {listed}")


def delete(ws: Workspace, name: str) -> None:
    """Removes a concept's folder (the token's files; a run's checkpoints and previews stay)."""
    concept = find(ws, name)
    folder = ws.inside(concept.folder, "concept")
    runs, concepts = ws.root / "runs", ws.root / "concepts"
    if folder.parent != concepts and folder.parent.parent not in (runs, concepts):
        raise InputError("concept", name, "is not a concept folder", "Choose a concept from the library")
    shutil.rmtree(folder)


def convert(ws: Workspace, name: str, fmt: str, token: str = "") -> Path:
    """Writes the embedding `name` in format `fmt` into concepts/ (as `concepts convert` does); returns the file."""
    from dataclasses import replace

    from conceptlab.concepts.formats import _SUFFIX, FORMATS, load_embedding, safe_name, save_embedding
    from conceptlab.validation import choice

    choice("format", fmt, FORMATS)
    emb = load_embedding(find(ws, name, "embedding").file, argument="concept")
    if token:
        emb = replace(emb, token=check_token("token", token))
    folder = ws.folder("concepts", ws.unique_name("concepts", f"{safe_name(emb.token)}-{fmt}"))
    folder.mkdir(parents=True)
    return save_embedding(emb, folder / f"{safe_name(emb.token)}.{fmt}{_SUFFIX[fmt]}", fmt)


def import_file(ws: Workspace, path: str | Path, name: str) -> Concept:
    """Adds an uploaded embedding or LoRA through the CLI's safe loaders: a pickle that would run code, a
    damaged or foreign file is refused; an embedding is stored re-saved as safetensors, never as uploaded."""
    from conceptlab.concepts.formats import load_embedding, save_all_formats
    from conceptlab.concepts.lora import check_lora_values, lora_format

    check_name("name", name)
    path = Path(path)
    lora = False
    if path.suffix.lower() == ".safetensors":
        try:
            lora_format(path, "file")
            lora = True
        except InputError as e:
            if "embedding" not in e.problem:
                raise InputError("file", path.name, e.problem, e.fix) from None
    if lora:
        check_lora_values(path, "file")
        folder = ws.new_folder("concepts", name, "name")
        shutil.copyfile(path, folder / LORA)
        return _lora(ws, folder / LORA)
    try:
        emb = load_embedding(path, argument="file")
    except InputError as e:
        raise InputError("file", path.name, e.problem, e.fix) from None
    folder = ws.new_folder("concepts", name, "name")
    save_all_formats(emb, folder)
    return _embedding(ws, folder / EMBEDDING)
