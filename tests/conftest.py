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
