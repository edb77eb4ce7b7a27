import numpy as np
import pytest
import torch

from conceptlab.evaluation.judge import Judge, JudgeConfig, JudgeNet, augment, load_judge, shipped_judge, to_batch
from conceptlab.world import ATTRIBUTES, render, sample_spec

shipped = pytest.mark.skipif(not (shipped_judge() / "judge.safetensors").is_file(), reason="no shipped judge")


@shipped
def test_shipped_judge_reads_fresh_renders():
    """Renders the judge never saw (seeds far from its training seeds): every head at least 95% on 300."""
    judge = load_judge()
    renders = [render(sample_spec(7_000_000 + i, individual_rate=0.3)) for i in range(300)]
    predicted = judge.predict([r.image for r in renders])
    for head in ATTRIBUTES:
        acc = np.mean([p == r.labels[head] for p, r in zip(predicted[head], renders)])
        assert acc >= 0.95, f"{head}: {acc:.3f}"


@shipped
def test_heads_and_labels_match_the_world_metadata():
    judge = load_judge()
    assert judge.cfg.heads == {k: list(v) for k, v in ATTRIBUTES.items()}
    out = judge.predict([render(sample_spec(1)).image])
    assert set(out) == set(ATTRIBUTES) and all(out[k][0] in ATTRIBUTES[k] for k in out)


def test_save_and_load_round_trip(tmp_path):
    cfg = JudgeConfig(widths=(4, 8), convs=(1, 1))
    judge = Judge(JudgeNet(cfg), cfg)
    judge.save(tmp_path, {"note": "test"})
    again = load_judge(tmp_path)
    x = to_batch([render(sample_spec(i)).image for i in range(3)])
    with torch.no_grad():
        a, b = judge.net(x), again.net(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_augment_keeps_range_and_shape():
    x = torch.rand(5, 3, 64, 64) * 2 - 1
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.equal(x, y)


def test_empty_input():
    cfg = JudgeConfig(widths=(4, 8), convs=(1, 1))
    assert Judge(JudgeNet(cfg), cfg).predict([]) == {k: [] for k in ATTRIBUTES}


def test_training_on_the_shared_loop_paused_and_resumed_equals_a_straight_run(tmp_path):
    from conceptlab.evaluation.judge import render_dataset, train_judge
    from conceptlab.training.loop import TrainingStopped

    cfg = JudgeConfig(widths=(4, 8), convs=(1, 1), images=16, steps=6, batch=4)
    images, labels = render_dataset(cfg)
    straight = train_judge(cfg, images, labels, tmp_path / "a")
    with pytest.raises(TrainingStopped, match="paused at step 3"):
        train_judge(cfg, images, labels, tmp_path / "b", stop_at=3)
    resumed = train_judge(cfg, images, labels, tmp_path / "b", resume=True)
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # BatchNorm's running statistics too
    assert (tmp_path / "b" / "loss.png").is_file() and not resumed.net.training
    again = train_judge(cfg, images, labels, tmp_path / "b")  # without resume: starts over, the same run again
    assert all(torch.equal(a[k], v) for k, v in again.net.state_dict().items())
