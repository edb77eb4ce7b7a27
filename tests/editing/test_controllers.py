"""Tests of conceptlab.editing.controllers."""

import torch
import torch.nn.functional as F


def test_difference_mask_marks_where_the_target_moved_and_keeps_the_source_elsewhere():
    from conceptlab.editing.controllers import DiffBlend

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=g).expand(3, -1, -1, -1).clone()  # (n, C, h, w), all the source
    latents[1, :, 2:5, 3:7] += 2.0  # target 1 changed a 3x4 patch
    latents[2] += 0.01 * torch.randn(4, 16, 16, generator=g)  # target 2 drifted a little everywhere ...
    latents[2, :, 10:14, 10:14] += 3.0  # ... and a lot in one patch
    blend = DiffBlend(threshold=0.5, start=0.0)
    out = blend.apply(latents.clone(), step=0, num_steps=10)
    m = blend.last_mask.bool()[:, 0]  # (n, h, w)
    assert not m[0].any()
    # the 3x3 smoothing keeps the patch's edges above half its peak; the mask grows that by one latent pixel
    patch1, patch2 = torch.zeros(2, 16, 16, dtype=torch.bool)
    patch1[2:5, 3:7], patch2[10:14, 10:14] = True, True
    for k, patch in ((1, patch1), (2, patch2)):
        grown = F.max_pool2d(patch[None].float(), 3, stride=1, padding=1)[0] > 0
        assert m[k][patch].all() and not (m[k] & ~grown).any()
    # outside its mask every target is the source exactly; inside it keeps its own latent
    for k in (1, 2):
        assert torch.equal(out[k][:, ~m[k]], latents[0][:, ~m[k]])
        assert torch.allclose(out[k][:, m[k]], latents[k][:, m[k]], atol=1e-6)
    assert torch.equal(out[0], latents[0])
    # before `start` nothing is blended
    late = DiffBlend(start=0.5)
    assert torch.equal(late.apply(latents.clone(), step=2, num_steps=10), latents) and late.last_mask is None

