"""Maintainer tool: score an exported base model with the judge, time it, and write the shipped folder.

    python scripts/ship_base_model.py runs/base-model   # reads runs/base-model/export, writes the package copy

Writes the model card (README.md), loss.png and scores.json beside the weights, then copies the folder to
src/conceptlab/models/sticker_base/, where load_pipeline() finds it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from conceptlab.config import dataclass_from_dict
from conceptlab.evaluation.judge import load_judge
from conceptlab.evaluation.prompts import evaluate_prompts, standard_prompts, write_prompt_report
from conceptlab.evaluation.roundtrip import vae_ceiling
from conceptlab.models.base import HeldOut
from conceptlab.models.loading import shipped_base_model
from conceptlab.plots import plot_loss


def timings(folder: Path) -> dict:
    from diffusers import StableDiffusionPipeline

    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    load = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    pipe(["a sticker of a happy yellow emoji"] * 8, num_inference_steps=30, generator=gens)  # warm-up
    best = float("inf")
    for _ in range(3):
        gens = [torch.Generator().manual_seed(i) for i in range(8)]
        t0 = time.perf_counter()
        pipe(["a sticker of a happy yellow emoji"] * 8, num_inference_steps=30, generator=gens)
        best = min(best, time.perf_counter() - t0)
    return {"load_seconds": round(load, 3), "batch8_30steps_seconds": round(best, 3)}


def training_minutes(work: Path) -> dict:
    rows = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines() if x.strip()]
    out = {}
    for stage in ("vae", "unet"):
        times = [r["time"] for r in rows if r["stage"] == stage]
        out[stage] = {"steps": max(r["step"] for r in rows if r["stage"] == stage) if times else 0}
    if not out["vae"]["steps"] and (work / "vae.ckpt").exists():  # a VAE reused from an earlier run
        from conceptlab.io import load_torch_checkpoint

        out["vae"]["steps"] = load_torch_checkpoint(work / "vae.ckpt")["step"]
    return out


# every shipped version, oldest first; the last is the one this script ships (update both with a new run)
LINEAGE = [
    ("v0", "3,500 steps from scratch"),
    ("v1", "v0 + 5,000 steps, `configs/history/base_model_v1.json`"),
    ("v2", "v1 + 4,000 steps with faces weighted 5x, `configs/history/base_model_v2.json`"),
    ("v3", "v2 + 2,500 steps with faces weighted 10x, float32, `configs/history/base_model_v3.json`"),
    ("v4", "v3 + 3,000 steps with faces weighted 13x, float32, `configs/history/base_model_v4.json` (not shipped)"),
    ("v5", "v4 + 2,000 steps with faces weighted 16x, float32, `configs/history/base_model_v5.json`"),
    ("v6", "v5 + 2,000 steps with faces weighted 19x, float32, `configs/history/base_model_v6.json`"),
    ("v7", "v6 + 2,000 steps with faces kept on 10% of broccoli (v6 never saw one) and the VAE decoder "
           "fine-tuned 1,000 steps, float32, `configs/history/base_model_v7.json`"),
    ("v8", "v7 with the whole VAE fine-tuned (faced broccoli oversampled, every other latent anchored) + "
           "1,500 UNet steps on the re-encoded latents with faces on 20% of broccoli, float32, "
           "`configs/history/base_model_v8.json`"),
    ("v9", "v8 with the VAE fine-tuned 800 more steps (face pixels weighted 7x) + 1,200 UNet steps with the faced "
           "broccoli drawn 4x as often, float32, `configs/base_model.json`"),
]


def lineage() -> str:
    (name, what), prev = LINEAGE[-1], LINEAGE[-2][0]
    older = "; ".join(f"{n} was {w}" for n, w in reversed(LINEAGE[:-1]))
    return (f"this run, {name}, is {what}: it started from {prev}'s pipeline folder through `unet_init`/`vae_init`; "
            f"{older}")


def ceiling_table(ceiling: dict) -> str:
    if not ceiling:
        return ""
    rows = "\n".join(f"| {g} | {r['render']:.1%} | {r['round_trip']:.1%} |" for g, r in ceiling.items())
    return f"""The autoencoder's ceiling (`conceptlab.evaluation.roundtrip`): the judge on renders, and on the same renders
encoded and decoded by this VAE. No fine-tune of the UNet draws finer than the decoder does: the DreamBooth subjects
are told apart by their marks (tuki: three eyes and stripes; bnh: one eye and spots), the broccoli stickers of the
textual-inversion proof by a small face on the crown.

