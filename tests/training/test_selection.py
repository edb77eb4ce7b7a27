"""Checkpoints chosen by a metric: the selection hook keeps the best-scoring step, resumes with it, refuses bad specs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.concepts.formats import load_embedding
from conceptlab.errors import InputError
from conceptlab.evaluation.prompts import PromptCase
from conceptlab.imaging import make_grid
from conceptlab.models.tiny import build_pipeline
from conceptlab.training.loop import TrainConfig, Trainer
from conceptlab.training.selection import (
    CheckpointSelection,
    ClipEvaluator,
    JudgeEvaluator,
    SelectionConfig,
    check_weights_available,
    concept_cases,
    parse_select_by,
)
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig

CASES = [PromptCase("a sticker of a happy <b>", {"emotion": "happy"}, 0, "b"),
         PromptCase("a sticker of a sad <b>", {"emotion": "sad"}, 1, "b")]


class FakeEvaluator:
    """Scores the k-th validation with the k-th row of `table`, whatever the images: a known best step."""

    def __init__(self, table: list[dict[str, float]]):
        self.table, self.calls = table, 0

    def computes(self, cases):
        return list(self.table[0])

    def score(self, images, cases):
        assert len(images) == len(cases)
        self.calls, self.images = self.calls + 1, images
        return dict(self.table[self.calls - 1])


def _ti(concept_dirs, steps=4):
    cfg = TextualInversionConfig(concepts=[ConceptConfig("<b>", str(concept_dirs / "broccoli"), init="broccoli")],
                                 train=TrainConfig(steps=steps, batch_size=2, lr=5e-2))
    return TextualInversion(build_pipeline("tiny"), cfg), cfg


def _select(evaluator, spec, every=1):
    return CheckpointSelection([evaluator], CASES, SelectionConfig(parse_select_by(spec), every=every, steps=2))


def test_selection_keeps_the_best_step_and_writes_its_files(concept_dirs, tmp_path):
    method, cfg = _ti(concept_dirs)
    table = [{"a": 0.2, "b": 0.0}, {"a": 0.9, "b": 0.0}, {"a": 0.5, "b": 0.0}, {"a": 0.4, "b": 0.0}]
    selection = _select(FakeEvaluator(table), "a")
    states = {}
    Trainer(method, cfg.train, tmp_path, hooks=[lambda t: states.__setitem__(t.step, method.trainable_state()),
                                                selection]).train()
    record = json.loads((tmp_path / "selected" / "selection.json").read_text())
    assert record["step"] == 2 and record["score"] == 0.9 and [r["step"] for r in record["history"]] == [1, 2, 3, 4]
    chosen = load_embedding(tmp_path / "selected" / "b" / "learned_embeds.safetensors")
    final = load_embedding(tmp_path / "b" / "learned_embeds.safetensors")
    assert torch.equal(chosen.vectors, states[2]["vectors"]) and torch.equal(final.vectors, states[4]["vectors"])
    assert not torch.equal(chosen.vectors, final.vectors)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["validation"]["a"] for r in rows if "validation" in r] == [0.2, 0.9, 0.5, 0.4]


def test_a_weighted_sum_picks_another_step_than_one_metric(concept_dirs, tmp_path):
    table = [{"a": 0.9, "b": 0.0}, {"a": 0.6, "b": 1.0}, {"a": 0.1, "b": 0.1}]
    weights = parse_select_by("a=1,b=0.5")
    assert weights == {"a": 1.0, "b": 0.5}
    best = max(range(3), key=lambda k: sum(w * table[k][m] for m, w in weights.items())) + 1
    assert best == 2  # 0.6 + 0.5 against 0.9: the sum and `a` alone disagree
    method, cfg = _ti(concept_dirs, steps=3)
    selection = _select(FakeEvaluator(table), "a=1,b=0.5")
    Trainer(method, cfg.train, tmp_path, hooks=[selection]).train()
    assert json.loads((tmp_path / "selected" / "selection.json").read_text())["step"] == best


def test_validate_every_and_the_last_step(concept_dirs, tmp_path):
    method, cfg = _ti(concept_dirs, steps=5)
    evaluator = FakeEvaluator([{"a": 0.1}, {"a": 0.2}, {"a": 0.3}])
    selection = _select(evaluator, "a", every=2)
    Trainer(method, cfg.train, tmp_path, hooks=[selection]).train()
    assert [r["step"] for r in selection.history] == [2, 4, 5]
    # each validation's renders are kept as a sheet; the last one is the images the evaluator scored
    assert sorted(p.name for p in (tmp_path / "validation").iterdir()) == [f"step-{s:06d}.png" for s in (2, 4, 5)]
    with Image.open(tmp_path / "validation" / "step-000005.png") as sheet:
        expected = make_grid(evaluator.images, cols=2, labels=["b s0", "b s1"])
        assert np.array_equal(np.asarray(sheet.convert("RGB")), np.asarray(expected))
    with Image.open(tmp_path / "selected" / "selection.png") as curve:  # the curve, the kept step marked
        assert curve.size[0] > 100 and len(set(curve.convert("L").getdata())) > 2


def test_resumed_run_keeps_its_best_and_trains_bit_identically(concept_dirs, tmp_path):
    table = [{"a": 0.2}, {"a": 0.9}, {"a": 0.5}, {"a": 0.4}]

    def run(out, stop_at=None, resume=False, calls=0):
        method, cfg = _ti(concept_dirs)
        evaluator = FakeEvaluator(table)
        evaluator.calls = calls
        Trainer(method, cfg.train, out, hooks=[_select(evaluator, "a")]).train(resume=resume, stop_at=stop_at)
        return method.trainable_state()

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=3)
    resumed = run(tmp_path / "b", resume=True, calls=3)
    assert torch.equal(straight["vectors"], resumed["vectors"])
    a, b = (json.loads((tmp_path / x / "selected" / "selection.json").read_text()) for x in ("a", "b"))
    assert a["step"] == b["step"] == 2 and a["history"] == b["history"]
    assert torch.equal(load_embedding(tmp_path / "a" / "selected" / "b" / "learned_embeds.safetensors").vectors,
                       load_embedding(tmp_path / "b" / "selected" / "b" / "learned_embeds.safetensors").vectors)


def test_validation_does_not_change_training(concept_dirs, tmp_path):
    plain, cfg = _ti(concept_dirs, steps=3)
    Trainer(plain, cfg.train, tmp_path / "plain").train()
    selected, cfg = _ti(concept_dirs, steps=3)
    Trainer(selected, cfg.train, tmp_path / "sel", hooks=[_select(FakeEvaluator([{"a": 0}] * 3), "a")]).train()
    assert torch.equal(plain.trainable_state()["vectors"], selected.trainable_state()["vectors"])


def test_the_real_judge_scores_the_tiny_pipeline_and_selection_follows_its_curve(concept_dirs, tmp_path):
    from conceptlab.evaluation.judge import load_judge

    judge = load_judge()
    cases = concept_cases([("<b>", "broccoli")], judge.cfg.heads, seeds=1)
    evaluator = JudgeEvaluator(judge)
    assert {"emotion", "scene", "object", "emotion/b"} <= set(evaluator.computes(cases))
    method, cfg = _ti(concept_dirs, steps=2)
    selection = CheckpointSelection([evaluator], cases, SelectionConfig({"emotion": 1.0, "object": 1.0}, every=1,
                                                                        steps=2))
    Trainer(method, cfg.train, tmp_path, hooks=[selection]).train()
    record = json.loads((tmp_path / "selected" / "selection.json").read_text())
    scores = [r["score"] for r in record["history"]]
    assert len(scores) == 2 and all(0 <= r["validation"]["emotion"] <= 1 for r in record["history"])
    assert record["step"] == 1 + scores.index(max(scores))
    # the judge's share, recomputed from its own predictions on the same renders
    from conceptlab.generation.generate import generate_batch

    images = generate_batch(method.pipe, [c.prompt for c in cases], [c.seed for c in cases], steps=2, progress=False)
    pred = judge.predict(images)["emotion"]
    assert evaluator.score(images, cases)["emotion"] == sum(p == c.expect["emotion"] for p, c in zip(pred, cases)) / 4


def test_select_by_a_metric_that_is_not_computed_lists_the_computed_ones():
    with pytest.raises(InputError, match=r"names identity, which this run does not compute.*emotion, emotion/b"):
        CheckpointSelection([JudgeEvaluator(judge=None)], CASES, SelectionConfig({"identity": 1.0}))


@pytest.mark.parametrize("spec, flag", [("clip-t", "--clip-model"), ("clip-i=1,identity=1", "--clip-model"),
                                        ("dino", "--dino-model")])
def test_a_metric_without_its_weights_says_how_to_get_them(spec, flag):
    metric = spec.split("=")[0].split(",")[0]
    with pytest.raises(InputError, match=f"metric {metric} needs (CLIP|DINO) weights: pass {flag} PATH"):
        check_weights_available(parse_select_by(spec), {"--clip-model": None, "--dino-model": None})
    check_weights_available(parse_select_by(spec), {"--clip-model": "x", "--dino-model": "y"})  # given: no error


@pytest.mark.parametrize("spec", ["", "a,a", "a=x", "a=1e9"])
def test_bad_select_by_specs(spec):
    with pytest.raises(InputError, match="--select-by"):
        parse_select_by(spec)


def test_clip_metrics_with_a_tiny_random_clip_match_clips_own_similarity(tmp_path):
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from conceptlab.evaluation.metrics import ClipScorer
    from conceptlab.models.tiny import sticker_tokenizer

    torch.manual_seed(0)
    tok = sticker_tokenizer()
    config = CLIPConfig(text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37,
                                     "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
                                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
                        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                              tok)
    CLIPModel(config).eval().save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    scorer = ClipScorer.load(str(tmp_path / "clip"))  # the --clip-model PATH route
    images = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "green", "white")]
    cases = [PromptCase(f"a <b> {k}", {"text": t}, k, g) for k, (t, g) in
             enumerate([("a red star", "x"), ("a blue star", "x"), ("a green apple", "y"), ("a white apple", "y")])]
    refs = {"x": images[:1], "y": images[2:3]}
    got = ClipEvaluator(scorer, refs).score(images, cases)
    with torch.no_grad():  # CLIP's own logits are logit_scale * cosine(image, text)
        batch = processor(text=[c.expect["text"] for c in cases], images=images, return_tensors="pt", padding=True)
        out = scorer.model(**batch)
        cos = out.logits_per_image / scorer.model.logit_scale.exp()  # (4 images, 4 texts)
        emb = torch.nn.functional.normalize(out.image_embeds, dim=-1)
    assert got["clip-t"] == pytest.approx(float(cos.diag().mean()), abs=1e-5)
    assert got["clip-t/y"] == pytest.approx(float(cos.diag()[2:].mean()), abs=1e-5)
    want_i = (float((emb[:2] @ emb[0]).mean()) + float((emb[2:] @ emb[2]).mean())) / 2
    assert got["clip-i"] == pytest.approx(want_i, abs=1e-5)
    assert set(ClipEvaluator(scorer, refs).computes(cases)) == set(got)


def test_make_selection_validates_the_emotions_and_scenes_asked_for():
    from conceptlab.training.dreambooth import SubjectConfig
    from conceptlab.training.selection import make_selection

    subjects = [SubjectConfig("tuki", "", "monster")]
    default = make_selection("identity", 5, subjects=subjects, seeds=1)
    assert {c.expect["emotion"] for c in default.cases} == {"happy", "sad"}
    wide = make_selection("identity=1,emotion=1", 5, subjects=subjects, seeds=2,
                          emotions=("happy", "sad", "angry", "in love"), scenes=("plain", "beach", "jungle"))
    assert len(wide.cases) == 4 * 3 * 2 and {c.expect["emotion"] for c in wide.cases} == {"happy", "sad", "angry",
                                                                                         "in love"}
    assert {c.expect["background"] for c in wide.cases} == {"plain", "beach", "jungle"}
    assert all(c.expect["individual"] == "tuki" and c.seed in (0, 1) for c in wide.cases)
