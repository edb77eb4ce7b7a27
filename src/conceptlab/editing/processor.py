"""An attention processor that hands attention probabilities to a controller, installed with set_attn_processor.

PyTorch's fused attention never returns the probabilities, so they are computed explicitly only where the
controller asks (`wants`); everywhere else the layer's original processor runs.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

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
        if attention_mask is None and self.controller.shares_source(is_cross, self.place, pixels):
            return self._shared(attn, hidden_states, encoder_hidden_states, temb, skip=k)
        if k and attention_mask is None and hidden_states.shape[0] > k:
            # the unconditional rows are never edited: fused kernel for them, the edit for the rest
            rows = lambda x, part: None if x is None else x[part]  # noqa: E731
            head, tail = slice(None, k), slice(k, None)
            uncond = self.original(attn, hidden_states[head], rows(encoder_hidden_states, head), None,
                                   rows(temb, head), *args, **kw)
            cond = self._explicit(attn, hidden_states[tail], rows(encoder_hidden_states, tail), None, rows(temb, tail))
            return torch.cat([uncond, cond])
        return self._explicit(attn, hidden_states, encoder_hidden_states, attention_mask, temb, skip=k)

    def _shared(self, attn, hidden_states, encoder_hidden_states, temb, skip: int = 0):
        """Fused attention on the source's queries and keys for every prompt (Hertz et al.'s injection, exactly).

        Where each target's probabilities are the source's remapped, P_k = P_src @ M_k (self-attention: M = I),
        target k's output is P_src @ (M_k @ V_k); so one fused call with the values of all prompts side by side
        gives every row, and no probabilities are ever materialised. The first `skip` rows (unconditional,
        never edited) get plain fused attention; one projection and one output layer serve all rows.
        """
        is_cross = encoder_hidden_states is not None
        hidden_states, context, residual, shape = _prepare(attn, hidden_states, encoder_hidden_states, temb)
        n, heads = hidden_states.shape[0] - skip, attn.heads  # n prompts: the source, then the targets
        query = attn.to_q(hidden_states[:skip + 1])  # (skip+1, P, C): unconditional rows, then the source's
        key = attn.to_k(context[:skip + 1])  # (skip+1, T, C)
        value = attn.to_v(context)  # (skip+n, T, C)
        cond_v = value[skip:]
        if is_cross:  # targets see the source's map through the token mapping: V_k <- M_k @ V_k
            mapper = self.controller.placed("mapper", value.device, value.dtype)  # (n-1, T_src, T_tgt)
            cond_v = torch.cat([cond_v[:1], torch.bmm(mapper, cond_v[1:])])
        (m, p, c), t = query.shape, key.shape[1]
        d = c // heads
        query = query.view(m, p, heads, d).transpose(1, 2)  # (skip+1, heads, P, d)
        key = key.view(m, t, heads, d).transpose(1, 2)  # (skip+1, heads, T, d)
        cond_v = cond_v.reshape(n, t, heads, d).permute(2, 1, 0, 3).reshape(1, heads, t, n * d)  # (1, heads, T, n*d)
        out = F.scaled_dot_product_attention(query[skip:], key[skip:], cond_v, scale=attn.scale)  # (1, heads, P, n*d)
        out = out.view(heads, p, n, d).permute(2, 1, 0, 3).reshape(n, p, c)  # (n, P, C), head-major as diffusers
        if skip:
            uncond_v = value[:skip].view(skip, t, heads, d).transpose(1, 2)  # (skip, heads, T, d)
            uncond = F.scaled_dot_product_attention(query[:skip], key[:skip], uncond_v, scale=attn.scale)
            out = torch.cat([uncond.transpose(1, 2).reshape(skip, p, c), out])  # (skip+n, P, C)
        return _finish(attn, out, residual, shape)

    def _explicit(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, skip: int = 0):
        """Explicit attention; the controller edits the probabilities of every row after the first `skip`."""
        is_cross = encoder_hidden_states is not None
        hidden_states, context, residual, shape = _prepare(attn, hidden_states, encoder_hidden_states, temb)
        batch, length = context.shape[0], context.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*heads, HW, d)
        key = attn.head_to_batch_dim(attn.to_k(context))  # (B*heads, T, d)
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B*heads, HW, T)
        bh, p, t = probs.shape
        probs = probs.view(bh // attn.heads, attn.heads, p, t)  # (B, heads, HW, T)
        edited = self.controller(probs[skip:], is_cross, self.place)
        probs = torch.cat([probs[:skip], edited]) if skip else edited
        out = attn.batch_to_head_dim(torch.bmm(probs.reshape(bh, p, t), value))  # (B, HW, C)
        return _finish(attn, out, residual, shape)


def _prepare(attn, hidden_states, encoder_hidden_states, temb):
    """The layer's norms, as diffusers' AttnProcessor: (hidden (B, HW, C), context (B, T, C), residual, 4-D shape)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape = None
    if hidden_states.ndim == 4:
        shape = hidden_states.shape
        b, c, h, w = shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    return hidden_states, context, residual, shape


def _finish(attn, out, residual, shape):
    """Output projection, back to 4-D, residual and rescale, as diffusers' AttnProcessor."""
    out = attn.to_out[1](attn.to_out[0](out))
    if shape is not None:
        out = out.transpose(-1, -2).reshape(shape)
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
