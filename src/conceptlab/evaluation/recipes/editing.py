"""Prompt-to-Prompt word swaps, judged: is the new thing there, and how much of the rest stayed put.

The swap measure of scripts/edit_proof.py. For a swap of word A for word B made from seed S:
- the judge reads B in the edit (and, beside it, in "the naive way": the target prompt generated from S);
- PSNR outside the swapped words' region, the union of A's cross-attention map in the source prompt and B's
  in the target prompt (each above 0.3 of its peak, grown 4 px), between the source and the edit, and for
  the naive way between the plain source and the plain target; None when the words attend to nearly
  everything (less than 5% of the image outside).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conceptlab.errors import InputError
from conceptlab.evaluation.recipes.common import Bar, load_judge_checked, output_folder, result_header, write_result

SWAP_FLOOR = 0.85  # the project's floor for word swaps (README: "floor 85%")
PSNR_CAP = 60.0  # identical images (inf dB) count as 60 dB in means
MIN_OUTSIDE = 0.05  # below this share of the image outside the words' region there is nothing to measure
NOT_AN_EDIT_RUN = "Pass the --out folder of `conceptlab edit`"
_LEADING = {"a", "an", "the", "at", "in", "on", "by", "of", "holding", "with"}


def word_region(pipe, prompt: str, word: str, seed: int, size: int, steps: int = 30, guidance: float = 7.5):
    """(image, mask): the plain generation of `prompt` from `seed` and where `word` attends (mask (size, size) bool:
    the word's cross-attention averaged over steps and layers, above 0.3 of its peak, grown 4 px)."""
    import torch.nn.functional as F

    from conceptlab.editing.alignment import token_positions
    from conceptlab.editing.edit import attention_maps

    image, _, maps = attention_maps(pipe, prompt, seed, steps, guidance)
    pos = [p - 1 for p in token_positions(pipe.tokenizer, prompt, word.split()[0], "--blend")]  # maps skip BOS
    m = maps[pos].mean(0)  # (h, w)
    m = F.interpolate(m[None, None], size=(size, size), mode="bilinear")[0, 0]
    mask = (m > 0.3 * m.max()).float()
    mask = F.max_pool2d(mask[None, None], 9, stride=1, padding=4)[0, 0]
    return image, mask.numpy().astype(bool)


def score_swap(pipe, judge, kind: str | None, source_prompt: str, target_prompt: str, old: str, new: str, seed: int,
               source, edited, steps: int = 30, guidance: float = 7.5) -> tuple[dict, object, object]:
    """(row, plain source, naive target) for one swap of `old` for `new` (the judge's `kind` head, or None when
    the judge has no head for them: then only locality is measured)."""
    from conceptlab.evaluation.metrics import psnr

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    plain_src, m_src = word_region(pipe, source_prompt, old, seed, size, steps, guidance)
    naive, m_tgt = word_region(pipe, target_prompt, new, seed, size, steps, guidance)
    outside = ~(m_src | m_tgt)
    if outside.mean() < MIN_OUTSIDE:  # the words attend everywhere: no "outside" to measure
        outside = None
    out_psnr = lambda a, b: psnr(a, b, outside) if outside is not None else None  # noqa: E731
    row = {"kind": kind, "source": source_prompt, "target": target_prompt, "p2p_new": None, "naive_new": None,
           "source_as_asked": None}
    if kind is not None:
        pred = judge.predict([edited, naive, source])
        row.update(p2p_new=pred[kind][0] == new, naive_new=pred[kind][1] == new, source_as_asked=pred[kind][2] == old)
    row.update(p2p_psnr_out=out_psnr(source, edited), naive_psnr_out=out_psnr(plain_src, naive),
               outside_share=float(outside.mean()) if outside is not None else 0.0)
    return row, plain_src, naive


def summarize_swaps(rows: list[dict], kinds=None) -> dict:
    """Means over the rows (PSNR capped at 60 dB, rows without a value left out), and per kind of swap."""
    summary = {}
    for key in ("p2p_new", "naive_new"):
        vals = [r[key] for r in rows if r[key] is not None]
        summary[key] = float(np.mean(vals)) if vals else None
    for key in ("p2p_psnr_out", "naive_psnr_out", "outside_share"):
        vals = [min(r[key], PSNR_CAP) for r in rows if r[key] is not None]  # inf (identical) counted as 60 dB
        summary[key] = float(np.mean(vals)) if vals else None

    def by_kind(kind):
        mine = [r for r in rows if r["kind"] == kind]
        drawn = [r for r in mine if r["source_as_asked"]]  # the base model drew the source's thing at all
        return {"n": len(mine), "p2p_new": float(np.mean([r["p2p_new"] for r in mine])),
                "naive_new": float(np.mean([r["naive_new"] for r in mine])),
                "source_as_asked": float(np.mean([r["source_as_asked"] for r in mine])),
                "p2p_new_when_source_as_asked": float(np.mean([r["p2p_new"] for r in drawn])) if drawn else None}

    kinds = kinds or list(dict.fromkeys(r["kind"] for r in rows if r["kind"] is not None))
    summary["by_kind"] = {kind: by_kind(kind) for kind in kinds}
    return summary


def swap_bars(summary: dict, n: int) -> list[Bar]:
    """The new thing judged there on the floor's share of edits; P2P's outside at least as close as regenerating."""
    bars = [Bar("new thing judged there", summary["p2p_new"], floor=SWAP_FLOOR,
                why="the project's floor for word swaps", n=n)]
    if summary["p2p_psnr_out"] is not None:
        bars.append(Bar("PSNR outside the swapped words", summary["p2p_psnr_out"],
                        floor=round(summary["naive_psnr_out"], 1), unit="dB", n=n,
                        why="regenerating the target prompt from the same seed: an edit must keep more of the rest"))
    return bars


# ----------------------------------------------------------------------------------------------- a run


def judge_label(phrase: str, judge) -> tuple[str, str] | None:
    """(head, label) the judge reads for a prompt phrase ('an ice cream' -> ('held_item', 'ice cream'))."""
    words = phrase.lower().split()
    while words and words[0] in _LEADING:
        words = words[1:]
    text = " ".join(words)
    for head, labels in judge.cfg.heads.items():
        if head != "individual" and text in labels and text != "none":
            return head, text
    return None


def swap_of(source: str, target: str, judge) -> tuple[str | None, str, str] | None:
    """(judge head or None, old, new) of a one-for-one swap the recipe can score, else None.

    Of the swapped words, the one pair the judge can read both sides of ('at the beach' -> 'in the jungle':
    'beach' -> 'jungle'); a single unreadable pair is scored for locality only."""
    from conceptlab.editing.alignment import swapped_words

    pairs = swapped_words(source, target) or []
    labelled = []
    for a, b in pairs:
        la, lb = judge_label(a, judge), judge_label(b, judge)
        if la and lb and la[0] == lb[0]:
            labelled.append((la[0], la[1], lb[1]))
    if len(labelled) == 1:
        return labelled[0]
    if len(pairs) == 1:
        strip = lambda p: " ".join(w for w in p.split() if w.lower() not in _LEADING) or p  # noqa: E731
        return None, strip(pairs[0][0]), strip(pairs[0][1])
    return None


def read_edit_run(run: Path) -> list[dict]:
    """RUN/edits.json's rows; InputError unless RUN is a `conceptlab edit` run whose images are all there."""
    if not run.is_dir():
        raise InputError("RUN", str(run), "is not a folder", NOT_AN_EDIT_RUN)
    path = run / "edits.json"
    if not path.is_file():
        raise InputError("RUN", str(run), "has no edits.json, so it is not a `conceptlab edit` run", NOT_AN_EDIT_RUN)
    try:
        rows = json.loads(path.read_text())
        ok = isinstance(rows, list) and all({"files", "source", "targets", "seed"} <= set(r) for r in rows)
    except (json.JSONDecodeError, TypeError):
        ok = False
    if not ok or not rows:
        raise InputError("RUN", str(path), "is not the edits.json `conceptlab edit` writes", NOT_AN_EDIT_RUN)
    missing = [f for r in rows for f in r["files"] if not (run / f).is_file()]
    if missing:
        raise InputError("RUN", str(run), f"lacks {missing[0]} named in edits.json", "Pass a complete `conceptlab edit` run")
    return rows


def evaluate_edits(run: str | Path, out: str | Path | None = None, *, model: str | None = None, judge=None,
                   judge_path: str | None = None, pipe=None, device: str | None = None, progress: bool = True) -> dict:
    """Scores the word swaps of a `conceptlab edit` run (new thing judged there, PSNR outside the swapped words,
    both beside regenerating the target prompt); writes OUT/scores.json, OUT/grid.png and OUT/index.html
    (OUT defaults to RUN-eval) and returns the scores.

    edits.json does not name the model, so `model` must be the one the edits were made with (default: the
    shipped base model); the recipe checks that it regenerates the run's source images. Edits of a real image
    (`conceptlab edit --from-image`) start from its inversion, not from a seed, and cannot be scored here.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from conceptlab.evaluation.metrics import psnr
    from conceptlab.imaging import make_grid
    from conceptlab.models.loading import load_pipeline, model_label

    run = Path(run)
    rows = read_edit_run(run)
    out = output_folder(run, out)
    judge = judge or load_judge_checked(judge_path)
    model_name = model_label(model)
    pipe = pipe if pipe is not None else load_pipeline(model_name, device=device)
    todo, skipped = [], []
    for r in rows:
        for j, target in enumerate(r["targets"]):
            swap = None if r.get("reweight") else swap_of(r["source"], target, judge)
            if swap is None:
                why = "re-weighting" if r.get("reweight") else "not a one-for-one swap of words"
                skipped.append({"seed": r["seed"], "source": r["source"], "target": target, "why": why})
            else:
                todo.append((r, j, target, swap))
    if not todo:
        raise InputError("RUN", str(run), "holds no edit that swaps words one for one, which is what evaluate edit "
                         "scores", "Make one with `conceptlab edit --prompt 'a sticker of a red star' --to "
                         "'a sticker of a red apple' --out RUN`")
    scored, grid = [], []
    for r, j, target, (kind, old, new) in tqdm(todo, desc="evaluate edits", unit="edit", disable=not progress):
        source = Image.open(run / r["files"][0]).convert("RGB")
        edited = Image.open(run / r["files"][1 + j]).convert("RGB")
        row, plain_src, naive = score_swap(pipe, judge, kind, r["source"], target, old, new, r["seed"], source, edited,
                                           r.get("steps", 30), r.get("guidance", 7.5))
        row.update(seed=r["seed"], file=r["files"][1 + j], source_reproduced_psnr=psnr(source, plain_src))
        if not scored and row["source_reproduced_psnr"] < 30:
            raise InputError("--model", model_name, f"does not regenerate the run's {r['files'][0]} "
                             f"({row['source_reproduced_psnr']:.1f} dB against it)", "Pass the --model the edits "
                             "were made with (edits of a real image, --from-image, cannot be scored)")
        scored.append(row)
        grid += [source, edited, naive]
    summary = summarize_swaps(scored)
    bars = swap_bars(summary, len(scored))
    settings = {"edits": len(scored), "skipped": len(skipped), "seeds": sorted({r["seed"] for r in scored}),
                "region": "cross-attention of the swapped words > 0.3 of peak, grown 4 px"}
    result = {**result_header("edit", run, model_name, judge_path, settings), "summary": summary, "rows": scored,
              "skipped": skipped, "grid_caption": "triples: source, edit, the target prompt regenerated from the seed"}
    write_result(out, result, make_grid(grid[:48], cols=6 if len(grid) > 3 else 3, scale=2), bars,
                 f"Edits judged: {run.name}")
    return {**result, "out": str(out)}
