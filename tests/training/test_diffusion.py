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
