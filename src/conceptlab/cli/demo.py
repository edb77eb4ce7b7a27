"""`conceptlab demo`: every capability on the shipped base model, judged, with an HTML report."""

from __future__ import annotations

from conceptlab.cli.common import add_command, flag
from conceptlab.validation import COUNT0, IMAGES, SAMPLING_STEPS


def add_parser(sub):
    p = add_command(sub, "demo", run=run,
                    help="run every capability on the base model, judge each against a stated bar, and write "
                         "OUT/index.html; prints each stage with an estimate of its time")
    flag(p, "--out", default="demo-output", help="folder for the report and everything it shows")
    flag(p, "--model", default=None, help="default: the shipped sticker base model")
    flag(p, "-n", "--num-images", dest="n", type=IMAGES.arg, default=8, help="images per generation prompt")
    flag(p, "--steps", type=SAMPLING_STEPS.arg, default=30, help="sampling steps of every image")
    flag(p, "--ti-steps", type=COUNT0.arg, default=200, help="textual-inversion training steps; 0 skips the section")
    flag(p, "--db-steps", type=COUNT0.arg, default=300, help="DreamBooth-LoRA training steps; 0 skips the section")
    return p


def run(args) -> int:
    from conceptlab.demo import run_demo
    from conceptlab.validation import output_dir

    output_dir("--out", args.out)
    path = run_demo(args.out, model=args.model, n=args.n, steps=args.steps, ti_steps=args.ti_steps,
                    db_steps=args.db_steps)
    print(f"demo report: {path}")
    return 0
