"""The two-subject DreamBooth proof's measures: seeds it is told, the per-subject ceiling, the reference loop's loss,
the floors and the records it adds to the results page."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from conceptlab.errors import InputError
from conceptlab.evaluation.recipes import dreambooth as R
from conceptlab.evaluation.recipes import heldout as H
from tests.docs.examples import REPO
from tests.evaluation.test_recipes import STEPS, StubJudge, old_script_images, same_pixels


def test_subject_and_class_scores_start_at_the_first_seed(tiny_pipe):
    judge = StubJudge()
    scores, images = R.subject_scores(tiny_pipe, judge, [("tuki", "monster")], ("sad",), ("beach",), seeds=2,
                                      steps=STEPS, progress=False, first_seed=2000)
    prompt = "a sticker of a sad tuki monster at the beach"
    assert same_pixels(images, old_script_images(tiny_pipe, [prompt] * 2, [2000, 2001]))
    assert scores["images"] == 2
    seen = judge.predict(images)["individual"]
    missed = [p for p in seen if p != "tuki"]
    assert scores["per_subject"]["tuki"]["missed_as"] == {p: missed.count(p) for p in set(missed)}
    assert sum(scores["per_subject"]["tuki"]["missed_as"].values()) == round(2 * (1 - scores["identity"]))
    read = [p for p in judge.predict(images)["emotion"] if p != "sad"]
    assert scores["per_subject"]["tuki"]["emotion_missed_as"] == {"sad": {p: read.count(p) for p in set(read)}}
    cls, images = R.class_scores(tiny_pipe, judge, "monster", {"tuki", "bnh"}, n=2, steps=STEPS, progress=False,
                                 first_seed=2500)
    assert same_pixels(images, old_script_images(tiny_pipe, ["a monster"] * 2, [2500, 2501]))
    pred = judge.predict(images)["individual"]
    assert cls["judged_as_each"] == {i: pred.count(i) / 2 for i in ("bnh", "tuki")}
    assert sum(cls["judged_as_each"].values()) == cls["judged_as_subject"]


def test_each_subjects_ceiling_is_the_held_out_proofs_round_trip(tiny_pipe):
    """The same renders through the same VAE give the held-out proof's tuki ceiling; bnh gets its own renders."""
    judge = StubJudge()
    got = R.subject_ceilings(tiny_pipe.vae, judge, ("tuki", "bnh"), H.MONSTER_EMOTIONS, H.MONSTER_SCENES, seeds=1,
                             size=32)
    assert got["tuki"]["round_trip"] == H.monster_ceiling(tiny_pipe.vae, judge, seeds=1, size=32)
    assert got["tuki"]["images"] == got["bnh"]["images"] == 16
    assert 0 <= got["bnh"]["round_trip"] <= 1
    from conceptlab.evaluation.roundtrip import RoundTripGroup, subject_group, vae_ceiling

    specs = subject_group("bnh", 1, H.MONSTER_EMOTIONS, H.MONSTER_SCENES).specs  # the emotion, judged by hand
    for e in H.MONSTER_EMOTIONS:
        mine = vae_ceiling(tiny_pipe.vae, judge, [RoundTripGroup("x", [s for s in specs if s.emotion == e], "emotion")],
                           size=32)["x"]["round_trip"]
        assert got["bnh"]["emotion_by_emotion"][e] == mine
    assert got["bnh"]["emotion_round_trip"] == pytest.approx(np.mean(list(got["bnh"]["emotion_by_emotion"].values())))
    for sc in H.MONSTER_SCENES:  # the identity, scene by scene, judged by hand on that scene's renders alone
        mine = vae_ceiling(tiny_pipe.vae, judge, [RoundTripGroup("x", [s for s in specs if s.background == sc],
                                                                 "individual")], size=32)["x"]["round_trip"]
        assert got["bnh"]["identity_by_scene"][sc] == mine
    assert got["bnh"]["round_trip"] == pytest.approx(np.mean(list(got["bnh"]["identity_by_scene"].values())))


@pytest.fixture(scope="module")
def reference_module():
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_dreambooth import ReferenceDreamBooth

    return ReferenceDreamBooth


