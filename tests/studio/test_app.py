"""The studio through gradio_client, launched in-process on a free port with the tiny pipeline: generate, a
2-step textual-inversion job and a 3-step DreamBooth-LoRA job to completion and then their token and LoRA in a
prompt, edits (a re-weight slider, the blend mask, attention maps), judging a folder, refused input."""

import os
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from conceptlab.imaging import read_settings  # noqa: E402
from conceptlab.studio.app import Studio, check_host, launch  # noqa: E402
from conceptlab.studio.tabs.edit import MAX_WORDS  # noqa: E402
from tests.ports import free_port  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # one torch thread in the training process too: tiny models on two shared cores (see tests/conftest.py)
    studio = Studio(tmp_path_factory.mktemp("studio") / "ws", job_env={"OMP_NUM_THREADS": "1"})
    port = free_port()
    app = launch(studio, port=port, block=False, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))
    yield studio, client, f"http://127.0.0.1:{port}"
    app.close()
    studio.close()


def generate(client, prompt, model, n=2, concepts=(), steps=4, loras=()):
    return client.predict(prompt, "", 0, n, steps, 7.5, "default", 0, 0, str(model), list(concepts), list(loras), 1.0,
                          api_name="/generate")


def _wait_done(client, job, timeout=240):
    """(status, log) once the job is done or failed, polling /job_status as the page's timer does."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, _, log, _ = client.predict(job, api_name="/job_status")
        if "done" in status or "failed" in status or time.monotonic() > deadline:
            return status, log
        time.sleep(1)


def test_generate_saves_images_with_their_settings(served, tiny_dir):
    studio, client, _ = served
    gallery, settings = generate(client, "a sticker of a happy broccoli", tiny_dir)
    assert [g["caption"].split(" · ")[0] for g in gallery] == ["seed 0", "seed 1"]
    assert read_settings(gallery[1]["image"])["seed"] == 1  # the downloaded file carries its settings
    assert settings["prompt"] == "a sticker of a happy broccoli" and settings["steps"] == 4
    (folder,) = (studio.ws.root / "generations").iterdir()
    assert sorted(p.name for p in folder.glob("*.png")) == ["0000-seed0.png", "0001-seed1.png"]


def test_bad_input_is_the_cli_one_line_message(served, tiny_dir):
    _, client, _ = served
    with pytest.raises(AppError, match=r"^--prompt='': is empty\. Pass some text"):
        generate(client, "", tiny_dir)
    with pytest.raises(AppError, match="--model='/no/such/model': no such file or folder"):
        generate(client, "a star", "/no/such/model")


def test_an_upload_that_is_not_an_image_is_refused(served, tmp_path):
    studio, client, _ = served
    fake = tmp_path / "holiday.png"
    fake.write_text("this is text, not a picture")
    with pytest.raises(AppError, match=r"images='holiday.png': is not a readable image \(UnidentifiedImageError\)\. "
                                       r"Pass a PNG, JPEG or WebP file"):
        client.predict([handle_file(str(fake))], "holiday", api_name="/upload_images")
    assert not (studio.ws.root / "uploads" / "holiday").exists()


def test_files_outside_the_workspace_are_not_served(served, tiny_dir):
    _, _, url = served
    for path in ("/etc/passwd", str(tiny_dir / "model_index.json")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/gradio_api/file={path}", timeout=10)
        assert e.value.code in (403, 404)


def test_train_to_completion_then_generate_with_the_token(served, tiny_dir, concept_dirs):
    studio, client, _ = served
    files = [handle_file(str(p)) for p in sorted((concept_dirs / "broccoli").glob("*.png"))]
    client.predict(files, "broc-set", api_name="/upload_images")
    job = client.predict("broc-set", "<broc>", "broccoli", 2, 5e-3, 2, 2, 0, str(tiny_dir), api_name="/train_start")
    job = job["value"]  # the job list's update: the new job is selected
    status, log = _wait_done(client, job)
    preview = client.predict(job, api_name="/job_status")[2]
    assert f"**{job}**: done — step 2 of 2" in status, log
    assert preview is not None and "learned <broc> in 2 steps" in log
    client.predict(api_name="/concepts")
    name = f"runs/{job}/broc"
    meta = client.predict(name, api_name="/concept")[0]
    assert meta["token"] == "<broc>" and meta["steps"] == 2
    gallery, settings = generate(client, "a sticker of a <broc>", tiny_dir, n=1, concepts=[name])
    assert len(gallery) == 1 and settings["prompt"] == "a sticker of a <broc>"


def edit_args(model, photo=None, weights=(), blend="", blend_mask="attention", maps=False, region=None,
              paste=False, seam=2, noise=0, start=0):
    """The /edit endpoint's inputs after the two prompts: one weight per word of the target (1 = unchanged);
    `region`: the region editor's value ({"background", "layers", "composite"})."""
    sliders = [*weights, *[1] * (MAX_WORDS - len(weights))]
    return [photo, "ddim", [], str(model), "auto", 0.8, 0.4, *sliders, blend, blend_mask, 0, 4, 7.5, maps, region,
            paste, seam, noise, start]


