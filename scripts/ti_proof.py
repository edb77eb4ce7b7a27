"""The first seed project's two workflows on the shipped base model, judged.

    python scripts/ti_proof.py OUT [--steps 400] [--lr 5e-3] [--vectors 1] [--images 8] [--only VARIANT ...]
        [--per-prompt 25] [--first-seed 0] [--guidance 7.5 [10 ...]]

(a) four emotions trained jointly: <broccoli-happy>, <broccoli-sad>, <broccoli-angry>, <broccoli-in-love>
    from 4 renders each; (b) <broccoli> (faced broccoli, 8 renders of mixed emotions) + <happy-emoji>
    (4 renders) trained jointly, then mixed 0-100%. Scores: the share of "a sticker of a {emotion} <broccoli>"
    judged as broccoli with that emotion, beside the base model's share with the plain word "broccoli".
(c) as (b) with <broccoli> trained on each image's own caption, the word 'broccoli' replaced by the token.
Choose settings on one seed range and report on another (--first-seed): 200 judged images vary by +-3 points
from the seeds alone. The measure is the library's (conceptlab.evaluation.recipes.ti); each variant's folder is
a textual-inversion run that `conceptlab evaluate ti OUT/two-concepts` judges the same way.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from conceptlab.concepts.formats import load_embedding
from conceptlab.concepts.sweep import render_sweep
from conceptlab.evaluation.judge import load_judge
from conceptlab.evaluation.recipes.ti import JudgedPrompt, emotion_prompts, judged_at_guidances
from conceptlab.imaging import make_grid
from conceptlab.models.loading import load_pipeline
from conceptlab.training.loop import TrainConfig, Trainer
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
from conceptlab.world.export import export_images

EMOTIONS = ("happy", "sad", "angry", "in love")
VARIANTS = ("baseline", "four_emotions", "two_concepts", "two_concepts_captions")
PLAIN = {"style": {"sticker"}, "background": {"plain"}, "accessory": {"none"}, "held_item": {"none"},
         "flowers": {"none"}, "colour": {"green"}}


def train(pipe, concepts: list[ConceptConfig], args, out: Path) -> float:
    cfg = TextualInversionConfig(model=args.model, concepts=concepts,
                                 train=TrainConfig(steps=args.steps, batch_size=4, lr=args.lr))
    # the config in training.json makes the folder a run that `conceptlab evaluate ti` reads
    result = Trainer(TextualInversion(pipe, cfg), cfg.train, out, config_record=asdict(cfg)).train()
    return result.seconds


def export_data(data: Path, n: int) -> None:
    """4 (or n) renders per emotion, n mixed-emotion broccoli, 4 happy emoji; plain scenes."""
    for k, e in enumerate(EMOTIONS):
        export_images(data / f"broccoli-{e.replace(' ', '-')}", max(4, n // 2), seed=1000 + 100 * k,
                      only={**PLAIN, "object": {"broccoli"}, "emotion": {e}})
    export_images(data / "broccoli-mixed", n, seed=2000, only={**PLAIN, "object": {"broccoli"}, "emotion": set(EMOTIONS)})
    export_images(data / "happy-emoji", 4, seed=3000, only={**PLAIN, "object": {"emoji"}, "emotion": {"happy"},
                                                            "colour": {"yellow"}})


def run_variant(name: str, args, data: Path, judge, out: Path) -> dict:
    """Trains one workflow on a fresh copy of the base model and judges its emotion prompts."""
    pipe = load_pipeline(args.model)
    broccoli = ConceptConfig("<broccoli>", str(data / "broccoli-mixed"), init="broccoli", vectors=args.vectors,
                             captions="broccoli" if name == "two_concepts_captions" else None)
    emoji = ConceptConfig("<happy-emoji>", str(data / "happy-emoji"), init="emoji")
    if name == "four_emotions":  # the seed's first workflow: one token per emotion
        tokens = {e: f"<broccoli-{e.replace(' ', '-')}>" for e in EMOTIONS}
        concepts = [ConceptConfig(tokens[e], str(data / f"broccoli-{e.replace(' ', '-')}"), init="broccoli",
                                  vectors=args.vectors) for e in EMOTIONS]
        prompts = [JudgedPrompt(f"a sticker of a {tokens[e]}", "broccoli", e) for e in EMOTIONS]
    else:  # the seed's second: <broccoli> + <happy-emoji> jointly; captions: the emotion stays in its word
        concepts = [broccoli, emoji]
        prompts = emotion_prompts("<broccoli>", "broccoli", EMOTIONS)
    secs = train(pipe, concepts, args, out / name.replace("_", "-"))
    return {**judged(pipe, judge, prompts, args, out, name.replace("_", "-")), "train_seconds": secs}


def judged(pipe, judge, prompts: list[JudgedPrompt], args, out: Path, name: str) -> dict:
    """The library's judged share at each --guidance (the first the headline), with a grid per guidance."""
    scores, images = judged_at_guidances(pipe, judge, prompts, args.per_prompt, args.guidance, args.first_seed)
    for k, (g, batch) in enumerate(images.items()):
        make_grid(batch, cols=args.per_prompt, scale=2).save(out / f"{name if k == 0 else f'{name}-cfg{g:g}'}.png")
    for s in (scores, *scores["other_guidance"].values()):
        s.pop("rows")  # per-image rows stay out of the proof's report
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--vectors", type=int, default=1)
    ap.add_argument("--images", type=int, default=8, help="mixed-emotion broccoli renders (per emotion: half)")
    ap.add_argument("--per-prompt", type=int, default=25)
    ap.add_argument("--only", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--guidance", nargs="+", type=float, default=[7.5],
                    help="classifier-free guidance scales to judge at; the first is the headline share")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="generation seeds are first_seed..first_seed+per_prompt-1 (held-out seeds: e.g. 1000)")
    args = ap.parse_args()
    out, judge = args.out, load_judge()
    out.mkdir(parents=True, exist_ok=True)
    report = {"steps": args.steps, "lr": args.lr, "vectors": args.vectors, "images": args.images,
              "guidance": args.guidance, "first_seed": args.first_seed}
    export_data(out / "data", args.images)
    if "baseline" in args.only:
        report["baseline"] = judged(load_pipeline(args.model), judge, emotion_prompts("broccoli", "broccoli", EMOTIONS),
                                    args, out, "baseline")
    for name in args.only:
        if name != "baseline":
            report[name] = run_variant(name, args, out / "data", judge, out)
            print(name, report[name]["share"], report[name]["per_prompt"], flush=True)
    if "two_concepts" in args.only:
        embs = [load_embedding(out / "two-concepts" / n / "learned_embeds.safetensors")
                for n in ("broccoli", "happy-emoji")]
        render_sweep(load_pipeline(args.model), embs, [0, 0.25, 0.5, 0.75, 1], "lerp", "a sticker of a {}", 0, 30, out)
    (out / "ti-proof.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
