"""Trains a CLIP-format byte-level BPE tokenizer offline, so tiny pipelines need no download."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's own pre-tokenization pattern, so words split exactly as CLIPTokenizer splits them.
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

# Everyday words a user may type even though the sticker world never says them.
GENERAL_WORDS = (
    "a an the of on in at by with and or photo picture image drawing painting sketch sticker art style "
    "van gogh watercolor cartoon realistic portrait dog cat bird car tree house flower sun moon sky water "
    "red green blue yellow black white big small cute funny eating holding wearing sitting standing "
    "man woman person child toy robot dragon castle city street forest mountain snow sand ocean lake "
    "happy sad angry love smile cry face eyes mouth hat glasses burger cake pizza apple banana broccoli"
).split()


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 1024, model_max_length: int = 77) -> CLIPTokenizer:
    """Returns a CLIPTokenizer whose BPE merges are learned from `texts` (ids vary between processes).

    Byte-level: every string tokenizes, unknown words into smaller pieces. model_max_length must be 77 (or
    the text encoder's max positions) or pipelines overflow the position embeddings.
    """
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS, EOS], end_of_word_suffix="</w>",
        initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()), show_progress=False,
    )
    tok.train_from_iterator([*texts, " ".join(GENERAL_WORDS)], trainer=trainer)
    vocab = tok.get_vocab()
    # a word may end in any byte: keep 'x</w>' known too. The ids BPE training assigns differ from process
    # to process (hash order), so a trained tokenizer must travel with its model (save_pretrained does).
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = _merges_of(tok)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _merges_of(tok: Tokenizer) -> list[tuple[str, str]]:
    import json

    model = json.loads(tok.to_str())["model"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


# The shipped base model's tokenizer is the sticker world's: one file, so every process (training, export,
# inference, tests) agrees on the ids. It was made once with `train_clip_tokenizer` on sticker-world captions.
# Here, not in models.tiny, so that reading it does not import diffusers.
STICKER_TOKENIZER = Path(__file__).parent / "sticker_base" / "tokenizer"


@functools.lru_cache(maxsize=1)
def sticker_tokenizer() -> CLIPTokenizer:
    """The CLIP-format tokenizer of the sticker world (the shipped base model's)."""
    return CLIPTokenizer.from_pretrained(STICKER_TOKENIZER)
