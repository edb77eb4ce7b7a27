"""Prompt-to-Prompt on the shipped base model, judged (the editing issue's proof).

    python scripts/edit_proof.py OUT [--cases 40]

- Word swap (object; held item) on generations: is the new thing there (judge); beside it the naive way
  (the target prompt from the same seed). PSNR outside the swapped words' region, the union of the words'
  cross-attention maps (0.3 of peak, grown 4 px), when that region leaves anything outside.
- Word swap (object; held item) on rendered stickers (negative-prompt inversion), where the box of the object
  and what it holds is known: PSNR outside the box (grown 6 px) for P2P and for the naive way (the target
  prompt from the same inverted noise), once per local-blend mask (--blends: difference, attention on the two
  swapped words, none; the first also serves the generated swaps).
- Style and background edits: the new style / scene judged right; object and colour kept (judged equal to
  the source image's).
- Re-weighting 'happy' at scales -1..2: the share judged happy per scale, with the word's share of the text
  states scaled (the default) and with attention alone.
- Real images: rendered stickers inverted with null-text (10 inner steps) and negative-prompt inversion, from
  the encoder's latent and from the latent refined against the decoder: reconstruction PSNR against the
  input, the VAE round trip of each latent (the ceiling of any inversion from it), and seconds per image.

The measures are the library's (conceptlab.evaluation.recipes.edit_benchmarks; the swap score is
recipes.editing's, which `conceptlab evaluate edit RUN` applies to the swaps of a `conceptlab edit` run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from conceptlab.evaluation.judge import load_judge
from conceptlab.evaluation.recipes.edit_benchmarks import (
    global_edit_benchmark,
    inversion_benchmark,
    real_swap_benchmark,
    reweight_benchmark,
    swap_benchmark,
)
from conceptlab.models.loading import load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--cases", type=int, default=45)
    ap.add_argument("--only", nargs="*", default=["swap", "swap-real", "global", "reweight", "real"])
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    ap.add_argument("--blends", nargs="+", default=["difference", "attention", "none"],
                    help="local-blend masks to compare on the real swaps; the first is used on generated swaps")
    ap.add_argument("--refine-steps", type=int, default=100, help="latent refinement before inversion (real images)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe, judge, report = load_pipeline(args.model), load_judge(), {}
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    if "swap" in args.only:
        report["swap"] = swap_benchmark(pipe, judge, args.cases, args.out, args.blends[0])
        print("swap", json.dumps(report["swap"]["summary"]), flush=True)
    if "swap-real" in args.only:
        for blend in args.blends:
            key = f"swap_real_{blend}"
            report[key] = real_swap_benchmark(pipe, judge, max(4, args.cases // 2), args.out, blend)
            print(key, json.dumps(report[key]["summary"]), flush=True)
    if "global" in args.only:
        report["global"] = global_edit_benchmark(pipe, judge, args.cases, args.out)
        print("global", json.dumps(report["global"]["summary"]), flush=True)
    if "reweight" in args.only:
        report["reweight"] = reweight_benchmark(pipe, judge, max(2, args.cases // 4), args.out)
        print("reweight", json.dumps(report["reweight"]), flush=True)
    if "real" in args.only:
        report["real"] = inversion_benchmark(load_pipeline(args.model), max(2, args.cases // 4), args.out, args.refine_steps)
        print("real", json.dumps(report["real"]["summary"]), flush=True)
    report["seconds"] = time.perf_counter() - t0
    (args.out / "edit-proof.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
