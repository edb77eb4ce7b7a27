import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conceptlab.editing.alignment import (
    refine_alignment,
    replace_mapper,
    swapped_words,
    token_positions,
    word_token_spans,
)
from conceptlab.editing.controllers import AttentionController
from conceptlab.editing.edit import EditConfig, attention_maps, choose_mode, edit
from conceptlab.editing.processor import controlled
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline


class Everything(AttentionController):
    """Asks for explicit attention everywhere and changes nothing."""

    def wants(self, is_cross, place, pixels):
        return True


def _np(pipe, prompts, latents):
    return pipe(prompts, num_inference_steps=3, latents=latents, output_type="np").images


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("tiny")


def test_explicit_attention_equals_diffusers_fused_path(pipe):
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a happy star", "a sad apple"]
    reference = _np(pipe, prompts, latents)
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    with controlled(pipe.unet, Everything(3)):
        ours = _np(pipe, prompts, latents)
    assert np.allclose(ours, reference, atol=1e-5)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before  # restored


def test_unconditional_rows_take_the_fused_path_and_the_controller_sees_the_conditional_ones(pipe):
    class CondOnly(Everything):
        uncond_rows = 2  # 2 prompts under classifier-free guidance: rows 0-1 unconditional

        def __call__(self, probs, is_cross, place):
            self.batches.add(probs.shape[0])
            return probs

    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a happy star", "a sad apple"]
    reference = _np(pipe, prompts, latents)
    ctrl = CondOnly(3)
    ctrl.batches = set()
    with controlled(pipe.unet, ctrl):
        ours = _np(pipe, prompts, latents)
    assert ctrl.batches == {2}
    assert np.allclose(ours, reference, atol=1e-5)


def test_identity_edit_reproduces_the_source(pipe):
    r = edit(pipe, "a happy green star", "a happy green star", cross_steps=1.0, self_steps=1.0, steps=4, seed=3)
    a, b = (np.asarray(im, dtype=np.int16) for im in r.images)
    assert np.abs(a - b).max() <= 1


def test_without_windows_the_edit_is_plain_generation_and_with_them_it_is_not(pipe):
    from conceptlab.editing.edit import shared_latents

    off = edit(pipe, "a happy green star", "a happy green apple", cross_steps=0.0, self_steps=0.0, steps=4, seed=3)
    plain = pipe(["a happy green star", "a happy green apple"], num_inference_steps=4,
                 latents=shared_latents(pipe, 2, 3, 32, 32)).images
    for a, b in zip(off.images, plain):
        assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() <= 1
    on = edit(pipe, "a happy green star", "a happy green apple", cross_steps=1.0, self_steps=1.0, steps=4, seed=3)
    assert on.mode == "replace"
    assert np.abs(np.asarray(on.images[1], dtype=np.int16) - np.asarray(off.images[1], dtype=np.int16)).max() > 1


def test_auto_mode_and_refine_with_blend_and_reweight(pipe):
    assert choose_mode(EditConfig("a star", ["a red star"])) == "refine"
    assert choose_mode(EditConfig("a red star", ["a blue star"])) == "replace"
    r = edit(pipe, "a happy star", ["a happy star on a beach"], steps=4, blend=["star"], reweight={"beach": 2.0})
    assert r.mode == "refine" and len(r.images) == 2 and r.mask is not None and r.mask.shape[-2:] == (16, 16)



def test_difference_mask_marks_where_the_target_moved_and_keeps_the_source_elsewhere():
    from conceptlab.editing.controllers import DiffBlend

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=g).expand(3, -1, -1, -1).clone()  # (n, C, h, w), all the source
    latents[1, :, 2:5, 3:7] += 2.0  # target 1 changed a 3x4 patch
    latents[2] += 0.01 * torch.randn(4, 16, 16, generator=g)  # target 2 drifted a little everywhere ...
    latents[2, :, 10:14, 10:14] += 3.0  # ... and a lot in one patch
    blend = DiffBlend(threshold=0.5, start=0.0)
    out = blend.apply(latents.clone(), step=0, num_steps=10)
    m = blend.last_mask.bool()[:, 0]  # (n, h, w)
    assert not m[0].any()
    # the 3x3 smoothing keeps the patch's edges above half its peak; the mask grows that by one latent pixel
    patch1, patch2 = torch.zeros(2, 16, 16, dtype=torch.bool)
    patch1[2:5, 3:7], patch2[10:14, 10:14] = True, True
    for k, patch in ((1, patch1), (2, patch2)):
        grown = F.max_pool2d(patch[None].float(), 3, stride=1, padding=1)[0] > 0
        assert m[k][patch].all() and not (m[k] & ~grown).any()
    # outside its mask every target is the source exactly; inside it keeps its own latent
    for k in (1, 2):
        assert torch.equal(out[k][:, ~m[k]], latents[0][:, ~m[k]])
        assert torch.allclose(out[k][:, m[k]], latents[k][:, m[k]], atol=1e-6)
    assert torch.equal(out[0], latents[0])
    # before `start` nothing is blended
    late = DiffBlend(start=0.5)
    assert torch.equal(late.apply(latents.clone(), step=2, num_steps=10), latents) and late.last_mask is None


