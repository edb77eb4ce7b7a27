"""The generated docs match what scripts/docs.py writes now, so a changed flag or docstring updates them."""

import importlib.util

import pytest

from tests.docs.examples import REPO


@pytest.fixture(scope="module")
def docs_script():
    spec = importlib.util.spec_from_file_location("docs_script", REPO / "scripts" / "docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_current(path, text, command):
    assert path.exists(), f"{path.relative_to(REPO)} is missing; run `{command}`"
    assert path.read_text() == text, f"{path.relative_to(REPO)} is stale; run `{command}` and commit the result"


def test_cli_reference_is_current(docs_script):
    _assert_current(docs_script.CLI_MD, docs_script.render_cli(), "python scripts/docs.py cli")


def test_api_reference_is_current(docs_script):
    _assert_current(docs_script.API_MD, docs_script.render_api(), "python scripts/docs.py api")


def test_results_pages_are_current(docs_script):
    for path, text in docs_script.render_results().items():
        _assert_current(path, text, "python scripts/docs.py results")


def test_results_records_say_where_they_come_from(docs_script):
    """Each record has date, model, seeds, sample size, command and source; every table row names a record."""
    problems = docs_script.check_results(docs_script.load_results())
    assert not problems, "\n".join(problems)


def test_cli_reference_lists_every_command(docs_script):
    text = docs_script.CLI_MD.read_text()
    for name in ("generate", "world export", "train ti", "train dreambooth", "edit", "invert", "evaluate prompts"):
        assert f"`conceptlab {name}`" in text
