"""The features judge: which of a monster's marks (shape, eyes, top, pattern) an image shows."""

import numpy as np
import pytest

from conceptlab.errors import InputError
from conceptlab.evaluation.judge import (
    FEATURE_HEADS,
    features_config,
    load_features_judge,
    load_judge,
    monster_features,
    render_dataset,
    shipped_features_judge,
)
from conceptlab.evaluation.recipes.dreambooth import mark_labels, subject_marks
from conceptlab.world import render, sample_spec
from conceptlab.world.attributes import INDIVIDUALS, Monster, StickerSpec

shipped = pytest.mark.skipif(not (shipped_features_judge() / "judge.safetensors").is_file(),
                             reason="no shipped features judge")


def test_monster_features_are_the_specs_own_and_faceless_monsters_have_no_eyes():
    spec = StickerSpec(object="monster", emotion="sad", colour="red", monster=Monster("wide", 3, "horns", "spots"))
    assert monster_features(spec) == {"shape": "wide", "eyes": "3", "top": "horns", "pattern": "spots"}
    faceless = StickerSpec(object="monster", emotion="none", colour="red", monster=Monster("tall", 1, "none", "plain"))
    assert monster_features(faceless)["eyes"] == "none"
    assert all(set(monster_features(spec)) == set(FEATURE_HEADS) for spec in (spec, faceless))


def test_features_data_holds_monsters_only_with_labels_taken_from_their_specs():
    cfg = features_config(images=40, seed=5)
    images, labels = render_dataset(cfg)
    assert images.shape == (40, 64, 64, 3) and set(labels) == set(FEATURE_HEADS)
    for i in range(40):  # the same draw, rendered again, gives the labels back
        spec = sample_spec(cfg.seed * 1_000_003 + i, {"object": {"monster"}}, individual_rate=cfg.individual_rate)
        assert spec.object == "monster"
        assert {k: FEATURE_HEADS[k][labels[k][i]] for k in FEATURE_HEADS} == monster_features(spec)
    assert len(set(labels["eyes"].tolist())) > 1 and len(set(labels["shape"].tolist())) > 1


def test_a_missing_features_judge_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="judge.safetensors"):
        load_features_judge(tmp_path)


@shipped
def test_shipped_features_judge_reads_fresh_monster_renders():
    """Monsters from seeds it never saw: every mark at least 95% on 160, with faceless ones among them."""
    judge = load_features_judge()
    specs = [sample_spec(8_000_000 + i, {"object": {"monster"}}, individual_rate=0.3) for i in range(160)]
    assert any(s.emotion == "none" for s in specs)
    predicted = judge.predict([render(s).image for s in specs])
    for head in FEATURE_HEADS:
        acc = np.mean([p == monster_features(s)[head] for p, s in zip(predicted[head], specs)])
        assert acc >= 0.95, f"{head}: {acc:.3f}"


@shipped
def test_subject_marks_tell_a_subjects_renders_from_another_subjects():
    """tuki's renders show all of tuki's marks; bnh's, asked as tuki, show none of them (every mark differs)."""
    features, judge = load_features_judge(), load_judge()
    renders = {i: [render(sample_spec(9_000 + k, {"object": {"monster"}, "individual": {i},
                                                  "emotion": {"happy", "sad", "angry", "in love"}})).image
                   for k in range(24)] for i in ("tuki", "bnh")}
    assert all(a != b for a, b in zip(vars(INDIVIDUALS["tuki"][0]).values(), vars(INDIVIDUALS["bnh"][0]).values()))
    read = {i: mark_labels(features, ims, judge.predict(ims)["colour"]) for i, ims in renders.items()}
    own = subject_marks(read["tuki"], "tuki", [True] * 24)
    assert min(own["all"].values()) >= 0.9 and own["missed_images"] == 0 and set(own["missed_kept"].values()) == {0}
    other = subject_marks(read["bnh"], "tuki", [False] * 24)
    assert max(other["all"].values()) <= 0.1 and other["missed_images"] == 24
    assert other["missed_kept"] == {m: round(v * 24) for m, v in other["all"].items()}
    assert other["eyes_read"].get("1", 0) >= 0.9  # bnh has one eye


@shipped
def test_the_marks_ceiling_and_the_class_prompts_marks_are_read_on_their_own_images(tiny_pipe):
    """The shipped autoencoder keeps every mark of both subjects (the proof measured 100% on 200 renders each); the
    class prompt's share with every mark of a subject is the count subject_marks gives on the same images."""
    from diffusers import AutoencoderKL

    from conceptlab.evaluation.recipes import dreambooth as R
    from conceptlab.models.loading import shipped_base_model

    features, judge = load_features_judge(), load_judge()
    vae = AutoencoderKL.from_pretrained(shipped_base_model() / "vae")
    ceiling = R.subject_ceilings(vae, judge, ["tuki", "bnh"], emotions=("happy", "sad"), scenes=("plain", "beach"),
                                 seeds=2, features=features)
    assert ceiling["tuki"]["marks_round_trip"] == 1.0 and ceiling["bnh"]["marks_round_trip"] == 1.0
    assert "marks_round_trip" not in R.subject_ceilings(vae, judge, ["tuki"], emotions=("happy",), scenes=("plain",),
                                                        seeds=1)["tuki"]
    scores, images = R.class_scores(tiny_pipe, judge, "monster", {"tuki", "bnh"}, n=4, steps=2, progress=False,
                                    features=features)
    labels = mark_labels(features, images, judge.predict(images)["colour"])
    every = sum(subject_marks(labels, i, [False] * 4)["missed_kept"]["every"] for i in ("tuki", "bnh"))
    assert scores["marked_as_subject"] == every / 4