def test_reference_loop_pairs_class_images_and_weights_their_loss(concept_dirs, reference_module):
    """loss = instance + w x class, exactly (same draws, the optimizer at lr 0); each subject's fixed prompt
    with a class prompt of its own class beside it."""
    from conceptlab.models.tiny import build_pipeline
    from conceptlab.training.data import load_concept_images, prepare_image, to_pixels
    from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig

    pipe = build_pipeline("tiny", seed=0)
    subjects = [SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster"),
                SubjectConfig("bnh", str(concept_dirs / "emoji"), "emoji")]
    method = DreamBooth(pipe, DreamBoothConfig(subjects=subjects))
    pixels = [to_pixels([prepare_image(im, 32) for im in load_concept_images(s.folder, "x")]) for s in subjects]
    opt = torch.optim.AdamW(method.parameters(), lr=0.0, weight_decay=0.0)
    texts, encode = [], method._encode
    method._encode = lambda t, sizes=None: texts.append(list(t)) or encode(t, sizes)
    losses = {}
    for w in (0.0, 1.0, 2.0):
        ref = reference_module(method, pixels, opt, [pixels[1], pixels[0]], prior_weight=w)
        losses[w] = ref.step(4, torch.Generator().manual_seed(3))
    assert losses[1.0] == pytest.approx((losses[0.0] + losses[2.0]) / 2, rel=1e-5)
    assert losses[2.0] != pytest.approx(losses[0.0])
    batch = texts[0]
    pairs = {("a tuki monster", "a monster"), ("a bnh emoji", "a emoji")}
    assert len(batch) == 8 and set(zip(batch[:4], batch[4:])) <= pairs
    reference_module(method, pixels, opt).step(4, torch.Generator().manual_seed(3))
    assert len(texts[-1]) == 4 and set(texts[-1]) <= {"a tuki monster", "a bnh emoji"}  # no class images


def _report(tuki: float, bnh: float, reference: float, class_share: float) -> dict:
    def loop(t, b):
        per = {"tuki": {"identity": t, "emotion": 0.9, "scene": 0.95, "all": 0.5, "images": 60},
               "bnh": {"identity": b, "emotion": 0.8, "scene": 0.9, "all": 0.5, "images": 60}}
        return {"train_seconds": 12.0, "subjects": {"identity": (t + b) / 2, "emotion": 0.85, "scene": 0.925,
                                                    "per_subject": per, "images": 120},
                "class": {"judged_as_subject": class_share, "images": 48}}

    return {"config": {"steps": 600, "loops": ["ours", "reference"], "train_text_encoder": True, "lora": False,
                       "captions": "varying", "class_prompts": "class", "prior_weight": 0.3,
                       "prior": ["tuki=0.3,class"], "lr": None, "seeds": 3, "class_prompt_images": 48,
                       "class_images": 50},
            "subjects": ["tuki", "bnh"], "seeds": [2000, 2002], "class_seeds": [2500, 2547],
            "ceiling": {"tuki": {"round_trip": 0.8}, "bnh": {"round_trip": 1.0}},
            "loops": {"ours": loop(tuki, bnh), "reference": loop(reference, reference)}}


def test_floors_hold_per_subject():
    holds = {b["what"].split(" (")[0]: b["holds"] for b in R.proof_floors(_report(0.76, 0.95, 0.3, 0.05))}
    assert holds["tuki: identity / round-trip ceiling"] and holds["bnh: identity / round-trip ceiling"]
    assert not holds["bnh: asked emotion"] and holds["tuki: asked emotion"]
    assert holds["bare class prompt judged a subject"] and holds["identity, ours minus the reference"]
    holds = {b["what"].split(" (")[0]: b["holds"] for b in R.proof_floors(_report(0.70, 0.95, 0.8, 0.10))}
    assert not holds["tuki: identity / round-trip ceiling"]  # 0.70 / 0.8 = 87.5% of its ceiling
    assert not holds["bare class prompt judged a subject"] and not holds["identity, ours minus the reference"]


