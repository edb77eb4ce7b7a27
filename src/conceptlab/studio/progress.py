"""A running job's progress, read from what the training process writes: its log and its run folder.

The loop writes no step log of its own yet, so the losses come from two places: every intact checkpoint's
loop.json holds all losses up to its step, and the log holds the progress bar's lines after it
(`train:  40%|...| 4/10 [00:01<00:02, 2.0it/s, loss=0.1234, lr=5.00e-03]`, one per step). When the loop
writes a JSONL of steps and losses (`metrics.jsonl` in the run folder), that file is read instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

BAR = re.compile(r"train:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[([0-9:]+)<([0-9:?]+)(?:[^\]]*?loss=([-+0-9.eEnaif]+))?")
STEP_FOLDER = re.compile(r"step-(\d+)")
METRICS = "metrics.jsonl"  # the loop's step log, when it writes one: {"step", "steps", "loss", "lr", "time"} per line


@dataclass
class Progress:
    """Where a run stands: step of total, seconds left (None: unknown), losses by step, newest preview."""

    step: int = 0
    total: int | None = None
    eta_seconds: float | None = None
    losses: dict[int, float] = field(default_factory=dict)
    preview: Path | None = None
    checkpoint: int | None = None  # the newest checkpoint's step

    def line(self) -> str:
        if self.total is None:
            return "waiting for the first step"
        eta = "" if self.eta_seconds is None else f", about {_clock(self.eta_seconds)} left"
        last = f", loss {self.losses[max(self.losses)]:.4f}" if self.losses else ""
        saved = f", checkpoint at step {self.checkpoint}" if self.checkpoint is not None else ""
        return f"step {self.step} of {self.total}{eta}{last}{saved}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _seconds(text: str) -> float | None:
    if "?" in text:
        return None
    total = 0.0
    for part in text.split(":"):
        total = total * 60 + float(part)
    return total


def read_progress(run_dir: str | Path, log: str | Path) -> Progress:
    """The progress of the run in `run_dir` whose output goes to `log` (both may not exist yet)."""
    run_dir, progress = Path(run_dir), Progress()
    checkpoint = _newest_checkpoint(run_dir)
    if checkpoint is not None:
        progress.checkpoint, losses, total = checkpoint
        progress.losses.update({k + 1: v for k, v in enumerate(losses)})
        progress.step, progress.total = len(losses), total
    metrics = run_dir / METRICS
    if metrics.is_file():
        _read_metrics(metrics, progress)
    else:
        _read_bar(Path(log), progress)
    previews = sorted((run_dir / "previews").glob("step-*.png")) if (run_dir / "previews").is_dir() else []
    progress.preview = previews[-1] if previews else None
    return progress


def _newest_checkpoint(run_dir: Path) -> tuple[int, list[float], int | None] | None:
    """(step, losses, total steps) of the newest checkpoint whose loop.json reads; None without one."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := STEP_FOLDER.fullmatch(p.name))), reverse=True)
    for step, folder in found:
        try:
            loop = json.loads((folder / "loop.json").read_text())
            return step, [float(x) for x in loop["losses"]], loop.get("steps")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _read_bar(log: Path, progress: Progress) -> None:
    """Steps, total, ETA and losses from the progress bar's lines of the latest segment of the log."""
    if not log.is_file():
        return
    text = log.read_bytes().decode(errors="replace")
    start = text.rfind("\n[")  # each start or resume writes '[time] $ command' first: read only the latest
    for match in BAR.finditer(text[max(start, 0):]):
        step, total, _, left, loss = match.groups()
        progress.step, progress.total = int(step), int(total)
        progress.eta_seconds = _seconds(left)
        if loss is not None and int(step) > 0:
            try:
                progress.losses[int(step)] = float(loss)
            except ValueError:
                pass


def _read_metrics(path: Path, progress: Progress) -> None:
    """Losses by step from the loop's JSONL; the ETA from the pace of its last rows' "time" stamps."""
    timed = []  # (step, unix time) of rows that have one
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            step = int(row["step"])
            progress.losses[step] = float(row["loss"])
            progress.step = max(progress.step, step)
            progress.total = int(row.get("steps", progress.total or 0)) or progress.total
            if isinstance(row.get("time"), int | float):
                timed.append((step, float(row["time"])))
        except (ValueError, KeyError, TypeError):
            continue
    recent = timed[-20:]
    if len(recent) >= 2 and progress.total and recent[-1][0] > recent[0][0]:
        pace = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])  # seconds per step
        progress.eta_seconds = max(0.0, pace * (progress.total - progress.step))


def loss_rows(progress: Progress) -> list[dict]:
    """The losses as rows for a line plot, step ascending."""
    return [{"step": step, "loss": loss} for step, loss in sorted(progress.losses.items())]
