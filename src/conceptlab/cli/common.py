"""Shared CLI helpers: commands with help and defaults, flags in both spellings, `--config` for every command."""

from __future__ import annotations

import argparse

from conceptlab.errors import InputError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump), naming the flag; exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help, unless the help already says it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def add_command(sub, name: str, *, help: str, run, description: str | None = None,
                config: bool = True) -> argparse.ArgumentParser:
    """A subcommand whose parser shows defaults; `config=True` gives it a generic `--config FILE` whose keys
    are the command's option names (defaults < config file < flags)."""
    p = sub.add_parser(name, help=help, description=description or help[:1].upper() + help[1:] + ".",
                       formatter_class=HelpFormatter)
    p.set_defaults(run=run, _leaf=p, _generic_config=config)
    if config:
        flag(p, "--config", default=None, metavar="FILE",
             help="JSON or TOML file of this command's options by name, e.g. {\"steps\": 20}; flags override it")
    return p


def add_group(sub, name: str, *, help: str, dest: str) -> argparse._SubParsersAction:
    """A command with actions of its own (`conceptlab train ti`)."""
    p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", formatter_class=HelpFormatter)
    return p.add_subparsers(dest=dest, required=True, metavar="ACTION")


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
    flag(parser, "--model-config", default=None,
         help="for a single-file --model: a diffusers folder (or cached hub id) of the same architecture whose "
              "configs describe it")
    flag(parser, "--device", default=None, help="torch device, e.g. cuda or cpu (default: cpu, or the accelerate "
                                                "process's)")
    flag(parser, "--dtype", default=None, choices=("float32", "float16", "bfloat16"),
         help="weights' dtype (default: as saved)")


def load_model(args):
    """The pipeline add_model_flags' options name (--model, --model-config, --device, --dtype)."""
    from conceptlab.models.loading import load_pipeline

    return load_pipeline(args.model, device=args.device, dtype=args.dtype, config=args.model_config)


# ------------------------------------------------------------------------------------- generic --config


def apply_config_file(parser: argparse.ArgumentParser, args: argparse.Namespace, argv) -> argparse.Namespace:
    """Re-parses `argv` with the command's defaults taken from `args.config` (defaults < file < flags)."""
    from conceptlab.config import load_config_file

    leaf = args._leaf
    data = load_config_file(args.config)
    actions = {a.dest: a for a in leaf._actions}
    known = sorted(d for d in actions if d not in ("help", "config", "_leaf", "run", "_generic_config"))
    values = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest in ("help", "config"):
            raise InputError(f"--config {args.config}: {key}", value, "is not an option of this command",
                             f"Valid keys: {', '.join(known)}")
        values[dest] = _config_value(action, value, f"--config {args.config}: {key}")
        action.required = False  # given by the file; a flag may still override it
    leaf.set_defaults(**values)
    return parser.parse_args(argv)


def _config_value(action: argparse.Action, value, where: str):
    """A config-file value converted and checked exactly as the flag's own text would be."""
    if isinstance(action, argparse._StoreConstAction | argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise InputError(where, value, "must be true or false", "Write true or false")
        return action.const if value else action.default
    many = action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction | argparse._ExtendAction)
    items = value if isinstance(value, list) else None
    if many and items is None:
        raise InputError(where, value, "must be a list", f'Write it as ["{value}"]')
    if not many and isinstance(value, list | dict):
        raise InputError(where, value, "must be a single value", "Write one number or string")
    converted = [_convert(action, v, where) for v in (items if many else [value])]
    return converted if many else converted[0]


def _convert(action: argparse.Action, value, where: str):
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(where, value, "has the wrong type", "Write a number or a string")
    if action.type is not None:
        try:
            value = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise InputError(where, value, str(e) or "is not valid", "See the command's --help") from None
    elif not isinstance(value, str):
        raise InputError(where, value, "must be text", "Write it as a string")
    if action.choices is not None and value not in action.choices:
        raise InputError(where, value, "is not a known choice", f"Use one of: {', '.join(map(str, action.choices))}")
    return value