def test_records_go_into_the_results_page_and_render():
    spec = importlib.util.spec_from_file_location("docs_script", REPO / "scripts" / "docs.py")
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    records = R.proof_records(_report(0.72, 0.95, 0.3, 0.05), date="2026-11-30", commit="abc", model="v9")
    ours = records[0]["metrics"]
    assert ours["tuki"] == 72.0 and ours["tuki_of_ceiling"] == 90.0 and ours["bnh_of_ceiling"] == 95.0
    assert ours["ceilings"] == [80.0, 100.0] and ours["emotion_per_subject"] == [90.0, 80.0]
    assert "--prior tuki=0.3,class" in records[0]["command"] and "--first-seed 2000" in records[0]["command"]
    assert "tuki_by_scene" not in ours  # a report without per-scene readings records none
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["loops"]["ours"]["subjects"]["per_subject"]["tuki"]["identity_by_scene"] = {"plain": 0.875, "jungle": 0.5}
    report["ceiling"]["tuki"]["identity_by_scene"] = {"plain": 0.95, "jungle": 0.9}
    ours = R.proof_records(report, date="d", commit="c", model="v9")[0]["metrics"]
    assert ours["tuki_by_scene"] == {"plain": 87.5, "jungle": 50.0} and "bnh_by_scene" not in ours
    assert ours["tuki_by_scene_ceiling"] == {"plain": 95.0, "jungle": 90.0}
    page = {"title": "DreamBooth", "tables": [{"title": "older", "columns": [], "rows": []}], "records": []}
    merged = R.merge_proof_records(copy.deepcopy(page), records)
    assert R.merge_proof_records(copy.deepcopy(merged), records) == merged  # recording twice changes nothing
    assert merged["tables"][0]["rows"] == [r["id"] for r in records] and len(merged["records"]) == 2
    moved = copy.deepcopy(merged)  # a record moved to a table of its own stays there when it is made again
    moved["tables"].append({"title": "choosing runs", "columns": [], "rows": [records[0]["id"]]})
    moved["tables"][0]["rows"].remove(records[0]["id"])
    again = R.merge_proof_records(copy.deepcopy(moved), records)
    assert again["tables"] == moved["tables"] and len(again["records"]) == 2
    text = docs.render_results_page("dreambooth", merged)
    assert "| ours | --prior tuki=0.3,class | 600 | 2000-2002 per prompt" in text
    assert "72% (of ceiling 90%)" in text


def test_the_emotion_ceiling_is_named_in_the_floors_and_recorded_when_measured():
    report = _report(0.72, 0.95, 0.3, 0.05)
    assert "emotion_ceilings" not in R.proof_records(report, date="d", commit="c", model="v9")[0]["metrics"]
    report["ceiling"]["tuki"]["emotion_round_trip"], report["ceiling"]["bnh"]["emotion_round_trip"] = 0.995, 0.905
    whats = [b["what"] for b in R.proof_floors(report)]
    assert "bnh: asked emotion (round-trip ceiling 90.5%)" in whats
    assert R.proof_records(report, date="d", commit="c", model="v9")[0]["metrics"]["emotion_ceilings"] == [99.5, 90.5]


def test_records_of_a_run_judged_at_a_chosen_checkpoint_say_which_step_and_how():
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["config"].update(select_by="identity=1,emotion=1", validate_every=200, validation_seeds=2)
    report["selection"] = {"select_by": {"identity": 1.0, "emotion": 1.0}, "step": 1400, "score": 1.7}
    ours, ref = R.proof_records(report, date="d", commit="c", model="v9")
    assert ours["settings"]["setup"].endswith("; step 1400 of 600 chosen by identity=1,emotion=1 on validation seeds 0..")
    assert "--select-by identity=1,emotion=1 --validate-every 200 --validation-seeds 2" in ours["command"]
    assert "chosen" not in ref["settings"]["setup"]
    report["config"]["ema_decay"] = 0.99
    assert " --ema-decay 0.99 " in R.proof_records(report, date="d", commit="c", model="v9")[0]["command"]


def test_records_name_the_training_seed_and_schedule_so_the_command_reproduces_the_run():
    report = _report(0.72, 0.95, 0.3, 0.05)
    plain = R.proof_records(report, date="d", commit="c", model="v9")[0]["command"]
    assert " --seed " not in plain and "--lr-schedule" not in plain and "--warmup-steps" not in plain
    report["config"].update(seed=3, lr_schedule="cosine", warmup_steps=50)
    command = R.proof_records(report, date="d", commit="c", model="v9")[0]["command"]
    assert " --lr-schedule cosine --warmup-steps 50 --seed 3 --seeds 3 " in command


