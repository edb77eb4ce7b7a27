"""The denoising loss every personalization method shares (epsilon or v-prediction, offset noise, min-SNR,
timesteps drawn evenly or with a bias)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from conceptlab.errors import InputError

TIMESTEP_BIASES = ("none", "earlier", "later", "range")


@dataclass
class TimestepBias:
    """`--timestep-bias`: draw training timesteps unevenly, as diffusers' SDXL scripts' --timestep_bias_strategy.

    "earlier" favours the low-noise timesteps (small t: fine detail such as a face's marks), "later" the noisy ones
    (large t: layout and colour), "range" the timesteps begin..end-1. Favoured timesteps are drawn `multiplier`
    times as often as the rest. "none" draws every timestep equally, as before the option existed."""

    strategy: str = "none"
    multiplier: float = 2.0
    portion: float = 0.25  # earlier/later: the share of the timesteps favoured
    begin: int = 0  # range: the first favoured timestep
    end: int = 1000  # range: one past the last


def check_timestep_bias(bias: TimestepBias, num_timesteps: int = 1000) -> None:
    """Raises InputError for an unknown strategy, a bound out of range, or a setting the strategy ignores."""
    from conceptlab.validation import TIMESTEP_MULTIPLIER, TIMESTEP_PORTION

    if bias.strategy not in TIMESTEP_BIASES:
        raise InputError("--timestep-bias", bias.strategy, "is not a known strategy", f"Use one of {', '.join(TIMESTEP_BIASES)}")
    TIMESTEP_MULTIPLIER.check("--timestep-bias-multiplier", bias.multiplier)
    TIMESTEP_PORTION.check("--timestep-bias-portion", bias.portion)
    if bias.strategy == "range" and not 0 <= bias.begin < bias.end <= num_timesteps:
        raise InputError("--timestep-bias-range", [bias.begin, bias.end], f"must satisfy 0 <= BEGIN < END <= {num_timesteps}",
                         f"e.g. --timestep-bias-range 0 {num_timesteps // 4} for the least noisy quarter")
    default = TimestepBias()
    if bias.strategy == "none" and (bias.multiplier, bias.portion, bias.begin, bias.end) != (
            default.multiplier, default.portion, default.begin, default.end):
        raise InputError("--timestep-bias", "none", "its multiplier, portion or range has no effect without a strategy",
                         "Add --timestep-bias earlier|later|range, or drop the other --timestep-bias-* settings")


def timestep_weights(bias: TimestepBias, num_timesteps: int) -> torch.Tensor | None:
    """(num_timesteps,) sampling weights of `bias` (1 for each timestep, `multiplier` for the favoured), or None for
    an even draw; the rule of diffusers' generate_timestep_weights."""
    if bias.strategy == "none":
        return None
    weights = torch.ones(num_timesteps)
    favoured = max(1, int(round(bias.portion * num_timesteps)))
    part = {"earlier": slice(0, favoured), "later": slice(num_timesteps - favoured, num_timesteps),
            "range": slice(bias.begin, min(bias.end, num_timesteps))}[bias.strategy]
    weights[part] *= bias.multiplier
    return weights / weights.sum()


def denoising_loss(unet, scheduler, latents: torch.Tensor, cond: torch.Tensor, generator: torch.Generator,
                   offset_noise: float = 0.0, min_snr_gamma: float | None = None,
                   reduction: str = "mean", pixel_weight: torch.Tensor | None = None,
                   added_cond_kwargs: dict | None = None,
                   t_weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the UNet's prediction and its target at a random timestep (Ho et al. 2020, eq. 14).

    latents (B, C, h, w) are already scaled; cond (B, T, D) are the text encoder's hidden states.
    `offset_noise` adds a per-channel constant to the noise (Guttenberg 2023); `min_snr_gamma` weights
    timesteps by min(SNR, gamma) / SNR (Hang et al. 2023, arXiv 2303.09556). `pixel_weight` (B, 1, h, w)
    scales each latent pixel's error before the mean (a masked or region-weighted loss; ones = plain MSE).
    reduction="none" gives (B,). `added_cond_kwargs` is SDXL's pooled text embedding and time ids.
    `t_weights` (num_timesteps,) draws the timesteps with these probabilities (timestep_weights) instead of evenly.
    """
    # Random numbers come from the CPU generator (the same draws on every device, and the generator's state
    # is what checkpoints save); everything then moves to the UNet's device. Latents stay float32 for the
    # noising and target; the UNet gets its own dtype.
    device, dtype = unet.device, unet.dtype
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    if offset_noise:
        noise = noise + offset_noise * torch.randn(b, latents.shape[1], 1, 1, generator=generator)
    if t_weights is None:
        t_cpu = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    else:
        t_cpu = torch.multinomial(t_weights, b, replacement=True, generator=generator)
    latents, noise, t = latents.to(device, torch.float32), noise.to(device), t_cpu.to(device)
    noisy = scheduler.add_noise(latents, noise, t)
    extra = {"added_cond_kwargs": added_cond_kwargs} if added_cond_kwargs is not None else {}
    pred = unet(noisy.to(dtype), t, encoder_hidden_states=cond.to(dtype), **extra).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    err = F.mse_loss(pred.float(), target.float(), reduction="none")  # (B, C, h, w)
    if pixel_weight is not None:
        err = err * pixel_weight.to(err.device)
    per_sample = err.mean(dim=(1, 2, 3))  # (B,)
    if min_snr_gamma:
        alphas = scheduler.alphas_cumprod[t_cpu].to(device)
        snr = alphas / (1 - alphas)
        weight = torch.clamp(snr, max=min_snr_gamma) / snr
        if scheduler.config.prediction_type == "v_prediction":
            weight = torch.clamp(snr, max=min_snr_gamma) / (snr + 1)
        per_sample = per_sample * weight
    return per_sample if reduction == "none" else per_sample.mean()


def training_scheduler(pipe):
    """A DDPM scheduler with the pipeline's noise schedule and prediction type, for adding noise."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)
