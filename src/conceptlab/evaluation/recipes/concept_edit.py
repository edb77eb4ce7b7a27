"""Editing with a learned concept, judged: Prompt-to-Prompt edits whose target brings a learned subject in.

The measure of scripts/concept_edit_proof.py. An edit inserts a subject's identifier before its class word
("a sticker of a happy monster at the beach" -> "a sticker of a happy bnh monster at the beach"), on
- generations: source and edit from the same seed, and
- real images: rendered stickers of other monsters (conceptlab.world), inverted under the source prompt; the
  source is the inversion's own reconstruction, the branch the edit is made beside.
Each edit is judged for
- the subject: the judge's identity head (`individual`) reads the subject in the edit (and, as the control, in
  the source: an edit only counts when the source was not the subject already, see `summarize`);
- the rest kept: PSNR between edit and source outside the object's box grown by 6 px (the edit proof's
  measure). A render's box is known; a generation's is found on the source alone, as the box of its dark
  outline (outline_box; outline_box_check measures it against renders' true boxes).
"""

from __future__ import annotations

import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conceptlab.errors import InputError
from conceptlab.evaluation.recipes.common import Bar
from conceptlab.evaluation.recipes.editing import MIN_OUTSIDE, PSNR_CAP

SUBJECT_FLOOR = 0.80  # issue 26: "the judge sees the subject in >= 80% of such edits"
OUTSIDE_FLOOR = 25.0  # issue 26: "PSNR outside the object >= 25 dB"
BOX_MARGIN = 6  # px the object's box is grown by before "outside" is measured (scripts/edit_proof.py's real swaps)
# a generation's object: the box of its dark outline (every channel below this). Its class word's cross-attention
# cannot place it on the base model: "monster" attends nearly evenly, a little more to the background
OUTLINE_DARK = 0.5
_MONSTER = {"object": {"monster"}, "style": {"sticker"}, "accessory": {"none"}, "held_item": {"none"},
            "flowers": {"none"}}
KINDS = ("generated", "real")
EMOTIONS = ("happy", "sad", "angry", "in love")
SCENES = ("plain", "beach", "snowy mountain", "jungle", "desert")


@dataclass(frozen=True)
class ConceptEdit:
    """One edit to make: `source` -> `target` (the subject's identifier inserted) from `seed` or from `render`."""

    kind: str  # "generated" or "real"
    subject: str  # the identifier, e.g. "bnh"
    source: str
    target: str
    seed: int  # generated: the noise seed; real: the render's seed
    render: object | None = None  # real: conceptlab.world's Rendered (.image, .bbox)
    source_individual: str = "none"  # real: the rendered monster's own individual ("none" or e.g. "moxo")


def insert_identifier(prompt: str, identifier: str, class_word: str) -> str:
    """`prompt` with `identifier` put before the first whole-word `class_word` ('a happy monster' -> 'a happy bnh
    monster'); InputError when the class word is not in the prompt."""
    target, count = re.subn(rf"\b{re.escape(class_word)}\b", f"{identifier} {class_word}", prompt, count=1)
    if count == 0:
        raise InputError("--prompt", prompt, f"does not name the class word {class_word!r}",
                         f"Write the source prompt with {class_word!r} in it, e.g. 'a sticker of a happy {class_word}'")
    return target


def case_prompt(emotion: str, scene: str) -> str:
    """'a sticker of a happy monster at the beach', as the subjects' captions read (recipes.dreambooth)."""
    from conceptlab.evaluation.recipes.dreambooth import subject_prompt

    return subject_prompt("", "monster", emotion, scene)


def concept_edits(subject: str, kind: str, first_seed: int, n: int, size: int = 64) -> list[ConceptEdit]:
    """`n` edits introducing `subject`, case k from seed first_seed + k (its emotion and scene drawn from that
    seed); real cases render a monster that is not `subject`: a random look, every third one 'moxo'."""
    from conceptlab.world import render, sample_spec

    if kind not in KINDS:
        raise InputError("--kinds", kind, "unknown kind of edit", f"Use one of {KINDS}")
    out = []
    for k in range(n):
        seed = first_seed + k
        if kind == "generated":
            rng = random.Random(seed)
            src = case_prompt(rng.choice(EMOTIONS), rng.choice(SCENES))
            out.append(ConceptEdit(kind, subject, src, insert_identifier(src, subject, "monster"), seed))
            continue
        other = "moxo" if k % 3 == 2 and subject != "moxo" else "none"
        spec = sample_spec(seed, only={**_MONSTER, "emotion": set(EMOTIONS), "background": set(SCENES),
                                       "individual": {other}},
                           individual_rate=1.0 if other != "none" else 0.0)
        src = case_prompt(spec.emotion, spec.background)
        out.append(ConceptEdit(kind, subject, src, insert_identifier(src, subject, "monster"), seed,
                               render(spec, size), other))
    return out


