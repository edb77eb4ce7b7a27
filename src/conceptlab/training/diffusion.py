"""The denoising loss every personalization method shares (epsilon or v-prediction, offset noise, min-SNR)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def denoising_loss(unet, scheduler, latents: torch.Tensor, cond: torch.Tensor, generator: torch.Generator,
                   offset_noise: float = 0.0, min_snr_gamma: float | None = None,
                   reduction: str = "mean", pixel_weight: torch.Tensor | None = None,
                   added_cond_kwargs: dict | None = None) -> torch.Tensor:
    """MSE between the UNet's prediction and its target at a random timestep (Ho et al. 2020, eq. 14).

    latents (B, C, h, w) are already scaled; cond (B, T, D) are the text encoder's hidden states.
    `offset_noise` adds a per-channel constant to the noise (Guttenberg 2023); `min_snr_gamma` weights
    timesteps by min(SNR, gamma) / SNR (Hang et al. 2023, arXiv 2303.09556). `pixel_weight` (B, 1, h, w)
    scales each latent pixel's error before the mean (a masked or region-weighted loss; ones = plain MSE).
    reduction="none" gives (B,). `added_cond_kwargs` is SDXL's pooled text embedding and time ids.
    """
    # Random numbers come from the CPU generator (the same draws on every device, and the generator's state
    # is what checkpoints save); everything then moves to the UNet's device. Latents stay float32 for the
    # noising and target; the UNet gets its own dtype.
    device, dtype = unet.device, unet.dtype
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    if offset_noise:
        noise = noise + offset_noise * torch.randn(b, latents.shape[1], 1, 1, generator=generator)
    t_cpu = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
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
