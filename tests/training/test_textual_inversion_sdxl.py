"""Textual inversion on SDXL: a token learned in both text encoders, checked against diffusers' own loader."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conceptlab.concepts.formats import Embedding, load_embedding
from conceptlab.concepts.tokens import load_concepts
from conceptlab.errors import InputError
from conceptlab.models.families import SDXL
from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline
from conceptlab.training.loop import TrainConfig
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversionConfig, train_textual_inversion

PROMPT = "a sticker of a sad <b> on a beach"


@pytest.fixture(scope="module")
def trained(concept_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdxl-ti")
    pipe = build_sdxl_pipeline()
    before = [pipe.text_encoder.get_input_embeddings().weight.detach().clone(),
              pipe.text_encoder_2.get_input_embeddings().weight.detach().clone()]
    cfg = TextualInversionConfig(concepts=[ConceptConfig("<b>", str(concept_dirs / "broccoli"), init="broccoli",
                                                         vectors=2)],
                                 train=TrainConfig(steps=3, batch_size=2, lr=5e-2))
    pipe, result = train_textual_inversion(cfg, out, pipe=pipe)
    return pipe, before, out, result


def test_both_encoders_learn_their_own_vectors_and_nothing_else_moves(trained):
    pipe, before, _, result = trained
    assert result.stopped == "done" and len(result.losses) == 3
    for k, te in enumerate((pipe.text_encoder, pipe.text_encoder_2)):
        tok = pipe.tokenizer if k == 0 else pipe.tokenizer_2
        weight = te.get_input_embeddings().weight.detach()
        ids = tok.convert_tokens_to_ids(["<b>", "<b>_1"])
        old_rows = before[k].shape[0]
        assert torch.equal(weight[:old_rows], before[k]), f"encoder {k + 1}: an existing row changed"
        assert weight.shape[1] == (32, 48)[k] and max(ids) >= old_rows


def test_sdxl_file_loads_with_diffusers_and_encodes_like_ours(trained):
    """diffusers' documented SDXL recipe: clip_l into text_encoder, clip_g into text_encoder_2."""
    pipe, _, out, _ = trained
    path = out / "b" / "learned_embeds.safetensors"
    state = load_file(str(path))
    assert state["clip_l"].shape == (2, 32) and state["clip_g"].shape == (2, 48)
    fresh = build_sdxl_pipeline()
    fresh.load_textual_inversion(state["clip_l"], token=["<b>", "<b>_1"], text_encoder=fresh.text_encoder,
                                 tokenizer=fresh.tokenizer)
    fresh.load_textual_inversion(state["clip_g"], token=["<b>", "<b>_1"], text_encoder=fresh.text_encoder_2,
                                 tokenizer=fresh.tokenizer_2)
    ours = build_sdxl_pipeline()
    load_concepts(ours, [load_embedding(path)])
    with torch.no_grad():
        want = fresh.encode_prompt(PROMPT, do_classifier_free_guidance=False)  # expands <b> to <b> <b>_1 itself
        got = ours.encode_prompt(PROMPT, do_classifier_free_guidance=False)
        trained_cond = SDXL.encode(pipe, [pipe.maybe_convert_prompt(PROMPT, pipe.tokenizer)])
    assert torch.equal(want[0], got[0]) and torch.equal(want[2], got[2])
    assert torch.allclose(trained_cond.hidden, got[0], atol=1e-6)
    assert torch.allclose(trained_cond.added["text_embeds"], got[2], atol=1e-6)


def test_families_refuse_each_others_embeddings_naming_both_widths(trained):
    _, _, out, _ = trained
    sdxl_emb = load_embedding(out / "b" / "learned_embeds.safetensors")
    with pytest.raises(InputError, match=r"32 \+ 48 wide.*sd1 model's text encoders are 32 wide"):
        load_concepts(build_pipeline("tiny"), [sdxl_emb])
    with pytest.raises(InputError, match=r"has vectors 32 wide.*sdxl model's text encoders are 32 \+ 48 wide"):
        load_concepts(build_sdxl_pipeline(), [Embedding("<c>", torch.randn(1, 32))])


def test_init_from_an_sdxl_file_continues_both_encoders(trained, concept_dirs, tmp_path):
    _, _, out, _ = trained
    path = out / "b" / "learned_embeds.safetensors"
    cfg = TextualInversionConfig(concepts=[ConceptConfig("<b2>", str(concept_dirs / "broccoli"), init=str(path))],
                                 train=TrainConfig(steps=1, batch_size=1, lr=1e-9))
    from conceptlab.training.textual_inversion import TextualInversion

    method = TextualInversion(build_sdxl_pipeline(), cfg)
    saved = load_embedding(path)
    assert torch.equal(method.splices[0].vectors.detach(), saved.vectors)
    assert torch.equal(method.splices[1].vectors.detach(), saved.extra["clip_g"])
