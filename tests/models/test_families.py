"""Model families against diffusers' own prompt encoding: our conditioning equals the pipeline's."""

from __future__ import annotations

import pytest
import torch

from conceptlab.errors import InputError
from conceptlab.models.families import SD1, SDXL, family_of, require_family
from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline

TEXTS = ["a sticker of a happy star", "a sad cat on a beach"]


@torch.no_grad()
def test_sd1_conditioning_equals_encode_prompt():
    pipe = build_pipeline("tiny")
    assert family_of(pipe) is SD1
    cond = SD1.encode(pipe, TEXTS)
    embeds, _ = pipe.encode_prompt(TEXTS, "cpu", 1, do_classifier_free_guidance=False)
    assert cond.added is None and torch.equal(cond.hidden, embeds)


@torch.no_grad()
def test_sdxl_conditioning_equals_encode_prompt_and_time_ids():
    pipe = build_sdxl_pipeline()
    assert family_of(pipe) is SDXL and SDXL.widths(pipe) == (32, 48)
    cond = SDXL.encode(pipe, TEXTS, (40, 48))
    embeds, _, pooled, _ = pipe.encode_prompt(TEXTS, do_classifier_free_guidance=False)
    assert torch.allclose(cond.hidden, embeds, atol=1e-6) and cond.hidden.shape[-1] == 32 + 48
    assert torch.allclose(cond.added["text_embeds"], pooled, atol=1e-6)
    # diffusers' own time ids for original size (40, 48), no crop, target size (40, 48)
    ids = pipe._get_add_time_ids((40, 48), (0, 0), (40, 48), dtype=pooled.dtype,
                                 text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert torch.equal(cond.added["time_ids"], ids.repeat(2, 1))


def test_a_feature_refuses_a_family_it_does_not_support():
    with pytest.raises(InputError, match="sdxl"):
        require_family(build_sdxl_pipeline(), "this feature", ("sd1", "sd2"))


def test_the_sdxl_shape_has_sdxl_1_0s_parameter_counts():
    """Built on the meta device (no memory): the UNet and both encoders have exactly the published SDXL 1.0
    base sizes (stabilityai/stable-diffusion-xl-base-1.0: 2,567,463,684 / 123,060,480 / 694,659,840)."""
    from conceptlab.models.tiny import SDXL_SHAPES, build_sdxl_text_encoders, build_sdxl_unet

    with torch.device("meta"):
        unet = build_sdxl_unet(SDXL_SHAPES["sdxl"])
        te1, te2 = build_sdxl_text_encoders(SDXL_SHAPES["sdxl"], 49408)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(te1), count(te2)) == (2_567_463_684, 123_060_480, 694_659_840)
