"""The held-out textual-inversion proof's data, prompts and measures (the training is the proof script's)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from conceptlab.evaluation.judge import load_judge
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
    H.export_concept_data("monster", tmp_path / "b", 0, seed=3, per_emotion=2)
    rows = read_metadata(tmp_path / "b")
    assert sorted(r["emotion"] for r in rows) == sorted(H.MONSTER_EMOTIONS * 2)
    assert {r["individual"] for r in rows} == {"tuki"} and {r["background"] for r in rows} <= set(H.MONSTER_SCENES)
    _, _, words = H.export_concept_data("monster", tmp_path / "c", 0, seed=3, per_emotion=1, captions="sticker")
    rows = read_metadata(tmp_path / "c")
    from conceptlab.evaluation.recipes.dreambooth import SCENES
    assert words == "monster" and all(r["text"].startswith("a sticker of a ") and r["text"].endswith(
        SCENES[r["background"]]) and r["emotion"] in r["text"] for r in rows), [r["text"] for r in rows]
    assert H.pivotal_name({"lora_lr": 1e-3, "per_emotion": 3}) == "pivotal-lora-lr0.001-per-emotion3"
    assert H.pivotal_name({"lora_lr": 1e-3, "captions": "sticker"}) == "pivotal-lora-lr0.001-sticker-captions"
    assert H.pivotal_name({"lora_lr": 1e-3, "seed": 1}) == "pivotal-lora-lr0.001-seed1"  # another training seed
    assert H.pivotal_name({"lora_lr": 1e-3, "seed": 0}) == "pivotal-lora-lr0.001"  # the default, as records had it


def test_dreambooth_renders_and_the_companion_are_the_dreambooth_proofs_own(tmp_path):
    """renders='dreambooth' and the companion draw what scripts/dreambooth_proof.py trains on (its render seeds,
    its five scenes, 3 per emotion, its caption form): the same pixels and captions as its own export."""
    import numpy as np
    from PIL import Image

    from conceptlab.evaluation.recipes import dreambooth as db

    _, _, words = H.export_concept_data("monster", tmp_path / "ho", 0, per_emotion=3, renders="dreambooth")
    assert H.export_companion(tmp_path / "bnh") == "<bnh>" and words == "monster"
    from conceptlab.world.export import export_balanced

    for folder, ident, seed in ((tmp_path / "ho", "tuki", 5000), (tmp_path / "bnh", "bnh", 5100)):
        # the reference: the DreamBooth proof's own export call as it stood before it moved into the recipe
        fixed = {"object": {"monster"}, "style": {"sticker"}, "accessory": {"none"}, "held_item": {"none"},
                 "flowers": {"none"}, "background": set(db.SCENES), "individual": {ident}}
        export_balanced(tmp_path / f"db-{ident}", 3, "emotion", ("happy", "sad", "angry", "in love"), seed=seed,
                        only=fixed, individual_rate=1.0, masks=False)
        db.sticker_captions(tmp_path / f"db-{ident}")
        rows, theirs = read_metadata(folder), read_metadata(tmp_path / f"db-{ident}")
        assert [r["text"] for r in rows] == [r["text"] for r in theirs]
        assert {r["individual"] for r in rows} == {ident} and sorted(r["emotion"] for r in rows) == sorted(
            H.MONSTER_EMOTIONS * 3)
        assert all(r["text"] == db.subject_prompt("", "monster", r["emotion"], r["background"]) for r in rows)
        for r, t in zip(rows, theirs, strict=True):
            assert np.array_equal(np.asarray(Image.open(folder / r["file_name"])),
                                  np.asarray(Image.open(tmp_path / f"db-{ident}" / t["file_name"])))
    name = H.pivotal_name({"lora_lr": 1e-4, "full": True, "token_init": "random", "renders": "dreambooth",
                           "companion": "bnh", "companion_prior": 0.3})
    assert name == "pivotal-full-lr0.0001-init-random-dreambooth-renders-with-bnh0.3"


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


def test_readings_count_what_the_judge_named_and_shards_sum_them():
    rows = [{"individual": True, "read": {"individual": "tuki", "emotion": "sad"}},
            {"individual": False, "read": {"individual": "moxo", "emotion": "sad"}},
            {"individual": True, "read": {"individual": "tuki", "emotion": "happy"}}]
    read = H.readings(rows)
    assert read == {"individual": {"tuki": 2, "moxo": 1}, "emotion": {"sad": 2, "happy": 1}}
    assert list(read["individual"]) == ["tuki", "moxo"]  # most often first
    pooled = H._pooled([{"identity": 2 / 3, "images": 3, "read": read},
                        {"identity": 0.0, "images": 1, "read": {"individual": {"moxo": 1}, "emotion": {"sad": 1}}}])
    assert pooled["read"]["individual"] == {"tuki": 2, "moxo": 2} and pooled["read"]["emotion"]["sad"] == 3
    assert math.isclose(pooled["identity"], 0.5) and pooled["images"] == 4


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
    result["concepts"]["monster"]["loops"] = {"pivotal": {"identity": 0.3525, "emotion": 0.915, "scene": 0.76,
                                                          "images": 400}, "reference": {"identity": 0.0, "images": 400}}
    bars = {b["what"]: b["holds"] for b in H.floors(result) if b["what"].startswith(("pivotal", "monster"))}
    assert bars == {"pivotal: identity / autoencoder ceiling": False, "pivotal: asked emotion": True,
                    "pivotal: asked scene": False, "monster: pivotal minus the reference loop (identity)": True}


def test_records_carry_provenance_and_land_in_one_table():
    result = {"config": {"first_seed": 1000, "per_prompt": 5, "steps": 400}, "concepts": {
        "style": {"token": "<pixel-art>", "plain_word": {"style": 0.0},
                  "loops": {"ours": {"style": 0.025, "object_and_colour": 0.7875, "images": 80, "train_seconds": 4.0}}},
        "monster": {"token": "<tuki>", "plain_word": {"identity": 0.0}, "ceiling": 0.77,
                    "loops": {"ours": {"identity": 0.1, "emotion": 0.8, "scene": 0.9, "images": 80,
                                       "train_seconds": 3.0}}}}}
    records = H.records_from(result, date="2026-11-30", commit="abc", model="v9", command="python x")
    assert [r["id"] for r in records] == ["ti-heldout-style-ours-1000", "ti-heldout-monster-ours-1000"]
    assert records[0]["metrics"] == {"headline": 2.5, "second": 78.8, "plain_word": 0.0, "train_seconds": 4.0}
    assert records[1]["metrics"]["ceiling"] == 77.0 and records[1]["seeds"] == "1000-1004 per prompt"
    page = H.merge_records(None, records)
    page = H.merge_records(page, records[:1])  # the same id again replaces, never duplicates
    assert [r["id"] for r in page["records"]] == ["ti-heldout-monster-ours-1000", "ti-heldout-style-ours-1000"]
    assert page["tables"][0]["rows"] == ["ti-heldout-style-ours-1000", "ti-heldout-monster-ours-1000"]
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("docs_script", Path(__file__).parents[2] / "scripts" / "docs.py")
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    assert docs.check_results({"heldout": page}) == []


def test_pivotal_records_name_every_changed_setting_and_may_lack_the_plain_word():
    cfg = {"first_seed": 1000, "per_prompt": 5, "steps": 800, "lr": 5e-3, "lora_lr": 1e-3, "lora_rank": 16,
           "images": 8, "guidance": 7.5}
    assert H.pivotal_name(cfg) == "pivotal-lora-lr0.001-rank16-steps800"
    assert H.pivotal_name({**cfg, "steps": 400, "lora_rank": 4}) == "pivotal-lora-lr0.001"
    assert H.pivotal_name({"lora_lr": 1e-4, "full": True, "text_encoder_lora": True}) == "pivotal-full-lr0.0001-te"
    assert H.pivotal_name({"lora_lr": 1e-4, "full": True, "text_encoder_lora": True, "text_encoder_lr": 1e-5}) \
        == "pivotal-full-lr0.0001-te-lr1e-05"
    assert H.pivotal_name({"lora_lr": 1e-4, "full": True, "prior_weight": 0.3}) == "pivotal-full-lr0.0001-prior0.3"
    assert H.pivotal_name({"lora_lr": 1e-4, "prior_weight": 0.3, "class_prompts": "class", "class_images": 20}) == \
        "pivotal-lora-lr0.0001-prior0.3-class-prompts-class-class-images20"
    assert H.pivotal_name({**cfg, "text_encoder_lora": True}) == "pivotal-lora-lr0.001-rank16-steps800-te"
    assert H.pivotal_name({"lora_lr": 1e-4}) == "pivotal-lora-lr0.0001"  # records written before these settings
    result = {"config": cfg, "concepts": {"monster": {"token": "<tuki>", "ceiling": 0.77, "loops": {
        "pivotal": {"identity": 0.3, "emotion": 0.9, "scene": 0.8, "images": 80, "train_seconds": 9.0}}}}}
    (record,) = H.records_from(result, date="2026-11-30", commit="abc", model="v9", command="python x")
    assert record["id"] == "ti-heldout-monster-pivotal-lora-lr0.001-rank16-steps800-1000"
    assert "plain_word" not in record["metrics"] and record["metrics"]["headline"] == 30.0


def test_shards_on_consecutive_seeds_join_weighted_by_their_images():
    def shard(first, n, identity, plain):
        return {"config": {"first_seed": first, "per_prompt": n, "steps": 400, "lora_lr": 1e-3}, "concepts": {
            "monster": {"token": "<tuki>", "init": "monster", "caption_words": "purple monster", "ceiling": 0.75,
                        "plain_word": {"noun": "monster", "identity": plain, "images": 16 * n},
                        "loops": {"pivotal": {"identity": identity, "emotion": 1.0, "scene": 1.0, "all": identity,
                                              "images": 16 * n, "train_seconds": 10.0 * n},
                                  **({"ours": {"identity": 0.0, "emotion": 1.0, "scene": 1.0, "all": 0.0,
                                               "images": 16 * n, "train_seconds": 1.0}} if first == 2000 else {})}}}}
    joined = H.merge_results([shard(2005, 15, 0.2, 0.0), shard(2000, 5, 0.6, 0.1)])
    assert joined["config"]["first_seed"] == 2000 and joined["config"]["per_prompt"] == 20
    m = joined["concepts"]["monster"]
    assert math.isclose(m["loops"]["pivotal"]["identity"], (0.6 * 80 + 0.2 * 240) / 320)
    assert m["loops"]["pivotal"]["images"] == 320 and m["loops"]["pivotal"]["train_seconds"] == 100.0
    assert set(m["loops"]) == {"pivotal"}, "a row only some shards finished is left out"
    assert math.isclose(m["plain_word"]["identity"], 0.1 * 80 / 320) and m["ceiling"] == 0.75
    with pytest.raises(ValueError, match="consecutive"):
        H.merge_results([shard(2000, 5, 0.6, 0.0), shard(2010, 5, 0.6, 0.0)])
    other = shard(2005, 5, 0.6, 0.0)
    other["config"]["lora_lr"] = 1e-4
    with pytest.raises(ValueError, match="different settings"):
        H.merge_results([shard(2000, 5, 0.6, 0.0), other])
    newer = shard(2005, 5, 0.6, 0.0)
    newer["config"]["text_encoder_lr"] = None  # a setting added later, at its default: the same run
    assert H.merge_results([shard(2000, 5, 0.6, 0.0), newer])["config"]["per_prompt"] == 10
    newer["config"]["text_encoder_lr"] = 1e-5
    with pytest.raises(ValueError, match="different settings"):
        H.merge_results([shard(2000, 5, 0.6, 0.0), newer])
    older = shard(2005, 5, 0.6, 0.0)
    older["concepts"]["monster"]["ceiling"] = 0.771  # e.g. measured on fewer renders by an earlier version
    with pytest.raises(ValueError, match="different ceilings"):
        H.merge_results([shard(2000, 5, 0.6, 0.0), older])


def test_a_plain_word_run_alone_is_a_row_with_the_style_ceiling():
    result = {"config": {"first_seed": 2000, "per_prompt": 5, "steps": 400}, "concepts": {
        "style": {"token": "<pixel-art>", "ceiling": 0.0, "loops": {},
                  "plain_word": {"noun": "pixel art", "style": 0.025, "object_and_colour": 0.9, "images": 80}}}}
    (record,) = H.records_from(result, date="2026-11-30", commit="abc", model="v9", command="python x")
    assert record["id"] == "ti-heldout-style-plain-2000" and record["samples"] == "80 judged images"
    assert record["metrics"] == {"headline": 2.5, "second": 90.0, "plain_word": 2.5, "ceiling": 0.0}


def test_style_ceiling_reads_pixel_art_through_the_autoencoder():
    from types import SimpleNamespace

    import torch

    from tests.evaluation.test_roundtrip import _FakeVAE

    class Blank(_FakeVAE):  # decodes every latent to the same flat grey: no style left to read
        def decode(self, z):
            return SimpleNamespace(sample=torch.zeros_like(z))

    judge = load_judge()
    assert H.style_ceiling(_FakeVAE(), judge, seeds=1) > 0.9  # lossless: the renders' own accuracy
    assert H.style_ceiling(_FakeVAE(factor=2), judge, seeds=1) > 0.9  # blocky decoding keeps pixel art
    assert H.style_ceiling(Blank(), judge, seeds=1) == 0.0


def test_the_proofs_companion_trains_beside_tuki_with_its_own_prior(tmp_path, monkeypatch):
    """--companion bnh: the pivotal row trains <tuki> (no prior of its own) and <bnh> (its prior on its captions) in
    one run, the token start and the class prompts passed through; without it, tuki alone and no prior."""
    import importlib.util

    import conceptlab.training.pivotal as pivotal

    spec = importlib.util.spec_from_file_location("heldout_proof", Path(__file__).parents[2] / "scripts" /
                                                  "ti_heldout_proof.py")
    proof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proof)
    seen = []
    monkeypatch.setattr(pivotal, "train_pivotal", lambda cfg, out, pipe: seen.append(cfg) or (pipe, SimpleNamespace(
        seconds=1.0)))
    cfg = H.HeldOutConfig(full=True, token_init="random", companion="bnh+moxo", companion_prior=0.3,
                          class_prompts="class")
    proof.train_pivotal_loop(None, cfg, "<tuki>", "monster", "monster", tmp_path / "tuki-data", tmp_path / "run")
    pc = seen[-1]
    assert [(s.identifier, s.prior_weight, s.class_prompts) for s in pc.subjects] == [
        ("<tuki>", 0.0, None), ("<bnh>", 0.3, "captions"), ("<moxo>", 0.3, "captions")]
    assert {r["individual"] for r in read_metadata(tmp_path / "moxo-data")} == {"moxo"}
    assert pc.prior_preservation and pc.class_prompts == "class" and pc.token_init == "random" and not pc.lora
    assert len(read_metadata(tmp_path / "bnh-data")) == 12
    proof.train_pivotal_loop(None, H.HeldOutConfig(), "<tuki>", "monster", "monster", tmp_path / "t", tmp_path / "r2")
    assert [s.identifier for s in seen[-1].subjects] == ["<tuki>"] and not seen[-1].prior_preservation
