"""`conceptlab train base` on a tiny shape: what it exports, and that a paused run resumes exactly."""

import pytest
import torch

from conceptlab.io import load_torch_checkpoint
from conceptlab.models.tiny import sticker_tokenizer
from conceptlab.training.base_model import BaseModelConfig, train_base_model


def _cfg(**kw) -> BaseModelConfig:
    return BaseModelConfig(**{**dict(shape="tiny", images=24, vae_steps=2, vae_batch=4, unet_steps=4, unet_batch=4,
                                     unet_warmup=1, checkpoint_every=100, bf16=False), **kw})


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    work = tmp_path_factory.mktemp("straight")
    train_base_model(_cfg(), work, work / "export")
    return work


def test_export_loads_with_plain_diffusers_and_keeps_its_schedule_and_tokenizer(straight):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(straight / "export")
    assert pipe.scheduler.config.beta_end == pytest.approx(_cfg().noise_beta_end)
    assert pipe.tokenizer.get_vocab() == sticker_tokenizer().get_vocab()
    image = pipe("a sticker of a happy red apple", num_inference_steps=2, output_type="np").images
    assert image.shape[0] == 1 and torch.isfinite(torch.from_numpy(image)).all()


def test_paused_and_resumed_run_equals_a_straight_run(straight, tmp_path):
    import shutil

    for name in ("images.npy", "vae.ckpt", "latents.pt"):  # same data and VAE: only the UNet stage differs
        shutil.copy(straight / name, tmp_path / name)
    train_base_model(_cfg(), tmp_path, stop_at=2)
    assert load_torch_checkpoint(tmp_path / "unet.ckpt")["step"] == 2
    train_base_model(_cfg(), tmp_path)
    a, b = load_torch_checkpoint(straight / "unet.ckpt"), load_torch_checkpoint(tmp_path / "unet.ckpt")
    assert b["step"] == 4
    for name, value in a["unet"].items():
        assert torch.equal(value, b["unet"][name]), name
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))


def test_decoder_stage_keeps_the_encoder_and_lowers_reconstruction_error(straight, tmp_path):
    import shutil

    from conceptlab.models.tiny import SHAPES, build_vae
    from conceptlab.training.base_model import _to_tensor, make_encoder_deterministic

    for name in ("images.npy", "vae.ckpt", "latents.pt"):
        shutil.copy(straight / name, tmp_path / name)
    cfg = _cfg(decoder_steps=30, decoder_batch=8, decoder_lr=3e-3)
    train_base_model(cfg, tmp_path, stages=("decoder",))
    before, after = build_vae(SHAPES["tiny"]), build_vae(SHAPES["tiny"])
    before.load_state_dict(load_torch_checkpoint(tmp_path / "vae.ckpt")["model"])
    make_encoder_deterministic(before)
    after.load_state_dict(load_torch_checkpoint(tmp_path / "decoder.ckpt")["model"])
    b, a = before.state_dict(), after.state_dict()
    for name in b:  # the encoder side is bit-identical, so the UNet's cached latents stay valid
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(b[name], a[name]), name
    assert any(not torch.equal(b[n], a[n]) for n in b if n.startswith("decoder."))
    import numpy as np

    x = _to_tensor(np.load(tmp_path / "images.npy"))
    mean = load_torch_checkpoint(tmp_path / "latents.pt")["moments"].chunk(2, dim=1)[0]
    with torch.no_grad():
        err = lambda vae: (vae.decode(mean).sample - x).pow(2).mean().item()  # noqa: E731
        assert err(after) < err(before)


def test_warm_start_from_a_pipeline_folder_copies_unet_text_encoder_and_vae(straight, tmp_path):
    from diffusers import StableDiffusionPipeline

    # lr 1e-12 (the loop refuses 0): one step moves no weight by more than ~1e-12
    cfg = _cfg(vae_steps=0, vae_init=str(straight / "export"), unet_init=str(straight / "export"), unet_steps=1,
               unet_lr=1e-12)
    train_base_model(cfg, tmp_path, tmp_path / "export", stages=("vae", "latents", "unet", "export"))
    src = StableDiffusionPipeline.from_pretrained(straight / "export")
    dst = StableDiffusionPipeline.from_pretrained(tmp_path / "export")
    for part in ("vae", "unet", "text_encoder"):
        a, b = getattr(src, part).state_dict(), getattr(dst, part).state_dict()
        for name in a:  # one step at lr 1e-12 changes nothing to 1e-6, so the export equals its starting point
            assert torch.allclose(a[name], b[name], atol=1e-6), (part, name)


