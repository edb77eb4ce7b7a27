"""recipes.concept_edit: edits that bring a learned subject in, scored on cases whose answer is known by construction."""

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conceptlab.errors import InputError
from conceptlab.evaluation.recipes import concept_edit as C


def test_identifier_goes_before_the_first_whole_class_word():
    assert C.insert_identifier("a sticker of a happy monster at the beach", "bnh", "monster") == \
        "a sticker of a happy bnh monster at the beach"
    assert C.insert_identifier("two monsters and a monster", "tuki", "monster") == "two monsters and a tuki monster"
    with pytest.raises(InputError, match="class word 'monster'"):
        C.insert_identifier("a sticker of a happy cat", "bnh", "monster")


def _grey(value: int, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), (value,) * 3)


def test_outside_psnr_ignores_the_grown_box_and_counts_the_rest():
    box = (20, 20, 40, 40)
    source, edited = _grey(128), _grey(128)
    draw = ImageDraw.Draw(edited)
    draw.rectangle((14, 14, 45, 45), fill=(0, 255, 0))  # the box grown 6 px: changed wholesale, not counted
    value, share = C.outside_psnr(source, edited, box)
    assert math.isinf(value) and share == pytest.approx(1 - 32 * 32 / 64 ** 2)
    # every outside pixel off by 26 levels: PSNR = 20 log10(255 / 26), whatever the inside holds
    shifted = Image.fromarray(np.full((64, 64, 3), 154, np.uint8))
    ImageDraw.Draw(shifted).rectangle((14, 14, 45, 45), fill=(0, 0, 0))
    assert C.outside_psnr(source, shifted, box)[0] == pytest.approx(20 * math.log10(255 / 26), abs=1e-3)
    # one pixel changed just outside the grown box does count
    edited.putpixel((46, 30), (0, 0, 0))
    assert C.outside_psnr(source, edited, box)[0] < 60


def test_outline_box_finds_the_outlined_object_not_a_dark_speck():
    image = Image.new("RGB", (64, 64), (120, 200, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 30, 13, 32), fill=(0, 0, 0))  # a small dark speck
    draw.ellipse((22, 12, 50, 52), fill=(250, 140, 20), outline=(10, 10, 10), width=2)
    assert C.outline_box(image) == (22, 12, 51, 53)
    assert C.outline_box(_grey(255)) == (0, 0, 64, 64)  # nothing dark: the whole image


def test_outline_box_matches_the_true_box_of_monster_renders():
    check = C.outline_box_check(n=12, first_seed=3000)
    assert check["mean_iou"] > 0.8, check


def _row(read_edit, read_source, psnr_gap, subject="bnh", kind="generated", bbox=(24, 24, 40, 40)):
    """A scored edit whose outside differs from the source by a known amount (None: identical)."""
    source = _grey(128)
    edited = _grey(128 + psnr_gap) if psnr_gap else _grey(128)
    e = C.ConceptEdit(kind, subject, "a sticker of a happy monster", "a sticker of a happy bnh monster", 0)
    return C.score_edit(e, read_edit, read_source, source, edited, bbox)


def test_summary_leaves_out_sources_already_the_subject_and_caps_identical_images():
    rows = [_row("bnh", "none", None), _row("bnh", "none", 26), _row("none", "none", 26), _row("bnh", "bnh", None)]
    s = C.summarize(rows)["bnh"]["generated"]
    assert s["n"] == 4 and s["n_fresh"] == 3
    assert s["subject_judged"] == pytest.approx(3 / 4) and s["subject_judged_fresh"] == pytest.approx(2 / 3)
    assert s["source_was_subject"] == pytest.approx(1 / 4)
    gap = 20 * math.log10(255 / 26)  # 19.8 dB, below the 25 dB floor
    assert s["psnr_out"] == pytest.approx((60 + gap + gap + 60) / 4, abs=1e-3)
    assert s["at_outside_floor"] == pytest.approx(2 / 4)
    bars = {b.name: b for b in C.concept_edit_bars(C.summarize(rows))}
    assert not bars["bnh judged in generated edits"].passed  # 67% < 80%
    assert bars["PSNR outside the object, bnh generated edits"].passed  # 39.9 dB mean
    assert C.concept_edit_bars(C.summarize([_row("bnh", "none", None)] * 5))[0].passed
    # a box that covers the whole image leaves nothing outside: judged, but not in the PSNR mean
    s = C.summarize(rows + [_row("bnh", "none", 26, bbox=(0, 0, 64, 64))])["bnh"]["generated"]
    assert s["n"] == 5 and s["n_measured"] == 4 and s["psnr_out"] == pytest.approx((60 + gap + gap + 60) / 4, abs=1e-3)


