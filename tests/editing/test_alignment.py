"""Tests of conceptlab.editing.alignment."""

import pytest
import torch

from conceptlab.editing.alignment import (
    refine_alignment,
    replace_mapper,
    swapped_words,
    token_positions,
    word_token_spans,
)
from conceptlab.editing.edit import EditConfig, choose_mode, edit
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("tiny")


def test_replace_mapper_handles_words_of_different_token_counts(pipe):
    tok = pipe.tokenizer
    src, tgt = "a qzx star", "a cat star"
    m = replace_mapper(tok, src, tgt)
    s_spans, t_spans = word_token_spans(tok, src), word_token_spans(tok, tgt)
    assert len(s_spans[1][1]) > 1 and len(t_spans[1][1]) == 1
    assert torch.allclose(m.sum(1)[: s_spans[-1][1][-1] + 1], torch.ones(s_spans[-1][1][-1] + 1))
    assert m[s_spans[2][1][0], t_spans[2][1][0]] == 1  # "star" maps onto "star"


def _end(tok, prompt):
    return len(tok(prompt).input_ids) - 1  # position of the end token, BOS = 0


def test_a_phrase_swap_is_a_replace_and_its_tokens_spread_over_the_new_phrase(pipe):
    tok = pipe.tokenizer
    src, tgt = "a star holding an ice cream in snow", "a star holding a cat in snow"
    assert swapped_words(src, tgt) == [("an ice cream", "a cat")]
    assert choose_mode(EditConfig(src, [tgt])) == "replace"
    assert swapped_words("a star in snow", "a red star in snow") is None
    m = replace_mapper(tok, src, tgt)
    s_spans, t_spans = word_token_spans(tok, src), word_token_spans(tok, tgt)
    phrase_s = [p for _, ps in s_spans[3:6] for p in ps]
    phrase_t = [p for _, ps in t_spans[3:5] for p in ps]
    assert len(phrase_s) > len(phrase_t)
    assert torch.allclose(m[phrase_s][:, phrase_t], torch.full((len(phrase_s), len(phrase_t)), 1 / len(phrase_t)))
    for (_, ps), (_, pt) in zip(s_spans[6:], t_spans[5:]):  # the words after the phrase, shifted
        assert torch.equal(m[ps][:, pt], torch.eye(len(ps)))
    last = s_spans[-1][1][-1]
    assert torch.equal(m.sum(1)[: last + 1], torch.ones(last + 1))  # every prompt token's attention goes somewhere


@pytest.mark.parametrize("src,tgt", [("a star holding an ice cream in snow", "a star holding a cat in snow"),
                                     ("a star holding a cat", "a star holding an ice cream")])
def test_end_token_maps_to_end_token_and_padding_keeps_its_absolute_position(pipe, src, tgt):
    """Hertz et al.'s mappers keep padding in place; shifting it with the length change wrecks inverted edits."""
    tok = pipe.tokenizer
    es, et = _end(tok, src), _end(tok, tgt)
    assert es != et
    m = replace_mapper(tok, src, tgt)
    assert m[es, et] == 1 and m[es].sum() == 1
    for p in range(max(es, et) + 1, 77):
        assert m[p, p] == 1 and m[p].sum() == 1
    mapper, alphas = refine_alignment(tok, src, tgt)
    assert mapper[et] == es and alphas[et] == 1
    assert torch.equal(mapper[max(es, et) + 1:], torch.arange(max(es, et) + 1, 77))
    gap = range(et + 1, es + 1)  # target padding where the source still has prompt tokens: its own attention
    assert all(alphas[p] == 0 for p in gap)


def test_refine_alignment_maps_kept_words_and_flags_new_ones(pipe):
    tok = pipe.tokenizer
    mapper, alphas = refine_alignment(tok, "a happy star", "a happy red star")
    assert mapper[1] == 1 and mapper[2] == 2 and alphas[3] == 0 and mapper[4] == 3 and alphas[4] == 1


def test_a_multi_vector_learned_token_lines_up_with_the_prompt_the_pipeline_encodes():
    from conceptlab.concepts.tokens import PlaceholderToken, add_placeholder
    from conceptlab.editing.edit import build_controller
    from conceptlab.editing.text_weights import word_weight_delta

    pipe = build_pipeline("tiny")
    add_placeholder(pipe.tokenizer, pipe.text_encoder, PlaceholderToken("<blob>", 3))
    tok = pipe.tokenizer
    src, tgt = "a <blob> happy star", "a <blob> sad star"
    def position(prompt, word):  # in what encode_prompt encodes
        tokens = tok.convert_ids_to_tokens(tok(pipe.maybe_convert_prompt(prompt, tok)).input_ids)
        return tokens.index(word + "</w>")

    happy, sad = position(src, "happy"), position(tgt, "sad")
    assert happy == sad == 5  # BOS, "a", three vectors of <blob>
    controller, mode = build_controller(pipe, EditConfig(src, [tgt], reweight={"<blob>": 2.0}), (16, 16))
    assert mode == "replace" and controller.mapper[0, happy, sad] == 1
    assert controller.reweight[0, 2:5].eq(2.0).all() and controller.reweight[0, 5] == 1  # every vector, nothing else
    delta = word_weight_delta(pipe, src, {"<blob>": 0.0})
    assert not delta[0, :5].any() and delta[0, 5:].abs().amax() > 0  # its own vectors left to the attention scale
    r = edit(pipe, src, tgt, steps=2, reweight={"<blob>": 0.5})
    assert len(r.images) == 2


def test_long_prompts_keep_only_the_tokens_the_encoder_reads(pipe):
    from conceptlab.editing.alignment import refine_alignment, replace_mapper
    from conceptlab.editing.edit import build_controller

    tok = pipe.tokenizer
    filler = " ".join(["star"] * 90)  # one token each: the encoder keeps 75 of them
    src, tgt = f"a happy {filler} red", f"a sad {filler} blue"
    spans = word_token_spans(tok, src)
    assert max(p for _, ps in spans for p in ps) == 75 and spans[-1] == ("red", [])
    m = replace_mapper(tok, src, tgt)
    assert m[2, 2] == 1 and m[76, 76] == 1 and m.sum() == 77  # happy -> sad, the end token onto the end token
    mapper, alphas = refine_alignment(tok, src, tgt + " more")
    assert mapper.shape == (77,) and alphas[2] == 0 and mapper[3] == 3 and mapper[76] == 76
    assert build_controller(pipe, EditConfig(src, [tgt], reweight={"sad": 0.5}), (16, 16))[0].reweight[0, 2] == 0.5
    with pytest.raises(InputError, match="cut off"):
        token_positions(tok, tgt, "blue")

