"""Prompt-to-Prompt where the target introduces a learned token: 'a monster on a beach' -> 'a <tuki> monster on a
beach'. The token is an inserted word (refine mode); its rows reach the target branch and never the source."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.concepts.formats import Embedding
from conceptlab.concepts.tokens import load_concepts
from conceptlab.editing.alignment import encoded, refine_alignment, token_positions
from conceptlab.editing.edit import EditConfig, build_controller, edit
from conceptlab.editing.inversion import invert
from conceptlab.models.tiny import build_pipeline
from conceptlab.world import StickerSpec, render

SOURCE, TARGET = "a monster on a beach", "a <tuki> monster on a beach"


def _pipe(seed: int):
    """The tiny pipeline (same weights every time) with '<tuki>' learned as two random vectors drawn from `seed`."""
    pipe = build_pipeline("tiny")
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(seed))
    load_concepts(pipe, [Embedding("<tuki>", vectors)])
    return pipe


@pytest.fixture(scope="module")
def pipes():
    return _pipe(1), _pipe(2)


def _arr(im):
    return np.asarray(im, dtype=np.int16)


def test_the_learned_token_is_an_inserted_word_whose_attention_is_the_targets_own(pipes):
    pipe = pipes[0]
    tok, target = pipe.tokenizer, encoded(pipe, TARGET)
    assert target == "a <tuki> <tuki>_1 monster on a beach"  # a multi-vector token, spelled out
    own = token_positions(tok, target, "<tuki>")
    assert own == [2, 3]
    mapper, alphas = refine_alignment(tok, encoded(pipe, SOURCE), target)
    assert alphas[own].eq(0).all() and alphas[[1, 4, 5, 6, 7]].eq(1).all()
    assert mapper[[1, 4, 5, 6, 7]].tolist() == [1, 2, 3, 4, 5]  # the other words read the source's maps
    controller, mode = build_controller(pipe, EditConfig(SOURCE, [TARGET], steps=4), (16, 16))
    assert mode == "refine"
    probs = torch.rand(2, 2, 16, 77, generator=torch.Generator().manual_seed(0))  # (prompts, heads, pixels, tokens)
    out = controller(probs, True, "up")
    assert torch.equal(out[0], probs[0])  # the source is never edited
    assert torch.equal(out[1][..., own], probs[1][..., own])  # the token's columns: the target's own attention
    assert torch.equal(out[1][..., 4], probs[0][..., 2])  # 'monster': the source's map


@pytest.mark.parametrize("inverted", [False, True])
def test_the_tokens_vectors_reach_the_target_branch_only(pipes, inverted):
    """Two different learned vectors: identical sources, different targets (generated and inverted images)."""
    results = []
    for pipe in pipes:
        inversion = None
        if inverted:
            image = render(StickerSpec(object="monster", background="beach", seed=3), 32).image
            inversion = invert(pipe, image, SOURCE, "direct", steps=4, guidance=3.0)
        results.append(edit(pipe, SOURCE, TARGET, steps=4, seed=0, inversion=inversion))
    (src_a, tgt_a), (src_b, tgt_b) = (r.images for r in results)
    assert all(r.mode == "refine" for r in results)
    assert np.array_equal(_arr(src_a), _arr(src_b))
    assert np.abs(_arr(tgt_a) - _arr(tgt_b)).max() > 1
    assert np.abs(_arr(tgt_a) - _arr(src_a)).max() > 1


def _random_lora(path) -> None:
    """A rank-2 LoRA on the tiny UNet's attention with random (nonzero) weights, in diffusers' file format."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = build_pipeline("tiny").unet
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    StableDiffusionPipeline.save_lora_weights(path, unet_lora_layers=get_peft_model_state_dict(unet))


