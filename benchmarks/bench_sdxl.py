"""SDXL training steps: conceptlab's textual-inversion and LoRA steps against loops built the way diffusers' SDXL
example scripts work, and against their floors, on the SDXL-shaped pipeline (SDXL 1.0's layer sizes with random
weights: `conceptlab.models.tiny.build_sdxl_pipeline(shape="sdxl")`) at a reduced resolution, float32 on the CPU
(the scripts' dtype without --mixed_precision).

Textual inversion. Reference (examples/textual_inversion/textual_inversion_sdxl.py): the VAE encodes the images
at every step, both whole token-embedding matrices (CLIP-L's and OpenCLIP-bigG's) are in torch's AdamW, and all
other rows are copied back after each step; no gradient clipping. Ours samples cached VAE posteriors and trains
only the new vectors (one TokenSplice per encoder). Floor: fixed token ids and latents, both encoders and the UNet
forward and backward to the vectors, the optimizer step, nothing else. Ours and the reference draw the same
random numbers in the same order (the reference trains its own token, '<ref>', on the same pipeline), so their
loss curves must agree.

LoRA (UNet, rank 4). Reference (examples/dreambooth/train_dreambooth_lora_sdxl.py): the VAE encodes the images
and both text encoders encode the prompts at every step (the script's path for per-image prompts), gradient
clipping, torch's default AdamW. With one fixed instance prompt the script encodes it once before training; that
loop is timed too, as the stricter reference. Ours: cached posteriors and prompt conditioning, clipping, the
training loop's AdamW (make_optimizer: the fused kernel). Floor: UNet forward+backward on one cached latent and
conditioning, the optimizer step, nothing else.

Memory: resident set size (psutil, sampled every 5 ms: benchmarks.common.PeakRSS): what the process holds after
the first step (model, optimizer), what one more step of each loop adds at peak, and the process's high-water
mark (getrusage). TI and LoRA each run in a fresh process.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import torch

from benchmarks.common import PeakRSS, Result
from conceptlab.models.tiny import build_sdxl_pipeline
from conceptlab.training.data import load_concept_images, prepare_image, to_pixels
from conceptlab.training.diffusion import denoising_loss
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig, instance_prompt
from conceptlab.training.loop import make_optimizer
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
from conceptlab.world.export import export_images

SIZE = 128  # px: SDXL's native 1024 needs more memory and time than a small CPU machine has
STEPS = 2  # timed steps of each loop after the memory step (also timed): medians of 3 are reported
TI_LR, LORA_LR, WEIGHT_DECAY = 5e-3, 1e-4, 1e-2


# ---------------------------------------------------------------- shared pieces, written as diffusers' scripts do
def encode_prompts(pipe, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The scripts' encode_prompt: both encoders' penultimate hidden states concatenated (B, 77, 768 + 1280)
    and the second encoder's projected pooled output (B, 1280)."""
    hidden, pooled = [], None
    for tok, te in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        out = te(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(hidden, dim=-1), pooled


def time_ids(size: int, batch: int) -> torch.Tensor:
    """(B, 6): original size, crop top-left, target size; the square crops all three loops train on."""
    return torch.tensor([[size, size, 0, 0, size, size]] * batch, dtype=torch.float32)


def _clock() -> tuple[float, float]:
    """(wall, CPU) seconds. With torch on one thread (make bench), the process's CPU time is the step's cost
    whatever else the machine runs; the wall time is what a user waits."""
    return time.perf_counter(), time.process_time()


def timed(fns: dict, steps: int, into: dict) -> None:
    """Appends (wall, CPU) seconds of each call to into[name]; the loops called in alternation, so machine load
    hits all alike."""
    for _ in range(steps):
        for k, fn in fns.items():
            t0 = _clock()
            fn()
            t1 = _clock()
            into[k].append((t1[0] - t0[0], t1[1] - t0[1]))


def _trim() -> None:
    """Hands the heap memory freed so far back to the OS (glibc's malloc_trim), so that an RSS rise counts what
    a loop allocates, not less for reusing what an earlier one (or building the model) freed."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the rise may then be low
        pass


def memory(fns: dict) -> tuple[dict, float, dict]:
    """Per loop, the MB its first two steps add at peak over what the process held before them (its one-off
    optimizer state included) and the second step's (wall, CPU) seconds, a timing sample like any other; and the
    resident MB before the first loop ran (the model)."""
    _trim()
    held, rise, times = psutil.Process().memory_info().rss / 2**20, {}, {}
    for k, fn in fns.items():
        _trim()
        with PeakRSS() as mem:
            fn()
            t0 = _clock()
            fn()
            t1 = _clock()
        rise[k], times[k] = mem.rise, [(t1[0] - t0[0], t1[1] - t0[1])]
    return rise, held, times


def high_water_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def _results(kind: str, shape: str, size: int, times: dict, rise: dict, held: float, targets: dict) -> list[Result]:
    """Result rows: ours against every other loop (median CPU s/step; the wall times in `detail`), and the
    memory each loop adds."""
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    load = os.getloadavg()
    detail = {"cpu_seconds": {k: [round(c, 2) for _, c in v] for k, v in times.items()},
              "wall_seconds": {k: [round(w, 2) for w, _ in v] for k, v in times.items()},
              "wall_median_ratio": {k: round(wall["ours"] / wall[k], 3) for k in targets},
              "memory_mb": {"resident_before_steps": round(held), "first_two_steps_add": {k: round(v) for k, v in rise.items()},
                            "process_high_water": round(high_water_mb())},
              "load_average_after": [round(x, 2) for x in load], "resolution_px": size, "dtype": "float32",
              "torch_threads": torch.get_num_threads()}
    label = f"{shape}-shaped @{size}px"
    print(f"  {kind} {label}: resident {held:.0f} MB before the steps (the model); the first two steps add at peak: "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in rise.items())
          + f"; process high-water {high_water_mb():.0f} MB; load average {load[0]:.2f}", flush=True)
    for k, v in times.items():
        print(f"    {k}: CPU s " + " ".join(f"{c:.1f}" for _, c in v) + "; wall s " + " ".join(f"{w:.1f}" for w, _ in v),
              flush=True)
    out = [Result(f"{kind} {label}: CPU s/step vs {k}", cpu["ours"], cpu[k], "cpu s", t, detail)
           for k, t in targets.items()]
    out.append(Result(f"{kind} {label}: MB two steps add vs reference", rise["ours"], rise["reference"], "MB",
                      "reported", detail))
    return out


# ---------------------------------------------------------------- textual inversion
class ReferenceTI:
    """textual_inversion_sdxl.py's step: VAE every step, both whole embedding matrices in AdamW, rows restored."""

    def __init__(self, method: TextualInversion, token: str, pixels: torch.Tensor, lr: float):
        self.m, self.pipe, self.token = method, method.pipe, token
        self.pixels = torch.cat([pixels, pixels.flip(-1)])  # the cached latents' index order
        pairs = ((self.pipe.tokenizer, self.pipe.text_encoder), (self.pipe.tokenizer_2, self.pipe.text_encoder_2))
        self.weights, self.keep = [], []
        for tok, te in pairs:
            weight = te.get_input_embeddings().weight  # (V, D): the whole matrix trains
            keep = torch.ones(len(weight), dtype=torch.bool)
            keep[tok.convert_tokens_to_ids([token])] = False
            self.weights.append(weight)
            self.keep.append(keep)
        self.original = [w.detach().clone() for w in self.weights]
        self.opt = torch.optim.AdamW(self.weights, lr=lr, weight_decay=WEIGHT_DECAY)

    def step(self, batch: int, gen: torch.Generator) -> float:
        vae, m = self.pipe.vae, self.m
        for w in self.weights:  # trainable only inside this loop, so ours and the floor do not pay for it
            w.requires_grad_(True)
        torch.randint(0, 1, (1,), generator=gen)  # the concept offset ours draws (one concept here)
        rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        latents, texts = [], []
        for _ in range(batch):
            idx = torch.randint(0, len(self.pixels), (1,), generator=gen)
            with torch.no_grad():
                dist = vae.encode(self.pixels[idx]).latent_dist
            latents.append(dist.sample(generator=gen) * vae.config.scaling_factor)  # (1, 4, h, w)
            texts.append(rng.choice(m.templates[0]).format(self.token))
        hidden, pooled = encode_prompts(self.pipe, texts)
        added = {"text_embeds": pooled, "time_ids": time_ids(m.res, batch)}
        loss = denoising_loss(self.pipe.unet, m.scheduler, torch.cat(latents), hidden, gen, added_cond_kwargs=added)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for w, keep, orig in zip(self.weights, self.keep, self.original):
                w[keep] = orig[keep]
                w.requires_grad_(False)
        return loss.item()


def add_reference_token(pipe, token: str, init: str) -> None:
    """The reference's own placeholder in both encoders, initialised as the script does (the init word's row).
    Added before ours, whose splice hooks sit on the embedding modules the last resize leaves."""
    for tok, te in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        tok.add_tokens([token])
        if len(tok) > te.get_input_embeddings().num_embeddings:  # never shrink: SDXL-shaped encoders hold 49408 rows
            te.resize_token_embeddings(len(tok), mean_resizing=False)
        ids = tok(init, add_special_tokens=False).input_ids
        with torch.no_grad():
            weight = te.get_input_embeddings().weight
            weight[tok.convert_tokens_to_ids(token)] = weight[ids].mean(0)


class FloorTI:
    """Fixed token ids and latents; both encoders and the UNet forward and backward to the vectors; the step."""

    def __init__(self, method: TextualInversion, batch: int, lr: float):
        self.m, self.batch = method, batch
        self.texts = [f"a sticker of a {method.placeholders[0].token}"] * batch
        self.ids = [tok(self.texts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
                    for tok in (method.pipe.tokenizer, method.pipe.tokenizer_2)]
        self.latents = method.latents[0].sample(torch.zeros(batch, dtype=torch.long), torch.Generator().manual_seed(1))
        self.opt = make_optimizer(method.parameters(), lr, WEIGHT_DECAY)  # its own moments: ours' stay untouched

    def step(self, gen: torch.Generator) -> None:
        pipe, params = self.m.pipe, self.m.parameters()
        saved = [p.detach().clone() for p in params]
        outs = [te(ids, output_hidden_states=True) for te, ids in zip((pipe.text_encoder, pipe.text_encoder_2), self.ids)]
        hidden = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)  # (B, 77, 2048)
        added = {"text_embeds": outs[1][0], "time_ids": time_ids(self.m.res, self.batch)}
        denoising_loss(pipe.unet, self.m.scheduler, self.latents, hidden, gen, added_cond_kwargs=added).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():  # ours continues from its own vectors
            for p, s in zip(params, saved):
                p.copy_(s)


def _ours_ti(method: TextualInversion, opt, batch: int, gen) -> float:
    loss = method.loss(batch, gen)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def ti_case(shape: str, size: int, batch: int, steps: int, folder: Path) -> list[Result]:
    pipe = build_sdxl_pipeline(shape=shape)
    add_reference_token(pipe, "<ref>", "broccoli")
    ours = TextualInversion(pipe, TextualInversionConfig(
        concepts=[ConceptConfig("<bench>", str(folder), init="broccoli")], resolution=size))
    opt = make_optimizer(ours.parameters(), TI_LR, WEIGHT_DECAY)
    pixels = to_pixels([prepare_image(im, size) for im in load_concept_images(folder, "bench")])
    ref, floor = ReferenceTI(ours, "<ref>", pixels, TI_LR), FloorTI(ours, batch, TI_LR)
    gens = {k: torch.Generator().manual_seed(0) for k in ("ours", "reference", "floor")}
    losses = {"ours": [], "reference": []}
    fns = {"ours": lambda: losses["ours"].append(_ours_ti(ours, opt, batch, gens["ours"])),
           "reference": lambda: losses["reference"].append(ref.step(batch, gens["reference"])),
           "floor": lambda: floor.step(gens["floor"])}
    rise, held, times = memory(fns)
    timed(fns, steps, times)
    diff = max(abs(a - b) / max(abs(b), 1e-8) for a, b in zip(losses["ours"], losses["reference"]))
    print(f"  sdxl textual inversion: same seed, loss curves differ by at most {diff:.2e} (relative) over "
          f"{len(losses['ours'])} steps", flush=True)
    out = _results("sdxl textual inversion", shape, size, times, rise, held,
                   {"reference": "ratio <= 0.74 (>= 1.35x the steps/s)", "floor": "ratio <= 1.1"})
    out[0].detail["loss_curves_max_relative_difference"] = diff  # one dict, shared by the rows
    return out


# ---------------------------------------------------------------- LoRA
def _ours_lora(method: DreamBooth, opt, params, batch: int, gen) -> None:
    method.loss(batch, gen).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _reference_lora(method: DreamBooth, opt, params, pixels, batch: int, gen, fixed=None) -> None:
    """train_dreambooth_lora_sdxl.py's step: VAE every step; both encoders every step unless `fixed` (hidden,
    pooled) holds the one instance prompt's embeddings, encoded before training."""
    pipe = method.pipe
    idx = torch.randint(0, len(pixels), (batch,), generator=gen)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels[idx]).latent_dist.sample(generator=gen) * pipe.vae.config.scaling_factor
        hidden, pooled = fixed or encode_prompts(pipe, [instance_prompt(method.cfg.subjects[0])] * batch)
    added = {"text_embeds": pooled, "time_ids": time_ids(method.res, batch)}
    denoising_loss(pipe.unet, method.scheduler, latents, hidden, gen, added_cond_kwargs=added).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _floor_lora(method: DreamBooth, opt, latents, cond, gen) -> None:
    denoising_loss(method.pipe.unet, method.scheduler, latents, cond.hidden, gen,
                   added_cond_kwargs=cond.added).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def lora_case(shape: str, size: int, batch: int, steps: int, folder: Path) -> list[Result]:
    pipe = build_sdxl_pipeline(shape=shape)
    method = DreamBooth(pipe, DreamBoothConfig(subjects=[SubjectConfig("tuki", str(folder), "monster")], lora=True,
                                               rank=4, resolution=size))
    params = method.parameters()
    opt = make_optimizer(params, LORA_LR, WEIGHT_DECAY)  # the training loop's optimizer
    ref_opt = torch.optim.AdamW(params, lr=LORA_LR, weight_decay=WEIGHT_DECAY)  # the script's
    ref_opt.state = opt.state  # timing only: one set of moments serves all loops
    pixels = to_pixels([prepare_image(im, size) for im in load_concept_images(folder, "bench")])
    prompt = instance_prompt(method.cfg.subjects[0])
    with torch.no_grad():
        fixed = encode_prompts(pipe, [prompt] * batch)
        cond = method.encode([prompt] * batch)
    latents = method.instance[0].sample(torch.zeros(batch, dtype=torch.long), torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(0)
    fns = {"ours": lambda: _ours_lora(method, opt, params, batch, gen),
           "reference": lambda: _reference_lora(method, ref_opt, params, pixels, batch, gen),
           "reference, prompt encoded once": lambda: _reference_lora(method, ref_opt, params, pixels, batch, gen,
                                                                     fixed),
           "floor": lambda: _floor_lora(method, opt, latents, cond, gen)}
    rise, held, times = memory(fns)
    timed(fns, steps, times)
    return _results("sdxl LoRA", shape, size, times, rise, held,
                    {"reference": "ratio <= 0.77 (>= 1.3x)", "reference, prompt encoded once": "reported",
                     "floor": "ratio <= 1.1"})


# ---------------------------------------------------------------- entry point
def _in_fresh_process(fn, *args) -> list[Result]:
    """One SDXL-shaped model at a time, and memory that one loop held (never all handed back) not counted in the
    next one's."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run(quick: bool = False, size: int = SIZE, shape: str = "sdxl", fresh_process: bool = True,
        cases: tuple[str, ...] = ("ti", "lora")) -> list[Result]:
    """`shape` "tiny" runs the same loops on the tiny SDXL pipeline (the harness's test)."""
    with tempfile.TemporaryDirectory() as tmp:
        concept, subject = Path(tmp) / "concept", Path(tmp) / "subject"
        export_images(concept, 4, seed=0, size=64, only={"object": {"broccoli"}})
        export_images(subject, 4, seed=0, size=64, only={"object": {"monster"}, "individual": {"tuki"}})
        out = []
        for name, case, folder in (("ti", ti_case, concept), ("lora", lora_case, subject)):
            if name not in cases:
                continue
            args = (shape, size, 1, 0 if quick else STEPS, folder)
            out += _in_fresh_process(case, *args) if fresh_process else case(*args)
        return out
