"""Scores for a folder of images: what the sticker-world judge reads in each, and how often it is right.

What each image should show comes from the folder itself: a world export's metadata.jsonl (every attribute),
or the prompts in a `conceptlab generate` folder's generations.jsonl (the attributes a prompt names: 'a sticker
of a happy green broccoli' expects style sticker, emotion happy, colour green, object broccoli). Attributes
with an expectation get an accuracy and a confusion matrix (rows = expected, as `classify eval` writes them).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conceptlab.errors import InputError


@dataclass
class AttributeScores:
    """One judge head over the folder: its reading of each image and, where known, the expected label."""

    name: str
    classes: list[str]
    predicted: list[str]
    expected: list[str | None]  # None: the folder does not say
    accuracy: float | None = None  # over the images with an expectation
    confusion_matrix: list[list[int]] = field(default_factory=list)  # (expected, predicted) over `shown`
    shown: list[str] = field(default_factory=list)  # the classes the matrix covers: those expected or read

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The `k` labels read most often, with their shares."""
        return [(label, n / len(self.predicted)) for label, n in Counter(self.predicted).most_common(k)]


@dataclass
class FolderScores:
    folder: str
    files: list[str]
    attributes: dict[str, AttributeScores]

    def per_attribute(self) -> list[dict]:
        """One row per attribute: the three labels read most often, and the accuracy where it is known."""
        rows = []
        for a in self.attributes.values():
            top = a.top()
            row = {"attribute": a.name, **{f"#{k + 1}": f"{top[k][0]} ({top[k][1]:.2f})" if k < len(top) else ""
                                           for k in range(3)}}
            known = sum(e is not None for e in a.expected)
            row["accuracy"] = f"{a.accuracy:.2f} of {known}" if a.accuracy is not None else ""
            rows.append(row)
        return rows

    def per_image(self) -> list[dict]:
        return [{"file": f, **{a.name: a.predicted[i] for a in self.attributes.values()}}
                for i, f in enumerate(self.files)]


def expected_from_prompt(prompt: str, heads: dict[str, list[str]]) -> dict[str, str]:
    """The attributes a prompt names: {head: label} where exactly one of the head's labels is in it as words."""
    text = f" {re.sub(r'[^a-z ]+', ' ', prompt.lower())} "
    found = {}
    for head, labels in heads.items():
        named = [lab for lab in labels if lab != "none" and f" {lab.lower()} " in text]
        named = [lab for lab in named if not any(lab != other and lab in other for other in named)]  # 'love' < 'in love'
        if len(named) == 1:
            found[head] = named[0]
    return found


def expected_labels(folder: Path, files: list[Path], heads: dict[str, list[str]]) -> list[dict[str, str]]:
    """Per image, the labels the folder says it should show ({} each when it says nothing)."""
    meta, gens = folder / "metadata.jsonl", folder / "generations.jsonl"
    rows: dict[str, dict[str, str]] = {}
    for path, key in ((meta, "file_name"), (gens, "file")):
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
                name = row[key]
            except (ValueError, KeyError, TypeError):
                continue
            if key == "file_name":
                rows[name] = {h: str(row[h]) for h in heads if h in row and str(row[h]) in heads[h]}
            else:
                rows.setdefault(name, expected_from_prompt(str(row.get("prompt", "")), heads))
    return [rows.get(f.name, {}) for f in files]


def _confusion(expected: list[str | None], predicted: list[str], classes: list[str]) -> tuple[list[list[int]], list[str]]:
    pairs = [(e, p) for e, p in zip(expected, predicted) if e is not None]
    shown = [c for c in classes if any(c in pair for pair in pairs)]
    cm = [[0] * len(shown) for _ in shown]
    for e, p in pairs:
        cm[shown.index(e)][shown.index(p)] += 1
    return cm, shown