def test_records_of_a_balanced_run_name_its_renders_and_levers():
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["config"].update(per_emotion=3, timestep_bias="earlier", timestep_bias_multiplier=3.0,
                            timestep_bias_portion=0.25)
    ours, reference = R.proof_records(report, date="2026-11-30", commit="abc", model="v9", name="balanced")
    assert ours["id"].endswith("-balanced") and reference["id"].endswith("-balanced")
    assert "--per-emotion 3" in ours["command"] and "--timestep-bias earlier --timestep-bias-multiplier 3" in ours["command"]
    assert reference["settings"]["setup"] == R.REFERENCE_SETUP + "; 3 renders per emotion"


def test_records_name_the_subjects_whose_renders_were_balanced():
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["config"].update(per_emotion=3, balanced=["tuki"])
    _, reference = R.proof_records(report, date="2026-11-30", commit="abc", model="v9")
    assert "--per-emotion 3 --balanced tuki" in reference["command"]
    assert reference["settings"]["setup"].endswith("; 3 renders per emotion of tuki")


def test_records_of_renders_covering_every_scene_say_so():
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["config"].update(per_emotion=3, cover_scenes=True)
    ours, reference = R.proof_records(report, date="2026-11-30", commit="abc", model="v9")
    assert "--per-emotion 3 --cover-scenes" in ours["command"]
    assert reference["settings"]["setup"].endswith("; 3 renders per emotion in every scene")


def test_scene_cover_holds_every_emotion_equally_every_scene_and_no_pair_twice(tmp_path):
    from collections import Counter

    cells = R.scene_cover(3)
    pairs = [(c["emotion"], c["background"]) for c in cells]
    assert len(pairs) == 12 and len(set(pairs)) == 12
    assert set(Counter(e for e, _ in pairs).values()) == {3}
    assert sorted(Counter(s for _, s in pairs).values()) == [2, 2, 2, 3, 3] and set(R.SCENES) == {s for _, s in pairs}
    R.export_subject_renders(tmp_path / "tuki", "tuki", 5000, per_emotion=3, cover_scenes=True)
    rows = [json.loads(line) for line in (tmp_path / "tuki" / "metadata.jsonl").read_text().splitlines()]
    assert [(r["emotion"], r["background"]) for r in rows] == pairs  # the renders are the cells, in order
    assert {r["individual"] for r in rows} == {"tuki"} and len({r["file_name"] for r in rows}) == 12
    assert all((tmp_path / "tuki" / r["file_name"]).exists() for r in rows)


def test_a_masked_run_records_its_mask_flags_so_the_command_reproduces_it():
    report = _report(0.72, 0.95, 0.3, 0.05)
    assert "--mask" not in R.proof_records(report, date="d", commit="c", model="v9")[0]["command"]
    report["config"].update(mask_weight=5.0, masks="face", masked=["bnh"])
    command = R.proof_records(report, date="d", commit="c", model="v9")[0]["command"]
    assert command.endswith("--mask-weight 5 --masks face --masked bnh")


def test_masked_weights_only_the_named_subjects_masks(tmp_path):
    proof = _proof_script()
    from argparse import Namespace

    a = Namespace(captions="varying", mask_weight=5.0, masked=["bnh"], subjects=["tuki", "bnh"])
    masks = {s.identifier: s.masks for s in proof.subject_configs(tmp_path, a, {})}
    assert masks == {"tuki": None, "bnh": str(tmp_path / "bnh" / "masks")}
    a.masked = None  # every subject's, as before --masked
    assert all(s.masks for s in proof.subject_configs(tmp_path, a, {}))


