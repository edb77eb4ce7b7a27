"""--report-to: accelerate's trackers log what metrics.jsonl holds, read back with TensorBoard's own reader."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from conceptlab.cli.main import main
from conceptlab.errors import InputError
from conceptlab.training.loop import TrainConfig

pytest.importorskip("tensorboard", reason="the [tensorboard] extra (pip install -e '.[dev]') is not installed")


def _scalars(logdir):
    """{tag: [(step, value)]} of every event file under `logdir`, read by TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no event files under {logdir}"
    out: dict[str, list] = {}
    for folder in sorted({f.parent for f in files}):
        acc = EventAccumulator(str(folder))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_ti_run_logs_the_losses_and_rates_of_metrics_jsonl_to_tensorboard(tiny_dir, concept_dirs, tmp_path, capsys):
    out = tmp_path / "ti"
    code = main(["train", "ti", "--model", str(tiny_dir), "--concept", f"<b>={concept_dirs / 'broccoli'},init=broccoli",
                 "--steps", "4", "--batch-size", "1", "--lr-schedule", "linear", "--report-to", "tensorboard",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(out / "logs")
    # TensorBoard stores float32: the values are metrics.jsonl's, rounded once to float32
    assert scalars["loss"] == [(r["step"], float(np.float32(r["loss"]))) for r in rows]
    assert scalars["lr"] == [(r["step"], float(np.float32(r["lr"]))) for r in rows]
    assert [s for s, _ in scalars["lr"]] == [1, 2, 3, 4] and len({v for _, v in scalars["lr"]}) == 4  # linear decay
    training = json.loads((out / "training.json").read_text())
    assert training["train"]["report_to"] == "tensorboard"


class _Scores:
    """An evaluator whose k-th validation scores 'a' = 0.25 k, whatever the images."""

    calls = 0

    def computes(self, cases):
        return ["a"]

    def score(self, images, cases):
        self.calls += 1
        return {"a": 0.25 * self.calls}


def test_validation_scores_reach_the_tracker_at_their_steps(tiny_pipe, concept_dirs, tmp_path):
    """The checkpoint-selection hook's scores go through Trainer.log beside the loss."""
    import copy

    from conceptlab.evaluation.prompts import PromptCase
    from conceptlab.training.loop import Trainer
    from conceptlab.training.selection import CheckpointSelection, SelectionConfig
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig

    cfg = TextualInversionConfig(concepts=[ConceptConfig("<v>", str(concept_dirs / "emoji"), init="emoji")],
                                 train=TrainConfig(steps=3, batch_size=1, report_to="tensorboard"))
    method = TextualInversion(copy.deepcopy(tiny_pipe), cfg)
    cases = [PromptCase("a sticker of a happy <v>", {"emotion": "happy"}, 0, "v")]
    selection = CheckpointSelection([_Scores()], cases, SelectionConfig({"a": 2.0}, every=2, steps=2))
    Trainer(method, cfg.train, tmp_path, hooks=[selection], progress=False).train()
    scalars = _scalars(tmp_path / "logs")
    assert scalars["validation/a"] == [(2, 0.25), (3, 0.5)] and scalars["validation/score"] == [(2, 0.5), (3, 1.0)]
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3]


def test_missing_tracker_packages_are_refused_in_one_line_naming_the_flag(monkeypatch, tiny_dir, concept_dirs,
                                                                           tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the package were not installed
    with pytest.raises(InputError, match=r"--report-to.*tensorboard.*pip install tensorboard"):
        TrainConfig(report_to="tensorboard").check()
    if importlib.util.find_spec("wandb") is None:  # not installed here: the real missing-package path
        with pytest.raises(InputError, match=r"--report-to.*wandb.*pip install wandb"):
            TrainConfig(report_to="wandb").check()
    with pytest.raises(InputError, match=r"--report-to.*unknown tracker"):
        TrainConfig(report_to="mlflow").check()
    code = main(["train", "ti", "--model", str(tiny_dir), "--concept", f"<b>={concept_dirs / 'broccoli'}",
                 "--report-to", "tensorboard", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--report-to" in err and "pip install tensorboard" in err
    assert not (tmp_path / "o" / "checkpoints").exists()  # refused before any training


def test_a_resumed_run_hides_the_events_logged_after_its_checkpoint(tiny_pipe, concept_dirs, tmp_path):
    """A run stopped past its last checkpoint logged steps that the resumed run logs again: TensorBoard's
    purge_step hides the stale ones, as metrics.jsonl drops their rows."""
    import copy
    import shutil

    from conceptlab.training.loop import Trainer
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig

    def run(resume: bool):
        cfg = TextualInversionConfig(concepts=[ConceptConfig("<v>", str(concept_dirs / "emoji"), init="emoji")],
                                     train=TrainConfig(steps=4, batch_size=1, checkpoint_every=2,
                                                       report_to="tensorboard"))
        Trainer(TextualInversion(copy.deepcopy(tiny_pipe), cfg), cfg.train, tmp_path, progress=False).train(resume=resume)

    run(False)
    first = _scalars(tmp_path / "logs")["loss"]
    shutil.rmtree(tmp_path / "checkpoints" / "step-000004")  # as if killed between steps 2 and 4's checkpoint
    run(True)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert _scalars(tmp_path / "logs")["loss"] == [(r["step"], float(np.float32(r["loss"]))) for r in rows] == first
