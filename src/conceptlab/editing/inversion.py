"""Real images into the sampler's noise: DDIM inversion, null-text inversion (Mokady et al. 2022,
arXiv 2211.09794), negative-prompt inversion (Miyake et al. 2023, arXiv 2305.16807) and Direct Inversion
(Ju et al. 2024, "PnP Inversion", arXiv 2310.01506).

All four start from DDIM inversion with the source prompt. Null-text inversion then optimises the
unconditional embedding of every step so that guided sampling retraces the inversion; negative-prompt
inversion instead uses the prompt's own embedding as the unconditional one, with no optimisation. Direct
Inversion keeps the plain null text and the DDIM trajectory itself: while editing, after every step the source
branch's latent gets back the difference between the trajectory and where guided sampling took it, so the
source branch follows the trajectory exactly and the targets read its attention from there.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from conceptlab.errors import InputError
from conceptlab.models.families import Conditioning, family_of, require_family

METHODS = ("ddim", "null-text", "negative-prompt", "direct")


@dataclass
class Inversion:
    """What an edit needs to start from a real image."""

    latent: torch.Tensor  # (1, C, h, w): the noise that reproduces the image
    prompt: str
    method: str
    steps: int
    guidance: float
    uncond: list[torch.Tensor] | None  # per step (1, 77, D), for null-text / negative-prompt
    seconds: float
    image: Image.Image  # the input, resized to the model's size
    uncond_pooled: torch.Tensor | None = None  # SDXL: the unconditional branch's pooled embedding (1, P)
    trajectory: list[torch.Tensor] | None = None  # direct: the DDIM trajectory z_0 ... z_T, each (1, C, h, w)

    @property
    def guided(self) -> bool:
        """Whether sampling from it must use its own guidance scale (every method but plain DDIM)."""
        return self.uncond is not None or self.trajectory is not None


def _embed(pipe, prompt: str) -> Conditioning:
    """The prompt's conditioning as the family builds it (SDXL: both encoders, pooled embedding, time ids)."""
    with torch.no_grad():
        return family_of(pipe).encode(pipe, [prompt])  # hidden (1, 77, D)


def _null(pipe, cond: Conditioning) -> Conditioning:
    """The unconditional branch as the pipeline builds it: SDXL zeroes it (force_zeros_for_empty_prompt),
    SD 1.x/2.x encode the empty prompt."""
    if cond.added is not None and pipe.config.get("force_zeros_for_empty_prompt", False):
        return Conditioning(torch.zeros_like(cond.hidden), {**cond.added,
                                                            "text_embeds": torch.zeros_like(cond.added["text_embeds"])})
    return _embed(pipe, "")


def _as_cond(uncond, like: Conditioning) -> Conditioning:
    """An unconditional hidden state (1, 77, D) with the added conditioning of `like` (None on SD 1.x/2.x)."""
    return uncond if isinstance(uncond, Conditioning) else Conditioning(uncond, like.added)


def _cat(a: Conditioning, b: Conditioning) -> Conditioning:
    added = None if a.added is None else {k: torch.cat([a.added[k], b.added[k]]) for k in a.added}
    return Conditioning(torch.cat([a.hidden, b.hidden]), added)


def prepare_image(pipe, image: Image.Image) -> tuple[Image.Image, bool]:
    """The image at the model's native size; whether it had to be resized."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    image = image.convert("RGB")
    if image.size == (size, size):
        return image, False
    return image.resize((size, size), Image.Resampling.BICUBIC), True


def _pixels(pipe, image: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    return x.to(pipe.device, pipe.vae.dtype)  # (1, 3, H, W) in [-1, 1]


def encode_image(pipe, image: Image.Image, refine_steps: int = 0, lr: float = 0.05) -> torch.Tensor:
    """The image's scaled latent (1, C, h, w): the encoder's mean, then optionally `refine_steps` of Adam on
    the latent so that the decoder reproduces the image more closely than the encoder's guess does."""
    x = _pixels(pipe, image)
    scale = pipe.vae.config.scaling_factor
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mean * scale
    if refine_steps <= 0:
        return z
    return refine_latent(pipe.vae, z, x, scale, refine_steps, lr)


def refine_latent(vae, z: torch.Tensor, x: torch.Tensor, scale: float, steps: int, lr: float = 0.05) -> torch.Tensor:
    """Minimises |decode(z) - x|^2 over the latent z (decoder frozen); keeps the best latent seen."""
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best, best_loss = z.detach().clone(), float("inf")
    with _frozen(vae):
        for _ in tqdm(range(steps), desc="latent refinement", leave=False):
            loss = F.mse_loss(vae.decode(z / scale).sample, x)
            if loss.item() < best_loss:
                best, best_loss = z.detach().clone(), loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return best


def _eps(pipe, latent, t, cond: Conditioning) -> torch.Tensor:
    return pipe.unet(latent, t, **cond.unet_kwargs()).sample


