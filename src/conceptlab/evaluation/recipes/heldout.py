"""Textual inversion on concepts the base model has never seen: the `pixel art` style and a named monster.

The shipped base model never drew pixel art and never saw the named monsters (`world.attributes.INDIVIDUALS`),
so a token that makes them is the token's work, not the base model's. This module holds the data, the
prompts, the judging and the floors; scripts/ti_heldout_proof.py trains each concept with conceptlab's
textual inversion and with a loop built the way diffusers' example works, and judges both with these.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conceptlab.evaluation.recipes.ti import difference_noise
from conceptlab.world.attributes import INDIVIDUALS, StickerSpec

STYLE_TOKEN, MONSTER_TOKEN = "<pixel-art>", "<tuki>"
STYLE_TRAIN_OBJECTS = ("apple", "star", "fish", "cat")  # the style token sees these ...
STYLE_TEST_OBJECTS = ("broccoli", "emoji", "cloud", "monster")  # ... and is judged on these
STYLE_TEST_COLOURS = ("red", "blue", "yellow", "green")
MONSTER_EMOTIONS = ("happy", "sad", "angry", "in love")
MONSTER_SCENES = ("plain", "beach", "snowy mountain", "jungle")
_SCENE_WORDS = {"plain": "", "beach": " on a beach", "snowy mountain": " on a snowy mountain",
                "jungle": " in a jungle"}
_PLAIN = {"accessory": {"none"}, "held_item": {"none"}, "flowers": {"none"}}


@dataclass
class HeldOutConfig:
    """One held-out proof: how both loops train and how their tokens are judged."""

    model: str | None = None
    steps: int = 400
    batch_size: int = 4
    lr: float = 5e-3  # ours (conceptlab's default for textual inversion)
    lora_lr: float = 1e-4  # pivotal tuning's LoRA (its tokens take `lr`)
    lora_rank: int = 4  # pivotal tuning's LoRA rank (DreamBooth-LoRA's default)
    text_encoder_lora: bool = False  # pivotal tuning also trains a LoRA on the text encoder (with full: all of it)
    text_encoder_lr: float | None = None  # with text_encoder_lora: its own learning rate (None: lora_lr)
    full: bool = False  # pivotal tuning trains every UNet weight beside the token instead of a LoRA (lora_lr its lr)
    prior_weight: float = 0.0  # pivotal tuning: prior preservation at this weight (0: none)
    class_prompts: str = "captions"  # with a prior: class images from each caption without the token ('class': 'a monster')
    class_images: int = 50  # with a prior: class images per class prompt pool
    captions: str = "world"  # the monster's training captions: the world's own, or 'sticker' (one prompt form)
    vectors: int = 1  # pivotal tuning: embedding vectors per token
    token_steps: int = 0  # pivotal tuning: steps that train the token alone before the LoRA joins
    token_init: str = "class"  # pivotal tuning: where the token starts (class word, 'random' or a word)
    renders: str = "heldout"  # the monster's training renders: this proof's, or 'dreambooth' (that proof's draw)
    companion: str | None = None  # pivotal tuning: more held-out monsters trained beside, each its own token ('bnh+moxo')
    companion_prior: float = 0.3  # its prior weight, on class images of its captions (the DreamBooth proof's bnh)
    reference_lr: float = 5e-4 * 4  # diffusers' default 5e-4, scaled by the batch (its --scale_lr default)
    images: int = 8
    per_emotion: int = 0  # monster: this many renders in each emotion instead of `images` drawn at random
    per_prompt: int = 25  # 16 prompts x 25 = 400 judged images per token
    first_seed: int = 2000
    guidance: float = 7.5
    sampling_steps: int = 30
    seed: int = 0
    concepts: tuple[str, ...] = ("style", "monster")
    loops: tuple[str, ...] = ("ours", "reference")
    plain_word: bool = True  # False: skip judging the plain word (a choosing run that already has it)


@dataclass(frozen=True)
class Expect:
    """A prompt and the judge's readings a right image of it has."""

    prompt: str
    want: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- data and prompts
