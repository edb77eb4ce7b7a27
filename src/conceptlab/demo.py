"""`conceptlab demo`: every capability on the shipped base model, judged, in an HTML report.

The pipeline is loaded once. Stages that change it run last: editing needs the UNet as shipped, so it runs
before DreamBooth, which adds LoRA adapters; textual inversion only adds tokens, which no later prompt uses.
Every judged section states its bar and says plainly, on the page and in the terminal, when it is below it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from conceptlab.evaluation.recipes.common import Bar, verdict
from conceptlab.evaluation.report import Report
from conceptlab.generation.generate import GenerationConfig, generate_batch, run_generation
from conceptlab.imaging import make_grid
from conceptlab.models.loading import default_model, load_pipeline, model_label, shipped_base_model
from conceptlab.world import render, sample_spec

DEMO_PROMPTS = {  # prompt -> what the judge should read in its images
    "a sticker of a happy yellow emoji": {"object": "emoji", "emotion": "happy", "colour": "yellow", "style": "sticker"},
    "a sticker of an angry red apple on a beach": {"object": "apple", "emotion": "angry", "colour": "red",
                                                   "background": "beach", "style": "sticker"},
    "a painting of a sad blue cat in the snowy mountains": {"object": "cat", "emotion": "sad", "colour": "blue",
                                                            "background": "snowy mountain", "style": "painting"},
    "a sketch of a green star in love wearing sunglasses": {"object": "star", "emotion": "in love", "colour": "green",
                                                            "accessory": "sunglasses", "style": "sketch"},
    "a sticker of a happy pink cloud holding a burger in a desert": {"object": "cloud", "emotion": "happy",
                                                                     "colour": "pink", "held_item": "burger",
                                                                     "background": "desert", "style": "sticker"},
    "a sticker of a neutral purple fish with many flowers by a river": {"object": "fish", "emotion": "neutral",
                                                                        "colour": "purple", "flowers": "many",
                                                                        "background": "river", "style": "sticker"},
}
# The shipped model's card reads 78-99.5% per attribute on 400 prompts (README); a demo prompt set judged
# below 80% of what it asked for is not showing that model.
GENERATION_FLOOR = 0.80
# Relative cost of the stages' work, in "image-steps": one image through one guided sampling step (two UNet
# passes). Measured on the shipped model on CPU: a training image (forward and backward, one pass) costs
# about 1.5 image-steps; an edited image about 1.3 (attention is computed explicitly where an edit needs it).
TRAIN_IMAGE, EDIT_IMAGE = 1.5, 1.3


@dataclass
class Stages:
    """Prints a line per stage with an estimate of its time (work x seconds per image-step, measured as it
    goes), then its actual time and verdict; collects each section's verdict for the page's summary."""

    total: int
    rate: float = 0.05  # seconds per image-step; replaced by the probe and by every stage measured
    done: list[tuple[float, float]] = field(default_factory=list)  # (work, seconds) of measured stages
    verdicts: list[dict] = field(default_factory=list)
    k: int = 0  # the running stage: its number, name, estimated work and start time
    name: str = ""
    work: float = 0.0
    t0: float = 0.0

    def start(self, name: str, what: str, work: float = 0.0):
        self.k, self.name, self.work, self.t0 = self.k + 1, name, work, time.perf_counter()
        guess = f", about {_duration(work * self.rate)}" if work else ""
        print(f"[{self.k}/{self.total}] {name}: {what}{guess}", flush=True)

    def end(self, bars: list[Bar] | None = None) -> str | None:
        seconds = time.perf_counter() - self.t0
        if self.work:
            self.done.append((self.work, seconds))
            self.rate = sum(s for _, s in self.done) / sum(w for w, _ in self.done)
        result = verdict(bars) if bars is not None else None
        print(f"      done in {_duration(seconds)}" + (f": {result}" if result else ""), flush=True)
        for bar in bars or []:
            print(("      ok    " if bar.passed else "      BELOW ") + bar.line(), flush=True)
        if bars is not None:
            self.verdicts.append({"section": self.name, "verdict": result, "numbers": "; ".join(b.line() for b in bars)})
        return result


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def say_verdict(report: Report, bars: list[Bar]) -> None:
    """The section's verdict and every number behind it, above its pictures."""
    report.text(f"Verdict: {verdict(bars)}. " + " ".join(b.line()[0].upper() + b.line()[1:] + "." for b in bars))


