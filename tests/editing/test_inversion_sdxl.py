"""Inversion on SDXL: the pipeline, fed the inversion's embeddings (pooled ones too), retraces our own steps."""

from __future__ import annotations

import pytest
import torch

from conceptlab.editing import inversion as inv_mod
from conceptlab.editing.edit import edit
from conceptlab.editing.inversion import invert, reconstruct
from conceptlab.models.tiny import build_sdxl_pipeline
from conceptlab.world import StickerSpec, render


@pytest.fixture(scope="module")
def setup():
    return build_sdxl_pipeline(), render(StickerSpec(object="emoji", emotion="happy", seed=1), 32).image


@pytest.mark.parametrize("method", ["null-text", "negative-prompt"])
def test_pipeline_replays_the_per_step_embeddings_exactly_on_sdxl(setup, method):
    """StableDiffusionXLPipeline with the step callback (prompt embeds swapped, pooled unconditional embedding
    passed) equals our own guided DDIM steps with the same conditioning."""
    pipe, image = setup
    inv = invert(pipe, image, "a happy emoji", method, steps=3, guidance=3.0, inner_steps=2)
    assert inv.uncond_pooled is not None and inv.uncond_pooled.shape == (1, 32)
    cond = inv_mod._embed(pipe, "a happy emoji")
    null = inv_mod.Conditioning(cond.hidden, {**cond.added, "text_embeds": inv.uncond_pooled})
    z = inv.latent
    with torch.no_grad(), inv_mod.ddim_sampler(pipe) as sched:
        sched.set_timesteps(3)
        ts = [int(t) for t in sched.timesteps]
        for i, t in enumerate(ts):
            uncond = inv_mod.Conditioning(inv.uncond[i], null.added)
            z = inv_mod._guided_step(pipe, z, t, ts[i + 1] if i + 1 < len(ts) else -1, cond, uncond, 3.0)
    assert torch.allclose(reconstruct(pipe, inv, "latent"), z, atol=1e-4)


def test_null_text_starts_from_sdxls_zeroed_unconditional_branch(setup):
    pipe, image = setup
    assert pipe.config.force_zeros_for_empty_prompt
    inv = invert(pipe, image, "a happy emoji", "null-text", steps=2, guidance=3.0, inner_steps=1)
    assert torch.equal(inv.uncond_pooled, torch.zeros_like(inv.uncond_pooled))


def test_an_inverted_sdxl_image_can_be_edited(setup):
    pipe, image = setup
    inv = invert(pipe, image, "a happy emoji", "negative-prompt", steps=3, guidance=3.0)
    r = edit(pipe, "a happy emoji", "a sad emoji", inversion=inv)
    assert len(r.images) == 2 and r.config.steps == 3
