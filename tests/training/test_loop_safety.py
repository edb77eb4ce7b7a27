"""The loop's safety: runs never mix, checkpoints verify and fall back, pruning goes by step number, signals are exact."""

import json
import os
import shutil
import signal

import pytest
import torch

from conceptlab.errors import InputError
from conceptlab.training.loop import MANIFEST, TrainConfig, Trainer, TrainingDiverged, _checkpoints, _write_manifest


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared 2-core machine: one torch thread is several times faster than two that contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Noise:
    """A toy method: a few weights pulled toward noise drawn from the loop's generator; `hook(call)` runs first."""

    def __init__(self, hook=None):
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.calls, self.hook = 0, hook

    def parameters(self):
        return [self.w]

    def loss(self, batch_size, generator):
        self.calls += 1
        if self.hook:
            self.hook(self)
        target = torch.randn(batch_size, 4, generator=generator)
        return ((self.w - target) ** 2).mean()

    def trainable_state(self):
        return {"w": self.w.detach().clone()}

    def load_trainable_state(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])

    def save_outputs(self, out, step, loss):
        pass

    def preview(self, prompts, seed, steps):
        return []


def cfg(**kw):
    return TrainConfig(**{"steps": 4, "batch_size": 2, "lr": 0.1, "checkpoint_every": 2, "keep_checkpoints": 5, **kw})


def run(out, resume=False, overwrite=False, hook=None, record=None, **kw):
    m = Noise(hook)
    result = Trainer(m, cfg(**kw), out, config_record=record).train(resume=resume, overwrite=overwrite)
    return m, result


def names(out):
    return [p.name for p in _checkpoints(out)]


# ---------------------------------------------------------------- runs never mix
def test_a_new_run_refuses_a_folder_holding_checkpoints(tmp_path):
    run(tmp_path)
    with pytest.raises(InputError, match=r"--out=.*holds checkpoints of another run.*--resume.*--overwrite.*another --out"):
        run(tmp_path, lr=0.05)
    with pytest.raises(InputError, match="contradicts --resume"):
        run(tmp_path, resume=True, overwrite=True)


def test_overwrite_discards_the_old_checkpoints(tmp_path):
    straight, _ = run(tmp_path / "a", seed=3)
    run(tmp_path / "b", steps=6)
    (tmp_path / "b" / "checkpoints" / "step-000007.tmp").mkdir()
    m, result = run(tmp_path / "b", overwrite=True, seed=3)
    assert result.steps == 4 and torch.equal(m.w, straight.w)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-000002", "step-000004"]


def test_resume_with_other_settings_is_refused_naming_each(tmp_path):
    run(tmp_path, record={"model": "tiny", "concepts": [{"token": "<a>"}]})
    with pytest.raises(InputError, match=r"--resume=.*step-000004.*made with lr=0.1, seed=0; this run asks lr=0.05, "
                                          r"seed=1\. Resume with the same settings, or start a new run with --overwrite"):
        run(tmp_path, resume=True, lr=0.05, seed=1, record={"model": "tiny", "concepts": [{"token": "<a>"}]})
    with pytest.raises(InputError, match=r"concepts\.0\.token=<a>, model=tiny; this run asks concepts\.0\.token=<b>, "
                                          r"model=big"):
        run(tmp_path, resume=True, record={"model": "big", "concepts": [{"token": "<b>"}]})


def test_changed_steps_and_saving_cadence_are_applied_and_said(tmp_path, capsys):
    straight, _ = run(tmp_path / "a", steps=7)
    run(tmp_path / "b", steps=3, checkpoint_every=1)
    capsys.readouterr()
    m, result = run(tmp_path / "b", resume=True, steps=7, checkpoint_every=3, keep_checkpoints=1)
    said = capsys.readouterr().out
    assert "resuming" in said and "at step 3 (lr=0.1, batch_size=2, gradient_accumulation=1, seed=0)" in said
    assert "training to step 7 (--steps changed from 3 to 7)" in said
    assert result.steps == 7 and result.losses == run(tmp_path / "c", steps=7)[1].losses
    assert torch.equal(m.w, straight.w) and names(tmp_path / "b") == ["step-000007"]
    with pytest.raises(InputError, match=r"--steps=5: is below step 7"):
        run(tmp_path / "b", resume=True, steps=5)