def probe_rate(pipe) -> float:
    """Seconds per image-step of this pipeline here: four images, three steps, after a first call that pays
    the one-off costs (allocations, kernels chosen)."""
    generate_batch(pipe, ["a sticker of a star"], [0], steps=1, progress=False)
    t0 = time.perf_counter()
    generate_batch(pipe, ["a sticker of a star"] * 4, [0, 1, 2, 3], steps=3, batch_size=4, progress=False)
    return (time.perf_counter() - t0) / 12


# ----------------------------------------------------------------------------------------------- sections


def world_section(report: Report, out: Path) -> None:
    report.heading("The sticker world")
    renders = [render(sample_spec(i, individual_rate=0.3)) for i in range(24)]
    path = out / "world.png"
    make_grid([r.image for r in renders], cols=8, scale=2).save(path)
    report.image(path, "24 random renders (seeds 0-23); each has labels and a caption")
    report.table([{"seed": i, "caption": r.caption} for i, r in enumerate(renders[:6])])


def generation_section(report: Report, out: Path, pipe, label: str, judge, n: int, steps: int) -> list[Bar]:
    """Each demo prompt from seeds 0..n-1, and the share of the attributes it asks for that the judge reads."""
    from PIL import Image

    hits, asked, grids = 0, 0, []
    for k, (prompt, expect) in enumerate(DEMO_PROMPTS.items()):
        folder = out / "generate" / f"prompt{k}"
        rows = run_generation(pipe, GenerationConfig(prompt=prompt, n=n, steps=steps, grid=True), folder, model=label)
        pred = judge.predict([Image.open(folder / r["file"]).convert("RGB") for r in rows])
        hits += sum(pred[a][i] == v for a, v in expect.items() for i in range(len(rows)))
        asked += len(expect) * len(rows)
        grids.append((folder / "grid.png", repr(prompt)))
    bars = [Bar("asked attributes judged right", hits / asked, floor=GENERATION_FLOOR, n=asked,
                why="the model card reads 78-99.5% per attribute")]
    report.heading("Generation")
    report.text(f"Model: {label}. {n} images per prompt, seeds 0..{n - 1}, {steps} steps, guidance 7.5; the judge "
                "reads each image's object, emotion, colour, scene, style, accessory, held item and flowers as asked.")
    say_verdict(report, bars)
    for path, caption in grids:
        report.image(path, caption)
    return bars


def base_model_section(report: Report, label: str) -> None:
    scores = shipped_base_model() / "scores.json"
    if label != default_model() or not scores.is_file():
        return
    data = json.loads(scores.read_text())
    report.heading("Base model scores (from its model card)")
    rows = [{"prompts": g, "images": data["counts"][g], **{k: round(v, 3) for k, v in acc.items()}}
            for g, acc in data["accuracy"].items()]
    report.table(rows)
    report.text(f"Loads in {data['load_seconds']} s; 8 images at 30 steps in {data['batch8_30steps_seconds']} s.")


