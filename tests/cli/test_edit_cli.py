import json

from PIL import Image

from conceptlab.cli.main import main


def test_edit_reweight_strip_attention_and_invert(tiny_dir, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["edit", "--model", str(tiny_dir), "--prompt", "a happy star with many flowers", "--to",
                 "a happy apple with many flowers", "--steps", "2", "--out", str(out)]) == 0
    assert "mode: replace (words or phrases swapped one for one)" in capsys.readouterr().out
    rows = json.loads((out / "edits.json").read_text())
    assert rows[0]["files"] == ["seed0-source.png", "seed0-edit1.png"] and (out / "grid.png").is_file()
    strip = tmp_path / "s"
    assert main(["edit", "--model", str(tiny_dir), "--prompt", "a star with many flowers", "--to",
                 "a star with many flowers", "--reweight", "flowers=-2,0,2", "--steps", "2", "--out", str(strip)]) == 0
    assert Image.open(strip / "grid.png").size[0] > Image.open(out / "grid.png").size[0]
    assert main(["edit", "--model", str(tiny_dir), "--prompt", "a star with many flowers", "--to", "a star with many flowers",
                 "--reweight", "flowers=0", "--reweight-attention-only", "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    row = json.loads((tmp_path / "o" / "edits.json").read_text())[0]
    assert row["reweight"] == {"flowers": 0.0} and row["reweight_text"] is False
    assert main(["edit", "--model", str(tiny_dir), "--prompt", "a star", "--to", "a red star", "--reweight", "moon=2",
                 "--steps", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "Use one of its words" in capsys.readouterr().err
    assert main(["attention", "--model", str(tiny_dir), "--prompt", "a happy star", "--steps", "2", "--out",
                 str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "attention.png").is_file()
    src = tmp_path / "src.png"
    Image.open(out / "seed0-source.png").save(src)
    assert main(["invert", str(src), "--model", str(tiny_dir), "--prompt", "a happy star", "--method",
                 "negative-prompt", "--steps", "2", "--refine-steps", "3", "--out", str(tmp_path / "i")]) == 0
    report = json.loads((tmp_path / "i" / "inversion.json").read_text())
    assert "psnr_db" in report and report["refine_steps"] == 3
    assert (report["prompt"], report["guidance"], report["image"]) == ("a happy star", 7.5, str(src))
    assert main(["edit", "--model", str(tiny_dir), "--prompt", "a happy star", "--to", "a sad star", "--from-image",
                 str(src), "--inversion", "negative-prompt", "--steps", "2", "--blend-mask", "difference",
                 "--out", str(tmp_path / "r")]) == 0
    rows = json.loads((tmp_path / "r" / "edits.json").read_text())
    assert rows[0]["blend_mask"] == "difference" and rows[0]["files"][-1] == "seed0-blend-mask.png"
    assert Image.open(tmp_path / "r" / "seed0-blend-mask.png").size == Image.open(src).size


def test_edit_mask_noise_and_paste_are_saved_with_the_edit_and_need_a_mask(tiny_dir, tmp_path, capsys):
    mask = tmp_path / "mask.png"
    Image.new("L", (32, 32), 255).save(mask)
    args = ["edit", "--model", str(tiny_dir), "--prompt", "a happy star", "--to", "a happy star on a beach",
            "--steps", "2"]
    assert main(args + ["--mask", str(mask), "--mask-noise", "0.5", "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "edits.json").read_text())[0]["mask_noise"] == 0.5
    assert main(args + ["--mask-noise", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "--mask-noise" in capsys.readouterr().err
    assert main(args + ["--mask", str(mask), "--mask-noise", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert main(args + ["--mask", str(mask), "--mask-paste", "2", "--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "edits.json").read_text())[0]["mask_paste"] == 2.0
    assert main(args + ["--mask-paste", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "--mask-paste" in capsys.readouterr().err


def test_edit_from_image_inverts_with_direct_inversion_unless_told(tiny_dir, tmp_path, monkeypatch):
    import conceptlab.editing.inversion as inversion

    methods, real = [], inversion.invert
    monkeypatch.setattr(inversion, "invert", lambda pipe, picture, prompt, method, *a, **k:
                        methods.append(method) or real(pipe, picture, prompt, method, *a, **k))
    src = tmp_path / "src.png"
    Image.new("RGB", (32, 32), (200, 180, 40)).save(src)
    args = ["edit", "--model", str(tiny_dir), "--prompt", "a happy star", "--to", "a sad star", "--from-image", str(src),
            "--steps", "2"]
    assert main(args + ["--out", str(tmp_path / "d")]) == 0
    assert main(args + ["--method", "negative-prompt", "--out", str(tmp_path / "n")]) == 0
    assert methods == ["direct", "negative-prompt"]
