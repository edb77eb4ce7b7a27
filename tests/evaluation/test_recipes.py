"""The evaluation recipes against independent computations: the old scripts' own generation code, shares counted
by hand from the judge's predictions, PSNR with numpy."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.evaluation.recipes.common import Bar, load_judge_checked, output_folder, read_training_record
from conceptlab.evaluation.recipes.dreambooth import adapters_disabled, class_scores, subject_prompt, subject_scores
from conceptlab.evaluation.recipes.editing import score_swap, summarize_swaps, swap_of, word_region
from conceptlab.evaluation.recipes.ti import JudgedPrompt, concept_prompts, emotion_prompts, judged_share
from conceptlab.world.attributes import ATTRIBUTES

STEPS = 2


class StubJudge:
    """Labels from each image's mean grey level, so that shares land between 0 and 1 on a tiny model's images."""

    cfg = SimpleNamespace(heads={k: list(v) for k, v in ATTRIBUTES.items()})

    def predict(self, images):
        out = {h: [] for h in self.cfg.heads}
        for im in images:
            level = int(np.asarray(im, dtype=np.float64).mean() * 10)
            for h, labels in self.cfg.heads.items():
                out[h].append(labels[level % len(labels)])
        return out


def old_script_images(pipe, prompts, seeds, guidance=7.5):
    """How the proof scripts generated before the recipes: one CPU generator per image, one call per batch."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompts, num_inference_steps=STEPS, guidance_scale=guidance, generator=gens).images


def same_pixels(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)) and len(a) == len(b)


def test_judged_share_equals_the_old_script_and_a_hand_count(tiny_pipe):
    judge = StubJudge()
    prompts = emotion_prompts("broccoli", "broccoli", ("happy", "sad"))
    scores, images = judged_share(tiny_pipe, judge, prompts, per_prompt=3, first_seed=5, guidance=6.0, steps=STEPS,
                                  progress=False)
    old = [im for p in prompts for im in old_script_images(tiny_pipe, [p.prompt] * 3, [5, 6, 7], 6.0)]
    assert same_pixels(images, old)
    pred = judge.predict(images)
    asked = [p for p in prompts for _ in range(3)]
    ok = [o == p.object and e == p.emotion for o, e, p in zip(pred["object"], pred["emotion"], asked)]
    assert scores["share"] == sum(ok) / 6 and scores["images"] == 6
    assert scores["per_prompt"] == {prompts[0].prompt: sum(ok[:3]) / 3, prompts[1].prompt: sum(ok[3:]) / 3}
    assert scores["judged_object"] == sum(o == "broccoli" for o in pred["object"]) / 6
    assert [r["seed"] for r in scores["rows"]] == [5, 6, 7, 5, 6, 7]


def test_subject_and_class_scores_equal_a_hand_count(tiny_pipe):
    judge = StubJudge()
    subjects, emotions, scenes = [("tuki", "monster"), ("bnh", "monster")], ("happy", "in love"), ("plain", "beach")
    scores, images = subject_scores(tiny_pipe, judge, subjects, emotions, scenes, seeds=2, steps=STEPS, progress=False)
    cases = [(i, e, sc, s) for i, _ in subjects for e in emotions for sc in scenes for s in range(2)]
    prompts = [subject_prompt(i, "monster", e, sc) for i, e, sc, _ in cases]
    assert prompts[2] == "a sticker of a happy tuki monster at the beach"
    assert prompts[4] == "a sticker of a tuki monster in love on a white background"
    assert subject_prompt("tuki", "monster", "", "beach") == "a sticker of a tuki monster at the beach"
    assert subject_prompt("", "monster", "", "plain") == "a sticker of a monster on a white background"
    old = old_script_images(tiny_pipe, prompts[:16], [c[3] for c in cases][:16])
    assert same_pixels(images, old)  # 16 cases: one pipeline call, as the script made them
    pred = judge.predict(images)
    identity = [p == c[0] for p, c in zip(pred["individual"], cases)]
    emotion = [p == c[1] for p, c in zip(pred["emotion"], cases)]
    scene = [p == c[2] for p, c in zip(pred["background"], cases)]
    assert scores["identity"] == np.mean(identity) and scores["emotion"] == np.mean(emotion)
    assert scores["scene"] == np.mean(scene)
    assert scores["all"] == np.mean([a and b and c for a, b, c in zip(identity, emotion, scene)])
    assert scores["identity_per_subject"] == {"tuki": np.mean(identity[:8]), "bnh": np.mean(identity[8:])}
    for name, rows in (("tuki", slice(0, 8)), ("bnh", slice(8, 16))):  # every metric, per subject
        mine = scores["per_subject"][name]
        assert mine["emotion"] == np.mean(emotion[rows]) and mine["scene"] == np.mean(scene[rows])
        assert mine["identity"] == np.mean(identity[rows]) and mine["images"] == 8
        for e in emotions:  # each asked emotion's share, per subject
            picked = [ok for ok, c in zip(emotion[rows], cases[rows]) if c[1] == e]
            assert mine["emotion_by_emotion"][e] == np.mean(picked) and len(picked) == 4
        for sc in scenes:  # the identity in each asked scene, per subject
            picked = [ok for ok, c in zip(identity[rows], cases[rows]) if c[2] == sc]
            assert mine["identity_by_scene"][sc] == np.mean(picked) and len(picked) == 4

    cls, class_images = class_scores(tiny_pipe, judge, "monster", {"tuki", "bnh"}, n=3, steps=STEPS, progress=False)
    assert same_pixels(class_images, old_script_images(tiny_pipe, ["a monster"] * 3, [1000, 1001, 1002]))
    pred = judge.predict(class_images)
    assert cls["judged_as_subject"] == np.mean([p in ("tuki", "bnh") for p in pred["individual"]])
    assert cls["judged_class"] == np.mean([p == "monster" for p in pred["object"]])
    assert sum(cls["distribution"]["colour"].values()) == 3


