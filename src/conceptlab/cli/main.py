"""conceptlab: teach a text-to-image diffusion model new concepts, generate and edit with them, measure them.

Run `conceptlab COMMAND --help` for a command's options. Every flag is accepted as --dash-case and
--snake_case; every command takes --config FILE (defaults < file < flags). Bad input stops with one line
that names the flag, the value and the fix (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from conceptlab import __version__
from conceptlab.cli import classify, concepts, demo, edit, evaluate, generate, lora, report, studio, train, world
from conceptlab.cli.common import HelpFormatter, Parser, apply_config_file

COMMANDS = (generate, world, train, concepts, lora, edit, classify, evaluate, report, demo, studio)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="conceptlab", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"conceptlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def _command_name(args) -> str:
    parts = [args.command] + [v for k, v in vars(args).items() if k.endswith("_command") and isinstance(v, str)]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    from conceptlab.errors import ConceptlabError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as e:  # argparse's own one-line refusals (exit 2) and --help/--version (exit 0)
        return e.code if isinstance(e.code, int) else 2
    name = _command_name(args)
    out, created = None, False
    try:
        if getattr(args, "config", None) and getattr(args, "_generic_config", False):
            args = apply_config_file(parser, args, argv)  # re-parses: what the file does not give is required
        out = Path(args.out) if isinstance(getattr(args, "out", None), str) and args.out else None
        created = out is not None and not out.exists()  # remove what a failed command made, never what was there
        return args.run(args) or 0
    except ConceptlabError as e:
        _remove_partial(out, created)
        print(f"conceptlab {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"conceptlab {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a disk that fills up or a folder that vanished while the command ran
        _remove_partial(out, created)
        where = f" ({e.filename})" if e.filename else ""
        print(f"conceptlab {name}: error: {e.strerror or e}{where}. Check the path, its permissions and free space",
              file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if os.environ.get("CONCEPTLAB_DEBUG"):
            raise
        _remove_partial(out, created)
        print(f"conceptlab {name}: internal error: {type(e).__name__}: {e}. This is a bug in conceptlab; run again "
              "with CONCEPTLAB_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 1


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parses argv; with --config, required options may come from the file, so they are checked after it."""
    if not any(a == "--config" or a.startswith(("--config=", "--config ")) for a in argv):
        return parser.parse_args(argv)
    relaxed = [a for leaf in _leaves(parser) for a in leaf._actions if a.required and a.option_strings]
    for action in relaxed:
        action.required = False
    args = parser.parse_args(argv)
    for action in relaxed:
        action.required = True
    return args if getattr(args, "_generic_config", False) else parser.parse_args(argv)


def _leaves(parser: argparse.ArgumentParser):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in action.choices.values():
            yield from _leaves(child)


def _remove_partial(out: Path | None, created: bool) -> None:
    """A failed command leaves nothing behind in an output folder it created (checkpoints excepted)."""
    if out is None or not created or not out.is_dir():
        return
    if (out / "checkpoints").is_dir():  # a training run that got somewhere: its checkpoints are the user's
        return
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
