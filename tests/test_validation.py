"""The validation layer against independent references: safetensors' own reader, PIL, float parsing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from conceptlab.errors import InputError
from conceptlab.validation import Bound, check_type, open_image, output_dir, parse_numbers, safetensors_header


@pytest.mark.parametrize("text,ok", [("1", True), ("1000", True), ("1001", False), ("0", False), ("1e3", True),
                                     ("2.5", False), ("nan", False), ("inf", False), ("-1", False), ("x", False)])
def test_whole_number_bound(text, ok):
    bound = Bound(1, 1000, integer=True)
    if ok:
        assert bound.check("--steps", text) == int(float(text))
    else:
        with pytest.raises(InputError) as e:
            bound.check("--steps", text)
        assert str(e.value).startswith("--steps=")


def test_open_lower_bound_and_finite():
    lr = Bound(0, 1, low_open=True)
    assert lr.check("--lr", "1e-4") == pytest.approx(1e-4)
    for bad in ("0", "-1e-3", "nan", "-inf", True):
        with pytest.raises(InputError):
            lr.check("--lr", bad)


def test_parse_numbers_matches_float():
    values = parse_numbers("--sweep", "0,0.25,1", Bound(0, 1))
    assert values == [float(x) for x in "0,0.25,1".split(",")]
    with pytest.raises(InputError):
        parse_numbers("--sweep", "0,,1", Bound(0, 1))


def test_safetensors_header_agrees_with_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.randn(3, 4), "b": torch.zeros(2, dtype=torch.int64)}, str(path), metadata={"k": "v"})
    header = safetensors_header("file", path)
    with safe_open(str(path), framework="pt") as f:
        assert set(header) - {"__metadata__"} == set(f.keys())
        assert header["__metadata__"] == f.metadata()
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    with pytest.raises(InputError, match="truncated"):
        safetensors_header("file", tmp_path / "cut.safetensors")


def test_open_image_converts_like_the_training_loader(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red: white once composited
    rgba.save(tmp_path / "a.png")
    deep = Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16))  # 16-bit grey
    deep.save(tmp_path / "b.png")
    a, b = open_image("x", tmp_path / "a.png"), open_image("x", tmp_path / "b.png")
    assert a.mode == b.mode == "RGB"
    assert a.getpixel((0, 0)) == (255, 255, 255)
    assert b.getpixel((7, 7))[0] == math.floor(63 * 1000 / 256)


def test_output_dir_refuses_a_read_only_mount_even_for_root(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    try:
        import os

        if os.geteuid() == 0:  # root writes anyway: the probe then agrees with reality, which is the point
            assert output_dir("--out", target / "sub") == target / "sub"
        else:
            with pytest.raises(InputError):
                output_dir("--out", target / "sub")
    finally:
        target.chmod(0o755)


def test_check_type_names_the_key():
    assert check_type("c.steps", 3, int) == 3
    assert check_type("c.lr", 1, float) == 1.0
    assert check_type("c.x", None, int | None) is None
    for value, hint in (("ten", int), (True, int), ("x", float), (3, str), (["a", 1], list[str])):
        with pytest.raises(InputError) as e:
            check_type("c.key", value, hint)
        assert str(e.value).startswith("c.key")


@pytest.mark.parametrize("key,value", [("lr", float("nan")), ("warmup_steps", -5), ("steps", 10**20),
                                       ("checkpoint_every", -1), ("max_grad_norm", float("inf")), ("seed", -1),
                                       ("preview_steps", 0), ("batch_size", 0)])
def test_train_config_refuses_what_cannot_train(key, value):
    """The Python API gets the CLI's refusals: TrainConfig.check uses the same bounds."""
    from conceptlab.training.loop import TrainConfig

    with pytest.raises(InputError) as e:
        TrainConfig(**{key: value}).check()
    assert str(e.value).startswith(f"--{key.replace('_', '-')}=")
