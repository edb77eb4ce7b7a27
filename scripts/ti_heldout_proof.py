"""Textual inversion on concepts the shipped base model never saw, against diffusers' example loop.

    python scripts/ti_heldout_proof.py OUT [--steps 400] [--per-prompt 25] [--first-seed 2000]
        [--concepts style monster] [--loops ours reference] [--lr 5e-3]

Two held-out concepts (conceptlab.evaluation.recipes.heldout): the `pixel art` style as <pixel-art>, trained
on pixel-art apples, stars, fish and cats and judged on broccoli, emoji, clouds and monsters in four colours
(pixel art? object and colour kept?); and the named monster tuki as <tuki>, judged in four emotions x four
scenes (that individual? the asked emotion and scene?), beside the autoencoder's round-trip ceiling of each concept
(pixel-art renders judged pixel art, tuki renders judged tuki, after the VAE's encode and decode).
Each is trained on the same renders, steps, batch and seed by conceptlab's textual inversion (cached latents,
each image's own caption with the concept's words replaced by the token) and by a loop built the way
diffusers' examples/textual_inversion/textual_inversion.py works (benchmarks.bench_textual_inversion's
ReferenceTI: VAE at every step, templates, the whole embedding matrix in AdamW, its default learning rate
scaled by the batch), and judged with the plain words on the same seeds: 16 prompts x --per-prompt images.
--loops pivotal adds pivotal tuning (the token with a UNet LoRA, --lora-rank 4, conceptlab.training.pivotal) on the same
captions, judged with the token and its class word ('<tuki> monster'); --text-encoder-lora adds a text-encoder LoRA;
--full-fine-tune trains every UNet weight (and text-encoder weight with --text-encoder-lora) beside the token.
Choose settings on one seed range (--first-seed 1000) and report on another (2000).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ holds the reference loop

from benchmarks.bench_textual_inversion import ReferenceTI  # noqa: E402
from conceptlab.evaluation.judge import load_judge  # noqa: E402
from conceptlab.evaluation.recipes import heldout as H  # noqa: E402
from conceptlab.models.loading import load_pipeline  # noqa: E402
from conceptlab.training.data import load_concept_images, prepare_image  # noqa: E402
from conceptlab.training.loop import TrainConfig, Trainer  # noqa: E402
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig  # noqa: E402


def train_ours(pipe, cfg: H.HeldOutConfig, token: str, init: str, words: str, folder: Path, out: Path) -> float:
    """conceptlab's textual inversion on the shared loop, on each image's own caption; returns seconds."""
    ti = TextualInversionConfig(model=cfg.model, concepts=[ConceptConfig(token, str(folder), init=init,
                                                                         captions=words)],
                                train=TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                                  seed=cfg.seed))
    return Trainer(TextualInversion(pipe, ti), ti.train, out, config_record=asdict(ti)).train().seconds


def train_reference(pipe, cfg: H.HeldOutConfig, token: str, init: str, template: str, folder: Path) -> float:
    """diffusers' example loop on the same renders, with templates as that script has; returns seconds."""
    ti = TextualInversionConfig(model=cfg.model, concepts=[ConceptConfig(token, str(folder), init=init,
                                                                         template=template)])
    method = TextualInversion(pipe, ti)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    ref = ReferenceTI(method, [prepare_image(im, size) for im in load_concept_images(folder, "--concept")],
                      cfg.reference_lr)
    gen, t0 = torch.Generator().manual_seed(cfg.seed), time.perf_counter()
    for _ in range(cfg.steps):
        ref.step(cfg.batch_size, gen)
    return time.perf_counter() - t0


def train_pivotal_loop(pipe, cfg: H.HeldOutConfig, token: str, words: str, class_word: str, folder: Path,
                       out: Path) -> float:
    """Pivotal tuning (the token and a UNet LoRA of cfg.lora_rank, or every UNet weight with cfg.full), on each
    image's caption with `words` replaced by 'TOKEN CLASS'; prior preservation with cfg.prior_weight; with
    cfg.companion more held-out monsters' tokens trained beside ('bnh+moxo'), each with its prior on its captions.
    Returns seconds."""
    from conceptlab.training.dreambooth import SubjectConfig
    from conceptlab.training.pivotal import PivotalConfig, train_pivotal

    train = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lora_lr, seed=cfg.seed)
    subjects = [SubjectConfig(token, str(folder), class_word, captions=words, prior_weight=cfg.prior_weight)]
    for name in cfg.companion.split("+") if cfg.companion else ():
        ident = H.export_companion(out.parent / f"{name}-data", name)
        subjects.append(SubjectConfig(ident, str(out.parent / f"{name}-data"), class_word, captions="monster",
                                      prior_weight=cfg.companion_prior, class_prompts="captions"))
    prior = {"prior_preservation": True, "class_prompts": cfg.class_prompts, "class_images": cfg.class_images} \
        if any(s.prior_weight for s in subjects) else {}
    pc = PivotalConfig(model=cfg.model, subjects=subjects, lora=not cfg.full, rank=cfg.lora_rank, token_lr=cfg.lr,
                       train_text_encoder=cfg.text_encoder_lora, train=train, vectors=cfg.vectors,
                       text_encoder_lr=cfg.text_encoder_lr if cfg.text_encoder_lora else None,
                       token_steps=cfg.token_steps, token_init=cfg.token_init, **prior)
    return train_pivotal(pc, out, pipe=pipe)[1].seconds


