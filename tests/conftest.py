"""Shared fixtures: tiny pipelines built in code (no downloads), saved once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pipe():
    from conceptlab.models.tiny import build_pipeline

    return build_pipeline("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_pipe):
    path = tmp_path_factory.mktemp("tiny-pipeline")
    tiny_pipe.save_pretrained(path)
    return path
