"""Weight soups of fine-tuned runs (full and LoRA): the mean is exact, the soup is a run like any other, bad runs are
refused."""

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


def _lora_run(folder, seed: int, rank: int = 2, text_encoder: bool = True, pipe=None):
    """A finished DreamBooth-LoRA run folder: LoRA adapters with random (non-zero) factors on the tiny pipeline, written
    by conceptlab's own save_lora (diffusers and kohya files), and training.json."""
    from peft import LoraConfig, inject_adapter_in_model

    from conceptlab.concepts.lora import save_lora
    from conceptlab.models.families import family_of

    pipe = pipe or build_pipeline("tiny", seed=0)
    fam = family_of(pipe)
    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                     target_modules=list(fam.lora_unet_targets)))
    if text_encoder:
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                           target_modules=list(fam.lora_text_targets)), pipe.text_encoder)
    save_lora(pipe, folder / "lora", {"rank": rank, "lora": True, "subjects": ["tuki", "bnh"]})
    config = {"model": "tiny", "lora": True, "rank": rank, "subjects": [{"identifier": s, "class_word": "monster"}
                                                                          for s in ("tuki", "bnh")],
              "train": {"seed": seed, "lr": 1e-3}}
    (folder / "training.json").write_text(json.dumps({"config": config, "steps": 10}))
    return folder


def _fused(lora_file) -> dict[str, torch.Tensor]:
    """The tiny pipeline's UNet and text-encoder weights with `lora_file` fused in by diffusers itself."""
    pipe = build_pipeline("tiny", seed=0)
    pipe.load_lora_weights(str(lora_file))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return {f"{part}.{k}": v.detach().clone() for part in ("unet", "text_encoder")
            for k, v in getattr(pipe, part).state_dict().items()}


@pytest.mark.parametrize("name", ["pytorch_lora_weights.safetensors", "lora.kohya.safetensors"])
def test_a_lora_soup_fuses_to_the_weighted_mean_of_the_runs_fused_weights(tmp_path, name):
    """Souped by products: fusing the soup's LoRA gives sum_i w_i W_i, where W_i is run i's LoRA fused by diffusers;
    runs of other ranks, and a kohya file whose alpha is not its rank, are weighed by their own scale."""
    from safetensors.torch import load_file, save_file

    runs = [_lora_run(tmp_path / f"run{s}", s, rank=r) for s, r in ((1, 2), (2, 2), (3, 4))]
    if name.startswith("lora.kohya"):  # run 3 at alpha 2 for rank 4: its change is half its factors' product
        path = runs[2] / "lora" / name
        state = load_file(str(path))
        save_file({k: torch.tensor(2.0) if k.endswith(".alpha") else v for k, v in state.items()}, str(path))
    out = soup_runs(runs, tmp_path / "soup", weights=[2, 1, 1])
    parts = [_fused(r / "lora" / name) for r in runs]
    soup = _fused(out / "lora" / name)
    moved = [k for k in soup if not torch.equal(parts[0][k], parts[1][k])]
    assert len(moved) > 10  # the LoRAs changed these layers, differently per run
    for key in soup:
        torch.testing.assert_close(soup[key], 0.5 * parts[0][key] + 0.25 * parts[1][key] + 0.25 * parts[2][key],
                                   rtol=0, atol=2e-6)
    factors = load_file(str(out / "lora" / name))
    assert max(v.shape[0] for k, v in factors.items() if k.endswith(("lora_down.weight", "down.weight"))) == 8
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["lora"] and record["soup"]["seeds"] == [1, 2, 3] and record["soup"]["differ"] == ["rank"]


def test_a_lora_soup_loads_where_a_run_does_and_refuses_mixed_runs(tmp_path):
    from conceptlab.concepts.lora import DIFFUSERS_NAME, load_lora

    a, b = _lora_run(tmp_path / "a", 1), _lora_run(tmp_path / "b", 2)
    out = soup_runs([a, b], tmp_path / "soup")
    pipe = build_pipeline("tiny", seed=0)
    load_lora(pipe, out / "lora" / DIFFUSERS_NAME)  # conceptlab's checks and loader, as generate --lora uses
    image = pipe("a tuki monster", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images
    assert image.shape[0] == 1 and float(abs(image).sum()) > 0
    with pytest.raises(InputError, match="mixes LoRA runs and full fine-tunes"):
        soup_runs([a, _run(tmp_path / "full", 3)], tmp_path / "s2")
    with pytest.raises(InputError, match="LoRA layers run 1 has not"):
        soup_runs([a, _lora_run(tmp_path / "unet-only", 4, text_encoder=False)], tmp_path / "s3")
    (b / "bundle.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="pivotal"):
        soup_runs([a, b], tmp_path / "s4")
    assert not any((tmp_path / f"s{k}").exists() for k in (2, 3, 4)) and not list(tmp_path.glob(".s*.tmp"))


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
    ("lora", "not a finished run"),
    ("subjects", "subjects"),
    ("unfinished", "not a finished run"),
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