def test_decoder_only_update_ships_the_init_unet_and_encoder_untouched(straight, tmp_path):
    from diffusers import StableDiffusionPipeline

    init = str(straight / "export")
    cfg = _cfg(vae_steps=0, vae_init=init, unet_steps=0, unet_init=init, decoder_steps=3, decoder_batch=4,
               decoder_lr=3e-3)
    train_base_model(cfg, tmp_path, tmp_path / "export")
    src = StableDiffusionPipeline.from_pretrained(straight / "export")
    dst = StableDiffusionPipeline.from_pretrained(tmp_path / "export")
    for part in ("unet", "text_encoder"):
        a, b = getattr(src, part).state_dict(), getattr(dst, part).state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a), part
    a, b = src.vae.state_dict(), dst.vae.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a if n.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(a[n], b[n]) for n in a if n.startswith("decoder."))
    assert dst.vae.config.scaling_factor == pytest.approx(src.vae.config.scaling_factor)


def test_training_set_keeps_faces_on_rare_face_objects_at_their_rate_and_never_on_faceless_ones():
    from conceptlab.models.base import HeldOut
    from conceptlab.training.base_model import training_specs

    def faced(held: HeldOut, obj: str) -> tuple[int, int]:
        specs = [s for s in training_specs(_cfg(images=3000, held_out=held)) if s.object == obj]
        return sum(s.emotion != "none" for s in specs), len(specs)

    on, n = faced(HeldOut(faceless_only=(), rare_faces={"broccoli": 0.2}), "broccoli")
    assert 0.12 < on / n < 0.28  # ~20% of broccoli keep a face (5/6 of sampled emotions are faces)
    assert faced(HeldOut(faceless_only=("broccoli",), rare_faces={}), "broccoli")[0] == 0
    cat_on, cat_n = faced(HeldOut(faceless_only=(), rare_faces={"broccoli": 0.2}), "cat")
    assert cat_on / cat_n > 0.6  # other objects are untouched
    # the same config always draws the same set
    assert training_specs(_cfg(images=300)) == training_specs(_cfg(images=300))


def _encoder_drift(init: str, ckpt, images) -> float:
    """RMS change of the latent means between the VAE at `init` and the one in `ckpt`, over their spread."""
    from diffusers import AutoencoderKL

    from conceptlab.models.tiny import SHAPES, build_vae
    from conceptlab.training.base_model import _to_tensor

    old, new = AutoencoderKL.from_pretrained(init, subfolder="vae"), build_vae(SHAPES["tiny"])
    new.load_state_dict(load_torch_checkpoint(ckpt)["model"])
    x = _to_tensor(images)
    with torch.no_grad():
        a, b = old.encode(x).latent_dist.mean, new.encode(x).latent_dist.mean
    return ((a - b).pow(2).mean() / a.var()).sqrt().item()


def test_vae_fine_tune_with_an_anchor_keeps_the_latents_a_trained_unet_reads(straight, tmp_path):
    import shutil

    import numpy as np

    init = str(straight / "export")
    drift = {}
    for weight in (0.0, 5.0):
        work = tmp_path / f"anchor{weight}"
        work.mkdir()
        shutil.copy(straight / "images.npy", work / "images.npy")
        cfg = _cfg(vae_init=init, vae_steps=12, vae_lr=3e-3, vae_anchor_weight=weight, vae_face_weight=2.0)
        train_base_model(cfg, work, stages=("vae",))
        assert load_torch_checkpoint(work / "vae.ckpt")["step"] == 12
        drift[weight] = _encoder_drift(init, work / "vae.ckpt", np.load(work / "images.npy"))
    assert drift[0.0] > 0.05  # free fine-tuning at this lr moves the latent space...
    assert drift[5.0] < 0.5 * drift[0.0], drift  # ...the anchor holds it


