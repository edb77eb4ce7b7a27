"""`conceptlab lora convert|merge`: LoRA files between diffusers and kohya/A1111 formats, or fused in."""

from __future__ import annotations

from conceptlab.cli.common import add_command, add_group, add_model_flags, flag, load_model
from conceptlab.validation import SCALE


def add_parser(sub):
    lsub = add_group(sub, "lora", help="convert LoRA files or merge one into a pipeline", dest="lora_command")
    c = add_command(lsub, "convert", help="rewrite a LoRA file as diffusers or kohya/A1111", run=run_convert)
    flag(c, "file", help="the LoRA file (.safetensors, diffusers or kohya keys)")
    flag(c, "--to", required=True, choices=("diffusers", "kohya"), help="the format to write")
    flag(c, "--out", required=True, help="output .safetensors file")
    add_model_flags(c)
    m = add_command(lsub, "merge", help="fuse a LoRA into the model and save a pipeline folder", run=run_merge)
    flag(m, "file", help="the LoRA file (.safetensors, diffusers or kohya keys)")
    flag(m, "--scale", type=SCALE.arg, default=1.0, help="strength the LoRA is fused at")
    flag(m, "--out", required=True, help="folder for the merged pipeline (new or empty)")
    add_model_flags(m)
    return lsub


def run_convert(args) -> int:
    from conceptlab.concepts.lora import convert_lora, lora_format
    from conceptlab.validation import output_file

    lora_format(args.file, "file")
    output_file("--out", args.out, suffixes=(".safetensors",))
    print(convert_lora(args.file, args.to, args.out, load_model(args)))
    return 0


def run_merge(args) -> int:
    from conceptlab.concepts.lora import check_lora_values, lora_format, merge_lora
    from conceptlab.validation import output_dir

    lora_format(args.file, "file")
    check_lora_values(args.file, "file")
    output_dir("--out", args.out, empty=True)
    pipe = load_model(args)
    print(f"merged pipeline: {merge_lora(pipe, args.file, args.out, args.scale)}")
    return 0