| renders | judged right | after the VAE |
| --- | --- | --- |
{rows}

"""


def card(cfg: dict, scores, speed: dict, steps: dict, ceiling: dict | None = None) -> str:
    ceiling = ceiling_table(ceiling or {})
    held = dataclass_from_dict(HeldOut, cfg["held_out"]) if "held_out" in cfg else HeldOut()
    acc = scores.accuracy
    rows = "\n".join(f"| {g} | {scores.counts[g]} | " + " | ".join(f"{acc[g].get(a, float('nan')):.1%}"
                     for a in ("object", "colour", "emotion", "background", "style", "accessory", "held_item", "flowers"))
                     + " |" for g in ("seen", "unseen combination", "all"))
    warm = f" ({lineage()})" if cfg.get("unet_init") else ""
    prev = LINEAGE[-2][0]
    vae_steps = (f"{steps['vae']['steps']} steps" if cfg.get("vae_steps") else
                 f"{prev}'s (through `vae_init`, no further steps)" if cfg.get("vae_init") else "none")
    if cfg.get("vae_steps") and cfg.get("vae_init"):
        vae_steps = (f"the previous model's, fine-tuned {cfg['vae_steps']} more steps (lr {cfg['vae_lr']}; images of rare-face "
                     f"objects that keep their face drawn {cfg.get('vae_rare_face_boost', 1):g}x as often, face pixels "
                     f"weighted {1 + cfg.get('vae_face_weight', 0):g}x, every other image's latent mean held to the old "
                     f"encoder's with weight {cfg.get('vae_anchor_weight', 0):g}, so the UNet needed only a short "
                     "catch-up)")
    vae_line = (f"{vae_steps}, batch {cfg['vae_batch']}, L1 + L2 + image-gradient loss on the posterior mean; the\n"
                "  encoder's log-variance is then fixed at -20, so sampling the posterior returns its mean."
                if cfg.get("vae_steps") else f"{vae_steps}.")
    precision = "bf16 autocast" if cfg.get("bf16") else "float32 (this CPU has no native bf16)"
    decoder = (f"\n- VAE decoder: then fine-tuned {cfg['decoder_steps']} steps (batch {cfg['decoder_batch']}, lr "
               f"{cfg['decoder_lr']}, face pixels weighted {1 + cfg['decoder_face_weight']:g}x) on the cached latents with "
               "the encoder frozen, so the latents the UNet learns from are unchanged." if cfg.get("decoder_steps") else "")
    unet = (f"jointly: {steps['unet']['steps']} steps, batch {cfg['unet_batch']}, AdamW lr {cfg['unet_lr']}\n"
            f"  (warm-up {cfg['unet_warmup']}, cosine), min-SNR weighting (gamma {cfg['min_snr_gamma']}), {precision}, EMA\n"
            f"  {cfg['ema_decay']}, offset noise {cfg['offset_noise']}; these weights are the EMA weights. 2 CPU cores.\n"
            f"  `conceptlab train base --config configs/base_model.json` reproduces it{warm}"
            if cfg.get("unet_steps") else
            f"{prev}'s, unchanged (`unet_init` with `unet_steps` 0; loss.png is {prev}'s run). `conceptlab train base "
            f"--config configs/base_model.json` reproduces this folder{warm}")
    face = (f"\n- Faces: the error on the latent pixels under each sticker's face (`conceptlab.world.face_box`) counts "
            f"{1 + cfg['face_loss_weight']:g} times; faces are ~6x6 of the 16x16 latent pixels and carry the emotion."
            if cfg.get("face_loss_weight") and cfg.get("unet_steps") else "")
    faces = "\n".join([f"- `{o}` appears only without a face (emotion \"none\")." for o in held.faceless_only] +
                      [f"- `{o}` keeps its face on {r:.0%} of its images (the rest are drawn without one): faces on it "
                       "are rare, as cartoon vegetables with faces are in real data; textual inversion has them to learn."
                       for o, r in held.rare_faces.items()])
    if cfg.get("unet_rare_face_boost", 1) != 1 and cfg.get("unet_steps"):
        faces += (f"\n- Those faced images are drawn {cfg['unet_rare_face_boost']:g}x as often in the UNet's batches (and "
                  f"{cfg.get('vae_rare_face_boost', 1):g}x in the VAE's): rare in the data, not in what the model practises on.")
    combos = "; ".join(" + ".join(f"{k}={v}" for k, v in c) for c in held.combinations)
    return f"""---
