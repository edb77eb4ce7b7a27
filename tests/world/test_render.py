import dataclasses

import numpy as np
import pytest

from conceptlab.errors import InputError
from conceptlab.world import ATTRIBUTES, INDIVIDUALS, StickerSpec, face_box, render, sample_spec
from conceptlab.world.attributes import Monster, caption, parse_filters, random_monster


def pixels(spec, size=64):
    return np.asarray(render(spec, size).image, dtype=np.int16)


def test_render_is_deterministic_and_seed_dependent():
    spec = sample_spec(5)
    assert np.array_equal(pixels(spec), pixels(spec))
    assert not np.array_equal(pixels(sample_spec(5)), pixels(sample_spec(6)))


def test_every_attribute_changes_the_picture():
    base = StickerSpec(object="emoji", emotion="happy", colour="yellow", seed=3)
    variants = {
        "object": "apple", "emotion": "sad", "colour": "blue", "background": "beach", "style": "sketch",
        "accessory": "sunglasses", "held_item": "cake", "flowers": "many",
    }
    ref = pixels(base)
    for name, value in variants.items():
        other = pixels(StickerSpec(**{**base.labels(), name: value, "individual": "none", "seed": 3}))
        diff = np.abs(other - ref).mean()
        assert diff > 1.0, f"{name}={value} barely changes the image ({diff:.2f})"


def test_emotions_differ_inside_the_face_region():
    imgs = {e: pixels(StickerSpec(object="emoji", emotion=e, seed=1), 64) for e in ATTRIBUTES["emotion"]}
    r = render(StickerSpec(object="emoji", seed=1))
    x0, y0, x1, y1 = r.bbox
    for a in imgs:
        for b in imgs:
            if a < b:
                assert np.abs(imgs[a] - imgs[b])[y0:y1, x0:x1].mean() > 0.5, (a, b)


@pytest.mark.parametrize("size", [64, 128])
def test_face_box_holds_every_pixel_the_face_changes(size):
    """Independent check of the layout-only face box: render with and without the face and diff."""
    checked = 0
    for seed in range(120):
        spec = sample_spec(seed)
        if spec.style == "pixel art":  # its palette quantization shifts pixels far from the face
            continue
        spec = dataclasses.replace(spec, emotion=ATTRIBUTES["emotion"][seed % 5])
        changed = np.abs(pixels(spec, size) - pixels(dataclasses.replace(spec, emotion="none"), size)).sum(-1) > 30
        x0, y0, x1, y1 = face_box(spec, size)
        outside = changed.copy()
        outside[y0:y1, x0:x1] = False
        assert outside.sum() <= 0.03 * changed.sum(), (seed, spec)
        assert (x1 - x0) * (y1 - y0) < 0.4 * size * size  # a face, not the whole picture (emoji faces are big)
        checked += 1
    assert checked > 60
    assert face_box(dataclasses.replace(sample_spec(0), emotion="none")) is None


def test_labels_and_caption_name_the_attributes():
    spec = StickerSpec(object="apple", emotion="angry", colour="green", background="beach", style="painting",
                       accessory="sunglasses", held_item="burger", flowers="many", seed=0)
    r = render(spec)
    assert r.labels == {**spec.labels()}
    text = caption(spec, drop=0.0)
    for word in ("apple", "angry", "green", "beach", "painting", "sunglasses", "burger", "many flowers"):
        assert word in text


def test_in_love_caption_reads_naturally():
    assert "star in love" in caption(StickerSpec(object="star", emotion="in love", colour="red"), drop=0.0)


def test_random_monsters_are_never_named_individuals():
    import random

    named = {look for look, _ in INDIVIDUALS.values()}
    rng = random.Random(0)
    assert all(random_monster(rng) not in named for _ in range(2000))


def test_named_individuals_keep_their_look_and_colour():
    spec = sample_spec(0, only={"object": {"monster"}, "individual": {"tuki"}})
    look, colour = INDIVIDUALS["tuki"]
    assert spec.individual == "tuki" and spec.monster == look and spec.colour == colour


def test_filters_are_respected():
    only = parse_filters(["emotion=happy,sad", "object=apple"], "--only")
    exclude = parse_filters(["background=plain"], "--exclude")
    for seed in range(50):
        s = sample_spec(seed, only, exclude)
        assert s.emotion in {"happy", "sad"} and s.object == "apple" and s.background != "plain"


def test_bad_filters_name_the_flag():
    with pytest.raises(InputError, match="--only"):
        parse_filters(["mood=happy"], "--only")
    with pytest.raises(InputError, match="not a value of emotion"):
        parse_filters(["emotion=ecstatic"], "--only")


def test_spec_rejects_unknown_values():
    with pytest.raises(ValueError, match="colour"):
        StickerSpec(colour="octarine")
    with pytest.raises(ValueError, match="monster"):
        StickerSpec(object="apple", individual="tuki", monster=Monster())


def test_bbox_covers_the_object():
    r = render(StickerSpec(object="emoji", background="jungle", seed=2), 64)
    x0, y0, x1, y1 = r.bbox
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and (x1 - x0) > 20