# ------------------------------------------------------------------------------------------------ scoring
def outline_box(image, dark: float = OUTLINE_DARK) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the bounding box of the largest connected patch of dark pixels (every channel below
    `dark`), which on a sticker is the object's outline; the whole image when nothing is that dark."""
    from scipy import ndimage

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255  # (H, W, 3)
    is_dark = pixels.max(-1) < dark  # (H, W)
    labels, count = ndimage.label(is_dark, structure=np.ones((3, 3)))  # 8-connected patches
    if count == 0:
        return 0, 0, image.size[0], image.size[1]
    largest = 1 + int(np.argmax(ndimage.sum(is_dark, labels, range(1, count + 1))))
    ys, xs = np.nonzero(labels == largest)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w, h = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def outline_box_check(n: int = 60, first_seed: int = 3000, size: int = 64) -> dict:
    """How well outline_box finds the object on monster renders, whose true box is known: mean and 10th
    percentile IoU over `n` renders (seeds first_seed..), emotions and scenes as the edits draw them."""
    from conceptlab.world import render, sample_spec

    ious = []
    for seed in range(first_seed, first_seed + n):
        r = render(sample_spec(seed, only={**_MONSTER, "emotion": set(EMOTIONS), "background": set(SCENES)}), size)
        ious.append(box_iou(outline_box(r.image), r.bbox))
    return {"renders": n, "seeds": f"{first_seed}-{first_seed + n - 1}", "mean_iou": float(np.mean(ious)),
            "p10_iou": float(np.percentile(ious, 10))}


def outside_psnr(source, edited, bbox, margin: int = BOX_MARGIN) -> tuple[float, float]:
    """(PSNR between `source` and `edited` outside `bbox` grown by `margin` px, that region's share of the image);
    (inf, 0.0) when the grown box covers the whole image (nothing outside to compare)."""
    from conceptlab.evaluation.metrics import box_mask, psnr

    outside = ~box_mask(edited.size, bbox, margin=margin)  # (H, W) bool
    share = float(outside.mean())
    return (psnr(source, edited, outside) if share > 0 else float("inf")), share


def box_mask_file(bbox, size: int, grow: int, path: Path) -> str:
    """Writes a mask picture (white inside `bbox` grown by `grow` px) for editing.edit's `mask` to `path`."""
    from conceptlab.editing.edit import save_region
    from conceptlab.evaluation.metrics import box_mask

    return save_region(box_mask((size, size), bbox, margin=grow), path)  # (H, W) bool


def union_box(a, b) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def score_edit(edit: ConceptEdit, read_edit: str, read_source: str, source, edited, bbox) -> dict:
    """One edit's row: the subject read in the edit and (the control) in the source, PSNR outside the source
    object's box, and outside that box joined with the edit's outline box (the subject may be drawn larger)."""
    value, share = outside_psnr(source, edited, bbox)
    joined, joined_share = outside_psnr(source, edited, union_box(bbox, outline_box(edited)))
    return {"kind": edit.kind, "subject": edit.subject, "seed": edit.seed, "source": edit.source,
            "target": edit.target, "source_individual": edit.source_individual, "read_edit": read_edit,
            "read_source": read_source, "subject_judged": read_edit == edit.subject,
            "source_was_subject": read_source == edit.subject, "psnr_out": value, "outside_share": share,
            "psnr_out_joined": joined, "outside_share_joined": joined_share, "bbox": list(bbox)}