def judge_folder(folder: str | Path, judge: str | Path | None = None, argument: str = "--images") -> FolderScores:
    """The judge's reading of every image in `folder`, with accuracy and a confusion matrix per attribute
    whose expected labels the folder gives."""
    from conceptlab.evaluation.datasets import list_images
    from conceptlab.evaluation.recipes.common import load_judge_checked
    from conceptlab.imaging import open_rgb

    folder = Path(folder)
    files, _ = list_images(folder, argument)
    if not files:
        raise InputError(argument, str(folder), "holds no images", "Generate or upload some first")
    model = load_judge_checked(judge)
    heads = model.cfg.heads
    predicted = model.predict([open_rgb(f) for f in files])
    expected = expected_labels(folder, files, heads)
    attributes = {}
    for head, labels in predicted.items():
        exp = [e.get(head) for e in expected]
        known = [(e, p) for e, p in zip(exp, labels) if e is not None]
        score = AttributeScores(head, list(heads[head]), labels, exp)
        if known:
            score.accuracy = sum(e == p for e, p in known) / len(known)
            score.confusion_matrix, score.shown = _confusion(exp, labels, heads[head])
        attributes[head] = score
    return FolderScores(str(folder), [f.name for f in files], attributes)


def write_folder_report(scores: FolderScores, out: str | Path, title: str = "Judged images") -> Path:
    """OUT/scores.json, OUT/confusion-ATTRIBUTE.png for each attribute with an accuracy, and OUT/index.html."""
    from conceptlab.evaluation.report import Report
    from conceptlab.io import atomic_write_json
    from conceptlab.plots import plot_confusion

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json({"folder": scores.folder, "files": scores.files,
                       "attributes": {k: asdict(v) for k, v in scores.attributes.items()}}, out / "scores.json")
    report = Report(f"{title}: {Path(scores.folder).name}", out)
    report.text(f"{len(scores.files)} images of {scores.folder}, read by the sticker-world judge")
    report.table(scores.per_attribute())
    for a in scores.attributes.values():
        if a.confusion_matrix:
            path = plot_confusion(a.confusion_matrix, a.shown, out / f"confusion-{a.name}.png", a.name)
            report.image(path, f"{a.name}: rows expected, columns read (accuracy {a.accuracy:.2f})", width=360)
    report.heading("Per image")
    report.table(scores.per_image())
    return report.write()


def confusion_pictures(out: str | Path) -> list[Path]:
    """The confusion matrices write_folder_report drew into `out`."""
    return sorted(Path(out).glob("confusion-*.png"))


# ------------------------------------------------------------------------------ CLIP and DINO, for real models


@dataclass
class SimilarityScores:
    """CLIP-T, CLIP-I and DINO (Ruiz et al. 2023, the DreamBooth paper's metrics) of every image in a folder:
    each list holds one value per image (None when that metric was not asked for)."""

    folder: str
    files: list[str]
    prompts: list[str | None]
    clip_t: list[float] | None = None  # cos(image, its prompt) x 100
    clip_i: list[float] | None = None  # mean cos(image, each reference) in CLIP's image space
    dino: list[float] | None = None  # the same in a self-supervised ViT's CLS space
    references: int = 0

    def summary(self) -> dict:
        """Each metric's mean over the folder, with the counts behind it."""
        out = {"images": len(self.files), "references": self.references}
        for name in ("clip_t", "clip_i", "dino"):
            values = getattr(self, name)
            if values is not None:
                out[name.replace("_", "-")] = round(sum(values) / len(values), 4)
        return out

    def per_image(self) -> list[dict]:
        return [{"file": f, "prompt": p, **{m.replace("_", "-"): round(getattr(self, m)[k], 4)
                                            for m in ("clip_t", "clip_i", "dino") if getattr(self, m) is not None}}
                for k, (f, p) in enumerate(zip(self.files, self.prompts))]


CLI_NAMES = {"folder": "FOLDER", "clip": "--clip-model", "dino": "--dino-model", "references": "--references",
             "prompt": "--prompt"}  # what score_similarity's errors call each input (the studio passes its own)


def listed_images(folder: Path, argument: str) -> list[Path]:
    """The folder's images; with a generations.jsonl, only those it lists (not a --grid sheet beside them)."""
    from conceptlab.evaluation.datasets import list_images

    files, _ = list_images(folder, argument)  # an empty folder is refused there, by name
    listed = set(_generation_rows(folder))
    return [f for f in files if f.name in listed] if listed else files


