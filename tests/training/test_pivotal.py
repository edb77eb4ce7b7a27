"""Pivotal tuning: tokens and a UNet LoRA trained together, files that diffusers' own loaders read, bundles."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conceptlab.concepts.bundle import is_bundle, load_bundle, read_bundle
from conceptlab.concepts.lora import DIFFUSERS_NAME
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline
from conceptlab.training.dreambooth import SubjectConfig
from conceptlab.training.loop import TrainConfig, Trainer
from conceptlab.training.pivotal import PivotalConfig, PivotalTuning, check_pivotal, train_pivotal

PROMPT = "a sticker of a <tuki> monster on a beach"


def _cfg(concept_dirs, steps=3, **kw):
    return PivotalConfig(subjects=[SubjectConfig("<tuki>", str(concept_dirs / "emoji"), "monster")], rank=2,
                         train=TrainConfig(steps=steps, batch_size=2, lr=1e-2), **kw)


def _frozen(pipe) -> dict[str, torch.Tensor]:
    """Every weight of the pipeline that is not a LoRA matrix, by name."""
    out = {}
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        for k, v in ({} if module is None else module.state_dict()).items():
            if "lora_" not in k:  # peft moves a wrapped layer's own weight to .base_layer
                out[f"{part}.{k.replace('.base_layer', '')}"] = v.detach().clone()
    return out


def _unet_out(pipe, prompt=PROMPT):
    """The UNet's noise prediction for a fixed latent and timestep under `prompt` (SD or SDXL conditioning)."""
    from conceptlab.models.families import family_of

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, pipe.unet.config.in_channels, pipe.unet.config.sample_size,
                          pipe.unet.config.sample_size, generator=g)
    with torch.no_grad():
        prompt = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
        cond = family_of(pipe).encode(pipe, [prompt])
        return pipe.unet(latents, torch.tensor([500]), **cond.unet_kwargs()).sample, cond.hidden