def painted(path, size=(32, 32), box=(0, 0, 16, 32)):
    """A region editor's value with one transparent layer painted (opaque, any colour) inside `box`."""
    from PIL import Image

    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste((255, 59, 107, 255), box)
    layer.save(path)
    return {"background": None, "layers": [handle_file(str(path))], "composite": None}


def test_edit_generated_and_an_inverted_photo(served, tiny_dir, concept_dirs):
    _, client, _ = served
    gallery, mask, maps, info, _ = client.predict("a sticker of a happy broccoli", "a sticker of a sad broccoli",
                                               *edit_args(tiny_dir), api_name="/edit")
    assert [g["caption"] for g in gallery] == ["source", "edit"] and info.startswith("mode: **replace**")
    assert maps is None and "re-weighted" not in info
    photo = handle_file(str(sorted((concept_dirs / "broccoli").glob("*.png"))[0]))
    gallery, mask, maps, info, _ = client.predict("a sticker of a happy broccoli", "a sticker of a sad broccoli",
                                               *edit_args(tiny_dir, photo), api_name="/edit")
    assert "ddim inversion: reconstruction PSNR" in info and gallery[0]["caption"] == "photo (reconstructed)"


def test_edit_inside_a_drawn_region(served, tiny_dir, tmp_path):
    """A region painted over the picture, and a white-on-black mask uploaded instead, each reach the library as
    `conceptlab edit --mask`: the same edit as the library's with that mask; the region is kept beside it."""
    import numpy as np
    from PIL import Image

    from conceptlab.editing.edit import edit
    from conceptlab.models.loading import load_pipeline

    _, client, _ = served
    region = Image.new("L", (32, 32), 0)
    region.paste(255, (0, 0, 16, 32))  # the left half may change
    region.save(tmp_path / "region.png")
    source, target = "a sticker of a happy broccoli", "a sticker of a sad broccoli"
    expected = edit(load_pipeline(str(tiny_dir)), source, [target], seed=0, steps=4, guidance=7.5, cross_steps=0.8,
                    self_steps=0.4, mask=str(tmp_path / "region.png"))
    uploaded = {"background": handle_file(str(tmp_path / "region.png")), "layers": [], "composite": None}
    for value in (painted(tmp_path / "layer.png"), uploaded):
        gallery, mask, _, info, _ = client.predict(source, target, *edit_args(tiny_dir, region=value), api_name="/edit")
        got = np.asarray(Image.open(gallery[1]["image"]).convert("RGB"), dtype=int)
        assert mask is not None and np.abs(got - np.asarray(expected.images[1], dtype=int)).max() <= 1
        assert "inside the painted region" in info


