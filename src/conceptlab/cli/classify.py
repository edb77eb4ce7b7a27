"""`conceptlab classify train|eval|filter`: the seed project's emotion classifier, and what it measures."""

from __future__ import annotations

from pathlib import Path

from conceptlab.cli.common import add_command, add_group, flag
from conceptlab.validation import BATCH, CONFIDENCE, EPOCHS, LR, RENDER_SIZE, SEED, SPLIT, Bound

PATIENCE = Bound(1, 10_000, integer=True)


def add_parser(sub):
    csub = add_group(sub, "classify", help="train and apply an image classifier (ResNet from transformers)",
                     dest="classify_command")
    t = add_command(csub, "train", help="train on an image folder (metadata.jsonl or class subfolders)", run=run_train)
    flag(t, "--data", required=True, help="image folder with metadata.jsonl, or one subfolder per class")
    flag(t, "--label", default="emotion", help="metadata column to predict")
    flag(t, "--arch", default="resnet50", choices=("resnet50", "resnet18"), help="architecture when training from scratch")
    flag(t, "--pretrained", default=None, help="hub id or folder to fine-tune, e.g. microsoft/resnet-50 (default: "
                                               "random init)")
    flag(t, "--image-size", type=RENDER_SIZE.arg, default=64, help="pixels (random init only)")
    flag(t, "--epochs", type=EPOCHS.arg, default=30, help="most epochs (early stopping may end sooner)")
    flag(t, "--lr", type=LR.arg, default=1e-3, help="AdamW learning rate")
    flag(t, "--batch-size", type=BATCH.arg, default=32, help="images per step")
    flag(t, "--val-split", type=SPLIT.arg, default=0.2, help="share of each class held out for validation")
    flag(t, "--patience", type=PATIENCE.arg, default=5, help="epochs without a better validation loss before stopping")
    flag(t, "--seed", type=SEED.arg, default=0, help="seed of the split, sampling and augmentation")
    flag(t, "--out", required=True, help="folder for the weights, metrics and plots")
    for name, helptext, run in (("eval", "how many images the classifier recognizes as expected", run_eval),
                                ("filter", "copy the images the classifier recognizes", run_filter)):
        e = add_command(csub, name, help=helptext, run=run)
        flag(e, "--classifier", required=True, help="the --out folder of `classify train`")
        flag(e, "--images", required=True, help="folder of images (read only; nothing is written into it)")
        if name == "eval":
            flag(e, "--expect", default=None, help="LABEL=VALUE for every image (default: from generations.jsonl)")
            flag(e, "--out", default=None, help="folder for recognizability.json and confusion.png (default: "
                                                "IMAGES-eval beside the images)")
        else:
            flag(e, "--keep", required=True, help="LABEL=VALUE to keep, e.g. emotion=happy")
            flag(e, "--min-confidence", type=CONFIDENCE.arg, default=0.0, help="keep only predictions at least this sure")
            flag(e, "--out", required=True, help="folder the kept images are copied to (not inside --images)")
    return csub


def _value(pair: str | None, label: str, argument: str) -> str | None:
    from conceptlab.errors import InputError

    if pair is None:
        return None
    name, sep, value = pair.partition("=")
    if not sep or name != label:
        raise InputError(argument, pair, f"expected {label}=VALUE", f"This classifier predicts {label!r}")
    return value


def run_train(args) -> int:

    from conceptlab.evaluation.classifier import ClassifierConfig, check_classifier_config, train_classifier
    from conceptlab.evaluation.datasets import read_labelled_folder
    from conceptlab.validation import input_dir, not_inside, output_dir

    cfg = ClassifierConfig(label=args.label, arch=args.arch, pretrained=args.pretrained, image_size=args.image_size,
                           epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, val_split=args.val_split,
                           seed=args.seed, patience=args.patience)
    check_classifier_config(cfg)
    data_dir = input_dir("--data", args.data, "image folder")
    not_inside("--out", Path(args.out), data_dir, "--data")
    output_dir("--out", args.out)
    data = read_labelled_folder(data_dir, args.label)
    result = train_classifier(data, cfg, args.out)
    print(f"validation accuracy {result['accuracy']:.3f} (balanced {result['balanced_accuracy']:.3f}) on "
          f"{sum(r['support'] for r in result['per_class'].values())} images; written to {args.out}")
    return 0


def run_eval(args) -> int:
    from conceptlab.evaluation.classifier import Classifier, expected_labels, recognizability
    from conceptlab.evaluation.datasets import list_images
    from conceptlab.io import atomic_write_json
    from conceptlab.plots import plot_confusion
    from conceptlab.validation import input_dir, not_inside, output_dir

    images = input_dir("--images", args.images, "image folder")
    out = Path(args.out) if args.out else images.resolve().parent / (images.resolve().name + "-eval")
    not_inside("--out", out, images, "--images")
    output_dir("--out", out)
    clf = Classifier(args.classifier)
    paths, skipped = list_images(images)
    expected = expected_labels(paths, clf.classes, _value(args.expect, clf.cfg.label, "--expect"), label=clf.cfg.label)
    result = recognizability(clf, paths, expected)
    result["skipped"] = skipped
    atomic_write_json(result, out / "recognizability.json")
    plot_confusion(result["confusion_matrix"], clf.classes, out / "confusion.png", "generated images")
    per = ", ".join(f"{c} {v['recall']:.2f}" for c, v in result["per_class"].items() if v["support"])
    print(f"recognizable: {result['recognizable']:.3f} of {len(paths)} images ({per}); details in {out}")
    return 0


def run_filter(args) -> int:
    import json
    import shutil

    from conceptlab.evaluation.classifier import Classifier
    from conceptlab.evaluation.datasets import list_images, open_rgb
    from conceptlab.io import atomic_write_text
    from conceptlab.validation import input_dir, not_inside, output_dir

    images = input_dir("--images", args.images, "image folder")
    not_inside("--out", Path(args.out), images, "--images")
    out = output_dir("--out", args.out)
    clf = Classifier(args.classifier)
    keep = _value(args.keep, clf.cfg.label, "--keep")
    if keep not in clf.classes:
        from conceptlab.errors import InputError

        raise InputError("--keep", args.keep, f"{keep!r} is not a class of this classifier", f"Use one of {clf.classes}")
    paths, _ = list_images(images)
    labels, conf = clf.predict([open_rgb(p) for p in paths])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for p, lab, c in zip(paths, labels, conf):
        if lab == keep and c >= args.min_confidence:
            shutil.copy2(p, out / p.name)
            rows.append({"file_name": p.name, clf.cfg.label: lab, "confidence": round(c, 4)})
    old = (out / "metadata.jsonl").read_text() if (out / "metadata.jsonl").exists() else ""
    atomic_write_text(old + "".join(json.dumps(r) + "\n" for r in rows), out / "metadata.jsonl")
    print(f"kept {len(rows)} of {len(paths)} images as {clf.cfg.label}={keep} in {out}")
    return 0
