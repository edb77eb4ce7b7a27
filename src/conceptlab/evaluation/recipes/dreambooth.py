"""DreamBooth, judged: identity, emotion and scene of the subjects' generations, and the class prompt's drift.

The measures of scripts/dreambooth_proof.py. Subjects: every subject x emotion x scene x seed of
"a sticker of a {emotion} {id} {class}{scene}", judged for the subject (the judge's `individual` head), the
emotion and the scene. Prior: `class_images` generations of the bare class prompt ("a monster", seeds
1000..) before and after training: the share judged to be one of the subjects, the share still judged the
class, and each attribute's distribution (with its entropy in bits).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from pathlib import Path

from conceptlab.errors import InputError
from conceptlab.evaluation.recipes.common import (
    EMOTIONS,
    Bar,
    load_judge_checked,
    model_of,
    output_folder,
    read_training_record,
    result_header,
    write_result,
)
from conceptlab.world.attributes import INDIVIDUALS

SCENES = {"plain": " on a white background", "beach": " at the beach", "snowy mountain": " on a snowy mountain",
          "jungle": " in the jungle", "desert": " in the desert"}  # judge background label -> prompt words
# The project's floors for DreamBooth (README): 90% identity, 85% emotion and scene.
DB_FLOORS = {"identity": 0.90, "emotion": 0.85, "scene": 0.85}
# Prior preservation holds when at most 1 in 20 generations of the bare class prompt is taken for a subject
# (the README's runs reach 0%) and the class prompt is still judged the class nearly as often as before.
SUBJECT_CEILING, CLASS_DROP = 0.05, 0.10
CLASS_SEED = 1000  # class-prompt generations use seeds 1000.., apart from the subject prompts' 0..
NOT_A_DB_RUN = "Pass the --out folder of `conceptlab train dreambooth`"


SUBJECT_RENDER_SEEDS = {"tuki": 5000, "bnh": 5100, "moxo": 5200}  # where each subject's training renders come from


def scene_cover(per_emotion: int) -> list[dict]:
    """`per_emotion` cells of each emotion spread over every scene (`cover_cells`): 12 cells hold each emotion 3
    times, each scene 2-3 times and no pair twice."""
    from conceptlab.world.export import cover_cells

    return cover_cells({"emotion": list(EMOTIONS), "background": list(SCENES)}, per_emotion * len(EMOTIONS))


def export_subject_renders(folder: Path, ident: str, seed: int, *, images: int = 10, per_emotion: int = 0,
                           masks: str | bool = False, cover_scenes: bool = False, scenes=None) -> None:
    """The proof's training renders of `ident` in the proof's scenes (or only in `scenes`): `images` drawn at random
    over the emotions (and neutral), or `per_emotion` renders of each emotion (in scenes drawn at random, or with
    `cover_scenes` in every scene: `scene_cover`); `masks` ('silhouette', 'face') adds a mask per render."""
    from conceptlab.world.export import export_balanced, export_cells, export_images

    if scenes is not None and (not scenes or set(scenes) - set(SCENES)):
        raise InputError("scenes", scenes, "is not a set of the proof's scenes", f"name some of {list(SCENES)}")
    if scenes is not None and cover_scenes:
        raise InputError("cover_scenes", cover_scenes, "spreads the renders over every scene, and `scenes` limits them",
                         "give one of the two")
    fixed = {"object": {"monster"}, "style": {"sticker"}, "accessory": {"none"}, "held_item": {"none"},
             "flowers": {"none"}, "background": set(scenes or SCENES), "individual": {ident}}
    if per_emotion and cover_scenes:
        export_cells(folder, scene_cover(per_emotion), seed=seed, only=fixed, individual_rate=1.0, masks=masks)
    elif per_emotion:
        export_balanced(folder, per_emotion, "emotion", EMOTIONS, seed=seed, only=fixed, individual_rate=1.0,
                        masks=masks)
    else:
        export_images(folder, images, seed=seed, only={**fixed, "emotion": set(EMOTIONS) | {"neutral"}},
                      individual_rate=1.0, masks=masks)


def drop_lost_renders(folder: Path, ident: str, vae, judge) -> list[str]:
    """Removes from a rendered folder the renders whose autoencoder round trip the judge does not read as `ident`
    (their latents, which a fine-tune trains on, show another look); returns the removed files' names."""
    from PIL import Image

    from conceptlab.evaluation.roundtrip import round_trip
    from conceptlab.world.export import read_metadata, write_metadata

    rows = read_metadata(folder)
    images = [Image.open(Path(folder) / r["file_name"]).convert("RGB") for r in rows]
    read = judge.predict(round_trip(vae, images))["individual"]
    kept = [r for r, who in zip(rows, read) if who == ident]
    write_metadata(folder, kept)
    lost = [r["file_name"] for r, who in zip(rows, read) if who != ident]
    for name in lost:
        (Path(folder) / name).unlink()
    return lost


def sticker_captions(folder: Path) -> None:
    """Rewrites a rendered folder's captions to name only what varies between its images, in the proof's prompt
    form ('a sticker of a sad monster at the beach')."""
    from conceptlab.world.export import read_metadata, write_metadata

    rows = [{**r, "text": subject_prompt("", "monster", r["emotion"], r["background"])} for r in read_metadata(folder)]
    write_metadata(folder, rows)


