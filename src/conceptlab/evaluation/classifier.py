"""The seed project's emotion classifier, done right: a transformers ResNet actually trained on the images.

Random init offline, or fine-tuned from pretrained weights (e.g. microsoft/resnet-50) with that model's own
image processor. Stratified validation split, augmentation, early stopping on validation loss,
class-balanced metrics, and every artifact a user wants to look at.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from conceptlab.errors import InputError
from conceptlab.evaluation.datasets import LabelledImages, open_rgb, read_labelled_folder

ARCHS = {
    # ResNet-50 and ResNet-18 as in He et al. 2016 (arXiv 1512.03385)
    "resnet50": dict(layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048]),
    "resnet18": dict(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512]),
    "resnet-tiny": dict(layer_type="basic", depths=[1, 1], hidden_sizes=[16, 32], embedding_size=16),  # tests
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ClassifierConfig:
    """Settings of `classify train`; saved beside the weights as conceptlab_classifier.json."""

    label: str = "emotion"
    arch: str = "resnet50"
    pretrained: str | None = None  # hub id or folder; None = random init
    image_size: int = 64  # random init only; a pretrained model uses its processor's size
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 32
    val_split: float = 0.2
    seed: int = 0
    patience: int = 5  # epochs without a better validation loss before stopping
    augment: bool = True
    classes: list[str] = field(default_factory=list)


class Preprocess:
    """Image -> normalised tensor: the pretrained model's own processor, or ImageNet statistics."""

    def __init__(self, cfg: ClassifierConfig, processor=None):
        self.processor = processor
        self.size = cfg.image_size

    def __call__(self, images) -> torch.Tensor:
        if self.processor is not None:
            return self.processor(images=images, return_tensors="pt")["pixel_values"]
        arr = np.stack([np.asarray(im.convert("RGB").resize((self.size, self.size)), dtype=np.float32) / 255
                        for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2)
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        return (x - mean) / std  # (B, 3, H, W)


def build_model(cfg: ClassifierConfig):
    """A ResNetForImageClassification with len(cfg.classes) outputs, and its preprocessing."""
    from transformers import AutoImageProcessor, ResNetConfig, ResNetForImageClassification

    labels = {i: c for i, c in enumerate(cfg.classes)}
    if cfg.pretrained:
        model = ResNetForImageClassification.from_pretrained(
            cfg.pretrained, num_labels=len(labels), id2label=labels, label2id={c: i for i, c in labels.items()},
            ignore_mismatched_sizes=True,
        )
        return model, Preprocess(cfg, AutoImageProcessor.from_pretrained(cfg.pretrained))
    if cfg.arch not in ARCHS:
        raise InputError("--arch", cfg.arch, "unknown architecture", f"Use one of {sorted(ARCHS)}")
    config = ResNetConfig(num_labels=len(labels), id2label=labels, label2id={c: i for i, c in labels.items()},
                          **ARCHS[cfg.arch])
    torch.manual_seed(cfg.seed)
    return ResNetForImageClassification(config), Preprocess(cfg)


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val) with about `fraction` of every class in val (at least one each)."""
    rng = random.Random(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        rng.shuffle(idx)
        k = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small shifts, brightness/contrast jitter and pixel noise on normalised images."""
    b = x.shape[0]
    shift = torch.randint(-4, 5, (2,), generator=gen).tolist()
    x = torch.roll(x, shifts=shift, dims=(2, 3))
    gain = 0.85 + 0.3 * torch.rand(b, 1, 1, 1, generator=gen)
    return x * gain + 0.1 * torch.randn(b, 1, 1, 1, generator=gen) + 0.05 * torch.randn(x.shape, generator=gen)


def metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall and the confusion matrix (rows = truth)."""
    k = len(classes)
    cm = np.zeros((k, k), dtype=int)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    recall = [cm[i, i] / cm[i].sum() if cm[i].sum() else float("nan") for i in range(k)]
    precision = [cm[i, i] / cm[:, i].sum() if cm[:, i].sum() else float("nan") for i in range(k)]
    return {
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "balanced_accuracy": float(np.nanmean(recall)) if k else float("nan"),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(cm[i].sum())}
                      for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "classes": classes,
    }


def _load_tensors(data: LabelledImages, idx: list[int], pre: Preprocess, classes: list[str]):
    x = torch.cat([pre([open_rgb(data.paths[i]) for i in idx[j:j + 64]]) for j in range(0, len(idx), 64)])
    y = torch.tensor([classes.index(data.labels[i]) for i in idx])
    return x, y


@torch.no_grad()
def _evaluate(model, x, y, batch: int = 128) -> tuple[float, np.ndarray]:
    model.eval()
    losses, preds = [], []
    for i in range(0, len(x), batch):
        logits = model(pixel_values=x[i:i + batch]).logits
        losses.append(F.cross_entropy(logits, y[i:i + batch], reduction="sum").item())
        preds.append(logits.argmax(-1))
    return sum(losses) / max(len(x), 1), torch.cat(preds).numpy()


def check_classifier_config(cfg: ClassifierConfig) -> None:
    """Raises InputError for a setting that cannot train (no epochs, an empty split, a NaN rate)."""
    from conceptlab.validation import BATCH, EPOCHS, LR, RENDER_SIZE, SEED, SPLIT, Bound, choice

    choice("--arch", cfg.arch, ARCHS)
    RENDER_SIZE.check("--image-size", cfg.image_size)
    EPOCHS.check("--epochs", cfg.epochs)
    LR.check("--lr", cfg.lr)
    BATCH.check("--batch-size", cfg.batch_size)
    SPLIT.check("--val-split", cfg.val_split)
    SEED.check("--seed", cfg.seed)
    Bound(1, 10_000, integer=True).check("--patience", cfg.patience)


class _ClassifierTraining:
    """The classifier as a TrainingMethod of the shared loop: cross-entropy on class-balanced batches of the
    training split (drawn with replacement, augmented), so that a rare class is not drowned out."""

    def __init__(self, model, cfg: ClassifierConfig, x_tr: torch.Tensor, y_tr: torch.Tensor):
        self.model, self.cfg, self.x_tr, self.y_tr = model.train(), cfg, x_tr, y_tr
        counts = torch.bincount(y_tr, minlength=len(cfg.classes)).float()
        self.weights = (1.0 / counts.clamp(min=1))[y_tr]
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.streams = {"batches": self.gen}

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.multinomial(self.weights, batch_size, replacement=True, generator=self.gen)
        x = _augment(self.x_tr[idx], self.gen) if self.cfg.augment else self.x_tr[idx]
        return F.cross_entropy(self.model(pixel_values=x).logits, self.y_tr[idx])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()  # BatchNorm's running statistics included

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def save_outputs(self, out: Path, step: int, loss: float | None) -> None:
        pass  # train_classifier writes the artifacts from the best weights

    def preview(self, prompts, seed, steps) -> list:
        return []


class _EarlyStopping:
    """After-step hook: at the end of every epoch (`every` steps) records the epoch in `history`, keeps the weights
    of the best validation loss, and counts the epochs since it last improved (checkpointed with the run)."""

    def __init__(self, model, x_va: torch.Tensor, y_va: torch.Tensor, every: int, patience: int):
        self.model, self.x_va, self.y_va, self.every, self.patience = model, x_va, y_va, every, patience
        self.history, self.best, self.best_state, self.waited = [], float("inf"), None, 0

    def __call__(self, trainer) -> None:
        if trainer.step % self.every:
            return
        val_loss, pred = _evaluate(self.model, self.x_va, self.y_va)
        self.model.train()
        self.history.append({"epoch": trainer.step // self.every, "train_loss": sum(trainer.losses[-self.every:]) /
                             self.every, "val_loss": val_loss, "val_accuracy": float((pred == self.y_va.numpy()).mean())})
        if val_loss < self.best - 1e-4:
            self.best, self.waited = val_loss, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.waited += 1

    def exhausted(self, trainer) -> bool:
        """True once the validation loss has not improved for `patience` epochs: the loop's stop_when."""
        return self.waited >= self.patience

    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best, "best_state": self.best_state, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best, self.waited = list(state["history"]), state["best"], state["waited"]
        self.best_state = state["best_state"]


