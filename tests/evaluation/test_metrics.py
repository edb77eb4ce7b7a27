import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.evaluation.metrics import ClipScorer, DinoScorer, box_mask, psnr, ssim, x100


def _img(seed, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_clip_t_and_clip_i_equal_the_formula(tiny_clip):
    scorer = ClipScorer.load(str(tiny_clip))
    images, prompts = [_img(i) for i in range(3)], ["a happy star", "a sad cat", "a red apple"]
    m = scorer.model
    px = scorer.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        iv = m.visual_projection(m.vision_model(pixel_values=px).pooler_output).numpy()
        ids = scorer.processor(text=prompts, return_tensors="pt", padding=True)
        tv = m.text_projection(m.text_model(**ids).pooler_output).numpy()
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    expected_t = np.mean([cos(iv[i], tv[i]) for i in range(3)])
    assert scorer.clip_t(images, prompts) == pytest.approx(expected_t, abs=1e-5)
    real = [_img(10), _img(11)]
    with torch.no_grad():
        rv = m.visual_projection(m.vision_model(pixel_values=scorer.processor(images=real, return_tensors="pt")[
            "pixel_values"]).pooler_output).numpy()
    expected_i = np.mean([cos(g, r) for g in iv for r in rv])
    assert scorer.clip_i(images, real) == pytest.approx(expected_i, abs=1e-5)
    assert x100(0.25) == 25.0


def test_dino_is_the_mean_pairwise_cls_cosine(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    scorer = DinoScorer.load(str(tmp_path))
    gen, real = [_img(1), _img(2)], [_img(3)]
    e = scorer.embeddings(gen + real).numpy()
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert scorer.dino(gen, real) == pytest.approx((cos(e[0], e[2]) + cos(e[1], e[2])) / 2, abs=1e-5)
    assert scorer.dino(real, real) == pytest.approx(1.0, abs=1e-5)


def test_psnr_matches_the_8_bit_formula_and_respects_masks():
    a = Image.fromarray(np.full((8, 8, 3), 100, dtype=np.uint8))
    arr = np.full((8, 8, 3), 100, dtype=np.uint8)
    arr[:4] = 110  # top half differs by 10 levels
    b = Image.fromarray(arr)
    mse_255 = (10 ** 2) / 2
    assert psnr(a, b) == pytest.approx(20 * np.log10(255) - 10 * np.log10(mse_255))
    bottom = np.zeros((8, 8), dtype=bool)
    bottom[4:] = True
    assert psnr(a, b, bottom) == float("inf")
    assert psnr(a, b, ~bottom) == pytest.approx(20 * np.log10(255 / 10))


def test_ssim_against_a_direct_window_computation():
    a, b = _img(5, 12).convert("L"), _img(6, 12).convert("L")
    x, y = np.asarray(a, float) / 255, np.asarray(b, float) / 255
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    i, j = 6, 6  # an interior pixel: its 7x7 window lies inside the image
    wx, wy = x[i - 3:i + 4, j - 3:j + 4], y[i - 3:i + 4, j - 3:j + 4]
    mx, my = wx.mean(), wy.mean()
    vx, vy, cxy = wx.var(), wy.var(), ((wx - mx) * (wy - my)).mean()
    direct = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    mask = np.zeros((12, 12), dtype=bool)
    mask[i, j] = True
    assert ssim(a, b, mask) == pytest.approx(direct, abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)


def test_box_mask():
    m = box_mask((10, 8), (2, 3, 5, 6), margin=1)
    assert m.shape == (8, 10) and m.sum() == 5 * 5 and m[2, 1] and not m[0, 0]
