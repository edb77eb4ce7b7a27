import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.concepts.lora import DIFFUSERS_NAME, KOHYA_NAME, load_lora, lora_format
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline
from conceptlab.training.class_images import prepare_class_images
from conceptlab.training.data import CachedLatents
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig, parse_subject
from conceptlab.training.loop import TrainConfig, Trainer


def _np(pipe, prompt="a tuki monster", seed=0):
    g = torch.Generator().manual_seed(seed)
    return pipe(prompt, num_inference_steps=2, generator=g, output_type="np").images


def _cfg(concept_dirs, steps=3, **kw):
    return DreamBoothConfig(subjects=[SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster"),
                                      SubjectConfig("bnh", str(concept_dirs / "emoji"), "monster")],
                            train=TrainConfig(steps=steps, batch_size=2, lr=1e-2), **kw)


@pytest.fixture(scope="module")
def class_latents(tmp_path_factory):
    pipe = build_pipeline("tiny")
    images = prepare_class_images(pipe, "a monster", 3, tmp_path_factory.mktemp("cls"), "tiny", steps=2)
    return {"monster": CachedLatents.encode(pipe.vae, images, flip=False)}


def test_lora_files_load_in_diffusers_and_match_ours(concept_dirs, class_latents, tmp_path):
    pipe = build_pipeline("tiny")
    cfg = _cfg(concept_dirs, lora=True, rank=2, prior_preservation=True)
    Trainer(DreamBooth(pipe, cfg, class_latents), cfg.train, tmp_path).train()
    ours = _np(pipe)
    fresh = build_pipeline("tiny")
    assert not np.allclose(_np(fresh), ours)  # the LoRA changed something
    fresh.load_lora_weights(str(tmp_path / "lora" / DIFFUSERS_NAME))
    assert np.allclose(_np(fresh), ours, atol=1e-5)
    kohya = build_pipeline("tiny")
    kohya.load_lora_weights(str(tmp_path / "lora" / KOHYA_NAME))  # kohya keys converted back by diffusers
    assert np.allclose(_np(kohya), ours, atol=1e-5)
    assert lora_format(tmp_path / "lora" / KOHYA_NAME) == "kohya"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lora" / DIFFUSERS_NAME), framework="pt") as f:
        meta = f.metadata()
    assert '"subjects": ["tuki", "bnh"]' in meta["conceptlab"] and '"rank": 2' in meta["conceptlab"]


