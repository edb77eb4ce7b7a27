"""Aspect-ratio buckets: the bucket set, each image's bucket and crop, SDXL's size conditioning against diffusers'
formula, and textual inversion / DreamBooth-LoRA runs on mixed-aspect images on SD 1.x and SDXL."""

from __future__ import annotations

import math
import random
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.cli.main import main
from conceptlab.errors import InputError
from conceptlab.models.families import SDXL, SizeConditioning
from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline
from conceptlab.training.buckets import (
    BucketConfig,
    BucketLatents,
    bucket_sizes,
    check_bucket_config,
    default_step,
    draw_bucket_items,
    encode_buckets,
    nearest_bucket,
    place,
    run_record,
)
from conceptlab.training.data import CachedLatents, mask_weights
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig
from conceptlab.training.loop import TrainConfig, Trainer
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
from conceptlab.world.export import export_images

WIDE, TALL = (64, 36), (30, 56)  # (w, h): at the tiny models' 32 px these land in the 40x24 and 24x40 buckets
BUILD = {"sd1": lambda: build_pipeline("tiny"), "sdxl": build_sdxl_pipeline}


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """Three wide and three tall monster pictures with their masks (white = the monster), resized alike."""
    root = tmp_path_factory.mktemp("mixed")
    export_images(root / "src", 6, seed=5000, size=32, only={"object": {"monster"}, "individual": {"tuki"}},
                  individual_rate=1.0, masks=True)
    (root / "tuki" / "masks").mkdir(parents=True)
    for k, path in enumerate(sorted((root / "src").glob("*.png"))):
        size = WIDE if k < 3 else TALL
        Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(root / "tuki" / path.name)
        Image.open(root / "src" / "masks" / path.name).convert("L").resize(size).save(root / "tuki" / "masks" / path.name)
    return root / "tuki"


def _kohya_cover(size, bucket):
    """Resize-to-cover as kohya sd-scripts compute it (int(x + 0.5)), written out independently."""
    (w, h), (bw, bh) = size, bucket
    scale = max(bw / w, bh / h)
    return max(bw, int(w * scale + 0.5)), max(bh, int(h * scale + 0.5))


def _diffusers_centre_crop(resized, bucket):
    """(top, left) of a centre crop, the formula of diffusers' train_text_to_image_sdxl.py and
    train_dreambooth_lora_sdxl.py: y1 = max(0, int(round((H - h) / 2.0)))."""
    (rw, rh), (bw, bh) = resized, bucket
    return max(0, int(round((rh - bh) / 2.0))), max(0, int(round((rw - bw) / 2.0)))


# ---------------------------------------------------------------- the bucket set and assignment
@pytest.mark.parametrize("res,step,aspect", [(1024, 64, 4.0), (512, 64, 4.0), (768, 64, 2.0), (32, 4, 4.0)])
def test_buckets_are_step_multiples_of_about_the_training_area_within_the_aspect_limit(res, step, aspect):
    buckets = bucket_sizes(res, step, aspect)
    assert (res, res) in buckets and len(buckets) > 4
    for w, h in buckets:
        assert w % step == 0 and h % step == 0
        assert res * res - max(w, h) * step < w * h <= res * res  # the tallest side that fits the area
        assert max(w / h, h / w) <= aspect
        assert (h, w) in buckets  # portrait and landscape alike


def test_the_default_step_is_64_px_at_1024_and_a_multiple_of_what_the_unet_divides():
    assert default_step(1024, 32, 8) == 64  # SDXL: VAE 8 x 4 (two UNet downsamplings)
    assert default_step(512, 64, 8) == 64 and default_step(768, 64, 8) == 64  # SD 1.x / 2.x: 8 x 8
    assert default_step(520, 64, 8) == 40  # no multiple of 64 divides 520: the largest multiple of 8 that does
    assert default_step(32, 4, 2) == 4  # the tiny test models


