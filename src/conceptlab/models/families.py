"""Model families: what differs between SD 1.x, SD 2.x and SDXL lives here, once.

Training, concepts, editing and generation ask a pipeline's family (`family_of(pipe)`) for its text encoders,
how a prompt becomes the UNet's conditioning, which modules LoRA targets and its native size, instead of
branching on the model themselves. docs/concepts/model-families.md says what an SD3/Flux family would need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from conceptlab.errors import InputError


@dataclass(frozen=True)
class TextSlot:
    """One text encoder and its tokenizer, by attribute name, with the key its embeddings use in files."""

    key: str  # "clip_l" / "clip_g": the keys of A1111/ComfyUI SDXL embedding files
    tokenizer: str  # pipeline attribute, e.g. "tokenizer_2"
    encoder: str  # pipeline attribute, e.g. "text_encoder_2"

    def parts(self, pipe):
        return getattr(pipe, self.tokenizer), getattr(pipe, self.encoder)

    def width(self, pipe) -> int:
        return getattr(pipe, self.encoder).get_input_embeddings().embedding_dim


class SizeConditioning(NamedTuple):
    """One image's SDXL size conditioning (Podell et al. 2023, arXiv 2307.01952, sec. 2.2), each (h, w) pixels."""

    original_size: tuple[int, int]  # the image as loaded, before resizing
    crop_top_left: tuple[int, int]  # (top, left) of the crop in the resized image
    target_size: tuple[int, int]  # the size trained at


@dataclass
class Conditioning:
    """What the UNet is conditioned on: hidden states (B, T, D) and, for SDXL, added_cond_kwargs."""

    hidden: torch.Tensor
    added: dict | None = None

    def unet_kwargs(self) -> dict:
        return {"encoder_hidden_states": self.hidden,
                **({"added_cond_kwargs": self.added} if self.added is not None else {})}

    def rows(self, start: int, stop: int | None = None) -> Conditioning:
        """The conditioning of rows start..stop of the batch."""
        added = None if self.added is None else {k: v[start:stop] for k, v in self.added.items()}
        return Conditioning(self.hidden[start:stop], added)


@dataclass(frozen=True)
class ModelFamily:
    """One family's facts; `encode` turns prompts into the UNet's conditioning."""

    name: str
    slots: tuple[TextSlot, ...]
    lora_unet_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    lora_text_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")

    def native_size(self, pipe) -> int:
        return pipe.unet.config.sample_size * pipe.vae_scale_factor

    def prediction_type(self, pipe) -> str:
        return pipe.scheduler.config.get("prediction_type", "epsilon")

    def widths(self, pipe) -> tuple[int, ...]:
        return tuple(slot.width(pipe) for slot in self.slots)

    def encode(self, pipe, texts: list[str], size: tuple[int, int] | None = None,
               sizes: list[SizeConditioning] | None = None) -> Conditioning:
        """The conditioning of `texts` (with gradients, for training); `size` is the (h, w) trained at, `sizes`
        each text's image size conditioning where the family has one (SDXL; SD 1.x/2.x ignore both)."""
        tok, te = self.slots[0].parts(pipe)
        return Conditioning(te(_ids(tok, texts).to(te.device))[0])  # (B, 77, D)


def _ids(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


@dataclass(frozen=True)
class SDXLFamily(ModelFamily):
    """Two encoders: the penultimate hidden states of both, concatenated (768 + 1280 = 2048 wide), and the
    second encoder's pooled projection with the added time ids (original size, crop, target size)."""

    def encode(self, pipe, texts: list[str], size: tuple[int, int] | None = None,
               sizes: list[SizeConditioning] | None = None) -> Conditioning:
        hidden, pooled = [], None
        for slot in self.slots:
            tok, te = slot.parts(pipe)
            out = te(_ids(tok, texts).to(te.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # (B, 77, D_i): SDXL reads the penultimate layer
            pooled = out[0]  # the last encoder's: its projected pooled output (B, P)
        if sizes is None:  # every image trained whole at `size`: no resize, no crop
            h, w = size or (self.native_size(pipe),) * 2
            sizes = [SizeConditioning((h, w), (0, 0), (h, w))] * len(texts)
        added = {"text_embeds": pooled, "time_ids": self.time_ids(sizes, pooled)}
        return Conditioning(torch.cat(hidden, dim=-1), added)  # (B, 77, sum D_i)

    def time_ids(self, sizes: list[SizeConditioning], like: torch.Tensor) -> torch.Tensor:
        """The added time ids (B, 6): original size, crop top-left, target size per image, in `like`'s dtype and
        device, laid out as diffusers' SDXL pipeline and training scripts lay them out."""
        rows = [[*s.original_size, *s.crop_top_left, *s.target_size] for s in sizes]
        return torch.tensor(rows, dtype=like.dtype, device=like.device)  # (B, 6)


SD1 = ModelFamily("sd1", (TextSlot("clip_l", "tokenizer", "text_encoder"),))
SD2 = ModelFamily("sd2", (TextSlot("clip_h", "tokenizer", "text_encoder"),))
SDXL = SDXLFamily("sdxl", (TextSlot("clip_l", "tokenizer", "text_encoder"),
                           TextSlot("clip_g", "tokenizer_2", "text_encoder_2")))
FAMILIES = {f.name: f for f in (SD1, SD2, SDXL)}


def family_of(pipe) -> ModelFamily:
    """The family of a loaded pipeline, from its components (SDXL has a second text encoder)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return SDXL
    if getattr(pipe, "text_encoder", None) is None:
        raise InputError("--model", type(pipe).__name__, "has no CLIP text encoder conceptlab knows",
                         f"Use a model of one of the families {sorted(FAMILIES)}")
    return SD2 if pipe.text_encoder.config.hidden_size == 1024 else SD1


def require_family(pipe, feature: str, supported: tuple[str, ...]) -> ModelFamily:
    """The pipeline's family, or an error naming it and what `feature` supports."""
    family = family_of(pipe)
    if family.name not in supported:
        raise InputError("--model", f"{type(pipe).__name__} ({family.name})", f"{feature} does not support it yet",
                         f"Use a model of the families {', '.join(supported)}")
    return family
