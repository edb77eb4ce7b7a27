"""`conceptlab train ...`: train the base model (textual inversion and DreamBooth join here)."""

from __future__ import annotations

from conceptlab.cli.common import flag


def add_parser(sub):
    p = sub.add_parser("train", help="train models and concepts")
    tsub = p.add_subparsers(dest="train_command", required=True, metavar="WHAT")
    b = tsub.add_parser("base", help="train the sticker-world base model from scratch (resumable)")
    flag(b, "--config", default=None, help="JSON/TOML file with BaseModelConfig fields")
    flag(b, "--out", required=True, help="where the pipeline folder is written")
    flag(b, "--work", default=None, help="checkpoints and logs (default: OUT.work)")
    b.set_defaults(run=run_base)
    return p


def run_base(args) -> int:
    from pathlib import Path

    from conceptlab.config import load_config_file
    from conceptlab.training.base_model import BaseModelConfig, train_base_model

    cfg = BaseModelConfig.from_dict(load_config_file(args.config)) if args.config else BaseModelConfig()
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.name + ".work")
    train_base_model(cfg, work, out)
    print(f"base model written to {out}; checkpoints and log.jsonl in {work}")
    return 0
