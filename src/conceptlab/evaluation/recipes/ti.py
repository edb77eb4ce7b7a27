"""Textual inversion, judged: how often a learned token is drawn as its object with the asked emotion.

The measure of scripts/ti_proof.py: `per_prompt` generations of each prompt (seeds first_seed, first_seed+1,
...), each judged right when the judge reads the concept's object with the prompt's emotion; beside it the
same prompts with the plain word ("broccoli") on the same model, which is what the token has to beat.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
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

# The project's floor for textual inversion (README: "the 90% floor"): 9 in 10 generations right.
TI_FLOOR = 0.90
NOT_A_TI_RUN = "Pass the --out folder of `conceptlab train ti`"


@dataclass(frozen=True)
class JudgedPrompt:
    """A prompt and what a right image of it shows: `object` with `emotion`."""

    prompt: str
    object: str
    emotion: str


def prompt_for(emotion: str, noun: str) -> str:
    """'a sticker of a happy <broccoli>'; 'in love' goes after the noun."""
    return f"a sticker of a {noun} in love" if emotion == "in love" else f"a sticker of a {emotion} {noun}"


def emotion_prompts(noun: str, obj: str, emotions=EMOTIONS) -> list[JudgedPrompt]:
    """One prompt per emotion with `noun` (a token or a plain word), each expecting `obj` with that emotion."""
    return [JudgedPrompt(prompt_for(e, noun), obj, e) for e in emotions]


def judged_share(pipe, judge, prompts: list[JudgedPrompt], per_prompt: int = 25, first_seed: int = 0,
                 guidance: float = 7.5, steps: int = 30, progress: bool = True) -> tuple[dict, list]:
    """(scores, images): the share of `per_prompt` generations per prompt judged as its object with its emotion.

    Each prompt is one pipeline call of `per_prompt` images (seeds first_seed..), judged as one batch.
    """
    from conceptlab.generation.generate import generate_batch

    images, rows = [], []
    seeds = list(range(first_seed, first_seed + per_prompt))
    for p in prompts:
        batch = generate_batch(pipe, [p.prompt] * per_prompt, seeds, steps=steps, guidance=guidance,
                               batch_size=per_prompt, progress=progress)
        pred = judge.predict(batch)
        for i, seed in enumerate(seeds):
            rows.append({"prompt": p.prompt, "seed": seed, "object": pred["object"][i], "emotion": pred["emotion"][i],
                         "ok": pred["object"][i] == p.object and pred["emotion"][i] == p.emotion})
        images += batch
    share = sum(r["ok"] for r in rows) / len(rows)
    per = {p.prompt: sum(r["ok"] for r in rows if r["prompt"] == p.prompt) / per_prompt for p in prompts}
    judged_object = sum(r["object"] == p.object for p in prompts for r in rows if r["prompt"] == p.prompt) / len(rows)
    return {"share": share, "per_prompt": per, "images": len(rows), "guidance": guidance, "first_seed": first_seed,
            "judged_object": judged_object, "rows": rows}, images


def judged_at_guidances(pipe, judge, prompts: list[JudgedPrompt], per_prompt: int, guidances, first_seed: int = 0,
                        steps: int = 30, progress: bool = True) -> tuple[dict, dict[float, list]]:
    """judged_share at each guidance scale: the first is the headline, the others are kept beside it under
    'other_guidance'. Returns (scores, {guidance: images})."""
    runs, images = [], {}
    for g in guidances:
        scores, images[g] = judged_share(pipe, judge, prompts, per_prompt, first_seed, g, steps, progress)
        runs.append(scores)
    return {**runs[0], "other_guidance": {f"{r['guidance']:g}": r for r in runs[1:]}}, images


def beats_plain_word(token: str, word: str, share: float, plain: float, n: int, n_plain: int) -> Bar:
    """The token's share minus the plain word's must exceed what the seeds alone could give: two standard
    errors of a difference of two shares (at least one image's worth)."""
    return Bar(f"{token} minus the plain word '{word}'", share - plain,
               floor=round(difference_noise(share, plain, n, n_plain), 3),
               why="two standard errors of the difference: less could be the seeds alone", n=n)


def difference_noise(a: float, b: float, n: int, n_b: int | None = None) -> float:
    """Two standard errors of the difference of two shares over n and n_b images (pooled), at least one image."""
    n_b = n if n_b is None else n_b
    pooled = (a * n + b * n_b) / (n + n_b)
    return max(2 * math.sqrt(max(pooled * (1 - pooled), 0.0) * (1 / n + 1 / n_b)), 1 / n)


# ----------------------------------------------------------------------------------------------- a run


def concept_prompts(concept: dict, objects: set[str], object_word: str | None = None) -> tuple[list[JudgedPrompt], str]:
    """The prompts a learned concept is judged on, and how they were chosen.

    The object: `object_word`, else the concept's init word, else the object of its training images. A
    concept whose training images all show one emotion (<happy-emoji>, <broccoli-sad>) carries that emotion:
    'a sticker of a TOKEN', judged for it; any other is asked each emotion in words.
    """
    from conceptlab.world.export import read_metadata

    token, rows = concept["token"], []
    folder = Path(concept.get("folder") or "")
    if (folder / "metadata.jsonl").is_file():
        try:
            rows = read_metadata(folder)
        except InputError:
            rows = []
    found = Counter(r.get("object") for r in rows).most_common(1)
    obj = object_word or (concept.get("init") if concept.get("init") in objects else None) or \
        (found[0][0] if found and found[0][0] in objects else None)
    if obj not in objects:
        raise InputError("--object", f"{token}={obj}" if obj else token, "the judge cannot tell which object this "
                         "concept is", f"Pass --object '{token}=WORD' with WORD one of {sorted(objects)}")
    emotions = {r.get("emotion") for r in rows}
    if len(emotions) == 1 and next(iter(emotions)) in EMOTIONS:
        emotion = next(iter(emotions))
        return [JudgedPrompt(f"a sticker of a {token}", obj, emotion)], f"every training image is {emotion}"
    return emotion_prompts(token, obj), "the emotion is asked in words"


def load_run_concepts(pipe, run: Path, concepts: list[dict]) -> None:
    """Adds the run's learned tokens to `pipe` from RUN/<token>/learned_embeds.safetensors."""
    from conceptlab.concepts.formats import load_embedding, safe_name
    from conceptlab.concepts.tokens import load_concepts

    files = [run / safe_name(c["token"]) / "learned_embeds.safetensors" for c in concepts]
    for f in files:
        if not f.is_file():
            raise InputError("RUN", str(run), f"has no {f.relative_to(run)}: the run did not finish",
                             "Finish it with `conceptlab train ti ... --resume`, or pass a finished run")
    load_concepts(pipe, [load_embedding(f) for f in files], argument="RUN")


def evaluate_ti_run(run: str | Path, out: str | Path | None = None, *, model: str | None = None, judge=None,
                    judge_path: str | None = None, pipe=None, device: str | None = None, per_prompt: int = 25,
                    first_seed: int = 0, guidance=(7.5,), steps: int = 30, tokens: list[str] | None = None,
                    objects: dict[str, str] | None = None, progress: bool = True) -> dict:
    """Judges every concept of a `conceptlab train ti` run against the plain word; writes OUT/scores.json,
    OUT/grid.png and OUT/index.html (OUT defaults to RUN-eval) and returns the scores.

    `pipe`: a pipeline that already knows the run's tokens (the one that trained them); by default the run's
    base model is loaded and the learned files added. `tokens`: judge only these concepts. `objects`: the
    object word per token where neither its init word nor its training images name one the judge knows.
    """
    run = Path(run)
    config = read_training_record(run, "textual-inversion", "concepts", NOT_A_TI_RUN)
    out = output_folder(run, out)
    judge = judge or load_judge_checked(judge_path)
    known = set(judge.cfg.heads["object"]) - {"none"}
    concepts = [c for c in config["concepts"] if tokens is None or c["token"] in tokens]
    if not concepts:
        raise InputError("--token", tokens, "names no concept of this run",
                         f"Use one of {[c['token'] for c in config['concepts']]}")
    chosen = {c["token"]: concept_prompts(c, known, (objects or {}).get(c["token"])) for c in concepts}
    model_name = model_of(config, model)
    if pipe is None:
        from conceptlab.models.loading import load_pipeline

        pipe = load_pipeline(model_name, device=device)
        load_run_concepts(pipe, run, concepts)
    guidance = list(guidance)
    scores, grid_rows, plain_cache = {}, [], {}
    for token, (prompts, how) in chosen.items():
        s, images = judged_at_guidances(pipe, judge, prompts, per_prompt, guidance, first_seed, steps, progress)
        plain = [JudgedPrompt(prompt_for(p.emotion, p.object), p.object, p.emotion) for p in prompts]
        key = tuple(plain)
        if key not in plain_cache:
            plain_cache[key] = judged_at_guidances(pipe, judge, plain, per_prompt, guidance, first_seed, steps,
                                                   progress)
        ps, plain_images = plain_cache[key]
        scores[token] = {"object": prompts[0].object, "prompts_chosen": how, **s, "plain_word": ps}
        grid_rows += [images[guidance[0]], plain_images[guidance[0]]]
    bars = []
    for token, s in scores.items():
        bars.append(Bar(f"{token} judged {s['object']} with the asked emotion", s["share"], floor=TI_FLOOR,
                        why="the project's floor for textual inversion", n=s["images"]))
        bars.append(beats_plain_word(token, s["object"], s["share"], s["plain_word"]["share"], s["images"],
                                     s["plain_word"]["images"]))
    cols = min(per_prompt, 8)
    from conceptlab.imaging import make_grid

    grid = make_grid([im for row in grid_rows for k in range(0, len(row), per_prompt) for im in row[k:k + cols]],
                     cols=cols, scale=2)
    settings = {"per_prompt": per_prompt, "seeds": [first_seed, first_seed + per_prompt - 1], "guidance": guidance,
                "steps": steps, "tokens": list(chosen)}
    result = {**result_header("ti", run, model_name, judge_path, settings), "concepts": scores,
              "grid_caption": f"per concept: its prompts, then the plain word's; seeds {first_seed}-"
                              f"{first_seed + cols - 1} of each prompt, guidance {guidance[0]:g}"}
    write_result(out, result, grid, bars, f"Textual inversion judged: {run.name}")
    return {**result, "out": str(out)}