def test_edit_pastes_the_source_outside_the_painted_region(served, tiny_dir, tmp_path):
    """The paste, fresh-noise and start widgets reach the library as --mask-paste, --mask-noise and
    --blend-start; without a painted region they are refused by name, before any work."""
    import numpy as np
    from gradio_client.exceptions import AppError
    from PIL import Image

    from conceptlab.editing.edit import edit
    from conceptlab.models.loading import load_pipeline

    studio, client, _ = served
    Image.fromarray(np.where(np.arange(32)[None, :] < 16, 255, 0).repeat(32, 0).astype("uint8")).save(tmp_path / "m.png")
    source, target = "a sticker of a happy broccoli", "a sticker of a sad broccoli"
    expected = edit(load_pipeline(str(tiny_dir)), source, [target], seed=0, steps=4, guidance=7.5, cross_steps=0.8,
                    self_steps=0.4, mask=str(tmp_path / "m.png"), mask_paste=3, mask_noise=0.5, blend_start=0.5)
    gallery, _, _, _, _ = client.predict(source, target, *edit_args(
        tiny_dir, region=painted(tmp_path / "layer.png"), paste=True, seam=3, noise=0.5, start=0.5), api_name="/edit")
    got = np.asarray(Image.open(gallery[1]["image"]).convert("RGB"), dtype=int)
    assert np.abs(got - np.asarray(expected.images[1], dtype=int)).max() <= 1
    folder = max((studio.ws.root / "edits").iterdir(), key=lambda f: f.stat().st_mtime_ns)  # this edit's
    assert read_settings(folder / "edit.png")["mask"] == "region.png"
    assert (np.asarray(Image.open(folder / "region.png")) > 0).sum() == 16 * 32
    with pytest.raises(AppError, match="Paste the source back.*none is painted"):
        client.predict(source, target, *edit_args(tiny_dir, paste=True), api_name="/edit")


def test_edit_with_a_library_lora_is_the_library_edit_on_the_pipeline_with_it(served, tiny_dir, concept_dirs):
    """A LoRA picked in the Edit tab (a DreamBooth subject) is loaded for the edit: the edit equals the library's
    on a pipeline given the same file by diffusers' own loader, and differs from the edit without it."""
    import numpy as np
    from PIL import Image

    from conceptlab.editing.edit import edit
    from conceptlab.models.loading import load_pipeline
    from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, train_dreambooth
    from conceptlab.training.loop import TrainConfig

    studio, client, _ = served
    run = studio.ws.root / "runs" / "edit-lora"
    cfg = DreamBoothConfig(model=str(tiny_dir), subjects=[SubjectConfig("tuki", str(concept_dirs / "broccoli"),
                                                                        "broccoli")],
                           lora=True, rank=2, train=TrainConfig(steps=2, batch_size=1, lr=5e-2))
    train_dreambooth(cfg, run)
    source, target = "a sticker of a happy broccoli", "a sticker of a happy tuki broccoli"
    gallery, _, _, _, _ = client.predict(source, target, *edit_args(tiny_dir), ["runs/edit-lora/lora"], 1.0,
                                         api_name="/edit")
    pipe = load_pipeline(str(tiny_dir))
    plain = edit(pipe, source, [target], seed=0, steps=4, guidance=7.5, cross_steps=0.8, self_steps=0.4)
    pipe.load_lora_weights(str(run / "lora" / "pytorch_lora_weights.safetensors"))
    expected = edit(pipe, source, [target], seed=0, steps=4, guidance=7.5, cross_steps=0.8, self_steps=0.4)
    got = np.asarray(Image.open(gallery[1]["image"]).convert("RGB"), dtype=int)
    assert np.abs(got - np.asarray(expected.images[1], dtype=int)).max() <= 1
    assert np.abs(got - np.asarray(plain.images[1], dtype=int)).max() > 8  # the check can fail: the LoRA matters


def test_painted_region_reads_strokes_or_an_uploaded_mask_never_the_picture_under_the_brush():
    from PIL import Image

    from conceptlab.studio.tabs.edit import painted_region

    photo = Image.new("RGB", (8, 8), (250, 250, 250))
    photo.paste((20, 160, 40), (2, 2, 6, 6))  # a green blob on white: a picture, not a mask
    stroke = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    stroke.paste((255, 0, 0, 128), (0, 0, 3, 1))  # a half-transparent stroke still counts
    empty = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert painted_region(None) is None
    assert painted_region({"background": photo, "layers": [empty], "composite": photo}) is None
    got = painted_region({"background": photo, "layers": [empty, stroke], "composite": photo})
    assert got.sum() == 3 and got[0, :3].all()
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (4, 0, 8, 8))
    got = painted_region({"background": mask.convert("RGB"), "layers": [], "composite": None})
    assert got.sum() == 32 and got[:, 4:].all()
    black = Image.new("RGB", (8, 8), 0)
    assert painted_region({"background": black, "layers": [], "composite": None}) is None  # nothing white