def test_each_image_goes_to_the_bucket_of_nearest_aspect_within_half_a_gap():
    buckets = bucket_sizes(1024, 64, 4.0)
    logs = sorted({math.log(w / h) for w, h in buckets})
    half_gap = max(b - a for a, b in zip(logs, logs[1:])) / 2
    for w in range(200, 4000, 97):
        for h in (300, 640, 1024, 1999, 3000):
            bw, bh = nearest_bucket((w, h), buckets)
            aspect = min(max(math.log(w / h), logs[0]), logs[-1])  # beyond 4:1 an image goes to the end bucket
            assert abs(math.log(bw / bh) - aspect) <= half_gap + 1e-12
            best = min(abs(math.log(x / y) - math.log(w / h)) for x, y in buckets)  # brute force over all
            assert abs(math.log(bw / bh) - math.log(w / h)) == pytest.approx(best)


def test_batches_come_from_one_bucket_drawn_by_its_share_of_images_and_concepts_take_turns():
    def part(n):
        zeros = torch.zeros(n, 4, 2, 2)
        return BucketLatents(CachedLatents(zeros, zeros, 1.0), list(range(n)), [None] * n)

    pools = [{(40, 24): part(6)}, {(40, 24): part(2), (24, 40): part(4)}]  # 8 wide images, 4 tall
    generator, wide = torch.Generator().manual_seed(0), 0
    for _ in range(600):
        items = draw_bucket_items(pools, 4, generator)
        parts = {id(p) for _, p, _ in items}
        concepts = [c for c, _, _ in items]
        if id(pools[1][(24, 40)]) in parts:  # the tall bucket: only concept 1 has images there
            assert parts == {id(pools[1][(24, 40)])} and concepts == [1] * 4
        else:
            wide += 1
            assert concepts in ([0, 1, 0, 1], [1, 0, 1, 0]) and all(r < len(p.latents) for _, p, r in items)
    assert abs(wide / 600 - 8 / 12) < 0.06  # a bucket's share of batches is its share of the images


# ---------------------------------------------------------------- crops and SDXL's size conditioning
@pytest.mark.parametrize("size", [(1200, 800), (800, 1200), (3000, 1000), (1024, 1024), (640, 480), (333, 777)])
def test_crop_and_time_ids_match_diffusers_sdxl_formula(size):
    bucket = nearest_bucket(size, bucket_sizes(1024, 64, 4.0))
    p = place(size, bucket)
    resized = _kohya_cover(size, bucket)
    top, left = _diffusers_centre_crop(resized, bucket)
    assert (p.resized, p.top, p.left) == (resized, top, left)
    # the mirror image (flip before crop, as diffusers' scripts do) is cropped where the flipped crop lies
    mirrored = p.size_conditioning(mirrored=True)
    assert mirrored.crop_top_left == (top, resized[0] - bucket[0] - left)
    # diffusers' own time-id layout, from the SDXL pipeline
    pipe = build_sdxl_pipeline()
    rows = [p.size_conditioning(), mirrored]
    want = torch.cat([pipe._get_add_time_ids((size[1], size[0]), r.crop_top_left, (bucket[1], bucket[0]),
                                             dtype=torch.float32, text_encoder_projection_dim=32) for r in rows])
    assert torch.equal(SDXL.time_ids(rows, torch.zeros(1)), want)


def test_the_mirror_of_a_crop_is_the_crop_of_the_mirror_at_its_conditioning():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 61, 3), dtype=np.uint8))
    p = place(image.size, (40, 24), rng=random.Random(3))
    flipped = image.resize(p.resized, Image.Resampling.BICUBIC).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    top, left = p.size_conditioning(mirrored=True).crop_top_left
    want = np.asarray(flipped.crop((left, top, left + 40, top + 24)))
    assert np.array_equal(np.asarray(p.apply(image))[:, ::-1], want)


