"""`conceptlab evaluate ti|dreambooth|edit RUN` on tiny runs made here: the JSON they write, an untouched run."""

import hashlib
import json

import pytest

from conceptlab.cli.main import main
from conceptlab.evaluation.judge import shipped_judge

pytestmark = pytest.mark.skipif(not (shipped_judge() / "judge.safetensors").is_file(), reason="no shipped judge")


def snapshot(folder):
    """Every file under `folder` with its bytes' hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_header(scores, recipe, model):
    assert scores["recipe"] == recipe and scores["model"] == str(model) and scores["judge"] == "shipped"
    assert scores["date"][:2] == "20" and scores["conceptlab_version"] and "settings" in scores
    assert scores["verdict"] in ("PASS", "BELOW THE BAR") and scores["bars"]
    assert all({"name", "value", "passed", "line"} <= set(b) for b in scores["bars"])


@pytest.fixture(scope="module")
def ti_run(tiny_dir, concept_dirs, tmp_path_factory):
    run = tmp_path_factory.mktemp("ti") / "run"
    assert main(["train", "ti", "--model", str(tiny_dir), "--concept", f"<broc>={concept_dirs / 'broccoli'},init=broccoli",
                 "--steps", "2", "--batch-size", "2", "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def db_run(tiny_dir, concept_dirs, tmp_path_factory):
    run = tmp_path_factory.mktemp("db") / "run"
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", f"tuki={concept_dirs / 'broccoli'},class=monster",
                 "--lora", "--rank", "2", "--steps", "2", "--batch-size", "1", "--out", str(run)]) == 0
    return run


def test_evaluate_ti(ti_run, tiny_dir, capsys):
    before = snapshot(ti_run)
    assert main(["evaluate", "ti", str(ti_run), "--per-prompt", "2", "--steps", "2", "--guidance", "7.5", "3"]) == 0
    out = ti_run.with_name("run-eval")  # the default OUT
    assert snapshot(ti_run) == before
    scores = json.loads((out / "scores.json").read_text())
    check_header(scores, "ti", tiny_dir)
    broc = scores["concepts"]["<broc>"]
    # every training image is happy, so the token carries the emotion
    assert broc["object"] == "broccoli" and list(broc["per_prompt"]) == ["a sticker of a <broc>"]
    assert broc["images"] == 2 and 0 <= broc["share"] <= 1 and list(broc["other_guidance"]) == ["3"]
    assert list(broc["plain_word"]["per_prompt"]) == ["a sticker of a happy broccoli"]
    assert scores["settings"]["seeds"] == [0, 1] and scores["settings"]["guidance"] == [7.5, 3.0]
    assert broc["share"] == sum(r["ok"] for r in broc["rows"]) / 2
    assert (out / "grid.png").is_file() and (out / "index.html").is_file()
    printed = capsys.readouterr().out
    assert "<broc>:" in printed and scores["verdict"] in printed


def test_evaluate_dreambooth(db_run, tiny_dir, tmp_path):
    before = snapshot(db_run)
    out = tmp_path / "db-eval"
    assert main(["evaluate", "dreambooth", str(db_run), "--out", str(out), "--seeds", "1", "--class-images", "2",
                 "--steps", "2", "--baseline", "class"]) == 0
    assert snapshot(db_run) == before
    scores = json.loads((out / "scores.json").read_text())
    check_header(scores, "dreambooth", tiny_dir)
    assert scores["subjects"]["images"] == 4 * 5 and set(scores["subjects"]["identity_per_subject"]) == {"tuki"}
    assert "subjects" not in scores["base"] and scores["class"]["monster"]["images"] == 2
    drift = scores["drift"]["monster"]
    assert drift["judged_as_subject"] == pytest.approx(scores["class"]["monster"]["judged_as_subject"]
                                                       - scores["base"]["class"]["monster"]["judged_as_subject"])
    assert scores["settings"]["class_seeds"] == [1000, 1001]
    assert [b["name"] for b in scores["bars"]][:3] == ["identity judged right", "emotion judged right",
                                                       "scene judged right"]


def test_evaluate_edit(tiny_dir, tmp_path, capsys):
    run = tmp_path / "edit"
    assert main(["edit", "--model", str(tiny_dir), "--prompt", "a sticker of a red star", "--to",
                 "a sticker of a red apple", "--to", "a big sticker of a red star", "-n", "2", "--steps", "2",
                 "--out", str(run)]) == 0
    before = snapshot(run)
    assert main(["evaluate", "edit", str(run), "--model", str(tiny_dir)]) == 0
    assert snapshot(run) == before
    scores = json.loads((tmp_path / "edit-eval" / "scores.json").read_text())
    check_header(scores, "edit", tiny_dir)
    assert len(scores["rows"]) == 2 and {r["kind"] for r in scores["rows"]} == {"object"}
    assert len(scores["skipped"]) == 2 and scores["skipped"][0]["why"] == "not a one-for-one swap of words"
    assert all(r["source_reproduced_psnr"] >= 30 for r in scores["rows"])
    assert scores["summary"]["p2p_new"] == sum(r["p2p_new"] for r in scores["rows"]) / 2
    assert "2 swaps (2 other edits skipped)" in capsys.readouterr().out


def test_a_run_of_another_kind_is_one_line_naming_run_and_the_fix(db_run, ti_run, tmp_path, capsys):
    assert main(["evaluate", "ti", str(db_run), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "RUN=" in err and "is not a textual-inversion run" in err
    assert "conceptlab train ti" in err and not (tmp_path / "a").exists()
    assert main(["evaluate", "dreambooth", str(ti_run), "--out", str(tmp_path / "b")]) == 2
    assert "conceptlab train dreambooth" in capsys.readouterr().err
    assert main(["evaluate", "edit", str(ti_run), "--out", str(tmp_path / "c")]) == 2
    assert "has no edits.json" in capsys.readouterr().err


def test_missing_judge_and_an_out_inside_the_run(ti_run, tmp_path, capsys):
    assert main(["evaluate", "ti", str(ti_run), "--judge", str(tmp_path / "no-judge")]) == 2
    err = capsys.readouterr().err
    assert "--judge=" in err and "scripts/train_judge.py" in err and "conceptlab judge train" not in err
    assert main(["evaluate", "ti", str(ti_run), "--out", str(ti_run / "eval")]) == 2
    assert "inside the run folder" in capsys.readouterr().err and not (ti_run / "eval").exists()
