"""Prompt-to-Prompt controllers (Hertz et al. 2022, arXiv 2208.01626) behind one small interface.

A controller sees attention probabilities `(B, heads, pixels, tokens)` of a layer, whether it is cross- or
self-attention and where it sits in the UNet ("down", "mid", "up"), and returns them, edited or not.
`wants()` tells the processor whether to compute attention explicitly for that layer at this step; every
other layer keeps the fused kernel. `step_end(latents)` runs after each denoising step.
Batch layout with classifier-free guidance: [uncond_0..uncond_{n-1}, cond_0..cond_{n-1}], prompt 0 = source.
The unconditional rows (`uncond_rows` of them) are never edited, so the processor runs them through the fused
kernel and hands the controller the conditional rows only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class AttentionController:
    """Base class: counts steps, edits nothing."""

    uncond_rows = 0  # leading batch rows the controller never sees (classifier-free guidance's uncond half)

    def __init__(self, num_steps: int):
        self.num_steps, self.step = num_steps, 0

    def wants(self, is_cross: bool, place: str, pixels: int) -> bool:
        return False

    def shares_source(self, is_cross: bool, place: str, pixels: int) -> bool:
        """True where every target attends exactly as the source, through `self.mapper` for cross-attention
        (P_target = P_source @ M) and unchanged for self-attention: the processor then needs no probabilities."""
        return False

    def __call__(self, probs: torch.Tensor, is_cross: bool, place: str) -> torch.Tensor:
        return probs

    def step_end(self, latents: torch.Tensor) -> torch.Tensor:
        self.step += 1
        return latents


class AttentionStore(AttentionController):
    """Sums the conditional cross-attention maps of every step, per map size: `maps[pixels]` (n, pixels, T)."""

    def __init__(self, num_steps: int, n_prompts: int, guidance: bool = True):
        super().__init__(num_steps)
        self.n, self.guidance = n_prompts, guidance
        self.uncond_rows = n_prompts if guidance else 0
        self.maps: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}

    def wants(self, is_cross, place, pixels) -> bool:
        return is_cross

    def __call__(self, probs, is_cross, place):
        if is_cross:
            pixels = probs.shape[2]  # probs: (n, heads, pixels, T), the conditional rows
            self.maps[pixels] = self.maps.get(pixels, 0) + probs.mean(1).detach().float()
            self.counts[pixels] = self.counts.get(pixels, 0) + 1
        return probs

    def averaged(self, pixels: int) -> torch.Tensor:
        """(n, pixels, T): the mean map over layers and steps at that size."""
        return self.maps[pixels] / self.counts[pixels]


def _schedule(value, n_tokens: int, num_steps: int, default_positions=None) -> torch.Tensor:
    """(num_steps, T) 0/1 table: may token t be replaced at step s; `value` a fraction or {positions: fraction}."""
    table = torch.zeros(num_steps, n_tokens)
    if isinstance(value, dict):
        base = value.get("default_", 1.0)
        table[: int(base * num_steps)] = 1
        for positions, frac in value.items():
            if positions == "default_":
                continue
            table[:, list(positions)] = 0
            table[: int(frac * num_steps), list(positions)] = 1
    else:
        table[: int(value * num_steps)] = 1
    return table


class AttentionEdit(AttentionController):
    """Replace or refine the targets' attention with the source's; optional re-weighting and local blend.

    mode "replace": target_cross = source_cross @ mapper (words swapped one for one).
    mode "refine":  target_cross[t] = source_cross[mapper[t]] where aligned (alphas), else the target's own.
    `reweight` (n-1, T) multiplies the targets' cross-attention (a scale per token; negative allowed).
    Self-attention of the targets is the source's for the first `self_steps` of the steps.
    """

    def __init__(self, num_steps: int, n_prompts: int, mode: str, mapper: torch.Tensor, alphas: torch.Tensor | None,
                 cross_steps=0.8, self_steps: float = 0.4, reweight: torch.Tensor | None = None,
                 local_blend: LocalBlend | DiffBlend | None = None, self_max_pixels: int | None = None, guidance: bool = True):
        super().__init__(num_steps)
        self.n, self.mode, self.guidance = n_prompts, mode, guidance
        self.uncond_rows = n_prompts if guidance else 0
        self.mapper, self.alphas = mapper, alphas  # replace: (n-1, T, T); refine: (n-1, T) and (n-1, T)
        self.cross = _schedule(cross_steps, mapper.shape[-1], num_steps)  # (steps, T)
        self.self_until = int(self_steps * num_steps)
        self.reweight, self.blend = reweight, local_blend
        self.self_max_pixels = self_max_pixels
        self._placed: dict[tuple, torch.Tensor] = {}  # the tables above on the attention's device, moved once

    def placed(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Table `name` (built on the CPU) on `device` in `dtype`: copied once per device and dtype, not per layer."""
        key = (name, device, dtype)
        if key not in self._placed:
            self._placed[key] = getattr(self, name).to(device, dtype)
        return self._placed[key]

    def wants(self, is_cross, place, pixels) -> bool:
        if is_cross:
            in_window = bool(self.cross[min(self.step, self.num_steps - 1)].any()) or self.reweight is not None
            return in_window or (self.blend is not None and self.blend.wants(pixels))
        return self.step < self.self_until and (self.self_max_pixels is None or pixels <= self.self_max_pixels)

    def shares_source(self, is_cross, place, pixels) -> bool:
        if not is_cross:
            return self.wants(is_cross, place, pixels)
        if self.mode != "replace" or self.reweight is not None or (self.blend is not None and self.blend.wants(pixels)):
            return False
        return bool(self.cross[min(self.step, self.num_steps - 1)].all())  # every token takes the source's map

    def __call__(self, probs, is_cross, place):
        src, tgt = probs[:1], probs[1:]  # probs: (n, heads, P, T), the conditional rows
        if is_cross:
            if self.blend is not None:
                self.blend.collect(probs)
            step = min(self.step, self.num_steps - 1)
            if self.cross[step].any():  # decided on the CPU table: no device sync per layer
                alpha = self.placed("cross", probs.device, probs.dtype)[step]  # (T,)
                if self.mode == "replace":
                    new = torch.einsum("hpw,bwt->bhpt", src[0], self.placed("mapper", probs.device, probs.dtype))
                else:
                    new = src[0][None, :, :, :].expand_as(tgt).gather(-1, self._refine_index(tgt))
                    a = self.placed("alphas", probs.device, probs.dtype)[:, None, None, :]  # (n-1, 1, 1, T)
                    new = new * a + tgt * (1 - a)
                tgt = new * alpha + tgt * (1 - alpha)
            if self.reweight is not None:
                tgt = tgt * self.placed("reweight", probs.device, probs.dtype)[:, None, None, :]
        elif self.step < self.self_until:
            tgt = src.expand_as(tgt)
        return torch.cat([src, tgt])

    def _refine_index(self, tgt: torch.Tensor) -> torch.Tensor:
        idx = self.placed("mapper", tgt.device, torch.long)[:, None, None, :]  # (n-1, 1, 1, T)
        return idx.expand(tgt.shape[0], tgt.shape[1], tgt.shape[2], tgt.shape[3])

    def step_end(self, latents):
        if self.blend is not None:
            latents = self.blend.apply(latents, self.step, self.num_steps)
        return super().step_end(latents)