def run_concept(concept: str, cfg: H.HeldOutConfig, judge, work: Path, save=lambda result: None) -> dict:
    """The plain words, then each loop on a fresh base model, judged on the same prompts and seeds; `save` gets
    the result so far after each row, so a run stopped early keeps the rows it finished."""
    data = work / f"{concept}-data"
    token, init, words = H.export_concept_data(concept, data, cfg.images, seed=cfg.seed, per_emotion=cfg.per_emotion,
                                               captions=cfg.captions, renders=cfg.renders)
    plain = "pixel art" if concept == "style" else "monster"
    groups = H.score_groups(concept)
    result = {"token": token, "init": init, "caption_words": words, "loops": {}}
    pipe = load_pipeline(cfg.model)
    result["ceiling"] = H.ceiling(concept, pipe.vae, judge)  # the autoencoder is never trained: every loop's
    judged = lambda noun: H.judge_prompts(pipe, judge, H.prompts_for(concept, noun), cfg.per_prompt,  # noqa: E731
                                          cfg.first_seed, cfg.guidance, cfg.sampling_steps)
    # the plain word where --loops names it ('plain'), else first (unless --no-plain-word)
    order = list(cfg.loops) if "plain" in cfg.loops else ["plain"] * cfg.plain_word + list(cfg.loops)
    for loop in order:
        if loop == "plain":
            rows, images = judged(plain)
            result["plain_word"] = {"noun": plain, **H.shares(rows, groups), "images": len(rows),
                                    "read": H.readings(rows)}
            H.save_grid(images, cfg.per_prompt, work / f"{concept}-plain.png")
            print(f"{concept} plain word: {result['plain_word']}", flush=True)
            save(result)
            continue
        pipe = load_pipeline(cfg.model)
        noun = token
        if loop == "ours":
            secs = train_ours(pipe, cfg, token, init, words, data, work / f"{concept}-ours")
        elif loop == "pivotal":  # prompts name the token with its class word, as it was trained
            class_word = "art" if concept == "style" else "monster"
            secs = train_pivotal_loop(pipe, cfg, token, words, class_word, data, work / f"{concept}-pivotal")
            noun = f"{token} {class_word}"
        else:
            secs = train_reference(pipe, cfg, token, init, "style" if concept == "style" else "object", data)
        rows, images = judged(noun)
        result["loops"][loop] = {**H.shares(rows, groups), "images": len(rows), "train_seconds": round(secs, 1),
                                 "read": H.readings(rows)}
        H.save_grid(images, cfg.per_prompt, work / f"{concept}-{loop}.png")
        print(f"{concept} {loop}: {result['loops'][loop]}", flush=True)
        save(result)
    H.add_difference(result, concept)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--lora-lr", type=float, default=1e-4, help="pivotal tuning's LoRA learning rate")
    p.add_argument("--lora-rank", type=int, default=4, help="pivotal tuning's LoRA rank")
    p.add_argument("--text-encoder-lora", action="store_true", help="pivotal tuning also trains a text-encoder LoRA "
                   "(with --full-fine-tune: every text-encoder weight)")
    p.add_argument("--text-encoder-lr", type=float, default=None,
                   help="with --text-encoder-lora: the text encoder's own learning rate (default: --lora-lr)")
    p.add_argument("--full-fine-tune", action="store_true", help="pivotal tuning trains every UNet weight beside the "
                   "token instead of a LoRA, at --lora-lr")
    p.add_argument("--vectors", type=int, default=1, help="pivotal tuning: embedding vectors per token")
    p.add_argument("--token-steps", type=int, default=0, help="pivotal tuning: steps of the token alone first")
    p.add_argument("--prior-weight", type=float, default=0.0, help="pivotal tuning: prior preservation at this "
                   "weight (default 0: none)")
    p.add_argument("--class-prompts", choices=("class", "captions"), default="captions",
                   help="with a prior: class images from the captions without the token, or from 'a monster'")
    p.add_argument("--class-images", type=int, default=50, help="with a prior: class images per prompt pool")
    p.add_argument("--captions", choices=("world", "sticker"), default="world",
                   help="the monster's training captions: the world's varied ones, or all in the DreamBooth proof's "
                        "form ('a sticker of a sad monster at the beach')")
    p.add_argument("--token-init", default="class", help="pivotal tuning: where the token starts (class: its class "
                   "word, 'monster' or 'art'; random; or a word)")
    p.add_argument("--renders", choices=("heldout", "dreambooth"), default="heldout",
                   help="the monster's training renders: this proof's draw, or the DreamBooth proof's (its render "
                        "seed and five scenes, captions in its form)")
    p.add_argument("--companion", nargs="+", choices=("bnh", "moxo"), default=None,
                   help="pivotal tuning: more held-out monsters trained beside tuki, each as its own token (renders "
                        "drawn as the DreamBooth proof draws its subjects, 3 per emotion); moxo shares tuki's stripes "
                        "with two eyes")
    p.add_argument("--companion-prior", type=float, default=0.3,
                   help="each companion's prior weight, on class images of its captions")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance when judging")
    p.add_argument("--no-plain-word", action="store_true", help="skip the plain-word row (a choosing run that has it)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--per-emotion", type=int, default=0,
                   help="monster: this many renders in each emotion instead of --images drawn at random")
    p.add_argument("--per-prompt", type=int, default=25)
    p.add_argument("--first-seed", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0,
                   help="the training seed (with --renders heldout also the renders' draw; the DreamBooth proof's "
                        "renders keep their own seed)")
    p.add_argument("--concepts", nargs="+", default=["style", "monster"], choices=["style", "monster"])
    p.add_argument("--record", metavar="PAGE_JSON", default=None,
                   help="add OUT/heldout.json's numbers to a docs/results/data page (docs/results/data/heldout-concepts.json; "
                        "made if missing) and stop (no training)")
    p.add_argument("--merge", nargs="+", metavar="SHARD", default=None,
                   help="join the heldout.json of runs on consecutive seed ranges (same settings) into OUT and stop")
    p.add_argument("--judge-pipeline", metavar="DIR", default=None,
                   help="judge a trained pipeline folder (e.g. `train pivotal --full-fine-tune`'s OUT/pipeline) on the "
                        "monster's prompts and seeds, per prompt, into OUT/judged.json, and stop (no training)")
    p.add_argument("--noun", default="<tuki> monster", help="with --judge-pipeline: how the prompts name the monster")
    p.add_argument("--model-name", default="v9", help="the model's name in the record")
    p.add_argument("--loops", nargs="+", default=["ours", "reference"], choices=["ours", "reference", "pivotal", "plain"],
                   help="the rows, in order; 'plain': the plain word here (default: first)")
    a = p.parse_args()
    cfg = H.HeldOutConfig(model=a.model, steps=a.steps, lr=a.lr, lora_lr=a.lora_lr, lora_rank=a.lora_rank, images=a.images,
                          text_encoder_lora=a.text_encoder_lora, text_encoder_lr=a.text_encoder_lr,
                          full=a.full_fine_tune, vectors=a.vectors,
                          prior_weight=a.prior_weight, class_prompts=a.class_prompts, class_images=a.class_images,
                          captions=a.captions,
                          token_steps=a.token_steps, token_init=a.token_init, renders=a.renders,
                          companion="+".join(dict.fromkeys(a.companion)) if a.companion else None,
                          companion_prior=a.companion_prior,
                          per_emotion=a.per_emotion,
                          per_prompt=a.per_prompt, first_seed=a.first_seed, guidance=a.guidance, seed=a.seed,
                          concepts=tuple(a.concepts), loops=tuple(a.loops), plain_word=not a.no_plain_word)
    if a.text_encoder_lr and not a.text_encoder_lora:
        raise SystemExit("--text-encoder-lr is the text encoder's own rate in pivotal tuning: give --text-encoder-lora")
    if a.companion and (set(a.concepts) != {"monster"} or a.loops != ["pivotal"]):
        raise SystemExit("--companion trains a second monster beside tuki in pivotal tuning: use it with "
                         "--concepts monster --loops pivotal")
    out = Path(a.out)
    if a.merge:
        return merge(out, [Path(d) for d in a.merge])
    if a.record:
        return record(out, Path(a.record), a.model_name)
    if a.judge_pipeline:
        return judge_pipeline(out, Path(a.judge_pipeline), a.noun, cfg)
    out.mkdir(parents=True, exist_ok=True)
    t0, judge = time.time(), load_judge()
    result = {"config": asdict(cfg), "concepts": {}}
    for concept in cfg.concepts:
        def save(r, concept=concept):
            result["concepts"][concept] = r
            (out / "heldout.json").write_text(json.dumps(result, indent=1))
        save(run_concept(concept, cfg, judge, out, save))
    result["floors"] = H.floors(result)
    result["minutes"] = round((time.time() - t0) / 60, 1)
    (out / "heldout.json").write_text(json.dumps(result, indent=1))
    for bar in result["floors"]:
        print(f"{'ok ' if bar['holds'] else 'NO '} {bar['what']}: {bar['value']:.3f} (floor {bar['floor']:.3f})")


