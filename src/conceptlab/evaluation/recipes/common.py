"""What every recipe shares: reading a run folder, the output-folder rule, the judge, bars and the result files.

The output-folder rule: a recipe never writes into the run it measures. OUT defaults to RUN-eval (a sibling
folder) and may not be RUN or anything inside it.
"""

from __future__ import annotations

import datetime
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from conceptlab.errors import InputError

# The emotions the sticker world draws on a face; every recipe asks for these four.
EMOTIONS = ("happy", "sad", "angry", "in love")


@dataclass
class Bar:
    """A stated bar a number must reach: `value >= floor` (or `<= ceiling`), with where the bar comes from."""

    name: str  # what is measured, e.g. "identity judged right"
    value: float | None
    floor: float | None = None  # pass when value >= floor (give a floor or a ceiling, not both)
    ceiling: float | None = None  # pass when value <= ceiling
    why: str = ""  # where the bar comes from
    n: int | None = None  # images (or cases) behind the value
    unit: str = "share"  # "share" (printed as %) or "dB"

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return (self.floor is None or self.value >= self.floor) and (self.ceiling is None or self.value <= self.ceiling)

    def line(self) -> str:
        """'identity judged right 6% (of 16) is below the bar >= 90% (the README's floor)'."""
        fmt = (lambda x: f"{100 * x:.0f}%") if self.unit == "share" else (lambda x: f"{x:.1f} {self.unit}")  # noqa: E731
        value = "not measured" if self.value is None else fmt(self.value)
        of = f" (of {self.n})" if self.n else ""
        bar = f">= {fmt(self.floor)}" if self.floor is not None else f"<= {fmt(self.ceiling)}"
        verdict = "meets" if self.passed else "is below" if self.floor is not None else "is above"
        why = f" ({self.why})" if self.why else ""
        return f"{self.name} {value}{of} {verdict} the bar {bar}{why}"

    def record(self) -> dict:
        return {**asdict(self), "passed": self.passed, "line": self.line()}


def verdict(bars: list[Bar]) -> str:
    """'PASS' when every bar is met, else 'BELOW THE BAR'."""
    return "PASS" if bars and all(b.passed for b in bars) else "BELOW THE BAR"


# ----------------------------------------------------------------------------------------------- runs


def read_training_record(run: str | Path, kind: str, key: str, fix: str) -> dict:
    """The config a `conceptlab train` run stored in RUN/training.json; InputError unless it is a `kind` run.

    `key`: the config field every run of that kind has ("concepts", "subjects")."""
    run = Path(run)
    if not run.is_dir():
        raise InputError("RUN", str(run), "is not a folder", fix)
    path = run / "training.json"
    if not path.is_file():
        raise InputError("RUN", str(run), "has no training.json, so it is not a finished training run", fix)
    try:
        config = json.loads(path.read_text()).get("config") or {}
    except (json.JSONDecodeError, AttributeError):
        raise InputError("RUN", str(path), "is not a JSON object", fix) from None
    if not config.get(key):
        raise InputError("RUN", str(run), f"is not a {kind} run (its training.json names no {key})", fix)
    return config


def output_folder(run: str | Path, out: str | Path | None) -> Path:
    """OUT, or RUN-eval when it is None; never RUN itself or a folder inside it."""
    run = Path(run)
    out = Path(out) if out else run.with_name(run.name + "-eval")
    out_abs, run_abs = out.resolve(), run.resolve()
    if out_abs == run_abs or run_abs in out_abs.parents:
        raise InputError("--out", str(out), f"is inside the run folder {run}, and evaluate never writes into its input",
                         f"Pass another --out, or leave it out to write to {run.name}-eval")
    if out.exists() and not out.is_dir():
        raise InputError("--out", str(out), "is a file", "Pass a folder path (it is created if missing)")
    return out


def load_judge_checked(path: str | Path | None = None, argument: str = "--judge"):
    """The sticker-world judge (the shipped one when `path` is None), with an error that says how to get one."""
    from conceptlab.evaluation.judge import load_judge, shipped_judge

    folder = Path(path) if path else shipped_judge()
    file = folder / "judge.safetensors" if folder.is_dir() or not folder.suffix else folder
    if not file.is_file():
        where = "the shipped judge's weights are missing from this checkout" if path is None else \
            "holds no judge.safetensors"
        raise InputError(argument, str(folder), where,
                         "Train a judge with `python scripts/train_judge.py JUDGE_DIR` and pass --judge JUDGE_DIR")
    return load_judge(file)


def model_of(config: dict, model: str | None) -> str:
    """The model a run was trained from (its record), unless `model` overrides it; the shipped one if neither."""
    from conceptlab.models.loading import default_model

    return str(model or config.get("model") or default_model())


# ----------------------------------------------------------------------------------------------- results


def result_header(recipe: str, run: Path, model: str, judge: str | None, settings: dict) -> dict:
    """What every result JSON opens with: what was measured, on what, when, with which settings and command."""
    from conceptlab import __version__

    return {"recipe": recipe, "run": str(run), "model": model, "judge": judge or "shipped",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "",
            "settings": settings, "conceptlab_version": __version__}


def write_result(out: Path, result: dict, grid, bars: list[Bar], title: str) -> Path:
    """Writes OUT/scores.json (the numbers and verdicts), OUT/grid.png and OUT/index.html; returns scores.json."""
    from conceptlab.evaluation.report import Report
    from conceptlab.io import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    result["bars"] = [b.record() for b in bars]
    result["verdict"] = verdict(bars)
    grid.save(out / "grid.png")
    path = atomic_write_json(result, out / "scores.json")
    report = Report(title, out)
    report.text(f"{result['verdict']}: " + "; ".join(b.line() for b in bars))
    report.image(out / "grid.png", result.get("grid_caption", ""))
    report.code(json.dumps(_without_rows(result), indent=1)[:8000])
    report.write()
    return path


def _without_rows(obj):
    """The numbers without the per-image rows (they stay in scores.json)."""
    if isinstance(obj, dict):
        return {k: _without_rows(v) for k, v in obj.items() if k not in ("rows", "bars")}
    return obj
