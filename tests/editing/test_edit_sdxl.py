"""Prompt-to-Prompt on SDXL generations: the same processor and controllers, checked as on SD 1.x."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlab.editing.controllers import AttentionController
from conceptlab.editing.edit import attention_maps, edit
from conceptlab.editing.processor import controlled
from conceptlab.models.tiny import build_sdxl_pipeline


@pytest.fixture(scope="module")
def pipe():
    return build_sdxl_pipeline()


class Everything(AttentionController):
    """Asks for explicit attention everywhere and changes nothing."""

    def wants(self, is_cross, place, pixels):
        return True


def test_explicit_attention_equals_diffusers_path_on_sdxl(pipe):
    """With probabilities computed explicitly in every layer, SDXL's UNet gives what its own processors give."""
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    args = dict(prompt="a happy star", num_inference_steps=3, latents=latents, output_type="np")
    reference = pipe(**args).images
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    with controlled(pipe.unet, Everything(3)):
        ours = pipe(**args).images
    assert np.allclose(ours, reference, atol=1e-5)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before  # restored


def test_identity_edit_reproduces_the_source_and_a_swap_changes_the_target(pipe):
    same = edit(pipe, "a happy green star", "a happy green star", cross_steps=1.0, self_steps=1.0, steps=4, seed=3)
    a, b = (np.asarray(im, dtype=np.int16) for im in same.images)
    assert np.abs(a - b).max() <= 1
    swap = edit(pipe, "a happy green star", "a happy green apple", steps=4, seed=3)
    assert swap.mode == "replace" and np.array_equal(np.asarray(swap.images[0]), np.asarray(same.images[0]))
    assert not np.array_equal(np.asarray(swap.images[0]), np.asarray(swap.images[1]))


def test_difference_mask_keeps_the_source_on_sdxl(pipe):
    r = edit(pipe, "a happy green star", "a happy green star on a beach", steps=4, seed=1, blend_mask="difference")
    assert r.mode == "refine" and r.mask is not None and r.mask.shape == (2, 1, 16, 16) and not r.mask[0].any()


def test_reweighting_scales_text_states_by_default_and_attention_only_on_request(pipe):
    text = edit(pipe, "a happy star", "a happy star", reweight={"happy": 2.0}, steps=2)
    attn = edit(pipe, "a happy star", "a happy star", reweight={"happy": 2.0}, reweight_text=False, steps=2)
    assert text.settings()["reweight_text"] and not attn.settings()["reweight_text"]
    assert len(text.images) == len(attn.images) == 2


def test_attention_maps_at_sdxl_map_sizes(pipe):
    image, tokens, maps = attention_maps(pipe, "a happy star", steps=2)
    assert tokens == ["a", "happy", "star"] and maps.shape == (3, 16, 16) and torch.isfinite(maps).all()
