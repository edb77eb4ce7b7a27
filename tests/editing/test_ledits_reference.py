"""diffusers' LEDITS++ as the reference for real-image word swaps: built from our components, scored by our measure."""

from __future__ import annotations

import pytest
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.evaluation.recipes import edit_benchmarks, ledits
from conceptlab.models.tiny import build_pipeline


def sd_shaped():
    """A tiny pipeline shaped like SD for LEDITS++: 4 latent channels, the prompt attended at 1/4 of the latent."""
    return build_pipeline("tiny", unet_channels=(32, 32, 32, 32))


def test_runner_builds_ledits_from_our_components_and_edits():
    pipe = sd_shaped()
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    lpipe = ledits.ledits_pipeline(pipe)
    assert type(lpipe).__name__ == "LEditsPPPipelineStableDiffusion"
    assert lpipe.unet is pipe.unet and lpipe.vae is pipe.vae and lpipe.text_encoder is pipe.text_encoder
    assert type(lpipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.scheduler is not lpipe.scheduler  # ours stays DDIM with its own config
    assert ledits.ledits_unsupported(pipe) is None
    image = Image.new("RGB", (32, 32), (200, 40, 40))
    cfg = ledits.LeditsConfig(steps=3)
    edited, recon = ledits.ledits_swap(lpipe, image, "a sticker of a red star", "star", "apple", cfg)
    assert edited.size == recon.size == (32, 32)
    assert edited.tobytes() != recon.tobytes()  # the edit guidance changed something
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before  # LEDITS++'s processors removed


def test_the_shipped_models_shape_is_refused_with_the_reason():
    why = ledits.ledits_unsupported(build_pipeline("tiny", latent_channels=8, unet_channels=(32, 32, 32, 32)))
    assert why is not None and "8 channels" in why
    why = ledits.ledits_unsupported(build_pipeline("tiny"))  # prompt attended at 1/1 and 1/2 only
    assert why is not None and "1/4" in why


def test_bad_config_names_the_setting():
    with pytest.raises(InputError, match="threshold"):
        ledits.check_config(ledits.LeditsConfig(threshold=1.5))


class _Judge:
    def predict(self, images):
        return {"object": ["apple"] * len(images)}


def test_the_measure_is_the_edit_proofs(monkeypatch):
    """compare_swaps scores through edit_benchmarks.score_real_edit, the function real_swap_benchmark uses."""
    calls = []
    real = edit_benchmarks.score_real_edit

    def spy(*args, **kwargs):
        calls.append(args[:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(edit_benchmarks, "score_real_edit", spy)  # our module, not diffusers
    pipe = build_pipeline("tiny")
    pipe.set_progress_bar_config(disable=True)
    cases = edit_benchmarks.real_swap_cases(1, 32)
    rows = ledits.compare_swaps(pipe, _Judge(), cases, ledits.LeditsConfig(steps=2))
    assert len(calls) == 4 and "ledits" not in rows[0]  # tiny's shape cannot edit: reconstruction only
    assert rows[0]["ours"]["new"] == (cases[0][4] == "apple")
    ref = real(_Judge(), "object", cases[0][4], cases[0][5].image, cases[0][5].image, cases[0][5].bbox)
    assert ref["psnr_out"] == float("inf") and 0 < ref["outside_share"] < 1


def test_real_swap_cases_are_the_proofs_cases():
    cases = edit_benchmarks.real_swap_cases(3, 32)
    first = edit_benchmarks.swap_cases(__import__("random").Random(3), 3)
    assert [c[:5] for c in cases] == [c[:5] for c in first]
    assert cases[0][5].image.size == (32, 32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # one case: the held-item means are over no rows
def test_the_edit_proofs_real_swaps_score_through_the_same_function(monkeypatch, tmp_path):
    calls = []
    real = edit_benchmarks.score_real_edit
    monkeypatch.setattr(edit_benchmarks, "score_real_edit", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    pipe = build_pipeline("tiny")
    pipe.set_progress_bar_config(disable=True)
    out = edit_benchmarks.real_swap_benchmark(pipe, _Judge(), 1, tmp_path)
    new = edit_benchmarks.real_swap_cases(1, 32)[0][4]
    assert calls == [new, new]  # the edit and the regenerated target, both through score_real_edit
    assert out["rows"][0]["p2p_new"] == (new == "apple")