def subject_prompt(ident: str, class_word: str, emotion: str, scene: str) -> str:
    """'a sticker of a happy tuki monster at the beach'; ident '' gives the bare class word, emotion '' none."""
    noun = f"{ident} {class_word}".strip()
    core = f"{noun} in love" if emotion == "in love" else f"{emotion} {noun}".strip()
    return f"a sticker of a {core}{SCENES[scene]}"


def subject_scores(pipe, judge, subjects: list[tuple[str, str]], emotions=EMOTIONS, scenes=tuple(SCENES),
                   seeds: int = 3, steps: int = 30, progress: bool = True, first_seed: int = 0, features=None):
    """(scores, images): identity, emotion, scene and all three right, over subjects x emotions x scenes x seeds
    (seeds first_seed..first_seed+seeds-1, 16 images per pipeline call); images in that order. With a features
    judge (load_features_judge), each named subject also gets `marks`: which of its marks its generations keep."""
    from conceptlab.generation.generate import generate_batch

    cases = [(i, c, e, sc, s) for i, c in subjects for e in emotions for sc in scenes
             for s in range(first_seed, first_seed + seeds)]
    images = generate_batch(pipe, [subject_prompt(i, c, e, sc) for i, c, e, sc, _ in cases], [s for *_, s in cases],
                            steps=steps, batch_size=16, progress=progress)
    pred = judge.predict(images)
    ok = {"identity": [p == c[0] for p, c in zip(pred["individual"], cases)],
          "emotion": [p == c[2] for p, c in zip(pred["emotion"], cases)],
          "scene": [p == c[3] for p, c in zip(pred["background"], cases)]}
    ok["all"] = [a and b and c for a, b, c in zip(ok["identity"], ok["emotion"], ok["scene"])]
    marks = mark_labels(features, images, pred["colour"]) if features is not None else None
    per_subject = {}  # every metric per subject, so that a weak subject is not hidden by a strong one
    for ident, _ in subjects:
        mine = [k for k, c in enumerate(cases) if c[0] == ident]
        per_subject[ident] = {**{m: sum(v[k] for k in mine) / len(mine) for m, v in ok.items()}, "images": len(mine)}
        by_emotion = {e: [k for k in mine if cases[k][2] == e] for e in emotions}  # which asked emotion is missed
        per_subject[ident]["emotion_by_emotion"] = {e: sum(ok["emotion"][k] for k in ks) / len(ks)
                                                    for e, ks in by_emotion.items()}
        by_scene = {sc: [k for k in mine if cases[k][3] == sc] for sc in scenes}  # where the identity is lost
        per_subject[ident]["identity_by_scene"] = {sc: sum(ok["identity"][k] for k in ks) / len(ks)
                                                   for sc, ks in by_scene.items()}
        per_subject[ident]["missed_as"] = missed_as([pred["individual"][k] for k in mine], ident)
        per_subject[ident]["emotion_missed_as"] = {e: missed_as([pred["emotion"][k] for k in ks], e)
                                                   for e, ks in by_emotion.items()}
        if marks is not None and ident in INDIVIDUALS:
            per_subject[ident]["marks"] = subject_marks({h: [v[k] for k in mine] for h, v in marks.items()}, ident,
                                                        [ok["identity"][k] for k in mine])
    return {**{k: sum(v) / len(v) for k, v in ok.items()}, "per_subject": per_subject,
            "identity_per_subject": {i: s["identity"] for i, s in per_subject.items()}, "images": len(cases)}, images


def missed_as(seen: list[str], asked: str) -> dict[str, int]:
    """What a judge's head read instead of the `asked` label, as counts (most often first, until runs pool): for identity a
    neighbour it takes the subject for, or no named individual at all ("none"); for emotion the one drawn."""
    return dict(Counter(p for p in seen if p != asked).most_common())


def mark_labels(features, images, colours: list[str]) -> dict[str, list[str]]:
    """The marks read on `images`: the features judge's heads, and `colours` (the judge's colour head on them)."""
    return {**features.predict(images), "colour": list(colours)}


def subject_marks(labels: dict[str, list[str]], ident: str, identified: list[bool]) -> dict:
    """Which of named subject `ident`'s marks (its colour and world.attributes.Monster's shape, eyes, top, pattern)
    images show, from their mark_labels: {"all": {mark: share, "every": the
    share showing every mark, a second reading of identity with errors of its own}, "eyes_read":
    {count: share}, "missed_images": how many were not judged `ident`, "missed_kept": {mark: how many of those still
    show it}} (counts, so that runs pool: which mark is lost when identity is)."""
    from conceptlab.evaluation.judge import monster_features
    from conceptlab.world.attributes import StickerSpec

    monster, colour = INDIVIDUALS[ident]
    want = {**monster_features(StickerSpec(object="monster", emotion="happy", colour=colour, individual=ident,
                                           monster=monster)), "colour": colour}
    n = len(identified)
    hit = {m: [p == want[m] for p in labels[m]] for m in want}
    hit["every"] = [all(marks) for marks in zip(*hit.values())]  # no mark lost: a second reader, not a verdict
    missed = [k for k, good in enumerate(identified) if not good]
    eyes = Counter(labels["eyes"])
    return {"all": {m: sum(h) / n for m, h in hit.items()}, "eyes_read": {e: eyes[e] / n for e in sorted(eyes)},
            "missed_images": len(missed), "missed_kept": {m: sum(hit[m][k] for k in missed) for m in hit}}


def entropy(counts: Counter) -> float:
    """Shannon entropy in bits of a label distribution."""
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values() if c)


