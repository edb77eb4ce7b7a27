"""`conceptlab train base` on a tiny shape: what it exports, and that a paused run resumes exactly."""

import pytest
import torch

from conceptlab.io import load_torch_checkpoint
from conceptlab.models.tiny import sticker_tokenizer
from conceptlab.training.base_model import BaseModelConfig, train_base_model


def _cfg(**kw) -> BaseModelConfig:
    return BaseModelConfig(shape="tiny", images=24, vae_steps=2, vae_batch=4, unet_steps=4, unet_batch=4,
                           unet_warmup=1, checkpoint_every=100, bf16=False, **kw)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    work = tmp_path_factory.mktemp("straight")
    train_base_model(_cfg(), work, work / "export")
    return work


def test_export_loads_with_plain_diffusers_and_keeps_its_schedule_and_tokenizer(straight):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(straight / "export")
    assert pipe.scheduler.config.beta_end == pytest.approx(_cfg().noise_beta_end)
    assert pipe.tokenizer.get_vocab() == sticker_tokenizer().get_vocab()
    image = pipe("a sticker of a happy red apple", num_inference_steps=2, output_type="np").images
    assert image.shape[0] == 1 and torch.isfinite(torch.from_numpy(image)).all()


def test_paused_and_resumed_run_equals_a_straight_run(straight, tmp_path):
    import shutil

    for name in ("images.npy", "vae.ckpt", "latents.pt"):  # same data and VAE: only the UNet stage differs
        shutil.copy(straight / name, tmp_path / name)
    train_base_model(_cfg(), tmp_path, stop_at=2)
    assert load_torch_checkpoint(tmp_path / "unet.ckpt")["step"] == 2
    train_base_model(_cfg(), tmp_path)
    a, b = load_torch_checkpoint(straight / "unet.ckpt"), load_torch_checkpoint(tmp_path / "unet.ckpt")
    assert b["step"] == 4
    for name, value in a["unet"].items():
        assert torch.equal(value, b["unet"][name]), name
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))