# ---------------------------------------------------------------- verified checkpoints
def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated trainable.pt": (lambda ck: truncate(ck / "trainable.pt"), r"trainable\.pt: size \d+ != \d+"),
    "deleted rng-0.pt": (lambda ck: (ck / "rng-0.pt").unlink(), r"rng-0\.pt: missing"),
    "half-written loop.json": (lambda ck: truncate(ck / "loop.json"), r"loop\.json: size \d+ != \d+"),
    "deleted manifest": (lambda ck: (ck / MANIFEST).unlink(), r"manifest\.json: missing"),
    "flipped byte": (lambda ck: flip_byte(ck / "optimizer.pt"), r"optimizer\.pt: sha256 differs"),
    "unloadable with a valid manifest": (lambda ck: unloadable(ck), r"cannot be loaded"),
}


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def unloadable(ck):
    (ck / "trainable.pt").write_bytes(b"not a torch file")
    (ck / MANIFEST).unlink()
    _write_manifest(ck)  # sizes and hashes agree, yet torch.load fails


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, kind):
    damage, why = DAMAGE[kind]
    straight, straight_result = run(tmp_path / "a")
    run(tmp_path / "b", steps=4)
    damage(tmp_path / "b" / "checkpoints" / "step-000004")
    with pytest.warns(UserWarning, match=rf"checkpoint step-000004 is damaged \({why}.*\); falling back to step-000002"):
        m, result = run(tmp_path / "b", resume=True)
    assert result.steps == 4 and torch.equal(m.w, straight.w) and result.losses == straight_result.losses
    assert names(tmp_path / "b") == ["step-000002", "step-000004"]  # the damaged one was rewritten


def test_no_intact_checkpoint_is_an_input_error_naming_the_folder(tmp_path):
    run(tmp_path)
    truncate(tmp_path / "checkpoints" / "step-000004" / "trainable.pt")
    (tmp_path / "checkpoints" / "step-000002" / "rng-0.pt").unlink()
    assert names(tmp_path) == []
    with pytest.raises(InputError, match=r"--resume=.*checkpoints': holds no intact checkpoint \(step-000004: "
                                          r"trainable\.pt: size .*; step-000002: rng-0\.pt: missing\)"):
        run(tmp_path, resume=True)


def test_checkpoints_from_before_fingerprints_resume_with_a_warning(tmp_path):
    straight, _ = run(tmp_path / "a")
    run(tmp_path / "b", steps=2)
    ck = tmp_path / "b" / "checkpoints" / "step-000002"
    (ck / MANIFEST).unlink()
    loop = json.loads((ck / "loop.json").read_text())
    del loop["fingerprint"], loop["steps"]
    (ck / "loop.json").write_text(json.dumps(loop))
    with pytest.warns(UserWarning, match="predates run fingerprints"):
        m, result = run(tmp_path / "b", resume=True)
    assert result.steps == 4 and torch.equal(m.w, straight.w)


def test_non_finite_weights_are_never_saved(tmp_path):
    def poison(m):
        if m.calls == 3:  # an infinite gradient: step 3's loss is finite, the weights after it are not
            m.w.register_hook(lambda grad: grad * float("inf"))

    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite at step 3.*lower --lr"):
        run(tmp_path, hook=poison, checkpoint_every=1)
    assert names(tmp_path) == ["step-000001", "step-000002"]
    assert not (tmp_path / "checkpoints" / "step-000003.tmp").exists()