def test_a_black_and_white_photo_under_the_brush_is_not_a_mask_and_a_region_beside_blend_words_is_refused(tmp_path):
    from PIL import Image

    from conceptlab.errors import InputError
    from conceptlab.studio.tabs.edit import painted_region, region_settings

    line_art = Image.new("L", (8, 8), 255)
    line_art.paste(0, (3, 0, 5, 8))  # black lines on white: two-tone, as a mask would be
    line_art.convert("RGB").save(tmp_path / "photo.png")
    value = {"background": line_art.convert("RGB"), "layers": [], "composite": None}
    assert painted_region(value, guide=str(tmp_path / "photo.png")) is None  # the photo put under the brush
    assert painted_region(value).sum() == 48  # the same picture uploaded into the box is a mask
    stroke = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    stroke.paste((255, 0, 0, 255), (0, 0, 2, 2))
    painted = {**value, "layers": [stroke]}
    assert region_settings(painted, True, 2, 0, 0)["mask_paste"] == 2.0
    with pytest.raises(InputError, match=r"Region that may change='painted': and Blend words both say"):
        region_settings(painted, False, 2, 0, 0, blend="broccoli")
    with pytest.raises(InputError, match=r"and Blend mask both say"):
        region_settings(painted, False, 2, 0, 0, blend_mask="difference")


def test_edit_with_a_reweight_slider_a_blend_mask_and_attention_maps(served, tiny_dir):
    """Slider k weighs word k of the target ('a sticker of sad broccoli': 'sad' is the fourth); the weight reaches
    the library as --reweight does: the edit equals the library's own edit with reweight={'sad': 3}."""
    import numpy as np
    from PIL import Image

    from conceptlab.editing.edit import edit
    from conceptlab.models.loading import load_pipeline

    studio, client, _ = served
    source, target = "a sticker of a happy broccoli", "a sticker of a sad broccoli"
    gallery, mask, maps, info, _ = client.predict(source, target, *edit_args(tiny_dir, weights=[1, 1, 1, 3], blend="broccoli",
                                                                          maps=True), api_name="/edit")
    assert "re-weighted: sad x3" in info
    folder = max((p for p in (studio.ws.root / "edits").iterdir() if (p / "attention.png").is_file()),
                 key=lambda p: p.stat().st_mtime)
    settings = read_settings(gallery[1]["image"])
    assert settings["reweight"] == {"sad": 3.0} and settings["blend"] == ["broccoli"]
    expected = edit(load_pipeline(str(tiny_dir)), source, [target], reweight={"sad": 3.0}, blend=["broccoli"], seed=0,
                    steps=4, guidance=7.5, cross_steps=0.8, self_steps=0.4).images[1]
    got = np.asarray(Image.open(gallery[1]["image"]).convert("RGB"), dtype=float)
    assert np.abs(got - np.asarray(expected, dtype=float)).max() <= 1  # PNG round trip only
    plain = client.predict(source, target, *edit_args(tiny_dir, blend="broccoli"), api_name="/edit")[0]
    assert not np.array_equal(np.asarray(Image.open(plain[1]["image"])), got.astype("uint8"))  # the slider mattered
    raw = np.asarray(Image.open(folder / "blend-mask.png"))  # (h, w): white where the edit may change
    shown = Image.open(mask).convert("RGB")  # the edit, dimmed where the mask is 0, drawn at least 256 px wide
    overlay = np.asarray(shown.resize(raw.shape[::-1], Image.NEAREST), dtype=int)
    assert shown.width >= 256 and np.array_equal(overlay[raw == 255], got.astype(int)[raw == 255])
    sheets = [Image.open(folder / f"attention-{k}.png") for k in ("source", "target")]
    assert Image.open(maps).size == (max(s.width for s in sheets), sum(s.height for s in sheets))  # stacked
    assert all(s.width > 4 * s.height for s in sheets)  # the image, then one map a word