def class_scores(pipe, judge, class_word: str, identifiers, n: int = 48, steps: int = 30, progress: bool = True,
                 first_seed: int = CLASS_SEED, features=None):
    """(scores, images) of `n` generations of 'a CLASS' (seeds first_seed..): judged as a subject (any, and
    each), judged the class, and each attribute's distribution and entropy; with a features judge also the share
    showing every mark of a named subject ("marked_as_subject")."""
    from conceptlab.generation.generate import generate_batch

    images = generate_batch(pipe, [f"a {class_word}"] * n, list(range(first_seed, first_seed + n)), steps=steps,
                            batch_size=16, progress=progress)
    pred = judge.predict(images)
    dist = {h: Counter(pred[h]) for h in ("object", "colour", "emotion", "background", "individual")}
    named = [i for i in sorted(identifiers) if i in INDIVIDUALS]
    labels = mark_labels(features, images, pred["colour"]) if features is not None and named and n else None
    marked = [subject_marks(labels, i, [False] * n)["missed_kept"]["every"] for i in named] if labels else None
    return {"judged_as_subject": sum(p in identifiers for p in pred["individual"]) / n,
            **({"marked_as_subject": sum(marked) / n} if marked is not None else {}),
            "judged_as_each": {i: dist["individual"][i] / n for i in sorted(identifiers)},
            "judged_class": dist["object"][class_word] / n,
            "entropy_bits": {h: round(entropy(c), 3) for h, c in dist.items()},
            "distribution": {h: dict(c.most_common()) for h, c in dist.items()}, "images": n}, images


def class_drift(before: dict, after: dict) -> dict:
    """How far the class prompt moved: after - before of each share and entropy, and the total-variation
    distance of each attribute's distribution (0: the same, 1: nothing in common)."""
    tv = {}
    for h, a in after["distribution"].items():
        b = before["distribution"][h]
        tv[h] = round(0.5 * sum(abs(a.get(k, 0) / after["images"] - b.get(k, 0) / before["images"])
                                for k in set(a) | set(b)), 3)
    return {"judged_as_subject": after["judged_as_subject"] - before["judged_as_subject"],
            "judged_class": after["judged_class"] - before["judged_class"],
            "entropy_bits": {h: round(after["entropy_bits"][h] - before["entropy_bits"][h], 3)
                             for h in after["entropy_bits"]},
            "total_variation": tv}


def subject_ceilings(vae, judge, identifiers, emotions=EMOTIONS, scenes=tuple(SCENES), seeds: int = 10,
                     size: int = 64, features=None) -> dict[str, dict[str, float]]:
    """{subject: {"render": identity on its renders, "round_trip": after the autoencoder, "images": n,
    "emotion_round_trip": the asked emotion after it, "emotion_by_emotion": that per emotion, "identity_by_scene":
    the round trip's identity per scene}} over emotions x scenes x `seeds` renders: what a perfect fine-tune of the
    UNet could reach through this VAE (conceptlab.evaluation.roundtrip, the held-out proof's ceiling, one per
    subject). With a features judge each subject also gets "marks_round_trip": the share of the round trips that show
    every one of its marks (subject_marks' "every")."""
    from conceptlab.evaluation.roundtrip import RoundTripGroup, judge_round_trips, subject_group

    groups = [subject_group(ident, seeds, emotions, scenes) for ident in identifiers]
    felt = [RoundTripGroup(f"{g.name}/{e}", [s for s in g.specs if s.emotion == e], "emotion")
            for g in groups for e in emotions]  # the same renders, judged for the asked emotion
    where = [RoundTripGroup(f"{g.name}@{sc}", [s for s in g.specs if s.background == sc], "individual")
             for g in groups for sc in scenes]  # and for the subject, scene by scene
    judged, out = judge_round_trips(vae, judge, groups, size), {}
    res = {g.name: judged.accuracy(g) for g in groups + felt + where}
    for g in groups:
        by = {e: res[f"{g.name}/{e}"]["round_trip"] for e in emotions}
        out[g.name] = {**res[g.name], "images": len(g.specs), "emotion_round_trip": sum(by.values()) / len(by),
                       "emotion_by_emotion": by,
                       "identity_by_scene": {sc: res[f"{g.name}@{sc}"]["round_trip"] for sc in scenes}}
        if features is not None and g.name in INDIVIDUALS:  # the same round trips, read by the features judge
            labels = mark_labels(features, judged.of(g.specs), judged.of(g.specs, "colour"))
            marks = subject_marks(labels, g.name, [True] * len(g.specs))
            out[g.name]["marks_round_trip"] = marks["all"]["every"]
    return out