def test_masks_are_cropped_exactly_as_their_images():
    """A red box on noise, its mask the box: in every bucket the mask's white is where the image is red, and the
    latents' weight maps equal mask_weights of the independently cropped masks (mirrors flipped)."""
    rng = np.random.default_rng(1)
    images, masks = [], []
    for (w, h), box in (((90, 40), (50, 5, 80, 30)), ((40, 90), (3, 60, 30, 85))):
        pixels = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = (255, 0, 0)
        mask[y0:y1, x0:x1] = 255
        images.append(Image.fromarray(pixels))
        masks.append(Image.fromarray(mask))
    buckets = bucket_sizes(32, 4, 4.0)
    placements = [place(im.size, nearest_bucket(im.size, buckets)) for im in images]
    vae = build_pipeline("tiny").vae
    parts = encode_buckets(vae, images, placements, flip=True, masks=masks, mask_weight=5.0)
    assert len(parts) == 2
    for image, mask, p in zip(images, masks, placements):
        bucket = p.bucket
        resized = _kohya_cover(image.size, bucket)
        top, left = _diffusers_centre_crop(resized, bucket)
        box = (left, top, left + bucket[0], top + bucket[1])
        crop_image = np.asarray(image.resize(resized, Image.Resampling.BICUBIC).crop(box)).astype(int)
        crop_mask = mask.resize(resized, Image.Resampling.BICUBIC).crop(box)
        inside = np.asarray(crop_mask) > 200
        assert inside.any() and (crop_image[inside, 0] > 200).all() and (crop_image[inside, 1] < 60).all()
        part = parts[bucket]
        want = mask_weights([crop_mask], tuple(part.latents.mean.shape[2:]), 5.0, flip=True)  # image, mirror
        assert torch.allclose(part.latents.weight, want, atol=1e-6)


# ---------------------------------------------------------------- training runs on mixed-aspect images
def _capture_unet_inputs(unet):
    """A forward pre-hook recording (latent size (h, w), time ids or None) of every UNet call."""
    calls = []

    def hook(module, args, kwargs):
        added = kwargs.get("added_cond_kwargs")
        calls.append((tuple(args[0].shape[-2:]), None if added is None else added["time_ids"].detach().clone()))

    return calls, unet.register_forward_pre_hook(hook, with_kwargs=True)


def _expected_rows(factor):
    """Every (time-id row) an image of the fixture may bring: original size, centre crop (or its mirror's), bucket."""
    rows = set()
    for size in (WIDE, TALL):
        bucket = nearest_bucket(size, bucket_sizes(32, 4, 4.0))
        resized = _kohya_cover(size, bucket)
        top, left = _diffusers_centre_crop(resized, bucket)
        for crop_left in (left, resized[0] - bucket[0] - left):
            rows.add((size[1], size[0], top, crop_left, bucket[1], bucket[0]))
    return rows