@pytest.mark.slow  # a training process: 25 s on two idle cores, a minute under load (the command is checked fast
# in test_jobs.py by parsing it with the CLI's own parser)
def test_dreambooth_lora_job_to_completion_then_its_lora_in_the_library(served, tiny_dir, concept_dirs):
    """A 3-step DreamBooth-LoRA job through the CLI: progress and preview shown, the LoRA listed, loadable by
    diffusers' own loader, and usable in Generate."""
    from diffusers import StableDiffusionPipeline

    studio, client, _ = served
    files = [handle_file(str(p)) for p in sorted((concept_dirs / "broccoli").glob("*.png"))]
    client.predict(files, "db-set", api_name="/upload_images")
    job = client.predict("db-set", "tuki", "broccoli", True, 4, False, False, 50, 1.0, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                         api_name="/train_dreambooth")["value"]
    status, log = _wait_done(client, job)
    assert f"**{job}**: done — step 3 of 3" in status and "LoRA is in the Concepts tab" in status, log
    _, curve, preview, _, table = client.predict(job, api_name="/job_status")
    assert [r[0] for r in curve["data"]] == [1, 2, 3] and preview is not None  # loss curve from metrics.jsonl
    assert "tuki broccoli (LoRA rank 4)" in str(table)
    client.predict(api_name="/concepts")
    name = f"runs/{job}/lora"
    meta = client.predict(name, api_name="/concept")[0]
    assert meta["kind"] == "lora" and meta["steps"] == 3 and meta["token"] == "tuki broccoli"
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_dir))
    pipe.load_lora_weights(str(studio.ws.root / name))  # diffusers reads the file the job wrote
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())
    gallery, settings = generate(client, "a sticker of a tuki broccoli", tiny_dir, n=1, loras=[name])
    assert len(gallery) == 1 and settings["prompt"] == "a sticker of a tuki broccoli"


def test_soup_of_two_lora_runs_lands_in_the_library_and_bad_picks_are_the_cli_messages(served, tiny_dir):
    """The Train tab's soup: runs under runs/ listed, souped into runs/NAME (the library's LoRA, by products, as
    `concepts soup` writes it), usable in Generate; one run, or a taken name, refused with the library's message."""
    from safetensors.torch import load_file

    from tests.concepts.test_soup import _lora_run

    studio, client, _ = served
    for seed in (1, 2):
        _lora_run(studio.ws.root / "runs" / f"lora-s{seed}", seed)
    choices = client.predict(api_name="/soup_choices")["choices"]
    assert {"lora-s1", "lora-s2"} <= {c[0] if isinstance(c, (list, tuple)) else c for c in choices}
    note = client.predict(["lora-s1", "lora-s2"], "3,1", "lora-soup", api_name="/soup")
    assert "runs/lora-soup/lora" in note and "Concepts tab" in note
    soup = load_file(str(studio.ws.root / "runs" / "lora-soup" / "lora" / "pytorch_lora_weights.safetensors"))
    one = load_file(str(studio.ws.root / "runs" / "lora-s1" / "lora" / "pytorch_lora_weights.safetensors"))
    down = next(k for k in one if k.endswith("down.weight"))
    assert soup[down].shape[0] == 2 * one[down].shape[0]  # the two runs' factors, stacked
    client.predict(api_name="/concepts")
    gallery, _ = generate(client, "a sticker of a tuki monster", tiny_dir, n=1, loras=["runs/lora-soup/lora"])
    assert len(gallery) == 1
    with pytest.raises(AppError, match="at least two"):
        client.predict(["lora-s1"], "", "soup-2", api_name="/soup")
    with pytest.raises(AppError, match="not an empty folder"):
        client.predict(["lora-s1", "lora-s2"], "", "lora-soup", api_name="/soup")
    with pytest.raises(AppError, match="weights"):
        client.predict(["lora-s1", "lora-s2"], "1,x", "soup-3", api_name="/soup")