def test_full_finetune_saves_a_pipeline_that_diffusers_loads(concept_dirs, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = build_pipeline("tiny")
    vae_before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    cfg = _cfg(concept_dirs, steps=2)
    Trainer(DreamBooth(pipe, cfg), cfg.train, tmp_path).train()
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    loaded.set_progress_bar_config(disable=True)
    assert np.allclose(_np(loaded), _np(pipe), atol=1e-6)
    assert all(torch.equal(v, loaded.vae.state_dict()[k]) for k, v in vae_before.items())


def test_lora_resume_is_exact(concept_dirs, tmp_path):
    def run(steps, out, resume=False):
        pipe = build_pipeline("tiny")
        cfg = _cfg(concept_dirs, steps=steps, lora=True, rank=2)
        method = DreamBooth(pipe, cfg)
        Trainer(method, cfg.train, out).train(resume=resume)
        return method.trainable_state()

    straight = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed = run(4, tmp_path / "b", resume=True)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_batches_balance_subjects_and_pair_class_examples(concept_dirs, class_latents):
    method = DreamBooth(build_pipeline("tiny"), _cfg(concept_dirs, prior_preservation=True), class_latents)
    inst, texts, _, cls, cls_texts = method.batch(4, torch.Generator().manual_seed(0))
    assert sorted(texts) == ["a bnh monster", "a bnh monster", "a tuki monster", "a tuki monster"]
    assert cls.shape == inst.shape and cls_texts == ["a monster"] * 4


def test_class_images_manifest_reuse_mismatch_and_blank_rejection(tmp_path):
    pipe = build_pipeline("tiny")
    calls = []
    real_call = pipe.__class__.__call__

    def flaky(self, prompts, **kw):
        out = real_call(self, prompts, **kw)
        if not calls:  # the first image of the first batch comes back black
            out.images[0] = Image.new("RGB", out.images[0].size)
        calls.append(len(prompts))
        return out

    pipe.__class__ = type("Flaky", (pipe.__class__,), {"__call__": flaky})
    images = prepare_class_images(pipe, "a monster", 3, tmp_path, "tiny", steps=2, batch_size=2)
    assert len(images) == 3 and not any(np.asarray(im).std() < 3 for im in images)
    n_calls = len(calls)
    again = prepare_class_images(pipe, "a monster", 3, tmp_path, "tiny", steps=2, batch_size=2)
    assert len(calls) == n_calls and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    with pytest.raises(InputError, match="other settings"):
        prepare_class_images(pipe, "a cat", 3, tmp_path, "tiny", steps=2)
    with torch.no_grad():  # same model name, retrained weights: their class images are not these
        next(pipe.unet.parameters()).view(-1)[-1] += 1e-3
    with pytest.raises(InputError, match="'weights'"):
        prepare_class_images(pipe, "a monster", 3, tmp_path, "tiny", steps=2, batch_size=2)
    n_calls = len(calls)
    with pytest.warns(UserWarning, match="making them again"):  # a run's own folder: remade, not an error
        remade = prepare_class_images(pipe, "a monster", 3, tmp_path, "tiny", steps=2, batch_size=2, replace_stale=True)
    assert len(remade) == 3 and len(calls) > n_calls
    assert prepare_class_images(pipe, "a monster", 3, tmp_path, "tiny", steps=2, batch_size=2)  # now it matches
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (8, 8)).save(loose / "x.png")
    with pytest.raises(InputError, match="without a manifest"):
        prepare_class_images(pipe, "a monster", 1, loose, "tiny", steps=2)


def test_lora_for_another_architecture_is_refused(concept_dirs, tmp_path):
    pipe = build_pipeline("tiny")
    cfg = _cfg(concept_dirs, steps=1, lora=True, rank=2)
    Trainer(DreamBooth(pipe, cfg), cfg.train, tmp_path).train()
    other = build_pipeline("tiny", unet_channels=(32, 48))
    with pytest.raises(InputError, match="has size"):
        load_lora(other, tmp_path / "lora" / DIFFUSERS_NAME)


def test_bad_subjects(concept_dirs):
    with pytest.raises(InputError, match="no class word"):
        parse_subject(f"tuki={concept_dirs / 'broccoli'}")
    with pytest.raises(InputError, match="--rank"):
        DreamBooth(build_pipeline("tiny"), _cfg(concept_dirs, lora=True, rank=0))
    with pytest.warns(UserWarning, match="common word"):
        DreamBooth(build_pipeline("tiny"), DreamBoothConfig(
            subjects=[SubjectConfig("dog", str(concept_dirs / "broccoli"), "monster")]))
    with pytest.raises(InputError, match="class images were not prepared"):
        DreamBooth(build_pipeline("tiny"), _cfg(concept_dirs, prior_preservation=True))


