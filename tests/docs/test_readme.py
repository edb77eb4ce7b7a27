"""The README's examples run (at tiny sizes) and the README stays a front page."""

import re

from tests.docs.conftest import report
from tests.docs.examples import REPO, run_page

README = REPO / "README.md"


def test_readme_examples_run(example_dir):
    """Every command and Python block of the README, in order, in one folder (see tests/docs/examples.py)."""
    run = run_page(README, example_dir)
    report(run)
    assert run.ran, "the README has no examples"


def test_readme_is_a_front_page():
    """At most 150 lines, and no measured results: those live in docs/results/, generated from data."""
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/ (limit 150)"
    percents = [f"line {k}: {line.strip()}" for k, line in enumerate(lines, 1) if re.search(r"\d\s*%", line)]
    assert not percents, "README.md states results; put them in docs/results/data/*.json instead:\n" + "\n".join(percents)
