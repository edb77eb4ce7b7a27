import json

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlab.cli.main import main
from conceptlab.errors import InputError
from conceptlab.evaluation.classifier import (
    Classifier,
    ClassifierConfig,
    expected_labels,
    metrics,
    stratified_split,
    train_classifier,
)
from conceptlab.evaluation.datasets import open_rgb, read_labelled_folder
from conceptlab.world.export import export_images


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colours")
    export_images(folder, 48, seed=0, size=32, only={"colour": {"red", "blue"}, "background": {"plain"}})
    return folder


@pytest.fixture(scope="module")
def trained(colours, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    cfg = ClassifierConfig(label="colour", arch="resnet-tiny", epochs=12, image_size=32, lr=1e-2, batch_size=16,
                           patience=12)
    result = train_classifier(read_labelled_folder(colours, "colour"), cfg, out, progress=False)
    return out, result


def test_metrics_match_a_hand_count():
    m = metrics(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), ["a", "b"])
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)


def test_stratified_split_keeps_every_class_in_validation():
    labels = ["a"] * 10 + ["b"] * 30 + ["c"] * 2
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert sorted(tr + va) == list(range(42)) and not set(tr) & set(va)
    assert [sum(labels[i] == c for i in va) for c in "abc"] == [2, 6, 1]


def test_training_writes_every_artifact_and_learns(trained):
    out, result = trained
    for name in ("model.safetensors", "config.json", "labels.json", "metrics.json", "confusion.png", "curves.png",
                 "conceptlab_classifier.json", "history.json"):
        assert (out / name).is_file(), name
    clf = Classifier(out)
    assert clf.classes == ["blue", "red"]
    assert result["accuracy"] >= 0.8  # a tiny ResNet telling red from blue stickers; chance is 0.5
    assert not (out / "pytorch_model.bin").exists()  # safetensors only


def test_the_resnet_is_really_called(trained, colours):
    """The seed's bug: its 'ResNet-50' never ran. Ours gives different outputs for different images."""
    clf = Classifier(trained[0])
    rows = [json.loads(x) for x in (colours / "metadata.jsonl").read_text().splitlines()]
    imgs = [open_rgb(colours / r["file_name"]) for r in rows[:8]]
    _, conf = clf.predict(imgs)
    assert len(set(round(c, 5) for c in conf)) > 1


def test_expected_labels_from_a_labelled_folder(colours):
    rows = [json.loads(x) for x in (colours / "metadata.jsonl").read_text().splitlines()]
    paths = [colours / r["file_name"] for r in rows]
    assert expected_labels(paths, ["blue", "red"], None, label="colour") == [r["colour"] for r in rows]


def test_recognizability_of_a_label_the_classifier_lacks_is_a_clear_error(trained, colours):
    from conceptlab.errors import InputError
    from conceptlab.evaluation.classifier import recognizability

    paths = sorted(colours.glob("*.png"))[:2]
    with pytest.raises(InputError, match="green"):
        recognizability(Classifier(trained[0]), paths, ["green", "red"])


def test_single_class_and_missing_column(colours, tmp_path):
    with pytest.raises(InputError, match="--label"):
        read_labelled_folder(colours, "mood")
    one = tmp_path / "one"
    export_images(one, 4, only={"emotion": {"happy"}}, size=16)
    with pytest.raises(InputError, match="single class"):
        train_classifier(read_labelled_folder(one, "emotion"), ClassifierConfig(arch="resnet-tiny"), tmp_path / "o")


def test_corrupt_images_are_listed_and_skipped(tmp_path):
    for c in ("happy", "sad"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "sad" / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1"):
        data = read_labelled_folder(tmp_path, None)
    assert data.classes == ["happy", "sad"] and len(data.paths) == 4 and data.skipped[0].endswith("broken.png")


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no labelled images"):
        read_labelled_folder(tmp_path, None)


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "I;16", "P"])
def test_odd_image_modes_become_rgb(tmp_path, mode):
    im = Image.new(mode, (8, 8))
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    im.save(path)
    assert open_rgb(path).mode == "RGB"


def test_expected_labels_from_generations_jsonl(tmp_path):
    rows = [{"file": "a.png", "prompt": "a sticker of a happy broccoli"},
            {"file": "b.png", "prompt": "a broccoli in love", "expect": "in love"}]
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    assert expected_labels(paths, ["happy", "in love", "sad"], None) == ["happy", "in love"]
    with pytest.raises(InputError, match="--expect"):
        expected_labels(paths, ["happy"], "angry")


def test_cli_eval_and_filter(trained, colours, tmp_path, capsys):
    out = trained[0]
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rows = [json.loads(x) for x in (colours / "metadata.jsonl").read_text().splitlines()]
    red = [r for r in rows if r["colour"] == "red"][:6]
    for r in red:
        (imgs / r["file_name"]).write_bytes((colours / r["file_name"]).read_bytes())
    assert main(["classify", "eval", "--classifier", str(out), "--images", str(imgs), "--expect", "colour=red"]) == 0
    report = json.loads((tmp_path / "imgs-eval" / "recognizability.json").read_text())  # beside, never inside
    assert sorted(p.suffix for p in imgs.iterdir()) == [".png"] * 6
    assert 0 <= report["recognizable"] <= 1 and len(report["files"]) == 6
    assert main(["classify", "filter", "--classifier", str(out), "--images", str(imgs), "--keep", "colour=red",
                 "--out", str(tmp_path / "kept")]) == 0
    kept = [json.loads(x) for x in (tmp_path / "kept" / "metadata.jsonl").read_text().splitlines()]
    assert len(kept) == round(report["recognizable"] * 6)
    assert main(["classify", "eval", "--classifier", str(out), "--images", str(imgs), "--expect", "emotion=happy"]) == 2


# 3 steps an epoch; at lr 5e-2 the validation loss stops improving after epoch 4, and patience 1 ends the run there
@pytest.mark.parametrize("lr,epochs,patience,trained", [(1e-2, 4, 12, 4), (5e-2, 6, 1, 5)],
                         ids=["all epochs", "early stop"])
def test_training_on_the_shared_loop_paused_and_resumed_equals_a_straight_run(colours, tmp_path, lr, epochs, patience,
                                                                              trained):
    from safetensors.torch import load_file

    from conceptlab.training.loop import TrainingStopped

    data = read_labelled_folder(colours, "colour")

    def cfg():
        return ClassifierConfig(label="colour", arch="resnet-tiny", epochs=epochs, image_size=32, lr=lr,
                                batch_size=16, patience=patience)

    straight = train_classifier(data, cfg(), tmp_path / "a", progress=False)
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert len(history) == trained
    with pytest.raises(TrainingStopped, match="paused at step 4"):  # mid-epoch 2
        train_classifier(data, cfg(), tmp_path / "b", progress=False, stop_at=4)
    resumed = train_classifier(data, cfg(), tmp_path / "b", progress=False, resume=True)
    assert resumed == straight
    for name in ("history.json", "metrics.json", "labels.json", "conceptlab_classifier.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