def judge_pipeline(out: Path, folder: Path, noun: str, cfg: H.HeldOutConfig) -> None:
    """The monster's 16 prompts (naming it `noun`) x cfg.per_prompt seeds on a trained pipeline, judged as the proof
    judges its loops; OUT/judged.json holds the shares overall and per prompt."""
    from collections import defaultdict

    out.mkdir(parents=True, exist_ok=True)
    pipe, judge = load_pipeline(str(folder)), load_judge()
    rows, images = H.judge_prompts(pipe, judge, H.monster_prompts(noun), cfg.per_prompt, cfg.first_seed, cfg.guidance,
                                   cfg.sampling_steps)
    groups, by_prompt = H.score_groups("monster"), defaultdict(list)
    for r in rows:
        by_prompt[r["prompt"]].append(r)
    result = {"pipeline": str(folder), "noun": noun, "seeds": [cfg.first_seed, cfg.first_seed + cfg.per_prompt - 1],
              **H.shares(rows, groups), "images": len(rows), "read": H.readings(rows),
              "per_prompt": {p: H.shares(rs, groups) for p, rs in by_prompt.items()}}
    (out / "judged.json").write_text(json.dumps(result, indent=1))
    H.save_grid(images, cfg.per_prompt, out / "judged.png")
    for p, sh in result["per_prompt"].items():
        print(f"{p:62s} identity {sh['identity']:.0%}  emotion {sh['emotion']:.0%}  scene {sh['scene']:.0%}")
    print({k: result[k] for k in ("identity", "emotion", "scene", "all", "images")})


