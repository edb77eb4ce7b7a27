"""Safe file I/O: atomic writes (write, then rename) and pickle-free loading."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _tmp_beside(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Writes `data` to `path` so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj, path: str | Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def atomic_save_torch(obj, path: str | Path) -> Path:
    """torch.save through a temporary file and a rename; `obj` must hold only tensors and plain types."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_torch_checkpoint(path: str | Path):
    """Loads a checkpoint written by atomic_save_torch, refusing anything but tensors and plain types."""
    return torch.load(path, map_location="cpu", weights_only=True)
