"""`make gpu-check` runs end to end: on tiny shapes on the CPU here, so it works when a GPU is lent."""

from __future__ import annotations

import json

from benchmarks.gpu_check import main


def test_gpu_check_runs_every_check_on_tiny_shapes(tmp_path):
    out = tmp_path / "gpu.json"
    assert main(["--device", "cpu", "--dtype", "float32", "--shapes", "tiny,tiny-sdxl", "--steps", "1",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    for shape, family in (("tiny", "sd1"), ("tiny-sdxl", "sdxl")):
        row = data[shape]
        assert row["family"] == family
        for check in ("generate", "ti_step", "lora_step", "pivotal_te_step", "full_adamw_step", "full_adafactor_step",
                      "full_adamw8bit_step"):
            assert "error" not in row[check] and row[check]["seconds"] > 0, (shape, check, row[check])
        assert row["ti_step"]["steps"] == 1 and row["lora_step"]["steps_per_s"] > 0
        assert row["pivotal_te_step"]["steps"] == 1
    assert "seconds" in data["tiny"]["edit"] and "seconds" in data["tiny"]["inversion"]
    assert "seconds" in data["tiny-sdxl"]["edit"] and "seconds" in data["tiny-sdxl"]["inversion"]


def test_without_cuda_it_says_so_and_succeeds(capsys):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - on a GPU machine the real run is make gpu-check
        return
    assert main(["--out", "unused.json"]) == 0
    assert "no CUDA device" in capsys.readouterr().out
