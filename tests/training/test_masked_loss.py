"""The masked (subject-weighted) DreamBooth loss: the weight maps, their alignment, and bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline
from conceptlab.training.data import mask_weights
from conceptlab.training.diffusion import denoising_loss
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig, parse_subject
from conceptlab.world.export import export_images


@pytest.fixture(scope="module")
def masked_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("masked")
    export_images(root / "tuki", 3, seed=5000, size=32, only={"object": {"monster"}, "individual": {"tuki"}},
                  individual_rate=1.0, masks=True)
    return root / "tuki"


def _method(folder, masks, weight=5.0, flip=True):
    cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", str(folder), "monster", masks=masks)], mask_weight=weight,
                           flip=flip)
    return DreamBooth(build_pipeline("tiny"), cfg)


def test_mask_weights_follow_the_closed_form_for_a_half_mask():
    w = 4.0
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255  # the left half is the subject
    maps = mask_weights([Image.fromarray(mask)], (8, 8), w, flip=True)  # (2, 1, 8, 8): the image, then its mirror
    # mean of the raw weights is (w + 1) / 2, so the subject gets 2w / (w + 1) and the background 2 / (w + 1)
    expected = torch.full((8, 8), 2 / (w + 1))
    expected[:, :4] = 2 * w / (w + 1)
    torch.testing.assert_close(maps[0, 0], expected)
    torch.testing.assert_close(maps[1, 0], expected.flip(-1))


def test_exported_masks_are_the_objects_silhouette(masked_dir):
    from conceptlab.world.export import read_metadata

    for row in read_metadata(masked_dir):
        mask = np.asarray(Image.open(masked_dir / "masks" / row["file_name"]))
        ys, xs = np.nonzero(mask > 127)
        x0, y0, x1, y1 = row["bbox"]
        assert abs(xs.min() - x0) <= 1 and abs(ys.min() - y0) <= 1 and abs(xs.max() + 1 - x1) <= 1
        assert 0.1 < (mask > 127).mean() < 0.7  # an object, not the canvas


def test_weights_are_drawn_with_their_images_and_mirrors(masked_dir):
    method = _method(masked_dir, str(masked_dir / "masks"))
    cached = method.instance[0]
    n = len(cached) // 2  # images, then their mirrors
    torch.testing.assert_close(cached.weight[n:], cached.weight[:n].flip(-1))
    inside = cached.weight[:, 0] > 1  # the subject's latent pixels
    assert inside.float().mean() > 0.1 and (~inside).float().mean() > 0.1
    _, _, inst_w, _, _ = method.batch(4, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # replay the batch's draws to find which images it took
    torch.randint(0, 1, (1,), generator=g)
    for i in range(4):
        idx = torch.randint(0, len(cached), (1,), generator=g)
        torch.randn(cached.mean[idx].shape, generator=g)
        torch.testing.assert_close(inst_w[i:i + 1], cached.weight[idx])


def test_weight_one_is_the_plain_loss_and_other_weights_match_a_direct_computation(masked_dir):
    plain = _method(masked_dir, None)
    same = _method(masked_dir, str(masked_dir / "masks"), weight=1.0)
    weighted = _method(masked_dir, str(masked_dir / "masks"), weight=5.0)
    for m in (same, weighted):
        m.pipe.unet.load_state_dict(plain.pipe.unet.state_dict())
        m.pipe.text_encoder.load_state_dict(plain.pipe.text_encoder.state_dict())
    loss = {k: m.loss(2, torch.Generator().manual_seed(3)) for k, m in
            (("plain", plain), ("same", same), ("weighted", weighted))}
    assert torch.equal(loss["plain"], loss["same"])
    # the same draws, with the weight maps applied by hand to the element-wise error
    g = torch.Generator().manual_seed(3)
    inst, texts, inst_w, _, _ = weighted.batch(2, g)
    err = denoising_loss(weighted.pipe.unet, weighted.scheduler, inst, weighted.encode(texts).hidden, g, reduction="none",
                         pixel_weight=inst_w)
    torch.testing.assert_close(loss["weighted"], err.mean())
    assert not torch.allclose(loss["weighted"], loss["plain"])


def test_bad_masks_are_refused_with_the_argument_named(masked_dir, tmp_path):
    with pytest.raises(InputError, match="mask_weight|--mask-weight"):
        _method(masked_dir, str(masked_dir / "masks"), weight=0.0)
    partial = tmp_path / "partial"
    partial.mkdir()
    first = sorted((masked_dir / "masks").iterdir())[0]
    (partial / first.name).write_bytes(first.read_bytes())
    with pytest.raises(InputError, match="has no mask for"):
        _method(masked_dir, str(partial))
    small = tmp_path / "small"
    small.mkdir()
    for p in (masked_dir / "masks").iterdir():
        Image.open(p).resize((16, 16)).save(small / p.name)
    with pytest.raises(InputError, match="mask is 16x16 but its image is 32x32"):
        _method(masked_dir, str(small))
    assert parse_subject(f"tuki={masked_dir},class=monster,masks={small}").masks == str(small)


def test_face_masks_cover_the_drawn_face_white_and_the_rest_of_the_body_grey(tmp_path):
    from dataclasses import replace

    from conceptlab.world.export import MASK_BODY_GREY, read_metadata
    from conceptlab.world.render import render

    export_images(tmp_path, 4, seed=5000, only={"object": {"monster"}, "individual": {"tuki"},
                                                "emotion": {"happy", "sad", "angry", "in love"}},
                  individual_rate=1.0, masks="face")
    for row in read_metadata(tmp_path):
        mask = np.asarray(Image.open(tmp_path / "masks" / row["file_name"])).astype(int)
        r = render(_spec_of(row))
        body = np.asarray(r.mask) > 127
        assert set(np.unique(mask)) <= {0, MASK_BODY_GREY, 255}
        assert not (mask[~body] > 0).any() and (mask[body] > 0).all()
        # the face is what changes when the same sticker is drawn without one: it lies in the white part
        bare = np.asarray(render(replace(r.spec, emotion="none")).image, dtype=int)
        face = np.abs(np.asarray(r.image, dtype=int) - bare).sum(-1) > 60
        assert face.sum() > 10 and (mask[face] == 255).mean() > 0.9
        assert (mask == MASK_BODY_GREY).sum() > 50  # the rest of the body stays, at a lower level


def _spec_of(row):
    from conceptlab.world.attributes import sample_spec

    return sample_spec(row["seed"], {"object": {"monster"}, "individual": {"tuki"},
                                     "emotion": {"happy", "sad", "angry", "in love"}}, None, 1.0)


def test_an_unknown_mask_kind_names_the_flag(tmp_path):
    with pytest.raises(InputError, match="--masks"):
        export_images(tmp_path, 1, masks="outline")
