"""Config dataclasses: defaults < config file < command-line flags; unknown keys and wrong types are errors."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from conceptlab.errors import InputError
from conceptlab.validation import check_type, read_json_object


def dataclass_from_dict(cls, data: dict, where: str = "config"):
    """Builds dataclass `cls` from `data`, recursing into nested dataclasses; unknown keys, missing required
    keys and values of the wrong type raise an InputError naming the key."""
    if not isinstance(data, dict):
        raise InputError(where, data, f"must be an object of {cls.__name__} settings",
                         'Write it as {"key": value, ...}')
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", data[unknown[0]], f"is not a {cls.__name__} setting",
                         f"Valid keys: {', '.join(sorted(fields))}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where}.{missing[0]}", None, "is required", f"Add {missing[0]!r} to {where}")
    return cls(**{key: _field_value(hints[key], value, f"{where}.{key}") for key, value in data.items()})


def _field_value(hint, value, where: str):
    """One field: nested dataclasses (also inside lists) are built, everything else is type-checked."""
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, value, where)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list):
            raise InputError(where, value, f"must be a list of {args[0].__name__} objects", "Write it as [{...}, ...]")
        return [dataclass_from_dict(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    value = check_type(where, value, hint)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return _tuples(value)
    return value


def _tuples(value):
    return tuple(_tuples(v) if isinstance(v, list) else v for v in value)


def load_config_file(path: str | Path, argument: str = "--config") -> dict:
    """Reads a JSON (or TOML) config file into a dict, with an error that names the file."""
    path = Path(path)
    if path.suffix != ".toml":
        return read_json_object(argument, path)
    from conceptlab.validation import input_file

    input_file(argument, path, ".json or .toml config file")
    import tomllib

    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(argument, str(path), f"cannot be parsed ({e})", "Fix the file's syntax") from None


def merge_overrides(base: dict, overrides: dict) -> dict:
    """`base` updated with the overrides that are not None (nested dicts merged key by key)."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict | None):
            out[key] = merge_overrides(out.get(key) or {}, value)
        else:
            out[key] = value
    return out