def test_vae_fine_tune_draws_rare_face_images_boost_times_as_often_and_lets_only_them_move():
    import numpy as np

    from conceptlab.models.base import HeldOut
    from conceptlab.models.tiny import SHAPES
    from conceptlab.training.base_model import _anchor_loss, _vae_targets, training_specs

    cfg = _cfg(images=400, held_out=HeldOut(rare_faces={"broccoli": 1.0}), vae_rare_face_boost=6.0)
    specs = training_specs(cfg)
    draw, _, anchor, moved = _vae_targets(cfg, SHAPES["tiny"], len(specs))
    truth = np.array([s.object == "broccoli" and s.emotion != "none" for s in specs])
    assert anchor is None and moved.tolist() == truth.tolist() and 0 < truth.sum() < 100
    counts = np.bincount(draw(np.random.default_rng(0), 200_000), minlength=len(specs))
    ratio = counts[truth].mean() / counts[~truth].mean()
    assert 5.4 < ratio < 6.6, ratio
    mean = torch.randn(3, 4, 4, 4)  # with nothing to keep the anchor adds nothing
    assert _anchor_loss(None, torch.zeros(3, 3, 32, 32), mean, np.zeros(3, dtype=bool)).item() == 0.0
    with pytest.raises(ValueError, match="vae_init"):
        _vae_targets(_cfg(vae_anchor_weight=1.0), SHAPES["tiny"], 24)


def test_unboosted_sampler_draws_exactly_what_earlier_versions_drew():
    """Configs without a boost (every shipped lineage step before it existed) must resume bit-identically."""
    import numpy as np

    from conceptlab.training.base_model import _batch_sampler

    boosted = np.zeros(50, dtype=bool)
    boosted[:5] = True
    plain = _batch_sampler(boosted, 1.0, 50)(np.random.default_rng(3), 32)
    assert plain.tolist() == np.random.default_rng(3).integers(0, 50, 32).tolist()
    heavy = _batch_sampler(boosted, 40.0, 50)(np.random.default_rng(3), 4000)
    assert (heavy < 5).mean() > 0.7  # 5 images x 40 against 45 x 1: 200/245 of the draws


# ---------------------------------------------------------------- every stage on the shared loop: pause, resume
def _autoencoder_run(straight, work, stage, stop_at=None, log=lambda row: None):
    """Runs the VAE or the decoder stage alone on the straight run's images (and, for the decoder, its VAE)."""
    import numpy as np

    from conceptlab.training.base_model import stage_decoder, stage_latents, stage_vae

    cfg = _cfg(vae_steps=4, decoder_steps=4, decoder_batch=4, decoder_lr=3e-3, vae_face_weight=1.0)
    images = np.load(straight / "images.npy")
    work.mkdir(exist_ok=True)
    if stage == "vae":
        stage_vae(cfg, work, images, log, stop_at=stop_at)
        return load_torch_checkpoint(work / "vae.ckpt")
    import shutil

    for name in ("vae.ckpt", "latents.pt"):
        if not (work / name).exists():
            shutil.copy(straight / name, work / name)
    vae = stage_vae(_cfg(), work, images, lambda row: None)
    moments, _ = stage_latents(cfg, work, images, vae)
    stage_decoder(cfg, work, images, moments, vae, log, stop_at=stop_at)
    return load_torch_checkpoint(work / "decoder.ckpt")


