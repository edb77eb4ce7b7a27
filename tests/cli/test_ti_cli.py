import json
import subprocess
import sys

import torch

from conceptlab.cli.main import main
from conceptlab.concepts.formats import load_embedding


def test_train_ti_then_generate_inspect_convert_mix(tiny_dir, concept_dirs, tmp_path, capsys):
    out = tmp_path / "ti"
    code = main(["train", "ti", "--model", str(tiny_dir), "--concept", f"<broc>={concept_dirs / 'broccoli'},init=broccoli",
                 "--concept", f"<emo>={concept_dirs / 'emoji'},init=emoji", "--steps", "3", "--batch_size", "2",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "broc" / "learned_embeds.safetensors").is_file() and (out / "emo" / "emo.kohya.safetensors").is_file()
    training = json.loads((out / "training.json").read_text())
    assert training["steps"] == 3 and training["config"]["concepts"][1]["token"] == "<emo>"

    gen = tmp_path / "gen"
    assert main(["generate", "--model", str(tiny_dir), "--concepts", str(out), "--prompt", "a <broc> with a <emo> face",
                 "-n", "1", "--steps", "2", "--out", str(gen)]) == 0
    assert "loaded concepts: <broc> (1 vectors), <emo> (1 vectors)" in capsys.readouterr().out

    assert main(["concepts", "inspect", str(out / "broc" / "broc.npy")]) == 0
    assert "format numpy, token '<broc>', 1 x 32" in capsys.readouterr().out
    assert main(["concepts", "convert", str(out / "broc" / "broc.a1111.pt"), "--to", "diffusers", "--out",
                 str(tmp_path / "c.safetensors")]) == 0
    assert torch.equal(load_embedding(tmp_path / "c.safetensors").vectors, load_embedding(out / "broc" / "broc.npy").vectors)

    mix = tmp_path / "mix"
    assert main(["concepts", "mix", str(out / "broc" / "learned_embeds.safetensors"),
                 str(out / "emo" / "learned_embeds.safetensors"), "--weight", "0.25", "--name", "<broc-emo>",
                 "--out", str(mix), "--sweep", "0,0.5,1", "--model", str(tiny_dir), "--steps", "2"]) == 0
    a, b = load_embedding(out / "broc" / "broc.npy").vectors, load_embedding(out / "emo" / "emo.npy").vectors
    assert torch.allclose(load_embedding(mix / "learned_embeds.safetensors").vectors, 0.75 * a + 0.25 * b)
    assert (mix / "sweep.png").is_file()


def test_train_ti_config_file_and_flag_override(tiny_dir, concept_dirs, tmp_path):
    cfg = {"concepts": [{"token": "<b>", "folder": str(concept_dirs / "broccoli")}], "train": {"steps": 5, "lr": 0.01}}
    path = tmp_path / "ti.json"
    path.write_text(json.dumps(cfg))
    assert main(["train", "ti", "--model", str(tiny_dir), "--config", str(path), "--steps", "2", "--out",
                 str(tmp_path / "o")]) == 0
    record = json.loads((tmp_path / "o" / "training.json").read_text())
    assert record["steps"] == 2 and record["train"]["lr"] == 0.01
    path.write_text(json.dumps({**cfg, "colour": "red"}))
    assert main(["train", "ti", "--model", str(tiny_dir), "--config", str(path), "--out", str(tmp_path / "p")]) == 2


def test_train_ti_under_accelerate_with_two_processes(tiny_dir, concept_dirs, tmp_path, free_port):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(free_port), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "conceptlab.cli.main", "train", "ti",
           "--model", str(tiny_dir), "--concept", f"<broc>={concept_dirs / 'broccoli'}", "--steps", "2",
           "--batch-size", "1", "--checkpoint-every", "1", "--out", str(tmp_path / "o")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ck = tmp_path / "o" / "checkpoints" / "step-000002"
    assert (ck / "rng-0.pt").is_file() and (ck / "rng-1.pt").is_file()
    assert load_embedding(tmp_path / "o" / "broc" / "learned_embeds.safetensors").meta["steps"] == 2
