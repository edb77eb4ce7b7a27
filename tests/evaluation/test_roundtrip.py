"""The VAE-ceiling measurement: a perfect autoencoder keeps the judge's render accuracy, a lossy one lowers it."""

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from conceptlab.evaluation.judge import load_judge
from conceptlab.evaluation.roundtrip import round_trip, standard_groups, vae_ceiling
from conceptlab.world.render import render


class _FakeVAE(torch.nn.Module):
    """encode/decode with diffusers' call shapes; `factor` > 1 keeps only a block-averaged image."""

    def __init__(self, factor: int = 1):
        super().__init__()
        self.factor, self.anchor = factor, torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=F.avg_pool2d(x, self.factor) if self.factor > 1 else x))

    def decode(self, z):
        return SimpleNamespace(sample=F.interpolate(z, scale_factor=self.factor) if self.factor > 1 else z)


def test_a_lossless_round_trip_returns_the_pixels_and_keeps_the_render_accuracy():
    groups = standard_groups(seeds=1)
    images = [render(s).image.convert("RGB") for s in groups[0].specs[:4]]
    for a, b in zip(images, round_trip(_FakeVAE(), images)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    scores = vae_ceiling(_FakeVAE(), load_judge(), groups)
    assert set(scores) == {"tuki", "bnh", "broccoli emotion"}
    for row in scores.values():
        assert row["round_trip"] == row["render"] and row["render"] > 0.9


def test_a_coarse_autoencoder_loses_the_marks_that_tell_the_subjects_apart():
    groups = standard_groups(seeds=1)[:2]
    scores = vae_ceiling(_FakeVAE(factor=16), load_judge(), groups)  # a 4x4 image left
    assert all(row["round_trip"] < row["render"] - 0.5 for row in scores.values()), scores


def test_groups_sharing_renders_round_trip_each_spec_once_and_keep_the_images():
    from conceptlab.evaluation.roundtrip import RoundTripGroup, judge_round_trips

    tuki = standard_groups(seeds=1)[0]
    happy = RoundTripGroup("tuki/happy", [s for s in tuki.specs if s.emotion == "happy"], "emotion")
    calls = []

    class _Counting(_FakeVAE):
        def encode(self, x):
            calls.append(x.shape[0])
            return super().encode(x)

    judge = load_judge()
    judged = judge_round_trips(_Counting(), judge, [tuki, happy])
    assert sum(calls) == len(tuki.specs) == len(judged.specs)  # the happy slice is not rendered again
    kept = judged.of(happy.specs)
    alone = round_trip(_FakeVAE(), [render(s).image.convert("RGB") for s in happy.specs])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(kept, alone))
    assert judged.of(happy.specs, "emotion") == list(judge.predict(alone)["emotion"])
    assert judged.accuracy(happy) == vae_ceiling(_FakeVAE(), judge, [happy])["tuki/happy"]