def summarize(rows: list[dict]) -> dict:
    """{subject: {kind: numbers}}: the share of edits judged the subject (of all, and of those whose source was
    not judged the subject already), the mean PSNR outside the box over the edits whose grown box leaves at least
    MIN_OUTSIDE of the image (n_measured; an identical outside counted as PSNR_CAP; also outside the box joined
    with the edit's), the share of edits at or above OUTSIDE_FLOOR, and the share of sources judged
    the subject (the control); real edits also against the input render, not only its reconstruction;
    generated ones beside the target prompt regenerated from the seed (when run_concept_edits made it)."""
    out: dict = {}
    for subject in dict.fromkeys(r["subject"] for r in rows):
        out[subject] = {}
        for kind in KINDS:
            mine = [r for r in rows if r["subject"] == subject and r["kind"] == kind]
            if not mine:
                continue
            fresh = [r for r in mine if not r["source_was_subject"]]
            measured = [r for r in mine if r["outside_share"] >= MIN_OUTSIDE]  # a box that leaves something outside
            psnrs = [min(r["psnr_out"], PSNR_CAP) for r in measured]
            joined = [min(r["psnr_out_joined"], PSNR_CAP) for r in mine if r["outside_share_joined"] >= MIN_OUTSIDE]
            inputs = [min(r["psnr_out_input"], PSNR_CAP) for r in measured if "psnr_out_input" in r]
            regen = [r for r in mine if "regenerated_subject" in r]
            regen_psnrs = [min(r["regenerated_psnr_out"], PSNR_CAP) for r in regen if r["outside_share"] >= MIN_OUTSIDE]
            out[subject][kind] = {
                "n": len(mine),
                "subject_judged": float(np.mean([r["subject_judged"] for r in mine])),
                "subject_judged_fresh": float(np.mean([r["subject_judged"] for r in fresh])) if fresh else None,
                "n_fresh": len(fresh),
                "source_was_subject": float(np.mean([r["source_was_subject"] for r in mine])),
                "n_measured": len(measured),
                "psnr_out": float(np.mean(psnrs)) if psnrs else None,
                "psnr_out_median": float(np.median(psnrs)) if psnrs else None,
                "at_outside_floor": float(np.mean([p >= OUTSIDE_FLOOR for p in psnrs])) if psnrs else None,
                "outside_share": float(np.mean([r["outside_share"] for r in mine])),
                "psnr_out_joined": float(np.mean(joined)) if joined else None,
                "psnr_out_input": float(np.mean(inputs)) if inputs else None,
                "regenerated_subject": float(np.mean([r["regenerated_subject"] for r in regen])) if regen else None,
                "regenerated_psnr_out": float(np.mean(regen_psnrs)) if regen_psnrs else None,
            }
    return out


def concept_edit_bars(summary: dict) -> list[Bar]:
    """The issue's two floors for every subject and kind of edit: subject judged (of edits whose source was not
    the subject already) >= 80%, mean PSNR outside the object's box >= 25 dB."""
    bars = []
    for subject, kinds in summary.items():
        for kind, s in kinds.items():
            bars += [Bar(f"{subject} judged in {kind} edits", s["subject_judged_fresh"], floor=SUBJECT_FLOOR,
                         why="issue 26", n=s["n_fresh"]),
                     Bar(f"PSNR outside the object, {subject} {kind} edits", s["psnr_out"], floor=OUTSIDE_FLOOR,
                         unit="dB", why="issue 26; the box grown 6 px", n=s["n_measured"])]
    return bars


