"""`make bench`: every benchmark prints our figure, the reference measured in the same run, and the ratio."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

BENCHMARKS = ("bench_generation", "bench_textual_inversion", "bench_dreambooth", "bench_optimizer", "bench_editing",
              "bench_studio", "bench_sdxl")
SDXL_MEMORY_GB = 20  # the SDXL-shaped benchmark holds about 14.5 GB at 128 px (a 2.6B-parameter UNet in float32)


def _run_sdxl(choice: str) -> bool:
    """--sdxl auto: only when this machine has the memory free for it, saying so when it skips."""
    if choice != "auto":
        if choice == "off":
            print("bench_sdxl skipped (--sdxl off)")
        return choice == "on"
    import psutil

    free = psutil.virtual_memory().available / 2**30
    if free < SDXL_MEMORY_GB:
        print(f"bench_sdxl skipped: {free:.0f} GB of memory available, it needs about {SDXL_MEMORY_GB} GB "
              "(--sdxl on runs it anyway)")
    return free >= SDXL_MEMORY_GB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="benchmark module names")
    parser.add_argument("--quick", action="store_true", help="one repeat each")
    parser.add_argument("--sdxl", choices=("auto", "on", "off"), default="auto",
                        help="the SDXL-shaped benchmark (bench_sdxl): auto runs it when 20 GB of memory are free")
    parser.add_argument("--sdxl-size", type=int, default=128, help="bench_sdxl's image size in px (a multiple of 8)")
    parser.add_argument("--out", default="bench-output/results.json")
    args = parser.parse_args()
    if args.sdxl_size < 64 or args.sdxl_size % 8:
        parser.error(f"--sdxl-size {args.sdxl_size}: must be a multiple of 8 and at least 64, e.g. 128")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:])  # what a record says made it
    names = [n for n in (args.only or BENCHMARKS) if n != "bench_sdxl" or _run_sdxl(args.sdxl)]
    rows = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        kwargs = {"size": args.sdxl_size} if name == "bench_sdxl" else {}
        for result in module.run(quick=args.quick, **kwargs):
            print(result.line(), flush=True)
            rows.append({"name": result.name, "ours": result.ours, "reference": result.reference,
                         "ratio": result.ratio, "unit": result.unit, "target": result.target, "module": name,
                         "command": command, "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                         **({"detail": result.detail} if result.detail else {})})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"results in {args.out}; `python -m benchmarks.record {args.out}` adds them to docs/results")


if __name__ == "__main__":
    main()
