"""The autoencoder's ceiling: how much of what the judge reads survives a VAE encode-decode round trip.

A latent diffusion model can draw no finer detail than its decoder reproduces from a clean latent, so the
judge's accuracy on round-tripped renders bounds what any fine-tune of the UNet (textual inversion,
DreamBooth) can reach on the same pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from conceptlab.world.attributes import INDIVIDUALS, StickerSpec
from conceptlab.world.render import render

EMOTIONS = ("happy", "sad", "angry", "in love")
SCENES = ("plain", "beach", "snowy mountain", "jungle", "desert")


@dataclass
class RoundTripGroup:
    """A named set of renders and the attribute the judge must read on it ("individual", "emotion", ...)."""

    name: str
    specs: list[StickerSpec]
    attribute: str


def subject_group(ident: str, seeds: int = 3, emotions=EMOTIONS, scenes=SCENES) -> RoundTripGroup:
    """Renders of the named monster `ident` in every emotion x scene x seed, judged for the individual."""
    look, colour = INDIVIDUALS[ident]
    specs = [StickerSpec(object="monster", individual=ident, monster=look, colour=colour, emotion=e, background=b,
                         seed=s) for e in emotions for b in scenes for s in range(seeds)]
    return RoundTripGroup(ident, specs, "individual")


def standard_groups(seeds: int = 3, subjects: tuple[str, ...] = ("tuki", "bnh")) -> list[RoundTripGroup]:
    """The DreamBooth proof's subjects in its emotions and scenes, and faced green broccoli stickers (TI proof)."""
    groups = [subject_group(ind, seeds) for ind in subjects]
    broccoli = [StickerSpec(object="broccoli", colour="green", emotion=e, seed=s)
                for e in EMOTIONS for s in range(5 * seeds)]
    return groups + [RoundTripGroup("broccoli emotion", broccoli, "emotion")]


@torch.no_grad()
def round_trip(vae, images: list[Image.Image], batch: int = 32) -> list[Image.Image]:
    """Each image encoded to its posterior mean and decoded again."""
    from diffusers.image_processor import VaeImageProcessor

    processor, out = VaeImageProcessor(do_resize=False), []
    for i in range(0, len(images), batch):
        x = processor.preprocess(images[i:i + batch]).to(vae.device, vae.dtype)  # (B, 3, H, W) in [-1, 1]
        out += processor.postprocess(vae.decode(vae.encode(x).latent_dist.mean).sample.float(), output_type="pil")
    return out


@dataclass
class JudgedRoundTrips:
    """Distinct renders, their autoencoder round trips, and the judge's readings of both."""

    specs: list[StickerSpec]
    round_trips: list[Image.Image]
    preds: dict[str, dict[str, list[str]]]  # "render" / "round_trip" -> the judge's predictions, head by head

    def accuracy(self, group: RoundTripGroup) -> dict[str, float]:
        """{"render": accuracy on the group's renders, "round_trip": after the VAE}, for the group's attribute."""
        at = {s: k for k, s in enumerate(self.specs)}
        truth = [str(getattr(s, group.attribute)) for s in group.specs]
        return {name: float(np.mean([pred[group.attribute][at[s]] == t for s, t in zip(group.specs, truth)]))
                for name, pred in self.preds.items()}

    def of(self, specs: list[StickerSpec], head: str | None = None) -> list:
        """The round trips of `specs` (or, with `head`, the judge's reading of them on that head), in order."""
        at = {s: k for k, s in enumerate(self.specs)}
        return [self.round_trips[at[s]] if head is None else self.preds["round_trip"][head][at[s]] for s in specs]


def judge_round_trips(vae, judge, groups: list[RoundTripGroup], size: int = 64) -> JudgedRoundTrips:
    """Each distinct spec of `groups` rendered, round-tripped and judged once (groups may share renders: a
    subject's, sliced by emotion or scene)."""
    specs = list(dict.fromkeys(s for g in groups for s in g.specs))  # distinct, in order
    renders = [render(s, size).image.convert("RGB") for s in specs]
    trips = round_trip(vae, renders)
    return JudgedRoundTrips(specs, trips, {"render": judge.predict(renders), "round_trip": judge.predict(trips)})


def vae_ceiling(vae, judge, groups: list[RoundTripGroup] | None = None, size: int = 64) -> dict[str, dict[str, float]]:
    """{group: {"render": accuracy on the renders, "round_trip": accuracy after the VAE}} for each group, each
    distinct spec rendered, round-tripped and judged once."""
    groups = groups or standard_groups()
    judged = judge_round_trips(vae, judge, groups, size)
    return {g.name: judged.accuracy(g) for g in groups}
