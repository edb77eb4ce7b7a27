"""The out-of-world test set (evaluation.offworld) and its edit recipe (recipes.offworld_edits)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter

from conceptlab.errors import InputError
from conceptlab.evaluation.judge import JudgeConfig
from conceptlab.evaluation.metrics import ssim
from conceptlab.evaluation.offworld import OffworldConfig, draw_picture, export_offworld, offworld_set

CFG = OffworldConfig()


@pytest.fixture(scope="module")
def pictures():
    return offworld_set(CFG)


def test_the_set_is_deterministic_from_its_seed(pictures):
    again = offworld_set(CFG)
    assert [np.asarray(p.image).tobytes() for p in pictures] == [np.asarray(p.image).tobytes() for p in again]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(pictures, again))
    other = offworld_set(OffworldConfig(n=4, seed=1))
    assert not np.array_equal(np.asarray(other[0].image), np.asarray(pictures[0].image))


def test_size_count_and_kinds(pictures):
    assert len(pictures) == 40 >= 40
    assert all(p.image.size == (64, 64) and p.mask.shape == (64, 64) for p in pictures)
    assert sum(p.kind == "face" for p in pictures) == sum(p.kind == "object" for p in pictures) == 20
    assert len({p.style["background"] for p in pictures}) >= 4  # plain and textured backgrounds both appear


def test_masks_cover_exactly_what_the_edited_part_drew(pictures):
    """The pixels the part changes (the picture drawn with and without it) lie inside the mask, and the mask
    is no bigger than their box grown by its margin (+1 px, and the brows' room above a face's features)."""
    for p in pictures:
        bare = draw_picture(CFG, p.index, parts=False)
        diff = np.abs(np.asarray(p.image, dtype=int) - np.asarray(bare.image, dtype=int)).max(-1) > 8  # (64, 64)
        assert diff.any() and not (diff & ~p.mask).any(), p.index
        ys, xs = np.nonzero(diff)
        grow = (6 if p.kind == "object" else 3) + 1  # + 1: edge pixels the part covers too faintly to count in diff
        up = grow + (4 if p.kind == "face" else 0)
        box = np.zeros_like(p.mask)
        box[max(0, ys.min() - up):ys.max() + 1 + grow, max(0, xs.min() - grow):xs.max() + 1 + grow] = True
        assert not (p.mask & ~box).any(), p.index
        assert 0.1 < (~p.mask).mean() < 0.95, p.index  # something is left outside to measure


def test_labels_and_edits_are_in_the_judges_vocabulary(pictures):
    """Every label is a judge head's label, and each edit swaps one word the judge reads, as the swap scorer
    of `conceptlab evaluate edit` finds it."""
    from conceptlab.evaluation.recipes.editing import swap_of

    heads = JudgeConfig().heads
    judge = SimpleNamespace(cfg=SimpleNamespace(heads=heads))
    for p in pictures:
        assert all(p.labels[k] in heads[k] for k in p.labels)
        assert p.new in heads[p.head] and p.new != p.old and p.labels[p.head] == p.old
        assert swap_of(p.prompt, p.target, judge) == (p.head, p.old, p.new)


def test_the_split_is_a_disjoint_stratified_quarter(pictures):
    choose, report = offworld_set(CFG, "choose"), offworld_set(CFG, "report")
    a, b = {p.index for p in choose}, {p.index for p in report}
    assert not a & b and a | b == set(range(40)) and len(a) == 10
    assert sum(p.kind == "face" for p in choose) == 5
    assert [p.split for p in pictures if p.index in a] == ["choose"] * 10


def test_export_writes_images_masks_and_metadata(tmp_path):
    path = export_offworld(tmp_path, OffworldConfig(n=4))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 4
    first = offworld_set(OffworldConfig(n=4))[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / rows[0]["file_name"])), np.asarray(first.image))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / rows[0]["file_name"])) > 127, first.mask)
    assert rows[0]["text"] == first.prompt and rows[0]["target"] == first.target


def test_bad_configs_are_refused():
    with pytest.raises(InputError, match="--n"):
        offworld_set(OffworldConfig(n=1))
    with pytest.raises(InputError, match="split"):
        offworld_set(OffworldConfig(n=4), split="train")


def _ssim_by_windows(a: np.ndarray, b: np.ndarray, win: int = 7) -> np.ndarray:
    """SSIM (Wang et al. 2004) at every full window, computed window by window from its own pixels."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    wa, wb = sliding_window_view(a, (win, win)), sliding_window_view(b, (win, win))  # (H-6, W-6, 7, 7)
    ma, mb = wa.mean((-1, -2)), wb.mean((-1, -2))
    va, vb = wa.var((-1, -2)), wb.var((-1, -2))
    cov = ((wa - ma[..., None, None]) * (wb - mb[..., None, None])).mean((-1, -2))
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))


