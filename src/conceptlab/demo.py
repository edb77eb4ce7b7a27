"""`conceptlab demo`: runs every capability on the shipped base model and writes an HTML report."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from conceptlab.evaluation.report import Report
from conceptlab.generation.generate import GenerationConfig, run_generation
from conceptlab.imaging import make_grid
from conceptlab.models.loading import default_model, load_pipeline, shipped_base_model
from conceptlab.world import render, sample_spec

DEMO_PROMPTS = (
    "a sticker of a happy yellow emoji",
    "a sticker of an angry red apple on a beach",
    "a painting of a sad blue cat in the snowy mountains",
    "a sketch of a green star in love wearing sunglasses",
    "a sticker of a happy pink cloud holding a burger in a desert",
    "a sticker of a neutral purple fish with many flowers by a river",
)


# global edits (style, scene): the source's maps fix the layout for the first fifth of the steps only
GLOBAL_EDIT = {"cross_steps": 0.2, "self_steps": 0.2}


def _model_for_demo(model: str | None):
    if model is None and not (shipped_base_model() / "model_index.json").exists():
        from conceptlab.models.tiny import build_pipeline

        return build_pipeline("tiny"), "tiny random pipeline (the base model is not shipped in this checkout)"
    return load_pipeline(model), model or default_model()


def world_section(report: Report, out: Path) -> None:
    report.heading("The sticker world")
    renders = [render(sample_spec(i, individual_rate=0.3)) for i in range(24)]
    path = out / "world.png"
    make_grid([r.image for r in renders], cols=8, scale=2).save(path)
    report.image(path, "24 random renders (seeds 0-23); each has labels and a caption")
    report.table([{"seed": i, "caption": r.caption} for i, r in enumerate(renders[:6])])


def generation_section(report: Report, out: Path, pipe, label: str, n: int, steps: int) -> None:
    report.heading("Generation")
    report.text(f"Model: {label}. {n} images per prompt, seeds 0..{n - 1}, {steps} steps, guidance 7.5.")
    for k, prompt in enumerate(DEMO_PROMPTS):
        folder = out / "generate" / f"prompt{k}"
        t0 = time.perf_counter()
        run_generation(pipe, GenerationConfig(prompt=prompt, n=n, steps=steps, grid=True), folder,
                       model=label, progress=False)
        report.image(folder / "grid.png", f"{prompt!r} ({time.perf_counter() - t0:.1f} s)")


def base_model_section(report: Report, label: str) -> None:
    import json

    scores = shipped_base_model() / "scores.json"
    if label != default_model() or not scores.is_file():
        return
    data = json.loads(scores.read_text())
    report.heading("Base model scores (from its model card)")
    rows = [{"prompts": g, "images": data["counts"][g], **{k: round(v, 3) for k, v in acc.items()}}
            for g, acc in data["accuracy"].items()]
    report.table(rows)
    report.text(f"Loads in {data['load_seconds']} s; 8 images at 30 steps in {data['batch8_30steps_seconds']} s.")


def textual_inversion_section(report: Report, out: Path, model: str | None, label: str, ti_steps: int,
                              steps: int) -> None:
    """The first seed project's two-concept workflow: broccoli with a face + happy emoji, trained jointly."""
    from conceptlab.concepts.sweep import render_sweep
    from conceptlab.training.loop import TrainConfig, Trainer
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
    from conceptlab.world.export import export_images

    report.heading("Textual inversion: <broccoli> + <happy-emoji>, trained jointly")
    data = out / "ti-data"
    export_images(data / "broccoli", 8, seed=500, only={"object": {"broccoli"}, "emotion": {"happy", "sad", "angry",
                  "in love"}, "style": {"sticker"}, "background": {"plain"}, "accessory": {"none"},
                  "held_item": {"none"}, "flowers": {"none"}, "colour": {"green"}})
    export_images(data / "emoji", 4, seed=600, only={"object": {"emoji"}, "emotion": {"happy"}, "style": {"sticker"},
                  "background": {"plain"}, "accessory": {"none"}, "held_item": {"none"}, "flowers": {"none"}})
    pipe, _ = _model_for_demo(model)
    cfg = TextualInversionConfig(
        model=label, concepts=[ConceptConfig("<broccoli>", str(data / "broccoli"), init="broccoli"),
                               ConceptConfig("<happy-emoji>", str(data / "emoji"), init="emoji")],
        train=TrainConfig(steps=ti_steps, batch_size=4, lr=5e-3, preview_every=max(1, ti_steps // 2),
                          preview_prompts=["a sticker of a <broccoli>", "a sticker of a <happy-emoji>"]),
    )
    ti_out = out / "ti"
    result = Trainer(TextualInversion(pipe, cfg), cfg.train, ti_out).train()
    report.text(f"{ti_steps} steps in {result.seconds:.0f} s, final loss {result.losses[-1]:.4f}. "
                f"Files in every format under {ti_out.name}/broccoli and {ti_out.name}/happy-emoji.")
    report.image(data / "broccoli" / "000500.png", "one of the 8 training images of <broccoli>", width=128)
    report.image(ti_out / "loss.png", "training loss", width=420)
    prompts = [f"a sticker of a {e} <broccoli>" for e in ("happy", "sad", "angry")] + ["a sticker of a <broccoli> in love",
               "a sticker of a <broccoli> with a <happy-emoji> face"]
    images = _four_each(pipe, prompts, steps)
    grid = out / "ti-prompts.png"
    make_grid(images, cols=4, scale=2).save(grid)
    report.image(grid, "rows: " + " | ".join(prompts) + " (seeds 0-3)")
    plain = _four_each(pipe, [p.replace("<broccoli>", "broccoli") for p in prompts[:4]], steps)
    report.table([{"prompts": f"'a sticker of a {{emotion}} {word}', 4 emotions x 4 seeds",
                   "judged broccoli with the asked emotion": f"{_emotion_hits(batch)}/16"}
                  for word, batch in (("<broccoli>", images[:16]), ("broccoli (the base model's word)", plain))])
    from conceptlab.concepts.formats import load_embedding

    embs = [load_embedding(ti_out / name / "learned_embeds.safetensors") for name in ("broccoli", "happy-emoji")]
    sweep = render_sweep(_model_for_demo(model)[0], embs, [0, 0.25, 0.5, 0.75, 1], "lerp", "a sticker of a {}", 0,
                         steps, out)
    report.image(sweep, "mixing <broccoli> into <happy-emoji>: 0%, 25%, 50%, 75%, 100% emoji (two seeds)")


def _four_each(pipe, prompts: list[str], steps: int) -> list:
    """Four images per prompt, seeds 0-3."""
    images = []
    for p in prompts:
        gens = [torch.Generator().manual_seed(i) for i in range(4)]
        images += pipe([p] * 4, num_inference_steps=steps, generator=gens).images
    return images


def _emotion_hits(images: list) -> int:
    """How many of 16 images (happy, sad, angry, in love; 4 each) the judge reads as broccoli with that emotion."""
    from conceptlab.evaluation.judge import load_judge

    pred = load_judge().predict(images)
    asked = [e for e in ("happy", "sad", "angry", "in love") for _ in range(4)]
    return sum(o == "broccoli" and e == a for o, e, a in zip(pred["object"], pred["emotion"], asked))


def dreambooth_section(report: Report, out: Path, model: str | None, db_steps: int, steps: int) -> None:
    """DreamBooth-LoRA on two named monsters the base model never saw, with prior preservation; judged."""
    from conceptlab.evaluation.judge import load_judge
    from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, train_dreambooth
    from conceptlab.training.loop import TrainConfig
    from conceptlab.world.export import export_images

    report.heading("DreamBooth (LoRA) with prior preservation")
    pipe, label = _model_for_demo(model)
    data, subjects = out / "dreambooth-data", ("tuki", "bnh")
    only = {"object": {"monster"}, "style": {"sticker"}, "accessory": {"none"}, "held_item": {"none"},
            "flowers": {"none"}}
    for k, ident in enumerate(subjects):
        export_images(data / ident, 10, seed=5000 + 100 * k, only={**only, "individual": {ident}}, individual_rate=1.0)
    cfg = DreamBoothConfig(model=label, subjects=[SubjectConfig(i, str(data / i), "monster") for i in subjects],
                           lora=True, rank=16, prior_preservation=True, class_images=24,
                           train=TrainConfig(steps=db_steps, batch_size=4, lr=1e-3))
    judge = load_judge()
    before = pipe(["a monster"] * 8, num_inference_steps=steps,
                  generator=[torch.Generator().manual_seed(i) for i in range(8)]).images
    pipe, result = train_dreambooth(cfg, out / "dreambooth", pipe=pipe)
    report.text(f"LoRA rank 16 on the UNet's attention, {db_steps} steps in {result.seconds:.0f} s, 10 renders per "
                f"subject, 24 class images of 'a monster'. Files: dreambooth/lora (diffusers and kohya formats).")
    report.image(data / "tuki" / "005000.png", "one training image of tuki", width=128)
    scenes = ("on a white background", "at the beach", "in the jungle", "in the desert")
    cases = [(i, f"a sticker of a {e} {i} monster {sc}") for i in subjects
             for e, sc in zip(("happy", "sad", "angry", "happy"), scenes)]
    prompts, images = [p for _, p in cases], []
    for p in prompts:
        images += pipe([p] * 2, num_inference_steps=steps,
                       generator=[torch.Generator().manual_seed(s) for s in range(2)]).images
    pred = judge.predict(images)
    ok = [pred["individual"][k] == cases[k // 2][0] for k in range(len(images))]
    grid = out / "dreambooth.png"
    make_grid(images, cols=4, scale=2).save(grid)
    report.image(grid, "pairs of seeds for: " + " | ".join(prompts))
    after = pipe(["a monster"] * 8, num_inference_steps=steps,
                 generator=[torch.Generator().manual_seed(i) for i in range(8)]).images
    path = out / "dreambooth-class.png"
    make_grid(before + after, cols=8, scale=2).save(path)
    as_subject = sum(p in subjects for p in judge.predict(after)["individual"])
    report.image(path, "'a monster' before (top) and after (bottom) training: prior preservation keeps the class")
    report.table([{"judged identity right": f"{sum(ok)}/{len(ok)}",
                   "'a monster' judged as a subject after training": f"{as_subject}/8"}])


def editing_section(report: Report, out: Path, model: str | None, steps: int) -> None:
    """Prompt-to-Prompt on the base model: word swap, style, re-weighting, and a real (rendered) image."""
    from conceptlab.editing.edit import edit
    from conceptlab.editing.inversion import invert, reconstruct
    from conceptlab.evaluation.metrics import psnr
    from conceptlab.world import StickerSpec, render

    pipe, _ = _model_for_demo(model)
    report.heading("Prompt-to-Prompt editing")
    rows = []
    local = {"blend_mask": "difference"}  # swaps keep everything their latents do not move
    cases = [("word swap", "a sticker of a happy red star on a beach", ["a sticker of a happy red apple on a beach"], local),
             ("held item", "a sticker of a happy blue cat holding a burger", ["a sticker of a happy blue cat holding a cake"],
              local),
             ("style", "a sticker of a sad green fish in the desert", ["a painting of a sad green fish in the desert"],
              GLOBAL_EDIT),
             ("background", "a sticker of an angry yellow emoji on a beach", ["a sticker of an angry yellow emoji in a jungle"],
              GLOBAL_EDIT)]
    for name, source, targets, extra in cases:
        images = []
        for seed in range(3):
            images += edit(pipe, source, targets, seed=seed, steps=steps, **extra).images
        path = out / f"edit-{name.replace(' ', '-')}.png"
        make_grid(images, cols=2, scale=2).save(path)
        report.image(path, f"{name}: {source!r} -> {targets[0]!r} (pairs: source, edit; seeds 0-2)", width=260)
        rows.append({"edit": name, "source": source, "target": targets[0]})
    strip, weights = [], (-1, 0, 0.5, 1, 1.5)  # past about 1.5 the shipped model's images break up
    prompt = "a sticker of a happy orange cat on a white background"
    for seed in range(2):
        for w in weights:
            strip.append(edit(pipe, prompt, prompt, reweight={"happy": float(w)}, seed=seed, steps=steps).images[1])
    path = out / "edit-reweight.png"
    make_grid(strip, cols=len(weights), labels=[f"happy x{w}" for w in weights] * 2, scale=2).save(path)
    report.image(path, "re-weighting 'happy' from -1 to 1.5 (two seeds)", width=520)
    real = render(StickerSpec(object="emoji", emotion="happy", colour="yellow", seed=5))
    inv = invert(pipe, real.image, "a sticker of a happy yellow emoji", "negative-prompt", steps, refine_steps=100)
    rec = reconstruct(pipe, inv)
    edited = edit(pipe, "a sticker of a happy yellow emoji", ["a sticker of a sad yellow emoji",
                                                              "a painting of a happy yellow emoji"], inversion=inv)
    path = out / "edit-real.png"
    make_grid([inv.image, rec, *edited.images[1:]], cols=4, scale=2).save(path)
    report.image(path, f"a real (rendered) image, its negative-prompt inversion, latent refined ({psnr(inv.image, rec):.1f} dB), "
                       "edited to sad and to a painting", width=520)


def run_demo(out: str | Path = "demo-output", model: str | None = None, n: int = 8, steps: int = 30,
             ti_steps: int = 200, db_steps: int = 300) -> Path:
    """Runs the demo into `out` and returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe, label = _model_for_demo(model)
    report = Report("conceptlab demo", out)
    world_section(report, out)
    generation_section(report, out, pipe, label, n, steps)
    base_model_section(report, label)
    if ti_steps:
        textual_inversion_section(report, out, model, label, ti_steps, steps)
    if db_steps:
        dreambooth_section(report, out, model, db_steps, steps)
    editing_section(report, out, model, steps)
    return report.write()
