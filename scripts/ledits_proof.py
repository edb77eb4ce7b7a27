"""Our real-image word swaps against diffusers' LEDITS++ on the same cases (issue #26's reference run).

    python scripts/ledits_proof.py OUT [--cases 22] [--model-name v9]

The cases are the edit proof's real swaps (edit_benchmarks.real_swap_cases: stickers rendered from seeds
7000 + k, whose object box is known). Ours: negative-prompt inversion + Prompt-to-Prompt with the difference
blend mask. LEDITS++: diffusers' LEditsPPPipelineStableDiffusion built from the same loaded modules
(recipes.ledits). Both scored by edit_benchmarks.score_real_edit: the judge reads the new word; PSNR outside the
box grown 6 px, against the input picture (and ours against its own reconstruction, the edit proof's number).
Where diffusers' LEDITS++ cannot edit with the model (recipes.ledits.ledits_unsupported says why), it runs its
inversion and reconstruction only, the most of the picture any LEDITS++ edit from it could keep.
OUT/record.json is the run's record for docs/results/data/editing.json (then `python scripts/docs.py results`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from conceptlab.evaluation.judge import load_judge
from conceptlab.evaluation.recipes.edit_benchmarks import real_swap_cases
from conceptlab.evaluation.recipes.ledits import LeditsConfig, compare_swaps, ledits_unsupported, summarize
from conceptlab.models.loading import default_model, load_pipeline


def record(report: dict, model: str) -> dict:
    """The results page's record of a run."""
    s = report["summary"]
    pct = lambda x: round(100 * x, 1)  # noqa: E731
    metrics = {"judged": pct(s["ours"]["judged"]), "psnr_outside_input_db": round(s["ours"]["psnr_out"], 1),
               "psnr_outside_db": round(s["ours_vs_reconstruction"]["psnr_out"], 1),
               "ours_reconstruction_db": round(s["ours_reconstruction"]["psnr_out"], 1),
               "ledits_reconstruction_db": round(s["ledits_reconstruction"]["psnr_out"], 1)}
    if "ledits" in s:
        metrics.update(ledits_judged=pct(s["ledits"]["judged"]), ledits_psnr_outside_input_db=round(s["ledits"]["psnr_out"], 1))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    suffix = "" if report["ledits_settings"]["invert_with_prompt"] else "-unprompted"
    return {"id": f"ledits-reference-{model}{suffix}", "date": time.strftime("%Y-%m-%d"), "commit": commit, "model": model,
            "seeds": "the edit proof's real swaps (renders from seeds 7000 + k)", "samples": f"{s['n']} rendered stickers",
            "command": f"python scripts/ledits_proof.py OUT --cases {s['n']} --model-name {model}"
                       + ("" if report["ledits_settings"]["invert_with_prompt"] else " --no-source-prompt"),
            "settings": {"cases": f"{s['n']} inverted renders", "ledits": report["ledits_settings"],
                         "ledits_inversion": f"under the source prompt, guidance {report['ledits_settings']['source_guidance']}"
                         if report["ledits_settings"]["invert_with_prompt"] else "unguided (diffusers' docs example)"},
            "metrics": metrics, "note": report["note"], "source": "OUT/ledits-proof.json of the command"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--cases", type=int, default=22, help="the edit proof's real swaps 0..N-1 (its default is 22)")
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    ap.add_argument("--edit-guidance", type=float, default=LeditsConfig.edit_guidance)
    ap.add_argument("--threshold", type=float, default=LeditsConfig.threshold)
    ap.add_argument("--no-source-prompt", action="store_true",
                    help="LEDITS++ inverts without the source prompt (its docs' example) instead of under it")
    ap.add_argument("--model-name", default=None, help="the model's name in OUT/record.json (e.g. v9)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe, judge = load_pipeline(args.model), load_judge()
    pipe.set_progress_bar_config(disable=True)
    cfg = LeditsConfig(edit_guidance=args.edit_guidance, threshold=args.threshold,
                       invert_with_prompt=not args.no_source_prompt)
    why = ledits_unsupported(pipe)
    note = (f"diffusers' LEDITS++ cannot edit with this model: {why}; it ran its inversion and reconstruction only"
            if why else "both edited every case")
    print(note, flush=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows = []
    for case in real_swap_cases(args.cases, size):  # one at a time, so a partial run still has its rows
        rows += compare_swaps(pipe, judge, [case], cfg)
        print(len(rows), json.dumps({k: rows[-1][k] for k in ("ours", "ledits_reconstruction")}), flush=True)
        (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    report = {"summary": summarize(rows), "rows": rows, "ledits_settings": asdict(cfg), "note": note}
    (args.out / "ledits-proof.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=1))
    name = args.model_name or Path(str(args.model or default_model())).name
    (args.out / "record.json").write_text(json.dumps(record(report, name), indent=2) + "\n")


if __name__ == "__main__":
    main()