@pytest.fixture(scope="module")
def sd1_run(concept_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("pivotal-sd1")
    pipe = build_pipeline("tiny")
    before = _frozen(pipe)
    cfg = _cfg(concept_dirs, steps=3, vectors=2)
    method = PivotalTuning(pipe, cfg)
    init = {k: v.clone() for k, v in method.trainable_state().items()}
    result = Trainer(method, cfg.train, out, hooks=method.hooks()).train()
    return pipe, method, before, init, out, result


def test_trains_token_rows_and_lora_and_leaves_every_other_weight_bit_identical(sd1_run):
    pipe, method, before, init, _, result = sd1_run
    assert result.stopped == "done" and len(result.losses) == 3
    after = method.trainable_state()
    tokens = [k for k in after if k.startswith("tokens.")]
    lora = [k for k in after if k.startswith("lora.") and "lora_B" in k]
    assert tokens == ["tokens.vectors"] and after["tokens.vectors"].shape == (2, 32)
    assert not torch.equal(after["tokens.vectors"], init["tokens.vectors"])
    assert lora and all(not torch.equal(after[k], init[k]) for k in lora)  # B starts at zero and moved
    now = _frozen(pipe)
    ids = pipe.tokenizer.convert_tokens_to_ids(["<tuki>", "<tuki>_1"])
    emb = "text_encoder.embeddings.token_embedding.weight"
    old_rows = before[emb].shape[0]
    assert min(ids) >= old_rows  # the new rows are appended; every old row must stay as it was
    assert torch.equal(now[emb][:old_rows], before[emb])
    changed = [k for k in before if k != emb and not torch.equal(before[k], now[k])]
    assert changed == []
    # the learned vectors were written into the new rows at the end, so the pipe works without the hook
    assert torch.equal(now[emb][ids], after["tokens.vectors"])


def test_separate_files_load_in_diffusers_and_give_our_embeddings_and_unet_outputs(sd1_run):
    pipe, _, _, _, out, _ = sd1_run
    ours_unet, ours_hidden = _unet_out(pipe)
    fresh = build_pipeline("tiny")
    base_unet, _ = _unet_out(fresh, "a sticker of a monster on a beach")
    fresh.load_textual_inversion(str(out / "tuki" / "learned_embeds.safetensors"))
    fresh.load_lora_weights(str(out / "lora" / DIFFUSERS_NAME))
    theirs_unet, theirs_hidden = _unet_out(fresh)
    assert torch.allclose(theirs_hidden, ours_hidden, atol=1e-6)
    assert torch.allclose(theirs_unet, ours_unet, atol=1e-5)
    assert not torch.allclose(theirs_unet, base_unet, atol=1e-3)  # the check can fail: the LoRA and token matter


def test_bundle_holds_both_with_its_config_and_loads_like_the_separate_files(sd1_run):
    pipe, _, _, _, out, _ = sd1_run
    path = out / "bundle.safetensors"
    assert is_bundle(path) and not is_bundle(out / "lora" / DIFFUSERS_NAME)
    bundle = read_bundle(path)
    assert bundle.family == "sd1" and bundle.meta["method"] == "pivotal" and bundle.meta["config"]["vectors"] == 2
    assert [e.token for e in bundle.embeddings] == ["<tuki>"] and bundle.embeddings[0].vectors.shape == (2, 32)
    assert any(k.startswith("lora_unet_") for k in bundle.lora)  # kohya keys, as OneTrainer and A1111 write
    fresh = build_pipeline("tiny")
    load_bundle(fresh, path, adapter_name="b")
    fresh.set_adapters(["b"])
    ours_unet, ours_hidden = _unet_out(pipe)
    theirs_unet, theirs_hidden = _unet_out(fresh)
    assert torch.allclose(theirs_hidden, ours_hidden, atol=1e-6)
    assert torch.allclose(theirs_unet, ours_unet, atol=1e-5)


def test_a_bundle_for_another_family_is_refused_naming_both(sd1_run):
    _, _, _, _, out, _ = sd1_run
    with pytest.raises(InputError, match=r"sd1 bundle, but this model is sdxl"):
        load_bundle(build_sdxl_pipeline(), out / "bundle.safetensors", adapter_name="b")


def test_tokens_first_then_lora_then_lora_alone(concept_dirs, tmp_path):
    """token_steps=2: the LoRA stays at its start for 2 steps; token_frac=0.75 of 4: the tokens stop after 3."""
    pipe = build_pipeline("tiny")
    cfg = _cfg(concept_dirs, steps=4, token_steps=2, token_frac=0.75)
    method = PivotalTuning(pipe, cfg)
    states = [method.trainable_state()]
    Trainer(method, cfg.train, tmp_path, hooks=[*method.hooks(), lambda t: states.append(t.method.trainable_state())]).train()
    lora_b = [k for k in states[0] if "lora_B" in k]

    def moved(a, b, keys):
        return any(not torch.equal(states[a][k], states[b][k]) for k in keys)
    assert moved(0, 1, ["tokens.vectors"]) and moved(1, 2, ["tokens.vectors"]) and moved(2, 3, ["tokens.vectors"])
    assert not moved(0, 2, lora_b) and moved(2, 3, lora_b)  # the LoRA joins at step 3
    assert not moved(3, 4, ["tokens.vectors"]) and moved(3, 4, lora_b)  # step 4: the LoRA alone


def test_resume_is_bit_identical_across_a_phase_change(concept_dirs, tmp_path):
    def run(out, stop_at=None, resume=False):
        method = PivotalTuning(build_pipeline("tiny"), _cfg(concept_dirs, steps=4, token_steps=1, token_frac=0.75))
        Trainer(method, method.cfg.train, out, hooks=method.hooks()).train(resume=resume, stop_at=stop_at)
        return method.trainable_state()

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=2)
    resumed = run(tmp_path / "b", resume=True)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_sdxl_token_in_both_encoders_files_load_in_diffusers(concept_dirs, tmp_path):
    cfg = _cfg(concept_dirs, steps=2)
    pipe, result = train_pivotal(cfg, tmp_path, pipe=build_sdxl_pipeline())
    assert result.stopped == "done"
    state = load_file(str(tmp_path / "tuki" / "learned_embeds.safetensors"))
    assert state["clip_l"].shape == (1, 32) and state["clip_g"].shape == (1, 48)
    fresh = build_sdxl_pipeline()
    fresh.load_textual_inversion(state["clip_l"], token="<tuki>", text_encoder=fresh.text_encoder,
                                 tokenizer=fresh.tokenizer)
    fresh.load_textual_inversion(state["clip_g"], token="<tuki>", text_encoder=fresh.text_encoder_2,
                                 tokenizer=fresh.tokenizer_2)
    fresh.load_lora_weights(str(tmp_path / "lora" / DIFFUSERS_NAME))
    ours_unet, ours_hidden = _unet_out(pipe)
    theirs_unet, theirs_hidden = _unet_out(fresh)
    assert torch.allclose(theirs_hidden, ours_hidden, atol=1e-6)
    assert torch.allclose(theirs_unet, ours_unet, atol=1e-5)
    bundle = read_bundle(tmp_path / "bundle.safetensors")
    assert bundle.family == "sdxl" and bundle.embeddings[0].extra["clip_g"].shape == (1, 48)
    with pytest.raises(InputError, match=r"sdxl bundle, but this model is sd1"):
        load_bundle(build_pipeline("tiny"), tmp_path / "bundle.safetensors", adapter_name="b")


