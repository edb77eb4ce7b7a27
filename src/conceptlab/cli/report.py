"""`conceptlab report RUN_DIR`: an HTML page of a run's grids, metrics, confusion matrices and curves."""

from __future__ import annotations

from conceptlab.cli.common import add_command, flag


def add_parser(sub):
    p = add_command(sub, "report", help="an HTML page of what a run wrote (grids, metrics, curves)", run=run)
    flag(p, "run_dir", help="the --out folder of a conceptlab command (read only)")
    flag(p, "--out", default=None, help="folder for index.html (default: RUN_DIR-report beside the run; the "
                                        "page links the run's images)")
    return p


def run(args) -> int:
    from pathlib import Path

    from conceptlab.evaluation.run_report import build_report
    from conceptlab.validation import input_dir, not_inside, output_dir

    run_dir = input_dir("run_dir", args.run_dir, "run folder")
    out = Path(args.out) if args.out else run_dir.resolve().parent / (run_dir.resolve().name + "-report")
    not_inside("--out", out, run_dir, "run_dir")
    print(f"report: {build_report(run_dir, output_dir('--out', out))}")
    return 0