def test_edit_with_the_difference_mask(pipe):
    r = edit(pipe, "a happy green star", "a happy green apple", steps=4, seed=1, blend_mask="difference")
    assert r.mask is not None and r.mask.shape == (2, 1, 16, 16) and not r.mask[0].any()
    plain = edit(pipe, "a happy green star", "a happy green apple", steps=4, seed=1)
    assert np.array_equal(np.asarray(r.images[0]), np.asarray(plain.images[0]))  # the source is untouched
    with pytest.raises(InputError, match="needs no words"):
        edit(pipe, "a happy star", "a happy apple", steps=2, blend_mask="difference", blend=["star"])
    with pytest.raises(InputError, match="unknown blend mask"):
        edit(pipe, "a happy star", "a happy apple", steps=2, blend_mask="words")


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


@pytest.mark.parametrize("kwargs,match", [
    ({"reweight": {"banana": 2.0}}, "not a word of the prompt"),
    ({"mode": "replace", "targets": "a happy star on a beach"}, "one-for-one"),
    ({"cross_steps": 1.5}, "within"), ({"self_steps": -0.1}, "within"), ({"blend_start": 1.5}, "within"),
    ({"mode": "magic"}, "unknown edit mode"),
])
def test_bad_edits(pipe, kwargs, match):
    targets = kwargs.pop("targets", "a happy apple")
    with pytest.raises(InputError, match=match):
        edit(pipe, "a happy star", targets, steps=2, **kwargs)


def test_attention_maps(pipe):
    image, tokens, maps = attention_maps(pipe, "a happy star", steps=3)
    assert tokens == ["a", "happy", "star"] and maps.shape == (3, 16, 16) and torch.isfinite(maps).all()
    with pytest.raises(InputError, match="its words"):
        token_positions(pipe.tokenizer, "a happy star", "moon")


@pytest.mark.parametrize("guidance", [7.5, 1.0])
@pytest.mark.parametrize("source,target", [("a sticker of a happy red star", "a sticker of a happy red apple"),
                                           ("a happy star", "a happy zqxwv")])  # 1 token -> several
def test_shared_source_path_equals_explicit_attention(pipe, monkeypatch, source, target, guidance):
    """The fused shared-source path (P_src @ (M @ V_tgt)) gives what explicit probabilities give."""
    from conceptlab.editing.controllers import AttentionEdit

    calls = {"shared": 0}
    real = AttentionEdit.shares_source

    def counting(self, *a):
        used = real(self, *a)
        calls["shared"] += used
        return used

    kw = dict(steps=4, seed=5, cross_steps=0.8, self_steps=0.5, guidance=guidance, mode="replace")
    monkeypatch.setattr(AttentionEdit, "shares_source", counting)
    fused = edit(pipe, source, target, **kw).images
    assert calls["shared"] > 0  # the fused path really ran
    monkeypatch.setattr(AttentionEdit, "shares_source", lambda self, *a: False)
    explicit = edit(pipe, source, target, **kw).images
    for a, b in zip(fused, explicit):
        assert np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max() <= 1  # uint8 rounding


def test_shared_source_path_is_off_where_probabilities_are_needed(pipe):
    from conceptlab.editing.edit import EditConfig, build_controller

    def controller(**kw):
        cfg = EditConfig(source="a sticker of a happy red star", targets=["a sticker of a happy red apple"], steps=10, **kw)
        return build_controller(pipe, cfg, (16, 16))[0]

    assert controller().shares_source(True, "up", 64)
    assert controller().shares_source(False, "up", 64)
    assert not controller(reweight={"apple": 2.0}).shares_source(True, "up", 64)
    assert not controller(mode="refine").shares_source(True, "up", 64)
    partial = controller(cross_steps={"default_": 1.0, "apple": 0.0})  # 'apple' takes its own map from step 0
    assert not partial.shares_source(True, "up", 64)
    late = controller(cross_steps=0.8)
    late.step = 9  # past the window: the layer runs the original processor, not the shared path
    assert not late.wants(True, "up", 64) and not late.shares_source(True, "up", 64)


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