@pytest.mark.parametrize("build", [build_pipeline, build_sdxl_pipeline], ids=["sd1", "sdxl"])
def test_a_text_encoder_lora_trains_beside_the_tokens_and_loads_in_diffusers(concept_dirs, tmp_path, build):
    """--train-text-encoder: LoRA adapters on every text encoder move with the tokens and the UNet's LoRA; the
    text encoders' own weights stay (but for the new rows), and diffusers' loaders given the separate files, and
    the bundle, reproduce the trained conditioning and noise prediction."""
    pipe = build("tiny") if build is build_pipeline else build()
    before = _frozen(pipe)
    cfg = _cfg(concept_dirs, steps=3, train_text_encoder=True)
    method = PivotalTuning(pipe, cfg)
    init = method.trainable_state()
    Trainer(method, cfg.train, tmp_path, hooks=method.hooks()).train()
    after = method.trainable_state()
    te_b = [k for k in after if k.startswith("lora.text_encoder") and "lora_B" in k]
    encoders = {k.split(".")[1] for k in te_b}
    assert encoders == ({"text_encoder"} if build is build_pipeline else {"text_encoder", "text_encoder_2"})
    # every encoder's LoRA moved (SDXL reads CLIP-L's next-to-last layer, so its last layer's LoRA cannot)
    assert all(any(not torch.equal(after[k], init[k]) for k in te_b if k.split(".")[1] == e) for e in encoders)
    assert sum(not torch.equal(after[k], init[k]) for k in te_b) >= len(te_b) - 4
    now = _frozen(pipe)
    rows = [k for k in before if k.endswith("token_embedding.weight")]
    assert [k for k in before if k not in rows and not torch.equal(before[k], now[k])] == []
    ours_unet, ours_hidden = _unet_out(pipe)
    fresh = build("tiny") if build is build_pipeline else build()
    if build is build_pipeline:
        fresh.load_textual_inversion(str(tmp_path / "tuki" / "learned_embeds.safetensors"))
    else:
        state = load_file(str(tmp_path / "tuki" / "learned_embeds.safetensors"))
        for key, te, tok in (("clip_l", fresh.text_encoder, fresh.tokenizer),
                             ("clip_g", fresh.text_encoder_2, fresh.tokenizer_2)):
            fresh.load_textual_inversion(state[key], token="<tuki>", text_encoder=te, tokenizer=tok)
    without_te, _ = _unet_out(fresh)
    fresh.load_lora_weights(str(tmp_path / "lora" / DIFFUSERS_NAME))
    theirs_unet, theirs_hidden = _unet_out(fresh)
    assert torch.allclose(theirs_hidden, ours_hidden, atol=1e-5)
    assert torch.allclose(theirs_unet, ours_unet, atol=1e-5)
    bundle = read_bundle(tmp_path / "bundle.safetensors")
    assert any(k.startswith(("lora_te_", "lora_te1_")) for k in bundle.lora)  # kohya's text-encoder keys
    loaded = build("tiny") if build is build_pipeline else build()
    load_bundle(loaded, tmp_path / "bundle.safetensors", adapter_name="b")
    loaded.set_adapters(["b"])
    bundled_unet, bundled_hidden = _unet_out(loaded)
    assert torch.allclose(bundled_hidden, ours_hidden, atol=1e-5)
    assert torch.allclose(bundled_unet, ours_unet, atol=1e-5)
    assert not torch.allclose(without_te, ours_unet, atol=1e-4)  # the check can fail: the LoRAs matter