# ---------------------------------------------------------------- pruning
@pytest.mark.parametrize("steps,kept", [((5, 10, 100), ["step-000010", "step-000100"]),
                                        ((999_999, 1_000_000, 1_000_001), ["step-1000000", "step-1000001"])])
def test_pruning_keeps_the_newest_by_step_number(tmp_path, steps, kept):
    t = Trainer(Noise(), cfg(keep_checkpoints=2), tmp_path)
    for s in steps:
        t.step = s
        t.save_checkpoint()
    assert names(tmp_path) == kept
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(kept)


def test_tmp_folders_are_never_checkpoints(tmp_path):
    run(tmp_path, steps=2)
    root = tmp_path / "checkpoints"
    shutil.copytree(root / "step-000002", root / "step-000009.tmp")  # complete, manifest and all, but never renamed
    assert names(tmp_path) == ["step-000002"]
    _, result = run(tmp_path, resume=True, checkpoint_every=1, keep_checkpoints=1)
    assert result.steps == 4 and names(tmp_path) == ["step-000004"]
    assert (root / "step-000009.tmp").is_dir()  # pruning touches step-N folders only


# ---------------------------------------------------------------- signals
def signal_at(call, *signums):
    def hook(m):
        if m.calls == call:
            for s in signums:
                os.kill(os.getpid(), s)

    return hook


@pytest.mark.parametrize("signum,stopped", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_step_saves_that_whole_step_and_resumes_exactly(tmp_path, capsys, signum, stopped):
    before = signal.getsignal(signum)
    straight, straight_result = run(tmp_path / "a", gradient_accumulation=2)
    _, result = run(tmp_path / "b", hook=signal_at(4, signum), gradient_accumulation=2)  # call 4: step 2, second half
    assert (result.stopped, result.steps) == (stopped, 2) and names(tmp_path / "b") == ["step-000002"]
    assert f"{stopped} at step 2; checkpoint saved to {tmp_path / 'b' / 'checkpoints' / 'step-000002'}. Run again " \
           "with --resume." in capsys.readouterr().out
    assert signal.getsignal(signum) is before
    m, result = run(tmp_path / "b", resume=True, gradient_accumulation=2)
    assert torch.equal(m.w, straight.w) and result.losses == straight_result.losses


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, capsys):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, hook=signal_at(3, signal.SIGINT, signal.SIGINT), checkpoint_every=1)
    assert names(tmp_path) == ["step-000001", "step-000002"] and signal.getsignal(signal.SIGINT) is before
    assert "stopped at once after step 2 without saving" in capsys.readouterr().out


@pytest.mark.parametrize("signum,stopped", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_textual_inversion_signal_then_resume_is_bit_identical(concept_dirs, tmp_path, signum, stopped):
    from conceptlab.models.tiny import build_pipeline
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig

    def ti(out, resume=False, signal_call=None):
        ti_cfg = TextualInversionConfig(concepts=[ConceptConfig("<broc>", str(concept_dirs / "broccoli"), init="broccoli")],
                                        train=TrainConfig(steps=5, batch_size=1, lr=5e-2, checkpoint_every=2))
        method = TextualInversion(build_pipeline("tiny"), ti_cfg)
        if signal_call:
            loss, calls = method.loss, [0]

            def wrapped(batch_size, generator):
                calls[0] += 1
                if calls[0] == signal_call:
                    os.kill(os.getpid(), signum)
                return loss(batch_size, generator)

            method.loss = wrapped
        return method, Trainer(method, ti_cfg.train, out).train(resume=resume)

    straight, straight_result = ti(tmp_path / "a")
    _, result = ti(tmp_path / "b", signal_call=3)
    assert (result.stopped, result.steps) == (stopped, 3)
    resumed, result = ti(tmp_path / "b", resume=True)
    assert result.steps == 5 and result.losses == straight_result.losses
    assert torch.equal(resumed.trainable_state()["vectors"], straight.trainable_state()["vectors"])