def textual_inversion_section(report: Report, out: Path, pipe, label: str, judge, ti_steps: int, steps: int) -> list[Bar]:
    """The first seed project's two-concept workflow: broccoli with a face + happy emoji, trained jointly, judged
    (evaluate_ti_run) against the plain word 'broccoli' on the same seeds."""
    from dataclasses import asdict

    from conceptlab.concepts.formats import load_embedding
    from conceptlab.concepts.sweep import render_sweep
    from conceptlab.evaluation.recipes import evaluate_ti_run
    from conceptlab.training.loop import TrainConfig, Trainer
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
    from conceptlab.world.export import export_images

    data, plain = out / "ti-data", {"style": {"sticker"}, "background": {"plain"}, "accessory": {"none"},
                                     "held_item": {"none"}, "flowers": {"none"}}
    export_images(data / "broccoli", 8, seed=500, only={**plain, "object": {"broccoli"}, "colour": {"green"},
                                                        "emotion": {"happy", "sad", "angry", "in love"}})
    export_images(data / "emoji", 4, seed=600, only={**plain, "object": {"emoji"}, "emotion": {"happy"}})
    cfg = TextualInversionConfig(
        model=label, concepts=[ConceptConfig("<broccoli>", str(data / "broccoli"), init="broccoli"),
                               ConceptConfig("<happy-emoji>", str(data / "emoji"), init="emoji")],
        train=TrainConfig(steps=ti_steps, batch_size=4, lr=5e-3, preview_every=max(1, ti_steps // 2),
                          preview_prompts=["a sticker of a <broccoli>", "a sticker of a <happy-emoji>"]),
    )
    ti_out = out / "ti"
    result = Trainer(TextualInversion(pipe, cfg), cfg.train, ti_out, config_record=asdict(cfg)).train()
    scores = evaluate_ti_run(ti_out, out / "ti-eval", pipe=pipe, judge=judge, per_prompt=4, steps=steps,
                             tokens=["<broccoli>"])
    bars = bars_of(scores)
    both = "a sticker of a <broccoli> with a <happy-emoji> face"
    make_grid(generate_batch(pipe, [both] * 4, [0, 1, 2, 3], steps=steps), cols=4, scale=2).save(out / "ti-both.png")
    embs = [load_embedding(ti_out / name / "learned_embeds.safetensors") for name in ("broccoli", "happy-emoji")]
    pipe.set_progress_bar_config(disable=False, desc="mixing sweep")
    sweep = render_sweep(pipe, embs, [0, 0.25, 0.5, 0.75, 1], "lerp", "a sticker of a {}", 0, steps, out)
    pipe.set_progress_bar_config(disable=True)

    s = scores["concepts"]["<broccoli>"]
    report.heading("Textual inversion: <broccoli> + <happy-emoji>, trained jointly")
    report.text(f"{ti_steps} steps in {result.seconds:.0f} s, final loss {result.losses[-1]:.4f}. Files in every "
                f"format under {ti_out.name}/broccoli and {ti_out.name}/happy-emoji; the numbers in ti-eval/scores.json "
                f"(`conceptlab evaluate ti OUT/{ti_out.name}` measures the same way).")
    say_verdict(report, bars)
    report.table([{"prompts": f"'a sticker of a {{emotion}} {w}', 4 emotions x 4 seeds", "judged broccoli with "
                   "the asked emotion": f"{round(x['share'] * x['images'])}/{x['images']}"}
                  for w, x in (("<broccoli>", s), ("broccoli (the base model's word)", s["plain_word"]))])
    report.image(data / "broccoli" / "000500.png", "one of the 8 training images of <broccoli>", width=128)
    report.image(ti_out / "loss.png", "training loss", width=420)
    report.image(out / "ti-eval" / "grid.png", "rows: " + " | ".join(s["per_prompt"]) + ", then the same with the "
                 "plain word 'broccoli' (seeds 0-3)")
    report.image(out / "ti-both.png", f"{both!r} (seeds 0-3)", width=260)
    report.image(sweep, "mixing <broccoli> into <happy-emoji>: 0%, 25%, 50%, 75%, 100% emoji (two seeds)")
    return bars


def bars_of(scores: dict) -> list[Bar]:
    """The Bar objects behind a recipe's scores.json records."""
    from dataclasses import fields

    return [Bar(**{f.name: b[f.name] for f in fields(Bar)}) for b in scores["bars"]]


EDIT_CASES = (  # name, source, target, (judge head, old, new), edit settings
    ("word swap", "a sticker of a happy red star on a beach", "a sticker of a happy red apple on a beach",
     ("object", "star", "apple"), {"blend_mask": "difference"}),  # swaps keep all their latents do not move
    ("held item", "a sticker of a happy blue cat holding a burger", "a sticker of a happy blue cat holding a cake",
     ("held_item", "burger", "cake"), {"blend_mask": "difference"}),
    ("style", "a sticker of a sad green fish in the desert", "a painting of a sad green fish in the desert",
     ("style", "sticker", "painting"), {"cross_steps": 0.2, "self_steps": 0.2}),  # global: layout from the first 20%
    ("background", "a sticker of an angry yellow emoji on a beach", "a sticker of an angry yellow emoji in a jungle",
     ("background", "beach", "jungle"), {"cross_steps": 0.2, "self_steps": 0.2}),
)
REWEIGHTS = (-1, 0, 0.5, 1, 1.5)  # past about 1.5 the shipped model's images break up
EDIT_SEEDS = 3


def editing_section(report: Report, out: Path, pipe, judge, steps: int) -> list[Bar]:
    """Prompt-to-Prompt on the base model: swaps judged with their locality, style and scene judged,
    re-weighting judged per weight, and a real (rendered) image inverted and edited."""
    from tqdm.auto import tqdm

    from conceptlab.editing.edit import edit
    from conceptlab.evaluation.recipes.editing import SWAP_FLOOR, score_swap, summarize_swaps, swap_bars

    bar = tqdm(total=len(EDIT_CASES) * EDIT_SEEDS + 2 * len(REWEIGHTS) + 1, desc="edits", unit="edit")
    swaps, global_hits, figures = [], [], []
    for name, source, target, (head, old, new), settings in EDIT_CASES:
        images = []
        for seed in range(EDIT_SEEDS):
            src_im, edited = edit(pipe, source, [target], seed=seed, steps=steps, **settings).images
            if "blend_mask" in settings:  # a local swap: its locality against regenerating the target
                swaps.append(score_swap(pipe, judge, head, source, target, old, new, seed, src_im, edited, steps)[0])
            else:
                pred = judge.predict([src_im, edited])
                global_hits.append(pred[head][1] == new and pred["object"][1] == pred["object"][0])
            images += [src_im, edited]
            bar.update(1)
        path = out / f"edit-{name.replace(' ', '-')}.png"
        make_grid(images, cols=2, scale=2).save(path)
        figures.append((path, f"{name}: {source!r} -> {target!r} (pairs: source, edit; seeds 0-{EDIT_SEEDS - 1})"))
    happy = reweight_strip(pipe, judge, out, steps, bar)
    real = real_image_edit(pipe, out, steps)
    bar.update(1)
    bar.close()
    summary = summarize_swaps(swaps)
    bars = swap_bars(summary, len(swaps))
    bars.append(Bar("style and scene edits judged right, object kept", sum(global_hits) / len(global_hits),
                    floor=SWAP_FLOOR, n=len(global_hits), why="the floor the swaps have"))
    bars.append(Bar("real image edited to sad: PSNR outside the emoji's box", real["p2p_out"],
                    floor=round(real["naive_out"], 1), unit="dB",
                    why="the sad prompt regenerated from the same inverted noise: an edit must keep more of the rest"))
    report.heading("Prompt-to-Prompt editing")
    locality = ("the swapped words attend to nearly the whole image, so no outside is left to measure"
                if summary["p2p_psnr_out"] is None else f"PSNR outside the swapped words {summary['p2p_psnr_out']:.1f} dB "
                f"against regenerating's {summary['naive_psnr_out']:.1f} dB")
    report.text(f"The two swaps, {EDIT_SEEDS} seeds each, beside regenerating the target prompt from the same seed "
                f"(the naive way): new thing judged there {summary['p2p_new']:.0%} against {summary['naive_new']:.0%}; "
                f"{locality}. `conceptlab evaluate edit` scores the swaps of any `conceptlab edit` run this way.")
    say_verdict(report, bars)
    for path, caption in figures:
        report.image(path, caption, width=260)
    report.image(out / "edit-reweight.png", "re-weighting 'happy' from -1 to 1.5 (two seeds); judged happy: " +
                 ", ".join(f"x{w}: {h}/2" for w, h in zip(REWEIGHTS, happy)), width=520)
    report.image(out / "edit-real.png", f"a real (rendered) image, its negative-prompt inversion, latent refined "
                 f"({real['psnr']:.1f} dB), edited to sad and to a painting; last, the naive way: the sad prompt "
                 "regenerated from the same inverted noise", width=650)
    return bars


def reweight_strip(pipe, judge, out: Path, steps: int, bar) -> list[int]:
    """'happy' re-weighted from -1 to 1.5 on two seeds; how many of the two are judged happy per weight."""
    from conceptlab.editing.edit import edit

    prompt, strip = "a sticker of a happy orange cat on a white background", []
    for seed in range(2):
        for w in REWEIGHTS:
            strip.append(edit(pipe, prompt, prompt, reweight={"happy": float(w)}, seed=seed, steps=steps).images[1])
            bar.update(1)
    make_grid(strip, cols=len(REWEIGHTS), labels=[f"happy x{w}" for w in REWEIGHTS] * 2, scale=2).save(
        out / "edit-reweight.png")
    emotions = judge.predict(strip)["emotion"]
    return [sum(emotions[k + j * len(REWEIGHTS)] == "happy" for j in range(2)) for k in range(len(REWEIGHTS))]


def real_image_edit(pipe, out: Path, steps: int) -> dict:
    """A rendered emoji inverted (negative prompt, latent refined), reconstructed, edited to sad (a local edit,
    difference mask) and to a painting. Its box is known, so the sad edit's locality is measured: PSNR outside
    the box (grown 6 px) against the edit's source, for P2P and for the naive way (the sad prompt from the same
    inverted noise)."""
    from conceptlab.editing.edit import edit
    from conceptlab.editing.inversion import invert, reconstruct, uncond_kwargs
    from conceptlab.evaluation.metrics import box_mask, psnr
    from conceptlab.evaluation.recipes.editing import PSNR_CAP
    from conceptlab.world import StickerSpec

    prompt, sad = "a sticker of a happy yellow emoji", "a sticker of a sad yellow emoji"
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the box is in the render's pixels
    real = render(StickerSpec(object="emoji", emotion="happy", colour="yellow", seed=5), size)
    inv = invert(pipe, real.image, prompt, "negative-prompt", steps, refine_steps=100)
    rec = reconstruct(pipe, inv)
    edited = edit(pipe, prompt, [sad], inversion=inv, blend_mask="difference")  # local: the rest is kept
    painting = edit(pipe, prompt, ["a painting of a happy yellow emoji"], inversion=inv).images[1]
    naive = pipe(sad, num_inference_steps=inv.steps, guidance_scale=inv.guidance, latents=inv.latent.clone(),
                 **uncond_kwargs(pipe, inv, 1)).images[0]
    make_grid([inv.image, rec, edited.images[1], painting, naive], cols=5, scale=2).save(out / "edit-real.png")
    outside = ~box_mask(real.image.size, real.bbox, margin=6)
    return {"psnr": psnr(inv.image, rec),
            "p2p_out": min(psnr(edited.images[0], edited.images[1], outside), PSNR_CAP),
            "naive_out": min(psnr(edited.images[0], naive, outside), PSNR_CAP)}


def dreambooth_section(report: Report, out: Path, pipe, label: str, judge, db_steps: int, steps: int) -> list[Bar]:
    """DreamBooth-LoRA on two named monsters the base model never saw, with prior preservation, judged
    (evaluate_dreambooth_run); 'a monster' before training is the same pipeline with its adapters off."""
    from conceptlab.evaluation.recipes import evaluate_dreambooth_run
    from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, train_dreambooth
    from conceptlab.training.loop import TrainConfig
    from conceptlab.world.export import export_images

    data, subjects = out / "dreambooth-data", ("tuki", "bnh")
    only = {"object": {"monster"}, "style": {"sticker"}, "accessory": {"none"}, "held_item": {"none"},
            "flowers": {"none"}}
    for k, ident in enumerate(subjects):
        export_images(data / ident, 10, seed=5000 + 100 * k, only={**only, "individual": {ident}}, individual_rate=1.0)
    cfg = DreamBoothConfig(model=label, subjects=[SubjectConfig(i, str(data / i), "monster") for i in subjects],
                           lora=True, rank=16, prior_preservation=True, class_images=24, class_steps=steps,
                           train=TrainConfig(steps=db_steps, batch_size=4, lr=1e-3))
    pipe, result = train_dreambooth(cfg, out / "dreambooth", pipe=pipe)
    scores = evaluate_dreambooth_run(out / "dreambooth", out / "dreambooth-eval", pipe=pipe, judge=judge, seeds=1,
                                     scenes=("plain", "beach"), class_images=8, baseline="class", steps=steps)
    bars = bars_of(scores)
    s, c = scores["subjects"], scores["class"]["monster"]
    report.heading("DreamBooth (LoRA) with prior preservation")
    report.text(f"LoRA rank 16 on the UNet's attention, {db_steps} steps in {result.seconds:.0f} s, 10 renders per "
                "subject, 24 class images of 'a monster'. Files: dreambooth/lora (diffusers and kohya formats); the "
                "numbers in dreambooth-eval/scores.json (`conceptlab evaluate dreambooth OUT/dreambooth` measures the "
                "same way, with more seeds and scenes by default).")
    say_verdict(report, bars)
    report.table([{f"{k} judged right": f"{round(s[k] * s['images'])}/{s['images']}" for k in
                   ("identity", "emotion", "scene")} | {"per subject": ", ".join(
                       f"{i} {v:.0%}" for i, v in s["identity_per_subject"].items()),
                   "'a monster' judged a subject (before -> after)":
                   f"{scores['base']['class']['monster']['judged_as_subject']:.0%} -> {c['judged_as_subject']:.0%}"}])
    drift = scores["drift"]["monster"]["total_variation"]
    report.text("How far 'a monster' moved (total variation between its judged attributes before and after training, "
                "0: the same spread, 1: nothing in common; 8 images each): " +
                ", ".join(f"{h} {v:.2f}" for h, v in drift.items()) + ".")
    report.image(data / "tuki" / "005000.png", "one training image of tuki", width=128)
    report.image(out / "dreambooth-eval" / "grid.png", "a row per subject and emotion (happy, sad, angry, in love); "
                 "columns: on a white background, at the beach (seed 0); last row: 'a monster' after training")
    report.image(out / "dreambooth-eval" / "class.png", "'a monster' before (top) and after (bottom) training")
    return bars


def _model_for_demo(model: str | None):
    if model is None and not (shipped_base_model() / "model_index.json").exists():
        from conceptlab.models.tiny import build_pipeline

        return build_pipeline("tiny"), "tiny random pipeline (the base model is not shipped in this checkout)"
    return load_pipeline(model), model_label(model)


def run_demo(out: str | Path = "demo-output", model: str | None = None, n: int = 8, steps: int = 30,
             ti_steps: int = 200, db_steps: int = 300) -> Path:
    """Runs the demo into `out` and returns the report's path; prints a line per stage with its time."""
    from conceptlab.evaluation.recipes.common import load_judge_checked

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Stages(total=4 + bool(ti_steps) + bool(db_steps))
    clock.start("load", "the model (once, for every stage) and the judge")
    pipe, label = _model_for_demo(model)
    judge = load_judge_checked()
    clock.rate = probe_rate(pipe)
    clock.end()
    report = Report("conceptlab demo", out)
    clock.start("sticker world", "24 renders, a few seconds")
    world_section(report, out)
    clock.end()
    clock.start("generation", f"{len(DEMO_PROMPTS)} prompts x {n} images x {steps} steps", len(DEMO_PROMPTS) * n * steps)
    clock.end(generation_section(report, out, pipe, label, judge, n, steps))
    base_model_section(report, label)
    if ti_steps:
        clock.start("textual inversion", f"{ti_steps} training steps, then 36 judged images and a 10-image sweep",
                    ti_steps * 4 * TRAIN_IMAGE + (36 + 10) * steps + 2 * 2 * 20)
        clock.end(textual_inversion_section(report, out, pipe, label, judge, ti_steps, steps))
    clock.start("editing", f"{len(EDIT_CASES) * EDIT_SEEDS} edits (6 scored against regenerating), "
                f"{2 * len(REWEIGHTS)} re-weighted, a real image inverted and edited",
                (len(EDIT_CASES) * EDIT_SEEDS * 2 + 12 + 2 * len(REWEIGHTS) * 2 + 4) * steps * EDIT_IMAGE + 2 * 100 + steps)
    clock.end(editing_section(report, out, pipe, judge, steps))
    if db_steps:  # last: it adds LoRA adapters to the pipeline's UNet
        clock.start("DreamBooth", f"24 class images, {db_steps} training steps, 32 judged images",
                    24 * steps + db_steps * 8 * TRAIN_IMAGE + 32 * steps)
        clock.end(dreambooth_section(report, out, pipe, label, judge, db_steps, steps))
    summary = Report(report.title, out)
    summary.heading("Verdicts")
    summary.text("Each section's numbers against its stated bar; a section below its bar says so here and above "
                 "its pictures.")
    summary.table(clock.verdicts)
    report.parts[0:0] = summary.parts
    path = report.write()
    print("verdicts: " + "; ".join(f"{v['section']} {v['verdict']}" for v in clock.verdicts))
    return path
