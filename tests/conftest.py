"""Shared fixtures: tiny pipelines built in code (no downloads), saved once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models are dominated by per-op overhead: one thread is as fast alone and far faster when the two cores
# are shared (a tiny generation: 0.32 s with 1 thread, 5.1 s with 2 under load). Subprocesses set their own.
torch.set_num_threads(1)

from conceptlab.world.export import export_images  # noqa: E402


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    """A localhost port nothing listens on now (tests.ports.free_port) for one test."""
    from tests.ports import free_port

    return free_port()


@pytest.fixture(scope="session")
def tiny_pipe():
    from conceptlab.models.tiny import build_pipeline

    return build_pipeline("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_pipe):
    path = tmp_path_factory.mktemp("tiny-pipeline")
    tiny_pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def concept_dirs(tmp_path_factory):
    """Two small concept folders: faced broccoli stickers and happy emoji (the seed's two concepts)."""
    root = tmp_path_factory.mktemp("concepts")
    export_images(root / "broccoli", 4, seed=0, size=32, only={"object": {"broccoli"}, "emotion": {"happy"}})
    export_images(root / "emoji", 3, seed=10, size=32, only={"object": {"emoji"}, "emotion": {"happy"}})
    return root


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny CLIPModel and its processor saved to a folder, as a user's --clip-model would be."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from conceptlab.models.tiny import sticker_tokenizer

    path = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    tok = sticker_tokenizer()
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=77, bos_token_id=0, eos_token_id=1),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(path)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    proc.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dino(tmp_path_factory):
    """A tiny ViT and its image processor saved to a folder, as a user's --dino-model would be."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    path = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path