def train_classifier(data: LabelledImages, cfg: ClassifierConfig, out: str | Path, progress: bool = True,
                     resume: bool = False, stop_at: int | None = None) -> dict:
    """Trains, keeps the weights of the best validation loss, writes every artifact; returns the metrics.

    Trains on the shared loop in `out` (its checkpoints beside the artifacts): `resume` continues the run there,
    otherwise it starts over. After SIGINT/SIGTERM (saved) raises TrainingStopped; `stop_at` pauses the same way.
    """
    from conceptlab.training.loop import TrainConfig, Trainer, TrainingStopped

    check_classifier_config(cfg)
    classes = sorted(set(data.labels))
    if len(classes) < 2:
        raise InputError("--label", cfg.label, f"has a single class {classes}", "A classifier needs 2 or more classes")
    cfg.classes = classes
    out = Path(out)
    model, pre = build_model(cfg)
    tr, va = stratified_split(data.labels, cfg.val_split, cfg.seed)
    x_tr, y_tr = _load_tensors(data, tr, pre, classes)
    x_va, y_va = _load_tensors(data, va, pre, classes)
    method = _ClassifierTraining(model, cfg, x_tr, y_tr)
    steps_per_epoch = max(1, math.ceil(len(tr) / cfg.batch_size))
    early = _EarlyStopping(model, x_va, y_va, steps_per_epoch, cfg.patience)
    train = TrainConfig(steps=cfg.epochs * steps_per_epoch, batch_size=cfg.batch_size, lr=cfg.lr,
                        weight_decay=1e-4, max_grad_norm=0.0, fused_adamw=False, seed=cfg.seed, keep_checkpoints=1)
    record = {"classifier": asdict(cfg), "data": _data_digest(data)}
    trainer = Trainer(method, train, out, config_record=record, hooks=[early], streams=method.streams,
                      stop_when=early.exhausted, desc="classify train", progress=progress)
    result = trainer.train(resume=resume, overwrite=not resume, stop_at=stop_at)
    if result.stopped != "done":
        raise TrainingStopped(result)
    model.load_state_dict(early.best_state)
    _, pred = _evaluate(model, x_va, y_va)
    result = metrics(y_va.numpy(), pred, classes)
    save_classifier(model, pre, cfg, out, result, early.history)
    return result


def _data_digest(data: LabelledImages) -> str:
    """sha256 of the images' paths and labels: a resumed run must train on the same data."""
    import hashlib

    return hashlib.sha256(json.dumps([[str(p), lab] for p, lab in zip(data.paths, data.labels)]).encode()).hexdigest()


def save_classifier(model, pre: Preprocess, cfg: ClassifierConfig, out: Path, result: dict, history: list) -> None:
    from conceptlab.io import atomic_write_json
    from conceptlab.plots import plot_confusion, plot_curves

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if pre.processor is not None:
        pre.processor.save_pretrained(out)
    atomic_write_json(asdict(cfg), out / "conceptlab_classifier.json")
    atomic_write_json({"labels": cfg.classes}, out / "labels.json")
    atomic_write_json(result, out / "metrics.json")
    atomic_write_json(history, out / "history.json")
    plot_confusion(result["confusion_matrix"], cfg.classes, out / "confusion.png", "validation")
    plot_curves(history, out / "curves.png")