class LocalBlend:
    """Keeps the source outside a mask built from chosen words' cross-attention maps.

    `words` gives, per prompt, a (T,) 0/1 vector of token positions; maps from layers with at most
    `max_pixels` pixels are averaged, resized to the latent size, dilated, normalised and thresholded.
    """

    def __init__(self, words: torch.Tensor, latent_hw: tuple[int, int], threshold: float = 0.3,
                 start: float = 0.2, max_pixels: int | None = None):
        self.words, self.hw, self.threshold, self.start = words, latent_hw, threshold, start
        self.max_pixels = max_pixels or max(1, (latent_hw[0] * latent_hw[1]) // 4)
        self._maps: list[torch.Tensor] = []
        self.last_mask: torch.Tensor | None = None

    def wants(self, pixels: int) -> bool:
        return pixels <= self.max_pixels

    def collect(self, cond: torch.Tensor) -> None:
        pixels = cond.shape[2]
        if pixels > self.max_pixels:
            return
        h, w = _grid(pixels, self.hw)
        per_word = (cond.mean(1) * self.words.to(cond.device, cond.dtype)[:, None, :]).sum(-1)  # (n, P)
        self._maps.append(F.interpolate(per_word.reshape(-1, 1, h, w).float(), size=self.hw, mode="bilinear"))

    def mask(self) -> torch.Tensor:
        """(n, 1, h, w) boolean: the union of the source's and each prompt's word regions."""
        m = torch.stack(self._maps).mean(0)  # (n, 1, h, w)
        m = F.max_pool2d(m, 3, stride=1, padding=1)
        m = m / m.flatten(1).amax(1).clamp(min=1e-8)[:, None, None, None]
        m = m > self.threshold
        return m[:1] | m

    def apply(self, latents: torch.Tensor, step: int, num_steps: int) -> torch.Tensor:
        if not self._maps:
            return latents
        mask = self.mask().to(latents.dtype)
        self.last_mask, self._maps = mask, []
        if step < int(self.start * num_steps):
            return latents
        return latents[:1] + mask * (latents - latents[:1])


class HeldBlend:
    """A blend whose mask needs no attention maps: `mask(latents)` is taken once when blending starts (at
    `start` of the steps) and held; from then on every target is the source outside it."""

    start: float = 0.0

    def __init__(self):
        self.last_mask: torch.Tensor | None = None

    def wants(self, pixels: int) -> bool:
        return False

    def collect(self, cond: torch.Tensor) -> None:
        pass

    def mask(self, latents: torch.Tensor) -> torch.Tensor:  # (n, 1, h, w), 0 for the source
        raise NotImplementedError

    def apply(self, latents: torch.Tensor, step: int, num_steps: int) -> torch.Tensor:
        if step < int(self.start * num_steps):
            return latents
        if self.last_mask is None:
            self.last_mask = self.mask(latents).to(latents.dtype)
        return latents[:1] + self.last_mask * (latents - latents[:1])


class DiffBlend(HeldBlend):
    """Keeps the source where the edit leaves it alone: the region where the targets' latents drift from the
    source's, taken once when blending starts and held (after DiffEdit, Couairon et al. 2022, arXiv 2210.11427).

    Needs no words: cross-attention of small models spreads over the whole image, the latents' difference does not.
    """

    def __init__(self, threshold: float = 0.4, start: float = 0.3):
        super().__init__()
        self.threshold, self.start = threshold, start

    def mask(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, 1, h, w) boolean: per target, where its latent moved more than `threshold` of its range."""
        d = (latents[1:] - latents[:1]).abs().float().mean(1, keepdim=True)  # (n-1, 1, h, w)
        d = F.avg_pool2d(d, 3, stride=1, padding=1, count_include_pad=False)
        lo, hi = d.flatten(1).amin(1), d.flatten(1).amax(1)
        d = (d - lo[:, None, None, None]) / (hi - lo).clamp(min=1e-8)[:, None, None, None]
        m = F.max_pool2d((d > self.threshold).float(), 3, stride=1, padding=1) > 0  # grown by one latent pixel
        return torch.cat([torch.zeros_like(m[:1]), m])


class MaskBlend(HeldBlend):
    """Keeps the source outside a region the user drew: `region` (1, 1, H, W) in [0, 1] at any size, 1 where the
    targets may change; resized to the latents (area average) and cut at one half. Like Blended Latent Diffusion
    (Avrahami et al. 2023, arXiv 2206.02779): from `start` on, every step's latents outside it are the source's."""

    def __init__(self, region: torch.Tensor, start: float = 0.0):
        super().__init__()
        self.region, self.start = region, start

    def mask(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, 1, h, w): 0 for the source, the region at the latents' size for every target."""
        m = F.interpolate(self.region.float(), size=latents.shape[-2:], mode="area") > 0.5  # (1, 1, h, w)
        m = m.to(latents.device, latents.dtype).expand(latents.shape[0] - 1, -1, -1, -1)
        return torch.cat([torch.zeros_like(m[:1]), m])


def _grid(pixels: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of a map with `pixels` entries for a latent of aspect ratio latent_hw."""
    h, w = latent_hw
    scale = math.sqrt(h * w / pixels)
    return max(1, round(h / scale)), max(1, round(w / scale))
