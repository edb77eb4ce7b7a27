"""Structure-keeping attention for edits of inverted pictures: mutual self-attention (MasaCtrl, Cao et al. 2023,
arXiv 2304.08465), where each target's self-attention reads the source branch's keys and values.

Prompt-to-Prompt's self-attention injection gives a target the source's attention *map* over its own values
(as Plug-and-Play's query/key injection, Tumanyan et al. 2023); mutual self-attention keeps the target's own
queries and lets them read the source's *content*. Under a Direct Inversion (editing.inversion, method
"direct") the source branch is the inversion's trajectory itself, so both inject from the picture's own path.

Installed with `structure_kept(pipe, cfg, ...)` around `edit()`: edit's Prompt-to-Prompt processors wrap
these, so wherever Prompt-to-Prompt edits a layer it wins, and everywhere else this processor runs.
Batch layout: groups of n_prompts rows (classifier-free guidance: [uncond x n, cond x n]); row 0 of each group
is the source.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from conceptlab.errors import InputError

PLACES = ("down", "mid", "up")


@dataclass
class StructureConfig:
    """Where and when targets read the source's self-attention keys and values."""

    mutual_steps: float = 0.5  # fraction of the steps, from the first (MasaCtrl starts at step 4 of 50 on SD)
    places: tuple[str, ...] = ("mid", "up")  # UNet parts; MasaCtrl uses the decoder's layers (10-15 of 16 on SD)


def check_structure(cfg: StructureConfig) -> None:
    """Raises InputError for a bad setting."""
    if not 0 <= cfg.mutual_steps <= 1:
        raise InputError("mutual_steps", cfg.mutual_steps, "must be within [0, 1]", "Use a fraction such as 0.5")
    bad = [p for p in cfg.places if p not in PLACES]
    if bad or not cfg.places:
        raise InputError("places", cfg.places, "names no UNet part or an unknown one", f"Use some of {PLACES}")


class StepCounter:
    """Counts UNet passes (a forward pre-hook on the UNet; Prompt-to-Prompt's processors may skip a layer's own)."""

    def __init__(self):
        self.step = -1

    def __call__(self, module, args) -> None:
        self.step += 1


class MutualSelfAttnProcessor:
    """Self-attention where every target row reads its group's source row's keys and values (MasaCtrl)."""

    def __init__(self, name: str, place: str, original, counter: StepCounter, cfg: StructureConfig, n_prompts: int,
                 until: int):
        self.name, self.place, self.original, self.counter = name, place, original, counter
        self.cfg, self.n, self.until = cfg, n_prompts, until

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        b = hidden_states.shape[0]
        active = (encoder_hidden_states is None and attention_mask is None and self.place in self.cfg.places
                  and self.counter.step < self.until and self.n > 1 and b % self.n == 0)
        if not active:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)
        return mutual_attention(attn, hidden_states, temb, self.n)


def mutual_attention(attn, hidden_states: torch.Tensor, temb, n: int) -> torch.Tensor:
    """Self-attention of `hidden_states` (B, P, C) or (B, C, H, W) with each group's row 0 as every row's keys
    and values; row 0 itself gets plain self-attention."""
    from conceptlab.editing.processor import _finish, _prepare

    hidden_states, context, residual, shape = _prepare(attn, hidden_states, None, temb)
    b, p, c = hidden_states.shape
    heads, d = attn.heads, c // attn.heads
    source = context.view(b // n, n, p, c)[:, :1].expand(-1, n, -1, -1).reshape(b, p, c)  # (B, P, C)
    split = lambda x: x.view(b, -1, heads, d).transpose(1, 2)  # noqa: E731  (B, heads, P, d)
    query, key, value = split(attn.to_q(hidden_states)), split(attn.to_k(source)), split(attn.to_v(source))
    out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)  # (B, heads, P, d)
    return _finish(attn, out.transpose(1, 2).reshape(b, p, c), residual, shape)


@contextlib.contextmanager
def structure_kept(pipe, cfg: StructureConfig, n_prompts: int, steps: int):
    """Installs mutual self-attention on `pipe.unet` for an edit of `n_prompts` prompts (source first) over
    `steps` denoising steps; the layers' own processors are put back after."""
    from conceptlab.editing.processor import place_of

    check_structure(cfg)
    unet = pipe.unet
    originals = unet.attn_processors
    counter = StepCounter()
    until = int(cfg.mutual_steps * steps)
    unet.set_attn_processor({name: MutualSelfAttnProcessor(name, place_of(name), proc, counter, cfg, n_prompts, until)
                             for name, proc in originals.items()})
    handle = unet.register_forward_pre_hook(counter)
    try:
        yield counter
    finally:
        handle.remove()
        unet.set_attn_processor(originals)
