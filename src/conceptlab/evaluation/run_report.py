"""`conceptlab report RUN_DIR`: one HTML page for whatever a run folder holds."""

from __future__ import annotations

import json
from pathlib import Path

from conceptlab.evaluation.report import Report

_IMAGES = (  # file, caption
    ("grid.png", "generated images"), ("loss.png", "training loss"), ("curves.png", "training curves"),
    ("confusion.png", "confusion matrix (rows: true class)"), ("samples.png", "judged samples"),
    ("sweep.png", "interpolation strip"),
)


def _table_from_metrics(report: Report, data: dict) -> None:
    if "per_class" in data:
        report.table([{"class": c, **{k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()}}
                      for c, m in data["per_class"].items()])
    flat = {k: v for k, v in data.items() if isinstance(v, (int, float, str))}
    if flat:
        report.table([flat])


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes OUT/index.html (default: RUN_DIR/index.html) from the images, metrics and logs found in the run
    (and one level down); images are linked, not copied."""
    from conceptlab.errors import InputError

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError("RUN_DIR", str(run), "is not a folder", "Pass the --out folder of a conceptlab command")
    report = Report(f"conceptlab report: {run.name}", Path(out) if out is not None else run)
    folders = [run] + sorted(p for p in run.iterdir() if p.is_dir() and not p.name.startswith((".", "checkpoints")))
    found = 0
    for folder in folders:
        parts = []
        for name, caption in _IMAGES:
            if (folder / name).is_file():
                parts.append((folder / name, caption))
        previews = sorted((folder / "previews").glob("*.png")) if (folder / "previews").is_dir() else []
        jsons = [f for f in ("metrics.json", "scores.json", "recognizability.json", "training.json")
                 if (folder / f).is_file()]
        if not (parts or previews or jsons):
            continue
        found += 1
        report.heading(str(folder.relative_to(run)) if folder != run else run.name)
        for path, caption in parts:
            report.image(path, caption, width=520)
        for path in previews:
            report.image(path, f"preview at {path.stem}", width=260)
        for name in jsons:
            data = json.loads((folder / name).read_text())
            report.text(name)
            if "accuracy" in data and isinstance(data["accuracy"], dict):
                report.table([{"group": g, **{k: round(v, 3) for k, v in acc.items()}}
                              for g, acc in data["accuracy"].items()])
            else:
                _table_from_metrics(report, data)
    if not found:
        raise InputError("RUN_DIR", str(run), "holds nothing conceptlab can report on",
                         "Pass the --out folder of generate, train, classify or evaluate")
    Path(report.folder).mkdir(parents=True, exist_ok=True)
    return report.write()
