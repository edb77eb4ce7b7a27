"""The first seed project's two workflows on the shipped base model, judged.

    python scripts/ti_proof.py OUT [--steps 400]

(a) four emotions trained jointly: <broccoli-happy>, <broccoli-sad>, <broccoli-angry>, <broccoli-in-love>
    from 4 renders each; (b) <broccoli> (faced broccoli, 8 renders of mixed emotions) + <happy-emoji>
    (4 renders) trained jointly, then mixed 0-100%. Scores: the share of "a sticker of a {emotion} <broccoli>"
    judged as broccoli with that emotion, beside the base model's share with the plain word "broccoli".
(c) as (b) with <broccoli> trained on each image's own caption, the word 'broccoli' replaced by the token.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from conceptlab.concepts.formats import load_embedding
from conceptlab.concepts.sweep import render_sweep
from conceptlab.evaluation.judge import load_judge
from conceptlab.imaging import make_grid
from conceptlab.models.loading import load_pipeline
from conceptlab.training.loop import TrainConfig, Trainer
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
from conceptlab.world.export import export_images

EMOTIONS = ("happy", "sad", "angry", "in love")
PLAIN = {"style": {"sticker"}, "background": {"plain"}, "accessory": {"none"}, "held_item": {"none"},
         "flowers": {"none"}, "colour": {"green"}}


def prompt_for(emotion: str, noun: str) -> str:
    return f"a sticker of a {noun} in love" if emotion == "in love" else f"a sticker of a {emotion} {noun}"


def judged_share(pipe, judge, prompts_expect: list[tuple[str, str]], per_prompt: int, out: Path, name: str) -> dict:
    """Generates `per_prompt` images per prompt (seeds 0..), judges object and emotion; writes a grid."""
    images, rows = [], []
    for prompt, emotion in prompts_expect:
        gens = [torch.Generator().manual_seed(s) for s in range(per_prompt)]
        batch = pipe([prompt] * per_prompt, num_inference_steps=30, generator=gens).images
        pred = judge.predict(batch)
        for i in range(per_prompt):
            rows.append({"prompt": prompt, "seed": i, "object": pred["object"][i], "emotion": pred["emotion"][i],
                         "ok": pred["object"][i] == "broccoli" and pred["emotion"][i] == emotion})
        images += batch
    make_grid(images[: per_prompt * len(prompts_expect)], cols=per_prompt, scale=2).save(out / f"{name}.png")
    share = sum(r["ok"] for r in rows) / len(rows)
    per = {p: sum(r["ok"] for r in rows if r["prompt"] == p) / per_prompt for p, _ in prompts_expect}
    return {"share": share, "per_prompt": per, "images": len(rows),
            "judged_broccoli": sum(r["object"] == "broccoli" for r in rows) / len(rows)}


def train(pipe, concepts: list[ConceptConfig], steps: int, out: Path) -> float:
    cfg = TextualInversionConfig(concepts=concepts, train=TrainConfig(steps=steps, batch_size=4, lr=5e-3))
    result = Trainer(TextualInversion(pipe, cfg), cfg.train, out).train()
    return result.seconds


def main(out: str, steps: int = 400, per_prompt: int = 25) -> None:
    out = Path(out)
    judge, report = load_judge(), {}
    data = out / "data"
    for k, e in enumerate(EMOTIONS):
        export_images(data / f"broccoli-{e.replace(' ', '-')}", 4, seed=1000 + 100 * k,
                      only={**PLAIN, "object": {"broccoli"}, "emotion": {e}})
    export_images(data / "broccoli-mixed", 8, seed=2000, only={**PLAIN, "object": {"broccoli"}, "emotion": set(EMOTIONS)})
    export_images(data / "happy-emoji", 4, seed=3000, only={**PLAIN, "object": {"emoji"}, "emotion": {"happy"},
                                                            "colour": {"yellow"}})
    base = load_pipeline()
    report["baseline"] = judged_share(base, judge, [(prompt_for(e, "broccoli"), e) for e in EMOTIONS], per_prompt, out,
                                      "baseline")
    # (a) four emotions jointly
    pipe = load_pipeline()
    tokens = {e: f"<broccoli-{e.replace(' ', '-')}>" for e in EMOTIONS}
    secs = train(pipe, [ConceptConfig(tokens[e], str(data / f"broccoli-{e.replace(' ', '-')}"), init="broccoli")
                        for e in EMOTIONS], steps, out / "four-emotions")
    report["four_emotions"] = judged_share(pipe, judge, [(f"a sticker of a {tokens[e]}", e) for e in EMOTIONS],
                                           per_prompt, out, "four-emotions")
    report["four_emotions"]["train_seconds"] = secs
    # (b) broccoli + happy emoji jointly, then the emotion prompts and a mix
    pipe = load_pipeline()
    secs = train(pipe, [ConceptConfig("<broccoli>", str(data / "broccoli-mixed"), init="broccoli"),
                        ConceptConfig("<happy-emoji>", str(data / "happy-emoji"), init="emoji")], steps,
                 out / "two-concepts")
    report["two_concepts"] = judged_share(pipe, judge, [(prompt_for(e, "<broccoli>"), e) for e in EMOTIONS],
                                          per_prompt, out, "two-concepts")
    report["two_concepts"]["train_seconds"] = secs
    # (c) as (b), but <broccoli> learns from each image's own caption ('a sticker of a sad green <broccoli>'), so
    # the emotion stays in the emotion word and the token learns faced broccoli
    pipe = load_pipeline()
    secs = train(pipe, [ConceptConfig("<broccoli>", str(data / "broccoli-mixed"), init="broccoli", captions="broccoli"),
                        ConceptConfig("<happy-emoji>", str(data / "happy-emoji"), init="emoji")], steps,
                 out / "two-concepts-captions")
    report["two_concepts_captions"] = judged_share(pipe, judge, [(prompt_for(e, "<broccoli>"), e) for e in EMOTIONS],
                                                   per_prompt, out, "two-concepts-captions")
    report["two_concepts_captions"]["train_seconds"] = secs
    embs = [load_embedding(out / "two-concepts" / n / "learned_embeds.safetensors") for n in ("broccoli", "happy-emoji")]
    render_sweep(load_pipeline(), embs, [0, 0.25, 0.5, 0.75, 1], "lerp", "a sticker of a {}", 0, 30, out)
    (out / "ti-proof.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], int(args[args.index("--steps") + 1]) if "--steps" in args else 400)
