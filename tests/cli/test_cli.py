import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conceptlab.cli.main import main


def test_generate_end_to_end(tiny_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "a happy star", "-n", "2", "--seed", "4",
                 "--steps", "2", "--out", str(out), "--format", "jpg", "--grid"])
    assert code == 0
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # .generations.lock stays
    assert visible == ["0000-seed4.jpg", "0001-seed5.jpg", "generations.jsonl",
                                                     "grid.png"]
    assert "wrote 2 images" in capsys.readouterr().out


def test_underscore_and_dash_flags_are_the_same(tiny_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, flag in ((a, "--negative-prompt"), (b, "--negative_prompt")):
        assert main(["generate", "--model", str(tiny_dir), "--prompt", "a star", flag, "sad", "-n", "1",
                     "--steps", "2", "--out", str(out)]) == 0
    rows = [json.loads((d / "generations.jsonl").read_text()) for d in (a, b)]
    assert rows[0]["negative_prompt"] == rows[1]["negative_prompt"] == "sad"


def test_bad_flag_is_one_line_and_exit_2(tiny_dir, tmp_path, capsys):
    code = main(["generate", "--model", str(tiny_dir), "--prompt", "a star", "-n", "0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "-n" in err and "'0' is out of range" in err and "Pass" in err
    assert not (tmp_path / "o").exists()


def test_world_export(tmp_path):
    assert main(["world", "export", "--n", "3", "--out", str(tmp_path), "--only", "object=broccoli",
                 "--size", "48"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [r["object"] for r in rows] == ["broccoli"] * 3
    assert Image.open(tmp_path / rows[0]["file_name"]).size == (48, 48)


def test_repeated_only_flags_accumulate(tmp_path):
    """`--only object=broccoli --only emotion=sad` keeps both filters (the second used to replace the first)."""
    assert main(["world", "export", "--out", str(tmp_path), "--n", "4", "--only", "object=broccoli",
                 "--only", "emotion=sad"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert {(r["object"], r["emotion"]) for r in rows} == {("broccoli", "sad")}


def test_world_export_cover_spreads_the_renders_over_every_combination(tmp_path, capsys):
    """--cover emotion background: each allowed emotion equally often, each scene about equally, no pair twice."""
    from collections import Counter

    assert main(["world", "export", "--out", str(tmp_path / "a"), "--n", "12", "--only", "object=monster",
                 "individual=tuki", "emotion=happy,sad,angry,in love", "--exclude", "background=river",
                 "--individual-rate", "1", "--cover", "emotion", "background"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "a" / "metadata.jsonl").read_text().splitlines()]
    pairs = [(r["emotion"], r["background"]) for r in rows]
    assert len(set(pairs)) == 12 and {r["individual"] for r in rows} == {"tuki"}
    assert set(Counter(e for e, _ in pairs).values()) == {3}
    assert sorted(Counter(b for _, b in pairs).values()) == [2, 2, 2, 3, 3] and "river" not in {b for _, b in pairs}
    assert len({r["file_name"] for r in rows}) == 12
    for bad, why in ((["mood"], "is not an attribute"), (["emotion", "emotion"], "is named twice")):
        assert main(["world", "export", "--out", str(tmp_path / "b"), "--n", "2", "--cover", *bad]) == 2
        assert why in capsys.readouterr().err


def test_demo_writes_a_report_whose_images_exist(tiny_dir, tmp_path):
    import re

    assert main(["demo", "--out", str(tmp_path), "-n", "2", "--steps", "2", "--ti-steps", "2", "--db-steps", "2",
                 "--model", str(tiny_dir)]) == 0
    page = (tmp_path / "index.html").read_text()
    images = re.findall(r'src="([^"]+)"', page)
    assert len(images) >= 7 and all((tmp_path / src).is_file() for src in images)
    assert "a sticker of a happy yellow emoji" in page and "Textual inversion" in page
    assert (tmp_path / "ti" / "broccoli" / "learned_embeds.safetensors").is_file()
    assert "DreamBooth" in page and (tmp_path / "dreambooth" / "lora").is_dir()


def test_accelerate_two_processes_write_the_same_files(tiny_dir, tmp_path, free_port):
    """`accelerate launch --num_processes 2` splits the images but writes what one process writes."""
    args = ["generate", "--model", str(tiny_dir), "--prompt", "a happy star", "-n", "5", "--seed", "1",
            "--steps", "2", "--grid"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main([*args, "--out", str(single)]) == 0
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(free_port), "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "conceptlab.cli.main", *args, "--out", str(multi)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "splitting 5 images across 2 processes" in done.stdout
    names = sorted(p.name for p in single.iterdir())
    assert names == sorted(p.name for p in multi.iterdir())
    strip = lambda p: [{k: v for k, v in json.loads(x).items()} for x in Path(p).read_text().splitlines()]  # noqa
    assert strip(single / "generations.jsonl") == strip(multi / "generations.jsonl")
    for name in names:
        if name.endswith(".png") and name != "grid.png":
            a = np.asarray(Image.open(single / name), dtype=np.int16)
            b = np.asarray(Image.open(multi / name), dtype=np.int16)
            assert np.abs(a - b).max() <= 1, name