def test_psnr_outside_the_words_equals_numpy(tiny_pipe):
    from conceptlab.editing.edit import edit

    src, tgt = "a sticker of a red star", "a sticker of a red apple"
    source, edited = edit(tiny_pipe, src, tgt, seed=3, steps=STEPS).images
    row, plain_src, naive = score_swap(tiny_pipe, StubJudge(), "object", src, tgt, "star", "apple", 3, source, edited,
                                       steps=STEPS)
    _, m_src = word_region(tiny_pipe, src, "star", 3, 32, STEPS)
    _, m_tgt = word_region(tiny_pipe, tgt, "apple", 3, 32, STEPS)
    outside = ~(m_src | m_tgt)

    def numpy_psnr(a, b):
        err = (np.asarray(a, np.float64) / 255 - np.asarray(b, np.float64) / 255) ** 2
        mse = err[outside].mean()
        return np.inf if mse == 0 else 10 * np.log10(1 / mse)

    assert row["outside_share"] == pytest.approx(outside.mean())
    if outside.mean() >= 0.05:
        assert row["p2p_psnr_out"] == pytest.approx(numpy_psnr(source, edited))
        assert row["naive_psnr_out"] == pytest.approx(numpy_psnr(plain_src, naive))
    pred = StubJudge().predict([edited, naive, source])
    assert row["p2p_new"] == (pred["object"][0] == "apple") and row["source_as_asked"] == (pred["object"][2] == "star")


def test_psnr_outside_a_box_equals_numpy(tiny_pipe, monkeypatch):
    """With the words' region fixed to a box, the swap's PSNR is numpy's over the pixels outside it."""
    import conceptlab.evaluation.recipes.editing as editing

    rng = np.random.default_rng(0)
    source, edited, plain, naive = (Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                                    for _ in range(4))
    box = np.zeros((32, 32), bool)
    box[4:20, 6:30] = True  # (rows, cols) of the swapped words
    regions = iter([(plain, box), (naive, np.zeros((32, 32), bool))])
    monkeypatch.setattr(editing, "word_region", lambda *a, **k: next(regions))
    row, _, _ = editing.score_swap(tiny_pipe, StubJudge(), "object", "a star", "an apple", "star", "apple", 0,
                                   source, edited)

    def numpy_psnr(a, b):
        diff = np.asarray(a, np.float64)[~box] / 255 - np.asarray(b, np.float64)[~box] / 255
        return 10 * np.log10(1 / np.mean(diff ** 2))

    assert row["outside_share"] == pytest.approx(1 - box.mean())
    assert row["p2p_psnr_out"] == pytest.approx(numpy_psnr(source, edited))
    assert row["naive_psnr_out"] == pytest.approx(numpy_psnr(plain, naive))


