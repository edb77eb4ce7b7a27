"""diffusers' LEDITS++ pipeline as the reference for our word swaps on inverted images (scripts/ledits_proof.py).

LEDITS++ (Brack et al., CVPR 2024, "LEDITS++: Limitless Image Editing using Text-to-Image Models"): edit-friendly
DDPM inversion, then semantic guidance towards the new word (and away from the old one), masked by the
intersection of the words' cross-attention and the guidance's own largest values. Run here as diffusers ships it,
built from our loaded pipeline's components, on the same cases as edit_benchmarks.real_swap_benchmark and scored
by the same measure (edit_benchmarks.score_real_edit).
"""

from __future__ import annotations

from dataclasses import dataclass

from conceptlab.errors import InputError


@dataclass
class LeditsConfig:
    """LEDITS++'s settings for a word swap (diffusers' defaults except the swap's reverse prompt)."""

    steps: int = 30  # num_inversion_steps, after the skipped ones
    skip: float = 0.15  # share of the first steps left out of inversion and edit
    source_guidance: float = 3.5  # guidance of the source prompt during inversion
    invert_with_prompt: bool = True  # False: invert unguided, as diffusers' docs example does (exact redraw)
    edit_guidance: float = 5.0  # s_e of the paper's eq. 12, per editing prompt
    threshold: float = 0.9  # λ of eq. 12: the share of latent pixels the guidance is masked away from
    reverse_old: bool = True  # also guide away from the old word (how the LEDITS++ paper swaps objects)
    intersect_mask: bool = True  # diffusers' use_intersect_mask: cross-attention mask ∩ guidance quantile


def ledits_unsupported(pipe) -> str | None:
    """Why diffusers' LEDITS++ pipeline cannot edit with `pipe`'s model, or None when it can.

    diffusers 0.42's pipeline masks with `.repeat(1, 4, 1, 1)` (SD's 4 latent channels) and stores cross-attention
    maps of at most (latent side / 4)² positions, so the UNet must attend to the prompt at that resolution."""
    channels = pipe.unet.config.in_channels
    if channels != 4:
        return f"its latents have {channels} channels and diffusers' LEDITS++ masks assume Stable Diffusion's 4"
    down = pipe.unet.config.down_block_types
    attended = [2 ** i for i, kind in enumerate(down) if "CrossAttn" in kind]  # downsampling factors with attention
    if 4 not in attended:
        return (f"its UNet attends to the prompt only at 1/{attended} of the latent's side, and LEDITS++'s "
                "cross-attention mask reads the maps at 1/4")
    return None


def ledits_pipeline(pipe):
    """diffusers' LEditsPPPipelineStableDiffusion on `pipe`'s modules, with its own SDE-DPM-Solver++ scheduler
    (the one its docs use; our pipeline's scheduler is left as it was)."""
    from diffusers import DPMSolverMultistepScheduler, LEditsPPPipelineStableDiffusion

    parts = {k: pipe.components[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "safety_checker",
                                             "feature_extractor")}
    scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="sde-dpmsolver++",
                                                        solver_order=2)
    lpipe = LEditsPPPipelineStableDiffusion(**parts, scheduler=scheduler, requires_safety_checker=False)
    lpipe.set_progress_bar_config(disable=True)
    return lpipe


def ledits_swap(lpipe, image, source: str, old: str | None, new: str | None, cfg: LeditsConfig, seed: int = 0):
    """(edited image, the image LEDITS++'s inversion reconstructs) for `old` -> `new` in `image` described by `source`.

    `new` None: the reconstruction only (no edit guidance). The UNet's attention processors are put back after,
    since LEDITS++ sets its own on the UNet it shares with our pipeline."""
    import torch

    saved = lpipe.unet.attn_processors
    try:
        gen = torch.Generator().manual_seed(seed)
        lpipe.invert(image, source_prompt=source if cfg.invert_with_prompt else "", source_guidance_scale=cfg.source_guidance,
                     num_inversion_steps=cfg.steps, skip=cfg.skip, generator=gen)
        recon = lpipe(editing_prompt=None, generator=torch.Generator().manual_seed(seed)).images[0]
        if new is None:
            return None, recon
        words, reverse = [new], [False]
        if cfg.reverse_old and old:
            words, reverse = [new, old], [False, True]
        edited = lpipe(editing_prompt=words, reverse_editing_direction=reverse, edit_guidance_scale=cfg.edit_guidance,
                       edit_threshold=cfg.threshold, use_intersect_mask=cfg.intersect_mask,
                       generator=torch.Generator().manual_seed(seed)).images[0]
        return edited, recon
    finally:
        lpipe.unet.set_attn_processor(saved)