def test_subjects_a_frozen_text_encoder_cannot_tell_apart_are_warned_about(concept_dirs):
    """Identifiers spelt letter by letter that differ in one letter whose embeddings are made equal encode alike."""
    import warnings

    pipe = build_pipeline("tiny")
    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster"),
                                     SubjectConfig("tuka", str(concept_dirs / "emoji"), "monster")],
                           train=TrainConfig(steps=1, batch_size=2))
    tok, emb = pipe.tokenizer, pipe.text_encoder.get_input_embeddings().weight
    last = [tok.tokenize(w)[-1] for w in ("tuki", "tuka")]
    assert last[0] != last[1]
    with warnings.catch_warnings(record=True) as caught:  # distinct embeddings: nothing to warn about
        warnings.simplefilter("always")
        DreamBooth(pipe, cfg)
    assert not [w for w in caught if "cannot tell them apart" in str(w.message)]
    with torch.no_grad():
        emb[tok.convert_tokens_to_ids(last[1])] = emb[tok.convert_tokens_to_ids(last[0])]
    with pytest.warns(UserWarning, match="'tuki' and 'tuka'.*--train-text-encoder"):
        DreamBooth(pipe, cfg)
    with warnings.catch_warnings(record=True) as caught:  # training the text encoder: nothing to warn about
        warnings.simplefilter("always")
        DreamBooth(pipe, DreamBoothConfig(subjects=cfg.subjects, train=cfg.train, train_text_encoder=True))
    assert not [w for w in caught if "cannot tell them apart" in str(w.message)]


def test_captions_name_the_subject_inside_each_images_own_caption(concept_dirs):
    import json

    from conceptlab.training.dreambooth import parse_subject

    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster", captions="broccoli"),
                                     SubjectConfig("bnh", str(concept_dirs / "emoji"), "monster")],
                           train=TrainConfig(steps=1, batch_size=2))
    method = DreamBooth(build_pipeline("tiny"), cfg)
    rows = [json.loads(x) for x in (concept_dirs / "broccoli" / "metadata.jsonl").read_text().splitlines()]
    own = {r["text"].replace("broccoli", "tuki monster") for r in rows}
    assert set(method.captions[0]) == own and method.captions[1] is None
    texts = set()
    for seed in range(6):
        texts |= set(method.batch(2, torch.Generator().manual_seed(seed))[1])
    assert "a bnh monster" in texts and texts - {"a bnh monster"} <= own and len(texts & own) > 1
    assert parse_subject("tuki=d,class=monster,captions=monster").captions == "monster"


def test_captioned_class_prompts_draw_class_images_per_caption_and_train_each_with_its_prompt(concept_dirs, tmp_path):
    import json

    from conceptlab.training.dreambooth import class_prompts, train_dreambooth

    tuki = SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster", captions="broccoli")
    cfg = DreamBoothConfig(subjects=[tuki], prior_preservation=True, class_prompts="captions", class_images=6,
                           class_steps=2, train=TrainConfig(steps=1, batch_size=2, checkpoint_every=0, preview_every=0))
    rows = [json.loads(x) for x in (concept_dirs / "broccoli" / "metadata.jsonl").read_text().splitlines()]
    expected = list(dict.fromkeys(["a monster"] + [r["text"].replace("broccoli", "monster") for r in rows]))
    assert class_prompts(cfg) == {"monster": expected} and len(expected) > 2
    train_dreambooth(cfg, tmp_path, pipe=build_pipeline("tiny"))
    manifests = [json.loads(m.read_text()) for m in (tmp_path / "class-images" / "monster").rglob("manifest.json")]
    assert sorted(m["prompt"] for m in manifests) == sorted(expected)
    assert all(m["count"] == -(-6 // len(expected)) and m["steps"] == 2 for m in manifests)  # --class-steps reached them
    # pairing: class latent k (constant k) must come with prompt k, through the mirrored half too
    n = 3
    mean = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 4, 4, 4).repeat(2, 1, 1, 1)
    pool = CachedLatents(mean, torch.full_like(mean, -60.0), 1.0)
    plain = DreamBooth(build_pipeline("tiny"), DreamBoothConfig(subjects=[SubjectConfig("tuki", tuki.folder, "monster")],
                       prior_preservation=True), {"monster": pool}, {"monster": [f"prompt {k}" for k in range(n)]})
    for seed in range(4):
        _, _, _, cls, cls_txt = plain.batch(4, torch.Generator().manual_seed(seed))
        assert cls_txt == [f"prompt {round(v)}" for v in cls.mean(dim=(1, 2, 3)).tolist()]
    with pytest.raises(InputError, match="no captions"):
        DreamBooth(build_pipeline("tiny"), _cfg(concept_dirs, class_prompts="captions"))


def test_a_fingerprint_handed_in_is_the_one_the_manifest_checks(tmp_path):
    from conceptlab.training.class_images import weights_fingerprint

    pipe = build_pipeline("tiny")
    prepare_class_images(pipe, "a monster", 1, tmp_path, "tiny", steps=2, fingerprint=weights_fingerprint(pipe))
    assert prepare_class_images(pipe, "a monster", 1, tmp_path, "tiny", steps=2)  # the same weights: reused
    with pytest.raises(InputError, match="other settings"):
        prepare_class_images(pipe, "a monster", 1, tmp_path, "tiny", steps=2, fingerprint="another model")


def test_the_starting_lora_comes_from_the_run_seed_and_leaves_the_global_generator_alone(concept_dirs):
    def lora_a(pipe, seed: int) -> dict:
        cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster")], lora=True,
                               train_text_encoder=True, train=TrainConfig(steps=1, seed=seed))
        method = DreamBooth(pipe, cfg)
        return {k: v.detach().clone() for k, v in method._named_trainable().items() if "lora_A" in k}

    pipes = [build_pipeline("tiny") for _ in range(3)]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = lora_a(pipes[0], 5)
    assert torch.equal(torch.rand(3), before), "building the LoRA moved the caller's global generator"
    torch.manual_seed(999)  # a different global state must not matter
    again, other = lora_a(pipes[1], 5), lora_a(pipes[2], 6)
    assert first and any(k.startswith("text_encoder") for k in first), "the text encoder's LoRA is seeded too"
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not any(torch.equal(first[k], other[k]) for k in first)