def test_ema_saves_the_moving_average_of_tokens_and_lora_and_resumes_exactly(concept_dirs, tmp_path):
    """--ema-decay: the bundle and the separate files hold the average of the token vectors and the LoRA over the
    steps (diffusers' EMAModel warm-up, computed here by hand from each step's weights); an interrupted run
    resumes to the same average."""
    import conceptlab.training.loop as loop

    decay, steps = 0.9, 4
    pipe = build_pipeline("tiny")
    made, real = [], loop.EMA
    with pytest.MonkeyPatch.context() as mp:  # one moving average is built, not DreamBooth's as well
        mp.setattr(loop, "EMA", type("CountedEMA", (real,), {"__init__": lambda self, *a: made.append(1) or
                                                               real.__init__(self, *a)}))
        method = PivotalTuning(pipe, _cfg(concept_dirs, steps=steps, ema_decay=decay))
    assert len(made) == 1 and method.lora.cfg.ema_decay == decay
    trajectory = [method.trainable_state()]
    hooks = [*method.hooks(), lambda t: trajectory.append(t.method.trainable_state())]
    Trainer(method, method.cfg.train, tmp_path / "a", hooks=hooks).train()
    expected = dict(trajectory[0])
    for step, state in enumerate(trajectory[1:], start=1):
        d = min(decay, (1 + step) / (10 + step))
        expected = {k: d * expected[k] + (1 - d) * state[k] for k in state}
    bundle = read_bundle(tmp_path / "a" / "bundle.safetensors")
    assert torch.allclose(bundle.embeddings[0].vectors, expected["tokens.vectors"], atol=1e-6)
    assert not torch.allclose(bundle.embeddings[0].vectors, trajectory[-1]["tokens.vectors"], atol=1e-6)
    saved = load_file(str(tmp_path / "a" / "lora" / DIFFUSERS_NAME))
    b = next(k for k in expected if k.startswith("lora.unet") and "lora_B" in k)
    match = [v for v in saved.values() if v.shape == expected[b].shape and torch.allclose(v, expected[b], atol=1e-6)]
    assert match and bundle.meta["ema_decay"] == decay
    _, result = train_pivotal(_cfg(concept_dirs, steps=steps, ema_decay=decay), tmp_path / "b",
                              pipe=build_pipeline("tiny"), stop_at=2)
    train_pivotal(_cfg(concept_dirs, steps=steps, ema_decay=decay), tmp_path / "b", pipe=build_pipeline("tiny"),
                  resume=True)
    resumed = read_bundle(tmp_path / "b" / "bundle.safetensors")
    assert torch.equal(resumed.embeddings[0].vectors, bundle.embeddings[0].vectors)
    assert all(torch.equal(resumed.lora[k], bundle.lora[k]) for k in bundle.lora)