def export_concept_data(concept: str, folder: Path, n: int, seed: int = 0, per_emotion: int = 0,
                        captions: str = "world", renders: str = "heldout") -> tuple[str, str, str]:
    """Renders the training images (the monster's balanced over its emotions with `per_emotion`); returns (token,
    init word, the caption words the token replaces). captions='sticker' rewrites the monster's captions in the
    DreamBooth proof's one form ('a sticker of a sad monster at the beach') instead of the world's varied ones.
    renders='dreambooth' draws the monster as the DreamBooth proof does (its render seed and its five scenes, the
    jungle among them), captioned in that form."""
    from conceptlab.evaluation.recipes import dreambooth as db
    from conceptlab.world.export import export_balanced, export_images

    if concept == "style":
        export_images(folder, n, seed=seed, only={**_PLAIN, "style": {"pixel art"}, "background": {"plain"},
                                                  "object": set(STYLE_TRAIN_OBJECTS)})
        return STYLE_TOKEN, "pixel", "pixel art"
    if renders == "dreambooth":
        db.export_subject_renders(folder, "tuki", db.SUBJECT_RENDER_SEEDS["tuki"], images=n, per_emotion=per_emotion)
        db.sticker_captions(folder)
        return MONSTER_TOKEN, "monster", "monster"
    look, colour = INDIVIDUALS["tuki"]
    only = {**_PLAIN, "style": {"sticker"}, "object": {"monster"}, "individual": {"tuki"},
            "background": set(MONSTER_SCENES)}
    if per_emotion:
        export_balanced(folder, per_emotion, "emotion", MONSTER_EMOTIONS, seed=seed, only=only, individual_rate=1.0)
    else:
        export_images(folder, n, seed=seed, individual_rate=1.0, only={**only, "emotion": set(MONSTER_EMOTIONS)})
    if captions == "sticker":
        db.sticker_captions(folder)
        return MONSTER_TOKEN, "monster", "monster"
    return MONSTER_TOKEN, "monster", f"{colour} monster"


def export_companion(folder: Path, ident: str = "bnh", per_emotion: int = 3) -> str:
    """A second held-out monster, rendered as the DreamBooth proof renders it; returns its token ('<bnh>')."""
    from conceptlab.evaluation.recipes import dreambooth as db

    db.export_subject_renders(folder, ident, db.SUBJECT_RENDER_SEEDS[ident], per_emotion=per_emotion)
    db.sticker_captions(folder)
    return f"<{ident}>"


def style_prompts(noun: str) -> list[Expect]:
    """'<pixel-art> of a blue cloud' (or 'pixel art of ...'): pixel art, with the object and colour kept."""
    return [Expect(f"{noun} of a {c} {o}", {"style": "pixel art", "object": o, "colour": c})
            for o in STYLE_TEST_OBJECTS for c in STYLE_TEST_COLOURS]


def monster_prompts(noun: str) -> list[Expect]:
    """'a sticker of a sad <tuki> on a beach': that individual, with the asked emotion and scene."""
    from conceptlab.evaluation.recipes.ti import prompt_for

    return [Expect(prompt_for(e, noun) + _SCENE_WORDS[s], {"individual": "tuki", "emotion": e, "background": s})
            for e in MONSTER_EMOTIONS for s in MONSTER_SCENES]


def prompts_for(concept: str, noun: str) -> list[Expect]:
    return style_prompts(noun) if concept == "style" else monster_prompts(noun)