def test_records_split_choosing_and_report_runs_into_their_tables():
    rows = [_row("bnh", "none", None), _row("none", "none", 26)]
    run = lambda seed: {"setting": "default", "edit": {}, "lora_scale": 1.0, "first_seed": seed, "cases": 2,  # noqa: E731
                        "inversion": "negative-prompt", "rows": rows}
    result = {"train": {"steps": 5}, "runs": {"default@1000": run(1000), "default@2000": run(2000)}}
    records = C.records_from(result, date="2026-11-30", commit="abc", model="tiny")
    data = C.merge_records(None, records)
    report, choosing = data["tables"]
    assert report["title"] == C.CONCEPT_EDIT_TABLE["title"] and report["rows"] == ["concept-edit-bnh-generated-default-2000"]
    assert choosing["rows"] == ["concept-edit-bnh-generated-default-1000"]
    assert records[0]["metrics"]["subject_judged"] == 50.0 and records[0]["seeds"] == "1000-1001"
    assert len(C.merge_records(data, records)["records"]) == 2  # recording again replaces by id
    assert records[0]["settings"]["weights"] == "LoRA" and records[0]["settings"]["lora_scale"] == 1.0
    # edits with a fully fine-tuned pipeline (--pipeline) are records of their own, beside the LoRA's
    full = C.records_from({"train": {"steps": 9, "full_fine_tune": True}, "runs": {"default@2000": run(2000)}},
                          date="2026-11-30", commit="abc", model="tiny")
    assert full[0]["id"] == "concept-edit-bnh-generated-default-full-2000" and "--pipeline" in full[0]["command"]
    assert full[0]["settings"]["weights"] == "full fine-tune" and full[0]["settings"]["lora_scale"] is None
    assert len(C.merge_records(data, full)["records"]) == 3
    # a second fine-tuned pipeline, named, is a record of its own beside the first
    named = C.records_from({"train": {"steps": 9, "full_fine_tune": True, "name": "balanced"},
                            "runs": {"default@2000": run(2000)}}, date="2026-11-30", commit="abc", model="tiny")
    assert named[0]["id"] == "concept-edit-bnh-generated-default-full-balanced-2000"
    assert named[0]["settings"]["weights"] == "full fine-tune (balanced)" and "--name balanced" in named[0]["command"]
    assert len(C.merge_records(C.merge_records(data, full), named)["records"]) == 4


class _FakeJudge:
    """Reads every image as `reading`."""

    def __init__(self, reading):
        self.reading = reading

    def predict(self, images):
        return {"individual": [self.reading] * len(images)}


