"""The CLI's conventions hold for every command: help text with defaults, --config, one-line errors."""

from __future__ import annotations

import argparse
import json

import pytest

from conceptlab.cli.main import build_parser, main


def _leaves(parser: argparse.ArgumentParser, prefix=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, prefix + (name,))


LEAVES = list(_leaves(build_parser()))


def test_there_are_many_commands():
    assert len(LEAVES) >= 15


@pytest.mark.parametrize("name,parser", LEAVES, ids=[" ".join(n) for n, _ in LEAVES])
def test_every_option_has_help_and_takes_config(name, parser):
    missing = [a.dest for a in parser._actions if a.dest != "help" and not (a.help or "").strip()]
    assert not missing, f"{' '.join(name)}: options without help text: {missing}"
    assert any("--config" in a.option_strings for a in parser._actions), f"{' '.join(name)} has no --config"


def test_help_shows_defaults(capsys):
    assert main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 30)" in out and "(default: 7.5)" in out


def test_config_file_sits_between_defaults_and_flags(tiny_dir, tmp_path):
    """defaults < config file < flags: the file sets steps and n, a flag overrides n."""
    cfg = tmp_path / "gen.json"
    cfg.write_text(json.dumps({"steps": 2, "n": 3, "prompt": "a happy star", "model": str(tiny_dir)}))
    out = tmp_path / "gen"
    assert main(["generate", "--config", str(cfg), "-n", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["steps"] == 2 and rows[0]["prompt"] == "a happy star"


def test_toml_config_is_read(tmp_path, capsys):
    cfg = tmp_path / "gen.toml"
    cfg.write_text('steps = 0\nprompt = "a star"\n')
    assert main(["generate", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "steps" in capsys.readouterr().err


def test_argparse_errors_are_one_line(capsys):
    assert main(["generate", "--prompt", "x", "--steps", "0", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--steps" in err and "usage:" not in err
