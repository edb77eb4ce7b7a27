"""`conceptlab evaluate similarity`: CLIP-T, CLIP-I and DINO of a folder, checked against the formula computed
from the models' own forward passes, with each image's prompt read from the folder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.evaluation.folder import score_similarity


def _img(seed, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture
def folders(tmp_path):
    """gen/: three images listed in generations.jsonl, the third also carrying its prompt in its settings;
    refs/: two real pictures."""
    from conceptlab.imaging import save_image

    gen, refs = tmp_path / "gen", tmp_path / "refs"
    gen.mkdir(), refs.mkdir()
    prompts = ["a happy star", "a sad cat", "a red apple"]
    for k in range(2):
        _img(k).save(gen / f"{k:03d}.png")
    save_image(_img(2), gen / "002.png", {"prompt": prompts[2]})
    (gen / "generations.jsonl").write_text("".join(json.dumps({"file": f"{k:03d}.png", "prompt": prompts[k]}) + "\n"
                                                   for k in range(3)))
    for k in range(2):
        _img(10 + k).save(refs / f"r{k}.png")
    return gen, refs, prompts


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_clip_t_clip_i_and_dino_per_image_equal_the_formula(folders, tiny_clip, tiny_dino):
    from transformers import CLIPModel, CLIPProcessor, ViTImageProcessor, ViTModel

    gen, refs, prompts = folders
    s = score_similarity(gen, str(tiny_clip), str(tiny_dino), refs)
    assert s.files == ["000.png", "001.png", "002.png"] and s.prompts == prompts and s.references == 2
    model, proc = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    images, real = [_img(k) for k in range(3)], [_img(10), _img(11)]
    with torch.no_grad():
        iv = model.visual_projection(model.vision_model(**proc(images=images, return_tensors="pt")).pooler_output)
        rv = model.visual_projection(model.vision_model(**proc(images=real, return_tensors="pt")).pooler_output)
        tv = model.text_projection(model.text_model(**proc(text=prompts, return_tensors="pt", padding=True)).pooler_output)
    iv, rv, tv = iv.numpy(), rv.numpy(), tv.numpy()
    for k in range(3):
        assert s.clip_t[k] == pytest.approx(100 * _cos(iv[k], tv[k]), abs=1e-3)
        assert s.clip_i[k] == pytest.approx(np.mean([_cos(iv[k], r) for r in rv]), abs=1e-5)
    vit, vproc = ViTModel.from_pretrained(tiny_dino, add_pooling_layer=False).eval(), ViTImageProcessor.from_pretrained(tiny_dino)
    with torch.no_grad():
        cls = vit(**vproc(images=images + real, return_tensors="pt")).last_hidden_state[:, 0].numpy()
    for k in range(3):
        assert s.dino[k] == pytest.approx(np.mean([_cos(cls[k], cls[3 + j]) for j in range(2)]), abs=1e-5)
    summary = s.summary()
    assert summary["clip-t"] == pytest.approx(np.mean(s.clip_t), abs=1e-4) and summary["images"] == 3
    assert len({round(v, 6) for v in s.clip_t}) == 3  # the check can fail: the images score differently


def test_cli_writes_the_scores_and_a_given_prompt_overrides_the_folders(folders, tiny_clip, tmp_path, capsys):
    from conceptlab.cli.main import main

    gen, refs, _ = folders
    out = tmp_path / "scores.json"
    assert main(["evaluate", "similarity", str(gen), "--clip-model", str(tiny_clip), "--references", str(refs),
                 "--prompt", "a happy star", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "3 images, 2 references: clip-t" in capsys.readouterr().out
    assert [r["prompt"] for r in data["images"]] == ["a happy star"] * 3 and "dino" not in data["summary"]
    same = score_similarity(gen, str(tiny_clip), references=refs, prompt="a happy star")
    assert data["summary"]["clip-i"] == same.summary()["clip-i"]
    own = score_similarity(gen, str(tiny_clip)).clip_t  # the folder's own prompts score differently
    assert [r["clip-t"] for r in data["images"]][1:] != [round(v, 4) for v in own][1:]


def test_the_folders_own_prompts_listed_files_captions_and_a_learned_token(folders, tiny_clip, tiny_dino):
    """Only the images generations.jsonl lists are scored (not a grid sheet beside them); a NAME.txt caption is
    a prompt; '<tuki>' is read as 'tuki'; a picture whose stored settings are not an object is no crash."""
    from conceptlab.evaluation.folder import clip_text

    gen, refs, prompts = folders
    _img(7, 64).save(gen / "grid.png")  # generate --grid's sheet: not listed
    s = score_similarity(gen, str(tiny_clip), str(tiny_dino), refs)
    assert s.files == ["000.png", "001.png", "002.png"]
    (gen / "generations.jsonl").unlink()
    (gen / "grid.png").unlink()
    (gen / "000.txt").write_text("a happy star\n")
    (gen / "001.txt").write_text("a sad cat")
    assert score_similarity(gen, str(tiny_clip)).prompts == prompts
    assert clip_text("a <tuki> monster and <bnh>") == "a tuki monster and bnh"
    tokened = score_similarity(gen, str(tiny_clip), prompt="a <tuki> monster").clip_t
    assert tokened == score_similarity(gen, str(tiny_clip), prompt="a tuki monster").clip_t
    _img(8).save(gen / "odd.jpg", comment=b"2024")  # settings that parse, but are not an object
    (gen / "000.txt").unlink()
    (gen / "001.txt").unlink()
    assert len(score_similarity(gen, dino_model=str(tiny_dino), references=refs).dino) == 4  # DINO reads no prompts
    assert score_similarity(gen, str(tiny_clip), prompt="a star").prompts == ["a star"] * 4


def test_bad_input_names_the_flag(folders, tiny_clip, tmp_path):
    gen, refs, _ = folders
    with pytest.raises(InputError, match=r"--clip-model=None: no scorer given"):
        score_similarity(gen)
    with pytest.raises(InputError, match=r"--dino-model=.*none are given"):
        score_similarity(gen, dino_model=str(tiny_clip))
    with pytest.raises(InputError, match=r"--clip-model=.*cannot be loaded"):
        score_similarity(gen, clip_model=str(refs))
    (gen / "generations.jsonl").unlink()
    with pytest.raises(InputError, match=r"FOLDER='000.png': has no prompt.*Give --prompt"):
        score_similarity(gen, clip_model=str(tiny_clip))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"--references=.*holds no readable images"):
        score_similarity(gen, clip_model=str(tiny_clip), references=tmp_path / "empty", prompt="a star")