# ------------------------------------------------------------------------------------------------ a run
def run_concept_edits(pipe, judge, edits: list[ConceptEdit], settings: dict, inversion: str = "negative-prompt",
                      progress: bool = True, regenerate: bool = True) -> tuple[list[dict], list]:
    """(rows, images): each edit made with editing.edit(**settings) and scored; images are source, edit pairs
    (a real edit's input render first, so its triple is input, source, edit). Renders are inverted with
    `inversion` over settings' steps (default 30). With `regenerate`, a generated edit's target prompt is also
    generated plainly from its seed (the way without Prompt-to-Prompt) and scored the same way.

    Two settings are the proof's, not edit()'s: 'mask_box' N draws the object's box grown N px as the edit's
    `mask`; with 'mask_union' that box is joined with the outline of what the target draws unmasked (the plain
    target generation; for a render, a first edit without the mask)."""
    from tqdm.auto import tqdm

    from conceptlab.editing.edit import edit, shared_latents
    from conceptlab.editing.inversion import invert

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    settings = dict(settings)
    grow = settings.pop("mask_box", None)  # px: the object's box, grown by this, drawn as the edit's --mask
    union = settings.pop("mask_union", False)  # the mask's box also covers the subject the target draws
    scratch = tempfile.TemporaryDirectory(prefix="concept-edit-mask-")  # each edit's mask, read before the next
    steps, guidance = settings.get("steps", 30), settings.get("guidance", 7.5)
    plain = lambda prompt, seed: pipe(prompt, num_inference_steps=steps, guidance_scale=guidance,  # noqa: E731
                                      latents=shared_latents(pipe, 1, seed, size, size)).images[0]
    unmasked = {k: v for k, v in settings.items() if k not in ("mask_noise", "mask_paste", "blend_start")}
    rows, images = [], []
    for e in tqdm(edits, desc="concept edits", unit="edit", disable=not progress):
        regen = plain(e.target, e.seed) if e.kind == "generated" and (regenerate or union) else None
        inv = None if e.kind == "generated" else invert(pipe, e.render.image, e.source, method=inversion, steps=steps)
        if grow is not None:
            box = e.render.bbox if e.kind == "real" else outline_box(plain(e.source, e.seed))
            if union:  # where the target draws the subject: the plain target (generated), a first unmasked edit (real)
                drawn = regen if inv is None else edit(pipe, e.source, e.target, inversion=inv, **unmasked).images[1]
                box = union_box(box, outline_box(drawn))
            settings["mask"] = box_mask_file(box, size, grow, Path(scratch.name) / "mask.png")
        if e.kind == "generated":
            res = edit(pipe, e.source, e.target, seed=e.seed, **settings)
            bbox = outline_box(res.images[0])
        else:
            res = edit(pipe, e.source, e.target, inversion=inv, seed=e.seed, **settings)  # seed: any fresh noise
            bbox = e.render.bbox
            images.append(e.render.image)
        source, edited = res.images
        pred = judge.predict([edited, source] + ([regen] if regen is not None else []))["individual"]
        row = score_edit(e, pred[0], pred[1], source, edited, bbox)
        if regen is not None and regenerate:
            row.update(regenerated_subject=pred[2] == e.subject, regenerated_psnr_out=outside_psnr(source, regen, bbox)[0])
        if e.kind == "real":  # beside the reconstruction: the input render itself
            row["psnr_out_input"] = outside_psnr(e.render.image, edited, bbox)[0]
        rows.append(row)
        images += [source, edited]
    scratch.cleanup()
    return rows, images


def save_pairs(images: list, path: Path, cols: int = 8) -> None:
    """The source | edit pairs (triples for real edits) as one grid picture."""
    from conceptlab.imaging import make_grid

    make_grid(images, cols=cols, scale=2).save(path)


# ------------------------------------------------------------------------------------------- results pages
CONCEPT_EDIT_TABLE = {
    "title": "Edits that bring a learned subject in",
    "intro": "Per subject and kind of edit: the share of edits the judge reads as the subject (edits whose source "
             "it already read as the subject left out; that control beside it), and PSNR between edit and source "
             "outside the object's box grown 6 px (mean and median over the edits whose grown box leaves at least 5% of the "
             "image outside; and the share of those at 25 dB or more). Floors (issue "
             "26): subject >= 80%, outside >= 25 dB.",
    "columns": [
        {"header": "subject", "value": "settings.subject"}, {"header": "edits of", "value": "settings.kind"},
        {"header": "setting", "value": "settings.setting"}, {"header": "weights", "value": "settings.weights"},
        {"header": "seeds", "value": "seeds"}, {"header": "edits", "value": "metrics.n"},
        {"header": "subject judged", "value": "metrics.subject_judged", "format": "pct"},
        {"header": "source judged subject", "value": "metrics.source_was_subject", "format": "pct"},
        {"header": "measured outside", "value": "metrics.n_measured"},
        {"header": "PSNR outside", "value": "metrics.psnr_out", "format": "db"},
        {"header": "median", "value": "metrics.psnr_out_median", "format": "db"},
        {"header": "edits >= 25 dB", "value": "metrics.at_outside_floor", "format": "pct"},
        {"header": "outside, edit's box too", "value": "metrics.psnr_out_joined", "format": "db"},
        {"header": "outside, against the render", "value": "metrics.psnr_out_input", "format": "db"},
        {"header": "regenerated: subject", "value": "metrics.regenerated_subject", "format": "pct"},
        {"header": "regenerated: outside", "value": "metrics.regenerated_psnr_out", "format": "db"},
    ],
    "rows": [],
}
CHOOSING_TABLE = {**CONCEPT_EDIT_TABLE, "title": "Choosing the settings (seeds 1000+)",
                  "intro": "The same measures on the choosing range; the settings reported above were picked here."}
REPORT_FIRST_SEED = 2000  # runs from this seed on are reported; below it they chose the settings