@pytest.mark.parametrize("build", [build_pipeline, build_sdxl_pipeline], ids=["sd1", "sdxl"])
def test_a_full_fine_tune_trains_every_weight_beside_the_tokens_and_saves_a_pipeline_that_knows_them(
        concept_dirs, tmp_path, build):
    """lora=False (--full-fine-tune) with the text encoders: every UNet and text-encoder weight may move, the VAE
    stays; OUT/pipeline, loaded by diffusers alone, has the tokens in its tokenizers with the embedding files'
    vectors and gives the trained pipeline's conditioning and noise prediction; no LoRA, no bundle."""
    from diffusers import DiffusionPipeline

    pipe = build("tiny") if build is build_pipeline else build()
    before = _frozen(pipe)
    cfg = _cfg(concept_dirs, steps=3, lora=False, train_text_encoder=True, vectors=2)
    cfg.train.lr = 1e-3
    method = PivotalTuning(pipe, cfg)
    assert not any("lora_" in k for k in method.trainable_state())
    Trainer(method, cfg.train, tmp_path, hooks=method.hooks()).train()
    now = _frozen(pipe)
    # the embedding matrices grew by the new rows; every other weight is compared as it was
    moved = {k.split(".")[0] for k in before if not k.endswith("token_embedding.weight")
             and not torch.equal(before[k], now[k])}
    assert moved == ({"unet", "text_encoder"} if build is build_pipeline else {"unet", "text_encoder", "text_encoder_2"})
    assert not (tmp_path / "lora").exists() and not (tmp_path / "bundle.safetensors").exists()
    ours_unet, ours_hidden = _unet_out(pipe)
    saved = DiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    files = load_file(str(tmp_path / "tuki" / "learned_embeds.safetensors"))
    for key, tok, te in (("clip_l", saved.tokenizer, saved.text_encoder),
                         ("clip_g", getattr(saved, "tokenizer_2", None), getattr(saved, "text_encoder_2", None))):
        if te is not None:
            ids = tok.convert_tokens_to_ids(["<tuki>", "<tuki>_1"])
            rows = te.get_input_embeddings().weight[ids]
            assert torch.equal(rows, files[key] if build is build_sdxl_pipeline else files["<tuki>"])
    theirs_unet, theirs_hidden = _unet_out(saved)
    assert torch.allclose(theirs_hidden, ours_hidden, atol=1e-6)
    assert torch.allclose(theirs_unet, ours_unet, atol=1e-5)
    fresh_unet, _ = _unet_out(build("tiny") if build is build_pipeline else build(), "a sticker of a monster")
    assert not torch.allclose(fresh_unet, ours_unet, atol=1e-3)  # the check can fail: the training matters


def test_a_full_fine_tune_with_text_encoder_and_ema_resumes_to_the_same_pipeline(concept_dirs, tmp_path):
    """Stopped after 2 of 4 steps and resumed, a full fine-tune with the text encoder and a moving average saves
    the pipeline and token files of the run that never stopped, to the last bit."""
    def cfg():
        c = _cfg(concept_dirs, steps=4, lora=False, train_text_encoder=True, ema_decay=0.9)
        c.train.lr = 1e-3
        return c
    train_pivotal(cfg(), tmp_path / "a", pipe=build_pipeline("tiny"))
    train_pivotal(cfg(), tmp_path / "b", pipe=build_pipeline("tiny"), stop_at=2)
    assert not (tmp_path / "b" / "pipeline").exists()  # the interrupted run saved a checkpoint, not a pipeline
    train_pivotal(cfg(), tmp_path / "b", pipe=build_pipeline("tiny"), resume=True)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        whole, resumed = (load_file(str(tmp_path / run / "pipeline" / part)) for run in ("a", "b"))
        assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole), part
    tokens = [load_file(str(tmp_path / run / "tuki" / "learned_embeds.safetensors")) for run in ("a", "b")]
    assert all(torch.equal(tokens[0][k], tokens[1][k]) for k in tokens[0])
    fresh = build_pipeline("tiny")  # the check can fail: the run trained both the UNet and the text encoder
    for part, module in (("unet/diffusion_pytorch_model.safetensors", fresh.unet),
                         ("text_encoder/model.safetensors", fresh.text_encoder)):
        whole, before = load_file(str(tmp_path / "a" / "pipeline" / part)), module.state_dict()
        assert any(not torch.equal(before[k], whole[k]) for k in whole if k in before and "token_embedding" not in k)