@contextlib.contextmanager
def adapters_disabled(pipe):
    """The pipeline without its LoRA adapters while inside: each peft layer computes its base layer alone."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for part in (pipe.unet, pipe.text_encoder) for m in part.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield pipe
    finally:
        for m in layers:
            m.enable_adapters(True)


# ----------------------------------------------------------------------------------------------- a run


def run_subjects(run: Path, config: dict, judge) -> list[tuple[str, str]]:
    """(identifier, class word) of each subject; InputError for one the judge cannot recognise."""
    known = [x for x in judge.cfg.heads["individual"] if x != "none"]
    subjects = [(s["identifier"], s["class_word"]) for s in config["subjects"]]
    for ident, _ in subjects:
        if ident not in known:
            raise InputError("RUN", str(run), f"trains subject {ident!r}, which the judge does not know",
                             f"evaluate dreambooth judges the sticker world's individuals {known}: train on "
                             "renders from `conceptlab world export --only individual=NAME`")
    return subjects


def trained_pipeline(run: Path, config: dict, model_name: str, device: str | None = None):
    """The run's base model with its LoRA, or its fine-tuned pipeline folder."""
    from conceptlab.models.loading import load_pipeline

    if config.get("lora"):
        lora = run / "lora" / "pytorch_lora_weights.safetensors"
        if not lora.is_file():
            raise InputError("RUN", str(run), "has no lora/pytorch_lora_weights.safetensors: the run did not finish",
                             "Finish it with `conceptlab train dreambooth ... --resume`, or pass a finished run")
        from conceptlab.concepts.lora import load_lora

        pipe = load_pipeline(model_name, device=device)
        load_lora(pipe, lora, argument="RUN")
        return pipe
    if not (run / "pipeline" / "model_index.json").is_file():
        raise InputError("RUN", str(run), "has no pipeline/ folder: the run did not finish",
                         "Finish it with `conceptlab train dreambooth ... --resume`, or pass a finished run")
    return load_pipeline(run / "pipeline", device=device)


def evaluate_dreambooth_run(run: str | Path, out: str | Path | None = None, *, model: str | None = None, judge=None,
                            judge_path: str | None = None, pipe=None, device: str | None = None, seeds: int = 3,
                            emotions=EMOTIONS, scenes=tuple(SCENES), class_images: int = 48, baseline: str = "all",
                            steps: int = 30, progress: bool = True, features=None) -> dict:
    """Judges a `conceptlab train dreambooth` run: its subjects' identity, emotion and scene (with a features judge,
    load_features_judge(), also which of a named subject's marks its generations keep), and its class
    prompt before and after training; writes OUT/scores.json, OUT/grid.png, OUT/class.png (the class prompt
    before and after), OUT/index.html (OUT defaults to RUN-eval) and returns the scores.

    `pipe`: a pipeline holding the trained weights (the one that trained them); by default they are loaded
    from the run. `baseline`: the base model's numbers too ("all"), only its class prompt ("class", needed
    for the drift), or none ("none"). With LoRA the base model is the same pipeline with its adapters off.
    """
    from conceptlab.imaging import make_grid

    run = Path(run)
    config = read_training_record(run, "DreamBooth", "subjects", NOT_A_DB_RUN)
    out = output_folder(run, out)
    if baseline not in ("all", "class", "none"):
        raise InputError("--baseline", baseline, "is not a known choice", "Use all, class or none")
    bad = [s for s in scenes if s not in SCENES]
    if bad or not scenes or not emotions or any(e not in EMOTIONS for e in emotions):
        raise InputError("--scenes/--emotions", (list(scenes), list(emotions)), "names one the recipe cannot ask for",
                         f"Use scenes from {list(SCENES)} and emotions from {list(EMOTIONS)}")
    judge = judge or load_judge_checked(judge_path)
    subjects = run_subjects(run, config, judge)
    model_name = model_of(config, model)
    pipe = pipe if pipe is not None else trained_pipeline(run, config, model_name, device)
    identifiers = {i for i, _ in subjects}
    classes = list(dict.fromkeys(c for _, c in subjects))
    kw = dict(steps=steps, progress=progress)
    result, before_images = {"subjects": {}, "class": {}}, {}
    if baseline != "none":
        base = contextlib.nullcontext(_load_base(model_name, device)) if not config.get("lora") else adapters_disabled(pipe)
        with base as base_pipe:
            result["base"] = {"class": {}}
            for c in classes:
                result["base"]["class"][c], before_images[c] = class_scores(base_pipe, judge, c, identifiers,
                                                                           class_images, **kw)
            if baseline == "all":
                result["base"]["subjects"] = subject_scores(base_pipe, judge, subjects, emotions, scenes, seeds, **kw)[0]
    result["subjects"], subject_images = subject_scores(pipe, judge, subjects, emotions, scenes, seeds, **kw,
                                                        features=features)
    class_images_after, class_rows = [], []
    for c in classes:
        result["class"][c], images = class_scores(pipe, judge, c, identifiers, class_images, **kw)
        class_images_after += images[:len(scenes)]
        class_rows += [before_images.get(c, []), images]
    if "base" in result:
        result["drift"] = {c: class_drift(result["base"]["class"][c], result["class"][c]) for c in classes}
    bars = dreambooth_bars(result)
    settings = {"seeds": [0, seeds - 1], "class_seeds": [CLASS_SEED, CLASS_SEED + class_images - 1],
                "emotions": list(emotions), "scenes": list(scenes), "class_images": class_images, "steps": steps,
                "guidance": 7.5, "baseline": baseline}
    record = {**result_header("dreambooth", run, model_name, judge_path, settings), **result,
              "grid_caption": f"a row per subject and emotion, a column per scene ({', '.join(scenes)}; seed 0); "
                              f"last row(s): '{'/'.join('a ' + c for c in classes)}' after training"}
    grid = make_grid(subject_images[::seeds] + class_images_after, cols=len(scenes), scale=2)
    write_result(out, record, grid, bars, f"DreamBooth judged: {run.name}")
    cols = min(class_images, 8)  # class.png: per class word, its prompt before training (if measured), then after
    make_grid([im for row in class_rows for im in row[:cols]], cols=cols, scale=2).save(out / "class.png")
    return {**record, "out": str(out)}


def _load_base(model_name: str, device: str | None):
    from conceptlab.models.loading import load_pipeline

    return load_pipeline(model_name, device=device)