def compare_swaps(pipe, judge, cases: list, cfg: LeditsConfig, blend: str = "difference", seed: int = 0) -> list[dict]:
    """One row per case of edit_benchmarks.real_swap_cases: our negative-prompt inversion + P2P swap and LEDITS++'s,
    each scored by edit_benchmarks.score_real_edit against the input picture (and ours against its reconstruction,
    the edit proof's number). LEDITS++ only reconstructs when ledits_unsupported(pipe) says why it cannot edit."""
    import time

    from conceptlab.editing.edit import edit
    from conceptlab.editing.inversion import invert
    from conceptlab.evaluation.recipes.edit_benchmarks import blend_settings, score_real_edit

    check_config(cfg)
    why, lpipe, rows = ledits_unsupported(pipe), ledits_pipeline(pipe), []
    for head, src, tgt, a, b, r in cases:
        t0 = time.perf_counter()
        inv = invert(pipe, r.image, src, method="negative-prompt")
        res = edit(pipe, src, tgt, inversion=inv, **blend_settings(blend, a, b))
        t1 = time.perf_counter()
        edited, recon = ledits_swap(lpipe, r.image, src, a, None if why else b, cfg, seed)
        t2 = time.perf_counter()
        row = {"kind": head, "source": src, "target": tgt, "ours_seconds": t1 - t0, "ledits_seconds": t2 - t1,
               "ours": score_real_edit(judge, head, b, r.image, res.images[1], r.bbox),
               "ours_vs_reconstruction": score_real_edit(judge, head, b, res.images[0], res.images[1], r.bbox),
               "ours_reconstruction": score_real_edit(judge, head, a, r.image, res.images[0], r.bbox),
               "ledits_reconstruction": score_real_edit(judge, head, a, r.image, recon, r.bbox)}
        if edited is not None:
            row["ledits"] = score_real_edit(judge, head, b, r.image, edited, r.bbox)
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Means per scored image kind: judged share ("new": the asked word; reconstructions: the source's word)
    and PSNR outside the box (capped at 60 dB), with the number of cases."""
    import numpy as np

    from conceptlab.evaluation.recipes.editing import PSNR_CAP

    out = {"n": len(rows)}
    for key in ("ours", "ours_vs_reconstruction", "ours_reconstruction", "ledits", "ledits_reconstruction"):
        got = [r[key] for r in rows if key in r]
        if got:
            out[key] = {"judged": float(np.mean([g["new"] for g in got])),
                        "psnr_out": float(np.mean([min(g["psnr_out"], PSNR_CAP) for g in got])), "n": len(got)}
    for key in ("ours_seconds", "ledits_seconds"):
        out[key] = float(np.mean([r[key] for r in rows])) if rows else None
    return out


def check_config(cfg: LeditsConfig) -> None:
    """InputError for settings LEDITS++ would reject or misread."""
    if not 0 <= cfg.skip < 1:
        raise InputError("skip", cfg.skip, "must be in [0, 1)", "Use e.g. 0.15 (diffusers' default)")
    if not 0 < cfg.threshold < 1:
        raise InputError("threshold", cfg.threshold, "must be in (0, 1)", "Use e.g. 0.9 (diffusers' default)")
    if cfg.steps < 1:
        raise InputError("steps", cfg.steps, "must be at least 1", "Use e.g. 30")
