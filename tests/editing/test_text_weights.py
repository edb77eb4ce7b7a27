import numpy as np
import pytest
import torch

from conceptlab.editing.alignment import token_positions
from conceptlab.editing.edit import edit
from conceptlab.editing.text_weights import weighted_prompt_embeds, word_weight_delta
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("tiny")


def test_weight_zero_is_the_prompt_encoded_without_the_word_at_the_same_positions(pipe):
    """Reference: the word's tokens dropped from the ids, every other token keeping its position id."""
    prompt, word = "a happy green star", "happy"
    tok, te = pipe.tokenizer, pipe.text_encoder
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    drop = token_positions(tok, prompt, word)
    keep = [p for p in range(ids.shape[1]) if p not in drop]
    with torch.no_grad():
        full = te(ids)[0]
        reference = te(ids[:, keep], position_ids=torch.tensor([keep]))[0]  # (1, T - len(drop), C)
    without = full + word_weight_delta(pipe, prompt, {word: 0.0})
    assert torch.allclose(without[:, keep], reference, atol=1e-5)
    assert torch.equal(without[:, : drop[0]], full[:, : drop[0]])  # a causal encoder: earlier tokens never see it
    assert torch.equal(without[:, drop], full[:, drop])  # its own tokens are left to the attention scale
    after = [p for p in keep if p > drop[-1]]
    assert (without[:, after] - full[:, after]).abs().amax() > 1e-3  # later tokens and padding do


def test_weights_scale_the_words_contribution_linearly_and_one_changes_nothing(pipe):
    prompt = "a happy green star"
    assert not word_weight_delta(pipe, prompt, {"happy": 1.0}).any()
    d0, d2 = (word_weight_delta(pipe, prompt, {"happy": w}) for w in (0.0, 2.0))
    assert torch.allclose(d2, -d0, atol=1e-6)  # (w - 1) * contribution
    both = word_weight_delta(pipe, prompt, {"happy": 0.0, "star": 2.0})
    assert torch.allclose(both, d0 + word_weight_delta(pipe, prompt, {"star": 2.0}), atol=1e-6)
    plain = pipe.encode_prompt([prompt], "cpu", 1, False)[0]
    assert torch.equal(weighted_prompt_embeds(pipe, [prompt], [{}]), plain)
    with pytest.raises(InputError, match="not a word of the prompt"):
        word_weight_delta(pipe, prompt, {"moon": 2.0})


def test_reweighted_edit_uses_the_weighted_text_and_attention_only_does_not(pipe):
    prompt = "a happy green star"
    kw = dict(steps=3, seed=1)
    one = edit(pipe, prompt, prompt, reweight={"happy": 1.0}, **kw)
    plain = edit(pipe, prompt, prompt, **kw)
    arr = lambda im: np.asarray(im, dtype=np.int16)  # noqa: E731
    assert np.abs(arr(one.images[1]) - arr(plain.images[1])).max() <= 1  # weight 1: nothing changes
    text = edit(pipe, prompt, prompt, reweight={"happy": 0.0}, **kw)
    attn = edit(pipe, prompt, prompt, reweight={"happy": 0.0}, reweight_text=False, **kw)
    assert np.abs(arr(text.images[1]) - arr(attn.images[1])).max() > 1
    assert np.array_equal(arr(text.images[0]), arr(plain.images[0]))  # the source is never re-weighted
    assert text.settings()["reweight_text"] and not attn.settings()["reweight_text"]
