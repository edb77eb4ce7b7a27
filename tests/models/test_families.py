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
