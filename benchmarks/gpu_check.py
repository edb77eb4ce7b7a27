"""`make gpu-check`: the feature set on a CUDA device at real layer sizes, timed, with peak memory, into JSON.

SD-1.5-shaped and SDXL-shaped pipelines with random weights at their native sizes: one generation, a
textual-inversion step, a LoRA step (both under the mixed precision of --dtype, fp16 with its GradScaler, the
trainable weights in float32), a Prompt-to-Prompt edit, an inversion (where the family supports them) and a
pivotal-tuning step with a text-encoder LoRA and gradient checkpointing, and a full UNet fine-tune step with
AdamW, with Adafactor and with 8-bit AdamW (peak memory side by side: adafactor_memory_ratio,
adamw8bit_memory_ratio), each
with its seconds, steps/s and peak GPU memory. Without a CUDA device it says so and exits 0.
`--device cpu --shapes tiny,tiny-sdxl` runs the same code on tiny pipelines: the test suite does, so the
script cannot rot between the rare GPU loans.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

SHAPES = {"sd15": ("sd", "sd15"), "sdxl": ("sdxl", "sdxl"), "tiny": ("sd", "tiny"), "tiny-sdxl": ("sdxl", "tiny")}
# the model's dtype -> the training steps' --mixed-precision, as diffusers pairs them (trainables stay float32)
MIXED = {"float32": "no", "float16": "fp16", "bfloat16": "bf16"}


def build(shape: str, device: str, dtype: torch.dtype):
    from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline

    kind, name = SHAPES[shape]
    pipe = build_pipeline(name) if kind == "sd" else build_sdxl_pipeline(shape=name)
    return pipe.to(device, dtype)


def measure(device: str, fn) -> dict:
    """Seconds and peak memory (GiB, CUDA only) of fn(); fn's own result dict is merged in."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    from conceptlab.errors import ConceptlabError

    t0 = time.perf_counter()
    try:
        extra = fn() or {}
    except ConceptlabError as e:  # a feature this family does not have yet
        return {"unsupported": str(e)[:300]}
    except Exception as e:  # noqa: BLE001 - a check that fails is a result, not the end of the run
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    if cuda:
        torch.cuda.synchronize()
    out = {"seconds": round(time.perf_counter() - t0, 3), **extra}
    if cuda:
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def concept_folder(root: Path, size: int) -> Path:
    from conceptlab.world.export import export_images

    export_images(root / "concept", 4, seed=0, size=min(size, 1024), only={"object": {"broccoli"}})
    return root / "concept"