NEW_PAGE = {
    "title": "Editing with a learned concept",
    "summary": "Prompt-to-Prompt edits that insert a DreamBooth-LoRA subject into generated and inverted images, "
               "judged for the subject and for what stayed put",
    "intro": "`scripts/concept_edit_proof.py` trains the two named monsters `tuki` and `bnh` (never in the base "
             "model's data) in one DreamBooth-LoRA run on the shipped base model, then edits \"a sticker of a happy "
             "monster at the beach\" into \"a sticker of a happy bnh monster at the beach\" with Prompt-to-Prompt, on "
             "generations and on inverted renders of other monsters, and judges each edit with the sticker-world "
             "judge's identity head and with PSNR outside the object's box.",
    "tables": [], "records": [], "sections": [],
}


def records_from(result: dict, *, date: str, commit: str, model: str) -> list[dict]:
    """One results-page record per run, subject and kind, from a concept-edit.json the proof wrote."""
    train, out = result.get("train", {}), []
    full = bool(train.get("full_fine_tune"))  # edited with a fine-tuned pipeline (--pipeline), not the LoRA
    weights = ("full fine-tune" if full else "LoRA") + (f" ({train['name']})" if train.get("name") else "")
    tag = ("-full" if full else "") + (f"-{train['name']}" if train.get("name") else "")
    for run in result["runs"].values():
        run = {**run, "summary": summarize(run["rows"])}  # the rows scored by this recipe's summary
        seeds = f"{run['first_seed']}-{run['first_seed'] + run['cases'] - 1}"
        for subject, kinds in run["summary"].items():
            for kind, s in kinds.items():
                command = (f"python scripts/concept_edit_proof.py OUT --settings {run['setting']} --subjects {subject} "
                           f"--kinds {kind} --first-seed {run['first_seed']} --cases {run['cases']}"
                           + (" --no-regenerate" if kind == "generated" and s.get("regenerated_subject") is None else "")
                           + (" --pipeline DREAMBOOTH_OUT/ours/pipeline" if full else "")
                           + (f" --name {train['name']}" if train.get("name") else ""))
                metrics = {"n": s["n"], "n_measured": s["n_measured"], "subject_judged": _pct(s["subject_judged_fresh"]),
                           "subject_judged_all": _pct(s["subject_judged"]),
                           "source_was_subject": _pct(s["source_was_subject"]), "psnr_out": _round(s["psnr_out"]),
                           "psnr_out_median": _round(s["psnr_out_median"]),
                           "at_outside_floor": _pct(s["at_outside_floor"]),
                           "psnr_out_joined": _round(s["psnr_out_joined"]),
                           "psnr_out_input": _round(s.get("psnr_out_input")),
                           "regenerated_subject": _pct(s.get("regenerated_subject")),
                           "regenerated_psnr_out": _round(s.get("regenerated_psnr_out"))}
                out.append({"id": f"concept-edit-{subject}-{kind}-{run['setting']}{tag}-{run['first_seed']}",
                            "date": date,
                            "commit": commit, "model": model, "seeds": seeds,
                            "samples": f"{s['n']} edits ({s['n_fresh']} whose source was not judged {subject})",
                            "command": command, "source": "the proof's concept-edit.json, added with --record",
                            "settings": {"subject": subject, "kind": kind, "setting": run["setting"],
                                         "edit": run["edit"], "lora_scale": None if full else run["lora_scale"],
                                         "weights": weights,
                                         "inversion": run["inversion"] if kind == "real" else None,
                                         "train_steps": train.get("steps")},
                            "metrics": metrics})
    return out


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 1)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def merge_records(data: dict | None, records: list[dict]) -> dict:
    """`data` (a docs/results/data page) with `records` added or replaced by id and listed in the table."""
    import json

    data = data or json.loads(json.dumps(NEW_PAGE))
    ids = {r["id"] for r in records}
    data["records"] = [r for r in data["records"] if r["id"] not in ids] + records
    for layout in (CONCEPT_EDIT_TABLE, CHOOSING_TABLE):  # the report table first
        mine = [r["id"] for r in records if (int(r["seeds"].split("-")[0]) >= REPORT_FIRST_SEED)
                == (layout is CONCEPT_EDIT_TABLE)]
        table = next((t for t in data["tables"] if t["title"] == layout["title"]), None)
        if table is None and mine:
            table = {**layout, "rows": []}
            data["tables"].append(table)
        if table is not None:  # the layout as this recipe writes it now, the rows kept
            table.update({k: v for k, v in layout.items() if k != "rows"})
            table["rows"] = list(dict.fromkeys([*table["rows"], *mine]))
    data["tables"].sort(key=lambda t: t["title"] != CONCEPT_EDIT_TABLE["title"])
    return data
