import pytest
import torch
from diffusers import StableDiffusionPipeline

from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline


def _gen(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe("a happy star", num_inference_steps=3, generator=g, output_type="np").images


def test_saved_pipeline_loads_with_plain_diffusers_and_matches(tiny_pipe, tiny_dir):
    loaded = StableDiffusionPipeline.from_pretrained(tiny_dir)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.tokenizer).__name__ == "CLIPTokenizer"
    assert (_gen(loaded) == _gen(tiny_pipe)).all()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_prediction_types(prediction_type, tmp_path):
    pipe = build_pipeline("tiny", prediction_type=prediction_type)
    pipe.save_pretrained(tmp_path)
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert loaded.scheduler.config.prediction_type == prediction_type
    assert _gen(loaded).shape == (1, 32, 32, 3)


def test_same_seed_same_weights():
    a, b = build_pipeline("tiny", seed=1), build_pipeline("tiny", seed=1)
    for (n, p), (_, q) in zip(a.unet.named_parameters(), b.unet.named_parameters()):
        assert torch.equal(p, q), n


def test_unknown_shape_is_refused():
    with pytest.raises(InputError, match="shape"):
        build_pipeline("huge")


@pytest.mark.slow
def test_sd15_shape_has_sd15_parameter_counts():
    """Parameter counts of runwayml/stable-diffusion-v1-5's components, as published on its model card."""
    from conceptlab.models.tiny import SHAPES, build_text_encoder, build_unet, build_vae

    s = SHAPES["sd15"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_unet(s, 768)) == 859_520_964
    assert count(build_vae(s)) == 83_653_863
    assert count(build_text_encoder(s, 1000)) == 123_060_480