def test_cli_edits_an_inverted_image_with_a_learned_token_and_a_lora(tiny_dir, tmp_path, capsys):
    import json

    from conceptlab.cli.main import main
    from conceptlab.concepts.formats import save_embedding

    emb = tmp_path / "tuki.safetensors"
    save_embedding(Embedding("<tuki>", torch.randn(1, 32, generator=torch.Generator().manual_seed(0))), emb, "diffusers")
    _random_lora(tmp_path / "lora")
    lora = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    picture = tmp_path / "monster.png"
    render(StickerSpec(object="monster", background="beach", seed=3), 32).image.save(picture)
    common = ["edit", "--model", str(tiny_dir), "--prompt", SOURCE, "--from-image", str(picture), "--inversion",
              "direct", "--steps", "3"]
    assert main([*common, "--to", TARGET, "--concepts", str(emb), "--out", str(tmp_path / "ti")]) == 0
    out = capsys.readouterr().out
    assert "loaded concepts: <tuki> (1 vectors)" in out and "mode: refine" in out
    row = json.loads((tmp_path / "ti" / "edits.json").read_text())[0]
    assert row["mode_used"] == "refine" and row["targets"] == [TARGET]
    assert main([*common, "--to", "a tuki monster on a beach", "--lora", f"{lora}:0.8", "--out", str(tmp_path / "l")]) == 0
    assert f"applied LoRAs: {lora} x0.8" in capsys.readouterr().out
    assert main([*common, "--to", TARGET, "--lora", str(tmp_path / "missing.safetensors"),
                 "--out", str(tmp_path / "bad2")]) == 2
    assert "--lora" in capsys.readouterr().err
    assert main(["invert", str(picture), "--model", str(tiny_dir), "--prompt", SOURCE, "--method", "direct", "--steps",
                 "3", "--out", str(tmp_path / "i")]) == 0
    pipe = build_pipeline("tiny")  # tiny_dir's weights: the VAE's own round trip is direct inversion's reconstruction
    from conceptlab.editing.inversion import encode_image
    from conceptlab.evaluation.metrics import psnr

    with torch.no_grad():
        z = encode_image(pipe, render(StickerSpec(object="monster", background="beach", seed=3), 32).image)
        round_trip = pipe.image_processor.postprocess(pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample)[0]
    report = json.loads((tmp_path / "i" / "inversion.json").read_text())
    assert report["method"] == "direct" and abs(report["psnr_db"] - psnr(Image.open(picture), round_trip)) < 0.05


def test_a_token_that_was_not_loaded_is_refused_with_the_fix(pipes):
    from conceptlab.errors import InputError

    with pytest.raises(InputError, match=r"--to.*<bnh> is not a token this model has learned.*--concepts"):
        edit(pipes[0], SOURCE, "a <bnh> monster on a beach", steps=2)
    with pytest.raises(InputError, match="--prompt"):
        edit(pipes[0], "a <bnh> monster", TARGET, steps=2)


def test_on_sdxl_the_token_learned_in_both_encoders_reaches_the_target_only_even_reweighted():
    """Both encoders' vectors (clip_l 32, clip_g 48 wide), a direct inversion, and the token re-weighted
    (its text states scaled in each encoder): identical sources, different targets."""
    from conceptlab.models.tiny import build_sdxl_pipeline

    image = render(StickerSpec(object="monster", background="beach", seed=3), 32).image
    results = []
    for seed in (1, 2):
        pipe = build_sdxl_pipeline()
        g = torch.Generator().manual_seed(seed)
        load_concepts(pipe, [Embedding("<tuki>", torch.randn(2, 32, generator=g),
                                       extra={"clip_g": torch.randn(2, 48, generator=g)})])
        inv = invert(pipe, image, SOURCE, "direct", steps=3, guidance=3.0)
        results.append(edit(pipe, SOURCE, TARGET, inversion=inv, reweight={"<tuki>": 1.5}))
    (src_a, tgt_a), (src_b, tgt_b) = ([_arr(im) for im in r.images] for r in results)
    assert all(r.mode == "refine" for r in results)
    assert np.array_equal(src_a, src_b) and np.abs(tgt_a - tgt_b).max() > 1