def test_cli_full_fine_tune_saves_a_pipeline_generate_reads(tiny_dir, concept_dirs, tmp_path, capsys):
    from conceptlab.cli.main import main

    out = tmp_path / "run"
    assert main(["train", "pivotal", "--model", str(tiny_dir), "--subject", f"<tuki>={concept_dirs / 'emoji'},class=monster",
                 "--full-fine-tune", "--steps", "2", "--batch-size", "1", "--lr", "1e-4", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "every UNet weight" in said and f"--model {out / 'pipeline'}" in said
    import json

    meta = json.loads((out / "pipeline" / "conceptlab_dreambooth.json").read_text())
    assert meta["method"] == "pivotal" and meta["lora"] is False and meta["subjects"] == ["<tuki>"]
    assert main(["generate", "--model", str(out / "pipeline"), "--prompt", PROMPT, "-n", "1", "--steps", "2",
                 "--out", str(tmp_path / "gen")]) == 0
    assert len(list((tmp_path / "gen").glob("*.png"))) == 1
    capsys.readouterr()
    # trained again in the other mode, the folder keeps only that mode's outputs
    lora_run = ["train", "pivotal", "--model", str(tiny_dir), "--subject", f"<tuki>={concept_dirs / 'emoji'},class=monster",
                "--rank", "2", "--steps", "1", "--batch-size", "1", "--overwrite"]
    assert main([*lora_run, "--out", str(tmp_path / "again")]) == 0
    assert main([*lora_run[:-1], "--full-fine-tune", "--overwrite", "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "pipeline").is_dir() and not (tmp_path / "again" / "lora").exists()
    assert not (tmp_path / "again" / "bundle.safetensors").exists()
    assert main([*lora_run, "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "bundle.safetensors").is_file() and not (tmp_path / "again" / "pipeline").exists()
    capsys.readouterr()
    # its tokens alone onto another model would drop the fine-tune; onto its own model they are there already
    assert main(["generate", "--model", str(tiny_dir), "--concepts", str(out), "--prompt", PROMPT, "--steps", "2",
                 "--out", str(tmp_path / "g2")]) == 2
    assert f"was trained together with every weight of {out / 'pipeline'}" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_dir), "--concepts", str(out / "tuki" / "learned_embeds.safetensors"),
                 "--prompt", PROMPT, "--steps", "2", "--out", str(tmp_path / "g4")]) == 2
    assert "--model" in capsys.readouterr().err
    # a token the model already holds (here one loaded before) is refused as such, not as a word of the vocabulary
    from conceptlab.concepts.formats import Embedding
    from conceptlab.concepts.tokens import load_concepts
    from conceptlab.models.loading import load_pipeline

    pipe = load_pipeline(str(tiny_dir))
    plain = Embedding("<other>", torch.zeros(1, pipe.text_encoder.config.hidden_size))
    load_concepts(pipe, [plain])
    with pytest.raises(InputError, match="is a learned token this model already holds"):
        load_concepts(pipe, [plain])


@pytest.mark.parametrize("token_init", ["class", "random", "sticker"])
def test_token_init_starts_each_token_from_its_class_word_a_random_draw_or_a_word(concept_dirs, token_init):
    pipe = build_pipeline("tiny")
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()  # (V, D) before the token is added
    start = PivotalTuning(pipe, _cfg(concept_dirs, token_init=token_init)).trainable_state()["tokens.vectors"]
    if token_init == "random":  # diffusers' advanced script: a normal draw scaled by the vocabulary's spread
        g = torch.Generator().manual_seed(0)
        expected = torch.randn(1, table.shape[1], generator=g) * table.float().std()
    else:
        word = "monster" if token_init == "class" else token_init
        expected = table[pipe.tokenizer(word, add_special_tokens=False).input_ids].float().mean(0, keepdim=True)
    torch.testing.assert_close(start.float().reshape(expected.shape), expected)


def test_random_starts_give_each_token_its_own_draw_and_an_unreadable_word_is_refused(concept_dirs):
    """Two tokens started at random get two draws from one seeded sequence (diffusers' advanced script draws all new
    tokens at once), not the same vector twice; a word the tokenizer reads as nothing is refused naming --token-init
    (train_pivotal checks it before drawing class images)."""
    cfg = _cfg(concept_dirs, token_init="random")
    cfg.subjects.append(SubjectConfig("<bnh>", str(concept_dirs / "broccoli"), "monster"))
    pipe = build_pipeline("tiny")
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    std = pipe.text_encoder.get_input_embeddings().weight.detach().float().std()
    start = PivotalTuning(pipe, cfg).trainable_state()["tokens.vectors"].float()  # (2, D): <tuki>, <bnh>
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(start, torch.cat([torch.randn(1, width, generator=g) * std for _ in range(2)]))
    assert not torch.equal(start[0], start[1])
    from types import SimpleNamespace

    from conceptlab.training.pivotal import check_token_init

    reads_nothing = lambda word, add_special_tokens: SimpleNamespace(input_ids=[])  # noqa: E731 (CLIP drops some)
    with pytest.raises(InputError, match="--token-init.*tokenizes to nothing"):
        check_token_init(_cfg(concept_dirs, token_init="\u200b"), reads_nothing)
    check_token_init(_cfg(concept_dirs, token_init="random"), reads_nothing)  # no word: nothing to read


@pytest.mark.parametrize("change, match", [
    ({"token_steps": 3}, "--token-steps"), ({"token_steps": 2, "token_frac": 0.5}, "--token-frac"),
    ({"identifier": "tuki"}, "angle brackets"), ({"ema_decay": 1.5}, "--ema-decay"), ({"token_init": " "}, "--token-init"),
    ({"token_init": "runs/tuki.safetensors"}, "--token-init.*looks like a file"),
    ({"token_init": "-big"}, "--token-init.*reads as a flag"),
])
def test_bad_settings_are_refused_before_a_model_loads(concept_dirs, change, match):
    cfg = _cfg(concept_dirs, steps=3)
    for k, v in change.items():
        setattr(cfg.subjects[0] if k == "identifier" else cfg, k, v)
    with pytest.raises(InputError, match=match):
        check_pivotal(cfg)


def test_cli_trains_with_selection_and_generate_uses_the_bundle(tiny_dir, concept_dirs, tmp_path, capsys):
    """`train pivotal --train-text-encoder --select-by` then `generate --concepts BUNDLE`: the images equal
    diffusers' own loaders' given the embedding and the LoRA (UNet and text encoder)."""
    import json

    import numpy as np
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    from conceptlab.cli.main import main

    out = tmp_path / "run"
    assert main(["train", "pivotal", "--model", str(tiny_dir), "--subject", f"<tuki>={concept_dirs / 'emoji'},class=monster",
                 "--rank", "2", "--steps", "2", "--batch-size", "1", "--token-steps", "1", "--select-by",
                 "emotion=1,scene=0.5", "--validate-every", "1", "--validation-seeds", "1", "--train-text-encoder",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "text-encoder LoRA" in said and read_bundle(out / "bundle.safetensors").meta["config"]["train_text_encoder"]
    record = json.loads((out / "selected" / "selection.json").read_text())
    assert f"selected step {record['step']} of 2" in said and record["select_by"] == {"emotion": 1.0, "scene": 0.5}
    assert (out / "selected" / "bundle.safetensors").is_file() and "emotion/tuki" in record["computed"]
    assert main(["generate", "--model", str(tiny_dir), "--concepts", str(out / "bundle.safetensors"), "--prompt",
                 PROMPT, "-n", "1", "--steps", "2", "--out", str(tmp_path / "gen")]) == 0
    ours = np.asarray(Image.open(next((tmp_path / "gen").glob("*.png"))))
    ref = StableDiffusionPipeline.from_pretrained(tiny_dir)
    ref.load_textual_inversion(str(out / "tuki" / "learned_embeds.safetensors"))
    ref.load_lora_weights(str(out / "lora" / DIFFUSERS_NAME))
    from conceptlab.generation.generate import generate_batch

    theirs = np.asarray(generate_batch(ref, [PROMPT], [0], steps=2, progress=False)[0])
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1  # PNG rounding
    assert main(["edit", "--model", str(tiny_dir), "--concepts", str(out), "--prompt", "a monster on a beach", "--to",
                 "a <tuki> monster on a beach", "--steps", "2", "--out", str(tmp_path / "edit")]) == 0
    assert "bundle" in capsys.readouterr().out and (tmp_path / "edit" / "edits.json").is_file()


def test_cli_select_by_errors_come_before_a_model_loads(concept_dirs, tmp_path, capsys):
    from conceptlab.cli.main import main

    base = ["train", "pivotal", "--model", str(tmp_path / "no-model"), "--subject",
            f"<tuki>={concept_dirs / 'emoji'},class=monster", "--out", str(tmp_path / "x")]
    assert main([*base, "--select-by", "clip-t"]) == 2
    assert "metric clip-t needs CLIP weights: pass --clip-model PATH" in capsys.readouterr().err
    assert main([*base, "--select-by", "sharpness"]) == 2
    err = capsys.readouterr().err
    assert "names sharpness, which this run does not compute" in err and "identity/tuki" in err


def test_cli_ema_reaches_the_config_and_is_refused_beside_select_by(tiny_dir, concept_dirs, tmp_path, capsys):
    from conceptlab.cli.main import main

    args = ["train", "pivotal", "--model", str(tiny_dir), "--subject", f"<tuki>={concept_dirs / 'emoji'},class=monster",
            "--rank", "2", "--steps", "2", "--batch-size", "1", "--ema-decay", "0.9"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert read_bundle(tmp_path / "a" / "bundle.safetensors").meta["config"]["ema_decay"] == 0.9
    assert main([*args, "--select-by", "emotion", "--out", str(tmp_path / "b")]) == 2
    assert "--ema-decay=0.9: and --select-by both decide" in capsys.readouterr().err


def test_text_encoder_lr_moves_the_text_encoder_lora_at_its_own_rate(concept_dirs, tmp_path):
    """--text-encoder-lr: after one AdamW step (|update| about the group's lr) the text encoder's LoRA has moved by
    about --text-encoder-lr, the UNet's by about --lr, the tokens by about --token-lr."""
    pipe = build_pipeline("tiny")
    cfg = _cfg(concept_dirs, steps=1, train_text_encoder=True, text_encoder_lr=1e-4, token_lr=1e-3)
    method = PivotalTuning(pipe, cfg)
    init = {k: v.clone() for k, v in method.trainable_state().items()}
    Trainer(method, cfg.train, tmp_path, hooks=method.hooks()).train()
    after = method.trainable_state()

    def moved(prefix):
        return max(float((after[k] - init[k]).abs().max()) for k in after if k.startswith(prefix))

    assert moved("lora.unet") == pytest.approx(1e-2, rel=0.05)
    assert moved("lora.text_encoder") == pytest.approx(1e-4, rel=0.05)
    token = [k for k in after if not k.startswith("lora.")]
    assert token and max(float((after[k] - init[k]).abs().max()) for k in token) == pytest.approx(1e-3, rel=0.05)
