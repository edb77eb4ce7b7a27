"""`conceptlab report RUN_DIR`: an HTML page of a run's grids, metrics, confusion matrices and curves."""

from __future__ import annotations

from conceptlab.cli.common import add_command, flag


def add_parser(sub):
    p = add_command(sub, "report", help="render RUN_DIR/index.html from what a run wrote", run=run)
    flag(p, "run_dir", help="the --out folder of a conceptlab command")
    return p


def run(args) -> int:
    from conceptlab.evaluation.run_report import build_report
    from conceptlab.validation import input_dir

    print(f"report: {build_report(input_dir('run_dir', args.run_dir, 'run folder'))}")
    return 0