def dreambooth_bars(result: dict) -> list[Bar]:
    """The floors on identity, emotion and scene; prior preservation's ceiling and the class kept."""
    s = result["subjects"]
    bars = [Bar(f"{k} judged right", s[k], floor=DB_FLOORS[k], why="the project's floor for DreamBooth", n=s["images"])
            for k in ("identity", "emotion", "scene")]
    if len(s.get("per_subject", {})) > 1:  # each subject must pass on its own
        bars += [Bar(f"{ident}: {k} judged right", mine[k], floor=DB_FLOORS[k], why="the floor, per subject",
                     n=mine["images"]) for ident, mine in s["per_subject"].items() for k in ("identity", "emotion", "scene")]
    for c, after in result["class"].items():
        bars.append(Bar(f"'a {c}' judged as a subject after training", after["judged_as_subject"],
                        ceiling=SUBJECT_CEILING, why="prior preservation keeps the class apart", n=after["images"]))
        before = result.get("base", {}).get("class", {}).get(c)
        if before is not None:
            bars.append(Bar(f"'a {c}' still judged {c}", after["judged_class"],
                            floor=round(max(0.0, before["judged_class"] - CLASS_DROP), 3),
                            why=f"at most {CLASS_DROP:.0%} below the base model's {before['judged_class']:.0%}",
                            n=after["images"]))
    return bars


# ------------------------------------------------------------------------- the proof against the reference loop
# The issue's floors for the two-subject proof: identity >= 90% of each subject's round-trip ceiling, the asked
# emotion and scene each >= 85%, fewer than 10% of bare class prompts judged a subject, ahead of the reference.
PROOF_FLOORS = {"of_ceiling": 0.90, "emotion": 0.85, "scene": 0.85, "class_subject": 0.10}


def proof_floors(report: dict) -> list[dict]:
    """Each floor of scripts/dreambooth_proof.py's report (loop 'ours'), per subject, with its value and whether it
    holds; with a 'reference' loop, ours minus the reference on identity against two standard errors."""
    from conceptlab.evaluation.recipes.ti import difference_noise

    ours, out = report["loops"].get("ours"), []
    if ours is None:
        return out
    subj = ours["subjects"]
    for ident, mine in subj["per_subject"].items():
        ceiling = report["ceiling"][ident]["round_trip"]
        out.append(_proof_bar(f"{ident}: identity / round-trip ceiling ({mine['identity']:.1%} / {ceiling:.1%})",
                              mine["identity"] / max(ceiling, 1e-9), PROOF_FLOORS["of_ceiling"], ">="))
        felt = report["ceiling"][ident].get("emotion_round_trip")  # older reports lack it
        out += [_proof_bar(f"{ident}: asked emotion" + (f" (round-trip ceiling {felt:.1%})" if felt is not None else ""),
                           mine["emotion"], PROOF_FLOORS["emotion"], ">="),
                _proof_bar(f"{ident}: asked scene", mine["scene"], PROOF_FLOORS["scene"], ">=")]
    out.append(_proof_bar("bare class prompt judged a subject", ours["class"]["judged_as_subject"],
                          PROOF_FLOORS["class_subject"], "<"))
    ref = report["loops"].get("reference")
    if ref is not None:
        a, b = subj["identity"], ref["subjects"]["identity"]
        out.append(_proof_bar(f"identity, ours minus the reference ({a:.1%} - {b:.1%})", a - b,
                              difference_noise(a, b, subj["images"], ref["subjects"]["images"]), ">"))
    return out


POOL_FREE = ("seed", "out", "class_dir")  # what runs pooled into one report may differ in
UNORDERED = ("prior",)  # settings given as repeated flags, in any order: --prior tuki=0 --prior bnh=0.3


def check_seed_runs(reports: list[dict], defaults: dict | None = None, argument: str = "--pool",
                    judged: bool = True) -> list:
    """The training seeds of proof runs of one command that differ only in --seed (and, unless `judged` is False,
    judged the same seeds and loops); InputError naming the settings that differ, or a repeated seed. `defaults`
    (the proof's own argument defaults) stand in for settings a run made before they existed does not record."""
    first, defaults = reports[0], defaults or {}
    free = set(POOL_FREE) | (set() if judged else {"first_seed", "seeds", "class_prompt_images"})
    def setting(r: dict, k: str):
        value = r["config"].get(k, defaults.get(k))
        return sorted(value) if k in UNORDERED else value

    for r in reports[1:]:
        differ = sorted(k for k in {*first["config"], *r["config"]} - free if setting(first, k) != setting(r, k))
        if differ or judged and (r["seeds"] != first["seeds"] or set(r["loops"]) != set(first["loops"])):
            raise InputError(argument, differ or "their judged seeds or loops", "runs differ in more than their "
                             "training seed", "Give runs of one command that differ only in --seed")
    seeds = [r["config"]["seed"] for r in reports]
    if len(set(seeds)) < len(seeds):
        raise InputError(argument, seeds, "holds a training seed twice", "Give runs with different --seed")
    return seeds