def _generation_rows(folder: Path) -> dict[str, str]:
    rows = {}
    log = folder / "generations.jsonl"
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
                rows[str(row["file"])] = str(row["prompt"])
            except (ValueError, KeyError, TypeError):
                continue
    return rows


def image_prompts(folder: Path, files: list[Path]) -> list[str | None]:
    """Each image's prompt: its generations.jsonl row, else a NAME.txt caption beside it (kohya's layout, as the
    studio's uploads keep them), else the prompt `conceptlab generate` stores in the image; None if none."""
    from conceptlab.imaging import read_settings

    rows, out = _generation_rows(folder), []
    for f in files:
        prompt, caption = rows.get(f.name), f.with_suffix(".txt")
        if prompt is None and caption.is_file() and caption.stat().st_size < 10_000:
            prompt = caption.read_text(errors="replace").strip()
        if prompt is None:
            try:
                settings = read_settings(f)
            except (OSError, ValueError):
                settings = None
            prompt = settings.get("prompt") if isinstance(settings, dict) else None
        out.append(str(prompt) if prompt else None)
    return out


def clip_text(prompt: str) -> str:
    """The prompt as a separate CLIP reads it: a learned token's angle brackets dropped ('<tuki>' -> 'tuki'), as
    checkpoint selection names subjects, so that the two CLIP-T figures compare."""
    return re.sub(r"<([^<>\s]+)>", r"\1", prompt)


def _cosines(a, b):
    """(N, M) cosine similarities of the rows of a (N, D) and b (M, D)."""
    import torch.nn.functional as F

    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def score_similarity(folder: str | Path, clip_model: str | None = None, dino_model: str | None = None,
                     references: str | Path | None = None, prompt: str | None = None,
                     names: dict[str, str] | None = None) -> SimilarityScores:
    """CLIP-T of every image against its prompt (`prompt`, else the folder's own: generations.jsonl, a NAME.txt
    caption, or the image's stored settings; angle brackets dropped, see clip_text), and CLIP-I and DINO against
    the pictures in `references` (e.g. a subject's training images); the models are local transformers folders
    (CLIPModel, and a ViT such as DINO ViT-S/16). CLIP reads at most 77 tokens of a prompt. `names`: what errors
    call each input (CLI_NAMES' keys)."""
    from conceptlab.evaluation.metrics import load_scorer
    from conceptlab.imaging import open_rgb

    n = {**CLI_NAMES, **(names or {})}
    if not clip_model and not dino_model:
        raise InputError(n["clip"], None, "no scorer given: CLIP-T, CLIP-I and DINO need model weights",
                         f"Give {n['clip']} (a CLIPModel folder) and/or {n['dino']} (a ViT folder)")
    if dino_model and not references:
        raise InputError(n["dino"], dino_model, "DINO compares with reference pictures, and none are given",
                         f"Give {n['references']} (e.g. the subject's training images)")
    folder = Path(folder)
    files = listed_images(folder, n["folder"])
    refs = [open_rgb(f) for f in listed_images(Path(references), n["references"])] if references else []
    prompts = [None] * len(files)
    if clip_model:
        prompts = [prompt] * len(files) if prompt else image_prompts(folder, files)
        missing = [f.name for f, p in zip(files, prompts) if p is None]
        if missing:
            raise InputError(n["folder"], missing[0], "has no prompt to score CLIP-T against (no generations.jsonl "
                             "row, caption or stored prompt)", f"Give {n['prompt']} for the whole folder")
    images = [open_rgb(f) for f in files]
    scores = SimilarityScores(str(folder), [f.name for f in files], prompts, references=len(refs))
    if clip_model:
        clip = load_scorer("clip", clip_model, n["clip"])
        shown = clip.image_embeddings(images)  # (N, D), once
        texts = clip.text_embeddings([clip_text(p) for p in prompts])  # (N, D)
        scores.clip_t = [100 * float(c) for c in _cosines(shown, texts).diagonal()]
        if refs:
            scores.clip_i = [float(c) for c in _cosines(shown, clip.image_embeddings(refs)).mean(dim=1)]
    if dino_model:
        dino = load_scorer("dino", dino_model, n["dino"])
        scores.dino = [float(c) for c in _cosines(dino.embeddings(images), dino.embeddings(refs)).mean(dim=1)]
    return scores