def test_summary_caps_identical_images_and_splits_by_kind():
    rows = [{"kind": "object", "p2p_new": True, "naive_new": False, "source_as_asked": True, "p2p_psnr_out": np.inf,
             "naive_psnr_out": 20.0, "outside_share": 0.5},
            {"kind": "held_item", "p2p_new": False, "naive_new": True, "source_as_asked": False, "p2p_psnr_out": 30.0,
             "naive_psnr_out": None, "outside_share": 0.0}]
    s = summarize_swaps(rows)
    assert s["p2p_new"] == 0.5 and s["p2p_psnr_out"] == 45.0 and s["naive_psnr_out"] == 20.0
    assert s["by_kind"]["object"]["p2p_new_when_source_as_asked"] == 1.0
    assert s["by_kind"]["held_item"]["p2p_new_when_source_as_asked"] is None


def test_swaps_are_read_as_the_judge_names_them():
    judge = StubJudge()
    assert swap_of("a sticker of a red star", "a sticker of a red apple", judge) == ("object", "star", "apple")
    assert swap_of("a red cat holding a burger", "a red cat holding an ice cream", judge) == \
        ("held_item", "burger", "ice cream")
    assert swap_of("a red cat at the beach", "a red cat in the jungle", judge) == ("background", "beach", "jungle")
    assert swap_of("a red cat", "a red dog", judge) == (None, "cat", "dog")  # locality only
    assert swap_of("a cat", "a big red cat", judge) is None


def test_adapters_disabled_is_the_base_model(tiny_pipe):
    import copy

    from peft import LoraConfig

    base = old_script_images(tiny_pipe, ["a monster"], [0])
    pipe = copy.deepcopy(tiny_pipe)
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q", "to_v"]))
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero: make the adapter change the images
    assert not same_pixels(old_script_images(pipe, ["a monster"], [0]), base)
    with adapters_disabled(pipe):
        assert same_pixels(old_script_images(pipe, ["a monster"], [0]), base)
    assert not same_pixels(old_script_images(pipe, ["a monster"], [0]), base)


def test_concept_prompts_carry_a_fixed_emotion_or_ask_for_each(concept_dirs, tmp_path):
    objects = set(ATTRIBUTES["object"])
    fixed, how = concept_prompts({"token": "<b>", "folder": str(concept_dirs / "broccoli"), "init": None}, objects)
    assert fixed == [JudgedPrompt("a sticker of a <b>", "broccoli", "happy")] and "happy" in how
    asked, _ = concept_prompts({"token": "<b>", "folder": str(tmp_path / "gone"), "init": "broccoli"}, objects)
    assert [p.prompt for p in asked] == ["a sticker of a happy <b>", "a sticker of a sad <b>",
                                         "a sticker of a angry <b>", "a sticker of a <b> in love"]
    with pytest.raises(InputError, match="--object"):
        concept_prompts({"token": "<x>", "folder": str(tmp_path), "init": "dog"}, objects)


def test_bars_state_their_verdict():
    low = Bar("identity judged right", 1 / 16, floor=0.9, why="the floor", n=16)
    assert not low.passed and low.line() == "identity judged right 6% (of 16) is below the bar >= 90% (the floor)"
    assert Bar("taken for a subject", 0.0, ceiling=0.05).passed
    assert not Bar("taken for a subject", 0.25, ceiling=0.05).passed
    assert Bar("PSNR", 31.0, floor=30.0, unit="dB").line() == "PSNR 31.0 dB meets the bar >= 30.0 dB"
    assert not Bar("not measured", None, floor=0.5).passed


def test_output_folder_never_inside_the_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert output_folder(run, None) == tmp_path / "run-eval"
    for bad in (run, run / "eval"):
        with pytest.raises(InputError, match="--out.*inside the run folder"):
            output_folder(run, bad)


def test_run_records_are_checked(tmp_path):
    with pytest.raises(InputError, match="RUN.*no training.json"):
        read_training_record(tmp_path, "DreamBooth", "subjects", "Pass a run")
    (tmp_path / "training.json").write_text(json.dumps({"config": {"concepts": [{"token": "<b>"}]}}))
    with pytest.raises(InputError, match="is not a DreamBooth run"):
        read_training_record(tmp_path, "DreamBooth", "subjects", "Pass a run")


def test_missing_judge_says_how_to_train_one(tmp_path):
    with pytest.raises(InputError, match="scripts/train_judge.py") as e:
        load_judge_checked(tmp_path / "nowhere")
    assert e.value.argument == "--judge"