def test_runs_pooled_over_training_seeds_average_their_shares_and_sum_their_counts():
    import math

    def run(seed, tuki, bnh, colours):
        report = _report(tuki, bnh, 0.5, 0.0)
        report["config"]["seed"] = seed
        for loop in report["loops"].values():
            loop["class"].update(distribution={"colour": colours}, entropy_bits={"colour": 0.0}, judged_class=0.9)
        return report

    a, b = run(0, 0.8, 0.9, {"red": 3, "blue": 1}), run(1, 0.4, 1.0, {"red": 1, "green": 3})
    pooled = R.pool_proof_reports([a, b])
    ours = pooled["loops"]["ours"]
    assert ours["subjects"]["per_subject"]["tuki"]["identity"] == pytest.approx(0.6)
    assert ours["subjects"]["identity"] == pytest.approx((0.85 + 0.7) / 2)
    assert ours["subjects"]["images"] == 240 and ours["subjects"]["per_subject"]["bnh"]["images"] == 120
    assert ours["class"]["distribution"]["colour"] == {"red": 4, "blue": 1, "green": 3}
    shares = [4 / 8, 1 / 8, 3 / 8]
    assert ours["class"]["entropy_bits"]["colour"] == round(-sum(p * math.log2(p) for p in shares), 3)
    assert ours["train_seconds"] == 24.0 and pooled["config"]["seed"] == [0, 1]
    assert pooled["runs"][1] == {"seed": 1, "identity": {"ours": {"tuki": 0.4, "bnh": 1.0},
                                                         "reference": {"tuki": 0.5, "bnh": 0.5}}}
    bars = {bar["what"].split(" (")[0]: bar for bar in pooled["floors"]}
    assert bars["tuki: identity / round-trip ceiling"]["value"] == pytest.approx(0.6 / 0.8)
    ours_record, reference_record = R.proof_records(pooled, date="d", commit="c", model="v9")
    assert " --seed 0 1 --seeds 3 " in ours_record["command"] and ours_record["samples"].startswith("240 judged")
    assert reference_record["settings"]["setup"].endswith("; training seeds 0, 1 pooled")
    newer = run(3, 0.5, 0.5, {"red": 1})  # a run made after the proof gained a setting, left at its default
    newer["config"].update(lr_schedule="constant", warmup_steps=0, cover_scenes=False)
    defaults = {"lr_schedule": "constant", "warmup_steps": 0, "cover_scenes": False}  # as the proof's parser has
    assert R.pool_proof_reports([a, newer], defaults)["config"]["seed"] == [0, 3]
    marked = copy.deepcopy(newer)  # a run judged after the features judge existed: its marks beside a run's without
    marked["loops"]["ours"]["subjects"]["per_subject"]["tuki"]["marks"] = {"all": {"every": 0.7}, "eyes_read": {"3": 0.7}}
    for runs in ([a, marked], [marked, a]):
        tuki = R.pool_proof_reports(runs, defaults)["loops"]["ours"]["subjects"]["per_subject"]["tuki"]
        assert "marks" not in tuki and tuki["identity"] == pytest.approx(0.65)  # not read on both: left out
    both = R.pool_proof_reports([marked, {**copy.deepcopy(marked), "config": {**marked["config"], "seed": 4}}], defaults)
    assert both["loops"]["ours"]["subjects"]["per_subject"]["tuki"]["marks"]["all"]["every"] == pytest.approx(0.7)
    with pytest.raises(InputError, match="lr_schedule"):  # without the defaults, a missing setting differs
        R.pool_proof_reports([a, newer])
    newer["config"]["lr_schedule"] = "cosine"
    with pytest.raises(InputError, match="lr_schedule"):
        R.pool_proof_reports([a, newer], defaults)
    other = run(2, 0.5, 0.5, {"red": 1})
    other["config"]["steps"] = 900
    with pytest.raises(InputError, match="steps.*differ in more than their training seed"):
        R.pool_proof_reports([a, other])
    with pytest.raises(InputError, match="training seed twice"):
        R.pool_proof_reports([a, run(0, 0.1, 0.1, {"red": 1})])


def test_pooled_marks_sum_their_counts_and_average_their_shares():
    """Which marks the generations keep pools as counts where it is counts (missed images), a label one run never
    read (eyes '3') counting 0 there."""
    def run(seed, eyes_kept, missed, eyes_read):
        report = _report(0.5, 0.9, 0.5, 0.0)
        report["config"]["seed"] = seed
        for loop in report["loops"].values():
            loop["class"].update(distribution={"colour": {"red": 1}}, entropy_bits={"colour": 0.0})
        report["loops"]["ours"]["subjects"]["per_subject"]["tuki"]["marks"] = {
            "all": {"eyes": eyes_kept, "colour": 1.0}, "eyes_read": eyes_read, "missed_images": missed,
            "missed_kept": {"eyes": 1, "colour": missed}}
        tuki = report["loops"]["ours"]["subjects"]["per_subject"]["tuki"]
        tuki.update(missed_as={"none": missed - 1, "bnh": 1}, emotion_missed_as={"happy": {"sad": seed + 1}})
        return report

    a, b = run(0, 0.5, 30, {"2": 0.5, "3": 0.5}), run(1, 0.25, 10, {"2": 1.0})
    marks = R.pool_proof_reports([a, b])["loops"]["ours"]["subjects"]["per_subject"]["tuki"]["marks"]
    assert marks["all"] == {"eyes": pytest.approx(0.375), "colour": 1.0}
    assert marks["eyes_read"] == {"2": pytest.approx(0.75), "3": pytest.approx(0.25)}
    assert marks["missed_images"] == 40 and marks["missed_kept"] == {"eyes": 2, "colour": 40}
    tuki = R.pool_proof_reports([a, b])["loops"]["ours"]["subjects"]["per_subject"]["tuki"]
    assert tuki["missed_as"] == {"none": 38, "bnh": 2} and tuki["emotion_missed_as"] == {"happy": {"sad": 3}}