def merge(out: Path, shards: list[Path]) -> None:
    """Joins shard runs (the same settings on consecutive seed ranges, run side by side) into OUT/heldout.json."""
    result = H.merge_results([json.loads((d / "heldout.json").read_text()) for d in shards])
    result["shards"] = [str(d) for d in shards]
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(result, indent=1))
    for bar in result["floors"]:
        print(f"{'ok ' if bar['holds'] else 'NO '} {bar['what']}: {bar['value']:.3f} (floor {bar['floor']:.3f})")


def record(out: Path, page: Path, model_name: str) -> None:
    """Adds the finished run's records (one per concept and loop) to a results page's JSON."""
    import subprocess

    result = json.loads((out / "heldout.json").read_text())
    cfg = result["config"]
    command = (f"python scripts/ti_heldout_proof.py OUT --per-prompt {cfg['per_prompt']} --first-seed "
               f"{cfg['first_seed']} --concepts {' '.join(result['concepts'])} --loops "
               f"{' '.join(cfg.get('loops') or next(iter(result['concepts'].values()))['loops'])}")
    default = H.HeldOutConfig()
    for key in ("steps", "lr", "lora_lr", "lora_rank", "images", "guidance", "per_emotion", "vectors",
                "token_steps", "prior_weight", "class_images", "seed"):  # the settings this run changed
        if key in cfg and cfg[key] != getattr(default, key):
            command += f" --{key.replace('_', '-')} {H.setting_text(cfg[key])}"
    if cfg.get("text_encoder_lora"):
        command += " --text-encoder-lora"
        command += f" --text-encoder-lr {cfg['text_encoder_lr']:g}" if cfg.get("text_encoder_lr") else ""
    if cfg.get("full"):
        command += " --full-fine-tune"
    if cfg.get("captions", "world") != "world":
        command += f" --captions {cfg['captions']}"
    if (cfg.get("prior_weight") or cfg.get("companion")) and cfg.get("class_prompts", "captions") != "captions":
        command += f" --class-prompts {cfg['class_prompts']}"
    if cfg.get("token_init", "class") != "class":
        command += f" --token-init {shlex.quote(cfg['token_init'])}"
    if cfg.get("renders", "heldout") != "heldout":
        command += f" --renders {cfg['renders']}"
    if cfg.get("companion"):
        command += f" --companion {cfg['companion'].replace('+', ' ')} --companion-prior {cfg['companion_prior']:g}"
    if cfg.get("plain_word") is False:
        command += " --no-plain-word"
    if "shards" in result:
        command += f" (run as {len(result['shards'])} shards on consecutive seeds, joined with --merge)"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    date = time.strftime("%Y-%m-%d", time.localtime((out / "heldout.json").stat().st_mtime))
    records = H.records_from(result, date=date, commit=commit, model=model_name, command=command)
    data = H.merge_records(json.loads(page.read_text()) if page.is_file() else None, records)
    page.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"{len(records)} records into {page}")


if __name__ == "__main__":
    main()