# ------------------------------------------------------------------------------------------------- judging
def judge_prompts(pipe, judge, prompts: list[Expect], per_prompt: int, first_seed: int, guidance: float,
                  steps: int) -> tuple[list[dict], list]:
    """Generates `per_prompt` images per prompt (seeds first_seed..) and returns (rows, images)."""
    from conceptlab.generation.generate import generate_batch

    seeds, rows, images = list(range(first_seed, first_seed + per_prompt)), [], []
    for p in prompts:
        batch = generate_batch(pipe, [p.prompt] * per_prompt, seeds, steps=steps, guidance=guidance,
                               batch_size=per_prompt, progress=False)
        pred = judge.predict(batch)
        for i, seed in enumerate(seeds):
            rows.append({"prompt": p.prompt, "seed": seed, **{a: pred[a][i] == v for a, v in p.want.items()},
                         "read": {a: pred[a][i] for a in p.want}})
        images += batch
    return rows, images


def shares(rows: list[dict], groups: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """{name: share of rows where every listed attribute was read as asked}."""
    return {name: sum(all(r[a] for a in attrs) for r in rows) / len(rows) for name, attrs in groups.items()}


def readings(rows: list[dict]) -> dict[str, dict[str, int]]:
    """{attribute: {value the judge read: count}}, most often first, for every attribute the prompts asked about:
    e.g. which individual a generation was taken for when it was not the asked one."""
    from collections import Counter

    names = dict.fromkeys(a for r in rows for a in r.get("read", {}))
    return {a: dict(Counter(r["read"][a] for r in rows if a in r.get("read", {})).most_common()) for a in names}


def score_groups(concept: str) -> dict[str, tuple[str, ...]]:
    if concept == "style":
        return {"style": ("style",), "object_and_colour": ("object", "colour"),
                "all": ("style", "object", "colour")}
    return {"identity": ("individual",), "emotion": ("emotion",), "scene": ("background",),
            "all": ("individual", "emotion", "background")}


def headline(concept: str) -> str:
    return "style" if concept == "style" else "identity"


def monster_ceiling(vae, judge, seeds: int = 10, size: int = 64) -> float:
    """The judge's identity accuracy on tuki renders after the autoencoder's round trip: what a perfect
    token could reach through this VAE, in the proof's emotions and scenes (10 renders each, as the DreamBooth
    proof's ceilings: 3 each read 77.1% on v9, 10 each 92.5%)."""
    from conceptlab.evaluation.roundtrip import RoundTripGroup, vae_ceiling

    look, colour = INDIVIDUALS["tuki"]
    specs = [StickerSpec(object="monster", individual="tuki", monster=look, colour=colour, emotion=e, background=b,
                         seed=s) for e in MONSTER_EMOTIONS for b in MONSTER_SCENES for s in range(seeds)]
    return vae_ceiling(vae, judge, [RoundTripGroup("tuki", specs, "individual")], size)["tuki"]["round_trip"]


def style_ceiling(vae, judge, seeds: int = 5, size: int = 64) -> float:
    """The judge's pixel-art accuracy on pixel-art renders of the test objects and colours after the autoencoder's
    round trip: what a perfect style token (or any UNet fine-tune) could reach through this VAE."""
    from conceptlab.evaluation.roundtrip import RoundTripGroup, vae_ceiling

    specs = [StickerSpec(object=o, colour=c, style="pixel art", background="plain", seed=s)
             for o in STYLE_TEST_OBJECTS for c in STYLE_TEST_COLOURS for s in range(seeds)]
    return vae_ceiling(vae, judge, [RoundTripGroup("style", specs, "style")], size)["style"]["round_trip"]


def ceiling(concept: str, vae, judge) -> float:
    return style_ceiling(vae, judge) if concept == "style" else monster_ceiling(vae, judge)


def save_grid(images: list, per_prompt: int, path: Path) -> None:
    from conceptlab.imaging import make_grid

    cols = min(per_prompt, 6)  # the first seeds of every prompt
    make_grid([im for k in range(0, len(images), per_prompt) for im in images[k:k + cols]], cols=cols,
              scale=2).save(path)


def floors(result: dict) -> list[dict]:
    """The issue's floors for each of conceptlab's loops that ran (textual inversion, pivotal tuning), each with
    the measured value and whether it holds; pivotal tuning's are named 'pivotal: ...'."""
    out = []
    for concept, r in result["concepts"].items():
        for loop in ("ours", "pivotal"):
            s, name = r["loops"].get(loop), "" if loop == "ours" else "pivotal: "
            if s is None:
                continue
            if concept == "style":
                out += [_bar(f"{name}style token judged pixel art", s["style"], 0.90),
                        _bar(f"{name}object and colour kept", s["object_and_colour"], 0.90)]
            else:
                out += [_bar(f"{name}identity / autoencoder ceiling", s["identity"] / max(r["ceiling"], 1e-9), 0.90),
                        _bar(f"{name}asked emotion", s["emotion"], 0.85), _bar(f"{name}asked scene", s["scene"], 0.85)]
        if "ours_minus_reference" in r:
            d = r["ours_minus_reference"]
            out.append(_bar(f"{concept}: ours minus the reference loop ({d['metric']})", d["difference"],
                            d["noise"], beyond=True))
        if {"pivotal", "reference"} <= set(r["loops"]):
            key, n = headline(concept), r["loops"]["pivotal"]["images"]
            a, b = r["loops"]["pivotal"][key], r["loops"]["reference"][key]
            out.append(_bar(f"{concept}: pivotal minus the reference loop ({key})", a - b, difference_noise(a, b, n),
                            beyond=True))
    return out


def add_difference(r: dict, concept: str) -> None:
    """Adds ours minus the reference loop on the headline metric, with its noise bar, when both loops ran."""
    if {"ours", "reference"} <= set(r["loops"]):
        key, n = headline(concept), r["loops"]["ours"]["images"]
        a, b = r["loops"]["ours"][key], r["loops"]["reference"][key]
        r["ours_minus_reference"] = {"metric": key, "difference": a - b, "noise": difference_noise(a, b, n)}


def merge_results(shards: list[dict]) -> dict:
    """One result from runs with the same settings on consecutive seed ranges: each share weighted by its images;
    a row is kept only if every shard has it (train seconds: the shards' mean)."""
    # a key missing from an older shard's config predates that setting: it ran at the default
    defaults = json.loads(json.dumps(asdict(HeldOutConfig())))
    cfgs = sorted(({**defaults, **s["config"]} for s in shards), key=lambda c: c["first_seed"])
    for prev, cfg in zip(cfgs, cfgs[1:]):
        if cfg["first_seed"] != prev["first_seed"] + prev["per_prompt"]:
            raise ValueError(f"shards' seeds are not consecutive: {prev['first_seed']}+{prev['per_prompt']} "
                             f"then {cfg['first_seed']}")
        if {k: v for k, v in cfg.items() if k not in ("first_seed", "per_prompt")} != \
                {k: v for k, v in prev.items() if k not in ("first_seed", "per_prompt")}:
            raise ValueError("shards were run with different settings")
    config = {**cfgs[0], "per_prompt": sum(c["per_prompt"] for c in cfgs)}
    concepts = {}
    for concept in shards[0]["concepts"]:
        parts = [s["concepts"][concept] for s in shards]
        joined = {k: parts[0][k] for k in ("token", "init", "caption_words")}
        if "ceiling" in parts[0]:  # the same renders through the same autoencoder: one value, unless the code changed
            if len({p.get("ceiling") for p in parts}) > 1:
                raise ValueError(f"shards measured different ceilings for {concept} "
                                 f"({sorted({p.get('ceiling') for p in parts}, key=str)}): run them with one version")
            joined["ceiling"] = parts[0]["ceiling"]
        if all("plain_word" in p for p in parts):
            joined["plain_word"] = {"noun": parts[0]["plain_word"]["noun"], **_pooled([p["plain_word"] for p in parts])}
        loops = [loop for loop in parts[0]["loops"] if all(loop in p["loops"] for p in parts)]
        joined["loops"] = {loop: {**_pooled([p["loops"][loop] for p in parts]), "train_seconds": round(
            sum(p["loops"][loop]["train_seconds"] for p in parts) / len(parts), 1)} for loop in loops}
        add_difference(joined, concept)
        concepts[concept] = joined
    result = {"config": config, "concepts": concepts}
    result["floors"] = floors(result)
    return result


def _pooled(rows: list[dict]) -> dict:
    """Shares pooled over shards, each weighted by its images; the judge's reading counts summed."""
    n = sum(r["images"] for r in rows)
    keys = [k for k in rows[0] if k not in ("images", "train_seconds", "noun", "read")]
    out = {**{k: sum(r[k] * r["images"] for r in rows) / n for k in keys}, "images": n}
    if all("read" in r for r in rows):  # the judge's readings: counts, summed
        from collections import Counter

        out["read"] = {a: dict(sum((Counter(r["read"].get(a, {})) for r in rows), Counter()).most_common())
                       for a in rows[0]["read"]}
    return out


def _bar(what: str, value: float, floor: float, beyond: bool = False) -> dict:
    """`beyond`: the value must exceed the floor (a difference beyond the noise), not only reach it."""
    holds = value > floor if beyond else value >= floor
    return {"what": what, "value": round(value, 4), "floor": round(floor, 4), "holds": holds}


# ------------------------------------------------------------------------------------------- results pages
HELDOUT_TABLE = {
    "title": "Held-out concepts (never in the base model's data)",
    "intro": "Each token trained 400 steps (batch 4) on 8 renders by each loop unless its loop name says otherwise "
             "(steps800: 800 steps, images32: 32 renders); 16 prompts judged per row. Style: pixel art asked on "
             "objects the token did not see; monster: tuki in 4 emotions x 4 scenes. Train seconds are wall time on a "
             "machine shared by several jobs, so they compare nothing.",
    "columns": [
        {"header": "concept", "value": "settings.concept"}, {"header": "loop", "value": "settings.loop"},
        {"header": "seeds", "value": "seeds"},
        {"header": "style / identity", "value": "metrics.headline", "format": "pct"},
        {"header": "object+colour / emotion", "value": "metrics.second", "format": "pct"},
        {"header": "scene", "value": "metrics.scene", "format": "pct"},
        {"header": "plain word", "value": "metrics.plain_word", "format": "pct"},
        {"header": "round-trip ceiling", "value": "metrics.ceiling", "format": "pct"},
        {"header": "train s", "value": "metrics.train_seconds"},
    ],
    "rows": [],
    "notes": "Ours: conceptlab's textual inversion on each image's caption; reference: a loop built as diffusers' "
             "textual_inversion.py (templates, VAE every step, lr 5e-4 x batch); pivotal: the token with a UNet LoRA "
             "(training.pivotal; rank 4 unless named), prompts name the token with its class word; lora-lr: the "
             "LoRA's learning rate (the token's is 5e-3).",
}


def records_from(result: dict, *, date: str, commit: str, model: str, command: str) -> list[dict]:
    """One results-page record per concept and loop, from a heldout.json the proof wrote."""
    cfg, out = result["config"], []
    seeds = f"{cfg['first_seed']}-{cfg['first_seed'] + cfg['per_prompt'] - 1} per prompt"
    for concept, r in result["concepts"].items():
        first, second = ("style", "object_and_colour") if concept == "style" else ("identity", "emotion")
        # a run of the plain word alone (--loops plain) is a row of its own
        rows = r["loops"] or ({"plain": r["plain_word"]} if "plain_word" in r else {})
        for loop, s in rows.items():
            metrics = {"headline": round(100 * s[first], 1), "second": round(100 * s[second], 1)}
            if "train_seconds" in s:
                metrics["train_seconds"] = s["train_seconds"]
            if "plain_word" in r:
                metrics["plain_word"] = round(100 * r["plain_word"][first], 1)
            if concept == "monster":
                metrics["scene"] = round(100 * s["scene"], 1)
            if "ceiling" in r:
                metrics["ceiling"] = round(100 * r["ceiling"], 1)
            trained_seed = f"-seed{cfg['seed']}" if cfg.get("seed") and loop != "plain" else ""  # the plain word trains nothing
            name = pivotal_name(cfg) if loop == "pivotal" else loop + trained_seed
            out.append({"id": f"ti-heldout-{concept}-{name}-{cfg['first_seed']}", "date": date, "commit": commit,
                        "model": model, "seeds": seeds, "samples": f"{s['images']} judged images",
                        "command": command, "source": "the proof's heldout.json, added with --record",
                        "settings": {"concept": f"`{r['token']}`", "loop": name,
                                                         "steps": cfg["steps"]}, "metrics": metrics})
    return out


def setting_text(value) -> str:
    """A setting as record ids and commands write it: integers whole (a seed of 1000000, not 1e+06), others by :g."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def pivotal_name(cfg: dict) -> str:
    """'pivotal-lora-lr0.001' ('pivotal-full-lr0.0001' for a full fine-tune), plus each setting that differs from
    HeldOutConfig's defaults ('-rank16-steps800', '-seed1' for another training seed), and '-te' with the text
    encoder trained."""
    default, name = HeldOutConfig(), f"pivotal-{'full' if cfg.get('full') else 'lora'}-lr{cfg['lora_lr']:g}"
    for key, label in (("lora_rank", "rank"), ("steps", "steps"), ("images", "images"), ("lr", "token-lr"),
                       ("guidance", "guidance"), ("per_emotion", "per-emotion"), ("vectors", "vectors"),
                       ("token_steps", "token-steps"), ("prior_weight", "prior"), ("seed", "seed")):
        if key in cfg and cfg[key] != getattr(default, key):
            name += f"-{label}{setting_text(cfg[key])}"
    if cfg.get("prior_weight") or cfg.get("companion"):  # the prior's other settings, where not the defaults
        for key, label in (("class_prompts", "class-prompts-"), ("class_images", "class-images")):
            if key in cfg and cfg[key] != getattr(default, key):
                name += f"-{label}{cfg[key]}"
    if cfg.get("captions", "world") != "world":
        name += f"-{cfg['captions']}-captions"
    if cfg.get("token_init", "class") != "class":
        name += f"-init-{cfg['token_init']}"
    if cfg.get("renders", "heldout") != "heldout":
        name += f"-{cfg['renders']}-renders"
    if cfg.get("companion"):
        name += f"-with-{cfg['companion']}{cfg.get('companion_prior', default.companion_prior):g}"
    te_lr = f"-lr{cfg['text_encoder_lr']:g}" if cfg.get("text_encoder_lr") else ""  # "-te-lr1e-05"
    return name + ("-te" + te_lr if cfg.get("text_encoder_lora") else "")


NEW_PAGE = {
    "title": "Held-out concepts",
    "summary": "textual inversion and pivotal tuning on concepts the shipped base model never saw, against a loop "
               "built as diffusers' example",
    "intro": "`scripts/ti_heldout_proof.py` trains each concept on fresh copies of the base model with each loop "
             "and judges the tokens and the plain words on the same prompts and seeds with the sticker-world judge. "
             "The base model never drew pixel art and never saw the named monsters, so what a token reaches is the "
             "token's work.",
    "tables": [], "records": [], "sections": [],
}


def merge_records(data: dict | None, records: list[dict]) -> dict:
    """`data` (a docs/results/data page) with `records` added or replaced by id and listed in the held-out table."""
    data = data or json.loads(json.dumps(NEW_PAGE))
    ids = {r["id"] for r in records}
    data["records"] = [r for r in data["records"] if r["id"] not in ids] + records
    table = next((t for t in data["tables"] if t["title"] == HELDOUT_TABLE["title"]), None)
    if table is None:
        table = {**HELDOUT_TABLE, "rows": []}
        data["tables"].append(table)
    table["rows"] = list(dict.fromkeys([*table["rows"], *(r["id"] for r in records)]))
    return data
