"""metrics.jsonl: one row per step with the loss the loop reports; a resumed run continues it, a new run restarts it."""

from __future__ import annotations

import json

from conceptlab.training.loop import TrainConfig, Trainer
from tests.training.test_loop import Quadratic


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_every_step_is_logged_with_the_loops_own_losses(tmp_path):
    result = Trainer(Quadratic(), TrainConfig(steps=5, lr=0.1), tmp_path).train()
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and all(r["steps"] == 5 for r in rows)
    assert [r["loss"] for r in rows] == result.losses and all(r["lr"] == 0.1 for r in rows)


def test_resume_drops_rows_past_the_checkpoint_and_a_new_run_starts_over(tmp_path):
    cfg = TrainConfig(steps=6, lr=0.1, checkpoint_every=3)
    first = Trainer(Quadratic(fail_at=5), cfg, tmp_path).train()  # Ctrl-C inside step 5: saved at step 4
    assert first.stopped == "interrupted" and [r["step"] for r in _rows(tmp_path)] == [1, 2, 3, 4]
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a row written after the checkpoint, then a cut line
        f.write(json.dumps({"step": 9, "loss": 0.0}) + "\n" + '{"step": 1')
    done = Trainer(Quadratic(), cfg, tmp_path).train(resume=True)
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in _rows(tmp_path)] == done.losses
    Trainer(Quadratic(), TrainConfig(steps=2, lr=0.1), tmp_path).train(overwrite=True)
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2]