def test_run_makes_generated_and_inverted_edits_and_scores_them(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    size = tiny_pipe.unet.config.sample_size * tiny_pipe.vae_scale_factor
    edits = C.concept_edits("bnh", "generated", 1000, 1, size) + C.concept_edits("bnh", "real", 1000, 1, size)
    assert edits[1].render.image.size == (size, size) and "bnh monster" in edits[1].target
    rows, images = C.run_concept_edits(tiny_pipe, _FakeJudge("bnh"), edits, {"steps": 3}, progress=False)
    assert [r["kind"] for r in rows] == ["generated", "real"] and len(images) == 2 + 3
    assert rows[1]["bbox"] == list(edits[1].render.bbox)
    assert all(r["subject_judged"] and r["source_was_subject"] for r in rows)  # the fake judge reads bnh everywhere
    assert "psnr_out_input" in rows[1] and "psnr_out_input" not in rows[0]
    assert rows[0]["regenerated_subject"] and "regenerated_subject" not in rows[1]



def test_the_box_drawn_as_the_edits_mask(tiny_pipe, tmp_path):
    """'mask_box': the object's box grown by N px is written as the edit's --mask (white inside), for both kinds."""
    from PIL import Image

    path = C.box_mask_file((5, 7, 20, 15), 32, 3, tmp_path / "m.png")
    white = np.asarray(Image.open(path)) == 255
    expected = np.zeros((32, 32), dtype=bool)
    expected[4:18, 2:23] = True  # rows y0-3 .. y1+3, columns x0-3 .. x1+3
    assert np.array_equal(white, expected)
    tiny_pipe.set_progress_bar_config(disable=True)
    size = tiny_pipe.unet.config.sample_size * tiny_pipe.vae_scale_factor
    edits = C.concept_edits("bnh", "generated", 1000, 1, size) + C.concept_edits("bnh", "real", 1000, 1, size)
    rows, _ = C.run_concept_edits(tiny_pipe, _FakeJudge("bnh"), edits, {"steps": 3, "mask_box": 3}, "direct",
                                  progress=False, regenerate=False)
    assert [r["kind"] for r in rows] == ["generated", "real"]


def test_the_union_box_covers_the_subject_the_target_draws_and_paste_keeps_the_rest(tiny_pipe, monkeypatch):
    """'mask_union': the mask is the object's box joined with the outline of what the target draws unmasked (the
    plain target generation; a first unmasked edit of an inverted render); with mask_paste the outside is exact."""
    import conceptlab.editing.edit as E
    from conceptlab.evaluation.metrics import box_mask

    tiny_pipe.set_progress_bar_config(disable=True)
    size = tiny_pipe.unet.config.sample_size * tiny_pipe.vae_scale_factor
    real_edit, calls = E.edit, []

    def spy(pipe, source, target, **kw):
        res = real_edit(pipe, source, target, **kw)
        calls.append((kw.get("mask") and E.load_region(kw["mask"])[0, 0] > 0.5, res))
        return res

    monkeypatch.setattr(E, "edit", spy)
    settings = {"steps": 3, "mask_box": 2, "mask_union": True, "mask_paste": 0, "blend_start": 1.0,
                "self_steps": 0.0, "cross_steps": 0.0}
    gen = C.concept_edits("bnh", "generated", 1000, 1, size)[0]
    C.run_concept_edits(tiny_pipe, _FakeJudge("bnh"), [gen], settings, progress=False, regenerate=False)
    plain = [tiny_pipe(p, num_inference_steps=3, latents=E.shared_latents(tiny_pipe, 1, gen.seed, size, size)).images[0]
             for p in (gen.source, gen.target)]
    box = C.union_box(C.outline_box(plain[0]), C.outline_box(plain[1]))
    mask, res = calls[-1]
    assert np.array_equal(mask.numpy(), box_mask((size, size), box, 2))
    src, out = (np.asarray(im) for im in res.images)
    assert np.array_equal(src[~mask.numpy()], out[~mask.numpy()])  # pasted: exact outside
    real = C.concept_edits("bnh", "real", 1000, 1, size)[0]
    C.run_concept_edits(tiny_pipe, _FakeJudge("bnh"), [real], settings, "direct", progress=False)
    (first_mask, first), (mask, _) = calls[-2:]
    assert first_mask is None  # the unmasked first edit says where the target draws
    box = C.union_box(real.render.bbox, C.outline_box(first.images[1]))
    assert np.array_equal(mask.numpy(), box_mask((size, size), box, 2))