def test_dreambooth_draws_its_timesteps_with_the_configured_bias(concept_dirs):
    from conceptlab.training.diffusion import TimestepBias

    pipe = build_pipeline("tiny")
    method = DreamBooth(pipe, _cfg(concept_dirs, lora=True, rank=2, timestep_bias=TimestepBias("earlier", 50.0, 0.05)))
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(30):
            method.loss(2, g)
    hook.remove()
    # the least noisy 5% of the timesteps at weight 50 against 1: 72% of the draws (5% drawn evenly)
    assert (torch.cat(seen) < 50).float().mean() > 0.5


def test_ema_saves_and_returns_the_moving_average_computed_by_hand(concept_dirs, tmp_path):
    """--ema-decay: the saved pipeline and the returned one hold diffusers' EMAModel average of the weights
    after each step (decay_t = min(d, (1 + t) / (10 + t))), recomputed here from the steps' weights."""
    from diffusers import StableDiffusionPipeline

    from conceptlab.training.dreambooth import train_dreambooth

    pipe = build_pipeline("tiny")
    cfg = _cfg(concept_dirs, steps=4, ema_decay=0.5)
    name = "unet.conv_in.weight"
    w0 = pipe.unet.conv_in.weight.detach().clone()
    seen = []
    record = lambda trainer: seen.append(pipe.unet.conv_in.weight.detach().clone())  # noqa: E731
    _, result = train_dreambooth(cfg, tmp_path, pipe=pipe, hooks=[record])
    average = w0
    for t, w in enumerate(seen, start=1):
        d = min(0.5, (1 + t) / (10 + t))
        average = d * average + (1 - d) * w
    assert len(seen) == 4 and not torch.allclose(seen[-1], average, atol=1e-6)  # the average is not the last step
    assert torch.allclose(pipe.unet.conv_in.weight, average, atol=1e-6), name
    saved = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    assert torch.allclose(saved.unet.conv_in.weight, average, atol=1e-6)