def pool_proof_reports(reports: list[dict], defaults: dict | None = None) -> dict:
    """One proof report from runs of one command that differ only in their training seed: every share the mean
    of the runs' (each judged the same prompts and seeds), counts and images summed, the floors computed again;
    config.seed lists the seeds and `runs` keeps each run's identity per subject. `defaults` (the proof's own
    argument defaults) stand in for settings a run made before they existed does not record."""
    first = reports[0]
    seeds = check_seed_runs(reports, defaults)
    pooled = {**first, "config": {**first["config"], "seed": seeds, "out": None}}
    pooled.pop("selection", None)
    pooled["loops"] = {loop: {"train_seconds": round(sum(r["loops"][loop]["train_seconds"] for r in reports), 1),
                              "subjects": _pool([r["loops"][loop]["subjects"] for r in reports]),
                              "class": _pool_class([r["loops"][loop]["class"] for r in reports])}
                       for loop in first["loops"]}
    pooled["runs"] = [{"seed": r["config"]["seed"],
                       "identity": {loop: {i: m["identity"] for i, m in r["loops"][loop]["subjects"]["per_subject"].items()}
                                    for loop in r["loops"]}} for r in reports]
    pooled["floors"] = proof_floors(pooled)
    return pooled


_SUMMED = ("images", "missed_images", "missed_kept", "missed_as", "emotion_missed_as")  # counts, not shares: pooled runs add them


def _pool(parts: list, summed: bool = False):
    """The mean of matching numbers (shares) over runs of equal sample size, nested dicts alike; counts (_SUMMED)
    summed. A number one run lacks counts 0 there (a label it never read); a whole reading one run lacks (a
    dict, e.g. the features judge's marks before it existed) is left out, as not taken on every run."""
    if isinstance(parts[0], dict):
        keys = dict.fromkeys(k for p in parts for k in p)
        partial = {k for k in keys if any(k not in p for p in parts) and any(isinstance(p.get(k), dict) for p in parts)}
        return {k: _pool([p.get(k, 0) for p in parts], summed or k in _SUMMED) for k in keys if k not in partial}
    if isinstance(parts[0], (int, float)) and not isinstance(parts[0], bool):
        return sum(parts) if summed else sum(parts) / len(parts)
    return parts[0]


def _pool_class(parts: list[dict]) -> dict:
    """Class-prompt scores over runs: shares averaged, each attribute's counts summed and its entropy recomputed."""
    counts = {a: sum((Counter(p["distribution"][a]) for p in parts), Counter()) for a in parts[0]["distribution"]}
    return {**_pool([{k: v for k, v in p.items() if k not in ("distribution", "entropy_bits")} for p in parts]),
            "distribution": {a: dict(c) for a, c in counts.items()},
            "entropy_bits": {a: round(entropy(c), 3) for a, c in counts.items()}}


def _proof_bar(what: str, value: float, limit: float, rule: str) -> dict:
    holds = {">=": value >= limit, ">": value > limit, "<": value < limit}[rule]
    return {"what": what, "value": round(value, 4), "rule": f"{rule} {limit:.3f}", "holds": holds}


# The second reading of identity (from 2026-12-01): every one of the subject's marks, read by the features judge.
MARKS_COLUMNS = [
    {"header": "tuki, every mark (features judge)", "value": "metrics.tuki_marks", "format": "pct",
     "also": {"label": "ceiling ", "value": "metrics.tuki_marks_ceiling"}},
    {"header": "bnh, every mark (features judge)", "value": "metrics.bnh_marks", "format": "pct",
     "also": {"label": "ceiling ", "value": "metrics.bnh_marks_ceiling"}},
    {"header": "\"a monster\" with every mark of a subject", "value": "metrics.class_marked_subject", "format": "pct"},
]

PROOF_TABLE = {
    "title": "Two subjects in one run, against the reference loop",
    "intro": "Each loop trains tuki and bnh together on the same 10 renders each, steps, batch, learning rate and "
             "training seed, in one process with the round-trip ceiling; judged on 2 subjects x 4 emotions x 5 scenes x "
             "the record's seeds, and on generations of the bare class prompt \"a monster\" (each record's sample "
             "gives both counts). A subject's cell gives its identity, then that share of its ceiling.",
    "columns": [
        {"header": "loop", "value": "settings.loop"}, {"header": "setup", "value": "settings.setup"},
        {"header": "steps", "value": "settings.steps"}, {"header": "seeds", "value": "seeds"},
        {"header": "identity", "value": "metrics.identity", "format": "pct"},
        {"header": "tuki", "value": "metrics.tuki", "format": "pct",
         "also": {"label": "of ceiling ", "value": "metrics.tuki_of_ceiling"}},
        {"header": "bnh", "value": "metrics.bnh", "format": "pct",
         "also": {"label": "of ceiling ", "value": "metrics.bnh_of_ceiling"}},
        {"header": "ceiling tuki / bnh", "value": "metrics.ceilings", "format": "pct"},
        {"header": "emotion tuki / bnh", "value": "metrics.emotion_per_subject", "format": "pct"},
        {"header": "emotion ceiling tuki / bnh", "value": "metrics.emotion_ceilings", "format": "pct"},
        {"header": "scene tuki / bnh", "value": "metrics.scene_per_subject", "format": "pct"},
        {"header": "\"a monster\" judged a subject", "value": "metrics.class_judged_subject", "format": "pct"},
        *MARKS_COLUMNS,
    ],
    "rows": [],
    "notes": "Ours: conceptlab's DreamBooth (cached latents, captions naming the emotion and scene, each subject's own "
             "prior weight and class prompts). Reference: a loop built as diffusers' train_dreambooth.py with its "
             "multi-subject variant (benchmarks/bench_dreambooth.py's ReferenceDreamBooth: VAE and text encoder every "
             "step, the fixed prompt \"a tuki monster\", class images of \"a monster\" at prior weight 1.0, torch's "
             "AdamW), at the same learning rate. Ceiling: the judge's identity on the subject's renders in the same "
             "emotions and scenes after the autoencoder's round trip (200 renders each); emotion ceiling: the asked "
             "emotion read on the same round-tripped renders (recorded from 2026-12-01 on). Every mark: the share of "
             "generations showing all of the subject's marks (colour, shape, eyes, top, pattern) by the features judge, "
             "with its ceiling on the same round trips (recorded from 2026-12-01 on). It is a second reader with errors "
             "of its own, not the floor's reading: on smudged faces its eyes head still reads tuki's three eyes where a "
             "person sees two or cannot count them (it reads tuki higher than the judge), and it misses bnh's one eye "
             "more often than the judge misses bnh (it reads bnh lower).",
}