def test_bad_dreambooth_settings_are_the_cli_messages(served, tiny_dir):
    _, client, _ = served
    with pytest.raises(AppError, match=r"identifier='\.\./x': is not one new word"):
        client.predict("broc-set", "../x", "broccoli", True, 4, False, False, 50, 1.0, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                       api_name="/train_dreambooth")
    with pytest.raises(AppError, match=r"--rank=0"):
        client.predict("broc-set", "tuki", "broccoli", True, 0, False, False, 50, 1.0, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                       api_name="/train_dreambooth")


def test_advanced_settings_reach_the_job_checks(served, tiny_dir, concept_dirs):
    """The EMA field, the text-encoder LoRA box and the Advanced accordion reach each job's settings: what the
    library refuses comes back as its message, before any process starts."""
    from conceptlab.studio.tabs.train import ADVANCED, advanced

    _, client, _ = served
    files = [handle_file(str(p)) for p in sorted((concept_dirs / "broccoli").glob("*.png"))]
    client.predict(files, "adv-set", api_name="/upload_images")
    adv = {"adv_select": "identity", "adv_bias": "earlier"}
    defaults = dict(zip(ADVANCED, ("no", False, 1, "constant", 0, "none", False, "", "none", 2.0, "", 100, "adamw", 30)))
    args = [adv.get(k, defaults[k]) for k in ADVANCED]
    with pytest.raises(AppError, match=r"EMA decay=0.99: and checkpoint selection"):
        client.predict("adv-set", "tuki", "broccoli", True, 4, False, False, 50, 1.0, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                       0.99, *args, api_name="/train_dreambooth")
    args[ADVANCED.index("adv_select")] = "likeness"
    with pytest.raises(AppError, match=r"likeness"):
        client.predict("adv-set", "<piv>", "broccoli", 4, 5e-3, 1, False, 3, 1e-4, 1, 2, 0, str(tiny_dir), True, *args,
                       api_name="/train_pivotal")
    plain = [defaults[k] for k in ADVANCED]
    with pytest.raises(AppError, match=r"EMA decay=0.99: and checkpoint selection"):  # pivotal's EMA, after More subjects
        selecting = [*plain[:ADVANCED.index("adv_select")], "emotion", *plain[ADVANCED.index("adv_select") + 1:]]
        client.predict("adv-set", "<piv>", "broccoli", 4, 5e-3, 1, False, 3, 1e-4, 1, 2, 0, str(tiny_dir), False,
                       *selecting, "", 0.99, api_name="/train_pivotal")
    with pytest.raises(AppError, match=r"EMA decay=0.99: and checkpoint selection"):  # the full fine-tune box last
        client.predict("adv-set", "<piv>", "broccoli", 4, 5e-3, 1, False, 3, 1e-4, 1, 2, 0, str(tiny_dir), False,
                       *selecting, "", 0.99, True, api_name="/train_pivotal")
    with pytest.raises(AppError, match=r"token starts from='runs/x.pt': looks like a file"):  # after the full box
        client.predict("adv-set", "<piv>", "broccoli", 4, 5e-3, 1, False, 3, 1e-4, 1, 2, 0, str(tiny_dir), False,
                       *plain, "", 0.0, False, "runs/x.pt", api_name="/train_pivotal")
    with pytest.raises(AppError, match=r"more subjects='missing': is not a data set of the workspace"):
        client.predict("adv-set", "tuki", "broccoli", True, 4, False, False, 50, 1.0, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                       0.0, *plain, "bnh=missing,class=monster", api_name="/train_dreambooth")
    # the text-encoder learning rate and caption dropout, appended last to both forms' inputs
    with pytest.raises(AppError, match=r"text-encoder learning rate=1e-05: is set but the text encoder does not train"):
        client.predict("adv-set", "tuki", "broccoli", True, 4, False, False, 50, 1.0, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                       0.0, *plain, "", 1e-5, api_name="/train_dreambooth")
    with pytest.raises(AppError, match=r"caption dropout=0.3: needs subjects trained on captions"):
        client.predict("adv-set", "tuki", "broccoli", True, 4, True, False, 50, 1.0, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                       0.0, *plain, "", 1e-5, 0.3, api_name="/train_dreambooth")
    with pytest.raises(AppError, match=r"text-encoder learning rate=1e-05: is set but the text encoder does not train"):
        client.predict("adv-set", "<piv>", "broccoli", 4, 5e-3, 1, False, 3, 1e-4, 1, 2, 0, str(tiny_dir), False,
                       *plain, "", 0.0, False, "class", 1e-5, api_name="/train_pivotal")
    with pytest.raises(AppError, match=r"caption dropout=1.5: is past the limit 1"):
        client.predict("adv-set", "<piv>", "broccoli", 4, 5e-3, 1, False, 3, 1e-4, 1, 2, 0, str(tiny_dir), True,
                       *plain, "", 0.0, False, "class", 1e-5, 1.5, api_name="/train_pivotal")
    with pytest.raises(AppError, match=r"timestep bias='earlier': textual inversion does not take one"):
        client.predict("adv-set", "<broc>", "broccoli", 2, 5e-3, 2, 2, 0, str(tiny_dir), *args, api_name="/train_start")
    assert advanced(*[defaults[k] for k in ADVANCED]) == type(advanced(*[defaults[k] for k in ADVANCED]))()


