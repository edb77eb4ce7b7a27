"""Mixed precision as diffusers' --mixed_precision: a float16/bfloat16 model, float32 trainables, autocast.

Reference: the same run with the model and the training in float32. Tolerances, measured on the tiny pipeline
(4 steps, batch 2, the LoRA initialised from the same seed): per-step losses within 2e-3 (bf16) and 5e-4
(fp16) relative (measured 5e-4 and 4e-5); the trained update (final - initial trainable weights) at cosine
>= 0.99 (bf16) and 0.999 (fp16) to float32's (measured 0.998 and 0.99993 LoRA, 0.99995 and 0.999999 TI) and
within 15% and 5% of its norm (measured 6.7% and 1.2% LoRA, 1.0% and 0.1% TI).
"""

from __future__ import annotations

import copy

import pytest
import torch

from conceptlab.errors import InputError
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig
from conceptlab.training.loop import TrainConfig, Trainer
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig

DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_RTOL = {"bf16": 2e-3, "fp16": 5e-4}
UPDATE_COS = {"bf16": 0.99, "fp16": 0.999}
UPDATE_RTOL = {"bf16": 0.15, "fp16": 0.05}


def _run(kind: str, precision: str, pipe, folder, out):
    """Trains 4 steps of `kind` with the model in `precision`'s dtype; returns (method, trainer, losses, update)."""
    pipe = copy.deepcopy(pipe).to(dtype=DTYPES[precision])
    torch.manual_seed(0)  # peft draws the LoRA's initial weights from torch's global generator
    train = TrainConfig(steps=4, batch_size=2, lr=5e-3 if kind == "ti" else 1e-3, mixed_precision=precision)
    if kind == "ti":
        method = TextualInversion(pipe, TextualInversionConfig(concepts=[ConceptConfig("<t>", str(folder), init="broccoli")],
                                                               train=train))
    else:
        method = DreamBooth(pipe, DreamBoothConfig(subjects=[SubjectConfig("tuki", str(folder), "broccoli")], lora=True,
                                                   train=train))
    before = {k: v.float().clone() for k, v in method.trainable_state().items()}
    trainer = Trainer(method, train, out, progress=False)
    losses = trainer.train().losses
    update = {k: v.float() - before[k] for k, v in method.trainable_state().items()}
    return method, trainer, losses, update


@pytest.fixture(scope="module")
def reference(tiny_pipe, concept_dirs, tmp_path_factory):
    """The float32 runs every precision is compared with."""
    return {kind: _run(kind, "no", tiny_pipe, concept_dirs / "broccoli", tmp_path_factory.mktemp(kind))
            for kind in ("ti", "lora")}


def _frozen(method) -> dict[str, torch.Tensor]:
    modules = {"unet": method.pipe.unet, "text_encoder": method.pipe.text_encoder}
    return {f"{m}.{n}": p for m, module in modules.items() for n, p in module.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["ti", "lora"])
def test_low_precision_model_trains_float32_weights_close_to_float32_training(kind, precision, reference, tiny_pipe,
                                                                              concept_dirs, tmp_path):
    method, trainer, losses, update = _run(kind, precision, tiny_pipe, concept_dirs / "broccoli", tmp_path)
    _, _, ref_losses, ref_update = reference[kind]
    # what trains is float32, with float32 optimizer state; what is frozen keeps the low dtype
    assert {p.dtype for p in method.parameters()} == {torch.float32}
    assert all(s["exp_avg"].dtype == torch.float32 for s in trainer.opt.state.values())
    frozen = _frozen(method)
    assert frozen and {p.dtype for p in frozen.values()} == {DTYPES[precision]}
    unet = {n: p.to(DTYPES[precision]) for n, p in tiny_pipe.unet.named_parameters()}
    untouched = [torch.equal(p, unet[n.removeprefix("unet.").replace(".base_layer", "")])
                 for n, p in frozen.items() if n.startswith("unet.")]
    assert untouched and all(untouched)  # the frozen UNet is bit for bit the cast model
    assert (trainer.scaler is not None) == (precision == "fp16")
    # finite, moving, and close to float32 training
    assert all(torch.isfinite(torch.tensor(losses))) and len(losses) == 4
    assert all(u.abs().max() > 0 for u in update.values())
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
    assert rel <= LOSS_RTOL[precision], (losses, ref_losses)
    a = torch.cat([update[k].flatten() for k in sorted(update)])
    b = torch.cat([ref_update[k].flatten() for k in sorted(update)])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0)
    assert cos >= UPDATE_COS[precision], float(cos)
    assert (a - b).norm() <= UPDATE_RTOL[precision] * b.norm(), float((a - b).norm() / b.norm())


def test_fp16_keeps_its_grad_scaler_in_checkpoints(tiny_pipe, concept_dirs, tmp_path):
    """The GradScaler's scale is part of the run: saved with the optimizer and restored on resume."""
    from conceptlab.io import load_torch_checkpoint

    _, trainer, _, _ = _run("ti", "fp16", tiny_pipe, concept_dirs / "broccoli", tmp_path)
    saved = load_torch_checkpoint(tmp_path / "checkpoints" / "step-000004" / "optimizer.pt")
    assert saved["scaler"]["scale"] == trainer.scaler.get_scale() == 65536.0  # no overflow in 4 steps on the CPU
    trainer.scaler.update(1.0)  # a different scale in memory; resume must bring the saved one back
    assert trainer.resume() and trainer.scaler.get_scale() == 65536.0


def test_unknown_mixed_precision_is_refused_naming_the_choices():
    with pytest.raises(InputError, match=r"--mixed-precision.*'no', 'fp16', 'bf16'"):
        TrainConfig(mixed_precision="fp8").check()


@pytest.mark.parametrize("precision", ["no", "fp16"])
def test_full_fine_tune_of_a_float16_model_trains_a_float32_unet_and_still_previews(precision, tiny_pipe, concept_dirs,
                                                                                     tmp_path):
    """The UNet trains in float32 (as diffusers' train_dreambooth requires) beside the float16 text encoder and VAE;
    the preview renders with that mixed pipeline under autocast to float16 (without it: a dtype mismatch)."""
    from conceptlab.training.dreambooth import train_dreambooth

    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(concept_dirs / "broccoli"), "broccoli")], lora=False,
                           train=TrainConfig(steps=1, batch_size=1, mixed_precision=precision, preview_every=1,
                                             preview_prompts=["a tuki broccoli"], preview_steps=2))
    pipe, result = train_dreambooth(cfg, tmp_path, pipe=copy.deepcopy(tiny_pipe).to(dtype=torch.float16))
    assert result.steps == 1 and (tmp_path / "previews" / "step-000001.png").is_file()
    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float16
