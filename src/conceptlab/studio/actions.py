"""What the studio's buttons do: the library calls the CLI makes, with their results kept in the workspace.

Each function checks its input with the same validation the CLI uses (an InputError names what is wrong),
then calls the same library function as the matching command: `run_generation` (generate), `edit`, `invert`
and `reconstruct` (edit, invert), `attention_maps` (attention), `mix_embeddings` and `render_sweep` (concepts
mix), `judge_folder` and `recognizability` (evaluate, classify eval). The UI layer only turns widgets into
these arguments and results into widgets.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from conceptlab.errors import InputError
from conceptlab.studio import library
from conceptlab.studio.workspace import Workspace, check_name, check_token, slug


class PipelineCache:
    """One loaded pipeline, kept while the model, concepts and LoRAs asked for stay the same.

    Any change reloads it from disk (as every CLI command does), so a concept or LoRA never lingers in a
    pipeline that did not ask for it; a warm reload of the shipped model takes ~0.2 s. Calls that use the
    pipeline hold `lock`: the web server runs handlers in threads.
    """

    def __init__(self, device: str | None = None, dtype: str | None = None):
        self.device, self.dtype = device, dtype
        self.lock = threading.RLock()
        self._key, self._pipe = None, None

    def release(self) -> None:
        """Drops the loaded pipeline (and, on a GPU, its cached memory); the next call loads it again."""
        import torch

        with self.lock:
            self._pipe, self._key = None, None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def get(self, model: str | None, concepts: tuple[Path, ...] = (), loras: tuple[tuple[Path, float], ...] = ()):
        from conceptlab.models.loading import load_pipeline

        key = (model or None, tuple((str(p), p.stat().st_mtime_ns) for p in concepts),
               tuple((str(p), s, p.stat().st_mtime_ns) for p, s in loras))
        with self.lock:
            if key != self._key or self._pipe is None:
                self._pipe, self._key = None, None
                pipe = load_pipeline(model or None, device=self.device, dtype=self.dtype)
                if concepts:
                    from conceptlab.concepts.tokens import load_concept_paths

                    load_concept_paths(pipe, list(concepts))
                if loras:
                    from conceptlab.concepts.lora import apply_loras

                    apply_loras(pipe, list(loras))
                self._pipe, self._key = pipe, key
            return self._pipe

    def invalidate(self) -> None:
        """Drops the pipeline (after a call that added tokens of its own to it)."""
        with self.lock:
            self._key, self._pipe = None, None


def _concept_files(ws: Workspace, names) -> tuple[Path, ...]:
    return tuple(library.find(ws, n, "embedding").file for n in (names or []))


def _lora_files(ws: Workspace, names, scale: float) -> tuple[tuple[Path, float], ...]:
    from conceptlab.validation import SCALE

    SCALE.check("LoRA scale", scale)
    return tuple((library.find(ws, n, "lora").file, float(scale)) for n in (names or []))


# --------------------------------------------------------------------------------------------- generate


def generate(ws: Workspace, cache: PipelineCache, cfg, model: str | None = None, concepts=(), loras=(),
             lora_scale: float = 1.0) -> list[dict]:
    """`conceptlab generate` into generations/TIME-PROMPT/: returns the rows of generations.jsonl, each with
    'path' added (the image file, its settings embedded)."""
    from conceptlab.generation.generate import check_config, run_generation
    from conceptlab.models.loading import model_label
    from conceptlab.validation import check_seed_range

    check_config(cfg)
    check_seed_range("seed", cfg.seed, cfg.n)
    concept_files, lora_files = _concept_files(ws, concepts), _lora_files(ws, loras, lora_scale)
    with cache.lock:
        pipe = cache.get(model, concept_files, lora_files)
        out = ws.folder("generations", ws.stamped("generations", cfg.prompt))
        rows = run_generation(pipe, cfg, out, model=model_label(model), progress=False)
    return [{**r, "path": out / r["file"]} for r in rows]


def caption(row: dict) -> str:
    """A gallery caption: the settings that make the image again."""
    size = f"{row.get('width')}x{row.get('height')}"
    return (f"seed {row['seed']} · {row['steps']} steps · guidance {row['guidance']:g} · "
            f"{row.get('scheduler') or 'default'} · {size}")


# ------------------------------------------------------------------------------------------------- edit


@dataclass
class EditOutcome:
    images: list  # source first, then the edit
    labels: list[str]
    grid: Path
    mask: Path | None  # blend-overlay.png: the edit, dimmed where the blend mask keeps the source
    mode: str
    psnr: float | None  # the reconstruction's PSNR when a photo was inverted
    folder: Path
    reweight: dict[str, float]  # the words re-weighted, as passed to the library
    region: Path | None = None  # region.png: the painted region the edit was limited to (white: may change)


class InversionCache:
    """The last inversion, kept while the photo, prompt and settings stay the same (null-text takes minutes)."""

    def __init__(self):
        self._key, self._value = None, None

    def get(self, key, make):
        if key != self._key:
            self._key, self._value = None, None
            self._value, self._key = make(), key
        return self._value


def edit(ws: Workspace, cache: PipelineCache, inversions: InversionCache, source: str, target: str,
         model: str | None = None, concepts=(), photo: str | Path | None = None, method: str = "null-text",
         reweight: dict[str, float] | None = None, region=None, loras=(), lora_scale: float = 1.0,
         **settings) -> EditOutcome:
    """`conceptlab edit` of one target prompt, from seeded noise or from an uploaded photo inverted under
    `source` with `method` (`conceptlab invert`'s PSNR reported); results saved under edits/. `region`: a
    painted (H, W) bool region, the command's --mask (kept beside the edit as region.png); `loras`: library
    LoRAs applied at `lora_scale` (the command's --lora), e.g. a DreamBooth subject the target brings in."""
    import tempfile

    from conceptlab.editing.edit import save_region

    staged = ws.root / ".cache"  # inside the workspace: the move into edits/ stays on one filesystem
    staged.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staged) as staging:
        if region is not None:
            settings["mask"] = save_region(region, Path(staging) / "region.png")
        lora_files = _lora_files(ws, loras, lora_scale)
        outcome = _edit(ws, cache, inversions, source, target, model, concepts, lora_files, photo, method,
                        reweight or {}, settings, painted=region is not None)
        if region is not None:
            outcome.region = outcome.folder / "region.png"
            Path(settings["mask"]).replace(outcome.region)
    return outcome


def _edit(ws, cache, inversions, source, target, model, concepts, lora_files, photo, method, reweight, settings,
          painted: bool) -> EditOutcome:
    from conceptlab.editing.edit import EditConfig, check_edit
    from conceptlab.editing.edit import edit as p2p_edit
    from conceptlab.editing.inversion import METHODS, check_inversion
    from conceptlab.imaging import make_grid, save_image
    from conceptlab.validation import choice, open_image

    check_edit(EditConfig(source=source, targets=[target], reweight=reweight, **settings))
    picture = None
    if photo:
        picture = open_image("photo", ws.inside(photo, "photo") if _in_workspace(ws, photo) else photo)
        choice("inversion method", method, METHODS)
        check_inversion(source, settings.get("steps", 30), settings.get("guidance", 7.5))
    with cache.lock:
        pipe = cache.get(model, _concept_files(ws, concepts), lora_files)
        psnr, inversion = None, None
        if picture is not None:
            inversion, psnr = _inverted(pipe, inversions, picture, source, method, settings, model,
                                        (*(concepts or ()), *((str(f), w, f.stat().st_mtime_ns) for f, w in lora_files)))
        result = p2p_edit(pipe, source, [target], inversion=inversion, reweight=reweight, **settings)
    out = ws.folder("edits", ws.stamped("edits", target))
    out.mkdir(parents=True)
    labels = ["photo (reconstructed)" if picture is not None else "source", "edit"]
    meta = {**result.settings(), "psnr_db": psnr}
    if painted:
        meta["mask"] = "region.png"  # the painted region, kept beside the edit (staged in a temporary folder)
    for label, image in zip(("source", "edit"), result.images):
        save_image(image, out / f"{label}.png", meta)
    grid = out / "grid.png"
    make_grid(result.images, cols=len(result.images), labels=labels, scale=2).save(grid)
    mask = _save_mask(result, out) if result.mask is not None else None
    return EditOutcome(result.images, labels, grid, mask, result.mode, psnr, out, dict(reweight))


def _save_mask(result, out: Path) -> Path:
    """OUT/blend-mask.png (white: where the edit may differ from the source) and OUT/blend-overlay.png, the
    edit with what the mask keeps from the source dimmed (a white mask on a white sticker shows nothing)."""
    from PIL import Image

    values = (result.mask[1, 0].float().clamp(0, 1).numpy() * 255).astype("uint8")  # (h, w) of the latents
    mask = Image.fromarray(values).resize(result.images[1].size, Image.NEAREST)
    mask.save(out / "blend-mask.png")
    dimmed = Image.blend(result.images[1].convert("RGB"), Image.new("RGB", mask.size, (40, 40, 60)), 0.7)
    overlay = Image.composite(result.images[1].convert("RGB"), dimmed, mask)
    scale = max(1, -(-256 // overlay.width))  # small models' 64 px pictures drawn at least 256 px wide, blocky
    overlay.resize((overlay.width * scale, overlay.height * scale), Image.NEAREST).save(out / "blend-overlay.png")
    return out / "blend-overlay.png"


def attention(ws: Workspace, cache: PipelineCache, prompts: dict[str, str], out: Path, model: str | None = None,
              concepts=(), seed: int = 0, steps: int = 30, guidance: float = 7.5, loras=(),
              lora_scale: float = 1.0) -> Path:
    """`conceptlab attention` of each prompt (label -> prompt) from `seed`: OUT/attention-LABEL.png (the image
    and one heat map per word), and OUT/attention.png, those stacked in order; with the edit's LoRAs, if any."""
    from PIL import Image

    from conceptlab.editing.edit import attention_maps
    from conceptlab.plots import plot_attention
    from conceptlab.validation import GUIDANCE, SAMPLING_STEPS, SEED, text

    for label, prompt in prompts.items():
        text(f"{label} prompt", prompt, example="'a sticker of a happy star'")
    SEED.check("seed", seed), SAMPLING_STEPS.check("steps", steps), GUIDANCE.check("guidance", guidance)
    out = ws.inside(out, "attention folder")
    sheets = []
    with cache.lock:
        pipe = cache.get(model, _concept_files(ws, concepts), _lora_files(ws, loras, lora_scale))
        for label, prompt in prompts.items():
            image, tokens, maps = attention_maps(pipe, prompt, seed, steps, guidance)  # maps: (T, h, w)
            sheets.append(Image.open(plot_attention(image, tokens, maps, out / f"attention-{slug(label)}.png")))
    stacked = Image.new("RGB", (max(s.width for s in sheets), sum(s.height for s in sheets)), "white")
    for k, sheet in enumerate(sheets):
        stacked.paste(sheet.convert("RGB"), (0, sum(s.height for s in sheets[:k])))
    stacked.save(out / "attention.png")
    return out / "attention.png"


def _in_workspace(ws: Workspace, path) -> bool:
    try:
        ws.inside(path)
        return True
    except InputError:
        return False


def _inverted(pipe, inversions: InversionCache, picture, source: str, method: str, settings: dict, model, concepts):
    """(inversion, reconstruction PSNR) of `picture`, from the cache when nothing changed."""
    from conceptlab.editing.inversion import invert, reconstruct
    from conceptlab.evaluation.metrics import psnr

    steps, guidance = settings.get("steps", 30), settings.get("guidance", 7.5)
    digest = hashlib.sha256(picture.tobytes()).hexdigest()
    key = (digest, picture.size, source, method, steps, guidance, model, tuple(concepts or ()))

    def make():
        inv = invert(pipe, picture, source, method, steps, guidance)
        return inv, psnr(inv.image, reconstruct(pipe, inv))

    return inversions.get(key, make)


# ------------------------------------------------------------------------------------------------ mix


def mix(ws: Workspace, cache: PipelineCache, first: str, second: str, weight: float, token: str,
        method: str = "lerp", strip: bool = True, prompt: str = "a sticker of a {}", seed: int = 0, steps: int = 20,
        model: str | None = None) -> library.Concept:
    """`conceptlab concepts mix`: a new token `weight` of the way from `first` to `second`, saved under
    concepts/, with its interpolation strip (0-100% of the second) when `strip`."""
    from conceptlab.concepts.formats import load_embedding, save_all_formats
    from conceptlab.concepts.mixing import METHODS, mix_embeddings
    from conceptlab.validation import FRACTION, SAMPLING_STEPS, SEED, choice, text

    check_token("new token", token)
    FRACTION.check("weight", weight)
    choice("method", method, METHODS)
    if strip:
        if "{}" not in text("strip prompt", prompt):
            raise InputError("strip prompt", prompt, "has no {} for the mixed token", "e.g. 'a sticker of a {}'")
        SEED.check("seed", seed)
        SAMPLING_STEPS.check("steps", steps)
    embs = [load_embedding(library.find(ws, n, "embedding").file, argument="concept") for n in (first, second)]
    mixed = mix_embeddings(embs, [1 - float(weight), float(weight)], token, method)
    name = ws.unique_name("concepts", slug(token.strip("<>"), "mix"))
    folder = ws.new_folder("concepts", name)
    save_all_formats(mixed, folder)
    if strip:
        from conceptlab.concepts.sweep import render_sweep

        with cache.lock:
            pipe = cache.get(model)
            try:
                render_sweep(pipe, embs, [0, 0.25, 0.5, 0.75, 1], method, prompt, seed, steps, folder)
            finally:
                cache.invalidate()  # render_sweep added its <sweep-i> tokens to this pipeline
    return library.find(ws, ws.relative(folder), "embedding")


def soup_choices(ws: Workspace) -> list[str]:
    """Run folders under runs/ that a soup can take: finished full fine-tunes (pipeline/) and DreamBooth LoRAs."""
    from conceptlab.concepts.soup import soupable

    runs = ws.root / "runs"
    return [d.name for d in sorted(runs.iterdir()) if d.is_dir() and soupable(d)] if runs.is_dir() else []


def soup(ws: Workspace, runs: list[str], weights: str, name: str) -> Path:
    """`conceptlab concepts soup`: the weighted mean of finished runs/RUN folders, written to runs/NAME."""
    from conceptlab.concepts.soup import soup_runs
    from conceptlab.validation import NONNEG, parse_numbers

    folders = [ws.folder("runs", r, "runs") for r in runs]
    out = ws.folder("runs", name, "soup name")
    values = parse_numbers("weights", weights, NONNEG) if (weights or "").strip() else None
    return soup_runs(folders, out, values)


# --------------------------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """What the Evaluate tab shows: tables, confusion matrices (PNG) and the HTML report, all under `folder`."""

    per_attribute: list[dict]
    per_image: list[dict]
    confusion: list[Path]
    report: Path
    folder: Path


def image_set(ws: Workspace, name: str, argument: str = "folder") -> Path:
    """WORKSPACE/KIND/NAME for a folder the Evaluate tab lists ('generations/...', 'uploads/...', 'edits/...')."""
    kind, _, sub = str(name or "").partition("/")
    if kind not in ("generations", "uploads", "edits"):
        raise InputError(argument, name, "is not an image folder of the workspace", "Choose one from the list")
    return ws.folder(kind, sub, argument)


def evaluate(ws: Workspace, name: str, classifier: str | None = None, expect: str | None = None) -> Evaluation:
    """Scores the folder `name` into evaluations/TIME-NAME/: with the sticker-world judge (the library's
    judge_folder), or with a `classify train` folder as `conceptlab classify eval` does."""
    folder = image_set(ws, name)
    out = ws.folder("evaluations", ws.stamped("evaluations", folder.name))
    if not classifier:
        from conceptlab.evaluation.folder import confusion_pictures, judge_folder, write_folder_report

        scores = judge_folder(folder, argument="folder")
        report = write_folder_report(scores, out)
        return Evaluation(scores.per_attribute(), scores.per_image(), confusion_pictures(out), report, out)
    return _classify(folder, classifier, expect, out)


def _classify(folder: Path, classifier: str, expect: str | None, out: Path) -> Evaluation:
    """`conceptlab classify eval --classifier C --images FOLDER [--expect LABEL=VALUE] --out OUT`."""
    from conceptlab.evaluation.classifier import Classifier, expected_labels, recognizability
    from conceptlab.evaluation.datasets import list_images
    from conceptlab.evaluation.report import Report
    from conceptlab.io import atomic_write_json
    from conceptlab.plots import plot_confusion

    clf = Classifier(classifier)
    paths, skipped = list_images(folder, "folder")
    value = None
    if expect:
        label, sep, value = expect.partition("=")
        if not sep or label != clf.cfg.label:
            raise InputError("expect", expect, f"is not {clf.cfg.label}=VALUE", f"e.g. {clf.cfg.label}={clf.classes[0]}")
    result = recognizability(clf, paths, expected_labels(paths, clf.classes, value, "expect", label=clf.cfg.label))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json({**result, "skipped": skipped}, out / "recognizability.json")
    picture = plot_confusion(result["confusion_matrix"], clf.classes, out / "confusion.png", folder.name)
    per_class = [{"class": c, **{k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()}}
                 for c, m in result["per_class"].items()]
    report = Report(f"Classified images: {folder.name}", out)
    report.text(f"{len(paths)} images recognized as expected: {result['recognizable']:.3f} (classifier {classifier})")
    report.table(per_class)
    report.image(picture, "rows expected, columns predicted", width=420)
    report.table(result["files"])
    per_image = [{**f, "confidence": round(f["confidence"], 3)} for f in result["files"]]
    return Evaluation(per_class, per_image, [picture], report.write(), out)


SIMILARITY_NAMES = {"folder": "folder", "clip": "CLIP model folder", "dino": "DINO model folder",
                    "references": "Reference pictures", "prompt": "Prompt"}  # the Evaluate tab's fields


def similarity(ws: Workspace, name: str, clip_model: str | None, dino_model: str | None,
               references: str | None, prompt: str | None = None) -> Evaluation:
    """`conceptlab evaluate similarity` of the folder `name` into evaluations/TIME-NAME/: CLIP-T against each
    image's prompt (or `prompt`), CLIP-I and DINO against the data set `references` (an image set of the
    workspace); errors name the tab's fields."""
    from conceptlab.evaluation.folder import score_similarity
    from conceptlab.evaluation.report import Report
    from conceptlab.io import atomic_write_json

    folder = image_set(ws, name)
    refs = image_set(ws, references, "Reference pictures") if references else None
    scores = score_similarity(folder, clip_model or None, dino_model or None, refs, prompt or None,
                              names=SIMILARITY_NAMES)
    out = ws.folder("evaluations", ws.stamped("evaluations", folder.name))
    out.mkdir(parents=True)
    summary = scores.summary()
    atomic_write_json({"summary": summary, "images": scores.per_image(), "clip_model": clip_model,
                       "dino_model": dino_model, "references": references}, out / "similarity.json")
    rows = [{"metric": k, "mean": v} for k, v in summary.items() if k in ("clip-t", "clip-i", "dino")]
    report = Report(f"CLIP and DINO scores: {folder.name}", out)
    report.text(f"{summary['images']} images, {summary['references']} reference pictures ({references or 'none'})")
    report.table(rows, floats="{:.4f}")
    report.table(scores.per_image(), floats="{:.4f}")
    return Evaluation(rows, scores.per_image(), [], report.write(), out)


def store_upload(ws: Workspace, files, name: str) -> Path:
    """Training images into uploads/NAME (checked, re-encoded)."""
    return ws.store_images(files, check_name("data set name", name))