def test_ema_resume_is_exact(concept_dirs, tmp_path):
    from conceptlab.training.dreambooth import train_dreambooth

    def run(steps, out, resume=False):
        cfg = _cfg(concept_dirs, steps=steps, lora=True, rank=2, ema_decay=0.9)
        pipe, _ = train_dreambooth(cfg, out, resume=resume, pipe=build_pipeline("tiny"))
        return {k: v.detach().clone() for k, v in pipe.unet.named_parameters() if "lora" in k}

    straight = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed = run(4, tmp_path / "b", resume=True)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_ema_settings_are_refused(concept_dirs):
    from conceptlab.training.dreambooth import check_subjects, train_dreambooth
    from conceptlab.training.selection import make_selection

    for bad in (1.0, -0.1):
        with pytest.raises(InputError, match="--ema-decay"):
            check_subjects(_cfg(concept_dirs, ema_decay=bad))
    cfg = _cfg(concept_dirs, ema_decay=0.9)
    selection = make_selection("emotion", 2, subjects=cfg.subjects, seeds=1)
    with pytest.raises(InputError, match="--select-by"):
        train_dreambooth(cfg, "unused", pipe=build_pipeline("tiny"), hooks=[selection])


def test_text_encoder_lr_moves_the_text_encoder_at_its_own_rate(concept_dirs, tmp_path):
    """--text-encoder-lr: AdamW's first step moves each weight by about its group's lr (|update| = lr * |m/sqrt(v)|
    = lr for a fresh moment, plus weight decay), so after one step the UNet's largest change is about --lr and the
    text encoder's about --text-encoder-lr."""
    def largest_change(text_encoder_lr):
        pipe = build_pipeline("tiny")
        fc1 = next(p for n, p in pipe.text_encoder.named_parameters() if n.endswith("layers.0.mlp.fc1.weight"))
        after = {"unet": pipe.unet.conv_in.weight, "text": fc1}
        before = {k: v.detach().clone() for k, v in after.items()}
        cfg = _cfg(concept_dirs, steps=1, train_text_encoder=True, text_encoder_lr=text_encoder_lr)
        Trainer(DreamBooth(pipe, cfg), cfg.train, tmp_path / str(text_encoder_lr)).train()
        return {k: float((after[k].detach() - before[k]).abs().max()) for k in before}

    same = largest_change(None)  # one group at lr 1e-2
    split = largest_change(1e-4)
    import json

    rows = [json.loads(line) for line in (tmp_path / "0.0001" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["lr"] == 1e-2 and rows[-1]["lr_groups"] == pytest.approx([1e-2, 1e-4])
    assert "lr_groups" not in json.loads((tmp_path / "None" / "metrics.jsonl").read_text().splitlines()[-1])
    assert same["unet"] == pytest.approx(1e-2, rel=0.05) and same["text"] == pytest.approx(1e-2, rel=0.05)
    assert split["unet"] == pytest.approx(1e-2, rel=0.05)
    assert split["text"] == pytest.approx(1e-4, rel=0.05)


def test_text_encoder_lr_resumes_exactly(concept_dirs, tmp_path):
    from conceptlab.training.dreambooth import train_dreambooth

    def run(steps, out, resume=False):
        cfg = _cfg(concept_dirs, steps=steps, lora=True, rank=2, train_text_encoder=True, text_encoder_lr=1e-3)
        pipe, _ = train_dreambooth(cfg, out, resume=resume, pipe=build_pipeline("tiny"))
        return {f"{name}.{k}": v.detach().clone() for name, m in (("unet", pipe.unet), ("text", pipe.text_encoder))
                for k, v in m.named_parameters() if "lora" in k}

    straight = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed = run(4, tmp_path / "b", resume=True)
    assert any(k.startswith("text.") for k in straight)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_text_encoder_lr_is_refused(concept_dirs):
    from conceptlab.training.dreambooth import check_subjects

    with pytest.raises(InputError, match="--text-encoder-lr.*does not train"):
        check_subjects(_cfg(concept_dirs, text_encoder_lr=1e-5))
    for bad in (0.0, -1e-5, 2.0):
        with pytest.raises(InputError, match="--text-encoder-lr"):
            check_subjects(_cfg(concept_dirs, train_text_encoder=True, text_encoder_lr=bad))


@pytest.mark.parametrize("buckets", [False, True])
def test_caption_dropout_trains_that_share_on_the_bare_prompt(concept_dirs, tmp_path, buckets):
    """--caption-dropout: a subject with captions draws its bare prompt ('a tuki monster') on about that share of
    its examples, its captions on the rest; 0 never draws it. Batches from aspect-ratio buckets draw it alike."""
    import json

    from conceptlab.training.buckets import BucketConfig

    folder = tmp_path / "tuki"
    folder.mkdir()
    rows = []
    for k in range(3):
        Image.new("RGB", (32, 32), (40 * k, 80, 120)).save(folder / f"{k}.png")
        rows.append({"file_name": f"{k}.png", "text": f"a sticker of a happy monster number {k}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    subject = SubjectConfig("tuki", str(folder), "monster", captions="monster")

    def texts(rate, seed=0):
        cfg = DreamBoothConfig(subjects=[subject], caption_dropout=rate, buckets=BucketConfig(enabled=buckets),
                               train=TrainConfig(steps=1, batch_size=4))
        method, g = DreamBooth(build_pipeline("tiny"), cfg), torch.Generator().manual_seed(seed)
        assert (method.buckets is not None) == buckets
        draw = method.bucket_batch if buckets else method.batch
        return [t for _ in range(100) for t in draw(4, g)[1]]

    bare = [t == "a tuki monster" for t in texts(0.3)]
    assert 0.2 < sum(bare) / len(bare) < 0.4
    assert all("tuki monster number" in t for t, b in zip(texts(0.3), bare) if not b)
    assert not any(t == "a tuki monster" for t in texts(0.0))


def test_bad_caption_dropout_is_refused(concept_dirs):
    from conceptlab.training.dreambooth import check_subjects

    with pytest.raises(InputError, match="--caption-dropout.*captions"):
        check_subjects(_cfg(concept_dirs, caption_dropout=0.3))  # no subject trains on captions
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="--caption-dropout"):
            check_subjects(_cfg(concept_dirs, caption_dropout=bad))


def test_a_run_checkpointed_before_newer_settings_existed_still_resumes(concept_dirs, tmp_path):
    """A checkpoint whose fingerprint predates ema_decay, text_encoder_lr, caption_dropout and class_steps (an older version
    wrote none of them) resumes when this run leaves them at their defaults, and ends where a straight run does;
    asking for one of them is still refused as a different run."""
    import json

    from conceptlab.training.dreambooth import train_dreambooth
    from conceptlab.training.loop import _write_manifest

    def run(steps, out, resume=False, **kw):
        cfg = _cfg(concept_dirs, steps=steps, lora=True, rank=2, **kw)
        pipe, _ = train_dreambooth(cfg, out, resume=resume, pipe=build_pipeline("tiny"))
        return {k: v.detach().clone() for k, v in pipe.unet.named_parameters() if "lora" in k}

    straight = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    files = list((tmp_path / "b").rglob("loop.json"))
    assert files
    for f in files:
        loop = json.loads(f.read_text())
        assert {"ema_decay", "text_encoder_lr", "caption_dropout", "class_steps"} <= set(loop["fingerprint"])
        for key in ("ema_decay", "text_encoder_lr", "caption_dropout", "class_steps"):
            del loop["fingerprint"][key]
        f.write_text(json.dumps(loop))
        (f.parent / "manifest.json").unlink()
        _write_manifest(f.parent)  # as the older version wrote it
    resumed = run(4, tmp_path / "b", resume=True)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    with pytest.raises(InputError, match="ema_decay"):
        run(6, tmp_path / "b", resume=True, ema_decay=0.5)
