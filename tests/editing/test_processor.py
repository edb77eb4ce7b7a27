"""Tests of conceptlab.editing.processor."""

import numpy as np
import pytest
import torch

from conceptlab.editing.controllers import AttentionController
from conceptlab.editing.edit import EditConfig, edit
from conceptlab.editing.processor import controlled
from conceptlab.models.tiny import build_pipeline


class Everything(AttentionController):
    """Asks for explicit attention everywhere and changes nothing."""

    def wants(self, is_cross, place, pixels):
        return True


def _np(pipe, prompts, latents):
    return pipe(prompts, num_inference_steps=3, latents=latents, output_type="np").images


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("tiny")


def test_explicit_attention_equals_diffusers_fused_path(pipe):
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a happy star", "a sad apple"]
    reference = _np(pipe, prompts, latents)
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    with controlled(pipe.unet, Everything(3)):
        ours = _np(pipe, prompts, latents)
    assert np.allclose(ours, reference, atol=1e-5)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before  # restored


def test_unconditional_rows_take_the_fused_path_and_the_controller_sees_the_conditional_ones(pipe):
    class CondOnly(Everything):
        uncond_rows = 2  # 2 prompts under classifier-free guidance: rows 0-1 unconditional

        def __call__(self, probs, is_cross, place):
            self.batches.add(probs.shape[0])
            return probs

    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    prompts = ["a happy star", "a sad apple"]
    reference = _np(pipe, prompts, latents)
    ctrl = CondOnly(3)
    ctrl.batches = set()
    with controlled(pipe.unet, ctrl):
        ours = _np(pipe, prompts, latents)
    assert ctrl.batches == {2}
    assert np.allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
@pytest.mark.parametrize("source,target", [("a sticker of a happy red star", "a sticker of a happy red apple"),
                                           ("a happy star", "a happy zqxwv")])  # 1 token -> several
def test_shared_source_path_equals_explicit_attention(pipe, monkeypatch, source, target, guidance):
    """The fused shared-source path (P_src @ (M @ V_tgt)) gives what explicit probabilities give."""
    from conceptlab.editing.controllers import AttentionEdit

    calls = {"shared": 0}
    real = AttentionEdit.shares_source

    def counting(self, *a):
        used = real(self, *a)
        calls["shared"] += used
        return used

    kw = dict(steps=4, seed=5, cross_steps=0.8, self_steps=0.5, guidance=guidance, mode="replace")
    monkeypatch.setattr(AttentionEdit, "shares_source", counting)
    fused = edit(pipe, source, target, **kw).images
    assert calls["shared"] > 0  # the fused path really ran
    monkeypatch.setattr(AttentionEdit, "shares_source", lambda self, *a: False)
    explicit = edit(pipe, source, target, **kw).images
    for a, b in zip(fused, explicit):
        assert np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max() <= 1  # uint8 rounding


def test_shared_source_path_is_off_where_probabilities_are_needed(pipe):
    from conceptlab.editing.edit import build_controller

    def controller(**kw):
        cfg = EditConfig(source="a sticker of a happy red star", targets=["a sticker of a happy red apple"], steps=10, **kw)
        return build_controller(pipe, cfg, (16, 16))[0]

    assert controller().shares_source(True, "up", 64)
    assert controller().shares_source(False, "up", 64)
    assert not controller(reweight={"apple": 2.0}).shares_source(True, "up", 64)
    assert not controller(mode="refine").shares_source(True, "up", 64)
    partial = controller(cross_steps={"default_": 1.0, "apple": 0.0})  # 'apple' takes its own map from step 0
    assert not partial.shares_source(True, "up", 64)
    late = controller(cross_steps=0.8)
    late.step = 9  # past the window: the layer runs the original processor, not the shared path
    assert not late.wants(True, "up", 64) and not late.shares_source(True, "up", 64)