PROOF_SUBJECTS = ("tuki", "bnh")  # scripts/dreambooth_proof.py's subjects, trained together unless --subjects
REFERENCE_SETUP = "fixed prompts \"a tuki monster\", prior 1.0 on \"a monster\""


def _seed_flag(seed) -> str:
    """' --seed 3', ' --seed 0 1' for runs pooled over training seeds, '' for the default seed 0."""
    seeds = seed if isinstance(seed, list) else [seed or 0]
    return "" if seeds == [0] else " --seed " + " ".join(map(str, seeds))


def proof_records(report: dict, *, date: str, commit: str, model: str, setup: str | None = None,
                  name: str | None = None) -> list[dict]:
    """One results-page record per loop of a dreambooth-proof.json; `name` tells apart runs on the same seeds."""
    cfg, subjects, out = report["config"], report["subjects"], []
    pct = lambda x: round(100 * x, 1)  # noqa: E731
    first = report["seeds"][0]
    trained = lambda flags: {i: v for i, v in flags.items() if i in subjects}  # noqa: E731
    priors = [p for p in cfg["prior"] if p.partition("=")[0] in subjects]  # another subject's did nothing
    setup = setup or ", ".join(f"--prior {p}" for p in priors) or f"prior weight {cfg['prior_weight']}"
    alone = list(subjects) != list(PROOF_SUBJECTS)  # one subject alone, or another beside the proof's two
    command = (f"python scripts/dreambooth_proof.py OUT --steps {cfg['steps']} --first-seed {first} --loops "
               f"{' '.join(cfg['loops'])}" + (f" --subjects {' '.join(subjects)}" if alone else "")
               + (" --train-text-encoder" if cfg["train_text_encoder"] else "")
               + (" --lora" if cfg["lora"] else "") + f" --captions {cfg['captions']} --class-prompts {cfg['class_prompts']}"
               + f" --prior-weight {cfg['prior_weight']}" + "".join(f" --prior {p}" for p in priors)
               + (f" --lr {cfg['lr']}" if cfg["lr"] else "")
               + (f" --lr-schedule {cfg['lr_schedule']}" if cfg.get("lr_schedule", "constant") != "constant" else "")
               + (f" --warmup-steps {cfg['warmup_steps']}" if cfg.get("warmup_steps") else "")
               + _seed_flag(cfg.get("seed")) + (" --soup" if cfg.get("soup") else "")  # runs vary with the seed
               + f" --seeds {cfg['seeds']} --class-prompt-images {cfg['class_prompt_images']}"
               + f" --class-images {cfg['class_images']}"
               + (f" --per-emotion {_per_emotion_flag(cfg['per_emotion'])}" if cfg.get("per_emotion") else "")
               + (f" --balanced {' '.join(cfg['balanced'])}" if cfg.get("per_emotion") and cfg.get("balanced") else "")
               + (" --cover-scenes" if cfg.get("per_emotion") and cfg.get("cover_scenes") else "")
               + "".join(f" --render-scenes '{i}={','.join(sc)}'" for i, sc in trained(cfg.get("render_scenes", {})).items())
               + "".join(f" --render-seed {i}={n}" for i, n in trained(cfg.get("render_seed", {})).items())
               + (" --drop-lost-renders" if cfg.get("drop_lost_renders") else "")
               + (f" --timestep-bias {cfg['timestep_bias']} --timestep-bias-multiplier {cfg['timestep_bias_multiplier']:g}"
                  f" --timestep-bias-portion {cfg['timestep_bias_portion']:g}"
                  if cfg.get("timestep_bias", "none") != "none" else "")
               + (f" --ema-decay {cfg['ema_decay']:g}" if cfg.get("ema_decay") else "")
               + (f" --text-encoder-lr {cfg['text_encoder_lr']:g}" if cfg.get("text_encoder_lr") else "")
               + (f" --caption-dropout {cfg['caption_dropout']:g}" if cfg.get("caption_dropout") else "")
               + (f" --mask-weight {cfg['mask_weight']:g} --masks {cfg['masks']}"
                  + (f" --masked {' '.join(cfg['masked'])}" if cfg.get("masked") else "") if cfg.get("mask_weight") else "")
               + (f" --select-by {cfg['select_by']} --validate-every {cfg['validate_every']} --validation-seeds "
                  f"{cfg['validation_seeds']}" if cfg.get("select_by") else ""))
    chosen = report.get("selection")  # ours judged at the checkpoint its validation set chose
    picked = (f"; step {chosen['step']} of {cfg['steps']} chosen by "
              + ",".join(f"{m}={w:g}" for m, w in chosen["select_by"].items()) + " on validation seeds 0..") if chosen else ""
    per_emotion = cfg.get("per_emotion")  # the renders both loops trained on, when balanced over the emotions
    balanced = " of " + " and ".join(cfg["balanced"]) if cfg.get("balanced") else ""
    seeds = cfg.get("seed")
    pooled = (f"; weight soup of training seeds {', '.join(map(str, seeds))}" if cfg.get("soup") else
              f"; training seeds {', '.join(map(str, seeds))} pooled") if isinstance(seeds, list) else ""
    covering = " in every scene" if cfg.get("cover_scenes") else ""
    renders = (f"; {per_emotion} renders per emotion{balanced}{covering}" if isinstance(per_emotion, int) else
               "; renders per emotion: " + ", ".join(f"{i} {n}" for i, n in per_emotion.items()) + covering
               if per_emotion else "")
    renders += "".join(f"; {i}'s renders only in {' and '.join(sc)}" for i, sc in trained(cfg.get("render_scenes", {})).items())
    renders += "".join(f"; {i}'s renders from render seed {n}" for i, n in trained(cfg.get("render_seed", {})).items())
    renders += ("; renders whose round trip loses the subject dropped" if cfg.get("drop_lost_renders") else "")
    if alone:
        renders += f"; {subjects[0]} alone" if len(subjects) == 1 else f"; {', '.join(subjects[:-1])} and {subjects[-1]} together"
    for loop, r in report["loops"].items():
        per = r["subjects"]["per_subject"]
        ceilings = [report["ceiling"][i]["round_trip"] for i in subjects]
        metrics = {"identity": pct(r["subjects"]["identity"]), "emotion": pct(r["subjects"]["emotion"]),
                   "scene": pct(r["subjects"]["scene"]), "ceilings": [pct(c) for c in ceilings],
                   "emotion_per_subject": [pct(per[i]["emotion"]) for i in subjects],
                   "scene_per_subject": [pct(per[i]["scene"]) for i in subjects],
                   "class_judged_subject": pct(r["class"]["judged_as_subject"]), "train_seconds": r["train_seconds"]}
        if "marked_as_subject" in r["class"]:
            metrics["class_marked_subject"] = pct(r["class"]["marked_as_subject"])
        if all("emotion_round_trip" in report["ceiling"][i] for i in subjects):
            metrics["emotion_ceilings"] = [pct(report["ceiling"][i]["emotion_round_trip"]) for i in subjects]
        for i, c in zip(subjects, ceilings):
            metrics[i] = pct(per[i]["identity"])
            metrics[f"{i}_of_ceiling"] = pct(per[i]["identity"] / max(c, 1e-9))
            if "identity_by_scene" in per[i]:  # where the identity is lost, beside what the round trip keeps there
                metrics[f"{i}_by_scene"] = {sc: pct(x) for sc, x in per[i]["identity_by_scene"].items()}
                if "identity_by_scene" in report["ceiling"][i]:
                    metrics[f"{i}_by_scene_ceiling"] = {sc: pct(x) for sc, x in
                                                        report["ceiling"][i]["identity_by_scene"].items()}
            if "marks" in per[i]:  # the second reading: every one of the subject's marks, by the features judge
                metrics[f"{i}_marks"] = pct(per[i]["marks"]["all"]["every"])
                if "marks_round_trip" in report["ceiling"][i]:
                    metrics[f"{i}_marks_ceiling"] = pct(report["ceiling"][i]["marks_round_trip"])
        rid = f"db-proof-{model}-{loop}-{first}-{cfg['steps']}" + (f"-{name}" if name else "")
        out.append({"id": rid, "date": date, "commit": commit,
                    "model": model, "seeds": f"{first}-{report['seeds'][1]} per prompt, class prompt "
                                             f"{report['class_seeds'][0]}-{report['class_seeds'][1]}",
                    "samples": f"{r['subjects']['images']} judged generations, {r['class']['images']} class prompts",
                    "command": command, "source": "the proof's dreambooth-proof.json, added with --record",
                    "settings": {"loop": loop, "setup": _with_pooled(setup + (picked if loop == "ours" else "")
                                                                     if loop != "reference" else REFERENCE_SETUP + renders,
                                                                     pooled),
                                 "steps": cfg["steps"]}, "metrics": metrics})
    return out


