import pytest
import torch

from conceptlab.editing.edit import edit
from conceptlab.editing.inversion import encode_image, invert, reconstruct
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline
from conceptlab.world import StickerSpec, render


@pytest.fixture(scope="module")
def setup():
    pipe = build_pipeline("tiny")
    image = render(StickerSpec(object="emoji", emotion="happy", seed=1), 32).image
    return pipe, image


def test_pipeline_replays_the_per_step_embeddings_exactly(setup):
    """Sampling through the pipeline (with the step callback) equals our own guided DDIM steps."""
    from conceptlab.editing import inversion as inv_mod

    pipe, image = setup
    inv = invert(pipe, image, "a happy emoji", "null-text", steps=3, guidance=3.0, inner_steps=2)
    cond = inv_mod._embed(pipe, "a happy emoji")
    z = inv.latent
    with torch.no_grad(), inv_mod.ddim_sampler(pipe) as sched:
        sched.set_timesteps(3)
        ts = [int(t) for t in sched.timesteps]
        for i, t in enumerate(ts):
            z = inv_mod._guided_step(pipe, z, t, ts[i + 1] if i + 1 < len(ts) else -1, cond, inv.uncond[i], 3.0)
    assert torch.allclose(reconstruct(pipe, inv, "latent"), z, atol=1e-4)


def test_null_text_optimisation_lowers_each_steps_retrace_error(setup):
    """Along the guided path, every step's own optimised embedding retraces the inversion better than the
    plain null text does from the same latent. (Random tiny weights do not invert well, hence per step.)
    Caught a bug where all steps' embeddings shared storage and ended up equal to the last one."""
    import torch.nn.functional as F

    from conceptlab.editing import inversion as inv_mod

    pipe, image = setup
    inv = invert(pipe, image, "a happy emoji", "null-text", steps=4, guidance=3.0, inner_steps=20)
    cond, null = inv_mod._embed(pipe, "a happy emoji"), inv_mod._embed(pipe, "")
    traj = inv_mod.ddim_invert(pipe, encode_image(pipe, inv.image), cond, 4)
    ts = [int(t) for t in pipe.scheduler.timesteps]
    z = traj[-1]
    with torch.no_grad():
        for i, t in enumerate(ts):
            t_next, target = ts[i + 1] if i + 1 < len(ts) else -1, traj[len(traj) - 2 - i]
            plain, ours = (inv_mod._guided_step(pipe, z, t, t_next, cond, u, 3.0) for u in (null, inv.uncond[i]))
            before, after = F.mse_loss(plain, target), F.mse_loss(ours, target)
            assert after < before, (i, float(after), float(before))
            z = ours
    assert not any(torch.equal(inv.uncond[i], inv.uncond[i + 1]) for i in range(3))


def test_negative_prompt_inversion_and_edit_from_it(setup):
    pipe, image = setup
    inv = invert(pipe, image, "a happy emoji", "negative-prompt", steps=4)
    assert len(inv.uncond) == 4 and torch.equal(inv.uncond[0], inv.uncond[1])
    r = edit(pipe, "a happy emoji", "a sad emoji", inversion=inv)
    assert len(r.images) == 2 and r.config.steps == 4


def test_bad_inversion_input(setup):
    pipe, image = setup
    with pytest.raises(InputError, match="--method"):
        invert(pipe, image, "x", "magic")
    with pytest.raises(InputError, match="--prompt"):
        invert(pipe, image, " ")


def test_other_sizes_are_resized_and_said(setup, capsys):
    pipe, image = setup
    inv = invert(pipe, image.resize((48, 40)), "a happy emoji", "ddim", steps=2)
    assert inv.image.size == (32, 32) and "resized to 32x32" in capsys.readouterr().out


def test_latent_refinement_decodes_closer_than_the_encoder(setup):
    """Refining the latent against the decoder lowers |decode(z) - x| below the encoder's own guess; 0 steps
    is exactly the encoder's mean; the decoder's weights are untouched and keep their requires_grad."""
    import torch.nn.functional as F

    from conceptlab.editing.inversion import _pixels

    pipe, image = setup
    x, scale = _pixels(pipe, image), pipe.vae.config.scaling_factor
    before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    plain, refined = encode_image(pipe, image), encode_image(pipe, image, refine_steps=40)
    with torch.no_grad():
        mean = pipe.vae.encode(x).latent_dist.mean * scale
        err = [F.mse_loss(pipe.vae.decode(z / scale).sample, x).item() for z in (plain, refined)]
    assert torch.equal(plain, mean)
    assert err[1] < 0.9 * err[0], err
    assert all(torch.equal(v, pipe.vae.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in pipe.vae.parameters())


def test_refine_steps_must_not_be_negative(setup):
    pipe, image = setup
    with pytest.raises(InputError, match="--refine-steps"):
        invert(pipe, image, "a happy emoji", "ddim", steps=2, refine_steps=-1)


def test_invert_and_reconstruct_leave_the_callers_scheduler(setup):
    """Inversion samples with DDIM inside and puts the pipeline's own scheduler back (it used to keep DDIM)."""
    from diffusers import EulerDiscreteScheduler

    pipe, image = setup
    own = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler = own
    try:
        inv = invert(pipe, image, "a sticker of a happy star", "ddim", steps=3)
        assert pipe.scheduler is own
        reconstruct(pipe, inv)
        edit(pipe, "a sticker of a happy star", "a sticker of a sad star", inversion=inv)
        assert pipe.scheduler is own
    finally:
        from diffusers import DDIMScheduler

        pipe.scheduler = DDIMScheduler.from_config(own.config)
