"""`conceptlab report RUN_DIR`: an HTML page of a run's grids, metrics, confusion matrices and curves."""

from __future__ import annotations

from conceptlab.cli.common import flag


def add_parser(sub):
    p = sub.add_parser("report", help="render RUN_DIR/index.html from what a run wrote")
    flag(p, "run_dir")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from conceptlab.evaluation.run_report import build_report

    print(f"report: {build_report(args.run_dir)}")
    return 0