def train_steps(pipe, method_cls, cfg, steps: int, out: Path) -> dict:
    from conceptlab.training.loop import Trainer

    method = method_cls(pipe, cfg)
    t0 = time.perf_counter()
    trainer = Trainer(method, cfg.train, out)
    result = trainer.train()
    row = {"steps": result.steps, "steps_per_s": round(result.steps / (time.perf_counter() - t0), 3),
           "final_loss": result.losses[-1], "mixed_precision": cfg.train.mixed_precision,
           "trainable_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in method.parameters()})}
    if trainer.scaler is not None:  # fp16: the GradScaler's scale after the steps (it halves on every overflow)
        row["grad_scale"] = trainer.scaler.get_scale()
    return row


def check_shape(shape: str, device: str, dtype: torch.dtype, steps: int, work: Path) -> dict:
    from conceptlab.editing.edit import edit
    from conceptlab.editing.inversion import invert
    from conceptlab.generation import GenerationConfig, generate
    from conceptlab.models.families import family_of
    from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig
    from conceptlab.training.loop import TrainConfig
    from conceptlab.training.pivotal import PivotalConfig, PivotalTuning
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig

    built: dict = {}
    row = {"build": measure(device, lambda: built.update(pipe=build(shape, device, dtype)))}
    pipe = built["pipe"]
    family = family_of(pipe)
    size = family.native_size(pipe)
    folder = concept_folder(work / shape, size)
    row.update(family=family.name, size=size, dtype=str(dtype).removeprefix("torch."))
    row["generate"] = measure(device, lambda: {"images": len(generate(
        pipe, GenerationConfig(prompt="a sticker of a happy star", n=1, steps=steps), progress=False))})
    train = TrainConfig(steps=steps, batch_size=1, lr=1e-4, mixed_precision=MIXED[str(dtype).removeprefix("torch.")])
    ti = TextualInversionConfig(concepts=[ConceptConfig("<gpu>", str(folder), init="broccoli")], train=train)
    row["ti_step"] = measure(device, lambda: train_steps(pipe, TextualInversion, ti, steps, work / shape / "ti"))
    built.clear()  # the first pipeline must not linger in the memory figures below
    pipe = build(shape, device, dtype)  # a clean pipeline: the token above is in this one's vocabulary
    db = DreamBoothConfig(subjects=[SubjectConfig("gpu", str(folder), "broccoli")], lora=True, rank=4, train=train)
    row["lora_step"] = measure(device, lambda: train_steps(pipe, DreamBooth, db, steps, work / shape / "lora"))
    pipe = build(shape, device, dtype)
    row["edit"] = measure(device, lambda: {"images": len(edit(
        pipe, "a sticker of a happy star", "a sticker of a happy apple", steps=steps).images)})
    image = generate(pipe, GenerationConfig(prompt="a star", n=1, steps=2), progress=False)[0].image
    row["inversion"] = measure(device, lambda: {"method": "negative-prompt", "steps": invert(
        pipe, image, "a star", "negative-prompt", steps=steps).steps})
    # a full UNet fine-tune: the optimizer's state is most of the memory
    for optimizer in ("adamw", "adafactor", "adamw8bit"):
        pipe = None
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        pipe = build(shape, device, dtype)
        full = DreamBoothConfig(subjects=[SubjectConfig("gpu", str(folder), "broccoli")], lora=False,
                                train=replace(train, optimizer=optimizer, gradient_checkpointing=True))
        row[f"full_{optimizer}_step"] = measure(device, lambda pipe=pipe, full=full, name=optimizer: train_steps(
            pipe, DreamBooth, full, steps, work / shape / f"full-{name}"))
    for optimizer in ("adafactor", "adamw8bit"):
        if "peak_gib" in row["full_adamw_step"] and "peak_gib" in row[f"full_{optimizer}_step"]:
            row[f"{optimizer}_memory_ratio"] = round(row[f"full_{optimizer}_step"]["peak_gib"] /
                                                     row["full_adamw_step"]["peak_gib"], 3)
    pipe = build(shape, device, dtype)  # pivotal tuning with a text-encoder LoRA, gradient checkpointing on
    row["pivotal_te_step"] = measure(device, lambda: train_steps(pipe, PivotalTuning, PivotalConfig(
        subjects=[SubjectConfig("<gpu>", str(folder), "broccoli")], rank=4, train_text_encoder=True,
        train=replace(train, gradient_checkpointing=True)), steps, work / shape / "pivotal"))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-check.json", help="JSON file of the results")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run on tiny shapes")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--shapes", default="sd15,sdxl", help=f"comma-separated, from {sorted(SHAPES)}")
    p.add_argument("--steps", type=int, default=3, help="denoising and training steps of each check")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine, nothing to run (this is not a failure)")
        return 0
    dtype = getattr(torch, args.dtype)
    env = {"torch": torch.__version__, "device": args.device,
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    results = {"environment": env, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            print(f"gpu-check: {shape} on {args.device} ({args.dtype})", flush=True)
            results[shape] = check_shape(shape, args.device, dtype, args.steps, Path(tmp))
            print(json.dumps(results[shape], indent=1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"gpu-check: results in {args.out}")
    failed = [f"{s}.{k}" for s in args.shapes.split(",") for k, v in results[s].items()
              if isinstance(v, dict) and "error" in v]
    if failed:
        print(f"gpu-check: these checks raised: {failed}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