def test_ssim_matches_a_window_by_window_implementation(pictures):
    """metrics.ssim (uniform filters) against SSIM computed from each 7x7 window's own statistics, on the interior
    (where every window is whole); and the two anchors: identical images 1, noise lowers it."""
    a = pictures[0].image
    rng = np.random.default_rng(0)
    noisy = np.clip(np.asarray(a, dtype=float) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
    b = Image.fromarray(noisy)
    grey = lambda im: np.asarray(im.convert("L"), dtype=np.float64) / 255.0  # noqa: E731
    reference = _ssim_by_windows(grey(a), grey(b))  # (58, 58): window centres 3..60
    interior = np.zeros((64, 64), dtype=bool)
    interior[3:61, 3:61] = True
    assert ssim(a, b, interior) == pytest.approx(float(reference.mean()), abs=1e-9)
    region = interior & ~pictures[0].mask
    assert ssim(a, b, region) == pytest.approx(float(reference[region[3:61, 3:61]].mean()), abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0) and ssim(a, b) < 0.9


@pytest.mark.slow  # ~60 s on a shared CPU: eight 30-step inversions, reconstructions and edits
def test_the_recipe_runs_end_to_end_on_a_tiny_pipeline(tiny_pipe):
    """Two pictures (a face, an object), two settings (negative-prompt; direct with mutual self-attention):
    every row is measured, summaries and bars are filled, inversions are shared."""
    from conceptlab.evaluation.judge import load_judge
    from conceptlab.evaluation.recipes.offworld_edits import InversionCache, OffworldEditSetting, compare_settings

    pics = offworld_set(OffworldConfig(n=2))
    settings = [OffworldEditSetting("readme"),
                OffworldEditSetting("direct-kv", method="direct", structure={"mutual_steps": 0.5})]
    small = [p.__class__(**{**p.__dict__, "image": p.image.resize((32, 32)),
                            "mask": np.asarray(Image.fromarray(p.mask).resize((32, 32)))}) for p in pics]
    cache = InversionCache(tiny_pipe)
    res = compare_settings(tiny_pipe, load_judge(), small, settings, cache, progress=None)
    assert set(res) == {"readme", "direct-kv"} and len(cache._inv) == 4
    for r in res.values():
        s = r["summary"]
        assert s["n"] == 2 and s["by_kind"]["face"]["n"] == 1 and 0 <= s["judged"] <= 1
        assert all(np.isfinite(row["edit_psnr_out"]) and -1 <= row["edit_ssim_out"] <= 1 for row in r["rows"])
        assert [b["name"] for b in r["bars"]][0] == "asked change judged"


def test_a_region_setting_hands_the_pictures_region_to_edit_as_its_mask(tmp_path, pictures):
    """region=True: the difference masks of faces and objects are left out (edit refuses both at once) and the
    region's file reads back through edit's own loader as the same pixels."""
    from conceptlab.editing.edit import load_region, save_region
    from conceptlab.evaluation.recipes.offworld_edits import OffworldEditSetting

    s = OffworldEditSetting("r", method="direct", region=True, edit={"self_steps": 0.8},
                            faces={"blend_mask": "difference"}, objects={"blend_mask": "difference"})
    assert s.keywords("face") == s.keywords("object") == {"self_steps": 0.8}
    assert OffworldEditSetting("d").keywords("object") == {"blend_mask": "difference"}
    mask = pictures[0].mask
    loaded = load_region(save_region(mask, tmp_path / "r.png"))  # (1, 1, H, W) in [0, 1]
    assert np.array_equal(loaded[0, 0].numpy() > 0.5, mask)


@pytest.mark.slow  # ~15 s idle, 45 s on a shared CPU: two 50-step Direct Inversion edits on the shipped model
def test_a_region_setting_edits_only_inside_the_pictures_own_region():
    """direct-region: the picture's region goes to edit() as its drawn mask (no difference mask beside it); on
    the shipped model, away from the region the edit is the inversion's reconstruction (Direct Inversion's
    source branch) while the unmasked edit is not. (A random tiny VAE's attention mixes the whole picture.)"""
    from conceptlab.evaluation.metrics import psnr
    from conceptlab.evaluation.recipes.offworld_edits import InversionCache, OffworldEditSetting, edit_picture
    from conceptlab.models.loading import load_pipeline

    pipe = load_pipeline(None)
    pipe.set_progress_bar_config(disable=True)
    pic = next(p for p in offworld_set(OffworldConfig(n=4)) if p.kind == "face")
    region = OffworldEditSetting("r", method="direct", region=True, objects={"blend_mask": "difference"})
    assert region.keywords("object") == {} and region.keywords("face") == {}
    cache = InversionCache(pipe)
    edited, rec, _ = edit_picture(pipe, pic, region, cache)
    free, _, _ = edit_picture(pipe, pic, OffworldEditSetting("d", method="direct"), cache)
    far = ~np.asarray(Image.fromarray(pic.mask).filter(ImageFilter.MaxFilter(9))).astype(bool)  # 4 px past it
    assert far.mean() > 0.3
    kept, moved, inside = psnr(rec, edited, far), psnr(rec, free, far), psnr(rec, edited, pic.mask)
    assert kept > 33 and kept > moved + 8 and inside < 30, (kept, moved, inside)


def test_world_offworld_command_writes_the_set(tmp_path):
    import argparse

    from conceptlab.cli import world

    parser = argparse.ArgumentParser()
    world.add_parser(parser.add_subparsers())
    args = parser.parse_args(["world", "offworld", "-n", "2", "--seed", "3", "--out", str(tmp_path / "set")])
    assert args.run(args) == 0
    rows = (tmp_path / "set" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(r)["text"] for r in rows] == [p.prompt for p in offworld_set(OffworldConfig(n=2, seed=3))]
    args = parser.parse_args(["world", "offworld", "-n", "1", "--out", str(tmp_path / "one")])
    with pytest.raises(InputError, match="--n=1"):
        args.run(args)
