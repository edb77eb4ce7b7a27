"""Sampler names users know, mapped to diffusers schedulers built from the pipeline's own config."""

from __future__ import annotations

import diffusers

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def make_scheduler(name: str, config):
    """A scheduler of kind `name` with the noise schedule and prediction type of `config`."""
    from conceptlab.errors import InputError

    if name not in SCHEDULERS:
        raise InputError("--scheduler", name, "unknown scheduler", f"Use one of {sorted(SCHEDULERS)}")
    extra = {"skip_prk_steps": True} if name == "pndm" else {}  # as SD ships it; PRK steps need many steps
    return getattr(diffusers, SCHEDULERS[name]).from_config(config, **extra)


def set_scheduler(pipe, name: str) -> None:
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)


def scheduler_name(pipe) -> str:
    cls = type(pipe.scheduler).__name__
    return next((k for k, v in SCHEDULERS.items() if v == cls), cls)
