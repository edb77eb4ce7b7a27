"""An attention processor that hands attention probabilities to a controller, installed with set_attn_processor.

PyTorch's fused attention never returns the probabilities, so they are computed explicitly only where the
controller asks (`wants`); everywhere else the layer's original processor runs.
"""

from __future__ import annotations

import contextlib

import torch

from conceptlab.editing.controllers import AttentionController


def place_of(name: str) -> str:
    """'down', 'mid' or 'up' from a processor name such as 'up_blocks.1.attentions.0...attn2.processor'."""
    return "down" if name.startswith("down") else "mid" if name.startswith("mid") else "up"


class ControlledAttnProcessor:
    """Explicit attention (as diffusers' AttnProcessor) with a controller hook, else the original processor."""

    def __init__(self, controller: AttentionController, place: str, original):
        self.controller, self.place, self.original = controller, place, original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        is_cross = encoder_hidden_states is not None
        pixels = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[2] * hidden_states.shape[3]
        if not self.controller.wants(is_cross, self.place, pixels):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kw)
        k = self.controller.uncond_rows
        if k and attention_mask is None and hidden_states.shape[0] > k:
            # the unconditional rows are never edited: fused kernel for them, explicit attention for the rest
            rows = lambda x, part: None if x is None else x[part]  # noqa: E731
            head, tail = slice(None, k), slice(k, None)
            uncond = self.original(attn, hidden_states[head], rows(encoder_hidden_states, head), None,
                                   rows(temb, head), *args, **kw)
            cond = self._explicit(attn, hidden_states[tail], rows(encoder_hidden_states, tail), None, rows(temb, tail))
            return torch.cat([uncond, cond])
        return self._explicit(attn, hidden_states, encoder_hidden_states, attention_mask, temb, skip=k)

    def _explicit(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, skip: int = 0):
        """Explicit attention; the controller edits the probabilities of every row after the first `skip`."""
        is_cross = encoder_hidden_states is not None
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, length = context.shape[0], context.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*heads, HW, d)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))  # (B*heads, T, d)
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B*heads, HW, T)
        bh, p, t = probs.shape
        probs = probs.view(bh // attn.heads, attn.heads, p, t)  # (B, heads, HW, T)
        edited = self.controller(probs[skip:], is_cross, self.place)
        probs = torch.cat([probs[:skip], edited]) if skip else edited
        out = attn.batch_to_head_dim(torch.bmm(probs.reshape(bh, p, t), value))  # (B, HW, C)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def controlled(unet, controller: AttentionController):
    """Installs controlled processors on every attention layer of `unet`, restoring the originals after."""
    originals = unet.attn_processors
    unet.set_attn_processor({name: ControlledAttnProcessor(controller, place_of(name), proc)
                             for name, proc in originals.items()})
    try:
        yield controller
    finally:
        unet.set_attn_processor(originals)