@pytest.mark.parametrize("stage", ["vae", "decoder"])
def test_a_paused_and_resumed_autoencoder_stage_equals_a_straight_one(straight, tmp_path, stage):
    a = _autoencoder_run(straight, tmp_path / "a", stage)
    paused = _autoencoder_run(straight, tmp_path / "b", stage, stop_at=2)
    assert (a["step"], paused["step"]) == (4, 2)  # the paused stage leaves its result for export_from_checkpoints
    assert (tmp_path / "b" / stage / "checkpoints" / "step-000002").is_dir()
    b = _autoencoder_run(straight, tmp_path / "b", stage)
    assert b["step"] == 4 and a["model"].keys() == b["model"].keys()
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_ctrl_c_in_a_stage_saves_its_step_and_a_second_call_continues_exactly(straight, tmp_path, monkeypatch):
    import os
    import signal

    from conceptlab.training import base_model
    from conceptlab.training.loop import TrainingStopped

    a = _autoencoder_run(straight, tmp_path / "a", "vae")
    calls, pixel_loss = [0], base_model._pixel_loss

    def interrupted_at_3(*args):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # mid-step: the loop finishes step 3 and saves it
        return pixel_loss(*args)

    monkeypatch.setattr(base_model, "_pixel_loss", interrupted_at_3)
    with pytest.raises(TrainingStopped) as stop:
        _autoencoder_run(straight, tmp_path / "b", "vae")
    assert (stop.value.result.stopped, stop.value.result.steps) == ("interrupted", 3)
    assert load_torch_checkpoint(tmp_path / "b" / "vae.ckpt")["step"] == 3
    monkeypatch.setattr(base_model, "_pixel_loss", pixel_loss)
    b = _autoencoder_run(straight, tmp_path / "b", "vae")
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def test_a_stage_writes_its_log_rows_from_an_after_step_hook(straight, tmp_path, monkeypatch):
    from conceptlab.training import base_model

    monkeypatch.setattr(base_model._VaeTraining, "log_every", 2)  # 50 in a real run
    rows = []
    _autoencoder_run(straight, tmp_path, "vae", log=rows.append)
    assert [(r["stage"], r["step"]) for r in rows] == [("vae", 2), ("vae", 4)]
    assert all(r["loss"] > 0 and 0 < r["psnr"] < 60 for r in rows)


def test_settings_the_loop_cannot_train_are_refused_naming_the_config_key(tmp_path):
    from conceptlab.errors import InputError

    with pytest.raises(InputError, match=r"--config unet_lr=0"):
        train_base_model(_cfg(unet_lr=0.0), tmp_path)
    with pytest.raises(InputError, match=r"--config vae_batch=0"):
        train_base_model(_cfg(vae_batch=0), tmp_path)


def test_an_unfinished_stage_from_before_the_shared_loop_is_refused_not_restarted(straight, tmp_path):
    import shutil

    from conceptlab.errors import InputError

    for name in ("images.npy", "vae.ckpt"):
        shutil.copy(straight / name, tmp_path / name)
    with pytest.raises(InputError, match=r"vae\.ckpt.*step 2 of 6 and has no loop checkpoints"):
        train_base_model(_cfg(vae_steps=6), tmp_path, stages=("vae",))


def test_resume_accepts_the_config_a_run_was_started_with_and_names_a_changed_key(straight):
    from conceptlab.errors import InputError
    from conceptlab.training.base_model import check_work_folder

    check_work_folder(_cfg(), straight, resume=True)  # the default held_out's tuples are lists in config.json
    with pytest.raises(InputError, match=r"--work=.*holds a base-model run already.*--resume"):
        check_work_folder(_cfg(), straight, resume=False)
    with pytest.raises(InputError, match=r"other settings \(unet_lr: 0.0004 -> 0.001\)"):
        check_work_folder(_cfg(unet_lr=1e-3), straight, resume=True)


@pytest.mark.slow
def test_rendering_in_worker_processes_gives_the_images_rendered_here(tmp_path, monkeypatch):
    """Small sets render in this process, large ones in two spawned workers: the same images either way."""
    import numpy as np

    import conceptlab.training.base_model as B

    for name in ("here", "pooled"):
        (tmp_path / name).mkdir()
    here = B.stage_render(_cfg(images=8), tmp_path / "here")
    monkeypatch.setattr(B, "POOL_FROM", 0)
    pooled = B.stage_render(_cfg(images=8), tmp_path / "pooled")
    assert here.shape[0] == 8 and np.array_equal(here, pooled)