library_name: diffusers
pipeline_tag: text-to-image
tags: [stable-diffusion, conceptlab, sticker-world]
---
# conceptlab sticker base model

A small Stable Diffusion pipeline (AutoencoderKL, UNet2DConditionModel with cross-attention, CLIPTextModel,
CLIP-format BPE tokenizer, DDIM scheduler) trained from scratch on CPU on conceptlab's procedural sticker
world. It loads with nothing but diffusers:

```python
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained("path/to/sticker_base")
image = pipe("a sticker of a happy green apple on a beach", num_inference_steps=30).images[0]
```

Images are 64x64; latents 16x16x8 (VAE factor 4); epsilon prediction with SD's scaled-linear schedule,
except `beta_end` = {cfg['noise_beta_end']} (SD: 0.012). With SD's value, sqrt(alpha_bar) = 0.068 of the image survives at
t = T, enough on a 16x16 latent for an object's colour to show through: v0 learned to take colour from the
starting noise (each seed had one colour, whatever the prompt). {cfg['noise_beta_end']} leaves 0.015.

## Training
- Data: {cfg['images']} rendered stickers (seed {cfg['seed']}), captions drawn fresh every step with each optional
  attribute left out with probability {cfg['attribute_dropout']} and the whole caption dropped with probability
  {cfg['caption_dropout']} (for classifier-free guidance).
- VAE: {vae_line}{decoder}
- UNet and text encoder, {unet}.{face}
- Tokenizer: this folder's, the one every conceptlab process uses (`sticker_tokenizer()`). v0 was trained with a tokenizer
  rebuilt in each process, whose ids differed between training and inference.

## Held out of the training data
{faces}
- The named monsters (tuki, bnh, moxo) never appear: they are DreamBooth subjects.
- The style `pixel art` never appears.
- These attribute pairs never appear together: {combos}.

## Scores
The sticker-world judge on {scores.counts['all']} generations (one per prompt, fixed seeds, 30 DDIM steps, guidance
7.5): prompts the model could have seen, and prompts of the held-out pairs.

| prompts | images | object | colour | emotion | background | style | accessory | held item | flowers |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

{ceiling}Speed on 2 CPU cores: loads in {speed['load_seconds']} s; a batch of 8 images at 30 steps takes
{speed['batch8_30steps_seconds']} s.
"""


def main(work: str) -> None:
    work = Path(work)
    export = work / "export"
    if "--export" in sys.argv:  # export the latest checkpoints first (a run stopped before its last step)
        from conceptlab.training.base_model import BaseModelConfig, export_from_checkpoints

        cfg_obj = BaseModelConfig.from_dict(json.loads((work / "config.json").read_text()))
        print(f"exported UNet step {export_from_checkpoints(cfg_obj, work, export)}")
    cfg = json.loads((export / "conceptlab_config.json").read_text())
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(export)
    pipe.set_progress_bar_config(disable=True)
    judge = load_judge()
    scores = evaluate_prompts(pipe, standard_prompts(300, 100), judge, steps=30)
    write_prompt_report(scores, work / "eval", "Base model: prompt accuracy")
    ceiling = vae_ceiling(pipe.vae, judge)
    speed = timings(export)
    rows = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines() if x.strip()]
    unet = [r for r in rows if r["stage"] == "unet"]
    if unet:
        plot_loss([r["step"] for r in unet], [r["loss"] for r in unet], export / "loss.png", "UNet + text encoder loss")
    elif cfg.get("unet_init") and (Path(cfg["unet_init"]) / "loss.png").exists():  # the UNet is the init's
        shutil.copy(Path(cfg["unet_init"]) / "loss.png", export / "loss.png")
    (export / "scores.json").write_text(json.dumps({"accuracy": scores.accuracy, "counts": scores.counts,
                                                    "vae_ceiling": ceiling, **speed}, indent=2))
    (export / "README.md").write_text(card(cfg, scores, speed, training_minutes(work), ceiling))
    target = shipped_base_model()
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(export, target)
    print(json.dumps({"accuracy": scores.accuracy, "vae_ceiling": ceiling, **speed}, indent=2))
    print(f"shipped to {target}")


if __name__ == "__main__":
    main(sys.argv[1])
