"""Checkpoints chosen by a metric: every N steps render a fixed validation set, score it, keep the best.

An after-step hook for any training method whose object holds its pipeline as `.pipe` (textual inversion,
DreamBooth full or LoRA, pivotal tuning). Every `every` steps and at the last one it renders the same prompts
with the same seeds, scores them with its evaluators, appends the row to OUT/metrics.jsonl, and keeps the
trainable state with the best score (one metric, or a weighted sum such as identity=1,emotion=0.5). At the
end the winner's files go to OUT/selected/ beside the final ones, with selection.json saying which step won.

Evaluators (what each computes is listed in `computes`): the sticker-world judge (identity, emotion, scene,
object, colour: the share judged as the prompt asks), a trained classifier (classifier: the share it names
right), CLIP-T/CLIP-I (Radford et al. 2021, as DreamBooth, Ruiz et al. 2023, defines them) and DINO from
weights the user supplies. Per-subject values are reported too, as "identity/tuki".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from conceptlab.errors import InputError
from conceptlab.evaluation.prompts import PromptCase

# metric -> the judge head it reads
JUDGED = {"identity": "individual", "emotion": "emotion", "scene": "background", "object": "object", "colour": "colour"}
WEIGHTED = ("clip-t", "clip-i", "dino")  # metrics that need weights the user supplies
NEEDS = {"clip-t": ("CLIP", "--clip-model"), "clip-i": ("CLIP", "--clip-model"), "dino": ("DINO", "--dino-model")}
EMOTIONS, SCENES = ("happy", "sad"), ("plain", "beach")  # the default validation set: 2 x 2 per subject


class Evaluator(Protocol):
    """Scores rendered validation images; `computes(cases)` names the metrics it gives for them."""

    def computes(self, cases: list[PromptCase]) -> list[str]: ...

    def score(self, images: list, cases: list[PromptCase]) -> dict[str, float]: ...


def _shares(name: str, right: list[bool], groups: list[str]) -> dict[str, float]:
    """{name: share right, name/group: share right within each group}."""
    out = {name: sum(right) / len(right)}
    for g in dict.fromkeys(groups):
        mine = [r for r, h in zip(right, groups) if h == g]
        out[f"{name}/{g}"] = sum(mine) / len(mine)
    return out


class JudgeEvaluator:
    """The sticker-world judge: per metric, the share of images judged as their prompt asks."""

    def __init__(self, judge):
        self.judge = judge

    def computes(self, cases: list[PromptCase]) -> list[str]:
        names = []
        for metric, head in JUDGED.items():
            groups = [c.group for c in cases if head in c.expect]
            if groups:
                names += [metric] + [f"{metric}/{g}" for g in dict.fromkeys(groups)]
        return names

    def score(self, images: list, cases: list[PromptCase]) -> dict[str, float]:
        pred = self.judge.predict(images)
        out = {}
        for metric, head in JUDGED.items():
            rows = [k for k, c in enumerate(cases) if head in c.expect]
            if rows:
                right = [pred[head][k] == cases[k].expect[head] for k in rows]
                out.update(_shares(metric, right, [cases[k].group for k in rows]))
        return out


class ClassifierEvaluator:
    """A trained classifier (`conceptlab classify train`): the share of images it names as their case expects
    (the first of a case's expected labels that is one of its classes)."""

    def __init__(self, classifier):
        self.classifier = classifier

    def _expected(self, case: PromptCase) -> str | None:
        return next((v for v in case.expect.values() if v in self.classifier.classes), None)

    def computes(self, cases: list[PromptCase]) -> list[str]:
        groups = [c.group for c in cases if self._expected(c) is not None]
        return ["classifier"] + [f"classifier/{g}" for g in dict.fromkeys(groups)] if groups else []

    def score(self, images: list, cases: list[PromptCase]) -> dict[str, float]:
        rows = [k for k, c in enumerate(cases) if self._expected(c) is not None]
        if not rows:
            return {}
        labels, _ = self.classifier.predict([images[k] for k in rows])
        right = [label == self._expected(cases[k]) for label, k in zip(labels, rows)]
        return _shares("classifier", right, [cases[k].group for k in rows])


class ClipEvaluator:
    """CLIP-T (image against its prompt's text, expect['text'] when given) and CLIP-I (against the group's
    reference images, e.g. a subject's training images), with a user-supplied CLIPModel (metrics.ClipScorer)."""

    def __init__(self, scorer, references: dict[str, list] | None = None):
        self.scorer, self.references = scorer, references or {}

    def computes(self, cases: list[PromptCase]) -> list[str]:
        groups = list(dict.fromkeys(c.group for c in cases))
        names = ["clip-t"] + [f"clip-t/{g}" for g in groups]
        referenced = [g for g in groups if self.references.get(g)]
        return names + (["clip-i"] + [f"clip-i/{g}" for g in referenced] if referenced else [])

    def score(self, images: list, cases: list[PromptCase]) -> dict[str, float]:
        texts = [c.expect.get("text", c.prompt) for c in cases]
        out, per_group = {"clip-t": self.scorer.clip_t(images, texts)}, {}
        for g in dict.fromkeys(c.group for c in cases):
            mine = [k for k, c in enumerate(cases) if c.group == g]
            out[f"clip-t/{g}"] = self.scorer.clip_t([images[k] for k in mine], [texts[k] for k in mine])
            if self.references.get(g):
                per_group[g] = self.scorer.clip_i([images[k] for k in mine], self.references[g])
        if per_group:  # the mean over groups: each subject counts the same
            out["clip-i"] = sum(per_group.values()) / len(per_group)
            out.update({f"clip-i/{g}": v for g, v in per_group.items()})
        return out


class DinoEvaluator:
    """DINO: mean pairwise cosine of ViT CLS embeddings against the group's references (metrics.DinoScorer)."""

    def __init__(self, scorer, references: dict[str, list]):
        self.scorer, self.references = scorer, references

    def computes(self, cases: list[PromptCase]) -> list[str]:
        groups = [g for g in dict.fromkeys(c.group for c in cases) if self.references.get(g)]
        return ["dino"] + [f"dino/{g}" for g in groups] if groups else []

    def score(self, images: list, cases: list[PromptCase]) -> dict[str, float]:
        per = {}
        for g in dict.fromkeys(c.group for c in cases):
            if self.references.get(g):
                per[g] = self.scorer.dino([im for im, c in zip(images, cases) if c.group == g], self.references[g])
        return {"dino": sum(per.values()) / len(per), **{f"dino/{g}": v for g, v in per.items()}} if per else {}


# ---------------------------------------------------------------- what to select by
def parse_select_by(text: str, argument: str = "--select-by") -> dict[str, float]:
    """'identity' -> {'identity': 1.0}; 'identity=1,emotion=0.5' -> a weighted sum's weights."""
    from conceptlab.validation import WEIGHT

    weights: dict[str, float] = {}
    for part in str(text).split(","):
        name, sep, value = part.strip().partition("=")
        if not name:
            raise InputError(argument, text, "names no metric", "e.g. --select-by identity, or identity=1,emotion=0.5")
        if name in weights:
            raise InputError(argument, text, f"names {name!r} twice", "Give each metric once")
        weights[name] = float(WEIGHT.check(f"{argument} {name}", value)) if sep else 1.0
    return weights


def check_weights_available(weights: dict[str, float], paths: dict[str, str | None]) -> None:
    """A metric that needs weights the user has not given: 'metric clip-t needs CLIP weights: pass --clip-model PATH'."""
    for name in weights:
        metric = name.split("/")[0]
        if metric in NEEDS and not paths.get(NEEDS[metric][1]):
            what, flag = NEEDS[metric]
            raise InputError("--select-by", name, f"metric {metric} needs {what} weights: pass {flag} PATH",
                             f"{what} models come from no hub here: pass a local transformers model folder, or select "
                             "by a judge metric (identity, emotion, scene)")


def check_computed(weights: dict[str, float], computed: list[str]) -> None:
    """Every metric `weights` names must be one the evaluators compute for this validation set."""
    missing = [m for m in weights if m not in computed]
    if missing:
        raise InputError("--select-by", ",".join(weights), f"names {', '.join(missing)}, which this run does not "
                         "compute", f"Choose from the computed metrics: {', '.join(computed) or '(none)'}")


# ---------------------------------------------------------------- validation sets
def judge_name(identifier: str) -> str:
    """The judge's label for a subject: its identifier without the angle brackets of a new token."""
    return identifier.strip("<>")


def subject_cases(subjects: list[tuple[str, str]], known: set[str], seeds: int = 2, emotions=EMOTIONS,
                  scenes=SCENES) -> list[PromptCase]:
    """DreamBooth and pivotal validation: 'a sticker of a happy tuki monster at the beach' per subject, emotion,
    scene and seed (0..seeds-1), expecting the emotion, the scene and, for an individual the judge `known`s,
    the subject."""
    from conceptlab.evaluation.recipes.dreambooth import subject_prompt

    cases = []
    for ident, word in subjects:
        for e in emotions:
            for sc in scenes:
                expect = {"emotion": e, "background": sc, "text": subject_prompt(judge_name(ident), word, e, sc)}
                if judge_name(ident) in known:
                    expect["individual"] = judge_name(ident)
                cases += [PromptCase(subject_prompt(ident, word, e, sc), dict(expect), s, judge_name(ident))
                          for s in range(seeds)]
    return cases


def concept_cases(concepts: list[tuple[str, str | None]], labels: dict[str, list[str]], seeds: int = 2,
                  emotions=EMOTIONS, scenes=SCENES) -> list[PromptCase]:
    """Textual-inversion validation: 'a sticker of a sad <broccoli> at the beach', expecting the emotion, the
    scene, the init word as the object when it is one of the judge's, and the token as an individual it knows."""
    from conceptlab.evaluation.recipes.dreambooth import SCENES as SCENE_WORDS

    cases = []
    for token, init in concepts:
        for e in emotions:
            for sc in scenes:
                expect = {"emotion": e, "background": sc, "text": f"a sticker of a {e} {init or judge_name(token)}"}
                if init in labels.get("object", ()):
                    expect["object"] = init
                if judge_name(token) in labels.get("individual", ()):
                    expect["individual"] = judge_name(token)
                cases += [PromptCase(f"a sticker of a {e} {token}{SCENE_WORDS[sc]}", dict(expect), s,
                                     judge_name(token)) for s in range(seeds)]
    return cases


# ---------------------------------------------------------------- the hook
@dataclass
class SelectionConfig:
    """How checkpoints are chosen (the --select-by / --validate-every flags)."""

    select_by: dict[str, float]  # metric -> weight of the score's sum
    every: int = 50  # steps between validations (and the last step)
    steps: int = 20  # sampling steps per validation image
    guidance: float = 7.5
    batch_size: int = 8


class CheckpointSelection:
    """After-step hook: validates every `cfg.every` steps and at the last, keeps the best trainable state (in
    its own state, so a checkpoint carries it and a resumed run keeps its best), writes OUT/selected/ at the end."""

    def __init__(self, evaluators: list[Evaluator], cases: list[PromptCase], cfg: SelectionConfig):
        from conceptlab.validation import COUNT0

        COUNT0.check("--validate-every", cfg.every)
        if cfg.every < 1:
            raise InputError("--validate-every", cfg.every, "must be >= 1 with --select-by", "e.g. --validate-every 50")
        self.computed = list(dict.fromkeys(m for e in evaluators for m in e.computes(cases)))
        check_computed(cfg.select_by, self.computed)
        self.evaluators, self.cases, self.cfg = evaluators, cases, cfg
        self.best: dict | None = None  # {"step", "score", "scores", "state"}
        self.history: list[dict] = []  # one row per validation: step, scores, score

    def __call__(self, trainer) -> None:
        last = trainer.step == trainer.cfg.steps
        if trainer.step % self.cfg.every == 0 or last:
            self.validate(trainer)
        if last:
            self.finish(trainer)

    def score_of(self, scores: dict[str, float]) -> float:
        """The weighted sum sum_m w_m * value_m of the chosen metrics."""
        return sum(w * scores[m] for m, w in self.cfg.select_by.items())

    @torch.no_grad()
    def validate(self, trainer) -> dict:
        """Renders and scores the validation set at this step; keeps the state if it scores best so far."""
        from conceptlab.generation.generate import generate_batch

        images = generate_batch(trainer.method.pipe, [c.prompt for c in self.cases], [c.seed for c in self.cases],
                                steps=self.cfg.steps, guidance=self.cfg.guidance, batch_size=self.cfg.batch_size,
                                progress=False)
        scores = {}
        for e in self.evaluators:
            scores.update(e.score(images, self.cases))
        row = {"step": trainer.step, "validation": scores, "score": self.score_of(scores)}
        self.history.append(row)
        if self.best is None or row["score"] > self.best["score"]:  # ties keep the earlier step
            state = {k: v.detach().cpu().clone() for k, v in trainer.method.trainable_state().items()}
            self.best = {**row, "state": state}
        if trainer.acc.is_main_process:
            with open(trainer.out / "metrics.jsonl", "a") as f:  # the studio's reader skips rows without a loss
                f.write(json.dumps(row) + "\n")
            self.save_sheet(images, trainer.out / "validation" / f"step-{trainer.step:06d}.png")
        trainer.log({**{f"validation/{k}": v for k, v in scores.items()}, "validation/score": row["score"]})
        return row

    def finish(self, trainer) -> Path:
        """Writes the best state's outputs to OUT/selected/ (the method's own files) and selection.json."""
        from conceptlab.io import atomic_write_json

        out = trainer.out / "selected"
        method, final = trainer.method, trainer.method.trainable_state()
        step = self.best["step"]
        method.load_trainable_state(self.best["state"])
        try:
            if trainer.acc.is_main_process:
                method.save_outputs(out, step, trainer.losses[step - 1] if step else None)
        finally:
            method.load_trainable_state(final)
        record = {"select_by": self.cfg.select_by, "step": step, "score": self.best["score"],
                  "scores": self.best["validation"], "computed": self.computed, "history": self.history,
                  "prompts": [{"prompt": c.prompt, "seed": c.seed, "expect": c.expect} for c in self.cases]}
        if trainer.acc.is_main_process:
            atomic_write_json(record, out / "selection.json")
            from conceptlab.plots import plot_selection

            plot_selection(self.history, self.cfg.select_by, step, out / "selection.png")
            shown = ", ".join(f"{m} {self.best['validation'][m]:.3f}" for m in self.cfg.select_by)
            print(f"selected step {step} of {trainer.step} by {_spec(self.cfg.select_by)} (score "
                  f"{self.best['score']:.3f}: {shown}); its files are in {out}")
        return out

    def save_sheet(self, images: list, path: Path) -> Path:
        """The validation set as rendered at this step: one row per group (subject or token), its prompts' seeds
        side by side, each captioned with its seed, so the sheets of successive steps compare cell by cell."""
        from conceptlab.imaging import make_grid

        groups = list(dict.fromkeys(c.group for c in self.cases))
        order = [k for g in groups for k, c in enumerate(self.cases) if c.group == g]
        path.parent.mkdir(parents=True, exist_ok=True)
        make_grid([images[k] for k in order], cols=max(1, len(order) // len(groups)),
                  labels=[f"{self.cases[k].group} s{self.cases[k].seed}" for k in order]).save(path)
        return path

    def state_dict(self) -> dict:
        return {"best": self.best, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.history = state["best"], list(state["history"])


def _spec(weights: dict[str, float]) -> str:
    return ",".join(m if w == 1 and len(weights) == 1 else f"{m}={w:g}" for m, w in weights.items())


def make_selection(select_by: str, every: int, *, subjects: list | None = None, concepts: list | None = None,
                   seeds: int = 2, judge: str | None = None, classifier: str | None = None,
                   clip_model: str | None = None, dino_model: str | None = None, steps: int = 20,
                   emotions: tuple[str, ...] = EMOTIONS, scenes: tuple[str, ...] = SCENES) -> CheckpointSelection:
    """The selection hook a run asks for: its validation set from `subjects` (SubjectConfig) or `concepts`
    (ConceptConfig) in `emotions` x `scenes`, the judge always, and the classifier, CLIP and DINO whose weights are
    given; every error (weights missing, a metric not computed) is raised here, before a model loads."""
    from conceptlab.evaluation.recipes.common import load_judge_checked

    weights = parse_select_by(select_by)
    paths = {"--clip-model": clip_model, "--dino-model": dino_model}
    check_weights_available(weights, paths)
    judged = load_judge_checked(judge)
    heads = judged.cfg.heads
    if subjects:
        cases = subject_cases([(s.identifier, s.class_word) for s in subjects], set(heads["individual"]), seeds,
                              emotions, scenes)
        folders = {judge_name(s.identifier): (s.folder, f"--subject {s.identifier}") for s in subjects}
    else:
        cases = concept_cases([(c.token, _init_word(c.init)) for c in concepts or []], heads, seeds, emotions, scenes)
        folders = {judge_name(c.token): (c.folder, f"--concept {c.token}") for c in concepts or []}
    evaluators: list[Evaluator] = [JudgeEvaluator(judged)]
    if classifier:
        from conceptlab.evaluation.classifier import Classifier

        evaluators.append(ClassifierEvaluator(Classifier(classifier)))
    if clip_model or dino_model:
        from conceptlab.evaluation.metrics import load_scorer

        references = _references(folders)
        if clip_model:
            evaluators.append(ClipEvaluator(load_scorer("clip", clip_model), references))
        if dino_model:
            evaluators.append(DinoEvaluator(load_scorer("dino", dino_model), references))
    return CheckpointSelection(evaluators, cases, SelectionConfig(weights, every, steps))


def _init_word(init: str | None) -> str | None:
    return init if init and "/" not in init and "." not in init else None  # a word, not an embedding file


def _references(folders: dict[str, tuple[str, str]]) -> dict[str, list]:
    """Each group's training images: what CLIP-I and DINO compare the renders with."""
    from conceptlab.training.data import load_concept_folder

    return {g: load_concept_folder(folder, argument)[0] for g, (folder, argument) in folders.items()}
