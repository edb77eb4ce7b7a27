import json

import numpy as np
import pytest
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.generation import GenerationConfig, generate, run_generation
from conceptlab.imaging import read_settings


def arr(im):
    return np.asarray(im, dtype=np.int16)


def test_same_seed_same_pixels_and_images_distinct(tiny_pipe):
    cfg = GenerationConfig(prompt="a happy star", n=3, seed=7, steps=3)
    a, b = generate(tiny_pipe, cfg, progress=False), generate(tiny_pipe, cfg, progress=False)
    assert [x.seed for x in a] == [7, 8, 9]
    for x, y in zip(a, b):
        assert np.array_equal(arr(x.image), arr(y.image))
    assert not np.array_equal(arr(a[0].image), arr(a[1].image))
    assert not np.array_equal(arr(a[1].image), arr(a[2].image))


def test_any_image_regenerates_alone(tiny_pipe):
    cfg = GenerationConfig(prompt="a sad apple", n=4, seed=3, steps=3, batch_size=4)
    batch = generate(tiny_pipe, cfg, progress=False)
    alone = generate(tiny_pipe, GenerationConfig(prompt="a sad apple", n=1, seed=5, steps=3), progress=False)
    # image 2 of the batch used seed 5; batching may only change float rounding
    assert np.abs(arr(batch[2].image) - arr(alone[0].image)).max() <= 1


def test_files_carry_their_settings(tiny_pipe, tmp_path):
    for fmt in ("png", "jpg"):
        out = tmp_path / fmt
        cfg = GenerationConfig(prompt="a green cat", negative_prompt="blurry", n=2, seed=11, steps=2, format=fmt,
                               scheduler="euler", grid=True)
        rows = run_generation(tiny_pipe, cfg, out, model="tiny", progress=False)
        assert [r["file"] for r in rows] == [f"0000-seed11.{fmt}", f"0001-seed12.{fmt}"]
        stored = read_settings(out / rows[1]["file"])
        assert stored["seed"] == 12 and stored["prompt"] == "a green cat" and stored["negative_prompt"] == "blurry"
        assert stored["scheduler"] == "euler" and stored["model"] == "tiny" and "conceptlab_version" in stored
        lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
        assert lines == rows
        assert Image.open(out / "grid.png").size[0] > 32


def test_regenerating_from_stored_settings_gives_the_same_pixels(tiny_pipe, tmp_path):
    cfg = GenerationConfig(prompt="a red fish", n=3, seed=20, steps=3, scheduler="ddim")
    rows = run_generation(tiny_pipe, cfg, tmp_path, model="tiny", progress=False)
    s = read_settings(tmp_path / rows[2]["file"])
    again = generate(tiny_pipe, GenerationConfig(prompt=s["prompt"], n=1, seed=s["seed"], steps=s["steps"],
                                                 guidance=s["guidance"], scheduler=s["scheduler"]), progress=False)
    assert np.abs(arr(again[0].image) - arr(Image.open(tmp_path / rows[2]["file"]))).max() <= 1


@pytest.mark.parametrize("change,flag", [
    ({"prompt": "  "}, "--prompt"), ({"n": 0}, "-n"), ({"steps": 0}, "--steps"),
    ({"scheduler": "warp"}, "--scheduler"), ({"width": 33}, "--width"), ({"height": 1}, "--height"),
    ({"format": "gif"}, "--format"),
])
def test_bad_input_names_the_flag_and_writes_nothing(tiny_pipe, tmp_path, change, flag):
    cfg = GenerationConfig(**{"prompt": "a star", "steps": 2, **change})
    with pytest.raises(InputError, match=flag):
        run_generation(tiny_pipe, cfg, tmp_path / "out", model="tiny", progress=False)
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file(tiny_pipe, tmp_path):
    f = tmp_path / "taken"
    f.write_text("")
    with pytest.raises(InputError, match="--out"):
        run_generation(tiny_pipe, GenerationConfig(prompt="a star", steps=2), f, model="tiny", progress=False)


@pytest.mark.parametrize("name", ["ddim", "euler", "euler_a", "dpm++", "unipc", "pndm", "lms", "heun", "ddpm"])
def test_every_scheduler_runs(tiny_pipe, name):
    from conceptlab.generation.schedulers import make_scheduler

    saved = tiny_pipe.scheduler
    try:
        out = generate(tiny_pipe, GenerationConfig(prompt="a star", n=1, steps=3, scheduler=name), progress=False)
        assert type(tiny_pipe.scheduler).__name__ == type(make_scheduler(name, saved.config)).__name__
        assert np.isfinite(arr(out[0].image)).all()
    finally:
        tiny_pipe.scheduler = saved
