"""Fixtures for running the docs' examples."""

import os
import warnings

import pytest

from tests.docs.examples import PageRun


class DocsExampleSkipped(UserWarning):
    """A docs example line that was not run (it ends in `# needs: ...`); its command was parsed."""


def report(run: PageRun) -> None:
    """Prints what ran (shown with `pytest -s` or on failure) and warns once per skipped line."""
    print(f"\n{run.page.name}: {len(run.ran)} examples ran in {run.seconds:.1f} s")
    for line in run.ran:
        print("  ran     " + line)
    for line in run.skipped:
        print("  skipped " + line)
        warnings.warn(DocsExampleSkipped(f"not run: {line}"), stacklevel=2)


@pytest.fixture
def example_dir(tmp_path, monkeypatch):
    """A fresh working folder for one page; HF_HUB_OFFLINE stays set, so nothing is downloaded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert os.getcwd() == str(tmp_path)
    return tmp_path
