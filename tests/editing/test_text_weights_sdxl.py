"""Text-state re-weighting on SDXL, checked against the two encoders run by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlab.editing.edit import edit
from conceptlab.editing.text_weights import weighted_prompt_inputs, word_weight_delta
from conceptlab.models.tiny import build_sdxl_pipeline

PROMPT, WORD = "a happy green star", "happy"


@pytest.fixture(scope="module")
def pipe():
    return build_sdxl_pipeline()


def _by_hand(pipe, drop: bool):
    """(1, T, 32 + 48): both encoders' penultimate states, concatenated; with `drop`, the word's token is taken
    out of the ids and every other token keeps its position id (the prompt without the word, in place)."""
    states, keep = [], None
    for tok, te in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tok(PROMPT, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        word_id = tok(WORD, add_special_tokens=False).input_ids[0]
        keep = [p for p in range(ids.shape[1]) if ids[0, p] != word_id]
        with torch.no_grad():
            if drop:
                out = te(ids[:, keep], position_ids=torch.tensor([keep]), output_hidden_states=True)
            else:
                out = te(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
    return torch.cat(states, dim=-1), keep


def test_weight_one_is_exactly_the_pipelines_encoding_and_the_pooled_embedding_is_never_weighted(pipe):
    plain, _, pooled, _ = pipe.encode_prompt([PROMPT], device="cpu", num_images_per_prompt=1,
                                             do_classifier_free_guidance=False)
    one = weighted_prompt_inputs(pipe, [PROMPT], [{WORD: 1.0}])
    assert torch.equal(one["prompt_embeds"], plain) and torch.equal(one["pooled_prompt_embeds"], pooled)
    zero = weighted_prompt_inputs(pipe, [PROMPT], [{WORD: 0.0}])
    assert torch.equal(zero["pooled_prompt_embeds"], pooled)  # as compel: the pooled embedding stays the prompt's
    assert not torch.equal(zero["prompt_embeds"], plain)


def test_weight_zero_is_both_encoders_without_the_word_at_the_same_positions(pipe):
    full, _ = _by_hand(pipe, drop=False)
    without, keep = _by_hand(pipe, drop=True)  # (1, T - 1, 80)
    ours = weighted_prompt_inputs(pipe, [PROMPT], [{WORD: 0.0}])["prompt_embeds"]
    assert ours.shape == (1, 77, 32 + 48)
    assert torch.allclose(ours[:, keep], without, atol=1e-5)  # both halves: clip_l's 32 and clip_g's 48 columns
    own = [p for p in range(77) if p not in keep]
    assert torch.equal(ours[:, own], full[:, own])  # the word's own rows: the attention scale weights those
    assert torch.equal(ours[:, : own[0]], full[:, : own[0]])  # causal encoders: earlier tokens never see it


def test_the_later_rows_move_by_w_minus_one_times_the_words_contribution(pipe):
    full, _ = _by_hand(pipe, drop=False)
    without, keep = _by_hand(pipe, drop=True)
    contribution = full[:, keep] - without  # (1, T - 1, 80)
    for w in (0.5, 2.0, 3.0):
        ours = full + word_weight_delta(pipe, PROMPT, {WORD: w})
        assert torch.allclose(ours[:, keep], full[:, keep] + (w - 1) * contribution, atol=1e-5), w
    assert contribution[..., :32].abs().amax() > 1e-3 and contribution[..., 32:].abs().amax() > 1e-3


def test_a_reweighted_sdxl_edit_moves_the_target_monotonically_in_the_weight(pipe):
    """The further the weight from 1, the further the target from the unweighted target; the source stays."""
    kw = dict(steps=4, seed=1)
    images = {w: edit(pipe, PROMPT, PROMPT, reweight={WORD: w}, **kw).images for w in (1.0, 2.0, 3.0, 4.0)}
    arr = lambda im: np.asarray(im, dtype=np.float32)  # noqa: E731
    distance = [np.abs(arr(images[w][1]) - arr(images[1.0][1])).mean() for w in (2.0, 3.0, 4.0)]
    assert 0 < distance[0] < distance[1] < distance[2], distance
    assert all(np.array_equal(arr(images[w][0]), arr(images[1.0][0])) for w in images)  # never the source
    attention_only = edit(pipe, PROMPT, PROMPT, reweight={WORD: 4.0}, reweight_text=False, **kw).images[1]
    assert np.abs(arr(attention_only) - arr(images[4.0][1])).max() > 1  # the text states did part of it
