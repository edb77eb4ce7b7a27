"""The second seed project's DreamBooth workflow on the shipped base model, judged.

    python scripts/dreambooth_proof.py OUT [--steps 800] [--lora]

Two named monsters the base model never saw ('tuki', 'bnh'), 10 renders each in varied scenes and
emotions, trained in one run with prior preservation on the class 'monster'; beside it the same run without
prior preservation. Scores, with the judge, over 2 subjects x 4 emotions x 5 scenes x 3 seeds = 120
generations of "a sticker of a <emotion> <id> monster <scene>": identity, emotion, scene. Prior: 48
generations of the bare class prompt before and after training, with and without prior preservation: the
attribute distributions and the share judged to be one of the subjects. The measures are the library's
(conceptlab.evaluation.recipes.dreambooth); `conceptlab evaluate dreambooth OUT/prior` judges a run the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conceptlab.evaluation.judge import load_judge
from conceptlab.evaluation.recipes.dreambooth import SCENES, class_scores, subject_prompt, subject_scores
from conceptlab.imaging import make_grid
from conceptlab.models.loading import load_pipeline
from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, train_dreambooth
from conceptlab.training.loop import TrainConfig
from conceptlab.world.export import export_images, read_metadata

SUBJECTS = ("tuki", "bnh")
EMOTIONS = ("happy", "sad", "angry", "in love")


def varying_captions(folder: Path) -> None:
    """Rewrites a rendered folder's captions to name only what varies between its images (emotion, scene)."""
    rows = read_metadata(folder)
    for row in rows:
        row["text"] = subject_prompt("", "monster", row["emotion"], row["background"])
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def scores(pipe, judge, out: Path, name: str) -> dict:
    """The library's subject and class scores (3 seeds; 48 class images), with their grids."""
    subjects, images = subject_scores(pipe, judge, [(i, "monster") for i in SUBJECTS], EMOTIONS, tuple(SCENES), 3)
    make_grid(images[::3], cols=len(SCENES), scale=2).save(out / f"{name}-subjects.png")
    cls, images = class_scores(pipe, judge, "monster", SUBJECTS, 48)
    make_grid(images[:24], cols=8, scale=2).save(out / f"{name}-class.png")
    return {"subjects": subjects, "class": cls}


def train(out: Path, data: Path, steps: int, prior: bool, lora: bool, model: str | None, text_encoder: bool,
          captions: str = "none", lr: float | None = None, prior_weight: float = 1.0, rank: int = 16,
          class_prompts: str = "class", mask_weight: float | None = None):
    subjects = [SubjectConfig(i, str(data / i), "monster", captions="monster" if captions != "none" else None,
                              masks=str(data / i / "masks") if mask_weight else None)
                for i in SUBJECTS]
    cfg = DreamBoothConfig(
        model=model, subjects=subjects, lora=lora, rank=rank, prior_weight=prior_weight,
        train_text_encoder=text_encoder, mask_weight=mask_weight or 1.0,
        prior_preservation=prior, class_images=100, class_dir=str(out / "class-images"), class_prompts=class_prompts,
        train=TrainConfig(steps=steps, batch_size=4, lr=lr or (1e-3 if lora else 1e-4), checkpoint_every=0,
                          preview_every=0))
    pipe, result = train_dreambooth(cfg, out / ("prior" if prior else "no-prior"))
    return pipe, result.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    ap.add_argument("--train-text-encoder", action="store_true")
    ap.add_argument("--captions", choices=("none", "full", "varying"), default="none",
                    help="train on each render's caption ('monster' -> 'ID monster'): 'full' is the render's own "
                         "caption (colour included), 'varying' names only what varies (emotion, scene), so the "
                         "subject's fixed look is left to the identifier")
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 with --lora, else 1e-4")
    ap.add_argument("--prior-weight", type=float, default=1.0)
    ap.add_argument("--images", type=int, default=10, help="renders per subject (the issue: 8-12)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--no-baseline", action="store_true", help="skip the untrained model's scores")
    ap.add_argument("--class-prompts", choices=("class", "captions"), default="class",
                    help="captions: class images also from the captions with the identifier dropped")
    ap.add_argument("--only-prior", action="store_true", help="skip the run without prior preservation")
    ap.add_argument("--mask-weight", type=float, default=None,
                    help="train with a mask per render (--masks), the subject's pixels weighted this much")
    ap.add_argument("--masks", choices=("silhouette", "face"), default="silhouette",
                    help="with --mask-weight: the silhouette, or the face white and the rest of the body grey")
    args = ap.parse_args()
    out, judge = args.out, load_judge()
    masks = args.masks if args.mask_weight else None
    report = {"steps": args.steps, "lora": args.lora, "train_text_encoder": args.train_text_encoder,
              "captions": args.captions, "images": args.images, "lr": args.lr, "prior_weight": args.prior_weight,
              "rank": args.rank, "class_prompts": args.class_prompts, "mask_weight": args.mask_weight,
              "masks": masks}
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    fixed = {"object": {"monster"}, "style": {"sticker"}, "accessory": {"none"}, "held_item": {"none"},
             "flowers": {"none"}, "background": set(SCENES), "emotion": set(EMOTIONS) | {"neutral"}}
    for k, ident in enumerate(SUBJECTS):
        export_images(data / ident, args.images, seed=5000 + 100 * k, only={**fixed, "individual": {ident}}, individual_rate=1.0,
                      masks=masks or False)
        if args.captions == "varying":
            varying_captions(data / ident)
    if not args.no_baseline:
        report["base"] = scores(load_pipeline(args.model), judge, out, "base")
    for prior in (True,) if args.only_prior else (True, False):
        pipe, secs = train(out, data, args.steps, prior, args.lora, args.model, args.train_text_encoder, args.captions,
                           args.lr, args.prior_weight, args.rank, args.class_prompts if prior else "class",
                           args.mask_weight)
        pipe.set_progress_bar_config(disable=True)
        name = "prior" if prior else "no-prior"
        report[name] = {"train_seconds": secs, **scores(pipe, judge, out, name)}
        print(name, json.dumps(report[name]["subjects"]), report[name]["class"]["judged_as_subject"], flush=True)
    (out / "dreambooth-proof.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k in ("base", "prior", "no-prior")}, indent=1)[:3000])


if __name__ == "__main__":
    main()
