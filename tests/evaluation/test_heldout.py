"""The held-out textual-inversion proof's data, prompts and measures (the training is the proof script's)."""

from __future__ import annotations

import math

from conceptlab.evaluation.recipes import heldout as H
from conceptlab.world.attributes import ATTRIBUTES, INDIVIDUALS
from conceptlab.world.export import read_metadata


def test_training_data_shows_only_the_concept(tmp_path):
    token, init, words = H.export_concept_data("style", tmp_path / "s", 6, seed=3)
    rows = read_metadata(tmp_path / "s")
    assert token == "<pixel-art>" and len(rows) == 6
    assert {r["style"] for r in rows} == {"pixel art"}
    assert {r["object"] for r in rows} <= set(H.STYLE_TRAIN_OBJECTS)
    assert not {r["object"] for r in rows} & set(H.STYLE_TEST_OBJECTS), "the style is judged on unseen objects"
    assert all(words in r["text"] for r in rows), "every caption names the words the token replaces"
    token, init, words = H.export_concept_data("monster", tmp_path / "m", 6, seed=3)
    rows = read_metadata(tmp_path / "m")
    assert {r["individual"] for r in rows} == {"tuki"} and {r["colour"] for r in rows} == {INDIVIDUALS["tuki"][1]}
    assert all(words in r["text"] for r in rows)


def test_prompts_ask_what_the_judge_reads():
    for concept, noun in (("style", "<pixel-art>"), ("monster", "<tuki>")):
        prompts = H.prompts_for(concept, noun)
        assert len(prompts) == 16 and len({p.prompt for p in prompts}) == 16
        for p in prompts:
            assert noun in p.prompt
            for attr, value in p.want.items():
                assert value in ATTRIBUTES[attr], (attr, value)
    assert H.style_prompts("pixel art")[0].prompt == "pixel art of a red broccoli"
    assert H.monster_prompts("<tuki>")[-1].prompt == "a sticker of a <tuki> in love in a jungle"


def test_shares_need_every_listed_attribute():
    rows = [{"style": True, "object": True, "colour": False}, {"style": True, "object": True, "colour": True},
            {"style": False, "object": True, "colour": True}, {"style": False, "object": False, "colour": False}]
    s = H.shares(rows, H.score_groups("style"))
    assert s == {"style": 0.5, "object_and_colour": 0.5, "all": 0.25}


def test_difference_noise_is_two_standard_errors():
    a, b, n = 0.8, 0.6, 400
    p = (a + b) / 2
    assert math.isclose(H.difference_noise(a, b, n), 2 * math.sqrt(p * (1 - p) * (2 / n)))
    assert H.difference_noise(1.0, 1.0, 10) == 0.1  # never below one image's worth


def test_floors_read_the_result():
    result = {"concepts": {
        "style": {"loops": {"ours": {"style": 0.95, "object_and_colour": 0.8}},
                  "ours_minus_reference": {"metric": "style", "difference": 0.01, "noise": 0.05}},
        "monster": {"loops": {"ours": {"identity": 0.5, "emotion": 0.9, "scene": 0.86}}, "ceiling": 0.5}}}
    bars = {b["what"]: b["holds"] for b in H.floors(result)}
    assert bars == {"style token judged pixel art": True, "object and colour kept": False,
                    "style: ours minus the reference loop (style)": False,
                    "identity / autoencoder ceiling": True, "asked emotion": True, "asked scene": True}