def _with_pooled(setup: str, pooled: str) -> str:
    """The setup's words and how the seeds were pooled ('; weight soup of training seeds 1, 2, 3'), said once even
    when --setup already says it."""
    return setup if pooled and pooled.removeprefix("; ") in setup else setup + pooled


def _per_emotion_flag(per_emotion: int | dict[str, int]) -> str:
    """The proof's --per-emotion value: one count for every subject, or {'tuki': 10, 'bnh': 3} as 'tuki=10 bnh=3'."""
    if isinstance(per_emotion, dict):
        return " ".join(f"{i}={n}" for i, n in per_emotion.items())
    return str(per_emotion)


def merge_proof_records(data: dict, records: list[dict]) -> dict:
    """`data` (docs/results/data/dreambooth.json) with `records` added or replaced by id and listed in the proof's
    table (made if missing), unless another table already lists them (a record made again stays where it was)."""
    ids = {r["id"] for r in records}
    data["records"] = [r for r in data["records"] if r["id"] not in ids] + records
    table = next((t for t in data["tables"] if t["title"] == PROOF_TABLE["title"]), None)
    if table is None:
        table = {**PROOF_TABLE, "rows": []}
        data["tables"].insert(0, table)
    elsewhere = {i for t in data["tables"] if t is not table for i in t.get("rows", [])}
    table["rows"] = list(dict.fromkeys([*table["rows"], *(r["id"] for r in records if r["id"] not in elsewhere)]))
    return data
