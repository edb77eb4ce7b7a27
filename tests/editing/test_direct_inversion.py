"""Direct Inversion (Ju et al. 2024): the source branch follows the DDIM trajectory, checked against the
reference code's own formulation (a separate guided pass measures each step's offset) and on SD 1.x and SDXL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlab.editing import inversion as inv_mod
from conceptlab.editing.edit import edit
from conceptlab.editing.inversion import encode_image, invert, reconstruct, uncond_kwargs
from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline
from conceptlab.world import StickerSpec, render

PROMPT = "a happy emoji"


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def setup(request):
    pipe = build_pipeline("tiny") if request.param == "sd1" else build_sdxl_pipeline()
    image = render(StickerSpec(object="emoji", emotion="happy", seed=1), 32).image
    return pipe, image


def _steps(pipe, steps):
    """The DDIM timesteps, descending, with -1 after the last (the image)."""
    pipe.scheduler.set_timesteps(steps)
    ts = [int(t) for t in pipe.scheduler.timesteps]
    return ts, ts[1:] + [-1]


def test_the_pipelines_source_branch_makes_the_reference_offsets_and_lands_on_the_trajectory(setup):
    """Per step, the pipeline's guided step from the trajectory's latent equals the reference's separate pass
    (z*_{t-1} - offset_t, offset_t = z*_{t-1} - step(z*_t)), and after the correction it is z*_{t-1} itself."""
    pipe, image = setup
    inv = invert(pipe, image, PROMPT, "direct", steps=4, guidance=3.0)
    traj = inv.trajectory
    assert inv.uncond is None and len(traj) == 5 and torch.equal(inv.latent, traj[-1])
    cond = inv_mod._embed(pipe, PROMPT)
    with inv_mod.ddim_sampler(pipe):
        assert all(torch.allclose(a, b, atol=1e-5)
                   for a, b in zip(traj, inv_mod.ddim_invert(pipe, encode_image(pipe, image), cond, 4)))
        ts, nexts = _steps(pipe, 4)
        with torch.no_grad():  # the reference code's offset pass: guided steps from the trajectory, null text
            stepped = [inv_mod._guided_step(pipe, traj[4 - i], t, n, cond, inv_mod._null(pipe, cond), 3.0)
                       for i, (t, n) in enumerate(zip(ts, nexts))]
    before, after = [], []
    kw = uncond_kwargs(pipe, inv, 1)
    correct = kw.pop("callback_on_step_end")

    def record(p, i, t, kwargs):
        before.append(kwargs["latents"].clone())
        kwargs = correct(p, i, t, kwargs)
        after.append(kwargs["latents"].clone())
        return kwargs

    with inv_mod.ddim_sampler(pipe):
        pipe(PROMPT, num_inference_steps=4, guidance_scale=3.0, latents=inv.latent, output_type="latent",
             callback_on_step_end=record, **kw)
    for i in range(4):
        assert torch.allclose(before[i], stepped[i], atol=1e-4), i
        assert torch.equal(after[i], traj[3 - i]), i
    offsets = [(traj[3 - i] - stepped[i]).abs().amax() for i in range(4)]
    assert min(offsets) > 1e-3, offsets  # the correction is real at every step: guided steps leave the trajectory


def test_direct_reconstruction_is_the_vae_round_trip_where_guided_ddim_drifts(setup):
    pipe, image = setup
    direct = invert(pipe, image, PROMPT, "direct", steps=4, guidance=3.0)
    z0 = encode_image(pipe, image)
    assert torch.allclose(reconstruct(pipe, direct, "latent"), z0, atol=1e-5)
    ddim = invert(pipe, image, PROMPT, "ddim", steps=4, guidance=3.0)
    ddim.guidance, ddim.uncond = 3.0, [inv_mod._null(pipe, inv_mod._embed(pipe, PROMPT)).hidden] * 4
    drifted = reconstruct(pipe, ddim, "latent")  # the same start, guided, with no correction
    assert (drifted - z0).abs().amax() > 1e-2


def test_an_edit_from_a_direct_inversion_keeps_the_source_and_changes_the_target(setup):
    pipe, image = setup
    inv = invert(pipe, image, PROMPT, "direct", steps=4, guidance=3.0)
    r = edit(pipe, PROMPT, "a sad emoji", inversion=inv, blend_mask="difference")
    assert r.config.steps == 4 and r.config.guidance == 3.0  # the inversion's own steps and guidance
    source, target = (np.asarray(im, dtype=np.int16) for im in r.images)
    assert np.abs(source - np.asarray(reconstruct(pipe, inv), dtype=np.int16)).max() <= 1
    assert np.abs(source - target).max() > 1 and r.mask is not None
