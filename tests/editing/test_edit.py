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



def _mask_file(tmp_path, left_white: bool) -> str:
    from PIL import Image

    im = Image.new("L", (64, 64), 255)  # any size: resized to the latents
    if left_white:
        im.paste(0, (32, 0, 64, 64))  # the right half black: kept from the source
    im.save(tmp_path / "mask.png")
    return str(tmp_path / "mask.png")


def test_a_drawn_mask_keeps_the_source_outside_it(pipe, tmp_path):
    args = ("a happy green star", "a happy green apple")
    plain = edit(pipe, *args, steps=4, seed=1)
    everywhere = edit(pipe, *args, steps=4, seed=1, mask=_mask_file(tmp_path, left_white=False))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain.images, everywhere.images))
    half = edit(pipe, *args, steps=4, seed=1, mask=_mask_file(tmp_path, left_white=True))
    expected = torch.zeros(2, 1, 16, 16)
    expected[1, :, :, :8] = 1
    assert torch.equal(half.mask, expected)
    src, out, free = (np.asarray(im, dtype=np.int16) for im in (half.images[0], half.images[1], plain.images[1]))
    assert np.abs(out[:, :12] - free[:, :12]).max() > 1  # the left may change ...
    # ... the right is the source's, but for the decoder's reach of a few pixels past the mask's edge at column 16
    assert np.abs(out[:, 20:] - src[:, 20:]).max() <= 1 and np.abs(free[:, 20:] - src[:, 20:]).max() > 5


def test_a_drawn_mask_with_blend_words_is_refused(pipe, tmp_path):
    with pytest.raises(InputError, match="--mask"):
        edit(pipe, "a happy star", "a happy apple", steps=2, blend=["star"], mask=_mask_file(tmp_path, True))


def test_renoised_mixes_fresh_noise_inside_the_region_only_and_keeps_unit_variance():
    from conceptlab.editing.edit import renoised

    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0)).expand(3, -1, -1, -1)
    region = torch.zeros(3, 1, 32, 32)
    region[1:, :, :, :16] = 1  # the targets' left half; the source (row 0) never
    out = renoised(z, region, 1.0, seed=5)
    assert torch.equal(out[0], z[0]) and torch.equal(out[1:, :, :, 16:], z[1:, :, :, 16:])
    assert torch.equal(out[1], out[2])  # one fresh draw for every target
    fresh = out[1, :, :, :16]
    assert abs(float(torch.corrcoef(torch.stack([fresh.flatten(), z[1, :, :, :16].flatten()]))[0, 1])) < 0.1
    half = renoised(z, region, 0.5, seed=5)[1, :, :, :16]
    assert torch.allclose(half, 0.5 ** 0.5 * (z[1, :, :, :16] + fresh), atol=1e-6)
    assert 0.85 < float(half.std()) < 1.15  # sqrt(1-s) z + sqrt(s) e keeps unit variance
    assert torch.equal(renoised(z, region, 0.0, seed=5), z)


def test_mask_noise_redraws_inside_the_mask_and_keeps_the_source_outside(pipe, tmp_path):
    args, mask = ("a happy green star", "a happy green apple"), _mask_file(tmp_path, left_white=True)
    kept = edit(pipe, *args, steps=4, seed=1, mask=mask)
    fresh = edit(pipe, *args, steps=4, seed=1, mask=mask, mask_noise=1.0)
    assert np.array_equal(np.asarray(kept.images[0]), np.asarray(fresh.images[0]))  # the source is untouched
    src, a, b = (np.asarray(im, dtype=np.int16) for im in (fresh.images[0], kept.images[1], fresh.images[1]))
    assert np.abs(a[:, :12] - b[:, :12]).max() > 50  # inside: drawn from other noise
    # outside: the source's latents, but for the tiny random decoder's reach of a few pixels past the mask's edge
    assert np.abs(b[:, 20:] - src[:, 20:]).max() <= 10 and np.abs(b[:, 20:] - src[:, 20:]).mean() < 2


def test_mask_noise_needs_a_mask(pipe):
    with pytest.raises(InputError, match="--mask-noise"):
        edit(pipe, "a happy star", "a happy apple", steps=2, mask_noise=0.5)


def test_mask_paste_keeps_the_source_exactly_outside_the_mask_and_the_edit_inside(pipe, tmp_path):
    args, mask = ("a happy green star", "a happy green apple"), _mask_file(tmp_path, left_white=True)  # 32 px images
    latent = edit(pipe, *args, steps=4, seed=1, mask=mask)
    hard = edit(pipe, *args, steps=4, seed=1, mask=mask, mask_paste=0)
    src, before, after = (np.asarray(im, dtype=np.int16) for im in (hard.images[0], latent.images[1], hard.images[1]))
    assert np.array_equal(after[:, 16:], src[:, 16:])  # exact, where the latent blend alone was only close
    assert np.abs(before[:, 16:] - src[:, 16:]).max() > 0
    assert np.array_equal(after[:, :16], before[:, :16])  # inside: the edit as decoded
    soft = np.asarray(edit(pipe, *args, steps=4, seed=1, mask=mask, mask_paste=2).images[1], dtype=np.int16)
    assert np.array_equal(soft[:, 24:], src[:, 24:]) and np.array_equal(soft[:, :8], before[:, :8])
    seam = soft[:, 14:18]  # a blend of both near the edge
    assert (seam != src[:, 14:18]).any() and (seam != before[:, 14:18]).any()


def test_mask_paste_needs_a_mask_and_a_sane_feather(pipe, tmp_path):
    with pytest.raises(InputError, match="--mask-paste"):
        edit(pipe, "a happy star", "a happy apple", steps=2, mask_paste=2)
    with pytest.raises(InputError, match="--mask-paste"):
        edit(pipe, "a happy star", "a happy apple", steps=2, mask=_mask_file(tmp_path, True), mask_paste=-1)


def test_mask_paste_on_a_wide_picture_keeps_the_mask_the_right_way_round(pipe, tmp_path):
    from PIL import Image

    im = Image.new("L", (64, 32), 0)
    im.paste(255, (0, 0, 32, 32))  # the left half of a 2:1 picture may change
    im.save(tmp_path / "wide.png")
    r = edit(pipe, "a happy green star", "a happy green apple", steps=2, seed=1, width=64, height=32,
             mask=str(tmp_path / "wide.png"), mask_paste=0)
    src, out = (np.asarray(x, dtype=np.int16) for x in r.images)
    assert out.shape[:2] == (32, 64)
    assert np.array_equal(out[:, 32:], src[:, 32:]) and np.abs(out[:, :32] - src[:, :32]).max() > 0