def test_a_soup_of_seed_runs_may_be_judged_on_other_seeds_but_not_made_of_other_settings():
    a, b = _report(0.5, 0.9, 0.5, 0.0), _report(0.6, 0.9, 0.5, 0.0)
    a["config"]["seed"], b["config"]["seed"] = 1, 2
    b["seeds"], b["config"]["first_seed"] = [1000, 1001], 1000  # judged on the choosing seeds, a on the report's
    assert R.check_seed_runs([a, b], argument="--soup", judged=False) == [1, 2]
    with pytest.raises(InputError, match="--pool.*first_seed"):
        R.check_seed_runs([a, b])
    b["config"]["steps"] = 900
    with pytest.raises(InputError, match="--soup.*steps"):
        R.check_seed_runs([a, b], argument="--soup", judged=False)


def test_runs_pooled_may_give_their_priors_in_any_order_but_not_other_priors():
    a, b = _report(0.5, 0.9, 0.5, 0.0), _report(0.6, 0.9, 0.5, 0.0)
    a["config"]["seed"], b["config"]["seed"] = 1, 2
    a["config"]["prior"], b["config"]["prior"] = ["tuki=0.3,captions", "bnh=0.3,captions"], ["bnh=0.3,captions",
                                                                                              "tuki=0.3,captions"]
    assert R.check_seed_runs([a, b]) == [1, 2]
    b["config"]["prior"] = ["bnh=0.3,captions", "tuki=0"]
    with pytest.raises(InputError, match="--pool.*prior"):
        R.check_seed_runs([a, b])


def test_records_of_a_soup_say_so_and_reproduce_the_command():
    report = _report(0.8, 0.9, 0.5, 0.0)
    report["config"].update(seed=[1, 2, 3], soup=True, loops=["ours"])
    report["loops"].pop("reference")
    (record,) = R.proof_records(report, date="d", commit="c", model="v9")
    assert " --seed 1 2 3 --soup " in record["command"]
    assert record["settings"]["setup"].endswith("; weight soup of training seeds 1, 2, 3")
    (worded,) = R.proof_records(report, date="d", commit="c", model="v9", setup="tuki alone; weight soup of training "
                                                                                 "seeds 1, 2, 3")
    assert worded["settings"]["setup"] == "tuki alone; weight soup of training seeds 1, 2, 3"  # said once


def _proof_script():
    spec = importlib.util.spec_from_file_location("db_proof", REPO / "scripts" / "dreambooth_proof.py")
    proof = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proof)
    return proof


def test_per_emotion_counts_can_differ_per_subject_and_the_record_reproduces_them(tmp_path):
    from argparse import Namespace

    proof = _proof_script()
    assert proof.parse_per_emotion(["3"]) == 3  # one count: the records made before stay as they were
    counts = proof.parse_per_emotion(["10", "bnh=3"])
    assert counts == {"tuki": 10, "bnh": 3}
    assert proof.parse_per_emotion(["tuki=10"]) == {"tuki": 10}  # bnh keeps --images drawn at random
    for bad in ("ghost=3", "bnh=many", "-2"):
        with pytest.raises(SystemExit, match="--per-emotion"):
            proof.parse_per_emotion([bad])
    a = Namespace(per_emotion=counts, balanced=None, images=5, cover_scenes=False, render_scenes={}, render_seed={})
    for ident, n in (("tuki", 10), ("bnh", 3)):
        proof.export_subject(tmp_path / ident, ident, proof.R.SUBJECT_RENDER_SEEDS[ident], a, None)
        assert len(list((tmp_path / ident).glob("*.png"))) == 4 * n
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["config"].update(per_emotion=counts)
    ours, reference = R.proof_records(report, date="d", commit="c", model="v9")
    assert " --per-emotion tuki=10 bnh=3" in ours["command"]
    assert reference["settings"]["setup"].endswith("; renders per emotion: tuki 10, bnh 3")


