"""Every case of the bad-input corpus ends in one clear line (exit 2) and leaves nothing behind."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from conceptlab.cli.main import main
from tests.badinput.cases import CASES
from tests.badinput.fixtures import MARKER, build_all


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory) -> Path:
    return build_all(tmp_path_factory.mktemp("bad-files"))


def _snapshot(root: Path) -> dict:
    """Every file's size and modification time (folders' own times move when a write probe comes and goes)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_xl_dir(tmp_path_factory) -> Path:
    from conceptlab.models.tiny import build_sdxl_pipeline

    path = tmp_path_factory.mktemp("tiny-sdxl")
    build_sdxl_pipeline().save_pretrained(path)
    return path


def _argv(template: str, files: Path, out: Path, model: Path, xl: Path) -> list[str]:
    text = (template.replace("{F}", str(files)).replace("{O}", str(out)).replace("{M}", str(model))
            .replace("{X}", str(xl)).replace("{I}", str(files / "imgs")))
    return shlex.split(text)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    return code, capsys.readouterr().err


def test_the_corpus_is_large_and_unique():
    templates = [t for t, _ in CASES]
    assert len(CASES) >= 150
    assert len(set(templates)) == len(templates), "a case is listed twice"


@pytest.mark.parametrize("template,fragment", CASES, ids=[t[:90] for t, _ in CASES])
def test_bad_input_is_refused_in_one_line(template, fragment, bad_files, tiny_dir, tiny_xl_dir, tmp_path, capsys):
    out = tmp_path / "out"
    before = _snapshot(bad_files)
    code, err = _run(_argv(template, bad_files, out, tiny_dir, tiny_xl_dir), capsys)
    assert code == 2, f"exit code {code}; stderr: {err[-800:]}"
    assert "Traceback" not in err and "internal error" not in err, err[-800:]
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert "error:" in last, err[-800:]
    assert fragment.lower() in last.lower(), f"{fragment!r} not named in: {last}"
    assert not out.exists(), f"the failed command left {sorted(p.name for p in out.iterdir())} in --out"
    assert _snapshot(bad_files) == before, "the command changed its input files"
    assert not (bad_files / MARKER).exists(), "a malicious pickle ran"