def _to_eps(scheduler, model_out, latent, t):
    """The noise prediction, whatever the model predicts (epsilon or v)."""
    if scheduler.config.prediction_type == "v_prediction":
        a = scheduler.alphas_cumprod[t]
        return a.sqrt() * model_out + (1 - a).sqrt() * latent
    return model_out


def _ddim_step(scheduler, eps, latent, t_from, t_to):
    """Deterministic DDIM move of `latent` from timestep t_from to t_to (either direction) (Song et al. 2021)."""
    a_from = scheduler.alphas_cumprod[t_from] if t_from >= 0 else scheduler.final_alpha_cumprod
    a_to = scheduler.alphas_cumprod[t_to] if t_to >= 0 else scheduler.final_alpha_cumprod
    x0 = (latent - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


@torch.no_grad()
def ddim_invert(pipe, latent0: torch.Tensor, cond: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The DDIM trajectory z_0 ... z_T of the image (no guidance), one latent per timestep."""
    sched = pipe.scheduler
    sched.set_timesteps(steps)
    timesteps = sched.timesteps.flip(0)  # ascending
    traj, z = [latent0], latent0
    prev = -1
    for t in timesteps:
        eps = _to_eps(sched, _eps(pipe, z, t, cond), z, t)
        z = _ddim_step(sched, eps, z, prev, int(t))
        traj.append(z)
        prev = int(t)
    return traj


def _guided_step(pipe, z, t, t_next, cond: Conditioning, uncond, guidance):
    sched = pipe.scheduler
    out = _eps(pipe, torch.cat([z, z]), t, _cat(_as_cond(uncond, cond), cond))
    eu, ec = out.chunk(2)
    eps = _to_eps(sched, eu + guidance * (ec - eu), z, t)
    return _ddim_step(sched, eps, z, int(t), t_next)


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """No weight gradients inside (only the inputs being optimised get them); restores requires_grad after."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def null_text_optimise(pipe, traj, cond: Conditioning, uncond0: Conditioning, steps: int, guidance: float,
                       inner_steps: int = 10, lr: float = 1e-2, tolerance: float = 1e-5) -> list[torch.Tensor]:
    """Per-step unconditional embeddings that make guided DDIM sampling retrace `traj` (Mokady et al. 2022).

    The embeddings are optimised in float32 whatever the pipeline's dtype (a float16 Adam step loses them);
    on SDXL the unconditional pooled embedding and time ids stay as the pipeline makes them."""
    sched = pipe.scheduler
    dtype = pipe.unet.dtype
    timesteps = [int(t) for t in sched.timesteps]  # descending
    z, uncond, out = traj[-1], uncond0.hidden.float().clone(), []
    with _frozen(pipe.unet):
        for i, t in enumerate(tqdm(timesteps, desc="null-text inversion")):
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            target = traj[len(traj) - 2 - i]
            # a copy: detach() shares storage, and Adam's in-place steps would rewrite earlier steps' entries
            uncond = uncond.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([uncond], lr=lr * (1 - i / (10 * len(timesteps))))
            with torch.no_grad():
                ec = _eps(pipe, z, t, cond)
            for _ in range(inner_steps):
                eu = _eps(pipe, z, t, Conditioning(uncond.to(dtype), uncond0.added))
                eps = _to_eps(sched, eu + guidance * (ec - eu), z, t)
                loss = F.mse_loss(_ddim_step(sched, eps, z, t, t_next), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if loss.item() < tolerance + i * 2e-5:
                    break
            out.append(uncond.detach().to(dtype))
            with torch.no_grad():
                z = _guided_step(pipe, z, t, t_next, cond, Conditioning(out[-1], uncond0.added), guidance)
    return out


@contextlib.contextmanager
def ddim_sampler(pipe):
    """The pipeline samples with DDIM inside (an inversion is only exact under the sampler it inverted);
    the caller's own scheduler is put back afterwards."""
    from diffusers import DDIMScheduler

    own = pipe.scheduler
    # unclipped: DDIM retraces an inversion only without clipping x0, and a config written for another
    # scheduler (SDXL's Euler) carries no clip_sample, which DDIM would default to True
    pipe.scheduler = DDIMScheduler.from_config(own.config, clip_sample=False)
    try:
        yield pipe.scheduler
    finally:
        pipe.scheduler = own


def check_inversion(prompt: str, steps: int, guidance: float, refine_steps: int = 0) -> None:
    """Raises InputError for a bad inversion setting, before any model work."""
    from conceptlab.validation import GUIDANCE, REFINE_STEPS, SAMPLING_STEPS, text

    text("--prompt", prompt, example="'a sticker of a happy emoji' (inversion is conditioned on it)")
    SAMPLING_STEPS.check("--steps", steps)
    GUIDANCE.check("--guidance", guidance)
    REFINE_STEPS.check("--refine-steps", refine_steps)


def invert(pipe, image: Image.Image, prompt: str, method: str = "null-text", steps: int = 30, guidance: float = 7.5,
           inner_steps: int = 10, refine_steps: int = 0) -> Inversion:
    """Inverts `image` under `prompt` with `method`; the sampler is set to DDIM with `steps` steps.

    `refine_steps` > 0 first optimises the image's latent against the decoder (encode_image), which lifts
    the ceiling every inversion shares: the VAE's own round trip."""

    require_family(pipe, "inversion", ("sd1", "sd2", "sdxl"))
    if method not in METHODS:
        raise InputError("--method", method, "unknown inversion method", f"Use one of {METHODS}")
    check_inversion(prompt, steps, guidance, refine_steps)
    image, resized = prepare_image(pipe, image)
    if resized:
        print(f"image resized to {image.size[0]}x{image.size[1]}, the model's size")
    t0 = time.perf_counter()
    with ddim_sampler(pipe):
        cond = _embed(pipe, prompt)
        traj = ddim_invert(pipe, encode_image(pipe, image, refine_steps), cond, steps)
        uncond, null = None, _null(pipe, cond)
        if method == "null-text":
            uncond = null_text_optimise(pipe, traj, cond, null, steps, guidance, inner_steps)
        elif method == "negative-prompt":  # the prompt itself is the unconditional branch (Miyake et al.)
            uncond, null = [cond.hidden] * steps, cond
    pooled = null.added["text_embeds"] if null.added is not None else None
    kept = traj if method == "direct" else None  # direct: the pipeline's own null text, and the trajectory
    return Inversion(traj[-1], prompt, method, steps, guidance, uncond, time.perf_counter() - t0, image, pooled, kept)


@torch.no_grad()
def reconstruct(pipe, inv: Inversion, output_type: str = "pil"):
    """Samples back from the inversion with its per-step unconditional embeddings (DDIM, same steps).

    output_type="latent" gives the final latent (1, C, h, w), to compare with encode_image(). Direct Inversion's
    source branch follows the trajectory, so its reconstruction is the VAE's round trip of the image."""
    guidance = inv.guidance if inv.guided else 1.0
    with ddim_sampler(pipe):
        images = pipe(inv.prompt, num_inference_steps=inv.steps, guidance_scale=guidance, latents=inv.latent,
                      output_type=output_type, **uncond_kwargs(pipe, inv, 1)).images
    return images if output_type == "latent" else images[0]


def swap_uncond(kwargs: dict, inv: Inversion, step: int, n_prompts: int) -> dict:
    """In a step callback: puts the inversion's unconditional embedding of the next step into prompt_embeds."""
    if inv.uncond is not None and step + 1 < len(inv.uncond):
        cond = kwargs["prompt_embeds"][n_prompts:]
        kwargs["prompt_embeds"] = torch.cat([inv.uncond[step + 1].expand(n_prompts, -1, -1), cond])
    return kwargs


def follow_trajectory(kwargs: dict, inv: Inversion, step: int) -> dict:
    """In a step callback: Direct Inversion's correction (Ju et al. 2024): the source branch (row 0) gets back the
    difference between the inversion's latent at this step and its own, z_src + (z*_t - z_src) = z*_t.

    The reference code measures that difference in a separate guided pass at inversion time; the edit's own
    source branch makes the same step from the same latent, so taking it here gives the same latents without
    that pass (inversion then costs what DDIM inversion costs)."""
    if inv.trajectory is not None:
        latents = kwargs["latents"].clone()  # (n, C, h, w), the source first
        latents[:1] = inv.trajectory[len(inv.trajectory) - 2 - step].to(latents.device, latents.dtype)
        kwargs["latents"] = latents
    return kwargs


def negative_kwargs(inv: Inversion, n_prompts: int) -> dict:
    """The first step's unconditional embeddings as pipeline arguments (SDXL also takes the pooled one)."""
    out = {"negative_prompt_embeds": inv.uncond[0].expand(n_prompts, -1, -1)}
    if inv.uncond_pooled is not None:
        out["negative_pooled_prompt_embeds"] = inv.uncond_pooled.expand(n_prompts, -1)
    return out


def uncond_kwargs(pipe, inv: Inversion, n_prompts: int) -> dict:
    """Pipeline arguments that replay the inversion: its unconditional embedding at every step, or (direct) the
    source branch put back on the trajectory after every step."""
    if inv.trajectory is not None:
        return {"callback_on_step_end": lambda p, step, t, kwargs: follow_trajectory(kwargs, inv, step),
                "callback_on_step_end_tensor_inputs": ["latents"]}
    if inv.uncond is None:
        return {}
    return {**negative_kwargs(inv, n_prompts),
            "callback_on_step_end": lambda p, step, t, kwargs: swap_uncond(kwargs, inv, step, n_prompts),
            "callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds"]}
