"""DreamBooth-LoRA on SDXL: UNet and both text encoders, files diffusers loads, kohya keys that convert back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conceptlab.concepts.lora import load_lora, lora_format
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline
from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, train_dreambooth
from conceptlab.training.loop import TrainConfig


@pytest.fixture(scope="module")
def trained(concept_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdxl-db")
    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(concept_dirs / "emoji"), "emoji")], lora=True, rank=2,
                           train_text_encoder=True, prior_preservation=True, class_images=2,
                           class_steps=2, train=TrainConfig(steps=2, batch_size=1, lr=1e-2))
    pipe, result = train_dreambooth(cfg, out, pipe=build_sdxl_pipeline())
    return pipe, out, result


def test_lora_trains_unet_and_both_text_encoders(trained):
    pipe, out, result = trained
    assert result.stopped == "done" and len(result.losses) == 2 and all(np.isfinite(result.losses))
    keys = load_file(str(out / "lora" / "pytorch_lora_weights.safetensors")).keys()
    for prefix in ("unet.", "text_encoder.", "text_encoder_2."):
        assert any(k.startswith(prefix) for k in keys), prefix
    kohya = load_file(str(out / "lora" / "lora.kohya.safetensors"))
    for prefix in ("lora_unet_", "lora_te1_", "lora_te2_"):
        assert any(k.startswith(prefix) for k in kohya), prefix
    assert lora_format(out / "lora" / "lora.kohya.safetensors") == "kohya"


@pytest.mark.parametrize("name", ["pytorch_lora_weights.safetensors", "lora.kohya.safetensors"])
def test_diffusers_loads_both_files_and_generates_what_the_trained_pipeline_does(trained, name):
    """StableDiffusionXLPipeline.load_lora_weights on a fresh pipeline (diffusers format, and kohya keys through
    diffusers' own converter) gives the trained pipeline's images."""
    pipe, out, _ = trained
    fresh = build_sdxl_pipeline()
    fresh.load_lora_weights(str(out / "lora" / name))
    args = dict(prompt="a tuki emoji", num_inference_steps=2, output_type="np")
    want = pipe(**args, generator=torch.Generator().manual_seed(0)).images
    got = fresh(**args, generator=torch.Generator().manual_seed(0)).images
    assert np.allclose(want, got, atol=1e-4)


def test_an_sdxl_lora_is_refused_by_an_sd1_pipeline(trained):
    _, out, _ = trained
    with pytest.raises(InputError, match="made for SDXL"):
        load_lora(build_pipeline("tiny"), out / "lora" / "pytorch_lora_weights.safetensors")


def test_full_fine_tune_writes_a_pipeline_diffusers_loads(concept_dirs, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(concept_dirs / "emoji"), "emoji")],
                           train=TrainConfig(steps=1, batch_size=1, lr=1e-3))
    pipe, _ = train_dreambooth(cfg, tmp_path, pipe=build_sdxl_pipeline())
    loaded = StableDiffusionXLPipeline.from_pretrained(tmp_path / "pipeline")
    for (name, a), b in zip(pipe.unet.state_dict().items(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(pipe.unet.state_dict()["conv_in.weight"], build_sdxl_pipeline().unet.state_dict()["conv_in.weight"])
