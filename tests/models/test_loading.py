import pytest
import torch

from conceptlab.errors import InputError, ModelNotAvailableError
from conceptlab.models.loading import load_pipeline, pipeline_family, require_sd


def test_loads_a_diffusers_folder(tiny_dir, tiny_pipe):
    pipe = load_pipeline(tiny_dir)
    assert pipeline_family(pipe) == "sd1"
    for (n, p), (_, q) in zip(pipe.unet.named_parameters(), tiny_pipe.unet.named_parameters()):
        assert torch.equal(p, q), n


def test_dtype_is_applied(tiny_dir):
    assert load_pipeline(tiny_dir, dtype="bfloat16").unet.dtype == torch.bfloat16
    with pytest.raises(InputError, match="dtype"):
        load_pipeline(tiny_dir, dtype="float8")


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_pipeline(str(tmp_path / "nothing"))


def test_folder_without_model_index(tmp_path):
    with pytest.raises(InputError, match="model_index.json"):
        load_pipeline(tmp_path)


def test_wrong_single_file_suffix(tmp_path):
    f = tmp_path / "weights.txt"
    f.write_text("not a model")
    with pytest.raises(InputError, match="not a checkpoint"):
        load_pipeline(f)


def test_uncached_hub_model_offline_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match="huggingface-cli download someone/some-model"):
        load_pipeline("someone/some-model")


def test_sdxl_is_refused_plainly():
    class FakeXL:
        text_encoder_2 = object()

    assert pipeline_family(FakeXL()) == "sdxl"
    with pytest.raises(InputError, match="does not support SDXL"):
        require_sd(FakeXL(), "textual inversion")


def test_sdxl_loads_from_a_folder_and_generates(tmp_path):
    from conceptlab.generation import GenerationConfig, generate
    from conceptlab.models.tiny import build_sdxl_pipeline

    build_sdxl_pipeline().save_pretrained(tmp_path)
    pipe = load_pipeline(tmp_path)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipeline_family(pipe) == "sdxl"
    images = generate(pipe, GenerationConfig(prompt="a happy star", n=2, steps=2), progress=False)
    assert len(images) == 2 and images[0].image.size == (32, 32)
