"""Weight soups of fine-tuned runs: the mean is exact, the soup is a run like any other, bad runs are refused."""

from __future__ import annotations

import json

import pytest
import torch

from conceptlab.concepts.soup import soup_runs, soup_state_dicts
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline


def _run(folder, seed: int, subjects=("tuki", "bnh"), lora: bool = False, pipe=None):
    """A finished full fine-tune run folder: the tiny pipeline with its weights moved by `seed`, and training.json."""
    pipe = pipe or build_pipeline("tiny", seed=0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (pipe.unet, pipe.text_encoder):
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    pipe.save_pretrained(folder / "pipeline")
    config = {"model": "tiny", "lora": lora, "prior_weight": 0.3,
              "subjects": [{"identifier": s, "class_word": "monster"} for s in subjects],
              "train": {"seed": seed, "lr": 1e-4}}
    (folder / "training.json").write_text(json.dumps({"config": config, "steps": 10}))
    return folder


def _weights(folder, component):
    from safetensors.torch import load_file

    name = "diffusion_pytorch_model.safetensors" if component in ("unet", "vae") else "model.safetensors"
    return load_file(str(folder / "pipeline" / component / name))


def test_the_soup_is_the_weighted_mean_of_the_runs_and_loads_as_a_pipeline(tmp_path):
    from diffusers import UNet2DConditionModel

    runs = [_run(tmp_path / f"run{s}", s) for s in (1, 2, 3)]
    out = soup_runs(runs, tmp_path / "soup", weights=[2, 1, 1])
    unets = [UNet2DConditionModel.from_pretrained(r / "pipeline" / "unet") for r in runs]  # diffusers' own loader
    soup = UNet2DConditionModel.from_pretrained(out / "pipeline" / "unet")
    for name, p in soup.named_parameters():
        parts = [dict(u.named_parameters())[name] for u in unets]
        torch.testing.assert_close(p, 0.5 * parts[0] + 0.25 * parts[1] + 0.25 * parts[2], rtol=0, atol=1e-6)
    te = [_weights(r, "text_encoder") for r in runs]
    mixed = _weights(out, "text_encoder")
    key = next(k for k, v in mixed.items() if v.is_floating_point() and not torch.equal(te[0][k], te[1][k]))
    torch.testing.assert_close(mixed[key], 0.5 * te[0][key] + 0.25 * te[1][key] + 0.25 * te[2][key])
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["subjects"][0]["identifier"] == "tuki"
    assert record["soup"]["weights"] == [0.5, 0.25, 0.25] and record["soup"]["seeds"] == [1, 2, 3]
    assert record["soup"]["differ"] == []  # only the seed differs, and it is listed apart
    from conceptlab.models.loading import load_pipeline

    pipe = load_pipeline(str(out / "pipeline"))
    image = pipe("a tuki monster", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images
    assert image.shape[0] == 1 and float(abs(image).sum()) > 0
    assert not list(tmp_path.glob(".soup.tmp*"))


def test_settings_the_runs_disagree_on_are_recorded(tmp_path):
    a, b = _run(tmp_path / "a", 0), _run(tmp_path / "b", 1)
    record = json.loads((b / "training.json").read_text())
    record["config"]["train"]["lr"] = 3e-4
    (b / "training.json").write_text(json.dumps(record))
    out = soup_runs([a, b], tmp_path / "soup")
    assert json.loads((out / "training.json").read_text())["soup"]["differ"] == ["train.lr"]


def test_equal_weights_by_default_and_a_tensor_mean_in_float32():
    a = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16), "ids": torch.arange(3)}
    b = {"w": torch.tensor([3.0, 5.0], dtype=torch.bfloat16), "ids": torch.arange(3)}
    out = soup_state_dicts([a, b], [0.5, 0.5])
    assert out["w"].dtype == torch.bfloat16 and out["w"].tolist() == [2.0, 3.5] and torch.equal(out["ids"], a["ids"])
    with pytest.raises(InputError, match="integer tensor that differs"):
        soup_state_dicts([a, {**b, "ids": torch.arange(3) + 1}], [0.5, 0.5])
    with pytest.raises(InputError, match="shape"):
        soup_state_dicts([a, {**b, "w": torch.zeros(3)}], [0.5, 0.5])
    with pytest.raises(InputError, match="other weights"):
        soup_state_dicts([a, {"w": b["w"]}], [0.5, 0.5])


@pytest.mark.parametrize("case, match", [
    ("one run", "at least two runs"),
    ("lora", "LoRA run"),
    ("subjects", "subjects"),
    ("unfinished", "not a finished full fine-tune"),
    ("weights", "--weights"),
    ("out exists", "not an empty folder"),
    ("out is a file", "not an empty folder"),
])
def test_bad_runs_are_refused_with_the_argument_named(tmp_path, case, match):
    pipe = build_pipeline("tiny", seed=0)
    a = _run(tmp_path / "a", 0, pipe=pipe)
    b = {"lora": lambda: _run(tmp_path / "b", 1, lora=True, pipe=pipe),
         "subjects": lambda: _run(tmp_path / "b", 1, subjects=("tuki",), pipe=pipe),
         "unfinished": lambda: (tmp_path / "b").mkdir() or tmp_path / "b"}.get(case, lambda: _run(tmp_path / "b", 1, pipe=pipe))()
    runs = [a] if case == "one run" else [a, b]
    out = tmp_path / "soup"
    if case == "out exists":
        out.mkdir()
        (out / "x").write_text("keep me")
    if case == "out is a file":
        out.write_text("keep me")
    with pytest.raises(InputError, match=match):
        soup_runs(runs, out, weights=[1, 2, 3] if case == "weights" else None)
    assert case.startswith("out") or not out.exists()
    assert not case.startswith("out") or "keep me" in ((out / "x") if out.is_dir() else out).read_text()


def test_the_cli_writes_a_soup_and_names_a_bad_weight(tmp_path, capsys):
    from conceptlab.cli.main import main

    pipe = build_pipeline("tiny", seed=0)
    a, b = _run(tmp_path / "a", 0, pipe=pipe), _run(tmp_path / "b", 1, pipe=pipe)
    assert main(["concepts", "soup", str(a), str(b), "--out", str(tmp_path / "soup"), "--weights", "3,1"]) == 0
    assert json.loads((tmp_path / "soup" / "training.json").read_text())["soup"]["weights"] == [0.75, 0.25]
    assert main(["concepts", "soup", str(a), str(b), "--out", str(tmp_path / "s2"), "--weights", "1,x"]) != 0
    assert "--weights" in capsys.readouterr().err