def _check_calls(calls, pipe, family):
    factor = pipe.vae_scale_factor
    assert calls and all(h != w for (h, w), _ in calls)  # no image was squared
    if family == "sd1":
        assert all(ids is None for _, ids in calls)
        return
    expected, seen = _expected_rows(factor), set()
    for (h, w), ids in calls:
        for row in ids.tolist():
            row = tuple(int(v) for v in row)
            assert row in expected and row[4:] == (h * factor, w * factor)  # the bucket the latents came from
            seen.add(row)
    assert len(seen) >= 2  # per-image rows, not one shared row


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_textual_inversion_trains_on_mixed_aspect_images(mixed_dir, tmp_path, family):
    pipe = BUILD[family]()
    cfg = TextualInversionConfig(concepts=[ConceptConfig("<tuki>", str(mixed_dir), init="monster")],
                                 buckets=BucketConfig(enabled=True), train=TrainConfig(steps=3, batch_size=2, lr=5e-3))
    method = TextualInversion(pipe, cfg)
    assert sorted(method.buckets[0]) == [(24, 40), (40, 24)]
    assert [len(part.latents) for part in method.buckets[0].values()] == [6, 6]  # 3 images + 3 mirrors each
    calls, handle = _capture_unet_inputs(pipe.unet)
    result = Trainer(method, cfg.train, tmp_path).train()
    handle.remove()
    assert result.stopped == "done" and all(np.isfinite(result.losses))
    _check_calls(calls, pipe, family)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_dreambooth_lora_with_masks_and_square_class_images_trains_on_mixed_aspect_images(mixed_dir, tmp_path,
                                                                                           family):
    pipe = BUILD[family]()
    square = [Image.open(p).convert("RGB").resize((32, 32)) for p in sorted(mixed_dir.glob("*.png"))[:2]]
    classes = {"monster": CachedLatents.encode(pipe.vae, square, flip=False)}
    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(mixed_dir), "monster", masks=str(mixed_dir / "masks"))],
                           lora=True, rank=2, prior_preservation=True, buckets=BucketConfig(enabled=True),
                           train=TrainConfig(steps=2, batch_size=2, lr=1e-3))
    method = DreamBooth(pipe, cfg, classes)
    for part in method.buckets[0].values():
        assert part.latents.weight is not None and part.latents.weight.shape[2:] == part.latents.mean.shape[2:]
    calls, handle = _capture_unet_inputs(pipe.unet)
    result = Trainer(method, cfg.train, tmp_path).train()
    handle.remove()
    assert result.stopped == "done" and all(np.isfinite(result.losses))
    instance = [c for c in calls if c[0][0] != c[0][1]]
    classes_seen = [c for c in calls if c[0][0] == c[0][1]]  # square class images, in their own UNet call
    assert len(instance) == len(classes_seen) == 2 and classes_seen[0][0] == (16, 16)
    _check_calls(instance, pipe, family)
    if family == "sdxl":
        assert all(row == [32, 32, 0, 0, 32, 32] for _, ids in classes_seen for row in ids.tolist())


def test_resume_with_buckets_and_seeded_random_crops_is_bit_identical(mixed_dir, tmp_path):
    def make(steps):
        cfg = TextualInversionConfig(concepts=[ConceptConfig("<tuki>", str(mixed_dir), init="monster")],
                                     center_crop=False, buckets=BucketConfig(enabled=True),
                                     train=TrainConfig(steps=steps, batch_size=2, lr=5e-2, seed=7))
        return cfg, TextualInversion(build_pipeline("tiny"), cfg)

    cfg, straight = make(4)
    Trainer(straight, cfg.train, tmp_path / "a").train()
    cfg, first = make(2)
    Trainer(first, cfg.train, tmp_path / "b").train()
    cfg, second = make(4)
    result = Trainer(second, cfg.train, tmp_path / "b").train(resume=True)
    assert result.steps == 4 and torch.equal(straight.splice.vectors, second.splice.vectors)
    crops = {row.crop_top_left for part in second.buckets[0].values() for row in part.sizes}
    assert crops != {(0, 0)}  # the crops were drawn, from the seed, the same in both runs
    assert [p.sizes for p in first.buckets[0].values()] == [p.sizes for p in second.buckets[0].values()]


def _cut(im, size, place):
    """`im` resized so its short side is `size` (bicubic, as prepare_image) and cut at (left, top): written out."""
    scale = size / min(im.size)
    big = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.Resampling.BICUBIC)
    return np.asarray(big.crop((place[0], place[1], place[0] + size, place[1] + size)))


