"""Edits of inverted pictures from outside the sticker world, on the shipped base model (issue 26's proof).

    python scripts/offworld_edit_proof.py OUT --phase choose --settings readme direct direct-mask ...
    python scripts/offworld_edit_proof.py OUT --phase report     # the README's setting, the chosen one, the tighter mask
    python scripts/offworld_edit_proof.py OUT --phase record     # docs/results/data/offworld.json and the figure

The published run chose in two passes (OUT/offworld-choose-a.json, five pictures, every lever one at a time from
Direct Inversion; then OUT/offworld-choose.json, all ten, the mask's threshold, start and guidance) and reported
--report-settings' defaults; each took 60-200 s a picture on a 2-core CPU shared with other jobs.

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
    S("direct-mask-g3", method="direct", guidance=3.0, faces=MASK),
    S("direct-mask-0.6-start-0.1-g3", method="direct", guidance=3.0, faces={**MASK, "blend_threshold": 0.6, "blend_start": 0.1},
      objects={**MASK, "blend_threshold": 0.6, "blend_start": 0.1}),
    S("direct-kv-0.5", method="direct", structure={"mutual_steps": 0.5}),
    S("direct-kv-0.5-mask", method="direct", faces=MASK, structure={"mutual_steps": 0.5}),
    # the region a user would paint over the part to change, as `edit --mask` (the picture's known region)
    S("direct-region", method="direct", region=True),
    S("direct-region-g3", method="direct", guidance=3.0, region=True),
    S("direct-region-self-0.8", method="direct", region=True, edit={"self_steps": 0.8}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--phase", choices=("choose", "report", "record"), default="choose",
                    help="record: write docs/results/data/offworld.json from OUT's choose and report JSON")
    ap.add_argument("--settings", nargs="*", default=None, help="names from SETTINGS to run (default: all)")
    ap.add_argument("--report-settings", nargs="*", default=["readme", "direct-mask-g3", "direct-mask-0.6"],
                    help="--phase report: settings to report on (the README's, the chosen one, the runner-up)")
    ap.add_argument("--n", type=int, default=40, help="pictures in the set (a quarter chooses)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many pictures of the phase's split")
    ap.add_argument("--null-text-limit", type=int, default=4,
                    help="null-text inversion takes minutes per picture on a shared CPU: run it on this many only")
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    args = ap.parse_args()
    if args.phase == "record":
        return write_record(args.out)
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
    settings = [by_name[name] for name in names]
    rows = {s.name: [] for s in settings}
    grids = {s.name: [] for s in settings}
    compare = []
    report = {"phase": args.phase, "n_set": args.n, "pictures": [], "results": {}}
    # pictures outer, settings inner: wherever the run is stopped, every setting has seen the same pictures
    for k, picture in enumerate(pictures):
        t0 = time.perf_counter()
        for s in settings:
            if s.method == "null-text" and k >= args.null_text_limit:
                continue
            rows[s.name] += run_setting(pipe, judge, [picture], s, cache, grids[s.name])
        report["pictures"].append(picture.index)
        for s in settings:
            summary = summarize(rows[s.name])
            report["results"][s.name] = {"setting": s.__dict__, "summary": summary, "rows": rows[s.name],
                                         "bars": [b.record() for b in floor_bars(summary)]}
            make_grid(grids[s.name][:36], cols=6, scale=2).save(args.out / f"offworld-{args.phase}-{s.name}.png")
        if k < 6:  # side by side: the picture, then each setting's reconstruction and edit
            compare.append([picture.image] + [im for s in settings for im in grids[s.name][-2:]])
            make_grid([im for row in compare for im in row], cols=len(compare[0]), scale=2).save(
                args.out / f"offworld-{args.phase}-compare.png")
        full = {n: v for n, v in report["results"].items() if v["summary"]["n"] == k + 1}
        report["best"] = best_setting(full)
        path.write_text(json.dumps(report, indent=1))
        print(f"picture {picture.index} ({picture.kind}, {time.perf_counter() - t0:.0f} s); after {k + 1}:", flush=True)
        for name, v in report["results"].items():
            m = v["summary"]
            print(f"  {name} (n={m['n']}): judged {m['judged']:.0%}, outside {m['edit_psnr_out']:.1f} dB vs "
                  f"reconstruction {m['rec_psnr_out']:.1f} dB (gap {m['gap_db']:.1f}), SSIM {m['edit_ssim_out']:.3f} "
                  f"vs {m['rec_ssim_out']:.3f}, both {m['changed_and_kept']:.0%}", flush=True)


RECORD = Path(__file__).resolve().parents[1] / "docs" / "results" / "data" / "offworld.json"
COLUMNS = [("setting", "id"), ("pictures", "settings.pictures"), ("asked change judged", "metrics.judged", "pct"),
           ("faces / objects judged", "metrics.judged_by_kind", "pct"),
           ("PSNR outside the region", "metrics.edit_psnr_out_db", "db"),
           ("reconstruction's PSNR there", "metrics.rec_psnr_out_db", "db"), ("gap", "metrics.gap_db", "db"),
           ("edits within 3 dB", "metrics.within_3db", "pct"), ("judged and within 3 dB", "metrics.both", "pct"),
           ("SSIM outside (reconstruction's)", "metrics.ssim_out")]


def _record(phase: str, name: str, result: dict, pictures: int, date: str, commit: str) -> dict:
    m, kinds = result["summary"], result["summary"]["by_kind"]
    pct = lambda v: round(100 * v, 1)  # noqa: E731
    return {"id": f"{phase}-{name}", "date": date, "commit": commit, "model": "v9",
            "seeds": f"offworld set seed 0, the {phase} split", "samples": f"{m['n']} pictures "
            f"({kinds['face']['n']} faces, {kinds['object']['n']} objects), one edit each",
            "command": f"python scripts/offworld_edit_proof.py OUT --phase {phase.split('-')[0]}", "settings": {
                **{k: v for k, v in result["setting"].items() if v not in ({}, None)}, "pictures": m["n"]},
            "metrics": {"judged": pct(m["judged"]), "judged_by_kind": [pct(kinds["face"]["judged"]),
                                                                       pct(kinds["object"]["judged"])],
                        "source_judged": pct(m["source_judged"]), "edit_psnr_out_db": round(m["edit_psnr_out"], 1),
                        "rec_psnr_out_db": round(m["rec_psnr_out"], 1), "gap_db": round(m["gap_db"], 1),
                        "within_3db": pct(m["within_3db"]), "both": pct(m["changed_and_kept"]),
                        "ssim_out": [round(m["edit_ssim_out"], 3), round(m["rec_ssim_out"], 3)],
                        "seconds_per_edit": round(m["seconds"], 1)},
            "source": f"OUT/offworld-{phase}.json of the command"}


def write_record(out: Path) -> None:
    """docs/results/data/offworld.json from OUT/offworld-choose.json and OUT/offworld-report.json (tables of
    every setting measured; the intro and notes kept from the file if it exists)."""
    import datetime
    import subprocess

    date = datetime.date.today().isoformat()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    old = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    records, tables = [], []
    titles = {"choose-a": "Choosing settings, first pass (the first pictures of the choosing quarter)",
              "choose": "Choosing settings (the choosing quarter)", "report": "Reported (the other three quarters)"}
    for phase, title in titles.items():  # choose-a: an earlier pass kept beside the full one (copy it by hand)
        path = out / f"offworld-{phase}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        ids = []
        for name, result in data["results"].items():
            records.append(_record(phase, name, result, len(data["pictures"]), date, commit))
            ids.append(records[-1]["id"])
        kept = next((t for t in old.get("tables", []) if t["title"] == title), {})
        tables.append({"title": title, "intro": kept.get("intro", ""), "notes": kept.get("notes", ""), "rows": ids,
                       "columns": [dict(header=c[0], value=c[1], **({"format": c[2]} if len(c) > 2 else {}))
                                   for c in COLUMNS]})
    RECORD.write_text(json.dumps({"title": old.get("title", "Editing pictures from outside the sticker world"),
                                  "summary": old.get("summary", "emotion and object swaps on inverted pictures drawn "
                                                     "unlike the sticker world: the change judged, and how much of "
                                                     "the rest is kept against the picture's own reconstruction"),
                                  "intro": old.get("intro", ""), "tables": tables, "sections": old.get("sections", []),
                                  "records": records}, indent=1) + "\n")
    print(f"wrote {RECORD}")
    compare = out / "offworld-report-compare.png"
    if compare.exists():
        choose = out / "offworld-choose.json"
        best = json.loads(choose.read_text()).get("best") if choose.exists() else None
        write_figure(compare, json.loads((out / "offworld-report.json").read_text()), best)


FIGURE = Path(__file__).resolve().parents[1] / "docs" / "images" / "offworld-edits.png"


def write_figure(compare: Path, report: dict, chosen: str | None = None, rows: int = 4) -> None:
    """docs/images/offworld-edits.png: per picture, the picture, the first reported setting's edit (the README's),
    then the chosen setting's reconstruction and edit, cut from the report's side-by-side grid (cells of 128 px,
    2 px apart; columns: the picture, then each setting's reconstruction and edit)."""
    from PIL import Image

    from conceptlab.imaging import make_grid

    sheet, names = Image.open(compare).convert("RGB"), list(report["results"])
    cell = lambda r, c: sheet.crop((2 + c * 130, 2 + r * 130, 130 + c * 130, 130 + r * 130))  # noqa: E731
    chosen = chosen if chosen in names else names[-1]
    last = 1 + 2 * names.index(chosen)  # the chosen setting's reconstruction column
    images, labels = [], []
    for r in range(rows):
        images += [cell(r, 0), cell(r, 2), cell(r, last), cell(r, last + 1)]
        labels += ["picture", "README: edit", "chosen: redrawn", "chosen: edit"]
    grid = make_grid(images, cols=4, labels=labels)
    grid.quantize(256, method=Image.Quantize.MEDIANCUT).save(FIGURE, optimize=True)
    print(f"wrote {FIGURE} ({FIGURE.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
