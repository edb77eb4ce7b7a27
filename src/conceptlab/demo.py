"""`conceptlab demo`: runs every capability on the shipped base model and writes an HTML report."""

from __future__ import annotations

import time
from pathlib import Path

from conceptlab.evaluation.report import Report
from conceptlab.generation.generate import GenerationConfig, run_generation
from conceptlab.imaging import make_grid
from conceptlab.models.loading import default_model, load_pipeline, shipped_base_model
from conceptlab.world import render, sample_spec

DEMO_PROMPTS = (
    "a sticker of a happy yellow emoji",
    "a sticker of an angry red apple on a beach",
    "a painting of a sad blue cat in the snowy mountains",
    "a sketch of a green star in love wearing sunglasses",
    "a sticker of a happy pink cloud holding a burger in a desert",
    "a sticker of a neutral purple fish with many flowers by a river",
)


def _model_for_demo(model: str | None):
    if model is None and not (shipped_base_model() / "model_index.json").exists():
        from conceptlab.models.tiny import build_pipeline

        return build_pipeline("tiny"), "tiny random pipeline (the base model is not shipped in this checkout)"
    return load_pipeline(model), model or default_model()


def world_section(report: Report, out: Path) -> None:
    report.heading("The sticker world")
    renders = [render(sample_spec(i, individual_rate=0.3)) for i in range(24)]
    path = out / "world.png"
    make_grid([r.image for r in renders], cols=8, scale=2).save(path)
    report.image(path, "24 random renders (seeds 0-23); each has labels and a caption")
    report.table([{"seed": i, "caption": r.caption} for i, r in enumerate(renders[:6])])


def generation_section(report: Report, out: Path, pipe, label: str, n: int, steps: int) -> None:
    report.heading("Generation")
    report.text(f"Model: {label}. {n} images per prompt, seeds 0..{n - 1}, {steps} steps, guidance 7.5.")
    for k, prompt in enumerate(DEMO_PROMPTS):
        folder = out / "generate" / f"prompt{k}"
        t0 = time.perf_counter()
        run_generation(pipe, GenerationConfig(prompt=prompt, n=n, steps=steps, grid=True), folder,
                       model=label, progress=False)
        report.image(folder / "grid.png", f"{prompt!r} ({time.perf_counter() - t0:.1f} s)")


def run_demo(out: str | Path = "demo-output", model: str | None = None, n: int = 8, steps: int = 30) -> Path:
    """Runs the demo into `out` and returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe, label = _model_for_demo(model)
    report = Report("conceptlab demo", out)
    world_section(report, out)
    generation_section(report, out, pipe, label, n, steps)
    return report.write()
