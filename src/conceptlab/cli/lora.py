"""`conceptlab lora convert|merge`: LoRA files between diffusers and kohya/A1111 formats, or fused in."""

from __future__ import annotations

from conceptlab.cli.common import add_model_flags, flag


def add_parser(sub):
    p = sub.add_parser("lora", help="convert LoRA files or merge one into a pipeline")
    lsub = p.add_subparsers(dest="lora_command", required=True, metavar="ACTION")
    c = lsub.add_parser("convert", help="diffusers <-> kohya/A1111")
    flag(c, "file")
    flag(c, "--to", required=True, help="diffusers or kohya")
    flag(c, "--out", required=True)
    add_model_flags(c)
    c.set_defaults(run=run_convert)
    m = lsub.add_parser("merge", help="fuse a LoRA into the model and save a pipeline folder")
    flag(m, "file")
    flag(m, "--scale", type=float, default=1.0)
    flag(m, "--out", required=True)
    add_model_flags(m)
    m.set_defaults(run=run_merge)
    return p


def run_convert(args) -> int:
    from conceptlab.concepts.lora import convert_lora
    from conceptlab.models.loading import load_pipeline

    print(convert_lora(args.file, args.to, args.out, load_pipeline(args.model)))
    return 0


def run_merge(args) -> int:
    from conceptlab.concepts.lora import merge_lora
    from conceptlab.models.loading import load_pipeline

    print(f"merged pipeline: {merge_lora(load_pipeline(args.model), args.file, args.out, args.scale)}")
    return 0
