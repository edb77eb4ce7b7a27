"""Editing with a learned concept: Prompt-to-Prompt edits that bring a DreamBooth-LoRA subject in, judged.

    python scripts/concept_edit_proof.py OUT [--lora FILE | --pipeline DIR] [--settings local] [--first-seed 2000]
        [--cases 40]
    python scripts/concept_edit_proof.py OUT --record docs/results/data/concept-edit.json

1. Train (unless --lora names a trained one): the two named monsters 'tuki' and 'bnh' that the base model never
   saw, 10 renders each (as scripts/dreambooth_proof.py renders them), in one DreamBooth-LoRA run on the shipped
   base model (UNet and text-encoder LoRA, captions naming only emotion and scene, captioned class prompts,
   prior weight 0.3). OUT/train/lora holds the LoRA `conceptlab edit --lora` loads.
2. Edit, per subject, with the LoRA loaded at each setting's scale (SETTINGS): "a sticker of a happy monster at
   the beach" -> "a sticker of a happy bnh monster at the beach" (the identifier inserted, P2P's refine mode)
   - on generations (seed S for case S), beside the target prompt regenerated from S, and
   - on rendered stickers of other monsters (conceptlab.world; no individual, or 'moxo'), inverted under the
     source prompt, where the monster's box is known.
3. Judge (conceptlab.evaluation.recipes.concept_edit): the subject read by the judge's identity head in the
   edit; PSNR between edit and source outside the monster's box grown 6 px (a generation's box: its dark
   outline's, checked each run against 60 renders' true boxes). Grids of source | edit pairs (render, source,
   edit for real images) go to OUT/SETTING-SUBJECT-KIND-FIRSTSEED.png.

--pipeline DIR edits with a fully fine-tuned DreamBooth pipeline instead of the LoRA (dreambooth_proof.py's
OUT/ours/pipeline: the same subjects, renders and captions); the settings' LoRA scale is then unused.

Settings are chosen with --first-seed 1000 and reported with --first-seed 2000 (docs/results/concept-edit.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SUBJECTS = ("tuki", "bnh")
EMOTIONS = ("happy", "sad", "angry", "in love")
SCENES = ("plain", "beach", "snowy mountain", "jungle", "desert")


def export_subjects(data: Path, images: int) -> None:
    """10 renders per subject in varied emotions and scenes, captioned with only what varies (dreambooth_proof's data)."""
    from conceptlab.evaluation.recipes.dreambooth import subject_prompt
    from conceptlab.world.export import export_images, read_metadata

    fixed = {"object": {"monster"}, "style": {"sticker"}, "accessory": {"none"}, "held_item": {"none"},
             "flowers": {"none"}, "background": set(SCENES), "emotion": set(EMOTIONS) | {"neutral"}}
    for k, ident in enumerate(SUBJECTS):
        folder = data / ident
        export_images(folder, images, seed=5000 + 100 * k, only={**fixed, "individual": {ident}}, individual_rate=1.0)
        rows = read_metadata(folder)
        for row in rows:
            row["text"] = subject_prompt("", "monster", row["emotion"], row["background"])
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def train(out: Path, steps: int, images: int, rank: int, lr: float, model: str | None) -> tuple[Path, float]:
    """(the LoRA file, seconds): both subjects in one DreamBooth-LoRA run."""
    from conceptlab.concepts.lora import DIFFUSERS_NAME
    from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, train_dreambooth
    from conceptlab.training.loop import TrainConfig

    data = out / "data"
    export_subjects(data, images)
    subjects = [SubjectConfig(i, str(data / i), "monster", captions="monster") for i in SUBJECTS]
    cfg = DreamBoothConfig(model=model, subjects=subjects, lora=True, rank=rank, train_text_encoder=True,
                           prior_preservation=True, prior_weight=0.3, class_images=100, class_prompts="captions",
                           class_dir=str(out / "class-images"),
                           train=TrainConfig(steps=steps, batch_size=4, lr=lr, checkpoint_every=0, preview_every=0))
    t0 = time.perf_counter()
    train_dreambooth(cfg, out / "train")
    return out / "train" / "lora" / DIFFUSERS_NAME, time.perf_counter() - t0


# Edit settings the proof chooses between (--settings), each: editing.edit keywords and the LoRA's scale
_DIFF = {"blend_mask": "difference"}
SETTINGS = {
    "default": {"edit": _DIFF, "lora_scale": 1.0},  # conceptlab edit's defaults (cross 0.8, self 0.4) + the mask
    "self-0.2": {"edit": {**_DIFF, "self_steps": 0.2}, "lora_scale": 1.0},
    "loose": {"edit": {**_DIFF, "cross_steps": 0.6, "self_steps": 0.2}, "lora_scale": 1.0},
    "no-blend": {"edit": {}, "lora_scale": 1.0},
    "lora-1.5": {"edit": _DIFF, "lora_scale": 1.5},
    # the mask taken early (step 3 of 30) and only where the latents drift most, the layout left free
    "local": {"edit": {**_DIFF, "blend_threshold": 0.5, "blend_start": 0.1, "self_steps": 0.0, "cross_steps": 0.4},
              "lora_scale": 1.0},
    "local-lora-1.5": {"edit": {**_DIFF, "blend_threshold": 0.5, "blend_start": 0.1, "self_steps": 0.0,
                                "cross_steps": 0.4}, "lora_scale": 1.5},
    "tight": {"edit": {**_DIFF, "blend_threshold": 0.6, "blend_start": 0.2, "self_steps": 0.2, "cross_steps": 0.6},
              "lora_scale": 1.0},
    "tightest": {"edit": {**_DIFF, "blend_threshold": 0.7, "blend_start": 0.1}, "lora_scale": 1.0},
    "free": {"edit": {**_DIFF, "blend_threshold": 0.4, "blend_start": 0.1, "self_steps": 0.0, "cross_steps": 0.2},
             "lora_scale": 1.5},
    # the object's own box (a render's known box; a generation's dark outline) grown 3 px, drawn as `--mask`:
    # the user says where the subject goes; inside it the layout is left free
    "box": {"edit": {"mask_box": 3, "self_steps": 0.0, "cross_steps": 0.4}, "lora_scale": 1.0},
    "box-cross-0.2": {"edit": {"mask_box": 3, "self_steps": 0.0, "cross_steps": 0.2}, "lora_scale": 1.0},
    # no attention taken from the source: inside the box the target prompt draws from the inverted latents alone
    "box-cross-0": {"edit": {"mask_box": 3, "self_steps": 0.0, "cross_steps": 0.0}, "lora_scale": 1.0},
    # room for a subject larger than the source's object (tuki's antennae stand above a plain monster's box)
    "box-8": {"edit": {"mask_box": 8, "self_steps": 0.0, "cross_steps": 0.4}, "lora_scale": 1.0},
    # the targets draw their own layout for the first 30% of steps, the source kept outside the box after that
    "box-start-0.3": {"edit": {"mask_box": 3, "blend_start": 0.3, "self_steps": 0.0, "cross_steps": 0.4},
                      "lora_scale": 1.0},
    "box-8-start-0.3": {"edit": {"mask_box": 8, "blend_start": 0.3, "self_steps": 0.0, "cross_steps": 0.4},
                        "lora_scale": 1.0},
    # inside the box the edit starts from fresh noise (all, or half mixed with the source's), `edit --mask-noise`
    "box-8-noise-1": {"edit": {"mask_box": 8, "mask_noise": 1.0, "self_steps": 0.0, "cross_steps": 0.4},
                      "lora_scale": 1.0},
    "box-8-noise-0.5": {"edit": {"mask_box": 8, "mask_noise": 0.5, "self_steps": 0.0, "cross_steps": 0.4},
                        "lora_scale": 1.0},
    "box-8-noise-1-cross-0": {"edit": {"mask_box": 8, "mask_noise": 1.0, "self_steps": 0.0, "cross_steps": 0.0},
                              "lora_scale": 1.0},
    "box-8-cross-0": {"edit": {"mask_box": 8, "self_steps": 0.0, "cross_steps": 0.0}, "lora_scale": 1.0},
    # no attention from the source and the first steps free: the target sets its own layout, then the outside
    # is the source's
    "box-8-start-0.3-cross-0": {"edit": {"mask_box": 8, "blend_start": 0.3, "self_steps": 0.0, "cross_steps": 0.0},
                                "lora_scale": 1.0},
    "box-8-start-0.5-cross-0": {"edit": {"mask_box": 8, "blend_start": 0.5, "self_steps": 0.0, "cross_steps": 0.0},
                                "lora_scale": 1.0},
    "box-8-noise-1-start-0.3-cross-0": {"edit": {"mask_box": 8, "mask_noise": 1.0, "blend_start": 0.3,
                                                 "self_steps": 0.0, "cross_steps": 0.0}, "lora_scale": 1.0},
    # the box joined with the outline of what the target draws unmasked (the plain target for a generation, a
    # first unmasked edit for an inverted render); the target drawn free, then pasted in pixels outside the box
    # (`edit --mask-paste 2`): a small model's decoder leaks the source's colours through a latent blend
    "union-paste": {"edit": {"mask_box": 3, "mask_union": True, "blend_start": 1.0, "mask_paste": 2.0,
                             "self_steps": 0.0, "cross_steps": 0.0}, "lora_scale": 1.0},
    "union-paste-start-0.7": {"edit": {"mask_box": 3, "mask_union": True, "blend_start": 0.7, "mask_paste": 2.0,
                                       "self_steps": 0.0, "cross_steps": 0.0}, "lora_scale": 1.0},
    # the source's cross-attention for the first steps: the subject drawn nearer where the source's object is
    "union-paste-cross-0.2": {"edit": {"mask_box": 3, "mask_union": True, "blend_start": 1.0, "mask_paste": 2.0,
                                       "self_steps": 0.0, "cross_steps": 0.2}, "lora_scale": 1.0},
    "union-paste-cross-0.4": {"edit": {"mask_box": 3, "mask_union": True, "blend_start": 1.0, "mask_paste": 2.0,
                                       "self_steps": 0.0, "cross_steps": 0.4}, "lora_scale": 1.0},
    # the union box grown 1 px (not 3) and a 1 px seam: less of the old picture around the subject is redrawn
    "union-paste-tight": {"edit": {"mask_box": 1, "mask_union": True, "blend_start": 1.0, "mask_paste": 1.0,
                                   "self_steps": 0.0, "cross_steps": 0.0}, "lora_scale": 1.0},
    # no union: the object's box grown 8 px, drawn from fresh noise inside, pasted
    "box-8-noise-paste": {"edit": {"mask_box": 8, "mask_noise": 1.0, "blend_start": 1.0, "mask_paste": 2.0,
                                   "self_steps": 0.0, "cross_steps": 0.0}, "lora_scale": 1.0},
}


def load_edit_pipeline(lora: Path | None, model: str | None):
    """`model` (default the base model) with the subjects' LoRA loaded as adapter 'lora0' (as `conceptlab edit
    --lora` loads it); lora None: the model as it is (a fully fine-tuned pipeline)."""
    from conceptlab.concepts.lora import apply_loras
    from conceptlab.models.loading import load_pipeline

    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        apply_loras(pipe, [(lora, 1.0)])
    return pipe


def run_setting(pipe, judge, name: str, args, out: Path) -> dict:
    """Every subject and kind of edit under one setting; writes the source | edit grids and returns the run."""
    from conceptlab.evaluation.recipes import concept_edit as C

    setting = SETTINGS[name]
    if args.pipeline is None:
        pipe.set_adapters(["lora0"], adapter_weights=[setting["lora_scale"]])
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows, t0 = [], time.perf_counter()
    for subject in args.subjects:
        for kind in args.kinds:
            edits = C.concept_edits(subject, kind, args.first_seed, args.cases, size)
            mine, images = C.run_concept_edits(pipe, judge, edits, setting["edit"], args.inversion, progress=False,
                                               regenerate=not args.no_regenerate)
            rows += mine
            cols = 8 if kind == "generated" else 9  # pairs (source, edit); triples (render, source, edit)
            C.save_pairs(images[:cols * 6], out / f"{name}-{subject}-{kind}-{args.first_seed}.png", cols)
    summary = C.summarize(rows)
    return {"setting": name, **setting, "first_seed": args.first_seed, "cases": args.cases,
            "inversion": args.inversion, "seconds": time.perf_counter() - t0, "summary": summary,
            "bars": [b.record() for b in C.concept_edit_bars(summary)], "rows": rows}


def record(out: Path, page: Path, model_name: str) -> None:
    """Adds OUT/concept-edit.json's runs (one record per run, subject and kind) to a results page's JSON."""
    import subprocess

    from conceptlab.evaluation.recipes.concept_edit import merge_records, records_from

    result = json.loads((out / "concept-edit.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    date = time.strftime("%Y-%m-%d", time.localtime((out / "concept-edit.json").stat().st_mtime))
    data = json.loads(page.read_text()) if page.is_file() else None
    data = merge_records(data, records_from(result, date=date, commit=commit, model=model_name))
    page.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"{page}: {len(data['records'])} records")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--lora", type=Path, default=None, help="a trained subjects' LoRA (default: train one into OUT)")
    ap.add_argument("--pipeline", type=Path, default=None,
                    help="a fully fine-tuned DreamBooth pipeline of the subjects to edit with, instead of a LoRA")
    ap.add_argument("--train-steps", type=int, default=500)
    ap.add_argument("--images", type=int, default=10, help="renders per subject")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--settings", nargs="+", default=["default"], choices=list(SETTINGS))
    ap.add_argument("--subjects", nargs="+", default=list(SUBJECTS), choices=list(SUBJECTS))
    ap.add_argument("--kinds", nargs="+", default=["generated", "real"], choices=["generated", "real"])
    ap.add_argument("--first-seed", type=int, default=2000, help="1000: the choosing range; 2000: the report range")
    ap.add_argument("--cases", type=int, default=40, help="edits per subject and kind")
    ap.add_argument("--inversion", default="negative-prompt", help="how the renders are inverted")
    ap.add_argument("--no-regenerate", action="store_true",
                    help="skip regenerating each generated edit's target prompt from its seed (faster choosing runs)")
    ap.add_argument("--record", metavar="PAGE_JSON", type=Path, default=None,
                    help="add OUT/concept-edit.json's runs to a docs/results/data page and stop")
    ap.add_argument("--model-name", default="v9", help="the model's name in the record")
    ap.add_argument("--name", default=None,
                    help="with --pipeline: a word for the pipeline's training in the records' ids and weights column")
    args = ap.parse_args()
    if args.record:
        return record(args.out, args.record, args.model_name)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "concept-edit.json"
    report = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    if args.pipeline is not None:  # a fully fine-tuned pipeline: nothing to train, no LoRA to load
        trained = args.pipeline.parent / "training.json"
        steps = json.loads(trained.read_text()).get("steps") if trained.is_file() else None
        report["train"] = {"pipeline": str(args.pipeline), "full_fine_tune": True, "steps": steps, "name": args.name}
        return edit_runs(args, report, path, load_edit_pipeline(None, str(args.pipeline)))
    if args.lora is None and (args.out / "train.json").is_file():  # trained by an earlier call into OUT
        args.lora = Path(json.loads((args.out / "train.json").read_text())["lora"])
    trained_by = args.lora.parents[2] / "train.json" if args.lora is not None else None  # ITS_OUT/train/lora/FILE
    if trained_by is not None and trained_by.is_file():  # a LoRA this script trained: keep how
        report["train"] = json.loads(trained_by.read_text())
    if args.lora is None:
        args.lora, secs = train(args.out, args.train_steps, args.images, args.rank, args.lr, args.model)
        report["train"] = {"seconds": secs, "steps": args.train_steps, "rank": args.rank, "lr": args.lr,
                           "images": args.images, "lora": str(args.lora)}
        (args.out / "train.json").write_text(json.dumps(report["train"], indent=2))
        print("trained", json.dumps(report["train"]), flush=True)
    if args.train_only:
        return
    edit_runs(args, report, path, load_edit_pipeline(args.lora, args.model))


def edit_runs(args, report: dict, path: Path, pipe) -> None:
    """Every --settings run on `pipe`, each saved into OUT/concept-edit.json as it finishes."""
    from conceptlab.evaluation.judge import load_judge
    from conceptlab.evaluation.recipes.concept_edit import outline_box_check

    report["outline_box_check"] = outline_box_check()
    judge = load_judge()
    for name in args.settings:
        run = run_setting(pipe, judge, name, args, args.out)
        report["runs"][f"{name}@{args.first_seed}"] = run
        path.write_text(json.dumps(report, indent=1))
        print(name, args.first_seed, json.dumps(run["summary"]), flush=True)
        for bar in run["bars"]:
            print("  ", bar["line"], flush=True)


if __name__ == "__main__":
    main()
