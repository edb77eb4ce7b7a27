"""denoising_loss against the formula computed by hand, and the face-weighted loss of the base model."""

import pytest
import torch

from conceptlab.models.tiny import build_pipeline
from conceptlab.training.diffusion import denoising_loss, training_scheduler


@pytest.fixture(scope="module")
def parts():
    pipe = build_pipeline("tiny")
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(3, 77, pipe.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(1))
    return pipe.unet, training_scheduler(pipe), latents, cond


def _by_hand(unet, sched, latents, cond, seed, weight):
    """The same draws in the same order (noise, then timesteps), then a weighted mean of squared errors."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=g)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    with torch.no_grad():
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
    return ((pred - noise) ** 2 * weight).mean()


def test_pixel_weight_is_a_weighted_mean_of_the_squared_error(parts):
    unet, sched, latents, cond = parts
    weight = torch.ones(3, 1, 8, 8)
    weight[:, :, 2:5, 3:6] = 5.0
    with torch.no_grad():
        plain = denoising_loss(unet, sched, latents, cond, torch.Generator().manual_seed(7))
        ones = denoising_loss(unet, sched, latents, cond, torch.Generator().manual_seed(7), pixel_weight=torch.ones(3, 1, 8, 8))
        weighted = denoising_loss(unet, sched, latents, cond, torch.Generator().manual_seed(7), pixel_weight=weight)
    assert torch.allclose(plain, ones)
    assert torch.allclose(plain, _by_hand(unet, sched, latents, cond, 7, 1.0), rtol=1e-5)
    assert torch.allclose(weighted, _by_hand(unet, sched, latents, cond, 7, weight), rtol=1e-5)
    assert not torch.allclose(weighted, plain)


def test_face_weights_cover_each_face_at_latent_resolution():
    from conceptlab.training.base_model import face_weights
    from conceptlab.world import StickerSpec, face_box

    specs = [StickerSpec(object="emoji", emotion="happy", seed=3), StickerSpec(object="cat", emotion="none", seed=4)]
    w = face_weights(specs, image_size=64, latent_size=16, extra=4.0)  # (2, 1, 16, 16)
    assert w.shape == (2, 1, 16, 16)
    assert torch.equal(w[1], torch.ones(1, 16, 16))  # no face, no extra weight
    x0, y0, x1, y1 = face_box(specs[0], 64)
    cx, cy = (x0 + x1) // 8, (y0 + y1) // 8  # the face's centre in latent pixels
    assert w[0, 0, cy, cx] == 5.0 and w[0, 0, 0, 0] == 1.0
    assert set(w.unique().tolist()) == {1.0, 5.0}


def test_timestep_weights_follow_diffusers_rule_computed_another_way():
    from conceptlab.training.diffusion import TimestepBias, timestep_weights

    assert timestep_weights(TimestepBias(), 1000) is None  # none: the even draw, torch.randint as before
    w = timestep_weights(TimestepBias("earlier", multiplier=3.0, portion=0.25), 1000)
    # 250 low-noise timesteps at weight 3 against 750 at weight 1: each favoured one 3 / 1500, the rest 1 / 1500
    assert torch.allclose(w[:250], torch.full((250,), 3 / 1500)) and torch.allclose(w[250:], torch.full((750,), 1 / 1500))
    late = timestep_weights(TimestepBias("later", multiplier=3.0, portion=0.25), 1000)
    assert torch.equal(late, w.flip(0))
    r = timestep_weights(TimestepBias("range", multiplier=5.0, begin=100, end=300), 1000)
    assert torch.allclose(r.sum(), torch.tensor(1.0)) and r[99] * 5 == r[100] and r[299] == r[300] * 5


def test_biased_timesteps_reach_the_unet(parts):
    from conceptlab.training.diffusion import TimestepBias, timestep_weights

    unet, sched, latents, cond = parts
    seen = []
    hook = unet.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    g = torch.Generator().manual_seed(0)
    w = timestep_weights(TimestepBias("range", multiplier=100.0, begin=0, end=50), 1000)
    with torch.no_grad():
        for _ in range(40):
            denoising_loss(unet, sched, latents, cond, g, t_weights=w)
        biased = torch.cat(seen)
        seen.clear()
        for _ in range(40):
            denoising_loss(unet, sched, latents, cond, g)
    hook.remove()
    # 50 timesteps at weight 100 against 950 at 1: 84% of the draws fall below 50 (5% when drawn evenly)
    assert (biased < 50).float().mean() > 0.7
    assert (torch.cat(seen) < 50).float().mean() < 0.2


def test_bad_timestep_bias_names_the_flag():
    from conceptlab.errors import InputError
    from conceptlab.training.diffusion import TimestepBias, check_timestep_bias

    for bias, flag in ((TimestepBias("lower"), "--timestep-bias"),
                       (TimestepBias("earlier", multiplier=0), "--timestep-bias-multiplier"),
                       (TimestepBias("earlier", portion=1.5), "--timestep-bias-portion"),
                       (TimestepBias("range", begin=500, end=200), "--timestep-bias-range"),
                       (TimestepBias("none", portion=0.5), "--timestep-bias")):
        with pytest.raises(InputError) as e:
            check_timestep_bias(bias)
        assert flag in str(e.value)
    check_timestep_bias(TimestepBias("range", begin=0, end=250))
