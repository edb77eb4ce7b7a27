"""Token alignment between a source and a target prompt, for Prompt-to-Prompt (Hertz et al. 2022, arXiv 2208.01626).

Replace: words swapped one for one; a word may span a different number of tokens in each prompt.
Refine: words added or removed; tokens are matched by a global alignment (Needleman & Wunsch 1970).
"""

from __future__ import annotations

import torch

from conceptlab.errors import InputError


def word_token_spans(tokenizer, prompt: str) -> list[tuple[str, list[int]]]:
    """Each word of `prompt` with the positions (in the 77-token sequence, BOS = 0) of its tokens."""
    spans, pos = [], 1
    for word in prompt.split():
        n = len(tokenizer(word, add_special_tokens=False).input_ids)
        spans.append((word, list(range(pos, pos + n))))
        pos += n
    return spans


def token_positions(tokenizer, prompt: str, word: str, argument: str = "--reweight") -> list[int]:
    """Token positions of `word` (all occurrences) in `prompt`; a clear error if it is not there."""
    spans = word_token_spans(tokenizer, prompt)
    hits = [p for w, ps in spans if w.strip(".,!?").lower() == word.lower() for p in ps]
    if not hits:
        raise InputError(argument, word, f"is not a word of the prompt {prompt!r}",
                         f"Use one of its words: {[w for w, _ in spans]}")
    return hits


def replace_mapper(tokenizer, source: str, target: str, length: int = 77) -> torch.Tensor:
    """(length, length) matrix M with target_attention = source_attention @ M, for a one-for-one word swap.

    A swapped word's tokens spread their attention evenly over the new word's tokens.
    """
    src, tgt = word_token_spans(tokenizer, source), word_token_spans(tokenizer, target)
    if len(src) != len(tgt):
        raise InputError("--mode", "replace", f"the prompts have {len(src)} and {len(tgt)} words, not a one-for-one swap",
                         "Use --mode refine for added or removed words")
    m = torch.zeros(length, length)
    m[0, 0] = 1
    i = j = 1
    for (_, ps), (_, pt) in zip(src, tgt):
        for a in ps:
            for b in pt:
                m[a, b] = 1 / len(pt)
        i, j = ps[-1] + 1, pt[-1] + 1
    # padding and end tokens keep their positions, shifted by the length difference
    for k in range(length - max(i, j)):
        m[i + k, j + k] = 1
    return m


def swapped_words(source: str, target: str) -> list[tuple[str, str]] | None:
    """The (source, target) word pairs that differ if the prompts are a one-for-one swap, else None."""
    a, b = source.split(), target.split()
    if len(a) != len(b):
        return None
    return [(x, y) for x, y in zip(a, b) if x != y]


def refine_alignment(tokenizer, source: str, target: str, length: int = 77) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target position: the source position it copies (mapper) and whether it has one (alphas).

    Tokens are aligned by a global alignment of the two token sequences (match +1, gap -1, mismatch -1).
    """
    s = tokenizer(source, add_special_tokens=False).input_ids
    t = tokenizer(target, add_special_tokens=False).input_ids
    n, m = len(s), len(t)
    score = torch.zeros(n + 1, m + 1)
    score[:, 0] = -torch.arange(n + 1)
    score[0, :] = -torch.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1, j - 1] + (1 if s[i - 1] == t[j - 1] else -1)
            score[i, j] = max(diag, score[i - 1, j] - 1, score[i, j - 1] - 1)
    mapper = torch.arange(length)
    alphas = torch.ones(length)
    i, j = n, m
    pairs = {}
    while i > 0 and j > 0:
        if s[i - 1] == t[j - 1] and score[i, j] == score[i - 1, j - 1] + 1:
            pairs[j] = i
            i, j = i - 1, j - 1
        elif score[i, j] == score[i - 1, j] - 1:
            i -= 1
        else:
            j -= 1
    for pos in range(1, m + 1):  # positions in the 77-sequence: +1 for BOS
        if pos in pairs:
            mapper[pos] = pairs[pos]
        else:
            mapper[pos], alphas[pos] = 0, 0.0
    shift = n - m  # after the prompt: end and padding tokens align with the source's
    for pos in range(m + 1, length):
        mapper[pos] = min(length - 1, max(0, pos + shift))
    return mapper, alphas
