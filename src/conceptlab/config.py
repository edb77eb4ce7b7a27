"""Config dataclasses: defaults < config file < command-line flags; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

from conceptlab.errors import InputError


def dataclass_from_dict(cls, data: dict, where: str = "config"):
    """Builds dataclass `cls` from `data`, recursing into nested dataclasses; unknown keys raise."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(where, unknown[0], f"unknown key for {cls.__name__}",
                         f"Valid keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = dataclass_from_dict(hint, value, f"{where}.{key}")
        elif isinstance(value, list) and typing.get_origin(hint) is list and typing.get_args(hint) \
                and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            item = typing.get_args(hint)[0]
            value = [dataclass_from_dict(item, v, f"{where}.{key}[{i}]") if isinstance(v, dict) else v
                     for i, v in enumerate(value)]
        elif isinstance(value, list):
            value = _tuples(value) if typing.get_origin(hint) is tuple else value
        kwargs[key] = value
    return cls(**kwargs)


def _tuples(value):
    return tuple(_tuples(v) if isinstance(v, list) else v for v in value)


def load_config_file(path: str | Path) -> dict:
    """Reads a JSON (or TOML) config file into a dict, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("--config", str(path), "no such file", "Pass the path of a .json or .toml config file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise InputError("--config", str(path), f"cannot be parsed ({e})", "Fix the file's syntax") from None


def merge_overrides(base: dict, overrides: dict) -> dict:
    """`base` updated with the overrides that are not None (nested dicts merged key by key)."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            out[key] = merge_overrides(out.get(key, {}) or {}, value)
        else:
            out[key] = value
    return out
