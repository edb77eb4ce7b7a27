"""Token alignment between a source and a target prompt, for Prompt-to-Prompt (Hertz et al. 2022, arXiv 2208.01626).

Replace: words (or phrases) swapped one for one; either may span a different number of tokens in each prompt.
Refine: words added or removed; tokens are matched by a global alignment (Needleman & Wunsch 1970).
"""

from __future__ import annotations

import difflib

import torch

from conceptlab.errors import InputError


def encoded(pipe, prompt: str) -> str:
    """The prompt as the pipeline encodes it: a multi-vector learned token spelled out ('<cat> <cat>_1')."""
    convert = getattr(pipe, "maybe_convert_prompt", None)
    return convert(prompt, pipe.tokenizer) if convert is not None else prompt


def _content_end(tokenizer) -> int:
    """The first position past a prompt's tokens that the text encoder keeps (BOS and EOS take two of 77)."""
    return (getattr(tokenizer, "model_max_length", 77) or 77) - 1


def word_token_spans(tokenizer, prompt: str) -> list[tuple[str, list[int]]]:
    """Each word of `prompt` with the positions (in the 77-token sequence, BOS = 0) of its tokens; tokens
    that a long prompt loses to the encoder's length are left out (a word cut off entirely has none)."""
    spans, pos, end = [], 1, _content_end(tokenizer)
    for word in prompt.split():
        n = len(tokenizer(word, add_special_tokens=False).input_ids)
        spans.append((word, [p for p in range(pos, pos + n) if p < end]))
        pos += n
    return spans


def _is_word(w: str, word: str) -> bool:
    """`w` is `word`, or one of its extra vectors ('<cat>_1', as a multi-vector learned token is spelled out)."""
    return w == word or (w.startswith(word + "_") and w[len(word) + 1:].isdigit())


def token_positions(tokenizer, prompt: str, word: str, argument: str = "--reweight") -> list[int]:
    """Token positions of `word` (all occurrences) in `prompt`; a clear error if it is not there."""
    spans = word_token_spans(tokenizer, prompt)
    found = [ps for w, ps in spans if _is_word(w.strip(".,!?").lower(), word.lower())]
    if not found:
        raise InputError(argument, word, f"is not a word of the prompt {prompt!r}",
                         f"Use one of its words: {[w for w, _ in spans]}")
    hits = [p for ps in found for p in ps]
    if not hits:
        raise InputError(argument, word, f"comes after the {_content_end(tokenizer) - 1} tokens the text encoder "
                         "reads, so the prompt's end is cut off", "Shorten the prompt or move the word earlier")
    return hits


def tail_pairs(end_src: int, end_tgt: int, length: int = 77) -> list[tuple[int, int]]:
    """(source, target) positions after the prompts: the end token onto the end token, then padding by
    absolute position (as Hertz et al.'s code does).

    Padding is not shifted with the end token: the text encoder's padding states carry their position, and a
    UNet's cross-attention reads it; maps shifted by one position wreck edits of inverted images (measured: a
    swap that changed the length by one token fell from 32 dB to 3 dB PSNR outside the object). Padding
    positions that are prompt tokens in the other prompt have no partner.
    """
    end_src, end_tgt = min(end_src, length - 1), min(end_tgt, length - 1)  # prompts cut at the encoder's length
    return [(end_src, end_tgt)] + [(p, p) for p in range(max(end_src, end_tgt) + 1, length)]


def swap_blocks(source: str, target: str) -> list[tuple[range, range]] | None:
    """Word ranges (source, target) of a swap: aligned blocks that are equal or replaced, never only added or
    removed ("holding a burger" -> "holding an ice cream" swaps the phrase "a burger"); None if words are
    added or removed."""
    a, b = source.split(), target.split()
    blocks = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op in ("insert", "delete"):
            return None
        if op == "equal" or i2 - i1 == j2 - j1:  # word for word
            blocks += [(range(i, i + 1), range(j, j + 1)) for i, j in zip(range(i1, i2), range(j1, j2))]
        else:
            blocks.append((range(i1, i2), range(j1, j2)))
    return blocks


def replace_mapper(tokenizer, source: str, target: str, length: int = 77) -> torch.Tensor:
    """(length, length) matrix M with target_attention = source_attention @ M, for words or phrases swapped.

    A swapped word's (or phrase's) tokens spread their attention evenly over the new one's tokens.
    """
    blocks = swap_blocks(source, target)
    if blocks is None:
        raise InputError("--mode", "replace", "words are added or removed, not a one-for-one swap of words or phrases",
                         "Use --mode refine for added or removed words")
    src, tgt = word_token_spans(tokenizer, source), word_token_spans(tokenizer, target)
    m = torch.zeros(length, length)
    m[0, 0] = 1
    for ws, wt in blocks:
        ps = [p for w in ws for p in src[w][1]]
        pt = [p for w in wt for p in tgt[w][1]]
        if ps and pt:  # a block past the encoder's length has no tokens
            m[torch.tensor(ps)[:, None], torch.tensor(pt)[None, :]] = 1 / len(pt)
    last_s, last_t = (max((p for _, ps in spans for p in ps), default=0) for spans in (src, tgt))
    for a, b in tail_pairs(last_s + 1, last_t + 1, length):
        m[a, b] = 1
    return m


def swapped_words(source: str, target: str) -> list[tuple[str, str]] | None:
    """The (source, target) words or phrases that differ if the prompts are a swap, else None."""
    blocks = swap_blocks(source, target)
    if blocks is None:
        return None
    a, b = source.split(), target.split()
    pairs = [(" ".join(a[w] for w in ws), " ".join(b[w] for w in wt)) for ws, wt in blocks]
    return [(x, y) for x, y in pairs if x != y]


def refine_alignment(tokenizer, source: str, target: str, length: int = 77) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target position: the source position it copies (mapper) and whether it has one (alphas).

    Tokens are aligned by a global alignment of the two token sequences (match +1, gap -1, mismatch -1).
    """
    end = min(length, _content_end(tokenizer)) - 1  # the tokens the encoder keeps of each prompt
    s = tokenizer(source, add_special_tokens=False).input_ids[:end]
    t = tokenizer(target, add_special_tokens=False).input_ids[:end]
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
    tail = dict((b, a) for a, b in tail_pairs(n + 1, m + 1, length))
    for pos in range(m + 1, length):
        if pos in tail:
            mapper[pos] = tail[pos]
        else:
            mapper[pos], alphas[pos] = 0, 0.0
    return mapper, alphas
