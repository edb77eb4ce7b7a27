"""`conceptlab demo`: every capability on the shipped base model, with an HTML report."""

from __future__ import annotations

from conceptlab.cli.common import flag


def add_parser(sub):
    p = sub.add_parser("demo", help="run the demo and write demo-output/index.html")
    flag(p, "--out", default="demo-output")
    flag(p, "--model", default=None, help="default: the shipped sticker base model")
    flag(p, "-n", "--num-images", dest="n", type=int, default=8, help="images per prompt")
    flag(p, "--steps", type=int, default=30)
    flag(p, "--ti-steps", type=int, default=200, help="textual-inversion steps of the demo (0 skips it)")
    flag(p, "--db-steps", type=int, default=300, help="DreamBooth-LoRA steps of the demo (0 skips it)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from conceptlab.demo import run_demo

    path = run_demo(args.out, model=args.model, n=args.n, steps=args.steps, ti_steps=args.ti_steps,
                    db_steps=args.db_steps)
    print(f"demo report: {path}")
    return 0