def test_square_random_crops_are_drawn_per_picture_from_the_seed_and_masks_crop_alike(mixed_dir):
    """Without buckets, --random-crop cuts each picture's square at a place drawn from the seed: the pixels are
    PIL's crop of the resized picture there, another seed moves it, and a subject's masks are cut alike."""
    from conceptlab.training.data import load_concept_folder, prepare_images, read_masks
    from conceptlab.training.dreambooth import prepared_masks

    images, names = load_concept_folder(mixed_dir, "x")
    crops = prepare_images(images, 16, center_crop=False, seed=7, name="of tuki")
    rng = random.Random("crop:7:of tuki")  # the draw, made again: left then top, picture by picture
    places = []
    for im in images:
        scale = 16 / min(im.size)
        places.append((rng.randint(0, max(16, round(im.width * scale)) - 16),
                       rng.randint(0, max(16, round(im.height * scale)) - 16)))
    assert all(np.array_equal(np.asarray(c), _cut(im, 16, p)) for c, im, p in zip(crops, images, places))
    centre = [_cut(im, 16, ((max(16, round(im.width * 16 / min(im.size))) - 16) // 2,
                            (max(16, round(im.height * 16 / min(im.size))) - 16) // 2)) for im in images]
    assert sum(not np.array_equal(np.asarray(c), m) for c, m in zip(crops, centre)) >= 3
    other = prepare_images(images, 16, center_crop=False, seed=8, name="of tuki")
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(crops, other))
    subject = SubjectConfig("tuki", str(mixed_dir), "monster", masks=str(mixed_dir / "masks"))
    masks = prepared_masks(subject, names, [im.size for im in images], 16, False, 7)
    full = read_masks(mixed_dir / "masks", names, "x")
    assert all(np.array_equal(np.asarray(m), _cut(f, 16, p)) for m, f, p in zip(masks, full, places))
    pipe = build_pipeline("tiny")  # the method itself cuts its pictures and their masks at those places
    cfg = DreamBoothConfig(subjects=[subject], lora=True, rank=2, resolution=16, center_crop=False,
                           train=TrainConfig(steps=1, seed=7))
    method = DreamBooth(pipe, cfg)
    assert torch.equal(method.instance[0].mean, CachedLatents.encode(pipe.vae, crops, cfg.flip).mean)
    want = mask_weights(masks, tuple(method.instance[0].mean.shape[2:]), cfg.mask_weight, cfg.flip)
    assert torch.equal(method.instance[0].weight, want)


def test_buckets_off_keep_the_square_path_and_the_run_record():
    cfg = TextualInversionConfig(concepts=[ConceptConfig("<t>", "x")])
    record = run_record(asdict(cfg))
    assert "buckets" not in record and "concepts" in record  # fingerprints of runs made before buckets match
    on = run_record({"buckets": {"enabled": True, "step": None, "max_aspect": 4.0}})
    assert on["buckets"]["enabled"] is True


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("cfg,res,factor,match", [
    (BucketConfig(True, step=16), 40, 2, "--resolution=40: is not a multiple of --bucket-step 16"),
    (BucketConfig(True, step=16), 16, 2, "--resolution=16: forms only a square bucket"),
    (BucketConfig(True, step=3), 36, 2, "--bucket-step=3: is not a multiple of the VAE's factor 2"),
    (BucketConfig(True, max_aspect=0.5), 32, 2, "--bucket-max-aspect=0.5"),
    (BucketConfig(False, step=8), 32, 2, "--bucket-step=8: has no effect without --buckets"),
])
def test_settings_that_cannot_form_buckets_are_refused(cfg, res, factor, match):
    with pytest.raises(InputError, match=match):
        check_bucket_config(cfg, res, factor)


def test_the_cli_refuses_a_resolution_that_cannot_form_buckets_in_one_line(tiny_dir, mixed_dir, tmp_path, capsys):
    code = main(["train", "ti", "--model", str(tiny_dir), "--concept", f"<t>={mixed_dir}", "--buckets",
                 "--resolution", "40", "--bucket-step", "16", "--steps", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--resolution=40" in err and "--bucket-step 16" in err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_sizes_default_to_the_whole_image_at_the_training_size():
    """SDXL.encode without per-image sizes gives the time ids it always gave: (h, w), no crop, (h, w)."""
    pipe = build_sdxl_pipeline()
    with torch.no_grad():
        plain = SDXL.encode(pipe, ["a monster"] * 2, (40, 48))
        given = SDXL.encode(pipe, ["a monster"] * 2, (40, 48), [SizeConditioning((40, 48), (0, 0), (40, 48))] * 2)
    assert torch.equal(plain.added["time_ids"], given.added["time_ids"])
    assert plain.added["time_ids"].tolist() == [[40, 48, 0, 0, 40, 48]] * 2
