"""docs/: every page's examples run (slow tier: `make test-docs`); links and code blocks are checked always."""

import re

import pytest

from tests.docs.conftest import report
from tests.docs.examples import REPO, blocks, check_block, run_page

DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _runnable(page):
    return any(b.language in ("bash", "python") or b.file for b in blocks(page.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page, example_dir):
    run = run_page(page, example_dir)
    report(run)


@pytest.mark.parametrize("page", [REPO / "README.md", REPO / "CHANGELOG.md", *PAGES],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_blocks_and_links(page):
    """Every code block is one the runner knows; every relative link and image points at a file."""
    text = page.read_text()
    for block in blocks(text):
        check_block(str(page.relative_to(REPO)), block)
    outside = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are not links
    broken = []
    for target in LINK.findall(outside):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_every_guide_exists():
    expected = ["index.md", "getting-started.md"] + [f"guides/{g}.md" for g in (
        "textual-inversion", "dreambooth-lora", "prompt-to-prompt", "real-image-editing", "evaluation",
        "file-formats", "configs", "multi-process-and-gpu")] + [f"concepts/{c}.md" for c in (
        "sticker-world", "base-model", "judge", "training-loop", "attention-processor")] + [
        "reference/cli.md", "reference/api.md", "results/index.md"]
    missing = [p for p in expected if not (DOCS / p).is_file()]
    assert not missing, f"missing docs pages: {missing}"


def test_images_stay_small():
    """The pictures of these pages (docs/*.png and docs/images/*.png) stay small enough for a repository."""
    images = [*DOCS.glob("*.png"), *(DOCS / "images").glob("*.png")]
    total = sum(p.stat().st_size for p in images)
    assert total < 1.6e6, f"the docs' pictures take {total / 1e6:.2f} MB; keep them under ~1.5 MB"
