"""`conceptlab classify train|eval|filter`: the seed project's emotion classifier, and what it measures."""

from __future__ import annotations

from conceptlab.cli.common import flag


def add_parser(sub):
    p = sub.add_parser("classify", help="train and apply an image classifier (ResNet from transformers)")
    csub = p.add_subparsers(dest="classify_command", required=True, metavar="ACTION")
    t = csub.add_parser("train", help="train on an image folder (metadata.jsonl or class subfolders)")
    flag(t, "--data", required=True)
    flag(t, "--label", default="emotion", help="metadata column to predict (default emotion)")
    flag(t, "--arch", default="resnet50", help="resnet50 or resnet18 (random init)")
    flag(t, "--pretrained", default=None, help="hub id or folder, e.g. microsoft/resnet-50 (fine-tune)")
    flag(t, "--image-size", type=int, default=64)
    flag(t, "--epochs", type=int, default=30)
    flag(t, "--lr", type=float, default=1e-3)
    flag(t, "--batch-size", type=int, default=32)
    flag(t, "--val-split", type=float, default=0.2)
    flag(t, "--patience", type=int, default=5)
    flag(t, "--seed", type=int, default=0)
    flag(t, "--out", required=True)
    t.set_defaults(run=run_train)
    for name, helptext in (("eval", "how many images the classifier recognizes as expected"),
                           ("filter", "copy the images the classifier recognizes")):
        e = csub.add_parser(name, help=helptext)
        flag(e, "--classifier", required=True)
        flag(e, "--images", required=True)
        if name == "eval":
            flag(e, "--expect", default=None, help="LABEL=VALUE for every image (default: from generations.jsonl)")
            flag(e, "--out", default=None, help="folder for recognizability.json and confusion.png")
            e.set_defaults(run=run_eval)
        else:
            flag(e, "--keep", required=True, help="LABEL=VALUE to keep")
            flag(e, "--min-confidence", type=float, default=0.0)
            flag(e, "--out", required=True)
            e.set_defaults(run=run_filter)
    return p


def _value(pair: str | None, label: str, argument: str) -> str | None:
    from conceptlab.errors import InputError

    if pair is None:
        return None
    name, sep, value = pair.partition("=")
    if not sep or name != label:
        raise InputError(argument, pair, f"expected {label}=VALUE", f"This classifier predicts {label!r}")
    return value


def run_train(args) -> int:
    from conceptlab.evaluation.classifier import ClassifierConfig, train_classifier
    from conceptlab.evaluation.datasets import read_labelled_folder

    data = read_labelled_folder(args.data, args.label)
    cfg = ClassifierConfig(label=args.label, arch=args.arch, pretrained=args.pretrained, image_size=args.image_size,
                           epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, val_split=args.val_split,
                           seed=args.seed, patience=args.patience)
    result = train_classifier(data, cfg, args.out)
    print(f"validation accuracy {result['accuracy']:.3f} (balanced {result['balanced_accuracy']:.3f}) on "
          f"{sum(r['support'] for r in result['per_class'].values())} images; written to {args.out}")
    return 0


def run_eval(args) -> int:
    from pathlib import Path

    from conceptlab.evaluation.classifier import Classifier, expected_labels, recognizability
    from conceptlab.evaluation.datasets import list_images
    from conceptlab.io import atomic_write_json
    from conceptlab.plots import plot_confusion

    clf = Classifier(args.classifier)
    paths, skipped = list_images(args.images)
    expected = expected_labels(paths, clf.classes, _value(args.expect, clf.cfg.label, "--expect"), label=clf.cfg.label)
    result = recognizability(clf, paths, expected)
    result["skipped"] = skipped
    out = Path(args.out or args.images)
    atomic_write_json(result, out / "recognizability.json")
    plot_confusion(result["confusion_matrix"], clf.classes, out / "confusion.png", "generated images")
    per = ", ".join(f"{c} {v['recall']:.2f}" for c, v in result["per_class"].items() if v["support"])
    print(f"recognizable: {result['recognizable']:.3f} of {len(paths)} images ({per}); details in {out}")
    return 0


def run_filter(args) -> int:
    import json
    import shutil
    from pathlib import Path

    from conceptlab.evaluation.classifier import Classifier
    from conceptlab.evaluation.datasets import list_images, open_rgb
    from conceptlab.io import atomic_write_text

    clf = Classifier(args.classifier)
    keep = _value(args.keep, clf.cfg.label, "--keep")
    paths, _ = list_images(args.images)
    labels, conf = clf.predict([open_rgb(p) for p in paths])
    out = Path(args.out)
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
