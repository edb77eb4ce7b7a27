"""Edits of inverted pictures from outside the sticker world, on the shipped base model (issue 26's proof).

    python scripts/offworld_edit_proof.py OUT --phase choose    # every lever, on the choosing quarter
    python scripts/offworld_edit_proof.py OUT --phase report --report-settings readme direct-mask

The pictures are conceptlab.evaluation.offworld's set (40 by default: 20 faces for emotion swaps, 20 objects for
object swaps; a quarter of each kind chooses settings, the rest reports). Each setting (SETTINGS below) inverts
every picture, edits it and measures the judge's verdict on the asked change, PSNR and SSIM outside the known
changed region against the picture, and the picture's own reconstruction PSNR there (the floor: within 3 dB).
The measures are the library's (conceptlab.evaluation.recipes.offworld_edits). OUT/offworld-<phase>.json holds
every row; OUT/offworld-<phase>-<setting>.png the pictures, reconstructions and edits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from conceptlab.evaluation.offworld import OffworldConfig, offworld_set
from conceptlab.evaluation.recipes.offworld_edits import (
    InversionCache,
    OffworldEditSetting,
    best_setting,
    floor_bars,
    run_setting,
    summarize,
)

S = OffworldEditSetting
MASK = {"blend_mask": "difference"}
# The levers, one at a time from the README's command (negative-prompt inversion, P2P's defaults: cross-attention
# from the source for 0.8 of the steps, self-attention for 0.4; objects with the difference mask).
SETTINGS = [
    S("readme"),
    S("ddim", method="ddim"),
    S("null-text", method="null-text"),
    S("direct", method="direct"),
    S("negprompt-self-0.8", edit={"self_steps": 0.8}),
    S("negprompt-guidance-3", guidance=3.0),
    S("negprompt-mask-faces", faces=MASK),
    S("direct-self-0.8", method="direct", edit={"self_steps": 0.8}),
    S("direct-self-1.0", method="direct", edit={"self_steps": 1.0}),
    S("direct-cross-0.5", method="direct", edit={"cross_steps": 0.5}),
    S("direct-cross-1.0", method="direct", edit={"cross_steps": 1.0}),
    S("direct-guidance-3", method="direct", guidance=3.0),
    S("direct-guidance-12", method="direct", guidance=12.0),
    S("direct-mask", method="direct", faces=MASK),
    S("direct-mask-0.3", method="direct", faces={**MASK, "blend_threshold": 0.3},
      objects={**MASK, "blend_threshold": 0.3}),
    S("direct-mask-0.6", method="direct", faces={**MASK, "blend_threshold": 0.6},
      objects={**MASK, "blend_threshold": 0.6}),
    S("direct-mask-start-0.1", method="direct", faces={**MASK, "blend_start": 0.1}, objects={**MASK, "blend_start": 0.1}),
    S("direct-mask-start-0.5", method="direct", faces={**MASK, "blend_start": 0.5}, objects={**MASK, "blend_start": 0.5}),
    S("direct-kv-0.5", method="direct", structure={"mutual_steps": 0.5}),
    S("direct-kv-0.5-mask", method="direct", faces=MASK, structure={"mutual_steps": 0.5}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--phase", choices=("choose", "report"), default="choose")
    ap.add_argument("--settings", nargs="*", default=None, help="names from SETTINGS to run (default: all)")
    ap.add_argument("--report-settings", nargs="*", default=["readme", "direct"],
                    help="--phase report: settings to report on (also the choose phase's winner if OUT holds it)")
    ap.add_argument("--n", type=int, default=40, help="pictures in the set (a quarter chooses)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many pictures of the phase's split")
    ap.add_argument("--null-text-limit", type=int, default=4,
                    help="null-text inversion takes minutes per picture on a shared CPU: run it on this many only")
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    args = ap.parse_args()
    from conceptlab.evaluation.judge import load_judge
    from conceptlab.imaging import make_grid
    from conceptlab.models.loading import load_pipeline

    args.out.mkdir(parents=True, exist_ok=True)
    pictures = offworld_set(OffworldConfig(n=args.n), split=args.phase)[:args.limit]
    by_name = {s.name: s for s in SETTINGS}
    names = args.settings if args.settings is not None else list(by_name)
    if args.phase == "report":
        names = args.report_settings
    pipe, judge = load_pipeline(args.model), load_judge()
    pipe.set_progress_bar_config(disable=True)
    cache, path = InversionCache(pipe), args.out / f"offworld-{args.phase}.json"
    report = json.loads(path.read_text()) if path.exists() else {"phase": args.phase, "results": {}}
    report.update(pictures=[p.index for p in pictures], n_set=args.n)
    for name in names:
        setting = by_name[name]
        subset = pictures[:args.null_text_limit] if setting.method == "null-text" else pictures
        t0, grid = time.perf_counter(), []
        rows = run_setting(pipe, judge, subset, setting, cache, grid)
        summary = summarize(rows)
        bars = floor_bars(summary)
        report["results"][name] = {"setting": setting.__dict__, "summary": summary, "rows": rows,
                                   "bars": [b.record() for b in bars], "wall_seconds": time.perf_counter() - t0}
        make_grid(grid[:30], cols=6, scale=2).save(args.out / f"offworld-{args.phase}-{name}.png")
        print(f"{name} (n={summary['n']}): judged {summary['judged']:.0%}, outside {summary['edit_psnr_out']:.1f} dB "
              f"vs reconstruction {summary['rec_psnr_out']:.1f} dB (gap {summary['gap_db']:.1f} dB), SSIM "
              f"{summary['edit_ssim_out']:.3f} vs {summary['rec_ssim_out']:.3f}, both {summary['changed_and_kept']:.0%}; "
              f"faces judged {summary['by_kind']['face']['judged']}, objects {summary['by_kind']['object']['judged']} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        full = {k: v for k, v in report["results"].items() if v["summary"]["n"] == len(pictures)}
        if full:
            report["best"] = best_setting(full)
        path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