def test_evaluate_a_world_set_with_the_judge(served):
    """A drawn sticker-world set carries its labels: the table's accuracies and the confusion matrices agree with
    the judge run directly on the files; the HTML report is served from the workspace."""
    from conceptlab.evaluation.judge import load_judge
    from conceptlab.imaging import open_rgb
    from conceptlab.world.export import read_metadata

    studio, client, url = served
    client.predict("broccoli", 6, api_name="/draw_images")
    folder = sorted((studio.ws.root / "uploads").glob("world-broccoli*"))[-1]
    summary, table, confusion, report, per_image = client.predict(f"uploads/{folder.name}", "judge", "", "",
                                                                  api_name="/evaluate")
    rows = {r[0]: r for r in table["data"]}
    assert set(rows) >= {"object", "emotion", "colour"} and len(per_image["data"]) == 6
    meta = read_metadata(folder)
    read = load_judge().predict([open_rgb(folder / m["file_name"]) for m in meta])
    right = sum(p == m["object"] for p, m in zip(read["object"], meta))
    assert rows["object"][-1] == f"{right / 6:.2f} of 6"
    assert len(confusion) == len(read) and all(c["image"].endswith(".png") for c in confusion)
    assert report.endswith("index.html")
    served_page = studio.ws.root / summary.split("](/gradio_api/file=")[1].rstrip(")").split(str(studio.ws.root) + "/")[1]
    page = urllib.request.urlopen(f"{url}/gradio_api/file={served_page}", timeout=10).read().decode()
    assert "confusion-object.png" in page and "Per image" in page


def test_evaluate_with_clip_and_dino_is_evaluate_similarity(served, tiny_dir, tiny_clip, tiny_dino):
    """'clip and dino' scores a generations folder as `conceptlab evaluate similarity` does: the same means,
    against a data set of the workspace as references; without weights it is refused by name."""
    from conceptlab.evaluation.folder import score_similarity

    studio, client, _ = served
    clip, dino = tiny_clip, tiny_dino
    generate(client, "a sticker of a happy star", tiny_dir, n=2)
    client.predict("broccoli", 3, api_name="/draw_images")
    gens = sorted((studio.ws.root / "generations").iterdir())[-1]
    refs = sorted((studio.ws.root / "uploads").glob("world-broccoli*"))[-1]
    summary, table, _, report, per_image = client.predict(
        f"generations/{gens.name}", "clip and dino", "", "", str(clip), str(dino), f"uploads/{refs.name}",
        api_name="/evaluate")
    expected = score_similarity(gens, str(clip), str(dino), refs).summary()
    got = {r[0]: r[1] for r in table["data"]}
    assert set(got) == {"clip-t", "clip-i", "dino"} and all(abs(got[k] - expected[k]) < 1e-3 for k in got)
    assert len(per_image["data"]) == 2 and report.endswith("index.html")
    with pytest.raises(AppError, match=r"CLIP model folder=None: no scorer given"):
        client.predict(f"generations/{gens.name}", "clip and dino", "", "", "", "", None, api_name="/evaluate")
    with pytest.raises(AppError, match=r"DINO model folder=.*Give Reference pictures"):
        client.predict(f"generations/{gens.name}", "clip and dino", "", "", "", str(dino), None, api_name="/evaluate")


