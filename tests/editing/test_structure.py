"""Mutual self-attention (editing.structure, MasaCtrl): against attention computed by hand, and inside edit()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from conceptlab.editing.edit import edit
from conceptlab.editing.structure import StructureConfig, check_structure, mutual_attention, structure_kept
from conceptlab.errors import InputError


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return Attention(query_dim=16, heads=2, dim_head=8).eval()


def _by_hand(attn, q_rows: torch.Tensor, kv_rows: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, with queries from q_rows and keys/values from kv_rows, (B, P, C)."""
    b, p, _ = q_rows.shape
    q = attn.to_q(q_rows).view(b, p, 2, 8).transpose(1, 2)
    k = attn.to_k(kv_rows).view(b, p, 2, 8).transpose(1, 2)
    v = attn.to_v(kv_rows).view(b, p, 2, 8).transpose(1, 2)
    w = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)  # (B, heads, P, P)
    return attn.to_out[0]((w @ v).transpose(1, 2).reshape(b, p, 16))


def test_mutual_attention_is_plain_attention_on_identical_rows(attn):
    x = torch.randn(1, 10, 16).expand(4, -1, -1).contiguous()
    with torch.no_grad():
        assert torch.allclose(mutual_attention(attn, x, None, 2), AttnProcessor()(attn, x), atol=1e-5)


def test_targets_read_their_groups_source_keys_and_values(attn):
    """Two groups of two rows ([uncond src, uncond tgt, cond src, cond tgt]): each target's queries meet its
    group's source's keys and values; sources attend to themselves."""
    x = torch.randn(4, 10, 16)
    with torch.no_grad():
        out = mutual_attention(attn, x, None, 2)
        sources = x[[0, 0, 2, 2]]
        assert torch.allclose(out, _by_hand(attn, x, sources), atol=1e-5)
        assert torch.allclose(out[[0, 2]], AttnProcessor()(attn, x[[0, 2]]), atol=1e-5)


def test_in_an_edit_it_changes_the_target_only_and_zero_steps_change_nothing(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)
    args = ("a happy red star", "a sad red star")
    with structure_kept(tiny_pipe, StructureConfig(mutual_steps=0.0), n_prompts=2, steps=6):
        none = edit(tiny_pipe, *args, steps=6, seed=1, self_steps=0.0).images
    with structure_kept(tiny_pipe, StructureConfig(mutual_steps=1.0, places=("down", "mid", "up")), n_prompts=2,
                        steps=6) as counter:
        mutual = edit(tiny_pipe, *args, steps=6, seed=1, self_steps=0.0).images  # P2P leaves self-attention be
    assert counter.step == 5  # six UNet passes, counted from 0
    plain = edit(tiny_pipe, *args, steps=6, seed=1, self_steps=0.0).images
    arr = lambda im: np.asarray(im, dtype=int)  # noqa: E731
    assert all(np.array_equal(arr(a), arr(b)) for a, b in zip(plain, none))
    assert np.abs(arr(mutual[0]) - arr(plain[0])).max() <= 1  # the source: its own keys and values
    assert np.abs(arr(mutual[1]) - arr(plain[1])).max() > 1
    assert {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="mutual_steps"):
        check_structure(StructureConfig(mutual_steps=1.5))
    with pytest.raises(InputError, match="places"):
        check_structure(StructureConfig(places=("decoder",)))