def test_render_scenes_and_seed_choose_a_subjects_renders_and_the_record_reproduces_them(tmp_path):
    from argparse import Namespace

    from conceptlab.world.export import read_metadata

    proof = _proof_script()
    scenes, seeds = proof.parse_render_scenes(["tuki=plain,snowy mountain"]), proof.parse_render_seed(["bnh=6100"])
    assert scenes == {"tuki": ["plain", "snowy mountain"]} and seeds == {"bnh": 6100}
    for flag, parse, bad in (("--render-scenes", proof.parse_render_scenes, "tuki=moon"),
                             ("--render-scenes", proof.parse_render_scenes, "ghost=plain"),
                             ("--render-seed", proof.parse_render_seed, "bnh=x")):
        with pytest.raises(SystemExit, match=flag):
            parse([bad])
    a = Namespace(per_emotion=3, balanced=None, images=5, cover_scenes=False, render_scenes=scenes, render_seed=seeds)
    for ident in ("tuki", "bnh"):
        proof.export_subject(tmp_path / ident, ident, proof.R.SUBJECT_RENDER_SEEDS[ident], a, None)
    assert {r["background"] for r in read_metadata(tmp_path / "tuki")} <= {"plain", "snowy mountain"}
    assert len(list((tmp_path / "tuki").glob("*.png"))) == 12
    assert min(r["seed"] for r in read_metadata(tmp_path / "bnh")) == 6100  # bnh from its own draw
    with pytest.raises(InputError, match="cover_scenes"):
        R.export_subject_renders(tmp_path / "x", "tuki", 0, per_emotion=1, cover_scenes=True, scenes=["plain"])
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["config"].update(render_scenes=scenes, render_seed=seeds)
    ours, reference = R.proof_records(report, date="d", commit="c", model="v9")
    assert " --render-scenes 'tuki=plain,snowy mountain' --render-seed bnh=6100" in ours["command"]
    assert reference["settings"]["setup"].endswith("; tuki's renders only in plain and snowy mountain; bnh's renders "
                                                   "from render seed 6100")


def test_one_subject_alone_or_a_third_beside_is_trained_and_recorded_as_run(tmp_path):
    """--subjects tuki: the run's subject configs, report and record hold tuki alone, and the record's command
    reproduces the flag; the proof's two subjects together add no flag, a third beside them does."""
    from argparse import Namespace

    proof = _proof_script()
    a = Namespace(subjects=["tuki"], captions="varying", mask_weight=None, masked=None)
    configs = proof.subject_configs(tmp_path, a, {"bnh": (0.3, "captions"), "tuki": (0.0, None)})
    assert [(c.identifier, c.prior_weight) for c in configs] == [("tuki", 0.0)]
    report = _report(0.72, 0.95, 0.3, 0.05)
    plain = R.proof_records(report, date="d", commit="c", model="v9")[0]["command"]
    assert "--subjects" not in plain
    report["subjects"] = ["tuki"]
    report["config"].update(prior=["tuki=0.3,captions", "bnh=0.3,captions"], render_seed={"tuki": 6000, "bnh": 6100})
    for loop in report["loops"].values():
        del loop["subjects"]["per_subject"]["bnh"]
    ours, reference = R.proof_records(report, date="d", commit="c", model="v9")
    assert " --loops ours reference --subjects tuki --train-text-encoder" in ours["command"]
    assert " --prior tuki=0.3,captions" in ours["command"] and " --render-seed tuki=6000" in ours["command"]
    assert "bnh" not in ours["command"]  # an untrained subject's options did nothing, and the proof now refuses them
    assert reference["settings"]["setup"].endswith("; tuki alone")
    assert ours["metrics"]["ceilings"] == [80.0] and "bnh" not in ours["metrics"] and ours["metrics"]["tuki"] == 72.0
    floors = [b["what"] for b in R.proof_floors(report)]
    assert not any(w.startswith("bnh") for w in floors) and floors[0].startswith("tuki: identity")
    three = _report(0.72, 0.95, 0.3, 0.05)  # a third subject beside the two
    three["subjects"], three["ceiling"]["moxo"] = ["tuki", "bnh", "moxo"], {"round_trip": 0.9}
    for loop in three["loops"].values():
        loop["subjects"]["per_subject"]["moxo"] = {**loop["subjects"]["per_subject"]["bnh"], "identity": 0.45}
    ours, reference = R.proof_records(three, date="d", commit="c", model="v9")
    assert " --subjects tuki bnh moxo " in ours["command"] and ours["metrics"]["moxo_of_ceiling"] == 50.0
    assert reference["settings"]["setup"].endswith("; tuki, bnh and moxo together")


