import pytest
import torch

from conceptlab.training.loop import TrainConfig, Trainer, TrainingDiverged, _checkpoints


class Quadratic:
    """A toy method: fit a vector to a target; its loss can be made to fail at a chosen step."""

    def __init__(self, fail_at=None, fail_with=None):
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.calls, self.fail_at, self.fail_with, self.saved = 0, fail_at, fail_with, None

    def parameters(self):
        return [self.w]

    def loss(self, batch_size, generator):
        self.calls += 1
        if self.calls == self.fail_at:
            if self.fail_with == "nan":
                return self.w.sum() * float("nan")
            raise KeyboardInterrupt
        target = torch.randn(4, generator=generator)
        return ((self.w - target) ** 2).mean()

    def trainable_state(self):
        return {"w": self.w.detach().clone()}

    def load_trainable_state(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])

    def save_outputs(self, out, step, loss):
        self.saved = (step, loss)

    def preview(self, prompts, seed, steps):
        from PIL import Image

        return [Image.new("RGB", (8, 8)) for _ in prompts]


def test_nan_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path):
    m = Quadratic(fail_at=5, fail_with="nan")
    with pytest.raises(TrainingDiverged, match="step 5.*lower --lr"):
        Trainer(m, TrainConfig(steps=10, lr=0.1, checkpoint_every=2), tmp_path).train()
    assert [p.name for p in _checkpoints(tmp_path)] == ["step-000002", "step-000004"]
    assert m.saved is None


def test_ctrl_c_saves_then_resume_finishes_like_a_straight_run(tmp_path):
    straight = Quadratic()
    Trainer(straight, TrainConfig(steps=8, lr=0.1, lr_schedule="cosine", warmup_steps=2), tmp_path / "a").train()
    m = Quadratic(fail_at=4)
    cfg = TrainConfig(steps=8, lr=0.1, lr_schedule="cosine", warmup_steps=2)
    result = Trainer(m, cfg, tmp_path / "b").train()
    assert result.stopped == "interrupted" and result.steps == 3
    assert _checkpoints(tmp_path / "b")[-1].name == "step-000003"
    resumed = Quadratic()
    result = Trainer(resumed, cfg, tmp_path / "b").train(resume=True)
    assert result.steps == 8 and torch.equal(resumed.w, straight.w)
    assert resumed.saved[0] == 8 and (tmp_path / "b" / "loss.png").is_file()


def test_previews_and_checkpoint_rotation(tmp_path):
    cfg = TrainConfig(steps=6, lr=0.1, checkpoint_every=1, keep_checkpoints=2, preview_every=3,
                      preview_prompts=["a", "b"])
    Trainer(Quadratic(), cfg, tmp_path).train()
    assert [p.name for p in _checkpoints(tmp_path)] == ["step-000005", "step-000006"]
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["step-000003.png", "step-000006.png"]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


@pytest.mark.parametrize("change,flag", [({"steps": 0}, "--steps"), ({"lr": 0}, "--lr"),
                                          ({"lr_schedule": "wavy"}, "--lr-schedule"),
                                          ({"mixed_precision": "fp8"}, "--mixed-precision")])
def test_bad_settings(change, flag):
    from conceptlab.errors import InputError

    with pytest.raises(InputError, match=flag):
        TrainConfig(**change).check()


def test_scale_lr_multiplies_by_batch_and_accumulation(tmp_path):
    t = Trainer(Quadratic(), TrainConfig(lr=0.01, batch_size=4, gradient_accumulation=2, scale_lr=True), tmp_path)
    assert t.opt.param_groups[0]["lr"] == pytest.approx(0.08)


def test_the_loops_optimizer_is_fused_adamw_and_updates_as_torchs_default_adamw():
    from conceptlab.training.loop import make_optimizer

    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(7, 5, generator=g, requires_grad=True), torch.randn(3, generator=g, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    start = [p.detach().clone() for p in ours]
    opt = make_optimizer(ours, 1e-2, 1e-2)
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=1e-2, foreach=False)
    assert opt.defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for group, o in ((ours, opt), (ref, ref_opt)):
            for p, grad in zip(group, grads):
                p.grad = grad.clone()
            o.step()
    for a, b, s in zip(ours, ref, start):
        assert torch.allclose(a, b, atol=1e-6) and (a - s).abs().max() > 1e-3
    ints = [torch.zeros(2, dtype=torch.int64)]  # no fused kernel for these: plain AdamW instead of an error
    assert make_optimizer(ints, 1e-3, 0.0).defaults["fused"] in (None, False)
