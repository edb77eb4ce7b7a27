"""A word's weight in the text encoder's output: scales what the word contributes to every token's state.

Prompt-to-Prompt re-weighting scales the cross-attention to the word's own tokens. A causal text encoder also
writes the word into every later token, the end token and the padding; a UNet that reads the prompt from those
(small models do: the shipped one keeps drawing a smile with "happy"'s attention at zero) ignores that scale. So
the word's contribution is measured by encoding the prompt a second time with the word masked out of the
encoder's attention (the way compel down-weights a word) and scaled:

    E_w = E + (w - 1) * (E - E_without_word)      # (T, C), at every token but the word's own
                                                  # (those take the attention scale); w = 1 changes nothing
"""

from __future__ import annotations

import torch

from conceptlab.editing.alignment import encoded, token_positions


def _encode(pipe, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return pipe.text_encoder(ids.to(pipe.text_encoder.device), attention_mask=mask)[0]  # (1, T, C)


def word_weight_delta(pipe, prompt: str, weights: dict[str, float]) -> torch.Tensor:
    """(1, T, C): what to add to `prompt`'s embeddings to give each word its weight (1 = unchanged) in the
    other tokens' states."""
    tok = pipe.tokenizer
    prompt = encoded(pipe, prompt)  # as encode_prompt spells it
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids  # (1, T)
    full = _encode(pipe, ids, None)
    delta = torch.zeros_like(full)
    for word, w in weights.items():
        if w == 1:
            continue
        own = token_positions(tok, prompt, word)
        mask = torch.ones_like(ids)
        mask[0, own] = 0
        d = (w - 1) * (full - _encode(pipe, ids, mask.to(pipe.text_encoder.device)))
        d[:, own] = 0  # the word's own tokens: Prompt-to-Prompt's attention scale weights those
        delta += d
    return delta


def weighted_prompt_embeds(pipe, prompts: list[str], weights: list[dict[str, float]]) -> torch.Tensor:
    """(n, T, C): the pipeline's own embeddings of `prompts` with each prompt's word weights applied."""
    embeds = pipe.encode_prompt(prompts, pipe.text_encoder.device, 1, False)[0]
    for k, (prompt, w) in enumerate(zip(prompts, weights)):
        if any(v != 1 for v in w.values()):  # an unweighted prompt (the edit's source) costs no encoder pass
            embeds[k] += word_weight_delta(pipe, prompt, w)[0].to(embeds.dtype)
    return embeds