def test_renders_whose_round_trip_loses_the_subject_are_dropped_with_their_rows(tiny_pipe, tmp_path):
    from PIL import Image

    from conceptlab.evaluation.roundtrip import round_trip
    from conceptlab.world.export import read_metadata

    R.export_subject_renders(tmp_path, "tuki", 5000, per_emotion=2)
    rows = read_metadata(tmp_path)
    judge = StubJudge()  # reads labels from grey levels: some round trips come out 'tuki', some not
    read = judge.predict(round_trip(tiny_pipe.vae, [Image.open(tmp_path / r["file_name"]).convert("RGB")
                                                    for r in rows]))["individual"]
    lost = R.drop_lost_renders(tmp_path, "tuki", tiny_pipe.vae, judge)
    assert 0 < len(lost) < len(rows), read  # the stub keeps some renders and drops others
    assert lost == [r["file_name"] for r, who in zip(rows, read) if who != "tuki"]
    kept = [r["file_name"] for r in read_metadata(tmp_path)]
    assert kept == [r["file_name"] for r, who in zip(rows, read) if who == "tuki"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(kept)
    report = _report(0.72, 0.95, 0.3, 0.05)
    report["config"]["drop_lost_renders"] = True
    ours, reference = R.proof_records(report, date="d", commit="c", model="v9")
    assert " --drop-lost-renders" in ours["command"]
    assert reference["settings"]["setup"].endswith("; renders whose round trip loses the subject dropped")


def test_records_carry_the_second_reading_of_identity_when_measured():
    report = _report(0.5, 0.9, 0.5, 0.0)
    report["loops"].pop("reference")
    report["config"]["loops"] = ["ours"]
    assert "tuki_marks" not in R.proof_records(report, date="d", commit="c", model="v9")[0]["metrics"]
    for ident, every in (("tuki", 0.85), ("bnh", 1.0)):
        report["loops"]["ours"]["subjects"]["per_subject"][ident]["marks"] = {"all": {"every": every}}
        report["ceiling"][ident]["marks_round_trip"] = 1.0
    report["loops"]["ours"]["class"]["marked_as_subject"] = 1 / 48
    metrics = R.proof_records(report, date="d", commit="c", model="v9")[0]["metrics"]
    assert (metrics["tuki_marks"], metrics["bnh_marks"], metrics["tuki_marks_ceiling"]) == (85.0, 100.0, 100.0)
    assert metrics["class_marked_subject"] == 2.1


@pytest.mark.parametrize("extra", [["--prior", "moxo=0.3"], ["--render-seed", "bnh=6000"], ["--per-emotion", "10", "bnh=3"],
                                   ["--balanced", "bnh"], ["--render-scenes", "bnh=plain"]])
def test_options_for_a_subject_the_run_does_not_train_are_refused_before_training(tmp_path, extra, monkeypatch,
                                                                                 capsys):
    proof = _proof_script()
    monkeypatch.setattr(sys, "argv", ["dreambooth_proof.py", str(tmp_path / "out"), "--subjects", "tuki", *extra])
    with pytest.raises(SystemExit) as stop:
        proof.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"{extra[0]} names" in err and "--subjects tuki" in err, err
    assert not (tmp_path / "out").exists()


def test_per_emotion_gives_a_third_trained_subject_the_bare_count():
    proof = _proof_script()
    assert proof.parse_per_emotion(["10", "bnh=3"], ["tuki", "bnh", "moxo"]) == {"tuki": 10, "bnh": 3, "moxo": 10}
    assert proof.parse_per_emotion(["10", "bnh=3"]) == {"tuki": 10, "bnh": 3}