def test_host_beyond_loopback_needs_auth():
    from conceptlab.cli.main import main
    from conceptlab.errors import InputError

    check_host("127.0.0.1", None), check_host("localhost", None), check_host("::1", None)
    check_host("0.0.0.0", ("me", "pw"))
    with pytest.raises(InputError, match="without a password"):
        check_host("0.0.0.0", None)
    assert main(["studio", "--host", "0.0.0.0", "--workspace", "/nonexistent-never-made"]) == 2
    assert main(["studio", "--auth", "nopassword"]) == 2


@pytest.mark.slow  # another training process: about a minute on two loaded cores
def test_pivotal_job_to_completion_then_its_token_and_lora_in_the_library(served, tiny_dir, concept_dirs):
    studio, client, _ = served
    files = [handle_file(str(p)) for p in sorted((concept_dirs / "broccoli").glob("*.png"))]
    client.predict(files, "pt-set", api_name="/upload_images")
    job = client.predict("pt-set", "<piv>", "broccoli", 4, 5e-3, 1, False, 3, 1e-4, 1, 2, 0, str(tiny_dir),
                         api_name="/train_pivotal")["value"]
    status, log = _wait_done(client, job)
    assert f"**{job}**: done — step 3 of 3" in status and "token and its LoRA" in status, log
    client.predict(api_name="/concepts")
    token = client.predict(f"runs/{job}/piv", api_name="/concept")[0]
    lora = client.predict(f"runs/{job}/lora", api_name="/concept")[0]
    assert token["token"] == "<piv>" and lora["kind"] == "lora"
    gallery, _ = generate(client, "a sticker of a <piv> broccoli", tiny_dir, n=1, concepts=[f"runs/{job}/piv"],
                          loras=[f"runs/{job}/lora"])
    assert len(gallery) == 1


def test_evaluate_with_a_trained_classifier_is_classify_eval(served, tmp_path):
    """The classifier path gives what `recognizability` (classify eval's library call) gives on the same files."""
    from conceptlab.evaluation.classifier import Classifier, ClassifierConfig, recognizability, train_classifier
    from conceptlab.evaluation.datasets import read_labelled_folder
    from conceptlab.world.export import export_images

    studio, client, _ = served
    train = tmp_path / "train"
    export_images(train, 16, seed=0, size=32, only={"colour": {"red", "blue"}, "background": {"plain"}})
    cfg = ClassifierConfig(label="colour", arch="resnet-tiny", epochs=2, image_size=32, batch_size=8)
    train_classifier(read_labelled_folder(train, "colour"), cfg, tmp_path / "clf", progress=False)
    scored = studio.ws.root / "uploads" / "colours"
    export_images(scored, 6, seed=100, size=32, only={"colour": {"red", "blue"}, "background": {"plain"}})
    summary, table, confusion, report, per_image = client.predict("uploads/colours", "classifier",
                                                                  str(tmp_path / "clf"), "", api_name="/evaluate")
    files = sorted(scored.glob("*.png"))
    expected = recognizability(Classifier(tmp_path / "clf"), files, [m for m in _labels(scored, files)])
    got = {row[0]: row for row in table["data"]}
    assert set(got) == {"blue", "red"} and len(confusion) == 1 and report.endswith("index.html")
    assert [r[2] for r in per_image["data"]] == [f["predicted"] for f in expected["files"]]
    with pytest.raises(AppError, match=r"expect='shape=round': is not colour=VALUE"):
        client.predict("uploads/colours", "classifier", str(tmp_path / "clf"), "shape=round", api_name="/evaluate")


def _labels(folder, files):
    from conceptlab.world.export import read_metadata

    by_name = {m["file_name"]: m["colour"] for m in read_metadata(folder)}
    return [by_name[f.name] for f in files]
