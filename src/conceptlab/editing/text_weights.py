"""A word's weight in the text encoder's output: scales what the word contributes to every token's state.

Prompt-to-Prompt re-weighting scales the cross-attention to the word's own tokens. A causal text encoder also
writes the word into every later token, the end token and the padding; a UNet that reads the prompt from those
(small models do: the shipped one keeps drawing a smile with "happy"'s attention at zero) ignores that scale. So
the word's contribution is measured by encoding the prompt a second time with the word masked out of the
encoder's attention (the way compel down-weights a word) and scaled:

    E_w = E + (w - 1) * (E - E_without_word)      # (T, C), at every token but the word's own
                                                  # (those take the attention scale); w = 1 changes nothing

SDXL: each of its two encoders gets the formula on the states the UNet reads from it (the penultimate layer,
as compel's PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED), 768 + 1280 wide and concatenated as the pipeline does;
the formula is linear per encoder, so this is the formula on the concatenated states. The pooled embedding is
left as the plain prompt's, as compel leaves it (its `requires_pooled` encodes the prompt unweighted): it
conditions the whole image through the time embedding, not the word's region, and a re-weighted edit should
move what the word draws, not the picture's global look.
"""

from __future__ import annotations

import torch

from conceptlab.editing.alignment import token_positions
from conceptlab.models.families import SDXLFamily, family_of


def _states(pipe, slot, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(1, T, D_slot): the states the UNet reads from one text encoder (SDXL: penultimate layer, else the last)."""
    _, te = slot.parts(pipe)
    penultimate = isinstance(family_of(pipe), SDXLFamily)
    with torch.no_grad():
        out = te(ids.to(te.device), attention_mask=None if mask is None else mask.to(te.device),
                 output_hidden_states=penultimate)
    return out.hidden_states[-2] if penultimate else out[0]


def _slot_delta(pipe, slot, prompt: str, weights: dict[str, float]) -> torch.Tensor:
    """(1, T, D_slot): one encoder's share of the re-weighting."""
    tok, _ = slot.parts(pipe)
    convert = getattr(pipe, "maybe_convert_prompt", None)
    prompt = convert(prompt, tok) if convert is not None else prompt  # a multi-vector token spelled out
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids  # (1, T)
    full = _states(pipe, slot, ids, None)
    delta = torch.zeros_like(full)
    for word, w in weights.items():
        if w == 1:
            continue
        own = token_positions(tok, prompt, word)
        mask = torch.ones_like(ids)
        mask[0, own] = 0
        d = (w - 1) * (full - _states(pipe, slot, ids, mask))
        d[:, own] = 0  # the word's own tokens: Prompt-to-Prompt's attention scale weights those
        delta += d
    return delta


def word_weight_delta(pipe, prompt: str, weights: dict[str, float]) -> torch.Tensor:
    """(1, T, C): what to add to `prompt`'s embeddings to give each word its weight (1 = unchanged) in the
    other tokens' states; C is the width the UNet reads (SDXL: both encoders', concatenated)."""
    return torch.cat([_slot_delta(pipe, slot, prompt, weights) for slot in family_of(pipe).slots], dim=-1)


def weighted_prompt_inputs(pipe, prompts: list[str], weights: list[dict[str, float]]) -> dict:
    """Pipeline arguments: the pipeline's own embeddings of `prompts` (n, T, C) with each prompt's word weights
    applied; on SDXL also the pooled embeddings (n, P), the plain prompts' (see the module's docstring)."""
    device = pipe.text_encoder.device
    with torch.no_grad():
        encoded = pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
    embeds = encoded[0]
    for k, (prompt, w) in enumerate(zip(prompts, weights)):
        if any(v != 1 for v in w.values()):  # an unweighted prompt (the edit's source) costs no encoder pass
            embeds[k] += word_weight_delta(pipe, prompt, w)[0].to(embeds.device, embeds.dtype)
    if isinstance(family_of(pipe), SDXLFamily):  # (embeds, negative, pooled, negative pooled)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": encoded[2]}
    return {"prompt_embeds": embeds}


def weighted_prompt_embeds(pipe, prompts: list[str], weights: list[dict[str, float]]) -> torch.Tensor:
    """(n, T, C): the pipeline's own embeddings of `prompts` with each prompt's word weights applied."""
    return weighted_prompt_inputs(pipe, prompts, weights)["prompt_embeds"]
