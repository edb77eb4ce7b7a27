import numpy as np
import pytest
import torch

from conceptlab.editing.alignment import (
    token_positions,
)
from conceptlab.editing.edit import EditConfig, attention_maps, choose_mode, edit
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("tiny")


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


def test_edit_with_the_difference_mask(pipe):
    r = edit(pipe, "a happy green star", "a happy green apple", steps=4, seed=1, blend_mask="difference")
    assert r.mask is not None and r.mask.shape == (2, 1, 16, 16) and not r.mask[0].any()
    plain = edit(pipe, "a happy green star", "a happy green apple", steps=4, seed=1)
    assert np.array_equal(np.asarray(r.images[0]), np.asarray(plain.images[0]))  # the source is untouched
    with pytest.raises(InputError, match="needs no words"):
        edit(pipe, "a happy star", "a happy apple", steps=2, blend_mask="difference", blend=["star"])
    with pytest.raises(InputError, match="unknown blend mask"):
        edit(pipe, "a happy star", "a happy apple", steps=2, blend_mask="words")


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

