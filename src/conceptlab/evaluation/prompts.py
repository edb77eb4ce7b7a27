"""`evaluate prompts`: generate a fixed prompt set with fixed seeds and score each attribute with the judge."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field, replace

from conceptlab.models.base import HeldOut
from conceptlab.world import StickerSpec, sample_spec
from conceptlab.world.attributes import caption

SCORED = ("object", "colour", "emotion", "background", "style", "accessory", "held_item", "flowers")


@dataclass
class PromptCase:
    """A prompt, the labels a correct image has, its seed, and its group ('seen' or 'unseen combination')."""

    prompt: str
    expect: dict[str, str]
    seed: int
    group: str = "seen"


@dataclass
class PromptScores:
    """Per-group, per-attribute accuracy, with the generated images and judged labels kept for reports."""

    accuracy: dict[str, dict[str, float]]
    counts: dict[str, int]
    cases: list[PromptCase] = field(repr=False, default_factory=list)
    images: list = field(repr=False, default_factory=list)
    judged: list[dict[str, str]] = field(repr=False, default_factory=list)

    def table(self) -> list[dict]:
        rows = []
        for group, acc in self.accuracy.items():
            rows.append({"group": group, "images": self.counts[group], **{k: round(v, 3) for k, v in acc.items()}})
        return rows


def _expectations(spec: StickerSpec) -> dict[str, str]:
    expect = {k: spec.labels()[k] for k in SCORED}
    if spec.emotion == "none":
        expect.pop("emotion")
    return expect


def _case(spec: StickerSpec, seed: int, group: str) -> PromptCase:
    text = caption(spec, rng=random.Random(seed), drop=0.0)
    return PromptCase(text, _expectations(spec), seed, group)


def standard_prompts(n: int = 300, n_unseen: int = 100, seed: int = 0, held_out: HeldOut | None = None) -> list[PromptCase]:
    """`n` prompts the base model could have seen, and `n_unseen` of the held-out attribute combinations.

    Seen prompts avoid everything held out (faces on faceless-only or rare-face objects, held-out styles, named
    individuals, held-out pairs); unseen ones put each held-out pair in otherwise ordinary prompts.
    """
    held_out = held_out or HeldOut()
    exclude = {"style": set(held_out.styles), "emotion": {"none"}}
    cases, k = [], 0
    while len(cases) < n:
        spec = sample_spec(seed * 100_003 + k, exclude=exclude)
        k += 1
        if held_out.faceless(spec.object):
            spec = replace(spec, emotion="none")
        if held_out.allows(spec):
            cases.append(_case(spec, seed * 100_003 + k, "seen"))
    combos = held_out.combinations
    for j in range(n_unseen):
        combo = combos[j % len(combos)]
        only = {name: {value} for name, value in combo}
        spec = sample_spec(seed * 7_919 + j, only=only, exclude=exclude)
        cases.append(_case(spec, 50_000 + seed * 7_919 + j, "unseen combination"))
    return cases


def score(cases: list[PromptCase], judged: list[dict[str, str]]) -> tuple[dict, dict]:
    """Accuracy per group and attribute: the share of images whose judged label equals the expected one."""
    hits: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for case, got in zip(cases, judged):
        for attr, want in case.expect.items():
            hits[case.group][attr].append(int(got[attr] == want))
            hits["all"][attr].append(int(got[attr] == want))
    accuracy = {g: {a: sum(v) / len(v) for a, v in attrs.items()} for g, attrs in hits.items()}
    counts = defaultdict(int)
    for case in cases:
        counts[case.group] += 1
        counts["all"] += 1
    return accuracy, dict(counts)


def evaluate_prompts(pipe, cases: list[PromptCase], judge=None, steps: int = 30, guidance: float = 7.5,
                     batch_size: int = 16, progress: bool = True) -> PromptScores:
    """Generates one image per case (its own seed) and scores the attributes it asked for."""
    from conceptlab.evaluation.judge import load_judge
    from conceptlab.generation.generate import generate_batch

    judge = judge or load_judge()
    images = generate_batch(pipe, [c.prompt for c in cases], [c.seed for c in cases], steps=steps,
                            guidance=guidance, batch_size=batch_size, progress=progress)
    predicted = judge.predict(images)
    judged = [{k: predicted[k][i] for k in predicted} for i in range(len(images))]
    accuracy, counts = score(cases, judged)
    return PromptScores(accuracy, counts, cases, images, judged)


def write_prompt_report(scores: PromptScores, out, title: str = "Prompt accuracy"):
    """scores.json, a grid of the first 48 images with their prompts, and index.html in `out`."""
    from pathlib import Path

    from conceptlab.evaluation.report import Report
    from conceptlab.imaging import make_grid
    from conceptlab.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json({"accuracy": scores.accuracy, "counts": scores.counts,
                       "cases": [{"prompt": c.prompt, "seed": c.seed, "group": c.group, "expect": c.expect,
                                  "judged": j} for c, j in zip(scores.cases, scores.judged)]},
                      out / "scores.json")
    report = Report(title, out)
    report.table(scores.table())
    grid = out / "samples.png"
    make_grid(scores.images[:48], cols=8, scale=2).save(grid)
    report.image(grid, "the first 48 prompts, one image each (seeds as listed in scores.json)")
    report.table([{"prompt": c.prompt, "judged wrong": ", ".join(f"{k}={j[k]}" for k, v in c.expect.items()
                                                                  if j[k] != v) or "-"}
                  for c, j in zip(scores.cases[:48], scores.judged[:48])])
    return report.write()
