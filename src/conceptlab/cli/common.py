"""Shared CLI helpers: flags in both --dash-case and --snake_case, model flags, error reporting."""

from __future__ import annotations

import argparse


def flag(parser: argparse.ArgumentParser, *names: str, **kwargs):
    """Adds an option that also answers to its underscore spelling (--num-processes and --num_processes)."""
    spellings = list(names)
    for name in names:
        if name.startswith("--") and "-" in name[2:]:
            spellings.append("--" + name[2:].replace("-", "_"))
    return parser.add_argument(*spellings, **kwargs)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    flag(parser, "--model", default=None,
         help="hub id, diffusers folder or .safetensors/.ckpt file (default: the shipped sticker base model)")
    flag(parser, "--device", default=None, help="torch device (default: cpu, or the accelerate process's)")
    flag(parser, "--dtype", default=None, help="float32, float16 or bfloat16 (default: as saved)")


def model_label(model: str | None) -> str:
    from conceptlab.models.loading import default_model

    return model or default_model()
