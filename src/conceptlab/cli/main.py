"""Entry point: `conceptlab <command> ...`."""

from __future__ import annotations

import argparse
import sys

from conceptlab import __version__
from conceptlab.cli import classify, concepts, demo, edit, evaluate, generate, lora, report, train, world

COMMANDS = (generate, world, train, concepts, lora, edit, classify, evaluate, report, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conceptlab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"conceptlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from conceptlab.errors import ConceptlabError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ConceptlabError as e:
        print(f"conceptlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"conceptlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
