"""`conceptlab evaluate prompts`: per-attribute accuracy of a model on a fixed prompt set, judged."""

from __future__ import annotations

from conceptlab.cli.common import add_model_flags, flag


def add_parser(sub):
    p = sub.add_parser("evaluate", help="score a model with the sticker-world judge")
    esub = p.add_subparsers(dest="evaluate_command", required=True, metavar="WHAT")
    e = esub.add_parser("prompts", help="generate a fixed prompt set with fixed seeds and judge every attribute")
    add_model_flags(e)
    flag(e, "-n", "--num-prompts", dest="n", type=int, default=300, help="prompts of seen combinations")
    flag(e, "--unseen", type=int, default=100, help="prompts of held-out attribute combinations")
    flag(e, "--steps", type=int, default=30)
    flag(e, "--guidance", type=float, default=7.5)
    flag(e, "--judge", default=None, help="judge folder (default: the shipped judge)")
    flag(e, "--out", required=True, help="folder for scores.json, a sample grid and index.html")
    e.set_defaults(run=run_prompts)
    return p


def run_prompts(args) -> int:
    from pathlib import Path

    from conceptlab.errors import InputError
    from conceptlab.evaluation.judge import load_judge
    from conceptlab.evaluation.prompts import evaluate_prompts, standard_prompts, write_prompt_report
    from conceptlab.models.loading import load_pipeline

    if args.n < 1 or args.unseen < 0:
        raise InputError("-n/--unseen", (args.n, args.unseen), "need n >= 1 and unseen >= 0", "Pass -n 300 --unseen 100")
    judge = load_judge(args.judge)
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    scores = evaluate_prompts(pipe, standard_prompts(args.n, args.unseen), judge, steps=args.steps,
                              guidance=args.guidance)
    path = write_prompt_report(scores, Path(args.out), title=f"Prompt accuracy of {args.model or 'the base model'}")
    for row in scores.table():
        print(row)
    print(f"report: {path}")
    return 0