class Classifier:
    """A trained classifier: `predict(images) -> (labels, confidences)`."""

    def __init__(self, folder: str | Path):
        from transformers import AutoImageProcessor, ResNetForImageClassification

        from conceptlab.config import dataclass_from_dict

        folder = Path(folder)
        if not (folder / "conceptlab_classifier.json").is_file():
            raise InputError("--classifier", str(folder), "is not a classifier folder",
                             "Pass the --out folder of `conceptlab classify train`")
        from conceptlab.validation import read_json_object, safetensors_header

        record = read_json_object("--classifier", folder / "conceptlab_classifier.json")
        self.cfg = dataclass_from_dict(ClassifierConfig, record, where=f"--classifier {folder}")
        if not (folder / "model.safetensors").is_file():
            raise InputError("--classifier", str(folder), "has no model.safetensors",
                             "Train it again with `conceptlab classify train`")
        safetensors_header("--classifier", folder / "model.safetensors")
        self.model = ResNetForImageClassification.from_pretrained(folder).eval()
        processor = AutoImageProcessor.from_pretrained(folder) if self.cfg.pretrained else None
        self.pre = Preprocess(self.cfg, processor)

    @property
    def classes(self) -> list[str]:
        return self.cfg.classes

    @torch.no_grad()
    def predict(self, images, batch: int = 64) -> tuple[list[str], list[float]]:
        labels, conf = [], []
        for i in range(0, len(images), batch):
            p = self.model(pixel_values=self.pre(images[i:i + batch])).logits.softmax(-1)
            c, k = p.max(-1)
            labels += [self.classes[j] for j in k.tolist()]
            conf += c.tolist()
        return labels, conf


def expected_labels(paths: list[Path], classes: list[str], expect: str | None, argument: str = "--expect",
                    label: str | None = None) -> list[str]:
    """The label each image should have: `expect` for all, or read from the folder's generations.jsonl, or
    from column `label` of its metadata.jsonl (a labelled image folder, e.g. `world export`).

    A generations.jsonl row gives its label by an 'expect' field, or by naming exactly one class in its prompt.
    """
    if expect is not None:
        if expect not in classes:
            raise InputError(argument, expect, "is not one of the classifier's classes", f"Use one of {classes}")
        return [expect] * len(paths)
    folder = paths[0].parent if paths else None
    if label and folder is not None and (folder / "metadata.jsonl").is_file() and not (folder / "generations.jsonl").is_file():
        with contextlib.suppress(InputError):  # no such column: fall through to the message below
            data = read_labelled_folder(folder, label, argument)
            by_path = dict(zip(data.paths, data.labels))
            if all(p in by_path for p in paths):
                return [by_path[p] for p in paths]
    log = folder / "generations.jsonl" if folder is not None else None
    if log is None or not log.is_file():
        raise InputError(argument, None, "no expected label given and no generations.jsonl beside the images",
                         "Pass --expect LABEL=VALUE")
    by_file = {}
    from conceptlab.validation import read_jsonl

    for row in read_jsonl("--images", log, required=("file",)):
        if "expect" in row:
            by_file[row["file"]] = row["expect"]
        else:
            named = [c for c in classes if c in row.get("prompt", "")]
            by_file[row["file"]] = max(named, key=len) if named else None
    labels = [by_file.get(p.name) for p in paths]
    missing = [p.name for p, lab in zip(paths, labels) if lab is None]
    if missing:
        raise InputError(argument, None, f"no expected label for {len(missing)} images (e.g. {missing[0]})",
                         "Pass --expect LABEL=VALUE")
    return labels


def recognizability(classifier: Classifier, paths: list[Path], expected: list[str]) -> dict:
    """Share of images classified as expected, overall and per class, with the confusion matrix."""
    classes = classifier.classes
    unknown = sorted(set(expected) - set(classes))
    if unknown:
        raise InputError("--expect", unknown, f"are not classes of this classifier {classes}",
                         "Score only images of its classes, or train it on a folder that has all of them")
    predicted, conf = classifier.predict([open_rgb(p) for p in paths])
    result = metrics(np.array([classes.index(e) for e in expected]), np.array([classes.index(p) for p in predicted]),
                     classes)
    result["recognizable"] = result.pop("accuracy")
    result["files"] = [{"file": p.name, "expected": e, "predicted": q, "confidence": c}
                       for p, e, q, c in zip(paths, expected, predicted, conf)]
    return result
