"""`make bench`: every benchmark prints our figure, the reference measured in the same run, and the ratio."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
from pathlib import Path

import torch

BENCHMARKS = ("bench_generation", "bench_textual_inversion", "bench_dreambooth", "bench_editing", "bench_studio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="benchmark module names")
    parser.add_argument("--quick", action="store_true", help="one repeat each")
    parser.add_argument("--out", default="bench-output/results.json")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    rows = []
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        for result in module.run(quick=args.quick):
            print(result.line(), flush=True)
            rows.append({"name": result.name, "ours": result.ours, "reference": result.reference,
                         "ratio": result.ratio, "unit": result.unit, "target": result.target})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
